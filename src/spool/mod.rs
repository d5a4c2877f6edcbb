//! The spool: a persistent, bounded ring of event records on disk, the durable outbox
//! between the daemon and the forwarder. It knows nothing of MQTT.
//!
//! Inputs: `append`, `flush`, `sync`, `ack`, `handle_timer(now)`; outputs:
//! `read_next`, `poll_timeout()`, `stats()`. All IO goes through `Storage` (files in
//! production, a fault-injecting memory store in tests); time comes in as `now`.
//! Formats: `format.rs`. What it must survive: ARCHITECTURE.md, Reliability.
//!
//! Rules:
//! - `seq` strictly increases per stream and is never given twice, even across a
//!   power cut: the checkpoint reserves seqs `SEQ_LEASE` at a time before they are
//!   used, and numbering after a crash resumes above the reservation. The reader
//!   only returns durable (synced) records.
//! - Group commit: records are encoded into one write buffer, written on `flush`
//!   (every loop iteration) and made durable by fdatasync when `sync_bytes` are
//!   unsynced or the oldest unsynced record is `sync_interval` old, on demand, and on
//!   close. Bytes written since the last good sync stay in RAM until it succeeds; a
//!   failed sync is never retried on trust: the file is reopened, truncated to the
//!   last good length, rewritten from RAM and synced again.
//! - Bounded: at most `size` bytes in `segment`-sized files; when full (the size,
//!   or ENOSPC) the oldest whole segment is dropped and its unacknowledged records
//!   counted, unless the spool keeps them (`keep_unacknowledged`, the collector's
//!   journal): then the append or the write is refused instead. RAM holds one
//!   write buffer, one read buffer, the unsynced bytes and one entry per segment.
//! - The ack watermark is kept in ack marks (`format.rs`) in the active segment:
//!   one rides in every write of records (`flush`, each loop turn) and every
//!   sync, one follows each new segment's header, and one is written on its own
//!   after `MARK_WRITE_ACKS` acks with no record to carry it. So a crash of crd
//!   (SIGKILL, OOM) resends at most the forwarder's window plus fewer than
//!   `MARK_WRITE_ACKS`; a power cut, the window plus the acks since the last sync.
//!   Marks cost no fsync of their own unless acks waited `sync_interval` with
//!   nothing to sync, or `MARK_EVERY_ACKS` came. The checkpoint holds the seq
//!   lease (and the watermark at a lease, a clean stop, or where the collector
//!   asks for it).
//! - Recovery reads the checkpoint, every segment header, and the newest segment's
//!   records and marks (the only place a torn tail can be); sealed segments are
//!   checked record by record when read. Damage is truncated (a torn tail) or
//!   skipped and counted (a corrupt record), never a reason to refuse to start; an
//!   unknown format version is.

pub mod durable;
pub mod format;
pub mod storage;

use format::{Checkpoint, HeaderError, SegmentHeader};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};
use storage::Storage;

pub use crate::core::config::SpoolConfig;

/// Acks counted before an ack mark is synced on its own, when no record was
/// appended meanwhile to carry one (a backlog drained after days offline): at
/// most one extra write per this many events. A mark is also synced once acks
/// have waited `sync_interval`. Fully acked segments are deleted once a mark or
/// the checkpoint covers them (one directory fsync).
pub const MARK_EVERY_ACKS: u32 = 1024;
/// Acks after which a mark is written (not synced) on its own when no record
/// carried one: what a crash of crd, not of the power, resends beyond the
/// forwarder's window is below this. 18 bytes per this many acks.
pub const MARK_WRITE_ACKS: u64 = 32;
/// Records handed to the reader and not yet acknowledged, at most (the forwarder's
/// window is far smaller); `read_next` returns nothing more until acks come.
pub const MAX_IN_FLIGHT: usize = 1024;
/// The write buffer is written out when it holds this many bytes.
pub const WRITE_BUFFER_BYTES: usize = 64 * 1024;
/// Read-ahead for the reader and recovery: records are taken from this much of a
/// segment per pread, not two preads each.
pub const READ_AHEAD_BYTES: usize = 64 * 1024;
/// Bytes examined per read while looking for the next valid record after damage.
const RESYNC_CHUNK_BYTES: usize = 4096;
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// The node name Home Assistant last saw this crd as (`host::files::ha_node`),
/// kept here as the one directory that survives a reboot.
pub const HA_NODE_FILE: &str = "ha-node";
/// Seqs reserved at a time in the checkpoint: after a crash, numbering resumes at
/// the reservation, so a seq lost with an unsynced tail is never given again (the
/// gap shows downstream what a power cut cost). One checkpoint fsync per lease.
pub const SEQ_LEASE: u64 = 1 << 16;
/// After a failed timed sync or checkpoint, the next try waits this long (no spin).
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub enum SpoolError {
    Io {
        what: String,
        err: io::Error,
    },
    /// A valid file of a format version this crd does not read.
    Version {
        file: String,
        version: u16,
    },
}

impl fmt::Display for SpoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpoolError::Io { what, err } => write!(f, "spool: {what}: {err}"),
            SpoolError::Version { file, version } => write!(
                f,
                "spool: {file} has format version {version}, this crd reads version {}; \
                 refusing to guess (move the spool directory aside to start a new one)",
                format::VERSION
            ),
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> SpoolError {
    let what = what.into();
    move |err| SpoolError::Io { what, err }
}

#[derive(Debug)]
pub enum AppendError {
    /// Larger than `max_record`: refused alone, counted.
    TooLarge {
        len: usize,
        max: u32,
    },
    /// Storage keeps failing and the unsynced RAM bound is reached.
    Backlog,
    /// Full of records not yet acknowledged, which this spool keeps
    /// (`keep_unacknowledged`).
    Full,
    Io(io::Error),
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::TooLarge { len, max } => {
                write!(f, "record of {len} bytes is over the {max}-byte limit")
            }
            AppendError::Backlog => {
                write!(f, "storage is failing and the unsynced backlog is full")
            }
            AppendError::Full => write!(f, "full of records not yet done"),
            AppendError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Counters, for `crd status` and the benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub appended: u64,
    /// Unacknowledged records dropped because the spool was full, and the last range.
    pub dropped: u64,
    pub dropped_range: Option<(u64, u64)>,
    /// Unacknowledged records lost with a vanished directory (see `rebuild_vanished`),
    /// and how often the directory had to be made again.
    pub lost: u64,
    pub dir_recreated: u64,
    pub too_large: u64,
    pub refused_backlog: u64,
    /// Appends refused because the spool was full of what it keeps
    /// (`keep_unacknowledged`).
    pub refused_full: u64,
    /// Corrupt records (or unreadable stretches) skipped, at recovery or when read.
    pub corrupt: u64,
    /// Bytes cut from a torn tail at recovery.
    pub truncated: u64,
    pub fsyncs: u64,
    pub io_errors: u64,
    pub last_sync: Option<Instant>,
}

