//! The one durable log for state that is not a queue: a snapshot and the changes
//! since, over `Storage`, so every user is under the same fault and power-cut
//! tests. The command tables (edge and relay), the collector's table of events
//! done and the rule registers keep themselves in one each; the spool and the
//! journal are queues of segments, framed the same way (`format.rs`).
//!
//! Files `<stem>.<generation>`, each a run of the spool's record frames
//! (`format::encode_record`, big-endian, CRC-32C), the frame's seq counting the
//! file's frames from 1:
//!
//! ```text
//!  frame 1: header  = generation u32, snapshot records u32, the user's header
//!  frames 2..=1+n:  the snapshot's records (the user's state, whole)
//!  frames past it:  changes, appended in order
//! ```
//!
//! A change is appended to memory (`append`), written with the turn's others in
//! one write (`flush`), and made durable by `sync` (fdatasync). A snapshot
//! (`Snapshot`, `commit`) is written to the next generation, synced with its
//! directory, then the old file removed: at start the newest file whose header
//! and counted snapshot records are whole wins, and a torn or damaged tail after
//! them is cut at the first frame that does not check out. So a power cut at any
//! point leaves either the old generation with every change synced into it, or
//! the new one.
//!
//! What a user keeps and drops is its own policy: the log never drops a record.
//! After a failed fdatasync the file's unsynced pages cannot be trusted (the
//! kernel may have dropped them): `wants_snapshot` then says the state must be
//! written whole again, as it does once the file passes `compact_at` bytes
//! (`Limits::compact_bytes`, or twice the last snapshot).

use crate::spool::format::{self, RECORD_HEADER_BYTES};
use crate::spool::storage::Storage;
use std::io;

/// A log's size bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The file is written whole again (a new generation) past this many bytes,
    /// or past twice the last snapshot, whichever is more.
    pub compact_bytes: u64,
    /// The most of one file read at start, bytes: the user's own bounds keep
    /// its snapshot far below; a file past it is read up to it (its tail is
    /// cut as a torn one would be).
    pub max_file_bytes: u64,
}

/// What a frame read at start is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The user's header (its bytes as given to `Snapshot::new`).
    Header,
    /// One record of the snapshot.
    Snapshot,
    /// One change appended after it.
    Change,
}

pub struct Log<S: Storage> {
    st: S,
    stem: &'static str,
    limits: Limits,
    generation: u32,
    /// Bytes of the file written (changes in `pending` not included).
    len: u64,
    /// The next frame's seq in this file.
    next: u64,
    /// Changes appended and not yet written (`flush`).
    pending: Vec<u8>,
    /// Written since the last fdatasync.
    unsynced: bool,
    compact_at: u64,
    /// A write or sync failed: only a whole snapshot can be trusted again.
    broken: bool,
}

/// A snapshot being built: the user's header and records (and changes after
/// them, written in the same file), then `Log::commit`.
pub struct Snapshot {
    header: Vec<u8>,
    records: Vec<u8>,
    count: u32,
    changes: Vec<Vec<u8>>,
}

impl Snapshot {
    pub fn new(header: &[u8]) -> Snapshot {
        Snapshot {
            header: header.to_vec(),
            records: Vec::new(),
            count: 0,
            changes: Vec::new(),
        }
    }

    /// Adds a change after the snapshot's records (an upgrade writes what an
    /// older format logged after its snapshot).
    pub fn change(&mut self, body: &[u8]) {
        self.changes.push(body.to_vec());
    }

    /// Adds one record (framed as the snapshot's next one).
    pub fn record(&mut self, body: &[u8]) {
        format::encode_record(u64::from(self.count) + 2, body, &mut self.records);
        self.count += 1;
    }
}

fn file_name(stem: &str, generation: u32) -> String {
    format!("{stem}.{generation}")
}

/// The frames at the start of `b` whose seqs count from 1, each checked; where
/// the whole ones end.
fn frames(b: &[u8]) -> (Vec<&[u8]>, usize) {
    let (mut out, mut at) = (Vec::new(), 0);
    while let Some(h) = format::decode_record_header(&b[at..], u32::MAX, (b.len() - at) as u64) {
        let body = &b[at + RECORD_HEADER_BYTES..at + RECORD_HEADER_BYTES + h.len as usize];
        if h.mark || h.seq != out.len() as u64 + 1 || !format::record_crc_ok(&b[at..], &h, body) {
            break;
        }
        out.push(body);
        at += RECORD_HEADER_BYTES + body.len();
    }
    (out, at)
}

