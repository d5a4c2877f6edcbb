//! The one poll loop shape: a `mio::Poll` with one signalfd (SIGCHLD and the
//! signals crd answers) and the pipes of the runs in flight. The daemon and the foreground runs
//! (`crd check`, `crd -x`, `crd --install`'s children) turn the same loop; the
//! daemon only adds sources of its own (control socket, broker) and a deadline.
//!
//! One turn (`wait`): sleep until a source is ready or the deadline passes; read
//! every ready pipe within its budget, reap every exited child (one SIGCHLD can
//! stand for many exits), read pipes whose budget ran out last time; hand the
//! signals and every other ready token to the caller, in the order they came.
//! Nothing here decides anything: runs report `Finished`, the caller acts.

use crate::child::recipe::Recipe;
use crate::child::run::{Finished, Runs};
use crate::child::sys;
use libc::{SIGINT, SIGTERM};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// The signalfd (`sys::signal_fd`): SIGCHLD and the caller's signals.
const SIGNALS: Token = Token(0);
/// The first token a caller may use for its own sources.
pub const FIRST_FREE_TOKEN: usize = 1;
/// Readiness events taken per poll call.
const EVENTS_CAPACITY: usize = 256;

/// What woke the loop, besides child pipes and exits (which `wait` handles).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    Signal(i32),
    /// A caller's source is ready; `readable` includes a closed or failed socket;
    /// `hung_up`: the peer closed entirely (EPOLLHUP), not only its sending side.
    Ready {
        token: Token,
        readable: bool,
        hung_up: bool,
    },
}

pub struct Poller {
    poll: Poll,
    /// The signalfd, readable while a signal of `watched` or SIGCHLD is pending.
    signals: OwnedFd,
    watched: Vec<i32>,
    taken: Vec<i32>,
    events: Events,
}

impl Poller {
    /// Blocks SIGCHLD and `signals` into one signalfd and registers it. Call
    /// before the first child is started. Dropping the poller gives `signals`
    /// their default action back.
    pub fn new(signals: &[i32]) -> io::Result<Poller> {
        let poll = Poll::new()?;
        let fd = sys::signal_fd(signals)?;
        poll.registry()
            .register(&mut SourceFd(&fd.as_raw_fd()), SIGNALS, Interest::READABLE)?;
        Ok(Poller {
            poll,
            signals: fd,
            watched: signals.to_vec(),
            taken: Vec::new(),
            events: Events::with_capacity(EVENTS_CAPACITY),
        })
    }

    pub fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// One turn of the loop: waits until `deadline` (none: until something is
    /// ready; at once while a pipe still has data past its read budget), then
    /// serves the runs and appends everything else to `woken`. Returns the time
    /// after the wake-up.
    pub fn wait(
        &mut self,
        runs: &mut Runs,
        deadline: Option<Instant>,
        woken: &mut Vec<Wake>,
    ) -> io::Result<Instant> {
        let timeout = if runs.has_pending_reads() {
            Some(Duration::ZERO)
        } else {
            deadline.map(|t| t.saturating_duration_since(Instant::now()))
        };
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Instant::now()),
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        let registry = self.poll.registry();
        let mut reap = false;
        for ev in self.events.iter() {
            match ev.token() {
                SIGNALS => {
                    sys::read_signals(self.signals.as_raw_fd(), &mut self.taken);
                    for sig in self.taken.drain(..) {
                        match sig {
                            libc::SIGCHLD => reap = true,
                            sig => woken.push(Wake::Signal(sig)),
                        }
                    }
                }
                t if runs.owns(t) => runs.handle_readable(registry, t),
                token => woken.push(Wake::Ready {
                    token,
                    readable: ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                    hung_up: ev.is_write_closed(),
                }),
            }
        }
        if reap {
            while let Some(r) = sys::reap_any() {
                runs.handle_exit(registry, &r, now);
            }
        }
        runs.handle_pending_reads(registry);
        Ok(now)
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        sys::unblock(&self.watched);
    }
}

/// Runs one child in the foreground to its end with the daemon's machinery (same
/// spawn, limits, timeout, kill and reaping): `crd check`, `crd -x`, and the
/// children of `crd --install`. SIGINT/SIGTERM to crd terminate the child's group.
pub fn run_once(recipe: &Recipe) -> io::Result<Finished> {
    let mut poller = Poller::new(&[SIGTERM, SIGINT])?;
    let mut runs = Runs::new(FIRST_FREE_TOKEN)?;
    let mut woken = Vec::new();
    runs.start(recipe, Instant::now());
    loop {
        if let Some(f) = runs.poll_finished() {
            return Ok(f);
        }
        let deadline = runs.poll_timeout();
        let now = poller.wait(&mut runs, deadline, &mut woken)?;
        if woken.drain(..).any(|w| matches!(w, Wake::Signal(_))) {
            runs.terminate_all(now);
        }
        runs.handle_timer(poller.registry(), now);
    }
}
