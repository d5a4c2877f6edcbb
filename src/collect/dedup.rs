//! Which crd events the collector has already run, by `(stream, seq)`: a bounded
//! table, kept on disk, so an event the broker or the edge sends again (a
//! redelivery, a resend after a reconnect or an edge's crash) does not run its
//! response twice.
//!
//! Per stream: the seqs done as a few sorted ranges (`lo..=hi`). An edge's events
//! arrive nearly in order, so a stream is mostly one range, held inline (40 bytes
//! a stream with its key and clock; a stream with gaps keeps its ranges in a
//! vector of its own until they close), however far behind a late copy comes. At most `MAX_RANGES` per stream: past
//! it the oldest range is forgotten, and a seq at or below what was forgotten is
//! taken as new (counted as too old). At most `MAX_STREAMS` streams; past it the
//! least recently used one is forgotten (counted), and a stream seen again after
//! that starts afresh. A seq never seen is new, whatever its age: the table never
//! drops an event it did not run.
//!
//! On disk: a `durable::Log` (`persist.rs`) whose snapshot has one record a
//! stream (`stream_record`: the stream, the highest seq forgotten, the ranges;
//! big-endian u64s and a u16 count) and whose changes are the `(stream, seq)`
//! done since (`change`, 16 bytes).
//!
//! Before that log the table was a file (`seen` beside the journal), written
//! whole to a temporary file and renamed over the old one; it is read once, at
//! an upgrade (`decode`, `replay`):
//!
//! ```text
//!  0      1       5                                   (per stream)           end-4
//!  +------+-------+------------+------------+-------+-----------------------+-------+
//!  | 0x02 | count | stream u64 | forgot u64 | n u16 | n x (lo u64, hi u64)  | crc32c|
//!  +------+-------+------------+------------+-------+-----------------------+-------+
//! ```
//! big-endian; a file that does not check out is logged and the table starts
//! empty (the cost: events may run again, never loss).
//!
//! Between two such writes every event done is also appended to a log
//! (`seen.log`: stream u64, seq u64, CRC-32C of both; 20 bytes each) in the loop
//! turn it is done, and synced before the journal's checkpoint, so a crash loses
//! no event done from the table; the log is emptied after each whole write. Replaying it stops
//! at the first entry that does not check out (a torn tail).

use super::shards::Shards;
use crate::collect::error::{Error, Reason};
use crate::spool::format::crc32c;
#[cfg(test)]
use crate::spool::format::crc32c_extend;

/// Ranges of seqs kept per stream.
pub const MAX_RANGES: usize = 64;
/// Streams remembered.
pub const MAX_STREAMS: usize = 10_000;
const FILE_VERSION: u8 = 2;
/// Bytes of one log entry: stream, seq, CRC-32C.
pub const LOG_ENTRY_BYTES: usize = 20;

/// The legacy log entry of `(stream, seq)` done (tests write old files).
#[cfg(test)]
pub fn log_entry(stream: u64, seq: u64) -> [u8; LOG_ENTRY_BYTES] {
    let mut e = [0u8; LOG_ENTRY_BYTES];
    e[..8].copy_from_slice(&stream.to_be_bytes());
    e[8..16].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c(&e[..16]);
    e[16..].copy_from_slice(&crc.to_be_bytes());
    e
}

/// What is known of one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stream {
    ranges: Ranges,
    used: u64,
}