/// The generations of the files `<stem>.<n>` in `st`, newest first.
pub fn generations<S: Storage>(st: &mut S, stem: &str) -> io::Result<Vec<u32>> {
    let mut g: Vec<u32> = st
        .list()?
        .iter()
        .filter_map(|n| n.strip_prefix(stem)?.strip_prefix('.')?.parse().ok())
        .collect();
    g.sort_unstable_by(|a, b| b.cmp(a));
    Ok(g)
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The newest generation of `stem` whose header and snapshot are whole: its
/// number, bytes and where its whole frames end; what was not used, in
/// `warnings`.
fn newest_whole<S: Storage>(
    st: &mut S,
    stem: &str,
    generations: &[u32],
    limits: Limits,
    warnings: &mut Vec<String>,
) -> io::Result<Option<(u32, Vec<u8>, usize)>> {
    for &generation in generations {
        let name = file_name(stem, generation);
        let size = st.len(&name)?.unwrap_or(0).min(limits.max_file_bytes);
        let mut buf = vec![0u8; size as usize];
        let n = st.read_at(&name, 0, &mut buf)?;
        buf.truncate(n);
        let (bodies, end) = frames(&buf);
        let whole = bodies.first().is_some_and(|h| {
            be32(h, 0) == Some(generation) && be32(h, 4).is_some_and(|c| bodies.len() > c as usize)
        });
        if whole {
            if end < buf.len() {
                warnings.push(format!(
                    "{name}: {} bytes of a torn tail cut",
                    buf.len() - end
                ));
            }
            return Ok(Some((generation, buf, end)));
        }
        warnings.push(format!(
            "{name}: incomplete (a snapshot cut short), not used"
        ));
    }
    Ok(None)
}

impl<S: Storage> Log<S> {
    /// Opens the log `stem` in `st`, handing `each` every frame of the newest
    /// whole generation in order (the header, the snapshot's records, the
    /// changes); a log that does not exist yet starts with an empty header.
    /// `Err` only when the directory cannot be read or the first file cannot
    /// be made; damage is cut and reported in the warnings.
    pub fn open(
        mut st: S,
        stem: &'static str,
        limits: Limits,
        each: &mut dyn FnMut(Part, &[u8]),
    ) -> io::Result<(Log<S>, Vec<String>)> {
        let mut warnings = Vec::new();
        let generations = generations(&mut st, stem)?;
        let chosen = newest_whole(&mut st, stem, &generations, limits, &mut warnings)?;
        let mut log = Log {
            st,
            stem,
            limits,
            generation: 0,
            len: 0,
            next: 1,
            pending: Vec::new(),
            unsynced: false,
            compact_at: limits.compact_bytes,
            broken: false,
        };
        match chosen {
            Some((generation, buf, end)) => {
                let (bodies, _) = frames(&buf[..end]);
                let count = be32(bodies[0], 4).unwrap_or(0) as usize;
                each(Part::Header, &bodies[0][8..]);
                for (i, b) in bodies[1..].iter().enumerate() {
                    each(
                        if i < count {
                            Part::Snapshot
                        } else {
                            Part::Change
                        },
                        b,
                    );
                }
                log.generation = generation;
                log.len = end as u64;
                log.next = bodies.len() as u64 + 1;
                let name = file_name(stem, generation);
                if end < buf.len() {
                    log.st.truncate(&name, end as u64)?;
                    log.st.sync(&name)?;
                }
                log.compact_at = limits.compact_bytes.max(2 * end as u64);
            }
            None => {
                each(Part::Header, &[]);
                let first = generations
                    .first()
                    .copied()
                    .unwrap_or(0)
                    .wrapping_add(1)
                    .max(1);
                log.write_generation(first, &Snapshot::new(&[]))?;
            }
        }
        for g in generations.into_iter().filter(|&g| g != log.generation) {
            log.st.remove(&file_name(stem, g))?;
        }
        log.st.sync_dir()?;
        Ok((log, warnings))
    }

    /// Appends one change (in memory until `flush` or `sync`).
    pub fn append(&mut self, body: &[u8]) {
        format::encode_record(self.next, body, &mut self.pending);
        self.next += 1;
    }

    /// Writes the changes appended so far (one write), not synced. On an error
    /// they stay appended, and the log wants a snapshot.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let name = file_name(self.stem, self.generation);
        if let Err(e) = self.st.write_at(&name, self.len, &self.pending) {
            self.broken = true;
            return Err(e);
        }
        self.len += self.pending.len() as u64;
        self.pending.clear();
        self.unsynced = true;
        Ok(())
    }

    /// Makes every change appended so far durable (one fdatasync). After an
    /// error nothing appended since the last good sync or snapshot may be
    /// taken as durable: the log wants a snapshot.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other(
                "a write or sync failed before: only a snapshot is durable now",
            ));
        }
        self.flush()?;
        if self.unsynced {
            let name = file_name(self.stem, self.generation);
            if let Err(e) = self.st.sync(&name) {
                self.st.reopen(&name);
                self.broken = true;
                return Err(e);
            }
            self.unsynced = false;
        }
        Ok(())
    }

    /// Makes every change durable: one fdatasync, or, when the log wants one,
    /// the state written whole by `snapshot` (also after a failed sync, when
    /// only that is trusted).
    pub fn sync_with(&mut self, snapshot: impl FnOnce() -> Snapshot) -> io::Result<()> {
        if !self.wants_snapshot() {
            self.sync()?;
        }
        if self.wants_snapshot() {
            self.commit(&snapshot())?;
        }
        Ok(())
    }

    /// The current file's generation.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Whether the user should write its state whole (`commit`): the file is
    /// long, or a write or sync failed.
    pub fn wants_snapshot(&self) -> bool {
        self.broken || self.len + self.pending.len() as u64 > self.compact_at
    }

    /// Writes `snap` as the next generation, synced, and makes it the log: the
    /// changes appended before are in it (the user's state includes them) and
    /// are dropped. On an error the old generation stays the log, and the
    /// changes appended stay appended.
    pub fn commit(&mut self, snap: &Snapshot) -> io::Result<()> {
        let generation = self.generation.wrapping_add(1).max(1);
        self.write_generation(generation, snap)
    }

    fn write_generation(&mut self, generation: u32, snap: &Snapshot) -> io::Result<()> {
        let name = file_name(self.stem, generation);
        let mut head = Vec::with_capacity(8 + snap.header.len());
        head.extend_from_slice(&generation.to_be_bytes());
        head.extend_from_slice(&snap.count.to_be_bytes());
        head.extend_from_slice(&snap.header);
        let mut b = Vec::with_capacity(RECORD_HEADER_BYTES + head.len() + snap.records.len());
        format::encode_record(1, &head, &mut b);
        b.extend_from_slice(&snap.records);
        let first_change = u64::from(snap.count) + 2;
        for (i, c) in snap.changes.iter().enumerate() {
            format::encode_record(first_change + i as u64, c, &mut b);
        }
        let r = self
            .st
            .remove(&name)
            .and_then(|()| self.st.write_at(&name, 0, &b))
            .and_then(|()| self.st.sync(&name))
            .and_then(|()| self.st.sync_dir());
        if let Err(e) = r {
            let _ = self.st.remove(&name);
            self.st.reopen(&name);
            return Err(e);
        }
        let old = (self.generation != 0 && self.generation != generation)
            .then(|| file_name(self.stem, self.generation));
        self.generation = generation;
        self.len = b.len() as u64;
        self.next = first_change + snap.changes.len() as u64;
        self.pending.clear();
        self.unsynced = false;
        self.broken = false;
        self.compact_at = self.limits.compact_bytes.max(2 * self.len);
        if let Some(old) = old {
            self.st.remove(&old)?;
            self.st.sync_dir()?;
        }
        Ok(())
    }

    /// Bytes of the current file, changes not yet written included.
    pub fn bytes(&self) -> u64 {
        self.len + self.pending.len() as u64
    }

    /// The storage under the log (tests: faults and power cuts).
    pub fn storage(&mut self) -> &mut S {
        &mut self.st
    }

    /// The storage back.
    pub fn into_storage(self) -> S {
        self.st
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::storage::{MemStorage, Op};

    const LIMITS: Limits = Limits {
        compact_bytes: 600,
        max_file_bytes: 1 << 20,
    };

    /// The header and every record (snapshot, then changes) of the log in `st`.
    fn read(st: MemStorage) -> (Log<MemStorage>, Vec<u8>, Vec<u32>, Vec<String>) {
        let (mut header, mut values) = (Vec::new(), Vec::new());
        let (log, w) = Log::open(st, "t", LIMITS, &mut |part, b| match part {
            Part::Header => header = b.to_vec(),
            _ => values.push(u32::from_be_bytes(b.try_into().unwrap())),
        })
        .unwrap();
        (log, header, values, w)
    }

    fn snapshot(values: &[u32]) -> Snapshot {
        let mut s = Snapshot::new(b"hd");
        for v in values {
            s.record(&v.to_be_bytes());
        }
        s
    }

    #[test]
    fn changes_and_snapshots_read_back_in_order() {
        let (mut log, header, values, w) = read(MemStorage::new());
        assert!(
            header.is_empty() && values.is_empty() && w.is_empty(),
            "{w:?}"
        );
        for v in 0..10u32 {
            log.append(&v.to_be_bytes());
        }
        log.sync().unwrap();
        let (mut log, _, values, _) = read(log.into_storage());
        assert_eq!(values, (0..10).collect::<Vec<_>>());
        log.commit(&snapshot(&values)).unwrap();
        log.append(&10u32.to_be_bytes());
        log.sync().unwrap();
        let (log, header, values, w) = read(log.into_storage());
        assert_eq!(header, b"hd");
        assert_eq!(values, (0..11).collect::<Vec<_>>());
        assert!(w.is_empty(), "{w:?}");
        let mut st = log.into_storage();
        assert_eq!(
            st.list().unwrap(),
            vec!["t.2".to_string()],
            "the old one removed"
        );
    }

    /// xorshift: the tests' only randomness, seeded.
    fn next(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    #[test]
    fn a_power_cut_anywhere_keeps_every_synced_change_and_invents_none() {
        for seed in 1..300u64 {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let (mut log, _, mut history, _) = read(MemStorage::new());
            let mut durable = 0;
            for _ in 0..(next(&mut x) % 60) {
                match next(&mut x) % 8 {
                    0 => {
                        if log.sync().is_ok() {
                            durable = history.len();
                        }
                    }
                    1 if log.wants_snapshot() => {
                        if log.commit(&snapshot(&history)).is_ok() {
                            durable = history.len();
                        }
                    }
                    2 => {
                        let _ = log.flush();
                    }
                    _ => {
                        let v = next(&mut x) as u32;
                        history.push(v);
                        log.append(&v.to_be_bytes());
                    }
                }
            }
            let mut st = log.into_storage();
            let keep_new = next(&mut x).is_multiple_of(2);
            st.power_cut(
                |_, len| match next(&mut x) % 3 {
                    0 => None,
                    1 => Some(len),
                    _ => Some((next(&mut x) as usize) % (len + 1)),
                },
                keep_new,
            );
            let (mut log, _, got, _) = read(st);
            assert!(
                got.len() >= durable && history.starts_with(&got),
                "seed {seed}: {} of {} read back, {durable} were durable",
                got.len(),
                history.len()
            );
            // It goes on after the cut.
            log.append(&7u32.to_be_bytes());
            log.sync().unwrap();
            let (_, _, again, _) = read(log.into_storage());
            assert_eq!(again.len(), got.len() + 1, "seed {seed}");
        }
    }

    #[test]
    fn after_a_failed_sync_only_a_snapshot_is_trusted() {
        let (mut log, _, _, _) = read(MemStorage::new());
        log.append(&1u32.to_be_bytes());
        log.sync().unwrap();
        log.append(&2u32.to_be_bytes());
        log.storage().fail(Op::Sync, 0, io::ErrorKind::Other);
        assert!(log.sync().is_err());
        assert!(log.wants_snapshot());
        log.append(&3u32.to_be_bytes());
        assert!(log.sync().is_err(), "a later sync is not taken as durable");
        log.commit(&snapshot(&[1, 2, 3])).unwrap();
        assert!(!log.wants_snapshot());
        log.sync().unwrap();
        let mut st = log.into_storage();
        st.power_cut(|_, _| None, false);
        assert_eq!(read(st).2, vec![1, 2, 3]);
    }

    #[test]
    fn a_failed_snapshot_leaves_the_old_generation_the_log() {
        let (mut log, _, _, _) = read(MemStorage::new());
        log.append(&1u32.to_be_bytes());
        log.sync().unwrap();
        log.storage().fail(Op::Write, 0, io::ErrorKind::StorageFull);
        assert!(log.commit(&snapshot(&[1])).is_err());
        log.append(&2u32.to_be_bytes());
        log.sync().unwrap();
        let (_, _, values, w) = read(log.into_storage());
        assert_eq!(values, vec![1, 2], "{w:?}");
    }

    #[test]
    fn the_file_stays_bounded_by_snapshots() {
        let (mut log, _, _, _) = read(MemStorage::new());
        let mut history = Vec::new();
        for v in 0..1000u32 {
            history.push(v % 7);
            log.append(&(v % 7).to_be_bytes());
            log.sync().unwrap();
            if log.wants_snapshot() {
                // A user whose state is bounded (the last 7 values).
                let keep = &history[history.len().saturating_sub(7)..];
                log.commit(&snapshot(keep)).unwrap();
            }
            assert!(log.bytes() <= LIMITS.compact_bytes + 22, "{}", log.bytes());
        }
    }

    #[test]
    fn damage_in_the_middle_ends_the_log_there() {
        let (mut log, _, _, _) = read(MemStorage::new());
        for v in 0..5u32 {
            log.append(&v.to_be_bytes());
        }
        log.sync().unwrap();
        let mut st = log.into_storage();
        let name = st.list().unwrap()[0].clone();
        let b = st.bytes_mut(&name).unwrap();
        let at = b.len() - 2 * 22 + 20; // in the fourth change's payload
        b[at] ^= 0xff;
        let (_, _, values, w) = read(st);
        assert_eq!(values, vec![0, 1, 2]);
        assert_eq!(w.len(), 1, "{w:?}");
    }
}
