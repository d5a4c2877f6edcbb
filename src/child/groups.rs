//! The record of the process groups crd's runs are in, so that a crd killed
//! without a chance to stop its children (SIGKILL, the OOM killer, a fault) has
//! them killed by the next crd. A child dies with crd by itself (its
//! parent-death signal, set in `sys.rs`), but what it started (a check's
//! `sleep 300 &`) does not: it is in the child's process group, which the next
//! crd kills with `killpg(SIGKILL)` at start.
//!
//! The file (beside the control socket: `<control_socket>.groups`) is a header,
//! then one 4-byte slot per run slot (`Runs`' id), a free slot 0, written in
//! place: the slots a loop turn changed (its starts and ends) go out in one
//! `pwrite` before the loop sleeps (`Runs::flush_record`), not one per start
//! and one per end, two of the 12 system calls a check run cost. A crd killed
//! in between loses at most that turn's starts from the record: the same
//! window as a `pwrite` after each `clone`, made no wider than the turn. No fsync
//! and no rename: the record need only outlive crd, not the machine (a reboot
//! ends every process too), and it lives in the runtime directory (`/var/run`,
//! a tmpfs on OpenWrt and under systemd), so it costs the flash nothing. The
//! header holds the boot id (a record from another boot is ignored), the
//! session and the start time of the crd that wrote it. Integers big-endian.
//!
//! ```text
//! 0      4              40        44             52
//! | CRDG | boot id (36) | session | start (u64)  | pgid of slot 0 | slot 1 | ...
//! ```
//!
//! Pid reuse: a group is killed only if it still has a process, and every process
//! in it is in the session of the crd that wrote the record and started after that
//! crd did (`/proc/PID/stat`); a group number cannot be reused while any process of
//! the group is alive, and a new group is made only by a new process, which would
//! show a later start in another session or fail the test.

use crate::child::sys;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"CRDG";
/// Bytes of the boot id (`/proc/sys/kernel/random/boot_id`, a UUID as text).
const BOOT_ID_BYTES: usize = 36;
/// Bytes of the header: magic, boot id, session, start.
const HEADER_BYTES: usize = 4 + BOOT_ID_BYTES + 4 + 8;
/// Bytes of one slot: a pgid, 0 when free.
const SLOT_BYTES: usize = 4;
/// Largest record read back at start, bytes (a crd runs at most a few hundred
/// children at once: 256 `max_parallel`, the collector's and the commands' runs).
pub const MAX_RECORD_BYTES: usize = 64 << 10;
/// Largest `/proc/PID/stat` read, bytes (its command name is at most 64 bytes).
const MAX_STAT_BYTES: usize = 1024;

/// Where the record of the crd serving `control_socket` lives.
pub fn record_path(control_socket: &Path) -> PathBuf {
    let mut p = control_socket.as_os_str().to_owned();
    p.push(".groups");
    PathBuf::from(p)
}

/// Who wrote a record: the boot, the session and the start time of that crd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Writer {
    pub boot_id: [u8; BOOT_ID_BYTES],
    pub session: u32,
    /// Clock ticks after boot (`/proc/PID/stat` field 22).
    pub start: u64,
}

/// One process as `/proc/PID/stat` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pgrp: u32,
    pub session: u32,
    pub start: u64,
}

/// A decimal number, all of `b`.
fn number(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    b.iter().try_fold(0u64, |n, &c| {
        c.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(c - b'0')))
            .flatten()
    })
}

/// `/proc/PID/stat` -> pgrp, session, start time. The command name (field 2)
/// may hold spaces and parentheses: fields are counted after its last `)`.
pub fn parse_stat(text: &[u8]) -> Option<Proc> {
    let close = text.iter().rposition(|&c| c == b')')?;
    // After the name: state (3), ppid (4), pgrp (5), session (6), ... starttime (22).
    let mut f = text[close + 1..]
        .split(|&c| c == b' ' || c == b'\n')
        .filter(|f| !f.is_empty());
    let mut nth = |n: usize| f.nth(n).and_then(number);
    let pgrp = nth(2)?;
    let session = nth(0)?;
    let start = nth(15)?;
    Some(Proc {
        pgrp: u32::try_from(pgrp).ok()?,
        session: u32::try_from(session).ok()?,
        start,
    })
}

fn header(w: &Writer) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..4].copy_from_slice(MAGIC);
    h[4..40].copy_from_slice(&w.boot_id);
    h[40..44].copy_from_slice(&w.session.to_be_bytes());
    h[44..52].copy_from_slice(&w.start.to_be_bytes());
    h
}

