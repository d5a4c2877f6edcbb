//! What the collector remembers across a restart besides its journal: the table
//! of crd events done (`dedup::Seen`) and what the rule registers were fed
//! (`rulestate`), in one `spool::durable::Log` over `Storage` (the directory
//! `spool_dir/collect/state/`; memory in tests).
//!
//! One log, so one order: a message's feeds are appended when it is pumped,
//! its event marked done when its runs end, so a mark is always behind the
//! feeds of its message in the file, and a power cut, which keeps a prefix of
//! the file's frames, never keeps a mark whose feeds it lost (replayed, the
//! message would be skipped as done with no register fed). Every loop turn the
//! changes are written (`flush`: a crash of crd loses none of them), and made
//! durable (`sync`) before the journal's checkpoint moves its watermark. A
//! message replayed past the watermark then feeds nothing twice (the log holds
//! its journal seq) and runs nothing twice (the log holds its event). The state
//! is written whole (a snapshot) when the log grows past its bound, in the same
//! `sync`.
//!
//! Records: snapshot `S` + a stream (`dedup`), `R`/`C` a rule's registers
//! (`rulestate::rule_records`), `G` + the groups' members
//! (`group::Members::encode`); changes `M` + `dedup::change`, `F` +
//! `rulestate::fed`, `G` + the members when they change. The header is the highest journal seq the registers in the
//! snapshot include (u64 BE).
//!
//! Upgrade: the files of the format before the log (`collect/seen`, `seen.log`,
//! `registers`, `registers.log`) are read when the log is empty, written into
//! it at the first `configure` (which knows the rules' settings), and removed.

use crate::collect::error::{Error, Reason};
use crate::collect::{dedup, rulestate};
use crate::rules::register::{Registers, Spec};
use crate::spool::durable::{Limits, Log, Part, Snapshot};
use crate::spool::storage::Storage;
use std::io;

/// The state is written whole past this many bytes of log (or twice its last
/// snapshot). 10,000 streams of one range each take 350 KB.
pub const LIMITS: Limits = Limits {
    compact_bytes: 4 << 20,
    max_file_bytes: 1 << 30,
};

/// The files of the format before the log, in `collect/`.
const LEGACY_SEEN: &str = "seen";
const LEGACY_SEEN_LOG: &str = "seen.log";
const LEGACY: [&str; 6] = [
    LEGACY_SEEN,
    LEGACY_SEEN_LOG,
    rulestate::SNAPSHOT_FILE,
    rulestate::LOG_FILE,
    "seen.tmp",
    "registers.tmp",
];

/// Reads the whole file `name` of `st`, `None` if there is none.
fn read_all<S: Storage>(st: &mut S, name: &str) -> io::Result<Option<Vec<u8>>> {
    let Some(len) = st.len(name)? else {
        return Ok(None);
    };
    let mut b = vec![0u8; len as usize];
    let n = st.read_at(name, 0, &mut b)?;
    b.truncate(n);
    Ok(Some(b))
}

/// The registers as read at start, until the first `configure` decodes them.
struct Unread {
    through: u64,
    snapshot: Vec<Vec<u8>>,
    changes: Vec<Vec<u8>>,
}

pub struct Persist<S: Storage> {
    pub seen: dedup::Seen,
    /// The groups' members (`group::Members::encode`), as last changed.
    members: Vec<u8>,
    log: Log<S>,
    /// `collect/` itself, while files of the format before the log are there
    /// and the log was empty: taken over at the first `restore`.
    legacy: Option<S>,
    unread: Option<Unread>,
    /// A change being encoded, reused.
    scratch: Vec<u8>,
}

/// The registers read at start: the rules, the messages fed since their
/// snapshot, the highest journal seq they include.
pub struct Restored {
    pub rules: Vec<(String, Registers)>,
    pub fed: Vec<rulestate::Entry>,
    pub through: u64,
}

/// What the log's frames say, as read at start.
struct Reader {
    seen: dedup::Seen,
    members: Vec<u8>,
    unread: Unread,
    fresh: bool,
    bad: u64,
}

