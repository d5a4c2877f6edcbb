//! The daemon's side of the spool: events in (encoded and appended), `crd emit`
//! requests, the per-iteration flush, timed syncs, drop and resume notices turned into events,
//! and the spool lines of `crd status`.
//!
//! Errors never stop the daemon here: a failing disk is logged once when it starts
//! failing and once when it recovers; records wait in the spool's bounded RAM, and
//! what cannot be kept is counted (ENOSPC is a condition, not a crash).

use crate::core::config::valid_topic_suffix;
use crate::core::event::{self, Cause, Event, Kind};
use crate::core::status::{Status, Value};
use crate::host::clock::unix_ms;
use crate::host::error::{Error, Reason};
use crate::spool::storage::FileStorage;
use crate::spool::{Spool, SpoolConfig};
use std::io::{self, Read};
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Module name of the events crd writes about itself (dropped records).
pub const SELF_MODULE: &str = "spool";

/// The largest event encoding `Outbox` keeps for the next, bytes.
const SCRATCH_KEPT_BYTES: usize = 4096;

/// Most bytes of the last error `Outbox` keeps (`MODULE: first line`, cut at
/// a character boundary): what Home Assistant's last-error sensor shows.
pub const LAST_ERROR_BYTES: usize = 256;

/// The last `error` event spooled: `MODULE: first line of out` (at most
/// `LAST_ERROR_BYTES`), its time (unix ms), and the count of error events
/// spooled since crd started, which tells a new one from the same.
#[derive(Debug, Default)]
pub struct LastError {
    pub text: String,
    pub ms: u64,
    pub count: u64,
}

pub struct Outbox {
    spool: Spool<FileStorage>,
    failing: bool,
    /// Events that could not be appended at all (the spool's storage failed).
    events_lost: u64,
    /// The last event's encoding, kept for the next (a collector pushes one a
    /// message).
    scratch: Vec<u8>,
    last_error: LastError,
}

