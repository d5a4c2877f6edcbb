//! Runs in flight: spawned children, their output pipes, timeouts and exits, inside
//! the daemon's poll loop.
//!
//! `Runs` owns every running child. Inputs: `start`, `handle_readable(token)`,
//! `handle_exit(pid, status, now)`, `handle_timer(now)`; outputs: `poll_finished()`,
//! `poll_timeout()`, `has_pending_reads()`. It registers pipes with the poll registry
//! it is handed but never waits: a child is finished when its exit was reaped and its
//! pipe drained (EOF, or empty once the process has exited: a grandchild may hold the
//! pipe open forever, and that must not hold up the run).
//!
//! Timeout: SIGTERM to the process group at the deadline, SIGKILL to the group
//! `KILL_GRACE` later, and SIGKILL to the group as soon as a timed-out leader is
//! reaped, so grandchildren never outlive a timed-out run.

use crate::child::groups::Record;
use crate::child::recipe::{Purpose, Recipe};
use crate::child::spawn::Spawner;
use crate::child::sys::{self, Child, Reaped, WaitStatus};
use crate::core::decide::Outcome;
pub use crate::core::module::Role;
use crate::core::output::Capture;
use mio::{Interest, Registry, Token};
use std::collections::VecDeque;
use std::io::{self, Read};
use std::time::{Duration, Instant};

/// Time between SIGTERM and SIGKILL for a timed-out run or at shutdown.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// Bytes read from one pipe per readiness event before others get a turn.
pub const READ_BUDGET_BYTES: usize = 256 * 1024;
/// Bytes read from a pipe after its process exited (a writing grandchild cannot
/// keep the run alive by writing without end).
pub const FINAL_DRAIN_BYTES: usize = 256 * 1024;
/// A run's pipe joins the poll only once the run has lasted this long. A short check's
/// output waits in the pipe buffer (64 KiB on Linux) and is read when its exit is
/// reaped, so a typical run costs one wake-up (SIGCHLD) instead of two (EOF, then
/// SIGCHLD); a chatty check blocks on a full pipe for at most this long.
pub const PIPE_WATCH_AFTER: Duration = Duration::from_millis(20);
/// Size of the one read buffer shared by all runs.
const READ_CHUNK_BYTES: usize = 16 * 1024;

impl Finished {
    /// The run as the lifecycle takes it.
    pub fn ran(self) -> crate::core::lifecycle::Ran {
        crate::core::lifecycle::Ran {
            role: self.role,
            outcome: self.outcome,
            output: self.output,
            dur: self.dur,
        }
    }
}

/// What a finished run reports.
#[derive(Debug)]
pub struct Finished {
    pub id: usize,
    pub module: String,
    pub role: Role,
    /// Whom it is for, as its recipe said.
    pub purpose: Purpose,
    pub outcome: Outcome,
    pub output: String,
    pub started: Instant,
    pub dur: Duration,
    /// crd terminated it for its own shutdown (`terminate_all`) before it ended.
    pub stopped: bool,
}

#[derive(Debug)]
struct Run {
    module: String,
    role: Role,
    purpose: Purpose,
    pid: u32,
    /// Until reaped: the memory the child runs on until its exec.
    child: Option<Child>,
    /// Why the child did not get to exec, learned when it is reaped.
    exec_error: Option<String>,
    own_group: bool,
    pipe: Option<mio::unix::pipe::Receiver>,
    /// The pipe is registered with the poll (see `PIPE_WATCH_AFTER`).
    watched: bool,
    capture: Capture,
    started: Instant,
    deadline: Instant,
    /// Set once SIGTERM was sent: when SIGKILL follows.
    kill_at: Option<Instant>,
    /// SIGKILL was sent; no timer remains for this run.
    killed: bool,
    /// Terminated by `terminate_all` (crd's shutdown), not by its own timeout.
    stopped: bool,
    timed_out: bool,
    exit: Option<(WaitStatus, Instant)>,
}

