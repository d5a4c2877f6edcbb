//! Which crd events the collector has already run, by `(stream, seq)`: a bounded
//! table, kept on disk, so an event the broker or the edge sends again (a
//! redelivery, a resend after a reconnect or an edge's crash) does not run its
//! response twice.
//!
//! Per stream: the highest seq done and a window of `WINDOW` bits below it (done
//! or not). A seq above the window moves it; a seq below it is older than anything
//! the table can tell about and is taken as new (counted). At most `MAX_STREAMS`
//! streams; past it the least recently used one is forgotten (counted), and a
//! stream seen again after that starts afresh. About 150 bytes per stream.
//!
//! On disk (`seen` beside the journal), written whole to a temporary file and
//! renamed over the old one:
//!
//! ```text
//!  0      1       5                          (per stream)                       end-4
//!  +------+-------+-------------+---------+----------------------------+-------+
//!  | 0x01 | count | stream u64  | top u64 | window, WINDOW/8 bytes      | crc32c|
//!  +------+-------+-------------+---------+----------------------------+-------+
//! ```
//! big-endian; a file that does not check out is logged and the table starts
//! empty (the cost: events may run again, never loss).

use crate::spool::format::crc32c;
use std::collections::HashMap;

/// Seqs remembered below each stream's highest.
pub const WINDOW: u64 = 1024;
/// Streams remembered.
pub const MAX_STREAMS: usize = 10_000;
const FILE_VERSION: u8 = 1;
const WORDS: usize = (WINDOW / 64) as usize;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Window {
    /// The highest seq done; bit i of `bits` is seq `top - i` (bit 0: `top`).
    top: u64,
    bits: [u64; WORDS],
    used: u64,
}

impl Window {
    fn get(&self, seq: u64) -> Option<bool> {
        if seq > self.top {
            return Some(false);
        }
        let back = self.top - seq;
        (back < WINDOW).then(|| self.bits[(back / 64) as usize] & (1 << (back % 64)) != 0)
    }

    fn set(&mut self, seq: u64) {
        if seq > self.top {
            let shift = seq - self.top;
            if shift >= WINDOW {
                self.bits = [0; WORDS];
            } else {
                // Shift the whole window by `shift` bits towards older seqs.
                let (words, bits) = ((shift / 64) as usize, (shift % 64) as u32);
                for i in (0..WORDS).rev() {
                    let lo = i.checked_sub(words).map_or(0, |j| self.bits[j]);
                    let lower = i.checked_sub(words + 1).map_or(0, |j| self.bits[j]);
                    self.bits[i] = if bits == 0 {
                        lo
                    } else {
                        (lo << bits) | (lower >> (64 - bits))
                    };
                }
            }
            self.top = seq;
        }
        let back = self.top - seq;
        if back < WINDOW {
            self.bits[(back / 64) as usize] |= 1 << (back % 64);
        }
    }
}

/// Counters for `crd status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub duplicates: u64,
    pub too_old: u64,
    pub evicted: u64,
}

#[derive(Debug, Default)]
pub struct Seen {
    streams: HashMap<u64, Window>,
    clock: u64,
    pub counts: Counts,
    /// Changed since the last `encode`.
    pub dirty: bool,
}

impl Seen {
    /// Whether `(stream, seq)` was done already (a duplicate, counted).
    pub fn done(&mut self, stream: u64, seq: u64) -> bool {
        self.clock += 1;
        let Some(w) = self.streams.get_mut(&stream) else {
            return false;
        };
        w.used = self.clock;
        match w.get(seq) {
            Some(true) => {
                self.counts.duplicates += 1;
                true
            }
            Some(false) => false,
            None => {
                self.counts.too_old += 1;
                false
            }
        }
    }