impl Reader {
    fn frame(&mut self, part: Part, b: &[u8]) {
        let (tag, rest) = b.split_first().map_or((0, &[][..]), |(t, r)| (*t, r));
        let ok = match (part, tag) {
            (Part::Header, _) => {
                self.fresh = b.is_empty();
                self.unread.through = b.try_into().map_or(0, u64::from_be_bytes);
                true
            }
            (Part::Snapshot, b'S') => self.seen.load_stream(rest).is_ok(),
            (Part::Snapshot, b'R' | b'C') => {
                self.unread.snapshot.push(b.to_vec());
                true
            }
            (Part::Change, b'M') => self.seen.apply_change(rest),
            (Part::Snapshot | Part::Change, b'G') => {
                self.members = rest.to_vec();
                true
            }
            (Part::Change, b'F') => {
                self.unread.changes.push(rest.to_vec());
                true
            }
            _ => false,
        };
        self.bad += u64::from(!ok);
    }
}

impl<S: Storage> Persist<S> {
    /// Opens the log in `st`; when it is empty and `legacy` (`collect/`) holds
    /// files of the format before it, the table of events done is read from
    /// them now, the registers at `restore`. Warnings say what was cut or
    /// taken over.
    pub fn open(st: S, mut legacy: S) -> io::Result<(Persist<S>, Vec<String>)> {
        let mut r = Reader {
            seen: dedup::Seen::default(),
            members: Vec::new(),
            unread: Unread {
                through: 0,
                snapshot: Vec::new(),
                changes: Vec::new(),
            },
            fresh: true,
            bad: 0,
        };
        let (log, mut warnings) = Log::open(st, "state", LIMITS, &mut |p, b| r.frame(p, b))?;
        if r.bad > 0 {
            warnings.push(format!("state: {} records not understood, skipped", r.bad));
        }
        if r.fresh && !warnings.is_empty() {
            warnings.push(
                "state: nothing whole to read; the registers start empty, and events done may run again"
                    .into(),
            );
        }
        let found = legacy_files(&mut legacy)?;
        let legacy = if found.is_empty() {
            None
        } else if r.fresh {
            r.seen = take_over_seen(&mut legacy, &mut warnings)?;
            Some(legacy)
        } else {
            // The log has it all: what a crash left of the old files goes.
            remove_legacy(&mut legacy)?;
            None
        };
        let p = Persist {
            seen: r.seen,
            members: r.members,
            log,
            legacy,
            unread: Some(r.unread),
            scratch: Vec::new(),
        };
        Ok((p, warnings))
    }

    /// The registers as read at start, once (`None` after): from the log, or
    /// from the files of the format before it, and then the whole state is
    /// written into the log and those files removed. `Err` says why the
    /// registers start empty (a damaged snapshot: the messages fed after it
    /// make no sense without it).
    pub fn restore(
        &mut self,
        spec_of: &dyn Fn(&str) -> Option<Spec>,
    ) -> Option<Result<Restored, Error>> {
        let u = self.unread.take()?;
        let Some(mut st) = self.legacy.take() else {
            return Some(rulestate::read_rules(&u.snapshot, spec_of).map(|rules| {
                Restored {
                    rules,
                    fed: u
                        .changes
                        .iter()
                        .filter_map(|c| rulestate::parse_fed(c))
                        .collect(),
                    through: u.through,
                }
            }));
        };
        let restored = take_over_registers(&mut st, spec_of);
        let empty = Restored {
            rules: Vec::new(),
            fed: Vec::new(),
            through: 0,
        };
        let r = restored.as_ref().unwrap_or(&empty);
        let mut rules = r.rules.iter().map(|(n, g)| (n.as_str(), g));
        let mut snap = state_snapshot(&self.seen, &self.members, &mut rules, r.through);
        // The messages fed after the old snapshot: changes after the new one.
        for e in &r.fed {
            snap_fed(&mut snap, &mut self.scratch, e);
        }
        match self.log.commit(&snap) {
            Ok(()) => {
                let _ = remove_legacy(&mut st);
            }
            Err(e) => log::warn!("collector: taking over the old state files: {e}"),
        }
        Some(restored)
    }

    /// `(stream, seq)` done: in the table, and appended to the log.
    pub fn mark(&mut self, stream: u64, seq: u64) {
        self.seen.mark(stream, seq);
        self.scratch.clear();
        self.scratch.push(b'M');
        self.scratch.extend_from_slice(&dedup::change(stream, seq));
        self.log.append(&self.scratch);
    }

