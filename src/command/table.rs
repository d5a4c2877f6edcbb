//! The edge's table of the commands it has seen, on disk: what makes a command run
//! at most once. Each id is in one state: `Waiting` (journaled, not started: the
//! command's bytes kept to run it), `Started` (a run may be under way: after a
//! crash it is `interrupted`, never run again) or `Ended` (done, interrupted or
//! refused: a copy of it gets the same answer again).
//!
//! On disk, in `spool_dir/command/` over the spool's `Storage` (files in
//! production, power cuts in tests): a `durable::Log` named `table` whose header
//! is `forgot_sent` (u64 BE) and whose snapshot records and changes are each one
//! entry's current state (`record`, big-endian). The caller syncs (`sync`)
//! before it acknowledges a command to the broker and before it starts a run.
//! Once the file passes `COMPACT_BYTES` (or a sync failed), the table is written
//! whole as the log's next generation.
//!
//! Before that log, the table was `log.<generation>` with frames
//! `[len u32 LE][crc32c u32 LE][body]` and little-endian bodies: a table found
//! only in that format is read (`legacy`) and written into the log at start,
//! then its files removed, so an upgraded crd runs nothing twice.
//!
//! The sender's relay (`relay.rs`) keeps its outgoing commands in the same kind
//! of table: `Waiting` is a command still republished, `Started` one its node
//! accepted, `Ended` one answered (or unanswered within its ttl).
//!
//! Bounds (`Limits`; the edge's are `EDGE`): at most `max_ids` ids (the ended one
//! sent first is forgotten past it, counted in `evicted`; the newest `sent` of the
//! forgotten ones is kept, `forgot_sent`, in each header too, so the edge can
//! refuse a copy of a forgotten command instead of running it again); at most `max_pending`
//! waiting or started (the caller refuses more); a file read at start at most
//! `MAX_FILE_BYTES`.

use crate::command::envelope::{self, Refusal};
use crate::spool::durable::{self, Log, Part, Snapshot};
use crate::spool::format::crc32c;
use crate::spool::storage::Storage;
use std::collections::VecDeque;
use std::io;

/// How many ids a table keeps, and how many of them may be pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_ids: usize,
    pub max_pending: usize,
}

/// The edge's table: 128 ids (80 bytes each in memory and the module name's
/// allocation, plus a waiting command's bytes: about 12 KiB full), 16 waiting
/// or running. A command older than the ids forgotten is refused (`forgot_sent`),
/// so the bound costs no run twice: its size only decides how long a copy gets
/// its first answer again rather than `expired`, and how far behind another
/// sender's clock may be (a router sees a few commands a day). 256 ids cost 16
/// KiB more anonymous memory (`make bench-commands`).
pub const EDGE: Limits = Limits {
    max_ids: 128,
    max_pending: 16,
};
/// The log is rewritten whole past this many bytes.
pub const COMPACT_BYTES: u64 = 64 * 1024;
/// The most of one log file read at start, bytes.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

const FRAME: usize = 8;
const ID: usize = 16;

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Done {
        code: i32,
        dur_ms: u32,
    },
    Interrupted,
    Refused(Refusal),
    /// (The relay's) not accepted by its node within its ttl.
    Unanswered,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Journaled and acknowledged, not started: the command's JSON.
    Waiting(Box<[u8]>),
    Started,
    Ended(End),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: [u8; ID],
    /// The sender's `sent`, unix ms.
    pub sent: u64,
    /// The target node (the relay's; empty on the edge, which is the node).
    pub node: Box<str>,
    pub module: Box<str>,
    pub state: State,
}

/// The log's name in the table's directory.
const STEM: &str = "table";
const LOG_LIMITS: durable::Limits = durable::Limits {
    compact_bytes: COMPACT_BYTES,
    max_file_bytes: MAX_FILE_BYTES,
};

pub struct Table<S: Storage> {
    log: Log<S>,
    limits: Limits,
    entries: VecDeque<Entry>,
    /// Ended ids forgotten at the `MAX_IDS` bound.
    pub evicted: u64,
    /// The newest `sent` (the sender's unix ms) of the ids forgotten, 0 if none:
    /// a command sent at or before it may be one of them.
    pub forgot_sent: u64,
}