#[derive(Clone, Debug)]
struct Seg {
    first_seq: u64,
    /// Shared, not copied: the reader names its segment for every record.
    name: Rc<str>,
    /// Bytes in the file (header included), as far as written.
    bytes: u64,
    /// Highest seq in the segment (first_seq - 1 while it holds none). Seqs are
    /// contiguous within a segment: a crash's seq jump starts a new one.
    last_seq: u64,
    /// From the header: the previous segment's last seq.
    prev_last: u64,
}

/// What recovery found, for the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    pub records_unacked: u64,
    pub truncated_bytes: u64,
    pub corrupt: u64,
    pub ignored_files: Vec<String>,
    pub new_stream: bool,
}

pub struct Spool<S: Storage> {
    st: S,
    cfg: SpoolConfig,
    stream: u64,
    read_only: bool,
    segs: VecDeque<Seg>,
    next_seq: u64,
    buf: Vec<u8>,
    buf_last_seq: u64,
    unsynced: Vec<u8>,
    synced_len: u64,
    unsynced_since: Option<Instant>,
    written_seq: u64,
    durable_seq: u64,
    acked: u64,
    /// Records read and not yet acknowledged, in read (= seq) order, with whether
    /// each has been acked. The watermark moves over its acked prefix, so a gap in
    /// the numbering (after a crash) never stalls it.
    in_flight: VecDeque<(u64, bool)>,
    ckpt_epoch: u64,
    /// Acks since the watermark was last made durable, and since when.
    acks_unmarked: u32,
    acks_dirty_since: Option<Instant>,
    ckpt_exists: bool,
    /// The watermark durable on disk (a synced mark or the checkpoint), and the
    /// highest one in a mark written or waiting in `buf` (>= `marked`).
    marked: u64,
    mark_pending: u64,
    /// Whether marks are written (see `watermark_in_checkpoint_only`).
    marks: bool,
    /// A full spool refuses an append rather than drop what is not acknowledged
    /// (see `keep_unacknowledged`).
    keep: bool,
    /// Seqs below this may be handed out without writing the checkpoint first.
    seq_lease: u64,
    /// Reader position: segment (by first_seq), byte offset, and next seq wanted.
    cur_seg: u64,
    cur_off: u64,
    cur_seq: u64,
    read_buf: Vec<u8>,
    /// Read-ahead: `ra` holds segment `ra_name`'s bytes from offset `ra_off`.
    /// The name is the segment's own `Rc`, known again by its pointer: a
    /// record's two reads compare no bytes of it (comparing the names byte
    /// by byte would take ~250 instructions of the ~850 a record read).
    ra: Vec<u8>,
    ra_name: Option<Rc<str>>,
    ra_off: u64,
    stats: Stats,
    drop_notice: Option<(u64, u64, u64)>,
    /// Records lost with a vanished directory since the last `take_loss_notice`.
    loss_notice: Option<(u64, u64, u64)>,
    /// Seqs skipped by resuming above the lease after an unclean stop, until
    /// `take_resume_notice`.
    resume_notice: Option<(u64, u64)>,
    /// No timed sync or checkpoint before this, after one failed.
    retry_at: Option<Instant>,
}

/// One step of scanning a segment.
enum Scan {
    Record {
        seq: u64,
        len: u32,
        next: u64,
    },
    /// An ack mark: every record up to `acked` was acknowledged.
    Mark {
        acked: u64,
        next: u64,
    },
    End,
    Bad,
}

impl<S: Storage> Spool<S> {
    /// Opens and recovers the spool in `st`. `new_stream` is called only when the
    /// spool is new. A read-only spool (`crd dump`) changes nothing on disk.
    pub fn open(
        st: S,
        cfg: SpoolConfig,
        new_stream: impl FnOnce() -> u64,
        read_only: bool,
    ) -> Result<(Spool<S>, Recovery), SpoolError> {
        let mut sp = Spool {
            st,
            cfg,
            stream: 0,
            read_only,
            segs: VecDeque::new(),
            next_seq: 1,
            buf: Vec::new(),
            buf_last_seq: 0,
            unsynced: Vec::new(),
            synced_len: 0,
            unsynced_since: None,
            written_seq: 0,
            durable_seq: 0,
            acked: 0,
            in_flight: VecDeque::new(),
            ckpt_epoch: 0,
            acks_unmarked: 0,
            acks_dirty_since: None,
            ckpt_exists: false,
            marked: 0,
            mark_pending: 0,
            marks: true,
            keep: false,
            seq_lease: 0,
            cur_seg: 0,
            cur_off: 0,
            cur_seq: 1,
            read_buf: Vec::new(),
            ra: Vec::new(),
            ra_name: None,
            ra_off: 0,
            stats: Stats::default(),
            drop_notice: None,
            loss_notice: None,
            resume_notice: None,
            retry_at: None,
        };
        let rec = sp.recover(new_stream)?;
        Ok((sp, rec))
    }

    /// Recovery, in this order: the checkpoint, the segments' headers, the
    /// newest segment's records and marks, the numbering and the watermark, then
    /// (unless read-only) what starting to append needs.
    fn recover(&mut self, new_stream: impl FnOnce() -> u64) -> Result<Recovery, SpoolError> {
        let mut rec = Recovery::default();
        let ckpt = self.read_checkpoint()?;
        let names = self.segment_names(&mut rec)?;
        let mut stream = ckpt.map(|c| c.stream);
        self.load_segments(names, &mut stream, &mut rec)?;
        rec.new_stream = stream.is_none();
        self.stream = stream.unwrap_or_else(new_stream);
        self.bound_sealed_segments();
        let mark = self.recover_active(&mut rec)?;
        self.settle_numbering(ckpt, mark);
        self.stats.corrupt = rec.corrupt;
        self.stats.truncated = rec.truncated_bytes;
        self.forget_read_ahead();
        if !self.read_only {
            self.ready_to_append()?;
        }
        rec.segments = self.segs.len();
        rec.records_unacked = self.written_seq - self.acked;
        self.cur_seq = self.acked + 1;
        self.cur_seg = self.segs.front().map_or(0, |s| s.first_seq);
        self.cur_off = format::SEGMENT_HEADER_BYTES as u64;
        Ok(rec)
    }

