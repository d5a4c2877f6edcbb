//! The value a message feeds a register: `value = PATH` names a field of a JSON
//! payload by dotted levels (`load.1m`, `ifaces.0.rx`: a level of digits indexes
//! an array), or `.` the whole payload. A number is taken as it is; a string is
//! parsed as a number after trimming, so the `out` of a crd event and the
//! `message` of a `crd emit` feed registers directly. Pure.
//!
//! The payload is not parsed into a tree: a scanner walks the route to the field
//! and skips everything beside it, without allocating (a string is unescaped
//! only where it is the value) and without recursion, so nesting of any depth
//! costs nothing but the bytes; only the route is checked as JSON, its strings
//! by `core::json::read_string`. (A tree from serde_json cost 40 KB of binary
//! and an allocation per member.)
//!
//! `members` walks the top level of an object the same way: the collector reads
//! a crd event's fields with it, once per message, without serde's machinery.
//!
//! A message without a usable value is skipped (counted by the caller), never an
//! error: missing, not a number, not finite or beyond +-`MAX_REGISTER_VALUE`, or
//! not JSON where the route runs.

use crate::core::config::MAX_REGISTER_VALUE;
use crate::core::json;
use std::borrow::Cow;

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
    let mut sc = Scan { b: payload, i: 0 };
    if path == "." {
        sc.ws();
        if sc.peek() == Some(b'"') {
            let s = sc.string()?;
            sc.ws();
            if sc.i == payload.len() {
                return leaf_text(&s, want_text);
            }
        }
        // Anything else whole: a JSON number, or a plain sensor's `23.5`.
        let s = std::str::from_utf8(payload).map_err(|_| Skip::NotANumber)?;
        return leaf_text(s, want_text);
    }
    // The containers the route entered, one bit a level (1: an object), so
    // that what follows the value can be checked to close them.
    let (mut objects, mut depth) = (0u64, 0u32);
    for level in path.split('.') {
        sc.ws();
        if depth == u64::BITS {
            return Err(Skip::NotJson);
        }
        match sc.peek() {
            Some(b'{') => {
                objects |= 1 << depth;
                sc.member(level)?;
            }
            Some(b'[') => sc.element(level)?,
            Some(_) => return Err(Skip::Missing),
            None => return Err(Skip::NotJson),
        }
        depth += 1;
    }
    let got = sc.leaf(want_text)?;
    sc.close(objects, depth)?;
    Ok(got)
}

impl<'a> Scan<'a> {
    /// The value under the cursor, at the end of a route.
    fn leaf(&mut self, want_text: bool) -> Result<Got, Skip> {
        let sc = self;
        sc.ws();
        match sc.peek() {
            Some(b'"') => {
                let s = sc.string()?;
                leaf_text(&s, want_text)
            }
            Some(b't' | b'f') if want_text => {
                let t = sc.token();
                match t {
                    "true" | "false" => Ok(Got {
                        num: None,
                        text: Some(t.to_string()),
                    }),
                    _ => Err(Skip::NotJson),
                }
            }
            Some(b'-' | b'0'..=b'9') => {
                let t = sc.token();
                let x = number(t.parse::<f64>().map_err(|_| Skip::NotJson)?)?;
                Ok(Got {
                    num: Some(x),
                    text: want_text.then(|| t.to_string()),
                })
            }
            Some(_) => Err(Skip::NotANumber),
            None => Err(Skip::NotJson),
        }
    }