/// The 16 bytes of a 32-hex-digit id (`None` if it is not one).
pub fn id_bytes(hex: &str) -> Option<[u8; ID]> {
    if !envelope::valid_id(hex) {
        return None;
    }
    let mut b = [0u8; ID];
    for (i, o) in b.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(b)
}

/// A file of the table's format before the durable log.
fn legacy_name(generation: u32) -> String {
    format!("log.{generation}")
}

/// A frame of the format before the durable log (the tests write one).
#[cfg(test)]
fn legacy_frame(body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(FRAME + body.len());
    f.extend_from_slice(&(body.len() as u32).to_le_bytes());
    f.extend_from_slice(&crc32c(body).to_le_bytes());
    f.extend_from_slice(body);
    f
}

/// The bodies of the whole legacy frames at the start of `b`.
fn legacy_frames(b: &[u8]) -> Vec<&[u8]> {
    let (mut out, mut at) = (Vec::new(), 0);
    while let (Some(len), Some(crc)) = (uint(b, at, 4, LE), uint(b, at + 4, 4, LE)) {
        let Some(body) = b.get(at + FRAME..at + FRAME + len as usize) else {
            break;
        };
        if u64::from(crc32c(body)) != crc {
            break;
        }
        out.push(body);
        at += FRAME + body.len();
    }
    out
}

/// A legacy header: `H`, the generation, the count of records that follow,
/// `forgot_sent` (absent in logs written before it was kept: 0).
#[cfg(test)]
fn legacy_header(generation: u32, count: u32, forgot_sent: u64) -> Vec<u8> {
    let mut b = vec![b'H'];
    b.extend_from_slice(&generation.to_le_bytes());
    b.extend_from_slice(&count.to_le_bytes());
    b.extend_from_slice(&forgot_sent.to_le_bytes());
    b
}

/// Byte orders of `uint`: the format before the durable log was little-endian.
const LE: bool = true;
const BE: bool = false;

/// The `n`-byte unsigned number at `at` in `b`, little-endian (`LE`) or
/// big-endian (`BE`). One reader for both formats, so the old one costs the
/// router no second parser.
fn uint(b: &[u8], at: usize, n: usize, le: bool) -> Option<u64> {
    let x = b.get(at..at.checked_add(n)?)?;
    let mut v = 0u64;
    for i in 0..n {
        v = v << 8 | u64::from(x[if le { n - 1 - i } else { i }]);
    }
    Some(v)
}

/// A record's body in the format before the durable log (little-endian
/// numbers) made big-endian, or back: the numbers' bytes reversed in place
/// (the tests write old records with it).
#[cfg(test)]
fn swap_order(b: &mut [u8]) {
    let ended = b.first() == Some(&b'E');
    let mut flip = |at: usize, n: usize| {
        if let Some(x) = b.get_mut(at..at + n) {
            x.reverse();
        }
    };
    flip(1 + ID, 8);
    if ended {
        flip(1 + ID + 8 + 1, 4);
        flip(1 + ID + 8 + 5, 4);
    }
}

/// A record's body: the entry's current state, big-endian.
fn record(e: &Entry) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    match &e.state {
        State::Waiting(_) => b.push(b'W'),
        State::Started => b.push(b'S'),
        State::Ended(_) => b.push(b'E'),
    }
    b.extend_from_slice(&e.id);
    b.extend_from_slice(&e.sent.to_be_bytes());
    let names = |b: &mut Vec<u8>| {
        b.push(e.node.len().min(255) as u8);
        b.extend_from_slice(&e.node.as_bytes()[..e.node.len().min(255)]);
        b.extend_from_slice(e.module.as_bytes());
    };
    match &e.state {
        State::Waiting(payload) => b.extend_from_slice(payload),
        State::Started => names(&mut b),
        State::Ended(end) => {
            let (kind, code, dur, why) = match *end {
                End::Done { code, dur_ms } => (0u8, code, dur_ms, 0u8),
                End::Interrupted => (1, 0, 0, 0),
                End::Refused(r) => (2, 0, 0, r.code()),
                End::Unanswered => (3, 0, 0, 0),
            };
            b.push(kind);
            b.extend_from_slice(&code.to_be_bytes());
            b.extend_from_slice(&dur.to_be_bytes());
            b.push(why);
            names(&mut b);
        }
    }
    b
}