    /// The groups' members as last kept (empty: none).
    pub fn members(&self) -> &[u8] {
        &self.members
    }

    /// The groups' members changed: appended to the log.
    pub fn set_members(&mut self, b: Vec<u8>) {
        self.scratch.clear();
        self.scratch.push(b'G');
        self.scratch.extend_from_slice(&b);
        self.log.append(&self.scratch);
        self.members = b;
    }

    /// A message fed a rule: appended to the log.
    pub fn fed(&mut self, f: &rulestate::Fed) {
        self.scratch.clear();
        self.scratch.push(b'F');
        rulestate::fed(&mut self.scratch, f);
        self.log.append(&self.scratch);
    }

    /// Writes this loop turn's changes (not synced).
    pub fn flush(&mut self) -> io::Result<()> {
        self.log.flush()
    }

    /// Makes every change durable (or writes the state whole where the log
    /// wants it). `rules` and `through` are the registers' state for a
    /// snapshot.
    pub fn sync<'a>(
        &mut self,
        rules: &mut dyn Iterator<Item = (&'a str, &'a Registers)>,
        through: u64,
    ) -> io::Result<()> {
        let (seen, members) = (&self.seen, &self.members);
        self.log
            .sync_with(|| state_snapshot(seen, members, rules, through))
    }

    /// The state written whole now (after a reload dropped rules: the log must
    /// not feed them again at the next start).
    pub fn rewrite<'a>(
        &mut self,
        rules: &mut dyn Iterator<Item = (&'a str, &'a Registers)>,
        through: u64,
    ) -> io::Result<()> {
        self.log
            .commit(&state_snapshot(&self.seen, &self.members, rules, through))
    }

    #[cfg(test)]
    pub fn into_storage(self) -> S {
        self.log.into_storage()
    }
}

/// A fed change added to a snapshot (at an upgrade).
fn snap_fed(snap: &mut Snapshot, scratch: &mut Vec<u8>, e: &rulestate::Entry) {
    scratch.clear();
    scratch.push(b'F');
    rulestate::fed(scratch, &fed_of(e));
    snap.change(scratch);
}

/// A message fed, borrowed from what the log read.
fn fed_of(e: &rulestate::Entry) -> rulestate::Fed<'_> {
    rulestate::Fed {
        module: &e.module,
        key: &e.key,
        num: e.num,
        text: e.text.as_deref(),
        t_ms: e.t_ms,
        seq: e.seq,
    }
}

/// The whole state as the log's snapshot.
fn state_snapshot<'a>(
    seen: &dedup::Seen,
    members: &[u8],
    rules: &mut dyn Iterator<Item = (&'a str, &'a Registers)>,
    through: u64,
) -> Snapshot {
    let mut s = Snapshot::new(&through.to_be_bytes());
    let mut rec = Vec::with_capacity(64);
    if !members.is_empty() {
        rec.push(b'G');
        rec.extend_from_slice(members);
        s.record(&rec);
    }
    seen.stream_records(&mut |b| {
        rec.clear();
        rec.push(b'S');
        rec.extend_from_slice(b);
        s.record(&rec);
    });
    // Saving to memory cannot fail.
    let _ = rulestate::rule_records(rules, &mut |b| s.record(b));
    s
}

/// Which files of the format before the log are in `collect/`.
fn legacy_files<S: Storage>(st: &mut S) -> io::Result<Vec<String>> {
    Ok(st
        .list()?
        .into_iter()
        .filter(|n| LEGACY.contains(&n.as_str()))
        .collect())
}

fn remove_legacy<S: Storage>(st: &mut S) -> io::Result<()> {
    for name in legacy_files(st)? {
        st.remove(&name)?;
    }
    st.sync_dir()
}

/// The table of events done from `seen` and `seen.log`.
fn take_over_seen<S: Storage>(st: &mut S, warnings: &mut Vec<String>) -> io::Result<dedup::Seen> {
    let mut seen = match read_all(st, LEGACY_SEEN)? {
        Some(b) => dedup::Seen::decode(&b).unwrap_or_else(|e| {
            warnings.push(format!(
                "{LEGACY_SEEN}: {e}; starting with an empty table (events may run again)"
            ));
            dedup::Seen::default()
        }),
        None => dedup::Seen::default(),
    };
    if let Some(b) = read_all(st, LEGACY_SEEN_LOG)? {
        let good = seen.replay(&b) * dedup::LOG_ENTRY_BYTES;
        if good < b.len() {
            warnings.push(format!(
                "{LEGACY_SEEN_LOG}: {} bytes of a torn tail not used",
                b.len() - good
            ));
        }
    }
    warnings.push(format!(
        "seen: {} streams taken over from {LEGACY_SEEN}",
        seen.streams()
    ));
    Ok(seen)
}