    /// The checkpoint's newer valid slot; `None` without a checkpoint file.
    fn read_checkpoint(&mut self) -> Result<Option<Checkpoint>, SpoolError> {
        let mut cbuf = [0u8; 2 * format::CHECKPOINT_SLOT_BYTES];
        match self.st.len(CHECKPOINT_FILE).map_err(io_err("checkpoint"))? {
            Some(_) => {
                let n = self
                    .st
                    .read_at(CHECKPOINT_FILE, 0, &mut cbuf)
                    .map_err(io_err("reading checkpoint"))?;
                self.ckpt_exists = true;
                Checkpoint::best(&cbuf[..n]).map_err(|version| SpoolError::Version {
                    file: CHECKPOINT_FILE.into(),
                    version,
                })
            }
            None => Ok(None),
        }
    }

    /// The segments in the directory with their first seqs, oldest first;
    /// anything else there is left alone (and named in `rec`, but for the
    /// checkpoint and the lock file).
    fn segment_names(&mut self, rec: &mut Recovery) -> Result<Vec<(u64, String)>, SpoolError> {
        let mut names: Vec<(u64, String)> = Vec::new();
        for name in self
            .st
            .list()
            .map_err(io_err("listing the spool directory"))?
        {
            match format::parse_segment_name(&name) {
                Some(first) => names.push((first, name)),
                None if [CHECKPOINT_FILE, "lock", HA_NODE_FILE].contains(&name.as_str()) => {}
                None => rec.ignored_files.push(name),
            }
        }
        // No two are equal (the names differ), so unstable sorts the same, and
        // its heapsort is smaller than a merge sort for this one type.
        names.sort_unstable();
        Ok(names)
    }

    /// Reads the segments' headers into `segs`. The first header read gives the
    /// `stream` when the checkpoint did not; a segment of another stream, or whose
    /// header disagrees with its name, is ignored; one never written is removed.
    fn load_segments(
        &mut self,
        names: Vec<(u64, String)>,
        stream: &mut Option<u64>,
        rec: &mut Recovery,
    ) -> Result<(), SpoolError> {
        let mut hb = [0u8; format::SEGMENT_HEADER_BYTES];
        let n_names = names.len();
        for (i, (first, name)) in names.into_iter().enumerate() {
            let len = self.st.len(&name).map_err(io_err(&*name))?.unwrap_or(0);
            let n = self.st.read_at(&name, 0, &mut hb).map_err(io_err(&*name))?;
            let mut prev_last = first - 1;
            match SegmentHeader::decode(&hb[..n]) {
                Ok(h) => {
                    if *stream.get_or_insert(h.stream) != h.stream || h.first_seq != first {
                        rec.ignored_files.push(name);
                        continue;
                    }
                    prev_last = h.prev_last;
                }
                Err(HeaderError::Version(v)) => {
                    return Err(SpoolError::Version {
                        file: name,
                        version: v,
                    });
                }
                Err(HeaderError::Short) => {
                    // Created but never written: nothing in it. The newest one is
                    // rewritten below if it is still the active segment.
                    if !self.read_only {
                        self.forget_read_ahead();
                        self.st.remove(&name).map_err(io_err(&*name))?;
                    }
                    if i + 1 == n_names {
                        self.next_seq = self.next_seq.max(first);
                    }
                    continue;
                }
                Err(HeaderError::Corrupt) => {
                    // The records keep their own CRCs; the name still gives first_seq.
                    rec.corrupt += 1;
                }
            }
            self.segs.push_back(Seg {
                first_seq: first,
                name: name.into(),
                bytes: len,
                last_seq: first - 1,
                prev_last,
            });
        }
        Ok(())
    }

    /// A sealed segment ends where the next one's header says (before its
    /// first seq, unless a crash jumped the numbering).
    fn bound_sealed_segments(&mut self) {
        for i in 0..self.segs.len().saturating_sub(1) {
            let (first, next) = (self.segs[i].first_seq, &self.segs[i + 1]);
            self.segs[i].last_seq = next.prev_last.clamp(first - 1, next.first_seq - 1);
        }
    }

    /// The newest segment: finds its last valid record, cuts a torn tail (noted
    /// in `rec`). Returns the highest ack mark in it (0 for none).
    fn recover_active(&mut self, rec: &mut Recovery) -> Result<u64, SpoolError> {
        let Some(active) = self.segs.back().cloned() else {
            return Ok(0);
        };
        let (last, end, corrupt, mark) = self.scan_tail(&active)?;
        rec.corrupt += corrupt;
        if end < active.bytes {
            rec.truncated_bytes = active.bytes - end;
            if !self.read_only {
                self.st
                    .truncate(&active.name, end)
                    .map_err(io_err(&*active.name))?;
                self.st.sync(&active.name).map_err(io_err(&*active.name))?;
            }
        }
        let a = self.segs.back_mut().expect("checked above");
        a.bytes = end;
        a.last_seq = last.max(a.first_seq - 1);
        self.next_seq = self.next_seq.max(a.last_seq + 1).max(a.first_seq);
        Ok(mark)
    }

    /// The next seq and the watermark from the checkpoint, the active segment's
    /// `mark` and the oldest segment left; everything written counts as durable.
    fn settle_numbering(&mut self, ckpt: Option<Checkpoint>, mark: u64) {
        if let Some(c) = ckpt {
            self.ckpt_epoch = c.epoch;
            if c.next_seq > self.next_seq && !self.read_only {
                // An unclean stop: the rest of the lease is never given (nor
                // sent, if a power cut took records given it before their sync).
                self.resume_notice = Some((self.next_seq, c.next_seq - 1));
            }
            self.next_seq = self.next_seq.max(c.next_seq);
            self.acked = c.acked;
        }
        self.acked = self.acked.max(mark);
        // Segments dropped after the last checkpoint took their records with them.
        self.acked = self
            .acked
            .max(self.segs.front().map_or(0, |s| s.first_seq - 1));
        self.acked = self.acked.min(self.next_seq - 1);
        self.written_seq = self.next_seq - 1;
        self.durable_seq = self.written_seq;
        self.marked = self.acked;
        self.mark_pending = self.acked;
    }

