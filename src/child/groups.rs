//! The record of the process groups crd's runs are in, so that a crd killed
//! without a chance to stop its children (SIGKILL, the OOM killer, a fault) has
//! them killed by the next crd. A child dies with crd by itself (its
//! parent-death signal, set in `sys.rs`), but what it started (a check's
//! `sleep 300 &`) does not: it is in the child's process group, which the next
//! crd kills with `killpg(SIGKILL)` at start.
//!
//! The file (beside the control socket: `<control_socket>.groups`) is a header
//! line, then one fixed-width line per run slot (`Runs`' id), written in place
//! with one `pwrite` when a run starts and one when it ends; a free slot is
//! blank. No fsync and no rename: the record need only outlive crd, not the
//! machine (a reboot ends every process too), and it lives in the runtime
//! directory (`/var/run`, a tmpfs on OpenWrt and under systemd), so it costs
//! the flash nothing. The header holds the boot id (a record from another boot
//! is ignored), the session and the start time of the crd that wrote it.
//!
//! ```text
//! crd-groups 1 <boot id, 36 chars> <session, 10 digits> <crd start, 20 digits>\n
//! <pgid, 10 digits, or 10 spaces>\n        one line per slot, slot i at HEADER + i * LINE
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

/// Bytes of the header line.
const HEADER_BYTES: usize = 10 + 1 + 1 + 1 + 36 + 1 + 10 + 1 + 20 + 1;
/// Bytes of one slot's line: a pgid right-aligned in 10 columns, then `\n`.
const LINE_BYTES: usize = 11;
/// Largest record read back at start, bytes (a crd runs at most a few hundred
/// children at once: 256 `max_parallel`, the collector's and the commands' runs).
pub const MAX_RECORD_BYTES: u64 = 64 << 10;
/// Largest `/proc/PID/stat` read, bytes.
const MAX_STAT_BYTES: u64 = 4096;

/// Where the record of the crd serving `control_socket` lives.
pub fn record_path(control_socket: &Path) -> PathBuf {
    let mut p = control_socket.as_os_str().to_owned();
    p.push(".groups");
    PathBuf::from(p)
}

/// Who wrote a record: the boot, the session and the start time of that crd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Writer {
    pub boot_id: String,
    pub session: u32,
    /// Clock ticks after boot (`/proc/PID/stat` field 22).
    pub start: u64,
}

/// One process as `/proc/PID/stat` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub pgrp: u32,
    pub session: u32,
    pub start: u64,
}