    /// Records `(stream, seq)` as done.
    pub fn mark(&mut self, stream: u64, seq: u64) {
        self.clock += 1;
        if !self.streams.contains_key(&stream)
            && self.streams.len() >= MAX_STREAMS
            && let Some((&oldest, _)) = self.streams.iter().min_by_key(|(_, w)| w.used)
        {
            self.streams.remove(&oldest);
            self.counts.evicted += 1;
        }
        let w = self.streams.entry(stream).or_insert(Window {
            top: seq,
            bits: [0; WORDS],
            used: 0,
        });
        w.used = self.clock;
        w.set(seq);
        self.dirty = true;
    }

    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// The file's bytes (see the diagram above).
    pub fn encode(&mut self) -> Vec<u8> {
        self.dirty = false;
        let mut out = Vec::with_capacity(9 + self.streams.len() * (16 + WORDS * 8));
        out.push(FILE_VERSION);
        out.extend_from_slice(&(self.streams.len() as u32).to_be_bytes());
        let mut ids: Vec<&u64> = self.streams.keys().collect();
        ids.sort();
        for id in ids {
            let w = &self.streams[id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&w.top.to_be_bytes());
            for b in &w.bits {
                out.extend_from_slice(&b.to_be_bytes());
            }
        }
        let crc = crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// The table from a file's bytes; `Err` says why it cannot be trusted.
    pub fn decode(b: &[u8]) -> Result<Seen, String> {
        let entry = 16 + WORDS * 8;
        if b.len() < 9 {
            return Err("too short".into());
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32c(body).to_be_bytes() != crc {
            return Err("checksum mismatch".into());
        }
        if body[0] != FILE_VERSION {
            return Err(format!("version {}", body[0]));
        }
        let n = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        if n > MAX_STREAMS || body.len() != 5 + n * entry {
            return Err(format!("{n} streams in {} bytes", body.len()));
        }
        let mut seen = Seen::default();
        for e in body[5..].chunks_exact(entry) {
            let be = |i: usize| u64::from_be_bytes(e[i..i + 8].try_into().expect("8 bytes"));
            let mut bits = [0u64; WORDS];
            for (k, w) in bits.iter_mut().enumerate() {
                *w = be(16 + k * 8);
            }
            seen.streams.insert(
                be(0),
                Window {
                    top: be(8),
                    bits,
                    used: 0,
                },
            );
        }
        Ok(seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seq_done_is_a_duplicate_and_one_not_done_is_not() {
        let mut s = Seen::default();
        assert!(!s.done(7, 1));
        s.mark(7, 1);
        assert!(s.done(7, 1));
        assert!(!s.done(7, 2), "not done yet");
        assert!(!s.done(8, 1), "another stream");
        // Out of order within the window: 5 done before 3 and 4.
        s.mark(7, 5);
        assert!(!s.done(7, 3) && !s.done(7, 4));
        s.mark(7, 3);
        assert!(s.done(7, 3) && !s.done(7, 4) && s.done(7, 5) && s.done(7, 1));
        assert_eq!(s.counts.duplicates, 4);
    }

    #[test]
    fn the_window_slides_and_what_falls_out_is_taken_as_new_and_counted() {
        let mut s = Seen::default();
        for seq in 1..=3000 {
            s.mark(1, seq);
        }
        assert!(s.done(1, 3000) && s.done(1, 3000 - WINDOW + 1));
        assert!(!s.done(1, 3000 - WINDOW), "older than the window");
        assert_eq!(s.counts.too_old, 1);
        // A jump past the whole window forgets it.
        s.mark(1, 10_000);
        assert!(!s.done(1, 9_999) && s.done(1, 10_000));
        // Shifts by amounts that are not multiples of 64 keep the bits.
        let mut s = Seen::default();
        for seq in [100, 37, 99, 164, 165, 300] {
            s.mark(2, seq);
        }
        for seq in [100, 99, 164, 165, 300] {
            assert!(s.done(2, seq), "{seq}");
        }
        for seq in [98, 101, 163, 166, 299] {
            assert!(!s.done(2, seq), "{seq}");
        }
    }

    #[test]
    fn the_least_recently_used_stream_is_forgotten_at_the_bound() {
        let mut s = Seen::default();
        for stream in 0..MAX_STREAMS as u64 {
            s.mark(stream, 1);
        }
        s.done(0, 1); // stream 0 used again: stream 1 is now the oldest
        s.mark(MAX_STREAMS as u64, 1);
        assert_eq!(s.streams(), MAX_STREAMS);
        assert_eq!(s.counts.evicted, 1);
        assert!(s.done(0, 1));
        assert!(!s.done(1, 1), "forgotten: taken as new");
    }

    #[test]
    fn the_file_round_trips_and_damage_is_refused() {
        let mut s = Seen::default();
        for (st, seq) in [(1, 5), (1, 9), (2, 1000), (u64::MAX, 1 << 40)] {
            s.mark(st, seq);
        }
        let b = s.encode();
        assert!(!s.dirty);
        let mut back = Seen::decode(&b).unwrap();
        for (st, seq) in [(1, 5), (1, 9), (2, 1000), (u64::MAX, 1 << 40)] {
            assert!(back.done(st, seq), "{st} {seq}");
        }
        assert!(!back.done(1, 6));
        for cut in [0, 4, 8, b.len() - 1] {
            assert!(Seen::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..b.len() {
            let mut x = b.clone();
            x[i] ^= 0x20;
            assert!(Seen::decode(&x).is_err(), "flip at {i}");
        }
    }
}