/// The node and module at the end of a record: a length byte, the node, the rest.
fn names(b: &[u8]) -> Option<(Box<str>, Box<str>)> {
    let n = usize::from(*b.first()?);
    let node = std::str::from_utf8(b.get(1..1 + n)?).ok()?;
    let module = std::str::from_utf8(b.get(1 + n..)?).ok()?;
    Some((node.into(), module.into()))
}

/// The entry a record's body says, or `None` if it is not one; its numbers
/// in the byte order `le` (`LE`: the format before the durable log).
fn parse_record(b: &[u8], le: bool) -> Option<Entry> {
    let id: [u8; ID] = b.get(1..1 + ID)?.try_into().ok()?;
    let sent = uint(b, 1 + ID, 8, le)?;
    let rest = b.get(1 + ID + 8..)?;
    let ((node, module), state) = match b[0] {
        b'W' => {
            let hex = crate::core::sha256::to_hex(&id);
            let c = envelope::parse(&hex, rest).ok()?;
            ((c.to.into(), c.module.into()), State::Waiting(rest.into()))
        }
        b'S' => (names(rest)?, State::Started),
        b'E' => {
            let code = uint(rest, 1, 4, le)? as u32 as i32;
            let dur_ms = uint(rest, 5, 4, le)? as u32;
            let end = match *rest.first()? {
                0 => End::Done { code, dur_ms },
                1 => End::Interrupted,
                2 => End::Refused(Refusal::from_code(*rest.get(9)?)?),
                3 => End::Unanswered,
                _ => return None,
            };
            (names(rest.get(10..)?)?, State::Ended(end))
        }
        _ => return None,
    };
    Some(Entry {
        id,
        sent,
        node,
        module,
        state,
    })
}

impl<S: Storage> Table<S> {
    /// Reads the table from `st` (an empty one if there is none; one in the
    /// format before the durable log is taken over). `Err` only when the
    /// directory cannot be listed or a new log cannot be made; damage is cut
    /// and reported in the warnings.
    pub fn open(st: S, limits: Limits) -> io::Result<(Table<S>, Vec<String>)> {
        let (mut header, mut records, mut skipped) = (Vec::new(), Vec::new(), 0);
        let (log, mut warnings) = Log::open(st, STEM, LOG_LIMITS, &mut |part, b| match part {
            Part::Header => header = b.to_vec(),
            _ => match parse_record(b, BE) {
                Some(e) => records.push(e),
                None => skipped += 1,
            },
        })?;
        if skipped > 0 {
            warnings.push(format!("command table: {skipped} records skipped"));
        }
        let mut t = Table {
            log,
            limits,
            entries: VecDeque::new(),
            evicted: 0,
            forgot_sent: uint(&header, 0, 8, BE).unwrap_or(0),
        };
        for e in records {
            t.apply(e);
        }
        t.take_over_legacy(header.is_empty(), &mut warnings)?;
        Ok((t, warnings))
    }

    /// A table in the format before the durable log (`log.<generation>`): read
    /// into this one and written whole when this one is new, then removed. A
    /// crash in between reads it again at the next start.
    fn take_over_legacy(&mut self, fresh: bool, warnings: &mut Vec<String>) -> io::Result<()> {
        let generations = durable::generations(self.log.storage(), "log")?;
        if generations.is_empty() {
            return Ok(());
        }
        if fresh {
            let (entries, forgot) = legacy::read(self.log.storage(), &generations)?;
            self.forgot_sent = forgot;
            for e in entries {
                self.apply(e);
            }
            let snap = snapshot(&self.entries, self.forgot_sent);
            self.log.commit(&snap)?;
            warnings.push("command table: taken over from the format before".into());
        }
        for g in generations {
            self.log.storage().remove(&legacy_name(g))?;
        }
        self.log.storage().sync_dir()
    }