    /// Deletes the segments the watermark covers, gives appends an active segment
    /// (a new one where a crash jumped the numbering, or none is left) and
    /// reserves the next seqs in the checkpoint.
    fn ready_to_append(&mut self) -> Result<(), SpoolError> {
        self.delete_acked_segments()
            .map_err(io_err("deleting acknowledged segments"))?;
        // After a crash the numbering resumes above the reservation: in a new
        // segment, so seqs stay contiguous within each segment.
        if self
            .segs
            .back()
            .is_some_and(|a| self.next_seq > a.last_seq + 1)
        {
            self.create_segment()
                .map_err(io_err("creating a segment"))?;
        }
        if self.segs.is_empty() {
            self.create_segment()
                .map_err(io_err("creating a segment"))?;
        } else {
            let a = self.segs.back().expect("not empty");
            self.synced_len = a.bytes;
        }
        self.renew_lease().map_err(io_err("writing the checkpoint"))
    }

    /// Scans the newest segment: (last valid seq, end of valid data, corrupt
    /// records, highest ack mark).
    fn scan_tail(&mut self, seg: &Seg) -> Result<(u64, u64, u64, u64), SpoolError> {
        let mut off = format::SEGMENT_HEADER_BYTES as u64;
        let mut last = 0;
        let mut corrupt = 0;
        let mut mark = 0;
        let mut end = off.min(seg.bytes);
        loop {
            match self
                .scan_at(&seg.name, off, seg.bytes, last)
                .map_err(io_err(&*seg.name))?
            {
                Scan::Record { seq, next, .. } => {
                    last = seq;
                    off = next;
                    end = next;
                }
                Scan::Mark { acked, next } => {
                    mark = mark.max(acked);
                    off = next;
                    end = next;
                }
                Scan::End => break,
                Scan::Bad => match self
                    .resync(&seg.name, off + 1, seg.bytes, last)
                    .map_err(io_err(&*seg.name))?
                {
                    // Valid records follow: this was corruption, not a torn tail.
                    Some(next) => {
                        corrupt += 1;
                        off = next;
                    }
                    None => break,
                },
            }
        }
        Ok((last, end, corrupt, mark))
    }

    /// Reads the record at `off` (into `read_buf`) and checks it. `after` is the seq
    /// the record must exceed.
    fn scan_at(&mut self, name: &Rc<str>, off: u64, len: u64, after: u64) -> io::Result<Scan> {
        if off >= len {
            return Ok(Scan::End);
        }
        let mut hb = [0u8; format::RECORD_HEADER_BYTES];
        let n = self.read_ahead(name, off, len, &mut hb)?;
        let Some(h) = format::decode_record_header(&hb[..n], self.cfg.max_record, len - off) else {
            return Ok(Scan::Bad);
        };
        if h.mark {
            if n < format::RECORD_HEADER_BYTES || !format::record_crc_ok(&hb, &h, &[]) {
                return Ok(Scan::Bad);
            }
            return Ok(Scan::Mark {
                acked: h.seq,
                next: off + format::RECORD_HEADER_BYTES as u64,
            });
        }
        if h.seq <= after {
            return Ok(Scan::Bad);
        }
        let mut payload = std::mem::take(&mut self.read_buf);
        payload.resize(h.len as usize, 0);
        let at = off + format::RECORD_HEADER_BYTES as u64;
        let m = self.read_ahead(name, at, len, &mut payload);
        self.read_buf = payload;
        let m = m?;
        if m < h.len as usize || !format::record_crc_ok(&hb, &h, &self.read_buf) {
            return Ok(Scan::Bad);
        }
        Ok(Scan::Record {
            seq: h.seq,
            len: h.len,
            next: off + format::record_bytes(h.len as usize),
        })
    }

