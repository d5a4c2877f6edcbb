//! A compact JSON object written field by field into a byte buffer, escaped as
//! serde_json escapes (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other control
//! bytes as `\u00xx`, everything else as it is). What an edge sends (events, its
//! status, command replies) is written with it: serde_json's serializer and the
//! derives feeding it would cost a router's build more than this does. The
//! tests hold it to serde_json's output byte for byte.
//!
//! `read_string` is the one reader of a JSON string crd has (the command
//! envelope's scanner and the rules' value scanner both call it): RFC 8259
//! section 7, refusing what serde_json refuses (a control byte, an unknown
//! escape, a `\u` without four hex digits, a lone surrogate, bytes that are
//! not UTF-8), and borrowing the text when it holds no escape.

use std::borrow::Cow;

/// An object being written; `end` closes it.
pub struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    /// Starts an object at the end of `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Obj<'a> {
        out.push(b'{');
        Obj { out, first: true }
    }

    /// Goes on writing the object with members that `out` ends with (its
    /// `}` taken off): members added to one written earlier.
    pub fn reopen(out: &'a mut Vec<u8>) -> Obj<'a> {
        debug_assert!(out.ends_with(b"}") && !out.ends_with(b"{}"));
        out.pop();
        Obj { out, first: false }
    }

    /// `k` is one of crd's own keys, plain ASCII that needs no escape: written
    /// as it is. The comma and the opening quote are pushed: a copy of a
    /// slice whose length is not known when compiling calls musl's memcpy
    /// (~30 instructions for a byte or two, eleven keys an event).
    fn key(&mut self, k: &str) -> &mut Vec<u8> {
        debug_assert!(k.bytes().all(|c| c >= 0x20 && c != b'"' && c != b'\\'));
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        string(self.key(k), v);
        self
    }

    pub fn uint(&mut self, k: &str, v: u64) -> &mut Self {
        uint(self.key(k), v);
        self
    }

    pub fn int(&mut self, k: &str, v: i64) -> &mut Self {
        let out = self.key(k);
        if v < 0 {
            out.push(b'-');
        }
        uint(out, v.unsigned_abs());
        self
    }

    /// An array of strings.
    pub fn strs(&mut self, k: &str, v: &[String]) -> &mut Self {
        let out = self.key(k);
        out.push(b'[');
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, s);
        }
        out.push(b']');
        self
    }

    /// An object as member `k`: written through the `Obj` returned, closed by
    /// its `end`; this one goes on after that.
    pub fn obj(&mut self, k: &str) -> Obj<'_> {
        let out = self.key(k);
        out.push(b'{');
        Obj { out, first: true }
    }

    pub fn null(&mut self, k: &str) -> &mut Self {
        self.key(k).extend_from_slice(b"null");
        self
    }

    pub fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        let out = self.key(k);
        out.extend_from_slice(if v { b"true" } else { b"false" });
        self
    }

    pub fn end(&mut self) {
        self.out.push(b'}');
    }
}

/// Appends `v` in decimal.
fn uint(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(decimal(v, &mut [0u8; 20]));
}

/// `v` in decimal ASCII digits, written at the end of `buf` (`{v}` through
/// `fmt::write` costs ~300 instructions, this ~50).
pub fn decimal(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Appends `s` as a JSON string; runs that need no escape are copied whole.
/// The next byte to escape is found with one test a byte (a `match` on
/// every byte would take ~10 instructions a byte, most of rendering an
/// event's strings); only that byte goes through the `match`.
pub fn string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let b = s.as_bytes();
    let mut from = 0;
    while let Some(n) = b[from..]
        .iter()
        .position(|&c| c < 0x20 || c == b'"' || c == b'\\')
    {
        let i = from + n;
        let c = b[i];
        out.extend_from_slice(&b[from..i]);
        from = i + 1;
        let short = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            _ => 0,
        };
        if short != 0 {
            out.extend_from_slice(&[b'\\', short]);
        } else {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 15)],
            ]);
        }
    }
    out.extend_from_slice(&b[from..]);
    out.push(b'"');
}

/// Why `read_string` refused a string, and the byte of the input where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadString {
    pub at: usize,
    pub why: &'static str,
}