    fn apply(&mut self, e: Entry) {
        if let Some(x) = self.entries.iter_mut().find(|x| x.id == e.id) {
            *x = e;
            return;
        }
        // Room first, so the deque never grows past the bound (doubling). The
        // ended id sent first goes, not the one that arrived first: `forgot_sent`
        // then rises as little as it can, so a command that arrives late (sent
        // again after `busy`) is not taken for a forgotten one.
        while self.entries.len() >= self.limits.max_ids {
            match self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, x)| matches!(x.state, State::Ended(_)))
                .min_by_key(|(_, x)| x.sent)
                .map(|(i, _)| i)
            {
                Some(i) => {
                    if let Some(gone) = self.entries.remove(i) {
                        self.forgot_sent = self.forgot_sent.max(gone.sent);
                    }
                    self.evicted += 1;
                }
                None => break,
            }
        }
        self.entries.push_back(e);
    }

    pub fn get(&self, id: &[u8; ID]) -> Option<&Entry> {
        self.entries.iter().find(|e| &e.id == id)
    }

    /// Sets `e` (new, or a new state of a known id) and appends it to the log
    /// (not synced: `sync`).
    pub fn set(&mut self, e: Entry) -> io::Result<()> {
        self.log.append(&record(&e));
        self.apply(e);
        self.log.flush()
    }

    /// Makes every `set` so far durable; writes the table whole once the log
    /// is long (or a sync failed).
    pub fn sync(&mut self) -> io::Result<()> {
        let (entries, forgot) = (&self.entries, self.forgot_sent);
        self.log.sync_with(|| snapshot(entries, forgot))
    }

    /// Whether no more may be pending.
    pub fn full(&self) -> bool {
        self.pending() >= self.limits.max_pending
    }

    /// Every entry, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Waiting or started, now.
    pub fn pending(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| !matches!(e.state, State::Ended(_)))
            .count()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The oldest waiting command.
    pub fn next_waiting(&self) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| matches!(e.state, State::Waiting(_)))
    }

    /// The ids in state `Started` (after a restart: runs that were cut).
    pub fn started(&self) -> Vec<Entry> {
        self.entries
            .iter()
            .filter(|e| e.state == State::Started)
            .cloned()
            .collect()
    }

    /// The newest `sent` of a command accepted (not refused), unix ms; 0 if none.
    pub fn newest_sent(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| !matches!(e.state, State::Ended(End::Refused(_))))
            .map(|e| e.sent)
            .max()
            .unwrap_or(0)
    }

    #[cfg(test)]
    pub(crate) fn storage(&mut self) -> &mut S {
        self.log.storage()
    }

    #[cfg(test)]
    pub(crate) fn into_storage(self) -> S {
        self.log.into_storage()
    }
}

/// The whole table as the log's snapshot.
fn snapshot(entries: &VecDeque<Entry>, forgot_sent: u64) -> Snapshot {
    let mut s = Snapshot::new(&forgot_sent.to_be_bytes());
    for e in entries {
        s.record(&record(e));
    }
    s
}

/// The format before the durable log, read once at an upgrade.
mod legacy {
    use super::*;