pub struct Runs {
    spawner: Spawner,
    slab: Vec<Option<Run>>,
    token_base: usize,
    finished: VecDeque<Finished>,
    pending_reads: Vec<usize>,
    buf: Box<[u8; READ_CHUNK_BYTES]>,
    /// The daemon's record of its runs' process groups (`groups.rs`); none in
    /// the foreground runs (`crd check`, `crd -x`, `crd --install`).
    record: Option<Record>,
}

impl Runs {
    /// Pipes are registered as `Token(token_base + id)`.
    pub fn new(token_base: usize) -> io::Result<Runs> {
        Ok(Runs {
            spawner: Spawner::new()?,
            slab: Vec::new(),
            token_base,
            finished: VecDeque::new(),
            pending_reads: Vec::new(),
            buf: Box::new([0; READ_CHUNK_BYTES]),
            record: None,
        })
    }

    /// Kills the process groups a crd killed before it could end its runs left in
    /// the record at `path` (its children died with it, their descendants did
    /// not), and records this crd's groups there from now on. Call before the
    /// first run starts. Returns the groups killed; an error means no record is
    /// kept (and the runs go on without it).
    pub fn take_over_groups(&mut self, path: &std::path::Path) -> std::io::Result<Vec<u32>> {
        let (record, killed) = Record::take_over(path)?;
        self.record = Some(record);
        Ok(killed)
    }

    /// Sets slot `id` of the record, written at the next `flush_record`.
    fn record_slot(&mut self, id: usize, pgid: Option<u32>) {
        if let Some(r) = self.record.as_mut() {
            r.set(id, pgid);
        }
    }

    /// Writes the record's slots this loop turn changed (one `pwrite`); the daemon
    /// calls it before it sleeps. A failed write stops the record (logged once).
    pub fn flush_record(&mut self) {
        if let Some(r) = self.record.as_mut()
            && let Err(e) = r.flush()
        {
            log::warn!("record of process groups: {e}; no longer kept");
            self.record = None;
        }
    }