/// The JSON string whose opening quote is `b[at]`, unescaped, and the index
/// just past its closing quote. Borrowed from `b` when it has no escape.
pub fn read_string(b: &[u8], at: usize) -> Result<(Cow<'_, str>, usize), BadString> {
    let bad = |at, why| Err(BadString { at, why });
    if b.get(at) != Some(&b'"') {
        return bad(at, "expected a string");
    }
    let (start, mut i) = (at + 1, at + 1);
    // Stays empty unless an escape is met: every escape writes a byte or more.
    let mut out = Vec::new();
    loop {
        // To the next quote, backslash or control byte in one pass.
        let rest = b.get(i..).unwrap_or_default();
        let Some(n) = rest
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        else {
            return bad(b.len(), "unterminated string");
        };
        let run = &rest[..n];
        i += n;
        match b[i] {
            b'"' if out.is_empty() => {
                return match std::str::from_utf8(run) {
                    Ok(s) => Ok((Cow::Borrowed(s), i + 1)),
                    Err(_) => bad(start, "a string is not UTF-8"),
                };
            }
            b'"' => {
                out.extend_from_slice(run);
                return match String::from_utf8(out) {
                    Ok(s) => Ok((Cow::Owned(s), i + 1)),
                    Err(_) => bad(start, "a string is not UTF-8"),
                };
            }
            b'\\' => {
                out.extend_from_slice(run);
                let (ch, next) = escape(b, i)?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                i = next;
            }
            _ => return bad(i, "control character in a string"),
        }
    }
}

/// The escape whose backslash is `b[i]`: the char it stands for and the index
/// past it. A `\uXXXX` from D800 to DBFF must be followed by one from DC00 to
/// DFFF, the two a surrogate pair; any other surrogate is refused.
fn escape(b: &[u8], i: usize) -> Result<(char, usize), BadString> {
    let bad = |at, why| BadString { at, why };
    let ch = match b.get(i + 1) {
        Some(b'"') => '"',
        Some(b'\\') => '\\',
        Some(b'/') => '/',
        Some(b'b') => '\u{8}',
        Some(b'f') => '\u{c}',
        Some(b'n') => '\n',
        Some(b'r') => '\r',
        Some(b't') => '\t',
        Some(b'u') => {
            let hi = hex4(b, i + 2)?;
            let (code, next) = if (0xd800..0xdc00).contains(&hi) {
                let lo = match b.get(i + 6..i + 8) {
                    Some(b"\\u") => hex4(b, i + 8)?,
                    _ => return Err(bad(i, "lone surrogate in a string")),
                };
                if !(0xdc00..0xe000).contains(&lo) {
                    return Err(bad(i, "lone surrogate in a string"));
                }
                (0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00), i + 12)
            } else {
                (hi, i + 6)
            };
            let ch = char::from_u32(code).ok_or(bad(i, "lone surrogate in a string"))?;
            return Ok((ch, next));
        }
        Some(_) => return Err(bad(i, "bad escape in a string")),
        None => return Err(bad(b.len(), "unterminated string")),
    };
    Ok((ch, i + 2))
}