    /// After the value: the rest of each container the route entered (`depth`
    /// of them, bit n of `objects` set where level n is an object), then
    /// nothing but blanks. `{"v":2}trailing` is not JSON, and feeds nothing.
    fn close(&mut self, objects: u64, depth: u32) -> Result<(), Skip> {
        for level in (0..depth).rev() {
            let object = objects >> level & 1 == 1;
            loop {
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        if object {
                            self.ws();
                            if self.peek() != Some(b'"') {
                                return Err(Skip::NotJson);
                            }
                            self.raw_string()?;
                            self.eat(b':')?;
                        }
                        self.skip_value()?;
                    }
                    Some(b'}') if object => {
                        self.i += 1;
                        break;
                    }
                    Some(b']') if !object => {
                        self.i += 1;
                        break;
                    }
                    _ => return Err(Skip::NotJson),
                }
            }
        }
        self.ws();
        if self.i == self.b.len() {
            Ok(())
        } else {
            Err(Skip::NotJson)
        }
    }
}

/// A top-level member's value as `members` gives it.
#[derive(Clone, Debug, PartialEq)]
pub enum Member<'a> {
    /// A string, unescaped (borrowed when it has no escapes).
    Str(Cow<'a, str>),
    /// A number, `true`, `false` or `null`, as written.
    Token(&'a str),
    /// An object or an array (skipped).
    Nested,
}

/// Calls `each` with every member of the JSON object `payload`, in order, its
/// key as written (escapes in a key are not undone: crd's keys have none). The
/// object's own structure is checked (quotes, colons, commas, its braces,
/// nothing but blanks after it); a nested value is skipped by counting its
/// brackets, and a bare value's own grammar is its reader's to check.
pub fn members<'a>(
    payload: &'a [u8],
    mut each: impl FnMut(&'a [u8], Member<'a>),
) -> Result<(), Skip> {
    let mut sc = Scan { b: payload, i: 0 };
    sc.eat(b'{')?;
    sc.ws();
    if sc.peek() == Some(b'}') {
        sc.i += 1;
    } else {
        loop {
            sc.ws();
            if sc.peek() != Some(b'"') {
                return Err(Skip::NotJson);
            }
            let key = sc.raw_string()?;
            sc.eat(b':')?;
            sc.ws();
            let value = match sc.peek() {
                Some(b'"') => Member::Str(sc.string()?),
                Some(b'{' | b'[') => {
                    sc.skip_value()?;
                    Member::Nested
                }
                _ => match sc.token() {
                    "" => return Err(Skip::NotJson),
                    t => Member::Token(t),
                },
            };
            each(key, value);
            sc.ws();
            match sc.peek() {
                Some(b',') => sc.i += 1,
                Some(b'}') => {
                    sc.i += 1;
                    break;
                }
                _ => return Err(Skip::NotJson),
            }
        }
    }
    sc.ws();
    if sc.i == payload.len() {
        Ok(())
    } else {
        Err(Skip::NotJson)
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

/// Whether `c` can be in a bare token (number, true, false, null): what the
/// reader takes as one before the token's own reader checks it.
pub fn token_byte(c: u8) -> bool {
    matches!(c, b'-' | b'+' | b'.' | b'0'..=b'9' | b'a'..=b'z' | b'E')
}

/// A cursor over JSON text.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    // Always inlined: at opt-level "z" a call each (per byte) was a tenth of
    // the rule path's time.
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline(always)]
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), Skip> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Skip::NotJson)
        }
    }

    /// A bare token (number, true, false, null).
    fn token(&mut self) -> &'a str {
        let start = self.i;
        while self.peek().is_some_and(token_byte) {
            self.i += 1;
        }
        std::str::from_utf8(&self.b[start..self.i]).unwrap_or("")
    }

    /// Skips a string (the cursor on its opening quote), its escapes and bytes
    /// unchecked; returns its raw bytes.
    fn raw_string(&mut self) -> Result<&'a [u8], Skip> {
        self.i += 1;
        let start = self.i;
        loop {
            // To the next quote or backslash in one pass over the slice.
            let rest = self.b.get(self.i..).unwrap_or_default();
            let Some(n) = rest.iter().position(|&c| c == b'"' || c == b'\\') else {
                return Err(Skip::NotJson);
            };
            self.i += n;
            if self.b[self.i] == b'"' {
                self.i += 1;
                return Ok(&self.b[start..self.i - 1]);
            }
            self.i += 2;
        }
    }

    /// A string, unescaped (borrowed when it has no escapes).
    fn string(&mut self) -> Result<Cow<'a, str>, Skip> {
        let (s, end) = json::read_string(self.b, self.i).map_err(|_| Skip::NotJson)?;
        self.i = end;
        Ok(s)
    }

    /// Whether the key under the cursor (its opening quote) is `name`; the
    /// cursor moves past it. A key without an escape (crd's, and most) is
    /// compared as it is written, and refused as `json::read_string` refuses
    /// one (a control byte, bytes that are not UTF-8): through `read_string`
    /// each key's Cow and UTF-8 check would cost about 100 instructions,
    /// 1,000 a crd event walked to its last member on a rule's path. A key
    /// with an escape is read by `read_string`.
    fn key_is(&mut self, name: &str) -> Result<bool, Skip> {
        let rest = self.b.get(self.i + 1..).unwrap_or_default();
        match rest
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        {
            Some(n) if rest[n] == b'"' => {
                let raw = &rest[..n];
                if !raw.is_ascii() && std::str::from_utf8(raw).is_err() {
                    return Err(Skip::NotJson);
                }
                self.i += n + 2;
                Ok(raw == name.as_bytes())
            }
            _ => Ok(self.string()? == name),
        }
    }

    /// Skips one value of any depth, iteratively.
    fn skip_value(&mut self) -> Result<(), Skip> {
        let mut depth = 0u32;
        loop {
            self.ws();
            match self.peek() {
                None => return Err(Skip::NotJson),
                Some(b'"') => {
                    self.raw_string()?;
                }
                Some(b'{' | b'[') => {
                    depth += 1;
                    self.i += 1;
                    continue;
                }
                Some(b'}' | b']') if depth > 0 => {
                    depth -= 1;
                    self.i += 1;
                }
                Some(b',' | b':') if depth > 0 => {
                    self.i += 1;
                    continue;
                }
                Some(_) => {
                    if self.token().is_empty() {
                        return Err(Skip::NotJson);
                    }
                }
            }
            if depth == 0 {
                return Ok(());
            }
        }
    }

    /// In an object (the cursor on `{`): moves to the value of member `name`.
    fn member(&mut self, name: &str) -> Result<(), Skip> {
        self.i += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            return Err(Skip::Missing);
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(Skip::NotJson);
            }
            let same = self.key_is(name)?;
            self.eat(b':')?;
            if same {
                return Ok(());
            }
            self.skip_value()?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => return Err(Skip::Missing),
                _ => return Err(Skip::NotJson),
            }
        }
    }

    /// In an array (the cursor on `[`): moves to element `index`.
    fn element(&mut self, index: &str) -> Result<(), Skip> {
        let n: usize = index.parse().map_err(|_| Skip::Missing)?;
        self.i += 1;
        self.ws();
        if self.peek() == Some(b']') {
            return Err(Skip::Missing);
        }
        for _ in 0..n {
            self.skip_value()?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => return Err(Skip::Missing),
                _ => return Err(Skip::NotJson),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(p: &str, path: &str) -> Result<f64, Skip> {
        extract(p.as_bytes(), path, false).map(|g| g.num.unwrap())
    }

    #[test]
    fn members_walks_the_top_level_and_checks_its_structure() {
        let mut got = Vec::new();
        let p = br#" {"a":"x\"y", "b" : -1.5e3,"c":{"d":[1,{"e":"}"}]},"f":[],"g":true} "#;
        assert_eq!(members(p, |k, v| got.push((k, v))), Ok(()));
        assert_eq!(
            got,
            vec![
                (&b"a"[..], Member::Str("x\"y".into())),
                (b"b", Member::Token("-1.5e3")),
                (b"c", Member::Nested),
                (b"f", Member::Nested),
                (b"g", Member::Token("true")),
            ]
        );
        assert_eq!(members(b"{}", |_, _| panic!("no member")), Ok(()));
        for bad in [
            &b""[..],
            b"[1]",
            b"{",
            br#"{"a":1"#,
            br#"{"a" 1}"#,
            br#"{"a":1,}"#,
            br#"{"a":}"#,
            br#"{a:1}"#,
            br#"{"a":1} x"#,
            br#"{"a":1}}"#,
            br#"{"a":"unterminated}"#,
            br#"{"a":[1,2}"#,
        ] {
            assert_eq!(
                members(bad, |_, _| {}),
                Err(Skip::NotJson),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
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
        assert!(matches!(
            num("not json", "x"),
            Err(Skip::NotJson | Skip::Missing)
        ));
        assert_eq!(num(r#"{"x":1"#, "y"), Err(Skip::NotJson));
        assert_eq!(num(r#"{"x":"unterminated}"#, "y"), Err(Skip::NotJson));
        assert_eq!(
            num(r#"  { "a" : [ 1 , { "b" : -2.5e1 } ] } "#, "a.1.b"),
            Ok(-25.0)
        );
        assert_eq!(num(r#"{"a\"b":3,"a":4}"#, "a"), Ok(4.0));
        assert_eq!(num(r#"{"x":"\u0032\u0031"}"#, "x"), Ok(21.0));
        assert_eq!(num("hello", "."), Err(Skip::NotANumber));
    }

    /// A document that goes on after its value is not JSON: nothing is fed
    /// from `{"v":2}trailing`, nor from a member or element not closed.
    #[test]
    fn bytes_after_the_document_make_it_not_json() {
        assert_eq!(num(r#"{"v":2}"#, "v"), Ok(2.0));
        assert_eq!(num(r#"{"v":2} "#, "v"), Ok(2.0));
        assert_eq!(num(r#"{"v":2,"w":[1,{"x":"}"}]}"#, "v"), Ok(2.0));
        assert_eq!(num(r#"{"a":[0,{"b":3},7],"c":1}"#, "a.1.b"), Ok(3.0));
        for bad in [
            r#"{"v":2}trailing"#,
            r#"{"v":2}}"#,
            r#"{"v":2}{"v":3}"#,
            r#"{"v":2"#,
            r#"{"v":2,}"#,
            r#"{"v":2,"w"}"#,
            r#"{"v":2 3}"#,
            r#"{"v":2]"#,
            r#"{"a":[0,{"b":3}}"#,
            r#"{"a":[0,{"b":3]]}"#,
        ] {
            let path = if bad.starts_with(r#"{"a""#) {
                "a.1.b"
            } else {
                "v"
            };
            assert_eq!(num(bad, path), Err(Skip::NotJson), "{bad}");
        }
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
        assert_eq!(num(r#"{"v":1e400}"#, "v"), Err(Skip::OutOfRange));
        assert_eq!(num(r#"{"v":1e15}"#, "v"), Ok(1e15));
        // Nested 200 (or 100,000) deep: walked and skipped without recursion.
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(num(&deep, "0"), Err(Skip::NotANumber));
        let deeper = format!(
            r#"{{"junk":{}1{},"v":5}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(num(&deeper, "v"), Ok(5.0));
        assert_eq!(num("\u{0}\u{ff}", "."), Err(Skip::NotANumber));
        assert_eq!(extract(&[0xff, 0xfe], ".", false), Err(Skip::NotANumber));
    }

    /// The scanner against serde_json's tree on generated documents: the same
    /// number wherever serde_json finds one at the path.
    #[test]
    fn the_scanner_agrees_with_serde_json() {
        use serde_json::Value;
        let docs = [
            r#"{"a":1,"b":{"c":[10,20,{"d":"30"}],"e":null},"f":"x y","g":[[1,2],[3,4]]}"#,
            r#"{"node":"r1","stream":"00000000000000ab","seq":3,"message":"42.5","out":"\t7\n"}"#,
            r#"[{"a":1},{"a":2},{"a":{"b":[true,false,3]}}]"#,
            r#"{"esc\"aped":1,"k":"\"q\"","u":"\ud83d\ude00","n":-0.0,"big":12345678901234}"#,
            r#"{"w" : [ 1 , 2 , { "x" : { "y" : [ "9" ] } } ] , "z" : 1e3 }"#,
        ];
        let paths = [
            "a",
            "b.c.0",
            "b.c.1",
            "b.c.2.d",
            "b.e",
            "f",
            "g.1.0",
            "g.2",
            "seq",
            "message",
            "out",
            "0.a",
            "1.a",
            "2.a.b.2",
            "2.a.b.0",
            "esc\"aped",
            "n",
            "big",
            "w.2.x.y.0",
            "z",
            "w.1",
            "missing",
            "a.b",
        ];
        for d in docs {
            let tree: Value = serde_json::from_str(d).unwrap();
            for p in paths {
                let mut v = Some(&tree);
                for l in p.split('.') {
                    v = v.and_then(|v| match v {
                        Value::Object(m) => m.get(l),
                        Value::Array(a) => l.parse::<usize>().ok().and_then(|i| a.get(i)),
                        _ => None,
                    });
                }
                let want = match v {
                    Some(Value::Number(n)) => n.as_f64(),
                    Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
                    _ => None,
                };
                let got = extract(d.as_bytes(), p, false).ok().and_then(|g| g.num);
                assert_eq!(got, want, "{d} at {p}");
            }
        }
    }

    /// A string read on the route is read as serde_json reads one: a raw
    /// control byte, a bad escape or a lone surrogate makes the message not JSON.
    #[test]
    fn strings_on_the_route_are_refused_where_serde_json_refuses_them() {
        assert_eq!(num(r#"{"x":"\u0032"}"#, "x"), Ok(2.0));
        for bad in [
            "{\"x\":\"2\n\"}",
            r#"{"x":"\u+032"}"#,
            r#"{"x":"\ud800"}"#,
            r#"{"x":"\q"}"#,
            "{\"a\tb\":1,\"x\":2}",
        ] {
            assert_eq!(num(bad, "x"), Err(Skip::NotJson), "{bad}");
            assert!(serde_json::from_str::<serde_json::Value>(bad).is_err());
        }
        let p = b"{\"a\":\"\x01\"}";
        assert_eq!(members(p, |_, _| {}), Err(Skip::NotJson));
    }

    /// A key on the route is read as `json::read_string` reads it, escaped or
    /// not: the same keys match, the same ones are refused.
    #[test]
    fn keys_on_the_route_match_and_are_refused_as_read_string_reads_them() {
        assert_eq!(num(r#"{"\u0078":2}"#, "x"), Ok(2.0));
        assert_eq!(num(r#"{"x\u0041":1,"x":2}"#, "x"), Ok(2.0));
        assert_eq!(num(r#"{"x\u0041":1,"x":2}"#, "xA"), Ok(1.0));
        assert_eq!(num(r#"{"é":1,"x":2}"#, "x"), Ok(2.0));
        assert_eq!(num(r#"{"é":1,"x":2}"#, "é"), Ok(1.0));
        assert_eq!(num(r#"{"xy":1,"x":2}"#, "x"), Ok(2.0));
        assert_eq!(num(r#"{"xy":1}"#, "x"), Err(Skip::Missing));
        for bad in [
            &b"{\"\xff\":1,\"x\":2}"[..],
            b"{\"\xc3\":1,\"x\":2}",
            b"{\"a\x01\":1,\"x\":2}",
            b"{\"a\\q\":1,\"x\":2}",
            b"{\"x",
            b"{\"x\\",
        ] {
            let got = extract(bad, "x", false).map(|g| g.num);
            assert_eq!(got, Err(Skip::NotJson), "{}", String::from_utf8_lossy(bad));
            assert!(serde_json::from_slice::<serde_json::Value>(bad).is_err());
        }
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
