//! Bounded capture of a child's output: the first and the last bytes, and a count of
//! what was dropped between them.
//!
//! A check may print without end; crd must drain the pipe anyway (or the child blocks)
//! but keep only `limit` bytes. Half the budget holds the head (usually the message
//! that matters), half a ring holding the tail (usually the error that ended the run).
//! Pure: fed byte slices, it never touches a file descriptor.
//!
//! Also `terminal_safe`: text that came from the bus (node and module names,
//! register keys) made harmless for an operator's terminal; and
//! `push_decimal`, a number written without `fmt`'s machinery where text is
//! made per message or per status request.

/// Head and tail of a byte stream within a fixed budget, in bytes.
#[derive(Debug)]
pub struct Capture {
    head: Vec<u8>,
    head_cap: usize,
    tail: Vec<u8>,
    tail_cap: usize,
    /// Next write position in `tail` once it is full (a ring).
    tail_pos: usize,
    total: u64,
}

impl Capture {
    /// A capture keeping at most `limit` bytes (head + tail). Memory is allocated as
    /// bytes arrive, so a quiet child costs nothing.
    pub fn new(limit: u32) -> Capture {
        let limit = limit as usize;
        let head_cap = limit / 2;
        Capture {
            head: Vec::new(),
            head_cap,
            tail: Vec::new(),
            tail_cap: limit - head_cap,
            tail_pos: 0,
            total: 0,
        }
    }

    pub fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.head_cap - self.head.len();
        if room > 0 {
            let n = room.min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        if self.tail_cap == 0 {
            return;
        }
        // Only the last `tail_cap` bytes of this slice can survive.
        if data.len() > self.tail_cap {
            data = &data[data.len() - self.tail_cap..];
        }
        for &b in data {
            if self.tail.len() < self.tail_cap {
                self.tail.push(b);
            } else {
                self.tail[self.tail_pos] = b;
                self.tail_pos = (self.tail_pos + 1) % self.tail_cap;
            }
        }
    }

    /// Bytes seen in all.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes seen but not kept.
    pub fn dropped(&self) -> u64 {
        self.total - (self.head.len() + self.tail.len()) as u64
    }

    /// The kept text, with a marker where bytes were dropped; invalid UTF-8 is
    /// replaced, and trailing white space trimmed.
    pub fn render(&self) -> String {
        let mut bytes = self.head.clone();
        let dropped = self.dropped();
        if dropped > 0 {
            bytes.extend_from_slice(format!("\n[... {dropped} bytes dropped ...]\n").as_bytes());
        }
        let (a, b) = self.tail.split_at(self.tail_pos);
        bytes.extend_from_slice(b);
        bytes.extend_from_slice(a);
        let s = String::from_utf8_lossy(&bytes);
        s.trim_end().to_string()
    }
}

/// `s` cut to at most about `limit` bytes: its first and last `limit / 2` bytes (at
/// character boundaries) with a marker saying how many were cut between them; `s`
/// itself when it fits. For text that must stay small wherever it goes (an
/// environment variable: Linux refuses one string over 128 KiB).
pub fn head_tail(s: &str, limit: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= limit {
        return s.into();
    }
    let mut head = limit / 2;
    while !s.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = s.len() - limit / 2;
    while !s.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{}\n[... {} bytes cut ...]\n{}",
        &s[..head],
        tail - head,
        &s[tail..]
    )
    .into()
}