    /// Runs in flight.
    pub fn len(&self) -> usize {
        self.slab.iter().filter(|r| r.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `token` is one of ours.
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.token_base && token.0 < self.token_base + self.slab.len()
    }

    /// Spawns a run and returns its id. A spawn failure is not an error here: the run
    /// finishes at once as `Outcome::ExecFailed` with the reason as its output.
    ///
    /// An id is unique among the runs in flight and the finished ones not yet taken
    /// by `poll_finished`: its owner (the scheduler, the command edge, the
    /// collector) tells its runs apart by it, and a slot freed by a run whose
    /// `Finished` still waits in the queue must not name a new run.
    pub fn start(&mut self, s: &Recipe, now: Instant) -> usize {
        let id = match free_slot(&self.slab, |i| self.finished.iter().any(|f| f.id == i)) {
            Some(i) => i,
            None => {
                self.slab.push(None);
                self.slab.len() - 1
            }
        };
        match self.spawner.spawn(s) {
            Ok(sp) => {
                if s.own_group {
                    self.record_slot(id, Some(sp.child.pid));
                }
                self.slab[id] = Some(Run {
                    module: s.module.to_string(),
                    role: s.role,
                    purpose: s.purpose,
                    pid: sp.child.pid,
                    child: Some(sp.child),
                    exec_error: None,
                    own_group: s.own_group,
                    pipe: sp.output,
                    watched: false,
                    capture: Capture::new(s.output_limit),
                    started: now,
                    deadline: now + s.timeout,
                    kill_at: None,
                    killed: false,
                    stopped: false,
                    timed_out: false,
                    exit: None,
                });
            }
            Err(e) => {
                let output = format!("cannot start {}: {e}", s.program.display());
                self.finished.push_back(Finished {
                    id,
                    module: s.module.to_string(),
                    role: s.role,
                    purpose: s.purpose,
                    outcome: Outcome::ExecFailed,
                    output,
                    started: now,
                    dur: Duration::ZERO,
                    stopped: false,
                });
            }
        }
        id
    }

    /// The pipe of `token` is readable: drain it within the read budget.
    pub fn handle_readable(&mut self, registry: &Registry, token: Token) {
        let id = token.0 - self.token_base;
        self.read(registry, id, READ_BUDGET_BYTES);
    }

    /// Reads pipes that still had data when their budget ran out.
    pub fn handle_pending_reads(&mut self, registry: &Registry) {
        for id in std::mem::take(&mut self.pending_reads) {
            self.read(registry, id, READ_BUDGET_BYTES);
        }
    }

    pub fn has_pending_reads(&self) -> bool {
        !self.pending_reads.is_empty()
    }

    /// Reads up to `budget` bytes; returns true once the pipe is at EOF or gone.
    fn read(&mut self, registry: &Registry, id: usize, budget: usize) -> bool {
        let Some(Some(run)) = self.slab.get_mut(id) else {
            return true;
        };
        let Some(pipe) = run.pipe.as_mut() else {
            return true;
        };
        let mut left = budget;
        let eof = loop {
            if left == 0 {
                if !self.pending_reads.contains(&id) {
                    self.pending_reads.push(id);
                }
                break false;
            }
            let n = left.min(self.buf.len());
            match pipe.read(&mut self.buf[..n]) {
                Ok(0) => break true,
                Ok(k) => {
                    run.capture.push(&self.buf[..k]);
                    left -= k;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        if eof {
            if let Some(mut p) = run.pipe.take()
                && run.watched
            {
                let _ = registry.deregister(&mut p);
            }
            self.pending_reads.retain(|&x| x != id);
        }
        self.try_finish(registry, id, false);
        eof
    }

    /// A reaped child. Returns false if it is not one of ours.
    pub fn handle_exit(&mut self, registry: &Registry, reaped: &Reaped, now: Instant) -> bool {
        let pid = reaped.pid;
        let Some(id) = self
            .slab
            .iter()
            .position(|r| r.as_ref().is_some_and(|r| r.pid == pid))
        else {
            return false;
        };
        let run = self.slab[id].as_mut().expect("position() found a run here");
        run.exit = Some((reaped.status, now));
        if let Some(child) = run.child.take() {
            run.exec_error = self.spawner.release(child, reaped);
        }
        if run.kill_at.is_some() && run.own_group {
            // Timed out or shutting down: whatever is left of the group dies now,
            // while the pgid cannot yet have been reused.
            let _ = sys::kill_group(pid, libc::SIGKILL);
        }
        // Everything the process wrote before exiting is in the pipe already.
        self.read(registry, id, FINAL_DRAIN_BYTES);
        self.try_finish(registry, id, true);
        true
    }

    fn try_finish(&mut self, registry: &Registry, id: usize, exited_now: bool) {
        let Some(run) = self.slab[id].as_mut() else {
            return;
        };
        let Some((ws, at)) = run.exit else { return };
        if run.pipe.is_some() && !exited_now {
            return;
        }
        let mut run = self.slab[id].take().expect("checked above");
        if run.own_group {
            self.record_slot(id, None);
        }
        if let Some(mut p) = run.pipe.take() {
            // A descendant still holds the pipe: stop listening, do not wait for it.
            if run.watched {
                let _ = registry.deregister(&mut p);
            }
        }
        self.pending_reads.retain(|&x| x != id);
        let outcome = if run.exec_error.is_some() {
            Outcome::ExecFailed
        } else if run.timed_out {
            Outcome::TimedOut
        } else {
            match ws {
                WaitStatus::Exited(c) => Outcome::Exited(c),
                WaitStatus::Signaled(s) => Outcome::Signaled(s),
            }
        };
        self.finished.push_back(Finished {
            id,
            module: run.module,
            role: run.role,
            purpose: run.purpose,
            outcome,
            // A child that exited 127 before its exec: why, instead of its output.
            output: run.exec_error.unwrap_or_else(|| run.capture.render()),
            started: run.started,
            dur: at.saturating_duration_since(run.started),
            stopped: run.stopped,
        });
    }

    /// Starts watching pipes of runs older than `PIPE_WATCH_AFTER`, sends SIGTERM at
    /// deadlines and SIGKILL at the end of the grace period.
    pub fn handle_timer(&mut self, registry: &Registry, now: Instant) {
        for (id, run) in self.slab.iter_mut().enumerate() {
            let Some(run) = run else { continue };
            if let Some(p) = run
                .pipe
                .as_mut()
                .filter(|_| !run.watched && run.exit.is_none())
                && now >= run.started + PIPE_WATCH_AFTER
            {
                // Already-readable data raises an event at once on registration.
                match registry.register(p, Token(self.token_base + id), Interest::READABLE) {
                    Ok(()) => run.watched = true,
                    Err(e) => {
                        log::error!(
                            "module {}: cannot watch output pipe: {e}; killing the run",
                            run.module
                        );
                        run.killed = true;
                        signal(run, libc::SIGKILL);
                    }
                }
            }
            if run.exit.is_some() || run.killed {
                continue;
            }
            match run.kill_at {
                None if now >= run.deadline => {
                    log::warn!(
                        "module {}: {:?} timed out after {} ms; terminating its process group",
                        run.module,
                        run.role,
                        crate::core::dur::ms(now.saturating_duration_since(run.started))
                    );
                    run.timed_out = true;
                    signal(run, libc::SIGTERM);
                    run.kill_at = Some(now + KILL_GRACE);
                }
                Some(t) if now >= t => {
                    signal(run, libc::SIGKILL);
                    run.killed = true;
                }
                _ => {}
            }
        }
    }

    /// Shutdown: SIGTERM every run now, SIGKILL after `KILL_GRACE`.
    pub fn terminate_all(&mut self, now: Instant) {
        for run in self.slab.iter_mut().flatten() {
            if run.exit.is_none() && run.kill_at.is_none() {
                signal(run, libc::SIGTERM);
                run.kill_at = Some(now + KILL_GRACE);
                run.stopped = true;
            }
        }
    }

    pub fn poll_finished(&mut self) -> Option<Finished> {
        self.finished.pop_front()
    }

    /// The earliest deadline or kill time of a running child.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slab
            .iter()
            .flatten()
            .filter(|r| r.exit.is_none() && !r.killed)
            .map(|r| {
                let t = r.kill_at.unwrap_or(r.deadline);
                if r.pipe.is_some() && !r.watched {
                    t.min(r.started + PIPE_WATCH_AFTER)
                } else {
                    t
                }
            })
            .min()
    }

    /// (module, role, pid, started) of each run, for status.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Role, u32, Instant)> {
        self.slab
            .iter()
            .flatten()
            .map(|r| (r.module.as_str(), r.role, r.pid, r.started))
    }
}

fn signal(run: &Run, sig: libc::c_int) {
    let r = if run.own_group {
        sys::kill_group(run.pid, sig)
    } else {
        sys::kill_pid(run.pid, sig)
    };
    if let Err(e) = r {
        log::warn!("module {}: cannot signal pid {}: {e}", run.module, run.pid);
    }
}

/// The first slot with no run in it whose id is not `queued` (a `Finished` not
/// yet taken).
fn free_slot<T>(slab: &[Option<T>], queued: impl Fn(usize) -> bool) -> Option<usize> {
    (0..slab.len()).find(|&i| slab[i].is_none() && !queued(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run that ended while its `Finished` waits in the queue keeps its id: a
    /// run started meanwhile (the command edge starts one from within the loop
    /// that hands out finished runs) gets another, so each owner gets its own
    /// exit code (tests/commands.rs has the daemon-level test).
    #[test]
    fn a_slot_whose_finished_run_waits_in_the_queue_is_not_reused() {
        let slab = [Some(()), None, None];
        assert_eq!(free_slot(&slab, |_| false), Some(1));
        assert_eq!(free_slot(&slab, |i| i == 1), Some(2));
        assert_eq!(free_slot(&slab, |i| i != 0), None);
        assert_eq!(free_slot::<()>(&[], |_| false), None);
    }
}