/// A record's writer and the groups in it; `None` for a file that is not one.
/// A torn last slot is ignored.
pub fn parse_record(b: &[u8]) -> Option<(Writer, Vec<u32>)> {
    if b.len() < HEADER_BYTES || &b[..4] != MAGIC {
        return None;
    }
    let be32 = |s: &[u8]| u32::from_be_bytes([s[0], s[1], s[2], s[3]]);
    let mut boot_id = [0u8; BOOT_ID_BYTES];
    boot_id.copy_from_slice(&b[4..40]);
    let mut start = [0u8; 8];
    start.copy_from_slice(&b[44..52]);
    let w = Writer {
        boot_id,
        session: be32(&b[40..44]),
        start: u64::from_be_bytes(start),
    };
    let groups = b[HEADER_BYTES..]
        .chunks_exact(SLOT_BYTES)
        .map(be32)
        .filter(|&g| g > 1)
        .collect();
    Some((w, groups))
}

/// The recorded groups the crd now starting may kill: each still has a process,
/// and all of its processes are in `w`'s session and started after `w` did.
pub fn stale(w: &Writer, boot_id: &[u8], groups: &[u32], procs: &[Proc]) -> Vec<u32> {
    if w.boot_id[..] != *boot_id {
        return Vec::new();
    }
    let mut out: Vec<u32> = Vec::new();
    for &g in groups {
        if out.contains(&g) {
            continue;
        }
        let mut members = procs.iter().filter(|p| p.pgrp == g).peekable();
        if members.peek().is_none() {
            continue;
        }
        if members.all(|p| p.session == w.session && p.start >= w.start) {
            out.push(g);
        }
    }
    out
}

/// A small file read whole into `buf`, at most `buf.len()` bytes (a longer one
/// is cut there): the bytes read.
fn read_into<'b>(path: &Path, buf: &'b mut [u8]) -> io::Result<&'b [u8]> {
    let mut f = File::open(path)?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(&buf[..n])
}

fn read_stat(path: &Path) -> Option<Proc> {
    let mut buf = [0u8; MAX_STAT_BYTES];
    parse_stat(read_into(path, &mut buf).ok()?)
}

/// Every process `/proc` shows.
fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let name = e.file_name();
        if number(name.as_encoded_bytes()).is_some()
            && let Some(p) = read_stat(&e.path().join("stat"))
        {
            out.push(p);
        }
    }
    out
}

/// The open record of this crd's runs.
pub struct Record {
    file: File,
    path: PathBuf,
    /// Slots written with a group and not yet freed.
    live: usize,
    /// Every slot's group as this crd knows it (at most `MAX_RECORD_BYTES` / 4).
    slots: Vec<u32>,
    /// The first and last slot changed since the last `flush`.
    dirty: Option<(usize, usize)>,
    /// The bytes of one `flush`, kept between flushes.
    buf: Vec<u8>,
}

