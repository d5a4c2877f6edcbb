//! The collector's journal side: a message in is appended to the journal (a
//! spool of its own), its PUBACK owed until the record is durable; a full or
//! failing journal refuses (never drops a record it acknowledged) and asks for
//! a redelivery once it has room; records retired reach the checkpoint at most
//! every `RETIRE_SYNC_INTERVAL`, after the logs that say what they fed and ran.
//! No clock read and no file named here: time comes in as `now`, the storage is
//! the spool's `S` (files in the daemon, memory in the tests), and the free
//! space a fault reports comes from the function the opener gives.

use crate::collect::fault;
use crate::host::logger::RateLimit;
use crate::spool::storage::Storage;
use crate::spool::{AppendError, Spool};
use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Unretired journal records past which the socket is not read.
pub const BACKLOG_RECORDS: u64 = 4096;
/// The journal's fill (its bytes on disk, of its size) past which the socket is
/// not read: the rest of its size takes what arrives before the pause holds (a
/// read's budget, 64 KiB of packets, a message whole).
pub const PAUSE_FILL_QUARTERS: u64 = 3;
/// After the journal refused a message, the soonest the daemon reconnects so the
/// broker sends it again (at most that often: a journal that keeps refusing
/// costs a reconnect a second, not a loop).
pub const REDELIVERY_WAIT: Duration = Duration::from_secs(1);
/// Records retired are made durable (the registers' and the table's logs
/// synced, then the journal's watermark in its checkpoint) at most this often:
/// three fsyncs an interval, not a loop turn. What a crash of crd replays past
/// the watermark is known done (the logs are written every turn) and runs
/// nothing again but a message that is not a crd event (at least once); a
/// power cut may run again what retired in this last interval.
pub const RETIRE_SYNC_INTERVAL: Duration = Duration::from_millis(50);

/// The journal, what it owes, and its faults.
pub struct Intake<S: Storage> {
    pub journal: Spool<S>,
    /// The journal's directory, for what a fault says.
    dir: PathBuf,
    /// Free bytes on the journal's file system (a fault's message says them).
    free_space: fn(&Path) -> Option<u64>,
    /// The disk refused the journal's writes (`fault.rs`): paused, retrying.
    pub faults: fault::Faults,
    /// A fault began: its `error` event, sent at the next `pump`.
    pub fault_event: Option<String>,
    /// PUBACKs owed once the record is durable: (journal seq, connection, pkid).
    acks_due: Vec<(u64, u64, u16)>,
    /// PUBACKs to send now (connection, pkid), of messages durable or that
    /// needed no journal; the daemon takes them before the other actions. 16
    /// bytes each: a read brings thousands, which as `Action`s (104 bytes)
    /// would pass through the cache at six times the size.
    pub ready: VecDeque<(u64, u16)>,
    /// The journal refused a message (not acknowledged) since the last reconnect.
    refused_at: Option<Instant>,
    log_refused: RateLimit,
    /// Since when records retired have waited for the journal's checkpoint
    /// (`None`: none wait).
    retired_since: Option<Instant>,
    /// Messages journaled and refused, reconnects asked for (`crd status`).
    pub journaled: u64,
    pub refused: u64,
    pub redeliveries: u64,
}

impl<S: Storage> Intake<S> {
    pub fn new(journal: Spool<S>, dir: PathBuf, free_space: fn(&Path) -> Option<u64>) -> Self {
        Intake {
            journal,
            dir,
            free_space,
            faults: fault::Faults::default(),
            fault_event: None,
            acks_due: Vec::new(),
            ready: VecDeque::new(),
            refused_at: None,
            log_refused: RateLimit::default(),
            retired_since: None,
            journaled: 0,
            refused: 0,
            redeliveries: 0,
        }
    }

    /// Appends `record` (a message on `topic`); its PUBACK (`ack`: connection,
    /// pkid) is owed once it is durable. A refusal (full, or the disk failing)
    /// is counted and logged at a bounded rate: the message is not
    /// acknowledged, and the broker sends it again after a reconnect
    /// (`wants_redelivery`).
    pub fn append(&mut self, record: &[u8], ack: Option<(u64, u16)>, topic: &str, now: Instant) {
        match self.journal.append(record, now) {
            Ok(seq) => {
                self.journaled += 1;
                if let Some((conn, p)) = ack {
                    self.acks_due.push((seq, conn, p));
                }
            }
            Err(e) => {
                if let AppendError::Io(io) = &e {
                    self.failed(io, now);
                }
                self.refused += 1;
                self.refused_at.get_or_insert(now);
                if self.log_refused.allow(now, "collector: journal refused") {
                    log::warn!("collector: journal refused a message on `{topic}`: {e}");
                }
            }
        }
    }