/// A random stream id for a new spool: /dev/urandom, else time and pid mixed.
fn new_stream() -> u64 {
    let mut b = [0u8; 8];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    let mut v = u64::from_be_bytes(b);
    if read.is_err() || v == 0 {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(crate::core::dur::ns)
            .unwrap_or(1);
        // splitmix64 of time ^ pid: unique enough where urandom is missing.
        v = t ^ (u64::from(std::process::id()) << 32);
        v = (v ^ (v >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        v = (v ^ (v >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        v ^= v >> 31;
    }
    v.max(1)
}

/// Opens a spool directory for reading only (`crd dump`), without its lock.
pub fn open_read_only(dir: &Path, cfg: SpoolConfig) -> Result<Spool<FileStorage>, Error> {
    let st = FileStorage::open_read_only(dir).map_err(|e| Reason::SpoolDir(dir.into(), e))?;
    // A `fn` pointer, as `Outbox::open` passes too: one `Spool::open` and one
    // recovery in the binary, not one per closure type (2.4 KB on aarch64).
    Spool::open(st, cfg, (|| 0) as fn() -> u64, true)
        .map(|(sp, _)| sp)
        .map_err(|e| Reason::RecoverReadOnly(e, dir.into()).into())
}

impl Outbox {
    /// Opens (creating) and recovers the spool. Errors: another crd holds the
    /// lock, a format version this crd does not read, or the directory is unusable.
    pub fn open(dir: &Path, cfg: SpoolConfig) -> Result<Outbox, Error> {
        let st = FileStorage::open(dir).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock => Reason::Locked(e),
            _ => Reason::SpoolDir(dir.into(), e),
        })?;
        let (spool, rec) = Spool::open(st, cfg, new_stream as fn() -> u64, false)
            .map_err(|e| Reason::Recover(e, dir.into()))?;
        log::info!(
            "spool {}: stream {:016x}, {} records to forward in {} segments, next seq {}",
            dir.display(),
            spool.stream(),
            rec.records_unacked,
            rec.segments,
            spool.next_seq()
        );
        if rec.truncated_bytes > 0 || rec.corrupt > 0 {
            log::warn!(
                "spool {}: recovery cut a torn tail of {} bytes and skipped {} corrupt records",
                dir.display(),
                rec.truncated_bytes,
                rec.corrupt
            );
        }
        for f in &rec.ignored_files {
            log::warn!("spool {}: ignoring foreign file {f}", dir.display());
        }
        Ok(Outbox {
            spool,
            failing: false,
            events_lost: 0,
            scratch: Vec::new(),
            last_error: LastError::default(),
        })
    }

    fn note(&mut self, r: io::Result<()>) {
        match r {
            Ok(()) if self.failing => {
                self.failing = false;
                log::info!("spool: writing works again");
            }
            Err(e) if !self.failing => {
                self.failing = true;
                log::error!("spool: {e}; records wait in memory (bounded) and are retried");
            }
            _ => {}
        }
    }

    /// Encodes and appends one event (cutting `out` to fit the record limit).
    /// Spools `ev`; its seq, or `None` if it was lost (logged and counted).
    pub fn push(&mut self, ev: Event, now: Instant) -> Option<u64> {
        let max = self.spool.config().max_record as usize;
        let mut payload = std::mem::take(&mut self.scratch);
        let fits = event::encode_into(&ev, max, &mut payload);
        let appended = fits.then(|| self.spool.append(&payload, now));
        // A large one (a response's whole output, or one that did not fit) is
        // not kept.
        if payload.capacity() <= SCRATCH_KEPT_BYTES {
            self.scratch = payload;
        }
        let Some(appended) = appended else {
            log::error!(
                "spool: event of module {} does not fit in {max} bytes; not recorded",
                ev.module
            );
            return None;
        };
        let seq = match appended {
            Ok(seq) => {
                log::info!("seq={seq} {ev}");
                self.note_error(&ev);
                Some(seq)
            }
            Err(e) => {
                self.events_lost += 1;
                self.failing = true;
                log::error!("spool: event lost: {e}: {ev}");
                None
            }
        };
        self.drop_notices(now);
        seq
    }

    /// Turns records dropped by the full policy, or lost with a vanished
    /// directory, and the seqs skipped after an unclean stop, into an error
    /// event each. A collector reads the range at the end of each
    /// (`collect::gaps::notice`): keep `seq LO..=HI` last.
    fn drop_notices(&mut self, now: Instant) {
        // Each notice is appended once; appending it may drop again, so bounded.
        for _ in 0..4 {
            let sp = &mut self.spool;
            let (head, (lo, hi, n), tail) = if let Some(d) = sp.take_drop_notice() {
                ("spool full: dropped ", d, " unsent records")
            } else if let Some(l) = sp.take_loss_notice() {
                let head = "spool directory vanished and was made again: lost ";
                (head, l, " unsent records")
            } else if let Some((lo, hi)) = sp.take_resume_notice() {
                let head = "unclean stop: ";
                (head, (lo, hi, hi - lo + 1), " seqs never sent")
            } else {
                return;
            };
            // One format for the three: fewer bytes on a router.
            let out = format!("{head}{n}{tail}, seq {lo}..={hi}");
            let ev = Event {
                ts_ms: unix_ms(),
                module: SELF_MODULE.into(),
                kind: Kind::Error,
                code: 0,
                dur_ms: 0,
                out,
                cause: None,
            };
            let max = self.spool.config().max_record as usize;
            if let Some(p) = event::encode(&ev, max) {
                match self.spool.append(&p, now) {
                    Ok(seq) => {
                        log::warn!("seq={seq} {ev}");
                        self.note_error(&ev);
                    }
                    Err(e) => log::error!("spool: {e}: {ev}"),
                }
            }
        }
    }

    /// `crd emit`: appends an `emit` event and writes it to the segment file (or,
    /// with `sync`, makes it durable). Returns its seq, or why it was refused.
    /// `cause`: the run's, when a collector's run of a message emits.
    pub fn emit(
        &mut self,
        suffix: &str,
        message: &[u8],
        sync: bool,
        cause: Option<Cause>,
        now: Instant,
    ) -> Result<u64, Error> {
        if let Err(why) = valid_topic_suffix(suffix) {
            return Err(Reason::BadSuffix(suffix.to_string(), why).into());
        }
        let ev = Event {
            ts_ms: unix_ms(),
            module: suffix.to_string(),
            kind: Kind::Emit,
            code: 0,
            dur_ms: 0,
            out: String::from_utf8_lossy(message).into_owned(),
            cause,
        };
        let max = self.spool.config().max_record;
        let payload = event::encode(&ev, usize::MAX)
            .expect("invariant: encoding without a size limit always succeeds");
        if payload.len() > max as usize {
            // Count it in the spool's too_large counter through the refused append.
            let _ = self.spool.append(&payload, now);
            return Err(Reason::TooLarge(payload.len(), max).into());
        }
        let seq = self.spool.append(&payload, now).map_err(Reason::Append)?;
        log::info!("seq={seq} {ev}");
        self.drop_notices(now);
        let r = if sync {
            self.spool.sync(now)
        } else {
            self.spool.flush(now)
        };
        let done = if sync {
            self.spool.durable_seq()
        } else {
            self.spool.written_seq()
        };
        self.note(r);
        if done >= seq {
            Ok(seq)
        } else {
            Err(Reason::NotWritten(seq, sync).into())
        }
    }

    /// Every loop iteration: write what was appended; sync and checkpoint when due.
    pub fn handle_timer(&mut self, now: Instant) {
        let r = self.spool.flush(now);
        self.note(r);
        let r = self.spool.handle_timer(now);
        if r.is_err() || self.failing {
            self.note(r);
        }
        self.drop_notices(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.spool.poll_timeout()
    }

    /// On shutdown: everything synced, the checkpoint written.
    pub fn close(&mut self, now: Instant) {
        if let Err(e) = self.spool.close(now) {
            log::error!("spool: closing: {e}; unsynced records may be lost");
        }
    }

    /// The `spool_*` figures of `crd status`.
    pub fn status(&self, s: &mut Status, now: Instant) {
        let sp = &self.spool;
        let st = sp.stats();
        s.text("spool_stream", format!("{:016x}", sp.stream()));
        s.num("spool_depth", sp.depth());
        s.num("spool_bytes", sp.bytes());
        s.num("spool_segments", sp.segments() as u64);
        s.put(
            "spool_oldest_unacked_seq",
            Value::Maybe((sp.depth() > 0).then(|| sp.acked() + 1)),
        );
        s.num("spool_next_seq", sp.next_seq());
        s.count("spool_dropped", st.dropped);
        s.put(
            "spool_dropped_last",
            Value::Opt(st.dropped_range.map(|(a, b)| format!("{a}..={b}"))),
        );
        s.count("spool_lost", st.lost);
        s.count("spool_dir_recreated", st.dir_recreated);
        s.count("spool_events_lost", self.events_lost);
        s.count("spool_too_large", st.too_large);
        s.count("spool_refused", st.refused_backlog);
        s.count("spool_corrupt_skipped", st.corrupt);
        s.count("spool_truncated_bytes", st.truncated);
        s.count("spool_fsyncs", st.fsyncs);
        s.count("spool_io_errors", st.io_errors);
        s.put(
            "spool_last_sync",
            Value::Ago(
                st.last_sync
                    .map(|t| now.saturating_duration_since(t).as_secs()),
            ),
        );
        s.text("spool_state", if self.failing { "failing" } else { "ok" });
    }

    pub fn spool(&mut self) -> &mut Spool<FileStorage> {
        &mut self.spool
    }

    /// Keeps `ev` as the last error when it is one (just spooled).
    fn note_error(&mut self, ev: &Event) {
        if ev.kind != Kind::Error {
            return;
        }
        let e = &mut self.last_error;
        e.text.clear();
        e.text.push_str(&ev.module);
        e.text.push_str(": ");
        e.text.push_str(ev.out.lines().next().unwrap_or_default());
        let mut n = e.text.len().min(LAST_ERROR_BYTES);
        while !e.text.is_char_boundary(n) {
            n -= 1;
        }
        e.text.truncate(n);
        e.ms = ev.ts_ms;
        e.count += 1;
    }

    /// The last `error` event spooled (`count` 0: none yet).
    pub fn last_error(&self) -> &LastError {
        &self.last_error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(module: &str, out: usize) -> Event {
        Event {
            ts_ms: 1,
            module: module.into(),
            kind: Kind::Fired,
            code: 0,
            dur_ms: 0,
            out: "x".repeat(out),
            cause: None,
        }
    }

    /// The kept encoding buffer stays small whatever went through it: one too
    /// large to keep (recorded, or refused as not fitting) is let go.
    #[test]
    fn the_kept_encoding_is_bounded() {
        let d = std::env::temp_dir().join(format!("crd-outbox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let mut o = Outbox::open(&d, SpoolConfig::default()).unwrap();
        let now = Instant::now();
        assert!(o.push(event("M", 10), now).is_some());
        let kept = o.scratch.capacity();
        assert!(kept > 0 && kept <= SCRATCH_KEPT_BYTES, "{kept}");
        assert!(o.push(event("M", 20_000), now).is_some());
        assert!(o.scratch.capacity() <= SCRATCH_KEPT_BYTES);
        let huge = "m".repeat(70_000);
        assert_eq!(
            o.push(event(&huge, 0), now),
            None,
            "a module name past the record limit"
        );
        assert!(
            o.scratch.capacity() <= SCRATCH_KEPT_BYTES,
            "{}",
            o.scratch.capacity()
        );
        assert!(o.push(event("M", 10), now).is_some());
        let _ = std::fs::remove_dir_all(&d);
    }

    /// The last error spooled is its module and the first line of its
    /// output, cut at a character boundary within `LAST_ERROR_BYTES`; an
    /// event of another kind leaves it as it is.
    #[test]
    fn the_last_error_is_the_first_line_of_the_last_error_event() {
        let d = std::env::temp_dir().join(format!("crd-outbox-err-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let mut o = Outbox::open(&d, SpoolConfig::default()).unwrap();
        let now = Instant::now();
        assert_eq!(o.last_error().count, 0, "none yet");
        let error = |out: String, ts_ms| Event {
            kind: Kind::Error,
            out,
            ts_ms,
            ..event("Disk", 0)
        };
        o.push(error("exit 3\nsecond line".into(), 7), now).unwrap();
        assert_eq!(
            (
                o.last_error().text.as_str(),
                o.last_error().ms,
                o.last_error().count
            ),
            ("Disk: exit 3", 7, 1)
        );
        o.push(event("Wan", 5), now).unwrap();
        assert_eq!(
            o.last_error().text,
            "Disk: exit 3",
            "a fired event is no error"
        );
        o.push(error(format!("x{}", "é".repeat(200)), 9), now)
            .unwrap();
        let e = o.last_error();
        assert_eq!((e.ms, e.count), (9, 2));
        assert_eq!(e.text.len(), LAST_ERROR_BYTES - 1, "whole characters");
        assert!(e.text.starts_with("Disk: xé"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
