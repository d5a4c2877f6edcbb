//! A compact JSON object written field by field into a byte buffer, escaped as
//! serde_json escapes (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other control
//! bytes as `\u00xx`, everything else as it is). What an edge sends (events, its
//! status, command replies) is written with it: serde_json's serializer and the
//! derives feeding it cost a router's build more than this does (issue 18). The
//! tests hold it to serde_json's output byte for byte.

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

    /// `k` is one of crd's own keys, plain ASCII that needs no escape: written
    /// as it is, with its quotes and colon in one copy each.
    fn key(&mut self, k: &str) -> &mut Vec<u8> {
        debug_assert!(k.bytes().all(|c| c >= 0x20 && c != b'"' && c != b'\\'));
        let sep: &[u8] = if self.first { b"\"" } else { b",\"" };
        self.first = false;
        self.out.extend_from_slice(sep);
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
fn uint(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends `s` as a JSON string; runs that need no escape are copied whole.
pub fn string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let b = s.as_bytes();
    let mut from = 0;
    for (i, &c) in b.iter().enumerate() {
        let short = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0..=0x1f => 0,
            _ => continue,
        };
        out.extend_from_slice(&b[from..i]);
        from = i + 1;
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
            .end();
        let want = serde_json::json!({
            "node": "gw \"1\"", "seq": u64::MAX, "zero": 0, "code": -128,
            "min": i64::MIN, "resent": true, "no": false
        });
        let got: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(got, want);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"node":"gw \"1\"","seq":18446744073709551615,"zero":0,"code":-128,"min":-9223372036854775808,"resent":true,"no":false}"#
        );
        let mut out = Vec::new();
        Obj::new(&mut out).end();
        assert_eq!(out, b"{}");
    }
}