    /// The disk refused a journal write or sync: paused until a retry gets
    /// through (`fault.rs`); the first failure of a fault is logged, with the
    /// path and the free space, and becomes an `error` event.
    pub fn failed(&mut self, e: &io::Error, now: Instant) {
        let free = (self.free_space)(&self.dir);
        if let Some(text) = self.faults.failed(e, &self.dir, free, now) {
            log::error!(
                "collector: journal: {text}; reading nothing more from the broker and \
                 acknowledging nothing more until it writes again (retrying, at most every {} s)",
                fault::RETRY_MAX.as_secs()
            );
            self.fault_event = Some(format!("journal: {text}; paused until it writes again"));
        }
    }

    /// After a read's messages: one fdatasync for all of them, then the PUBACKs
    /// of every message now durable, into `ready`.
    pub fn after_input(&mut self, now: Instant) {
        if self.acks_due.is_empty() {
            return;
        }
        if let Err(e) = self.journal.sync(now) {
            self.failed(&e, now);
        }
        self.durable_acks();
    }

    /// The PUBACKs owed for messages now durable (a retry after a fault made
    /// them so), into `ready`.
    pub fn durable_acks(&mut self) {
        if self.acks_due.is_empty() {
            return;
        }
        let durable = self.journal.durable_seq();
        self.acks_due.retain(|&(seq, conn, pkid)| {
            let due = seq <= durable;
            if due {
                self.ready.push_back((conn, pkid));
            }
            !due
        });
    }

    /// Stop reading the broker's socket: the journal holds enough not yet run,
    /// or the disk refuses its writes.
    pub fn paused(&self) -> bool {
        self.faults.now.is_some()
            || self.journal.depth() > BACKLOG_RECORDS
            || self.journal.bytes() * 4 > self.journal.config().size * PAUSE_FILL_QUARTERS
    }

    /// Whether to reconnect now so the broker sends again what the journal
    /// refused: once it has room (not `paused`), `REDELIVERY_WAIT` after the
    /// first refusal since the last reconnect. True once per refusal spell.
    pub fn wants_redelivery(&mut self, now: Instant) -> bool {
        match self.refused_at {
            Some(t) if !self.paused() && now >= t + REDELIVERY_WAIT => {
                self.refused_at = None;
                self.redeliveries += 1;
                true
            }
            _ => false,
        }
    }

    /// Record `seq` is done: acknowledged in the journal, its checkpoint due
    /// within `RETIRE_SYNC_INTERVAL`.
    pub fn retire(&mut self, seq: u64, now: Instant) {
        if let Err(e) = self.journal.ack(seq, now) {
            log::warn!("collector: journal checkpoint: {e}");
        }
        self.retired_since.get_or_insert(now);
    }

    /// Every loop turn: a fault's retry when due, the journal's writes and
    /// syncs.
    pub fn handle_timer(&mut self, now: Instant) {
        if self.faults.retry_due(now) {
            match self.journal.sync(now) {
                Ok(()) => {
                    if let Some(d) = self.faults.cleared(now) {
                        log::info!(
                            "collector: journal {} writes again after {} ms; reading from the broker again",
                            self.dir.display(),
                            d.as_millis()
                        );
                    }
                }
                Err(e) => self.failed(&e, now),
            }
        }
        if let Err(e) = self
            .journal
            .flush(now)
            .and_then(|()| self.journal.handle_timer(now))
        {
            self.failed(&e, now);
        }
    }

    /// Whether the retired records' checkpoint is due at `now`.
    pub fn checkpoint_due(&self, now: Instant) -> bool {
        self.retired_since
            .is_some_and(|t| now >= t + RETIRE_SYNC_INTERVAL)
    }

    /// Writes the checkpoint once `logs` (the logs of what was done, synced
    /// first) went well; a failure is tried again an interval later.
    pub fn checkpoint(&mut self, logs: io::Result<()>, now: Instant) {
        match logs.and_then(|()| self.journal.write_checkpoint()) {
            Ok(()) => self.retired_since = None,
            Err(e) => {
                self.retired_since = Some(now);
                log::warn!("collector: journal checkpoint: {e}");
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let retire = self.retired_since.map(|t| t + RETIRE_SYNC_INTERVAL);
        // While paused, a finished run (a child's exit) wakes the loop instead.
        let redeliver = self
            .refused_at
            .filter(|_| !self.paused())
            .map(|t| t + REDELIVERY_WAIT);
        [
            retire,
            redeliver,
            self.faults.poll_timeout(),
            self.journal.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// On shutdown: the journal synced and its checkpoint written.
    pub fn close(&mut self, now: Instant) {
        if let Err(e) = self.journal.close(now) {
            log::error!("collector: closing the journal: {e}");
        }
    }
}