    /// Reads like `Storage::read_at`, through the read-ahead buffer. Segments are
    /// append-only; the buffer is dropped wherever a file is cut or removed. It
    /// reads what the segment (`len` bytes known) holds past `off`, at most
    /// `READ_AHEAD_BYTES`: an edge that forwards a few events a minute keeps a
    /// buffer of their size, not 64 KiB.
    fn read_ahead(
        &mut self,
        name: &Rc<str>,
        off: u64,
        len: u64,
        out: &mut [u8],
    ) -> io::Result<usize> {
        if out.len() > READ_AHEAD_BYTES {
            return self.st.read_at(name, off, out);
        }
        let end = off + out.len() as u64;
        let hit = self.ra_name.as_ref().is_some_and(|n| Rc::ptr_eq(n, name))
            && off >= self.ra_off
            && end <= self.ra_off + self.ra.len() as u64;
        if !hit {
            self.ra_name = None;
            let want = usize::try_from(len.saturating_sub(off))
                .unwrap_or(usize::MAX)
                .clamp(out.len(), READ_AHEAD_BYTES);
            self.ra.resize(want, 0);
            let n = self.st.read_at(name, off, &mut self.ra);
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    self.ra.clear();
                    return Err(e);
                }
            };
            self.ra.truncate(n);
            self.ra_name = Some(Rc::clone(name));
            self.ra_off = off;
        }
        let from = (off - self.ra_off) as usize;
        let n = out.len().min(self.ra.len().saturating_sub(from));
        out[..n].copy_from_slice(&self.ra[from..from + n]);
        Ok(n)
    }

    fn forget_read_ahead(&mut self) {
        self.ra_name = None;
        self.ra.clear();
    }

    /// The offset of the next valid record (or mark) at or after `from`, if any.
    fn resync(
        &mut self,
        name: &Rc<str>,
        from: u64,
        len: u64,
        after: u64,
    ) -> io::Result<Option<u64>> {
        let mut chunk = [0u8; RESYNC_CHUNK_BYTES];
        let mut base = from;
        while base < len {
            let n = self.st.read_at(name, base, &mut chunk)?;
            if n == 0 {
                break;
            }
            for i in 0..n {
                let b0 = chunk[i];
                // At a chunk's end the second byte is not known yet: look.
                let b1 = chunk.get(i + 1).copied();
                if b0 == format::RECORD_MAGIC[0]
                    && b1.is_none_or(|b| b == format::RECORD_MAGIC[1] || b == format::MARK_MAGIC[1])
                {
                    let at = base + i as u64;
                    if let Scan::Record { .. } | Scan::Mark { .. } =
                        self.scan_at(name, at, len, after)?
                    {
                        return Ok(Some(at));
                    }
                }
            }
            base += n as u64;
        }
        Ok(None)
    }

    /// The segment records are appended to. Invariant: recovery and
    /// `rebuild_vanished` always leave one, and a segment is only dropped or
    /// deleted while another one is newer.
    fn active(&self) -> &Seg {
        self.segs
            .back()
            .expect("invariant: a spool always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Seg {
        self.segs
            .back_mut()
            .expect("invariant: a spool always has an active segment")
    }

    fn create_segment(&mut self) -> io::Result<()> {
        let first = self.next_seq;
        let name = format::segment_name(first);
        let prev_last = self.segs.back().map_or(first - 1, |s| s.last_seq);
        let header = SegmentHeader {
            prev_last,
            stream: self.stream,
            first_seq: first,
        }
        .encode();
        // The watermark follows the header in the same write: recovery reads
        // marks from the newest segment only.
        let mut head = header.to_vec();
        let mark = self.acked;
        if mark > 0 {
            format::encode_mark(mark, &mut head);
        }
        self.st.write_at(&name, 0, &head)?;
        self.st.sync(&name)?;
        self.st.sync_dir()?;
        self.stats.fsyncs += 1;
        self.marked = self.marked.max(mark);
        self.mark_pending = self.mark_pending.max(mark);
        self.note_marked();
        self.segs.push_back(Seg {
            first_seq: first,
            name: name.into(),
            bytes: head.len() as u64,
            last_seq: first - 1,
            prev_last,
        });
        self.synced_len = head.len() as u64;
        self.unsynced.clear();
        Ok(())
    }

    fn total_bytes(&self) -> u64 {
        self.segs.iter().map(|s| s.bytes).sum::<u64>() + self.buf.len() as u64
    }

    /// Appends one record and returns its seq. The record is in RAM until `flush`
    /// (the daemon flushes every loop iteration) and durable after `sync`.
    pub fn append(&mut self, payload: &[u8], now: Instant) -> Result<u64, AppendError> {
        if self.read_only {
            // `crd dump` opens the spool read-only and never appends: refuse
            // rather than write beside a running daemon.
            return Err(AppendError::Io(io::Error::other(
                "the spool is open read-only",
            )));
        }
        if payload.len() > self.cfg.max_record as usize {
            self.stats.too_large += 1;
            return Err(AppendError::TooLarge {
                len: payload.len(),
                max: self.cfg.max_record,
            });
        }
        if (self.unsynced.len() + self.buf.len()) as u64 >= self.cfg.unsynced_limit() {
            // Storage is failing: try once more before refusing.
            let _ = self.sync(now);
            if (self.unsynced.len() + self.buf.len()) as u64 >= self.cfg.unsynced_limit() {
                self.stats.refused_backlog += 1;
                return Err(AppendError::Backlog);
            }
        }
        let rec = format::record_bytes(payload.len());
        let active = self
            .segs
            .back()
            .expect("a spool always has an active segment");
        let holds_records = active.last_seq >= active.first_seq || !self.buf.is_empty();
        if holds_records && active.bytes + self.buf.len() as u64 + rec > self.cfg.segment {
            self.rotate(now).map_err(AppendError::Io)?;
        }
        while self.total_bytes() + rec > self.cfg.size && self.segs.len() > 1 {
            if self.keep && self.segs.front().is_some_and(|g| g.last_seq > self.acked) {
                self.stats.refused_full += 1;
                return Err(AppendError::Full);
            }
            self.drop_oldest(now).map_err(AppendError::Io)?;
        }
        if self.next_seq >= self.seq_lease {
            self.renew_lease().map_err(AppendError::Io)?;
        }
        let seq = self.next_seq;
        format::encode_record(seq, payload, &mut self.buf);
        self.buf_last_seq = seq;
        self.next_seq += 1;
        self.stats.appended += 1;
        self.active_mut().last_seq = seq;
        self.unsynced_since.get_or_insert(now);
        // The record is accepted from here on: a failing write or sync leaves it in
        // RAM for the next try (the caller asks `durable_seq` when it must know).
        if (self.buf.len() >= WRITE_BUFFER_BYTES || self.cfg.sync_always)
            && let Err(e) = self.flush(now)
        {
            log::warn!(
                "spool: write failed ({e}); {} bytes wait in memory",
                self.buf.len()
            );
        }
        if (self.cfg.sync_always || self.unsynced.len() as u64 >= self.cfg.sync_bytes)
            && let Err(e) = self.sync(now)
        {
            log::warn!("spool: sync failed ({e}); will retry");
        }
        Ok(seq)
    }

    /// Writes the write buffer to the active segment (the records then survive a
    /// crash of crd, not yet a power cut). On ENOSPC a forwarding spool drops its
    /// oldest segment (counted in `Stats::dropped`) and tries once more; a spool
    /// that keeps unacknowledged records (`keep_unacknowledged`) drops nothing and
    /// returns the error. A failed write keeps the buffer for later.
    pub fn flush(&mut self, now: Instant) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // Records are written anyway: the watermark rides along.
        self.push_mark();
        let mut tried_space = false;
        loop {
            let a = self.active();
            let (name, at) = (a.name.clone(), a.bytes);
            match self.st.write_at(&name, at, &self.buf) {
                Ok(()) => {
                    self.active_mut().bytes += self.buf.len() as u64;
                    self.unsynced.extend_from_slice(&self.buf);
                    // A buffer of only a mark holds no record: max, not `=`
                    // (`buf_last_seq` is 0 until the first append after a start).
                    self.written_seq = self.written_seq.max(self.buf_last_seq);
                    self.buf.clear();
                    return Ok(());
                }
                Err(e) => {
                    self.stats.io_errors += 1;
                    // A partial write may have grown the file: cut it back.
                    self.forget_read_ahead();
                    let _ = self.st.truncate(&name, at);
                    if e.kind() == io::ErrorKind::StorageFull
                        && !self.keep
                        && !tried_space
                        && self.segs.len() > 1
                    {
                        tried_space = true;
                        self.drop_oldest(now)?;
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Makes everything appended so far durable. First checks that the directory
    /// is still there (one `stat`): records written into the open file of a
    /// deleted directory would be lost at the next restart.
    pub fn sync(&mut self, now: Instant) -> io::Result<()> {
        if !self.read_only && self.st.vanished() {
            self.rebuild_vanished()?;
        }
        if !self.unsynced.is_empty() {
            // Records are synced anyway: the watermark rides along.
            self.push_mark();
        }
        self.flush(now)?;
        if self.unsynced.is_empty() {
            self.unsynced_since = None;
            return Ok(());
        }
        let name = self.active().name.clone();
        let r = self.st.sync(&name).or_else(|e| {
            // Never trust a retry on the same descriptor: reopen, cut back to the
            // last good length, rewrite from RAM, sync again.
            self.stats.io_errors += 1;
            log::warn!(
                "spool: fdatasync of {name} failed ({e}); rewriting {} bytes from memory",
                self.unsynced.len()
            );
            self.forget_read_ahead();
            self.st.reopen(&name);
            self.unwrite();
            self.st.truncate(&name, self.synced_len)?;
            self.flush(now)?;
            self.st.sync(&name)
        });
        if let Err(e) = r {
            self.stats.io_errors += 1;
            return Err(e);
        }
        self.stats.fsyncs += 1;
        self.stats.last_sync = Some(now);
        self.synced_len += self.unsynced.len() as u64;
        self.unsynced.clear();
        self.unsynced_since = None;
        self.durable_seq = self.written_seq;
        if self.mark_pending > self.marked {
            self.marked = self.mark_pending;
            self.note_marked();
            if let Err(e) = self.delete_acked_segments() {
                log::warn!("spool: deleting acknowledged segments: {e}");
            }
        }
        Ok(())
    }

    /// Takes the bytes written since the last good sync back into the write
    /// buffer, ahead of what waits there, as if they had never been written: the
    /// file is to be cut back to `synced_len`. Whatever fails next (the cut,
    /// the write, the sync), the segment's length and the buffer still say
    /// what the file must hold; a later write never leaves a hole where they
    /// were.
    fn unwrite(&mut self) {
        let synced = self.synced_len;
        self.active_mut().bytes = synced;
        let mut buf = std::mem::take(&mut self.unsynced);
        buf.extend_from_slice(&self.buf);
        self.buf = buf;
        self.buf_last_seq = self.buf_last_seq.max(self.written_seq);
        self.written_seq = self.durable_seq;
    }

    /// Once the durable watermark is the current one, no mark is due.
    fn note_marked(&mut self) {
        if self.marked >= self.acked {
            self.acks_unmarked = 0;
            self.acks_dirty_since = None;
        }
    }

    /// Writes no marks and commits no watermark on its own: it reaches disk only
    /// when the caller says (`write_checkpoint`), after what it must make durable
    /// first. The collector's journal: a retirement must not be durable before
    /// the registers' log and the events-done table that it follows.
    pub fn watermark_in_checkpoint_only(&mut self) {
        self.marks = false;
    }

    /// When full, refuses an append (`AppendError::Full`) rather than drop a
    /// record not yet acknowledged: the collector's journal, whose records the
    /// broker was told are safe. (A forwarding spool drops its oldest: an edge
    /// offline for days keeps its newest events.)
    pub fn keep_unacknowledged(&mut self) {
        self.keep = true;
    }

    /// Puts a mark of the current watermark into the write buffer, unless one
    /// already written or waiting says as much.
    fn push_mark(&mut self) {
        if self.marks && !self.read_only && self.acked > self.mark_pending {
            format::encode_mark(self.acked, &mut self.buf);
            self.mark_pending = self.acked;
        }
    }

    /// Makes the watermark durable on its own: a mark and one fdatasync (acks
    /// waited `sync_interval`, or `MARK_EVERY_ACKS` came, with no record to
    /// carry them).
    fn sync_mark(&mut self, now: Instant) -> io::Result<()> {
        self.push_mark();
        self.sync(now)?;
        self.note_marked();
        Ok(())
    }

    /// The directory vanished under the spool (`rm -rf`, a wiped overlay, another
    /// directory mounted over it): makes it again (0700, locked) and starts it over
    /// with what can still be reached: every record of the active segment, read
    /// through its open descriptor (else the written-but-unsynced ones kept in
    /// RAM), and the records not yet written. Unacknowledged records of the other
    /// segments are gone: counted in `Stats::lost`, reported through
    /// `take_loss_notice`, and the watermark moves over them so forwarding goes on.
    /// Records in flight are sent again (duplicates, never loss).
    fn rebuild_vanished(&mut self) -> io::Result<()> {
        let active = self
            .segs
            .back()
            .expect("a spool always has an active segment")
            .clone();
        let hdr = format::SEGMENT_HEADER_BYTES as u64;
        let (first, carried) = self.reachable_records(&active);
        let (lost, range) = self.unacked_below(first);
        self.st.forget_all();
        self.forget_read_ahead();
        self.st.recreate()?;
        self.stats.dir_recreated += 1;
        self.stats.io_errors += 1;
        let name = format::segment_name(first);
        let header = SegmentHeader {
            prev_last: first - 1,
            stream: self.stream,
            first_seq: first,
        }
        .encode();
        self.st.write_at(&name, 0, &header)?;
        self.st.write_at(&name, hdr, &carried)?;
        self.st.sync(&name)?;
        self.st.sync_dir()?;
        self.stats.fsyncs += 1;
        self.segs.clear();
        self.segs.push_back(Seg {
            first_seq: first,
            name: name.into(),
            bytes: hdr + carried.len() as u64,
            last_seq: active.last_seq.max(first - 1),
            prev_last: first - 1,
        });
        self.synced_len = hdr + carried.len() as u64;
        self.unsynced.clear();
        self.durable_seq = self.written_seq;
        if first - 1 > self.acked {
            self.acked = first - 1;
        }
        self.in_flight.clear();
        self.cur_seq = self.acked + 1;
        self.cur_seg = first;
        self.cur_off = hdr;
        if let Some((lo, hi)) = range {
            self.stats.lost += lost;
            let n = self.loss_notice.get_or_insert((lo, hi, 0));
            n.1 = hi;
            n.2 += lost;
        }
        log::error!(
            "spool: the directory vanished; made it again with the {} records still reachable \
             (from seq {first}); {lost} unsent records were lost with it",
            active.last_seq.saturating_sub(first - 1)
        );
        self.ckpt_exists = false;
        self.put_checkpoint(self.seq_lease.max(self.next_seq))?;
        Ok(())
    }

    /// What of the `active` segment can still be reached once its directory is
    /// gone: (its first seq, its records' bytes). Every record, read through the
    /// open descriptor; else the ones written since the last sync, kept in RAM,
    /// starting at the first of them (or of the write buffer, or `next_seq`).
    fn reachable_records(&mut self, active: &Seg) -> (u64, Vec<u8>) {
        let hdr = format::SEGMENT_HEADER_BYTES as u64;
        let written = (active.bytes - hdr) as usize;
        let mut carried = vec![0u8; written];
        let whole = self.st.read_at(&active.name, hdr, &mut carried).ok() == Some(written);
        if whole {
            return (active.first_seq, carried);
        }
        carried = std::mem::take(&mut self.unsynced);
        let first_of = |mut b: &[u8]| loop {
            let h = format::decode_record_header(b, format::RECORD_LIMIT_BYTES, b.len() as u64)?;
            if !h.mark {
                return Some(h.seq);
            }
            b = &b[format::RECORD_HEADER_BYTES..];
        };
        let first = first_of(&carried)
            .or_else(|| first_of(&self.buf))
            .unwrap_or(self.next_seq);
        (first, carried)
    }

    /// The unacknowledged records below `first`: how many, and the range from
    /// the lowest to the highest of them.
    fn unacked_below(&self, first: u64) -> (u64, Option<(u64, u64)>) {
        let mut lost = 0;
        let mut range: Option<(u64, u64)> = None;
        for seg in &self.segs {
            let lo = seg.first_seq.max(self.acked + 1);
            let hi = seg.last_seq.min(first.saturating_sub(1));
            if hi >= lo {
                lost += hi - lo + 1;
                range = Some((range.map_or(lo, |r| r.0), hi));
            }
        }
        (lost, range)
    }

    /// Records lost with a vanished directory since the last call: (first seq,
    /// last seq, count). The daemon turns it into an event.
    pub fn take_loss_notice(&mut self) -> Option<(u64, u64, u64)> {
        self.loss_notice.take()
    }

    fn rotate(&mut self, now: Instant) -> io::Result<()> {
        self.sync(now)?;
        self.create_segment()
    }

    fn drop_oldest(&mut self, now: Instant) -> io::Result<()> {
        let seg = self.segs.pop_front().expect("caller checked there are two");
        let lo = seg.first_seq.max(self.acked + 1);
        if seg.last_seq >= lo {
            let n = seg.last_seq - lo + 1;
            self.stats.dropped += n;
            self.stats.dropped_range = Some((lo, seg.last_seq));
            let notice = self.drop_notice.get_or_insert((lo, seg.last_seq, 0));
            notice.1 = seg.last_seq;
            notice.2 += n;
            log::warn!(
                "spool full: dropped records {lo}..={} ({n} not yet forwarded)",
                seg.last_seq
            );
        }
        self.forget_read_ahead();
        self.st.remove(&seg.name)?;
        self.st.sync_dir()?;
        if seg.last_seq > self.acked {
            self.acked = seg.last_seq;
            self.in_flight.retain(|&(s, _)| s > seg.last_seq);
            if self.marks {
                self.acks_dirty_since.get_or_insert(now);
            }
        }
        if self.cur_seq <= seg.last_seq {
            self.cur_seq = seg.last_seq + 1;
        }
        if self.cur_seg == seg.first_seq {
            self.cur_seg = self.segs.front().map_or(0, |s| s.first_seq);
            self.cur_off = format::SEGMENT_HEADER_BYTES as u64;
        }
        Ok(())
    }

    /// The seqs recovery skipped, resuming above the lease after an unclean
    /// stop: (first, last), once. The daemon turns it into an event, so a
    /// reader downstream does not take the jump for records lost.
    pub fn take_resume_notice(&mut self) -> Option<(u64, u64)> {
        self.resume_notice.take()
    }

    /// Records dropped since the last call: (first seq, last seq, count). The daemon
    /// turns it into an event.
    pub fn take_drop_notice(&mut self) -> Option<(u64, u64, u64)> {
        self.drop_notice.take()
    }

    /// Deletes the segments wholly below the durable watermark.
    fn delete_acked_segments(&mut self) -> io::Result<()> {
        let mut removed = false;
        while self.segs.len() > 1 && self.segs[0].last_seq <= self.marked {
            let seg = self.segs.pop_front().expect("len > 1");
            self.forget_read_ahead();
            self.st.remove(&seg.name)?;
            removed = true;
            if self.cur_seg == seg.first_seq {
                self.cur_seg = self.segs.front().map_or(0, |s| s.first_seq);
                self.cur_off = format::SEGMENT_HEADER_BYTES as u64;
            }
        }
        if removed {
            self.st.sync_dir()?;
        }
        Ok(())
    }

    /// The next durable, unread record: (seq, payload). Corrupt records are skipped
    /// and counted; `None` when the reader has caught up with what is durable.
    pub fn read_next(&mut self) -> Result<Option<(u64, &[u8])>, SpoolError> {
        loop {
            if self.cur_seq > self.durable_seq || self.in_flight.len() >= MAX_IN_FLIGHT {
                return Ok(None);
            }
            let Some(i) = self.reader_segment() else {
                return Ok(None);
            };
            let seg = &self.segs[i];
            let (name, len) = (seg.name.clone(), seg.bytes);
            let after = self
                .cur_seq
                .saturating_sub(1)
                .min(seg.first_seq.saturating_sub(1));
            let scanned = match self.scan_at(&name, self.cur_off, len, after) {
                Ok(s) => s,
                Err(e) if !self.read_only && self.st.vanished() => {
                    // A segment read fails because the directory is gone: start
                    // over with what can be reached, and read on from there.
                    log::warn!("spool: reading {name}: {e}");
                    self.rebuild_vanished()
                        .map_err(io_err("recreating the directory"))?;
                    continue;
                }
                Err(e) => return Err(io_err(&*name)(e)),
            };
            match scanned {
                Scan::Record {
                    seq,
                    len: plen,
                    next,
                } => {
                    if seq > self.durable_seq {
                        return Ok(None);
                    }
                    self.cur_off = next;
                    if seq < self.cur_seq {
                        continue;
                    }
                    self.cur_seq = seq + 1;
                    if !self.read_only {
                        self.in_flight.push_back((seq, false));
                    }
                    return Ok(Some((seq, &self.read_buf[..plen as usize])));
                }
                Scan::Mark { next, .. } => self.cur_off = next,
                Scan::End => self.cur_off = len,
                Scan::Bad => self.skip_corrupt(&name, len, after)?,
            }
        }
    }

    /// Moves the reader to the segment that holds what it reads next, past a
    /// segment gone (dropped or fully acked: to the oldest left) or read to its
    /// end (to the next): that segment's index, or `None` past the newest one.
    fn reader_segment(&mut self) -> Option<usize> {
        loop {
            let Some(i) = self.segs.iter().position(|s| s.first_seq == self.cur_seg) else {
                let s = self.segs.front()?;
                self.cur_seg = s.first_seq;
                self.cur_off = format::SEGMENT_HEADER_BYTES as u64;
                continue;
            };
            let seg = &self.segs[i];
            if self.cur_off < seg.bytes && seg.last_seq >= self.cur_seq {
                return Some(i);
            }
            let next = self.segs.get(i + 1)?;
            self.cur_seg = next.first_seq;
            self.cur_off = format::SEGMENT_HEADER_BYTES as u64;
        }
    }

    /// Counts and logs the corrupt record at the reader's offset in segment
    /// `name` (`len` bytes) and moves the reader to the next valid one, or to
    /// the segment's end.
    fn skip_corrupt(&mut self, name: &Rc<str>, len: u64, after: u64) -> Result<(), SpoolError> {
        self.stats.corrupt += 1;
        log::warn!(
            "spool: corrupt record in {name} at byte {}; skipping it",
            self.cur_off
        );
        match self
            .resync(name, self.cur_off + 1, len, after)
            .map_err(io_err(&**name))?
        {
            Some(next) => self.cur_off = next,
            None => self.cur_off = len,
        }
        Ok(())
    }

    /// Moves the reader back to the oldest unacknowledged record (after a reconnect).
    pub fn rewind(&mut self) {
        self.in_flight.clear();
        self.cur_seq = self.acked + 1;
        self.cur_seg = self.segs.front().map_or(0, |s| s.first_seq);
        self.cur_off = format::SEGMENT_HEADER_BYTES as u64;
    }

    /// Acknowledges `seq`, a record `read_next` returned. The watermark moves only
    /// over a prefix of read records that are all acknowledged; it is made durable
    /// with the next sync (or on its own, see `MARK_EVERY_ACKS`), and segments
    /// wholly below it are deleted then. Unknown seqs are ignored.
    pub fn ack(&mut self, seq: u64, now: Instant) -> io::Result<()> {
        let Ok(i) = self.in_flight.binary_search_by_key(&seq, |&(s, _)| s) else {
            return Ok(());
        };
        self.in_flight[i].1 = true;
        let mut moved = false;
        while let Some(&(s, true)) = self.in_flight.front() {
            self.in_flight.pop_front();
            self.acked = s;
            moved = true;
            self.acks_unmarked += 1;
        }
        if !moved {
            return Ok(());
        }
        if !self.marks {
            return Ok(()); // the caller writes the checkpoint
        }
        self.acks_dirty_since.get_or_insert(now);
        if self.acks_unmarked >= MARK_EVERY_ACKS {
            self.acks_unmarked = 0;
            self.sync_mark(now)?;
        } else if self.acked >= self.mark_pending + MARK_WRITE_ACKS {
            self.push_mark();
            self.flush(now)?;
        }
        Ok(())
    }

    /// Reserves the next `SEQ_LEASE` seqs in the checkpoint before any is used.
    fn renew_lease(&mut self) -> io::Result<()> {
        let lease = self.next_seq + SEQ_LEASE;
        self.put_checkpoint(lease)?;
        self.seq_lease = lease;
        Ok(())
    }

    /// Writes the watermark (and the current seq lease) to the checkpoint, then
    /// deletes the segments wholly below the watermark. For a caller that needs
    /// the watermark durable at once (the collector's journal).
    pub fn write_checkpoint(&mut self) -> io::Result<()> {
        self.put_checkpoint(self.seq_lease.max(self.next_seq))?;
        self.delete_acked_segments()
    }

    fn put_checkpoint(&mut self, next_seq: u64) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        let c = Checkpoint {
            epoch: self.ckpt_epoch + 1,
            acked: self.acked,
            next_seq,
            stream: self.stream,
        };
        let slot = (c.epoch % 2) * format::CHECKPOINT_SLOT_BYTES as u64;
        self.st.write_at(CHECKPOINT_FILE, slot, &c.encode())?;
        self.st.sync(CHECKPOINT_FILE)?;
        if !self.ckpt_exists {
            self.st.sync_dir()?;
            self.ckpt_exists = true;
        }
        self.stats.fsyncs += 1;
        self.ckpt_epoch = c.epoch;
        self.marked = self.marked.max(c.acked);
        self.mark_pending = self.mark_pending.max(c.acked);
        self.note_marked();
        Ok(())
    }

    /// Syncs when the group-commit age is reached, or the acks' (a mark). After a
    /// failure the next try waits `RETRY_INTERVAL`, so a dead disk costs one
    /// attempt a second, not a spinning loop.
    pub fn handle_timer(&mut self, now: Instant) -> io::Result<()> {
        if self.retry_at.is_some_and(|t| now < t) {
            return Ok(());
        }
        self.retry_at = None;
        let r = (|| {
            if self
                .unsynced_since
                .is_some_and(|t| now >= t + self.cfg.sync_interval)
            {
                self.sync(now)?;
            }
            if self
                .acks_dirty_since
                .is_some_and(|t| now >= t + self.cfg.sync_interval)
            {
                self.sync_mark(now)?;
            }
            Ok(())
        })();
        if r.is_err() {
            self.retry_at = Some(now + RETRY_INTERVAL);
        }
        r
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let a = self.unsynced_since.map(|t| t + self.cfg.sync_interval);
        let b = self.acks_dirty_since.map(|t| t + self.cfg.sync_interval);
        let due = match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match (due, self.retry_at) {
            (Some(d), Some(r)) => Some(d.max(r)),
            (d, _) => d,
        }
    }

    /// Sync and checkpoint (with the exact next seq: no gap), for shutdown.
    pub fn close(&mut self, now: Instant) -> io::Result<()> {
        self.sync(now)?;
        self.put_checkpoint(self.next_seq)?;
        self.seq_lease = self.next_seq;
        self.delete_acked_segments()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    pub fn stream(&self) -> u64 {
        self.stream
    }
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
    pub fn acked(&self) -> u64 {
        self.acked
    }
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }
    /// Highest seq written to the segment file (survives a crash of crd).
    pub fn written_seq(&self) -> u64 {
        self.written_seq
    }
    pub fn config(&self) -> &SpoolConfig {
        &self.cfg
    }
    /// Records appended and not yet acknowledged.
    pub fn depth(&self) -> u64 {
        // Seqs are contiguous within a segment; count each one's part above the
        // watermark (gaps between segments hold no records).
        self.segs
            .iter()
            .map(|g| {
                let lo = g.first_seq.max(self.acked + 1);
                (g.last_seq + 1).saturating_sub(lo)
            })
            .sum()
    }
    pub fn bytes(&self) -> u64 {
        self.total_bytes()
    }
    pub fn segments(&self) -> usize {
        self.segs.len()
    }
    pub fn storage(&mut self) -> &mut S {
        &mut self.st
    }
}

#[cfg(test)]
mod tests;