/// `/proc/PID/stat` -> pid, pgrp, session, start time. The command name (field 2)
/// may hold spaces and parentheses: fields are counted after its last `)`.
pub fn parse_stat(text: &str) -> Option<Proc> {
    let (head, rest) = text.rsplit_once(')')?;
    let pid = head.split('(').next()?.trim().parse().ok()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (3), ppid (4), pgrp (5), session (6), ... starttime (22).
    Some(Proc {
        pid,
        pgrp: f.get(2)?.parse().ok()?,
        session: f.get(3)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

fn header(w: &Writer) -> String {
    format!(
        "crd-groups 1 {:<36.36} {:>10} {:>20}\n",
        w.boot_id, w.session, w.start
    )
}

/// A record's writer and the groups in it; `None` for a file that is not one.
pub fn parse_record(text: &str) -> Option<(Writer, Vec<u32>)> {
    let (first, rest) = text.split_once('\n')?;
    let mut f = first.split_whitespace();
    if (f.next(), f.next()) != (Some("crd-groups"), Some("1")) {
        return None;
    }
    let w = Writer {
        boot_id: f.next()?.to_string(),
        session: f.next()?.parse().ok()?,
        start: f.next()?.parse().ok()?,
    };
    let groups = rest
        .lines()
        .filter_map(|l| l.trim_matches([' ', '\0']).parse::<u32>().ok())
        .filter(|&g| g > 1)
        .collect();
    Some((w, groups))
}

/// The recorded groups the crd now starting may kill: each still has a process,
/// and all of its processes are in `w`'s session and started after `w` did.
pub fn stale(w: &Writer, boot_id: &str, groups: &[u32], procs: &[Proc]) -> Vec<u32> {
    if w.boot_id != boot_id {
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

/// A whole small file, at most `max` bytes (more is an error); bytes that are not
/// UTF-8 are replaced (a torn record's tail).
fn read_small(path: &Path, max: u64) -> io::Result<String> {
    let mut buf = Vec::new();
    File::open(path)?.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(io::Error::other(format!("larger than {max} bytes")));
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`).
fn boot_id() -> io::Result<String> {
    let s = read_small(Path::new("/proc/sys/kernel/random/boot_id"), 64)?;
    Ok(s.trim().to_string())
}

fn read_stat(path: &str) -> Option<Proc> {
    parse_stat(&read_small(Path::new(path), MAX_STAT_BYTES).ok()?)
}

/// Every process `/proc` shows.
fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter_map(|e| read_stat(&format!("/proc/{}/stat", e.file_name().to_string_lossy())))
        .collect()
}

/// The open record of this crd's runs.
pub struct Record {
    file: File,
    path: PathBuf,
    /// Slots written with a group and not yet blanked.
    live: usize,
}

impl Record {
    /// Kills the groups a previous crd left in the record at `path` (see the file's
    /// doc for when a group counts as its), then starts this crd's record there.
    /// Returns the record and one line per group killed, or why none is kept.
    pub fn take_over(path: &Path) -> Result<(Record, Vec<String>), String> {
        let me = read_stat("/proc/self/stat").ok_or("cannot read /proc/self/stat")?;
        let boot = boot_id().map_err(|e| format!("boot_id: {e}"))?;
        let mut killed = Vec::new();
        match read_small(path, MAX_RECORD_BYTES) {
            Ok(text) => {
                if let Some((w, groups)) = parse_record(&text) {
                    let procs = if groups.is_empty() {
                        Vec::new()
                    } else {
                        processes()
                    };
                    for g in stale(&w, &boot, &groups, &procs) {
                        let n = procs.iter().filter(|p| p.pgrp == g).count();
                        match sys::kill_group(g, libc::SIGKILL) {
                            Ok(()) => killed.push(format!(
                                "killed process group {g} ({n} processes) of a run the previous crd did not end"
                            )),
                            Err(e) => killed.push(format!("cannot kill process group {g}: {e}")),
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => killed.push(format!("{}: {e}; not read", path.display())),
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let w = Writer {
            boot_id: boot,
            session: sys::session_id(),
            start: me.start,
        };
        file.write_all_at(header(&w).as_bytes(), 0)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((
            Record {
                file,
                path: path.to_path_buf(),
                live: 0,
            },
            killed,
        ))
    }

    /// Slot `id` now holds a run in group `pgid` (`None`: free).
    pub fn set(&mut self, id: usize, pgid: Option<u32>) -> io::Result<()> {
        let line = match pgid {
            Some(g) => format!("{g:>10}\n"),
            None => format!("{:>10}\n", ""),
        };
        let at = (HEADER_BYTES + id * LINE_BYTES) as u64;
        self.file.write_all_at(line.as_bytes(), at)?;
        match pgid {
            Some(_) => self.live += 1,
            None => self.live = self.live.saturating_sub(1),
        }
        Ok(())
    }
}

impl Drop for Record {
    /// A crd that stops with every run ended leaves no record behind.
    fn drop(&mut self) {
        if self.live == 0 {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w() -> Writer {
        Writer {
            boot_id: "6f0c3a4e-0000-4000-8000-000000000001".into(),
            session: 700,
            start: 5000,
        }
    }

    fn p(pid: u32, pgrp: u32, session: u32, start: u64) -> Proc {
        Proc {
            pid,
            pgrp,
            session,
            start,
        }
    }

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let s = "4242 (a b) (c)) S 1 4240 700 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 5123 2000 100 18446744073709551615";
        assert_eq!(parse_stat(s), Some(p(4242, 4240, 700, 5123)));
        assert_eq!(parse_stat("4242 (sh) S 1"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn a_record_reads_back_with_its_free_slots_skipped() {
        let mut text = header(&w());
        assert_eq!(text.len(), HEADER_BYTES);
        for g in [Some(4240u32), None, Some(77)] {
            let line = match g {
                Some(g) => format!("{g:>10}\n"),
                None => format!("{:>10}\n", ""),
            };
            assert_eq!(line.len(), LINE_BYTES);
            text.push_str(&line);
        }
        assert_eq!(parse_record(&text), Some((w(), vec![4240, 77])));
        assert_eq!(parse_record("garbage\n 12\n"), None);
        assert_eq!(parse_record(""), None);
        // A torn or zero-filled tail is not a group.
        text.push_str("\0\0\0\0");
        assert_eq!(parse_record(&text).map(|r| r.1), Some(vec![4240, 77]));
    }

    #[test]
    fn only_groups_wholly_of_the_old_crds_session_and_lifetime_are_killed() {
        let boot = w().boot_id;
        let procs = [
            // 4240: the leader is gone; two members of ours remain.
            p(4241, 4240, 700, 5001),
            p(4243, 4240, 700, 9000),
            // 77: reused by a process of another session.
            p(77, 77, 12, 9000),
            // 88: one member started before the old crd: not its run.
            p(88, 88, 700, 4000),
            // 99: nothing left.
        ];
        assert_eq!(
            stale(&w(), &boot, &[4240, 77, 88, 99, 4240], &procs),
            [4240]
        );
        // Another boot's record: nothing at all.
        let other = "6f0c3a4e-0000-4000-8000-000000000002";
        assert!(stale(&w(), other, &[4240], &procs).is_empty());
    }
}