    /// The newest whole legacy file's entries and `forgot_sent`.
    pub fn read<S: Storage>(st: &mut S, generations: &[u32]) -> io::Result<(Vec<Entry>, u64)> {
        for &generation in generations {
            let name = legacy_name(generation);
            let size = st.len(&name)?.unwrap_or(0).min(MAX_FILE_BYTES);
            let mut buf = vec![0u8; size as usize];
            let n = st.read_at(&name, 0, &mut buf)?;
            buf.truncate(n);
            let bodies = legacy_frames(&buf);
            // Its header: `H`, generation, count (u32 LE), forgot_sent (u64 LE,
            // absent in the oldest).
            let Some(h) = bodies
                .first()
                .filter(|h| matches!(h.len(), 9 | 17) && h[0] == b'H')
            else {
                continue;
            };
            let whole = uint(h, 1, 4, LE) == Some(u64::from(generation))
                && uint(h, 5, 4, LE).is_some_and(|c| bodies.len() as u64 > c);
            if whole {
                let entries = bodies[1..]
                    .iter()
                    .filter_map(|b| parse_record(b, LE))
                    .collect();
                return Ok((entries, uint(h, 9, 8, LE).unwrap_or(0)));
            }
            // Incomplete (a compaction cut short): the one before it.
        }
        Ok((Vec::new(), 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::storage::MemStorage;

    fn id(n: u32) -> [u8; ID] {
        let mut b = [0u8; ID];
        b[..4].copy_from_slice(&n.to_be_bytes());
        b
    }

    fn waiting(n: u32) -> Entry {
        let hex = crate::core::sha256::to_hex(&id(n));
        let payload =
            format!(r#"{{"id":"{hex}","module":"Ping","args":["x"],"sent":{n},"ttl_ms":1000}}"#);
        Entry {
            id: id(n),
            sent: u64::from(n),
            node: "".into(),
            module: "Ping".into(),
            state: State::Waiting(payload.into_bytes().into()),
        }
    }

    fn ended(n: u32, end: End) -> Entry {
        Entry {
            state: State::Ended(end),
            ..waiting(n)
        }
    }

    fn reopen(t: Table<MemStorage>) -> Table<MemStorage> {
        Table::open(t.log.into_storage(), EDGE).unwrap().0
    }

    #[test]
    fn every_state_survives_a_restart() {
        let (mut t, w) = Table::open(MemStorage::new(), EDGE).unwrap();
        assert!(w.is_empty() && t.is_empty());
        t.set(waiting(1)).unwrap();
        t.set(waiting(2)).unwrap();
        t.set(Entry {
            state: State::Started,
            ..waiting(2)
        })
        .unwrap();
        t.set(ended(
            3,
            End::Done {
                code: -3,
                dur_ms: 9,
            },
        ))
        .unwrap();
        t.set(ended(4, End::Refused(Refusal::Expired))).unwrap();
        t.set(ended(5, End::Interrupted)).unwrap();
        t.set(Entry {
            node: "r9".into(),
            ..ended(6, End::Unanswered)
        })
        .unwrap();
        t.sync().unwrap();
        let t = reopen(t);
        assert_eq!(t.len(), 6);
        assert_eq!(
            (&*t.get(&id(6)).unwrap().node, &t.get(&id(6)).unwrap().state),
            ("r9", &State::Ended(End::Unanswered))
        );
        assert_eq!(t.get(&id(1)), Some(&waiting(1)));
        assert_eq!(t.get(&id(2)).unwrap().state, State::Started);
        assert_eq!(t.started().len(), 1);
        assert_eq!(
            t.get(&id(3)).unwrap().state,
            State::Ended(End::Done {
                code: -3,
                dur_ms: 9
            })
        );
        assert_eq!(
            t.get(&id(4)),
            Some(&ended(4, End::Refused(Refusal::Expired)))
        );
        assert_eq!(&*t.get(&id(5)).unwrap().module, "Ping");
        assert_eq!(t.pending(), 2);
        assert_eq!(t.next_waiting().unwrap().id, id(1));
        assert_eq!(t.newest_sent(), 6, "refused commands do not count");
    }

    #[test]
    fn a_power_cut_keeps_what_was_synced_and_cuts_a_torn_tail() {
        for keep in [None, Some(0), Some(3), Some(9), Some(30)] {
            let (mut t, _) = Table::open(MemStorage::new(), EDGE).unwrap();
            t.set(waiting(1)).unwrap();
            t.sync().unwrap();
            t.set(Entry {
                state: State::Started,
                ..waiting(1)
            })
            .unwrap();
            let mut st = t.log.into_storage();
            st.power_cut(|_, len| keep.map(|k| k.min(len)), true);
            let (t, w) = Table::open(st, EDGE).unwrap();
            assert_eq!(t.len(), 1, "{keep:?}");
            let state = &t.get(&id(1)).unwrap().state;
            if matches!(keep, Some(k) if k < 9) {
                assert!(matches!(state, State::Waiting(_)), "{keep:?}");
                assert_eq!(w.len(), usize::from(keep != Some(0)), "{w:?}");
            }
            // Appends go on after the cut.
            let mut t = t;
            t.set(ended(1, End::Interrupted)).unwrap();
            t.sync().unwrap();
            assert_eq!(
                reopen(t).get(&id(1)).unwrap().state,
                State::Ended(End::Interrupted)
            );
        }
    }

    #[test]
    fn past_the_bound_the_oldest_ended_id_is_forgotten_never_a_pending_one() {
        let (mut t, _) = Table::open(MemStorage::new(), EDGE).unwrap();
        t.set(waiting(0)).unwrap();
        for n in 1..=(EDGE.max_ids as u32 + 10) {
            t.set(ended(n, End::Done { code: 0, dur_ms: 1 })).unwrap();
            t.sync().unwrap();
        }
        assert_eq!(t.len(), EDGE.max_ids);
        assert_eq!(t.evicted, 11);
        assert!(t.get(&id(0)).is_some(), "the waiting one stays");
        assert!(t.get(&id(11)).is_none() && t.get(&id(12)).is_some());
        assert_eq!(t.forgot_sent, 11, "the newest sent forgotten");
        let t = reopen(t);
        assert_eq!(t.len(), EDGE.max_ids);
        assert!(t.get(&id(0)).is_some() && t.get(&id(12)).is_some());
        assert_eq!(t.forgot_sent, 11, "replayed from the log");
    }

    /// A command that ended late but was sent early (it was `busy` first) is
    /// the one forgotten next, so `forgot_sent` does not rise past commands
    /// that are still to come.
    #[test]
    fn past_the_bound_the_ended_id_sent_first_is_forgotten() {
        let (mut t, _) = Table::open(MemStorage::new(), EDGE).unwrap();
        let done = End::Done { code: 0, dur_ms: 1 };
        for n in 1..=EDGE.max_ids as u32 {
            t.set(ended(n + 100, done)).unwrap();
        }
        // Sent at 5, it arrives last (101 goes to make room) and ends.
        t.set(waiting(5)).unwrap();
        t.set(ended(5, done)).unwrap();
        assert_eq!(t.forgot_sent, 101);
        t.set(ended(300, done)).unwrap();
        t.sync().unwrap();
        assert!(t.get(&id(5)).is_none(), "the one sent first goes");
        assert!(t.get(&id(102)).is_some());
        assert_eq!(t.forgot_sent, 101);
        let t = reopen(t);
        assert!(t.get(&id(5)).is_none() && t.get(&id(102)).is_some());
        assert_eq!(t.forgot_sent, 101, "replayed from the log");
    }

    #[test]
    fn what_was_forgotten_survives_compaction_and_old_headers_read_as_none() {
        let (mut t, _) = Table::open(MemStorage::new(), EDGE).unwrap();
        // Past the bound, then on until the log is rewritten more than once.
        for n in 1..=3000u32 {
            t.set(ended(n, End::Done { code: 0, dur_ms: 1 })).unwrap();
            t.sync().unwrap();
        }
        let forgot = 3000 - EDGE.max_ids as u64;
        assert_eq!(t.forgot_sent, forgot);
        assert!(t.log.generation() > 2, "rewritten: {}", t.log.generation());
        let t = reopen(t);
        assert_eq!((t.forgot_sent, t.len()), (forgot, EDGE.max_ids));
        // A legacy log written before the header kept it.
        let mut st = MemStorage::new();
        let mut old = legacy_frame(&legacy_header(1, 1, 0)[..9]);
        let mut body = record(&ended(5, End::Interrupted));
        swap_order(&mut body);
        old.extend_from_slice(&legacy_frame(&body));
        st.put(&legacy_name(1), &old);
        let (t, w) = Table::open(st, EDGE).unwrap();
        assert_eq!(w.len(), 1, "taken over: {w:?}");
        assert_eq!((t.len(), t.forgot_sent), (1, 0));
    }

    #[test]
    fn compaction_bounds_the_file_and_a_cut_compaction_loses_nothing() {
        let (mut t, _) = Table::open(MemStorage::new(), EDGE).unwrap();
        for n in 0..3000u32 {
            t.set(ended(
                n % 50,
                End::Done {
                    code: n as i32,
                    dur_ms: 1,
                },
            ))
            .unwrap();
            t.sync().unwrap();
        }
        let names = t.storage().list().unwrap();
        assert_eq!(names.iter().filter(|n| n.starts_with("table.")).count(), 1);
        let name = format!("table.{}", t.log.generation());
        assert!(t.storage().len(&name).unwrap().unwrap() <= COMPACT_BYTES + 100);
        let t = reopen(t);
        assert_eq!(t.len(), 50);
        assert_eq!(
            t.get(&id(49)).unwrap().state,
            State::Ended(End::Done {
                code: 2999,
                dur_ms: 1
            })
        );
        // A compaction whose new file was never synced whole: the old log wins.
        let generation = t.log.generation();
        let mut st = t.log.into_storage();
        let mut head = (generation + 1).to_be_bytes().to_vec();
        head.extend_from_slice(&50u32.to_be_bytes());
        head.extend_from_slice(&0u64.to_be_bytes());
        let mut half = Vec::new();
        crate::spool::format::encode_record(1, &head, &mut half);
        crate::spool::format::encode_record(2, &record(&waiting(7)), &mut half);
        let next = format!("table.{}", generation + 1);
        st.put(&next, &half);
        let (mut t, w) = Table::open(st, EDGE).unwrap();
        assert_eq!((t.log.generation(), t.len()), (generation, 50));
        assert!(w[0].contains("incomplete"), "{w:?}");
        assert!(!t.storage().list().unwrap().contains(&next));
    }

    #[test]
    fn a_table_written_by_the_crd_before_the_durable_log_is_taken_over() {
        let mut st = MemStorage::new();
        st.put(
            "log.1",
            include_bytes!("../../tests/fixtures/v1/command-log.1"),
        );
        let (mut t, w) = Table::open(st, EDGE).unwrap();
        assert_eq!(t.len(), 4, "{w:?}");
        let one = |n: u8| [n; ID];
        assert!(matches!(t.get(&one(1)).unwrap().state, State::Waiting(_)));
        assert_eq!(t.get(&one(2)).unwrap().state, State::Started);
        assert_eq!(&*t.get(&one(2)).unwrap().module, "Reboot");
        let done = t.get(&one(3)).unwrap();
        assert_eq!(
            done.state,
            State::Ended(End::Done {
                code: 3,
                dur_ms: 42
            })
        );
        assert_eq!((&*done.node, done.sent), ("gw1", 1_700_000_000_003));
        assert!(matches!(
            t.get(&one(4)).unwrap().state,
            State::Ended(End::Refused(_))
        ));
        assert_eq!(
            t.storage().list().unwrap(),
            vec!["table.2".to_string()],
            "the old file removed once the log has it"
        );
        // A power cut right after: the log alone has all of it.
        let mut st = t.log.into_storage();
        st.power_cut(|_, _| None, false);
        let (t, w) = Table::open(st, EDGE).unwrap();
        assert_eq!(t.len(), 4, "{w:?}");
        assert_eq!(t.get(&one(2)).unwrap().state, State::Started);
    }

    #[test]
    fn a_power_cut_during_the_take_over_reads_the_old_table_again() {
        // What a crash leaves between the new log's first (empty) file and its
        // snapshot: both; the old table is read again.
        let (log, _) = Log::open(MemStorage::new(), STEM, LOG_LIMITS, &mut |_, _| {}).unwrap();
        let mut st = log.into_storage();
        st.put(
            "log.1",
            include_bytes!("../../tests/fixtures/v1/command-log.1"),
        );
        let (t, _) = Table::open(st.clone(), EDGE).unwrap();
        assert_eq!(t.len(), 4);
        // A failed snapshot write fails the open (not half taken over).
        st.fail(crate::spool::storage::Op::Sync, 0, io::ErrorKind::Other);
        assert!(Table::open(st, EDGE).is_err());
    }

    #[test]
    fn an_entry_is_small() {
        assert!(
            std::mem::size_of::<Entry>() <= 80,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }

    #[test]
    fn ids_are_hex_of_sixteen_bytes() {
        let b = id_bytes("0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(b[0], 0x01);
        assert_eq!(b[15], 0xef);
        assert_eq!(
            crate::core::sha256::to_hex(&b),
            "0123456789abcdef0123456789abcdef"
        );
        assert!(id_bytes("0123").is_none());
        assert!(id_bytes("0123456789ABCDEF0123456789abcdef").is_none());
    }
}