/// Whether `c` must not reach a terminal as it is: C0 and C1 controls (ESC
/// starts the sequences that move the cursor, retitle the window or rewrite
/// what is on screen) and the Unicode bidirectional controls (U+202E shows
/// `gw-evil` as `live-wg`), and the line and paragraph separators.
fn hostile_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every control or bidirectional character written as `\u{XXXX}`,
/// for names and text from the bus that `crd fleet`, `crd status` and `crd
/// register` print: untrusted text reaching an operator's terminal. `s` itself
/// (no copy) when it has none.
pub fn terminal_safe(s: &str) -> std::borrow::Cow<'_, str> {
    // Printable ASCII (every key of `crd status`, most names) holds none: one
    // test a byte, not a char decoded and matched.
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) || !s.chars().any(hostile_on_terminal) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if hostile_on_terminal(c) {
            // Every such character is below U+10000: four hex digits.
            out.push_str("\\u{");
            let n = u32::from(c);
            for shift in [12, 8, 4, 0] {
                out.push(char::from(b"0123456789abcdef"[(n >> shift & 0xf) as usize]));
            }
            out.push('}');
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// Appends `v` in decimal, as `{v}` writes it (`json::decimal`).
pub fn push_decimal(s: &mut String, v: u64) {
    let mut buf = [0u8; 20];
    let digits = crate::core::json::decimal(v, &mut buf);
    s.extend(digits.iter().map(|&d| char::from(d)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_decimal_writes_what_display_writes() {
        for v in [
            0,
            1,
            9,
            10,
            99,
            100,
            12_345,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut s = String::from("x");
            push_decimal(&mut s, v);
            assert_eq!(s, format!("x{v}"));
        }
    }

    #[test]
    fn head_tail_keeps_both_ends_within_the_limit() {
        assert_eq!(head_tail("short", 16), "short");
        let long = format!("{}{}{}", "a".repeat(100), "b".repeat(1000), "c".repeat(100));
        let cut = head_tail(&long, 200);
        assert!(cut.starts_with(&"a".repeat(100)), "{cut}");
        assert!(cut.ends_with(&"c".repeat(100)), "{cut}");
        assert!(cut.contains("[... 1000 bytes cut ...]"), "{cut}");
        // Character boundaries: a cut never splits a UTF-8 sequence.
        // ("é" is two bytes: 5 of 11 rounds down to 4 at each end.)
        let wide = "é".repeat(100);
        assert_eq!(head_tail(&wide, 11), "éé\n[... 192 bytes cut ...]\néé");
    }

    #[test]
    fn short_output_is_kept_whole() {
        let mut c = Capture::new(16);
        c.push(b"hello ");
        c.push(b"world\n");
        assert_eq!(c.render(), "hello world");
        assert_eq!(c.dropped(), 0);
    }

    #[test]
    fn long_output_keeps_head_and_tail() {
        let mut c = Capture::new(8);
        for chunk in [&b"ABCD"[..], b"xxxxxxxxxxxx", b"xx", b"WXYZ"] {
            c.push(chunk);
        }
        assert_eq!(c.total(), 22);
        assert_eq!(c.dropped(), 14);
        assert_eq!(c.render(), "ABCD\n[... 14 bytes dropped ...]\nWXYZ");
    }

    #[test]
    fn tail_ring_wraps_in_order_byte_by_byte() {
        let mut c = Capture::new(6);
        for b in b"0123456789" {
            c.push(&[*b]);
        }
        assert_eq!(c.render(), "012\n[... 4 bytes dropped ...]\n789");
    }

    #[test]
    fn fifty_megabytes_stay_within_the_limit() {
        let mut c = Capture::new(4096);
        let block = vec![b'y'; 65536];
        for _ in 0..800 {
            c.push(&block);
        }
        assert_eq!(c.total(), 800 * 65536);
        assert!(c.render().len() < 4096 + 64);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_rejected() {
        let mut c = Capture::new(64);
        c.push(&[0xff, b'a', 0xfe]);
        assert_eq!(c.render(), "\u{fffd}a\u{fffd}");
    }

    #[test]
    fn terminal_safe_escapes_controls_and_bidi_and_keeps_the_rest() {
        assert!(matches!(
            terminal_safe("gw.lan Wan_Down é 日本"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(terminal_safe("a\u{1b}[2Jb"), "a\\u{001b}[2Jb");
        assert_eq!(terminal_safe("gw-\u{202e}live"), "gw-\\u{202e}live");
        assert_eq!(
            terminal_safe("x\ny\r\u{7f}\u{85}"),
            "x\\u{000a}y\\u{000d}\\u{007f}\\u{0085}"
        );
        assert_eq!(terminal_safe("\u{2066}\u{2069}"), "\\u{2066}\\u{2069}");
    }
}