/// Seqs done, as sorted, disjoint, non-adjacent ranges: one inline (the usual
/// case), or more beside the highest seq of a range forgotten at `MAX_RANGES`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ranges {
    One((u64, u64)),
    Many(Box<Many>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Many {
    ranges: Vec<(u64, u64)>,
    /// 0: none forgotten.
    forgot: u64,
}

/// Whether a seq was done, or cannot be told.
enum Known {
    Done,
    New,
    TooOld,
}

impl Ranges {
    fn get(&self, seq: u64) -> Known {
        let m = match self {
            Ranges::One((lo, hi)) if *lo <= seq && seq <= *hi => return Known::Done,
            Ranges::One(..) => return Known::New,
            Ranges::Many(m) => m,
        };
        let i = m.ranges.partition_point(|&(_, hi)| hi < seq);
        match m.ranges.get(i) {
            Some(&(lo, _)) if lo <= seq => Known::Done,
            _ if seq <= m.forgot => Known::TooOld,
            _ => Known::New,
        }
    }

    fn set(&mut self, seq: u64) {
        let m = match self {
            Ranges::One((lo, hi)) if *lo <= seq && seq <= *hi => return,
            Ranges::One((_, hi)) if hi.checked_add(1) == Some(seq) => {
                *hi = seq;
                return;
            }
            Ranges::One((lo, _)) if seq.checked_add(1) == Some(*lo) => {
                *lo = seq;
                return;
            }
            Ranges::One(r) => {
                *self = Ranges::Many(Box::new(Many {
                    ranges: vec![*r],
                    forgot: 0,
                }));
                let Ranges::Many(m) = self else {
                    unreachable!("just made")
                };
                m
            }
            Ranges::Many(m) => m,
        };
        let r = &mut m.ranges;
        let i = r.partition_point(|&(_, hi)| hi.saturating_add(1) < seq);
        match r.get(i).copied() {
            Some((lo, hi)) if lo <= seq && seq <= hi => return,
            // Just above range i: extend it, and join the next one if it touches.
            Some((lo, hi)) if hi + 1 == seq => {
                r[i] = (lo, seq);
                if let Some(&(nlo, nhi)) = r.get(i + 1)
                    && nlo == seq + 1
                {
                    r[i] = (lo, nhi);
                    r.remove(i + 1);
                }
            }
            // Just below range i.
            Some((lo, hi)) if seq + 1 == lo => r[i] = (seq, hi),
            _ => r.insert(i, (seq, seq)),
        }
        if r.len() > MAX_RANGES {
            let (_, hi) = r.remove(0);
            m.forgot = m.forgot.max(hi);
        }
        // The gaps closed and nothing was forgotten: back inline.
        if let ([r], 0) = (m.ranges.as_slice(), m.forgot) {
            *self = Ranges::One(*r);
        }
    }

    /// The ranges, and the highest seq forgotten (0: none).
    fn parts(&self) -> (&[(u64, u64)], u64) {
        match self {
            Ranges::One(r) => (std::slice::from_ref(r), 0),
            Ranges::Many(m) => (&m.ranges, m.forgot),
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
    streams: Shards<Stream>,
    clock: u64,
    pub counts: Counts,
}

/// The durable log's change for `(stream, seq)` done.
pub fn change(stream: u64, seq: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&stream.to_be_bytes());
    b[8..].copy_from_slice(&seq.to_be_bytes());
    b
}

/// One stream as written (`Seen::stream_record`): its id and ranges (`None`:
/// nothing known), and the bytes it took.
fn parse_stream(b: &[u8]) -> Result<(u64, Option<Ranges>, usize), Error> {
    let mut at = 0;
    let mut take = |k: usize| -> Result<&[u8], Error> {
        let s = b.get(at..at + k).ok_or(Reason::CutShort)?;
        at += k;
        Ok(s)
    };
    let u64_of = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
    let id = u64_of(take(8)?);
    let forgot = u64_of(take(8)?);
    let k = u16::from_be_bytes(take(2)?.try_into().expect("2 bytes")) as usize;
    if k > MAX_RANGES {
        return Err(Reason::TooManyRanges(k).into());
    }
    let mut ranges = Vec::with_capacity(k);
    for _ in 0..k {
        let lo = u64_of(take(8)?);
        let hi = u64_of(take(8)?);
        if lo > hi
            || ranges
                .last()
                .is_some_and(|&(_, h): &(u64, u64)| h.saturating_add(1) >= lo)
        {
            return Err(Reason::RangesOutOfOrder.into());
        }
        ranges.push((lo, hi));
    }
    let ranges = match (ranges.as_slice(), forgot) {
        ([r], 0) => Some(Ranges::One(*r)),
        ([], 0) => None,
        _ => Some(Ranges::Many(Box::new(Many { ranges, forgot }))),
    };
    Ok((id, ranges, at))
}

impl Seen {
    /// Whether `(stream, seq)` was done already (a duplicate, counted).
    pub fn done(&mut self, stream: u64, seq: u64) -> bool {
        self.clock += 1;
        let Some(s) = self.streams.get_mut(stream) else {
            return false;
        };
        s.used = self.clock;
        match s.ranges.get(seq) {
            Known::Done => {
                self.counts.duplicates += 1;
                true
            }
            Known::New => false,
            Known::TooOld => {
                self.counts.too_old += 1;
                false
            }
        }
    }

    /// Records `(stream, seq)` as done.
    pub fn mark(&mut self, stream: u64, seq: u64) {
        self.clock += 1;
        let clock = self.clock;
        // A stream known already (nearly every mark) is found with one
        // lookup: a key's hash (SipHash, the keys come from the bus) is most
        // of a mark's cost.
        if let Some(s) = self.streams.get_mut(stream) {
            s.used = clock;
            s.ranges.set(seq);
            return;
        }
        if self.streams.len() >= MAX_STREAMS
            && let Some(oldest) = self.streams.min_key_by(|s| s.used)
        {
            self.streams.remove(oldest);
            self.counts.evicted += 1;
        }
        let s = self.streams.get_or_insert_with(stream, || Stream {
            ranges: Ranges::One((seq, seq)),
            used: clock,
        });
        s.used = clock;
        s.ranges.set(seq);
    }

    /// Applies a change of the durable log (`change`); `false` if it is not one.
    pub fn apply_change(&mut self, b: &[u8]) -> bool {
        let Ok(b) = <[u8; 16]>::try_from(b) else {
            return false;
        };
        let be = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        self.mark(be(0), be(8));
        true
    }

    /// Hands `f` one snapshot record a stream (see the top), in no particular
    /// order.
    pub fn stream_records(&self, f: &mut dyn FnMut(&[u8])) {
        let mut buf = Vec::with_capacity(64);
        for (id, s) in self.streams.iter() {
            buf.clear();
            let (ranges, forgot) = s.ranges.parts();
            buf.extend_from_slice(&id.to_be_bytes());
            buf.extend_from_slice(&forgot.to_be_bytes());
            buf.extend_from_slice(&(ranges.len() as u16).to_be_bytes());
            for (lo, hi) in ranges {
                buf.extend_from_slice(&lo.to_be_bytes());
                buf.extend_from_slice(&hi.to_be_bytes());
            }
            f(&buf);
        }
    }

    /// Adds a stream from a snapshot record; `Err` says why it is not one.
    pub fn load_stream(&mut self, b: &[u8]) -> Result<(), Error> {
        let (id, ranges, used) = parse_stream(b)?;
        if used != b.len() {
            return Err(Reason::TrailingBytes.into());
        }
        if let Some(ranges) = ranges
            && (self.streams.contains_key(id) || self.streams.len() < MAX_STREAMS)
        {
            self.streams.insert(id, Stream { ranges, used: 0 });
        }
        Ok(())
    }

    /// Applies the entries of a legacy log (see above); returns how many
    /// checked out.
    pub fn replay(&mut self, log: &[u8]) -> usize {
        let mut n = 0;
        for e in log.chunks_exact(LOG_ENTRY_BYTES) {
            let (body, crc) = e.split_at(16);
            if crc32c(body).to_be_bytes() != crc {
                break;
            }
            let be = |i: usize| u64::from_be_bytes(body[i..i + 8].try_into().expect("8 bytes"));
            self.mark(be(0), be(8));
            n += 1;
        }
        n
    }

    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Writes the legacy file (see the diagram above) to `w` (tests make old
    /// files with it).
    #[cfg(test)]
    pub fn write_to(&mut self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        // A stream's bytes there are its snapshot record's.
        let mut buf = vec![FILE_VERSION];
        buf.extend_from_slice(&(self.streams.len() as u32).to_be_bytes());
        self.stream_records(&mut |r| buf.extend_from_slice(r));
        let crc = crc32c_extend(0, &buf);
        buf.extend_from_slice(&crc.to_be_bytes());
        w.write_all(&buf)
    }

    /// The file's bytes, in memory.
    #[cfg(test)]
    pub fn encode(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out).expect("writing to a Vec");
        out
    }

    /// The table from a file's bytes; `Err` says why it cannot be trusted.
    pub fn decode(b: &[u8]) -> Result<Seen, Error> {
        if b.len() < 9 {
            return Err(Reason::TooShort.into());
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32c(body).to_be_bytes() != crc {
            return Err(Reason::ChecksumMismatch.into());
        }
        if body[0] != FILE_VERSION {
            return Err(Reason::Version(body[0]).into());
        }
        let n = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        if n > MAX_STREAMS {
            return Err(Reason::TooManyStreams(n).into());
        }
        let mut at = 5;
        let mut seen = Seen::default();
        for _ in 0..n {
            let (id, ranges, used) = parse_stream(&body[at..])?;
            at += used;
            if let Some(ranges) = ranges {
                seen.streams.insert(id, Stream { ranges, used: 0 });
            }
        }
        if at != body.len() {
            return Err(Reason::TrailingBytes.into());
        }
        Ok(seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Seen {
        fn ranges_of(&self, stream: u64) -> Vec<(u64, u64)> {
            self.streams.get(stream).unwrap().ranges.parts().0.to_vec()
        }
    }

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
    fn a_late_copy_however_old_is_known_and_ranges_merge() {
        let mut s = Seen::default();
        for seq in 1..=100_000 {
            s.mark(1, seq);
        }
        assert_eq!(s.ranges_of(1), [(1, 100_000)], "one range");
        assert!(s.done(1, 1) && s.done(1, 50_000) && !s.done(1, 100_001));
        // Gaps, filled in any order, merge back into one range.
        let mut s = Seen::default();
        for seq in [10, 12, 14, 11, 13, 9, 15] {
            s.mark(2, seq);
        }
        assert_eq!(s.ranges_of(2), [(9, 15)]);
        for seq in [5, 7, 20] {
            s.mark(2, seq);
        }
        assert_eq!(s.ranges_of(2), [(5, 5), (7, 7), (9, 15), (20, 20)]);
        assert!(!s.done(2, 6) && !s.done(2, 8) && !s.done(2, 16));
        s.mark(2, 6);
        s.mark(2, 8);
        assert_eq!(s.ranges_of(2), [(5, 15), (20, 20)]);
    }

    #[test]
    fn past_the_range_bound_the_oldest_is_forgotten_and_taken_as_new() {
        let mut s = Seen::default();
        for k in 0..=MAX_RANGES as u64 {
            s.mark(3, k * 10);
        }
        assert_eq!(s.ranges_of(3).len(), MAX_RANGES);
        assert!(!s.done(3, 0), "forgotten: taken as new");
        assert_eq!(s.counts.too_old, 1);
        assert!(
            !s.done(3, 5),
            "never seen and below what was forgotten: too old"
        );
        assert!(s.done(3, 10) && !s.done(3, 11));
        assert!(!s.done(3, 10_000), "above: new");
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
    fn the_log_replays_up_to_a_torn_or_damaged_entry() {
        let mut log = Vec::new();
        for seq in [4, 5, 9] {
            log.extend_from_slice(&log_entry(3, seq));
        }
        let mut s = Seen::default();
        assert_eq!(s.replay(&log), 3);
        assert!(s.done(3, 4) && s.done(3, 5) && s.done(3, 9) && !s.done(3, 6));
        let mut s = Seen::default();
        assert_eq!(s.replay(&log[..log.len() - 7]), 2, "a torn last entry");
        log[LOG_ENTRY_BYTES + 3] ^= 1;
        let mut s = Seen::default();
        assert_eq!(s.replay(&log), 1, "stops at the damaged entry");
    }

    #[test]
    fn the_file_round_trips_and_damage_is_refused() {
        let mut s = Seen::default();
        for (st, seq) in [(1, 5), (1, 9), (2, 1000), (u64::MAX, 1 << 40), (1, 6)] {
            s.mark(st, seq);
        }
        let b = s.encode();
        let mut back = Seen::decode(&b).unwrap();
        for (st, seq) in [(1, 5), (1, 9), (2, 1000), (u64::MAX, 1 << 40)] {
            assert!(back.done(st, seq), "{st} {seq}");
        }
        assert!(back.done(1, 6) && !back.done(1, 7));
        for cut in [0, 4, 8, b.len() - 1] {
            assert!(Seen::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..b.len() {
            let mut x = b.clone();
            x[i] ^= 0x20;
            assert!(Seen::decode(&x).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn random_marks_agree_with_a_set_and_a_closed_stream_is_inline_again() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..50 {
            let mut s = Seen::default();
            let mut set = std::collections::BTreeSet::new();
            for _ in 0..100 {
                // xorshift64: deterministic, no dependency.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let seq = x % 120;
                s.mark(round, seq);
                set.insert(seq);
                for q in 0..130 {
                    assert_eq!(s.done(round, q), set.contains(&q), "round {round} seq {q}");
                }
            }
            for seq in 0..120 {
                s.mark(round, seq);
            }
            assert!(matches!(
                s.streams.get(round).unwrap().ranges,
                Ranges::One((0, 119))
            ));
        }
        // The usual stream costs no allocation of its own.
        if cfg!(target_pointer_width = "64") {
            assert!(std::mem::size_of::<Stream>() <= 32);
        }
    }
}