impl Record {
    /// Kills the groups a previous crd left in the record at `path` (see the file's
    /// doc for when a group counts as its; each kill is logged), then starts this
    /// crd's record there. Returns the record and the groups killed, or why none
    /// is kept.
    pub fn take_over(path: &Path) -> io::Result<(Record, Vec<u32>)> {
        let no_proc = || io::Error::other("/proc unreadable");
        let me = read_stat(Path::new("/proc/self/stat")).ok_or_else(no_proc)?;
        let mut boot_id = [0u8; BOOT_ID_BYTES];
        let n = read_into(Path::new("/proc/sys/kernel/random/boot_id"), &mut boot_id)?.len();
        if n != BOOT_ID_BYTES {
            return Err(no_proc());
        }
        let mut killed = Vec::new();
        let mut buf = vec![0u8; MAX_RECORD_BYTES];
        match read_into(path, &mut buf) {
            Ok(b) => {
                if let Some((w, groups)) = parse_record(b)
                    && !groups.is_empty()
                {
                    for g in stale(&w, &boot_id, &groups, &processes()) {
                        sys::kill_group(g, libc::SIGKILL)?;
                        log::warn!(
                            "killed process group {g} of a run the previous crd did not end"
                        );
                        killed.push(g);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        let w = Writer {
            boot_id,
            session: sys::session_id(),
            start: me.start,
        };
        file.write_all_at(&header(&w), 0)?;
        Ok((
            Record {
                file,
                path: path.to_path_buf(),
                live: 0,
                slots: Vec::new(),
                dirty: None,
                buf: Vec::new(),
            },
            killed,
        ))
    }

    /// Slot `id` now holds a run in group `pgid` (`None`: free); written at the
    /// next `flush`.
    pub fn set(&mut self, id: usize, pgid: Option<u32>) {
        if self.slots.len() <= id {
            self.slots.resize(id + 1, 0);
        }
        self.slots[id] = pgid.unwrap_or(0);
        self.dirty = Some(match self.dirty {
            Some((lo, hi)) => (lo.min(id), hi.max(id)),
            None => (id, id),
        });
        match pgid {
            Some(_) => self.live += 1,
            None => self.live = self.live.saturating_sub(1),
        }
    }

    /// Writes the slots changed since the last flush, in one `pwrite`.
    pub fn flush(&mut self) -> io::Result<()> {
        let Some((lo, hi)) = self.dirty.take() else {
            return Ok(());
        };
        self.buf.clear();
        for g in &self.slots[lo..=hi] {
            self.buf.extend_from_slice(&g.to_be_bytes());
        }
        let at = (HEADER_BYTES + lo * SLOT_BYTES) as u64;
        self.file.write_all_at(&self.buf, at)
    }
}

impl Drop for Record {
    /// A crd that stops with every run ended leaves no record behind.
    fn drop(&mut self) {
        if self.live == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = self.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w() -> Writer {
        Writer {
            boot_id: *b"6f0c3a4e-0000-4000-8000-000000000001",
            session: 700,
            start: 5000,
        }
    }

    fn p(pgrp: u32, session: u32, start: u64) -> Proc {
        Proc {
            pgrp,
            session,
            start,
        }
    }

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let s = "4242 (a b) (c)) S 1 4240 700 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 5123 2000 100 18446744073709551615\n";
        assert_eq!(parse_stat(s.as_bytes()), Some(p(4240, 700, 5123)));
        assert_eq!(parse_stat(b"4242 (sh) S 1"), None);
        assert_eq!(parse_stat(b""), None);
        assert_eq!(number(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(number(b"18446744073709551616"), None);
        assert_eq!(number(b"12a"), None);
        assert_eq!(number(b""), None);
    }

    #[test]
    fn a_record_reads_back_with_its_free_slots_skipped() {
        let mut b = header(&w()).to_vec();
        for g in [4240u32, 0, 77] {
            b.extend_from_slice(&g.to_be_bytes());
        }
        assert_eq!(parse_record(&b), Some((w(), vec![4240, 77])));
        assert_eq!(parse_record(b"garbage"), None);
        assert_eq!(parse_record(b""), None);
        // A torn last slot is not a group.
        b.extend_from_slice(&[0, 0, 3]);
        assert_eq!(parse_record(&b).map(|r| r.1), Some(vec![4240, 77]));
    }

    #[test]
    fn a_turns_changes_reach_the_file_at_its_flush_in_one_write() {
        let dir = std::env::temp_dir().join(format!("crd-groups-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("crd.sock.groups");
        let (mut r, killed) = Record::take_over(&path).unwrap();
        assert!(killed.is_empty());
        let slots = |p: &Path| parse_record(&std::fs::read(p).unwrap()).unwrap().1;
        r.set(0, Some(4240));
        r.set(3, Some(77));
        r.set(1, Some(9));
        r.set(1, None);
        // Nothing written before the flush: the header only.
        assert_eq!(std::fs::read(&path).unwrap().len(), HEADER_BYTES);
        r.flush().unwrap();
        assert_eq!(slots(&path), vec![4240, 77]);
        assert_eq!(
            std::fs::read(&path).unwrap().len(),
            HEADER_BYTES + 4 * SLOT_BYTES
        );
        // A later turn rewrites only what it changed; a flush with none is no write.
        r.set(0, None);
        r.flush().unwrap();
        r.flush().unwrap();
        assert_eq!(slots(&path), vec![77]);
        // Dropped with a run still live: its last changes are written, the file kept.
        r.set(2, Some(5));
        drop(r);
        assert_eq!(slots(&path), vec![5, 77]);
        // A record whose runs all ended is removed.
        let (mut r, _) = Record::take_over(&dir.join("other.groups")).unwrap();
        r.set(0, Some(1));
        r.set(0, None);
        drop(r);
        assert!(!dir.join("other.groups").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_groups_wholly_of_the_old_crds_session_and_lifetime_are_killed() {
        let boot = w().boot_id;
        let procs = [
            // 4240: the leader is gone; two members of ours remain.
            p(4240, 700, 5001),
            p(4240, 700, 9000),
            // 77: reused by a process of another session.
            p(77, 12, 9000),
            // 88: one member started before the old crd: not its run.
            p(88, 700, 4000),
            // 99: nothing left.
        ];
        assert_eq!(
            stale(&w(), &boot, &[4240, 77, 88, 99, 4240], &procs),
            [4240]
        );
        // Another boot's record: nothing at all.
        let other = b"6f0c3a4e-0000-4000-8000-000000000002";
        assert!(stale(&w(), other, &[4240], &procs).is_empty());
    }
}