/// The four hex digits at `b[i..]` (`from_str_radix` would take a sign too).
fn hex4(b: &[u8], i: usize) -> Result<u32, BadString> {
    b.get(i..i + 4)
        .and_then(|h| {
            h.iter()
                .try_fold(0, |v, &c| Some(v << 4 | char::from(c).to_digit(16)?))
        })
        .ok_or(BadString {
            at: i,
            why: "bad \\u escape in a string",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut every = String::new();
        for c in (0u32..0x80).chain([0xe9, 0x2028, 0x1f600]) {
            every.push(char::from_u32(c).unwrap());
        }
        for s in [
            "",
            "plain",
            "a\"b\\c",
            "\u{0}\u{1f}\u{7f}",
            "tab\tnl\ncr\r",
            &every,
        ] {
            let mut out = Vec::new();
            string(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn objects_match_serde_json_field_for_field() {
        let mut out = Vec::new();
        Obj::new(&mut out)
            .str("node", "gw \"1\"")
            .uint("seq", u64::MAX)
            .uint("zero", 0)
            .int("code", -128)
            .int("min", i64::MIN)
            .bool("resent", true)
            .bool("no", false)
            .strs("groups", &["g1".into(), "a\"b".into()])
            .strs("none", &[])
            .null("nothing")
            .end();
        let want = serde_json::json!({
            "node": "gw \"1\"", "seq": u64::MAX, "zero": 0, "code": -128,
            "min": i64::MIN, "resent": true, "no": false, "groups": ["g1", "a\"b"],
            "none": [], "nothing": null
        });
        let got: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(got, want);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"node":"gw \"1\"","seq":18446744073709551615,"zero":0,"code":-128,"min":-9223372036854775808,"resent":true,"no":false,"groups":["g1","a\"b"],"none":[],"nothing":null}"#
        );
        let mut out = Vec::new();
        Obj::new(&mut out).end();
        assert_eq!(out, b"{}");
        let mut out = Vec::new();
        let mut o = Obj::new(&mut out);
        o.str("a", "1");
        let mut inner = o.obj("in");
        inner.str("b", "2").obj("deeper").end();
        inner.end();
        o.obj("empty").end();
        o.uint("after", 3).end();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":"1","in":{"b":"2","deeper":{}},"empty":{},"after":3}"#,
            "an object as a member, closed by its own end"
        );
    }

    /// A repeatable stream of numbers below `n` (xorshift64).
    fn xorshift(mut x: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        }
    }

    fn read(j: &str) -> Result<(Cow<'_, str>, usize), BadString> {
        read_string(j.as_bytes(), 0)
    }

    #[test]
    fn what_the_writer_writes_the_reader_reads_back() {
        let awkward = [
            '\0',
            '\u{1f}',
            '"',
            '\\',
            '/',
            '\u{8}',
            '\u{c}',
            '\n',
            '\r',
            '\t',
            ' ',
            'a',
            '\u{7f}',
            'é',
            '\u{2028}',
            '\u{ffff}',
            '😀',
            '\u{10ffff}',
            'u',
        ];
        let mut rnd = xorshift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2_000 {
            let len = rnd(12);
            let s: String = (0..len)
                .map(|_| awkward[rnd(awkward.len() as u64) as usize])
                .collect();
            let mut out = b"x".to_vec();
            string(&mut out, &s);
            let end = out.len();
            out.extend_from_slice(b",\"next\"");
            let (got, at) = read_string(&out, 1).unwrap();
            assert_eq!((&*got, at), (s.as_str(), end), "{s:?}");
        }
    }

    /// Borrowed where nothing needs undoing; escapes (surrogate pairs too) read
    /// as serde_json reads them.
    #[test]
    fn escapes_read_as_serde_json_reads_them() {
        assert!(matches!(
            read(r#""plain é""#),
            Ok((Cow::Borrowed("plain é"), 10))
        ));
        assert_eq!(read(r#""""#), Ok((Cow::Borrowed(""), 2)));
        for j in [
            r#""a\"b\\c\/d\be\ff\ng\rh\ti""#,
            r#""\u0000\u001F\u00e9\u00E9\u2028""#,
            r#""\ud83d\ude00 \uD83D\uDE00 \udbff\udfff""#,
            r#""x\u0041\n""#,
        ] {
            let want: String = serde_json::from_str(j).unwrap();
            let (got, at) = read(j).unwrap();
            assert_eq!((&*got, at), (want.as_str(), j.len()), "{j}");
            assert!(matches!(got, Cow::Owned(_)));
        }
    }

    /// Refused where serde_json refuses, at the byte that is wrong.
    #[test]
    fn refusals_are_serde_jsons_and_say_where() {
        for (j, at, why) in [
            ("x", 0, "expected a string"),
            ("\"abc", 4, "unterminated string"),
            ("\"ab\\", 4, "unterminated string"),
            ("\"a\nb\"", 2, "control character in a string"),
            ("\"a\u{0}\"", 2, "control character in a string"),
            ("\"\\u12\\n\"", 3, "bad \\u escape in a string"),
            (r#""\q""#, 1, "bad escape in a string"),
            (r#""\x41""#, 1, "bad escape in a string"),
            (r#""\u12""#, 3, "bad \\u escape in a string"),
            (r#""\u+123""#, 3, "bad \\u escape in a string"),
            (r#""\u-123""#, 3, "bad \\u escape in a string"),
            (r#""\u 123""#, 3, "bad \\u escape in a string"),
            (r#""\ud800""#, 1, "lone surrogate in a string"),
            (r#""\ud800x""#, 1, "lone surrogate in a string"),
            (r#""\ud800\n""#, 1, "lone surrogate in a string"),
            (r#""\ud800\u0041""#, 1, "lone surrogate in a string"),
            (r#""\ud800\ud800""#, 1, "lone surrogate in a string"),
            (r#""\udc00""#, 1, "lone surrogate in a string"),
            (r#""\ud800\uzz00""#, 9, "bad \\u escape in a string"),
        ] {
            assert_eq!(read(j), Err(BadString { at, why }), "{j}");
            assert!(serde_json::from_str::<String>(j).is_err(), "serde took {j}");
        }
        for b in [&b"\"\xff\""[..], b"\"\\n\xc3\""] {
            let e = read_string(b, 0).unwrap_err();
            assert_eq!((e.at, e.why), (1, "a string is not UTF-8"));
            assert!(serde_json::from_slice::<String>(b).is_err());
        }
        assert_eq!(read_string(b"", 0).unwrap_err().at, 0);
        assert_eq!(read_string(b"\"", 5).unwrap_err().at, 5, "past the end");
    }
}