/// The registers from `registers` and `registers.log`.
fn take_over_registers<S: Storage>(
    st: &mut S,
    spec_of: &dyn Fn(&str) -> Option<Spec>,
) -> Result<Restored, Error> {
    let read = |st: &mut S, name| read_all(st, name).map_err(|e| Reason::File(name, e));
    let (rules, through) = match read(st, rulestate::SNAPSHOT_FILE)? {
        Some(b) => {
            let (through, rules) = rulestate::read_snapshot(&mut &b[..], spec_of)
                .map_err(|e| Reason::InFile(rulestate::SNAPSHOT_FILE, e))?;
            (rules, through)
        }
        None => (Vec::new(), 0),
    };
    let log = read(st, rulestate::LOG_FILE)?.unwrap_or_default();
    let (fed, _) = rulestate::read_log(&log);
    let fed = fed.into_iter().filter(|e| e.seq > through).collect();
    Ok(Restored {
        rules,
        fed,
        through,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::RegisterKind;
    use crate::rules::register::Condition;
    use crate::spool::storage::MemStorage;

    fn spec() -> Spec {
        Spec {
            kind: RegisterKind::Count,
            width_ms: 60_000,
            keys: 100,
            condition: Condition::Above(100.0),
        }
    }

    fn spec_of(n: &str) -> Option<Spec> {
        (n == "Cnt").then(spec)
    }

    /// The count of `key` the restored registers say, after feeding what was
    /// fed past the snapshot (as the collector does).
    fn count(r: Restored, key: &str, t_ms: u64) -> f64 {
        let mut regs = r
            .rules
            .into_iter()
            .find(|(n, _)| n == "Cnt")
            .map_or_else(|| Registers::new(spec()), |(_, g)| g);
        for e in r.fed.iter().filter(|e| e.seq > r.through) {
            regs.feed(&e.key, e.num, e.text.as_deref(), e.t_ms);
        }
        regs.get(key, t_ms).flatten().unwrap_or(0.0)
    }

    /// The highest journal seq restored registers include.
    fn through(r: &Restored) -> u64 {
        r.fed.iter().map(|e| e.seq).fold(r.through, u64::max)
    }

    fn legacy_dir() -> MemStorage {
        let mut st = MemStorage::new();
        st.put("seen", include_bytes!("../../tests/fixtures/v1/seen"));
        st.put(
            "seen.log",
            include_bytes!("../../tests/fixtures/v1/seen.log"),
        );
        st.put(
            "registers",
            include_bytes!("../../tests/fixtures/v1/registers"),
        );
        st.put(
            "registers.log",
            include_bytes!("../../tests/fixtures/v1/registers.log"),
        );
        st
    }

    fn assert_fixture_state(p: &mut Persist<MemStorage>, r: Restored) {
        for (stream, seq) in [(7, 1), (7, 50), (7, 55), (7, 60), (9, 3), (11, 1)] {
            assert!(p.seen.done(stream, seq), "{stream}/{seq} done before");
        }
        assert!(!p.seen.done(7, 56) && !p.seen.done(9, 4));
        assert_eq!(through(&r), 35);
        assert_eq!(count(r, "site/n0/load", 1_700_000_000_200), 35.0);
    }

    #[test]
    fn the_files_of_the_crd_before_the_log_are_taken_over_and_removed() {
        let (mut p, w) = Persist::open(MemStorage::new(), legacy_dir()).unwrap();
        assert!(w.iter().any(|w| w.contains("taken over")), "{w:?}");
        let r = p.restore(&spec_of).unwrap().unwrap();
        assert_fixture_state(&mut p, r);
        assert!(p.restore(&spec_of).is_none(), "once");
        // The old files are gone and the log alone says the same, also after
        // a power cut right after the take-over.
        let mut st = p.into_storage();
        st.power_cut(|_, _| None, false);
        let (mut p, w) = Persist::open(st, MemStorage::new()).unwrap();
        assert!(w.is_empty(), "{w:?}");
        let r = p.restore(&spec_of).unwrap().unwrap();
        assert_fixture_state(&mut p, r);
    }

    /// xorshift, seeded: the tests' only randomness.
    fn next(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    #[test]
    fn the_groups_members_are_kept_as_a_change_and_in_a_snapshot() {
        let (mut p, _) = Persist::open(MemStorage::new(), MemStorage::new()).unwrap();
        let _ = p.restore(&spec_of);
        p.set_members(b"one".to_vec());
        p.sync(&mut std::iter::empty(), 0).unwrap();
        let (mut p, _) = Persist::open(p.into_storage(), MemStorage::new()).unwrap();
        assert_eq!(p.members(), b"one", "from the change");
        let _ = p.restore(&spec_of);
        p.rewrite(&mut std::iter::empty(), 0).unwrap();
        let (mut p, _) = Persist::open(p.into_storage(), MemStorage::new()).unwrap();
        assert_eq!(p.members(), b"one", "from the snapshot");
        let _ = p.restore(&spec_of);
        p.set_members(b"two".to_vec());
        p.sync(&mut std::iter::empty(), 0).unwrap();
        let (p, _) = Persist::open(p.into_storage(), MemStorage::new()).unwrap();
        assert_eq!(p.members(), b"two", "the last change wins");
    }

    #[test]
    fn a_power_cut_anywhere_loses_nothing_synced_and_never_a_feed_behind_its_mark() {
        for seed in 1..200u64 {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let (mut p, _) = Persist::open(MemStorage::new(), MemStorage::new()).unwrap();
            let _ = p.restore(&spec_of);
            let mut regs = Registers::new(spec());
            // Each message: fed (journal seq n), then its event (stream 1, seq
            // n) marked done, as the collector does.
            let (mut n, mut synced) = (0u64, 0u64);
            // The groups' members, set now and then (as the message count).
            let (mut members, mut members_synced) = (0u64, 0u64);
            for _ in 0..(next(&mut x) % 400) {
                match next(&mut x) % 10 {
                    0 => {
                        let mut rules = std::iter::once(("Cnt", &regs));
                        if p.sync(&mut rules, n).is_ok() {
                            synced = n;
                            members_synced = members;
                        }
                    }
                    2 => {
                        members = n;
                        p.set_members(n.to_be_bytes().to_vec());
                    }
                    1 => {
                        let _ = p.flush();
                    }
                    _ => {
                        n += 1;
                        let t_ms = 1_700_000_000_000 + n;
                        regs.feed("k", Some(1.0), None, t_ms);
                        p.fed(&rulestate::Fed {
                            module: "Cnt",
                            key: "k",
                            num: Some(1.0),
                            text: None,
                            t_ms,
                            seq: n,
                        });
                        p.mark(1, n);
                    }
                }
            }
            let mut st = p.into_storage();
            let keep_new = next(&mut x).is_multiple_of(2);
            st.power_cut(
                |_, len| match next(&mut x) % 3 {
                    0 => None,
                    1 => Some(len),
                    _ => Some((next(&mut x) as usize) % (len + 1)),
                },
                keep_new,
            );
            let (mut p, _) = Persist::open(st, MemStorage::new()).unwrap();
            let kept = <[u8; 8]>::try_from(p.members()).map_or(0, u64::from_be_bytes);
            assert!(
                kept >= members_synced && kept <= members,
                "seed {seed}: members {kept}, {members_synced} synced, {members} set"
            );
            let r = p.restore(&spec_of).unwrap().unwrap();
            let through = through(&r);
            let fed = count(r, "k", 1_700_000_000_000 + n) as u64;
            assert_eq!(fed, through, "seed {seed}: each message fed once");
            assert!(
                fed >= synced && fed <= n,
                "seed {seed}: {fed} of {n}, {synced} synced"
            );
            for s in 1..=n {
                let done = p.seen.done(1, s);
                assert!(!done || s <= fed, "seed {seed}: {s} done but its feed lost");
                assert!(done || s > synced, "seed {seed}: {s} synced but not done");
            }
        }
    }
}
