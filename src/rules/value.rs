//! The value a message feeds a register: `value = PATH` names a field of a JSON
//! payload by dotted levels (`load.1m`, `ifaces.0.rx`: a level of digits indexes
//! an array), or `.` the whole payload. A number is taken as it is; a string is
//! parsed as a number after trimming, so the `out` of a crd event and the
//! `message` of a `crd emit` feed registers directly. Pure.
//!
//! A message without a usable value is skipped (counted by the caller), never an
//! error: missing, not a number, not finite or beyond +-`MAX_REGISTER_VALUE`, or
//! not JSON (nested deeper than serde_json's 128 levels counts as not JSON).

use crate::core::config::MAX_REGISTER_VALUE;
use serde_json::Value;

/// Why a message fed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    NotJson,
    Missing,
    NotANumber,
    OutOfRange,
}

/// What a message's value is: a number where it reads as one, and its text
/// (for `equals`) when asked for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Got {
    pub num: Option<f64>,
    pub text: Option<String>,
}

fn number(x: f64) -> Result<f64, Skip> {
    if x.is_finite() && x.abs() <= MAX_REGISTER_VALUE {
        Ok(x)
    } else {
        Err(Skip::OutOfRange)
    }
}

fn text_number(s: &str) -> Result<f64, Skip> {
    match s.trim().parse::<f64>() {
        Ok(x) => number(x),
        Err(_) => Err(Skip::NotANumber),
    }
}

/// The value at `path` in `payload`. With `want_text` a value that is not a
/// number is still given as text (a string as it is, `true`/`false`); without
/// it, only a number is a value.
pub fn extract(payload: &[u8], path: &str, want_text: bool) -> Result<Got, Skip> {
    let json: Option<Value> = serde_json::from_slice(payload).ok();
    let leaf = match (&json, path) {
        (None, ".") => {
            // The whole payload as text: a plain sensor publishing `23.5`.
            let s = std::str::from_utf8(payload).map_err(|_| Skip::NotANumber)?;
            return leaf_text(s, want_text);
        }
        (None, _) => return Err(Skip::NotJson),
        (Some(v), ".") => v,
        (Some(v), _) => walk(v, path).ok_or(Skip::Missing)?,
    };
    match leaf {
        Value::Number(n) => {
            let x = number(n.as_f64().ok_or(Skip::NotANumber)?)?;
            Ok(Got {
                num: Some(x),
                text: want_text.then(|| n.to_string()),
            })
        }
        Value::String(s) => leaf_text(s, want_text),
        Value::Bool(b) if want_text => Ok(Got {
            num: None,
            text: Some(b.to_string()),
        }),
        _ => Err(Skip::NotANumber),
    }
}

fn leaf_text(s: &str, want_text: bool) -> Result<Got, Skip> {
    match text_number(s) {
        Ok(x) => Ok(Got {
            num: Some(x),
            text: want_text.then(|| s.to_string()),
        }),
        Err(_) if want_text => Ok(Got {
            num: None,
            text: Some(s.to_string()),
        }),
        Err(e) => Err(e),
    }
}

fn walk<'a>(mut v: &'a Value, path: &str) -> Option<&'a Value> {
    for level in path.split('.') {
        v = match v {
            Value::Object(m) => m.get(level)?,
            Value::Array(a) => a.get(level.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(p: &str, path: &str) -> Result<f64, Skip> {
        extract(p.as_bytes(), path, false).map(|g| g.num.unwrap())
    }

    #[test]
    fn numbers_strings_and_paths() {
        assert_eq!(num(r#"{"load":21.5}"#, "load"), Ok(21.5));
        assert_eq!(num(r#"{"a":{"b":[1,{"c":"7"}]}}"#, "a.b.1.c"), Ok(7.0));
        // A crd event's output and an emit's message, parsed as numbers.
        assert_eq!(
            num(r#"{"kind":"emit","message":" 23\n"}"#, "message"),
            Ok(23.0)
        );
        assert_eq!(num(r#"{"kind":"fired","out":"0.5"}"#, "out"), Ok(0.5));
        assert_eq!(num("23.5", "."), Ok(23.5));
        assert_eq!(num(" 4 \n", "."), Ok(4.0));
        assert_eq!(num(r#"{"x":1}"#, "y"), Err(Skip::Missing));
        assert_eq!(num(r#"{"x":[1]}"#, "x.1"), Err(Skip::Missing));
        assert_eq!(num(r#"{"x":[1]}"#, "x.a"), Err(Skip::Missing));
        assert_eq!(num(r#"{"x":"high"}"#, "x"), Err(Skip::NotANumber));
        assert_eq!(num(r#"{"x":{"y":1}}"#, "x"), Err(Skip::NotANumber));
        assert_eq!(num(r#"{"x":null}"#, "x"), Err(Skip::NotANumber));
        assert_eq!(num("not json", "x"), Err(Skip::NotJson));
        assert_eq!(num("hello", "."), Err(Skip::NotANumber));
    }

    #[test]
    fn hostile_values_are_skipped_not_taken() {
        for bad in [
            "1e308",
            "-1e16",
            "\"NaN\"",
            "\"inf\"",
            "\"-infinity\"",
            "\"1e400\"",
        ] {
            let p = format!(r#"{{"v":{bad}}}"#);
            let r = num(&p, "v");
            assert!(
                matches!(r, Err(Skip::OutOfRange | Skip::NotANumber)),
                "{bad}: {r:?}"
            );
        }
        // A number beyond f64 is refused by the JSON parser itself.
        assert_eq!(num(r#"{"v":1e400}"#, "v"), Err(Skip::NotJson));
        assert_eq!(num(r#"{"v":1e15}"#, "v"), Ok(1e15));
        // Nested 200 deep: past serde_json's recursion limit, so not JSON.
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(num(&deep, "0"), Err(Skip::NotJson));
        assert_eq!(num("\u{0}\u{ff}", "."), Err(Skip::NotANumber));
        assert_eq!(extract(&[0xff, 0xfe], ".", false), Err(Skip::NotANumber));
    }

    #[test]
    fn text_for_equals() {
        let g = extract(br#"{"state":"down"}"#, "state", true).unwrap();
        assert_eq!((g.num, g.text.as_deref()), (None, Some("down")));
        let g = extract(br#"{"up":true}"#, "up", true).unwrap();
        assert_eq!(g.text.as_deref(), Some("true"));
        let g = extract(br#"{"n":3}"#, "n", true).unwrap();
        assert_eq!((g.num, g.text.as_deref()), (Some(3.0), Some("3")));
    }
}
