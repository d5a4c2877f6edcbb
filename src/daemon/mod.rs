//! The daemon: the one `mio::Poll`, and the carrying-out of what the pure parts decide.
//!
//! Inputs: signals (TERM, INT, HUP through signal-hook-mio; CHLD through a signalfd,
//! `sys::sigchld_fd`, which costs less per exit than a handler), child pipes, the
//! control socket, and timers. The poll timeout is the minimum of the scheduler's,
//! the runs' and the control socket's `poll_timeout()`; nothing else wakes the loop,
//! so an idle crd sleeps until the next due check. Nothing here blocks: no sleeps, no
//! blocking reads, no waiting on a child.
//!
//! Data flow per wake-up: signals -> reap exits -> read pipes -> timeouts -> finished
//! runs -> `decide` -> events to the outbox (the spool) and responses to spawn ->
//! due checks from the scheduler -> control requests -> the outbox writes what came
//! in this iteration and syncs when due.

use crate::child::run::{self, Finished, Role, Runs};
use crate::child::spawn::{Spec, Streams};
use crate::child::sys::{self, Limits};
use crate::core::config::{self, Config};
use crate::core::decide::{self, Outcome};
use crate::core::event::{Event, Kind};
use crate::core::schedule::{Lateness, Scheduler};
use crate::host::control::{self, Control, Request};
use crate::host::modules::{self, Module};
use crate::host::outbox::{Outbox, unix_ms};
use crate::mqtt::forward::Forwarder;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

const SIGNALS: Token = Token(0);
const CONTROL: Token = Token(1);
const MQTT: Token = Token(2);
/// The signalfd for SIGCHLD (`sys::sigchld_fd`).
const CHILD_EXITS: Token = Token(3);
const CONTROL_CLIENTS: usize = 4;
const RUNS: usize = CONTROL_CLIENTS + control::MAX_CLIENTS;
/// Readiness events taken per poll call.
const EVENTS_CAPACITY: usize = 256;
/// After SIGTERM/SIGINT, the longest crd waits for children before it exits anyway.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

/// Per-module counters and state, kept by name across reloads.
#[derive(Clone, Debug, Default)]
struct Stats {
    decision: decide::State,
    runs: u32,
    fired: u32,
    responses: u32,
    errors: u32,
    last: Option<(Instant, Role, Outcome)>,
}

pub struct Daemon {
    cfg: Config,
    node: String,
    euid: u32,
    modules: Vec<Module>,
    stats: Vec<Stats>,
    sched: Scheduler,
    runs: Runs,
    outbox: Outbox,
    forwarder: Forwarder,
    lateness: Lateness,
    control: Option<Control>,
    poll: Poll,
    started: Instant,
    wakeups: u64,
    stopping: Option<Instant>,
}

/// The node name: `node` from the config, else the kernel's hostname.
pub fn node_name(cfg: &Config) -> String {
    if !cfg.node.is_empty() {
        return cfg.node.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Reads and parses a config file; a missing file means all defaults.
pub fn load_config(path: &Path) -> Result<Config, String> {
    match modules::read_bounded(path, config::MAX_CONFIG_BYTES) {
        Ok(text) => config::parse_config(&text, path).map_err(|e| e.to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Config::defaults(path)),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

pub fn limits(s: &config::ModuleSettings) -> Limits {
    Limits {
        address_space: s.memory_limit,
        cpu_seconds: s.cpu_limit,
        open_files: crate::child::spawn::CHILD_OPEN_FILES,
        file_size: s.file_limit,
        processes: s.process_limit,
    }
}

impl Daemon {
    /// Opens the spool and the control socket. Fails (and crd exits 1) when the
    /// spool is locked by another crd, has a format this crd does not read, or
    /// cannot be created: running without it would lose every event.
    pub fn new(cfg: Config) -> io::Result<Daemon> {
        let poll = Poll::new()?;
        let mut outbox = Outbox::open(&cfg.spool_dir, cfg.spool).map_err(io::Error::other)?;
        let node = node_name(&cfg);
        let stream = outbox.spool().stream();
        let forwarder = Forwarder::new(cfg.mqtt.clone(), &node, stream, MQTT, Instant::now());
        let euid = sys::euid();
        let now = Instant::now();
        let mut d = Daemon {
            node,
            euid,
            modules: Vec::new(),
            stats: Vec::new(),
            sched: Scheduler::new(&[], cfg.max_parallel, now),
            runs: Runs::new(RUNS)?,
            outbox,
            forwarder,
            lateness: Lateness::default(),
            control: None,
            poll,
            started: now,
            wakeups: 0,
            stopping: None,
            cfg,
        };
        for line in crate::install::recover(&d.cfg.modules_dir) {
            log::warn!("modules_dir: {line}");
        }
        d.install_modules(now);
        match Control::bind(
            &d.cfg.control_socket,
            d.poll.registry(),
            CONTROL,
            CONTROL_CLIENTS,
        ) {
            Ok(mut c) => {
                c.set_max_body(d.cfg.spool.max_record as usize);
                d.control = Some(c);
            }
            Err(e @ control::BindError::InUse(_)) => return Err(io::Error::other(e.to_string())),
            // Status is a convenience: without it crd still does its job.
            Err(e) => log::error!("{e}; `crd status` will not work"),
        }
        Ok(d)
    }

    /// (Re)discovers modules and rebuilds the schedule, keeping each module's state
    /// and any run in flight.
    fn install_modules(&mut self, now: Instant) {
        let (mods, warnings) = modules::discover(&self.cfg, self.euid);
        for w in warnings {
            log::warn!("{w}");
        }
        let old: Vec<(String, Stats)> = self
            .modules
            .drain(..)
            .map(|m| m.name)
            .zip(self.stats.drain(..))
            .collect();
        self.stats = mods
            .iter()
            .map(|m| {
                old.iter()
                    .find(|(n, _)| *n == m.name)
                    .map(|(_, s)| s.clone())
                    .unwrap_or_default()
            })
            .collect();
        let intervals: Vec<Option<Duration>> = mods
            .iter()
            .map(|m| m.settings.enabled.then_some(m.settings.interval))
            .collect();
        self.sched = Scheduler::new(&intervals, self.cfg.max_parallel, now);
        self.modules = mods;
        let busy: Vec<String> = self.runs.iter().map(|(m, ..)| m.to_string()).collect();
        for name in busy {
            if let Some(i) = self.index(&name) {
                self.sched.mark_running(i);
            }
        }
        let enabled = self.modules.iter().filter(|m| m.settings.enabled).count();
        log::info!(
            "{} modules ({} enabled) from {}",
            self.modules.len(),
            enabled,
            self.cfg.modules_dir.display()
        );
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.modules
            .binary_search_by(|m| m.name.as_str().cmp(name))
            .ok()
    }

    /// Runs until SIGTERM/SIGINT; returns once every child is gone.
    pub fn run(&mut self) -> io::Result<()> {
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let exits = sys::sigchld_fd()?;
        self.poll.registry().register(
            &mut SourceFd(&exits.as_raw_fd()),
            CHILD_EXITS,
            Interest::READABLE,
        )?;
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        log::info!(
            "crd {} started: node {}, pid {}",
            env!("CARGO_PKG_VERSION"),
            self.node,
            std::process::id()
        );
        loop {
            let now = Instant::now();
            self.tick(now);
            if let Some(t) = self.stopping {
                let done = self.runs.is_empty() && self.forwarder.try_finish(self.poll.registry());
                if done || now >= t + SHUTDOWN_LIMIT {
                    if !done {
                        log::warn!(
                            "{} runs not reaped, {} publishes not acked; exiting anyway",
                            self.runs.len(),
                            self.forwarder.inflight()
                        );
                    }
                    self.outbox.close(now);
                    log::info!("stopped");
                    return Ok(());
                }
            }
            let timeout = if self.runs.has_pending_reads() {
                Some(Duration::ZERO)
            } else {
                self.next_deadline()
                    .map(|t| t.saturating_duration_since(Instant::now()))
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.wakeups += 1;
            let now = Instant::now();
            let mut reap = false;
            for ev in events.iter() {
                match ev.token() {
                    SIGNALS => {
                        for sig in signals.pending() {
                            match sig {
                                SIGHUP => {
                                    let _ = self.reload(now, "SIGHUP");
                                }
                                _ => self.begin_stop(now, sig),
                            }
                        }
                    }
                    CHILD_EXITS => {
                        sys::drain_signalfd(exits.as_raw_fd());
                        reap = true;
                    }
                    t if self.runs.owns(t) => self.runs.handle_readable(self.poll.registry(), t),
                    t if self.control.as_ref().is_some_and(|c| c.owns(t)) => {
                        self.handle_control(t, now)
                    }
                    t if self.forwarder.owns(t) => self.forwarder.handle_event(
                        self.poll.registry(),
                        self.outbox.spool(),
                        ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                        now,
                    ),
                    _ => {}
                }
            }
            if reap {
                while let Some(r) = sys::reap_any() {
                    self.runs.handle_exit(self.poll.registry(), &r, now);
                }
            }
            self.runs.handle_pending_reads(self.poll.registry());
        }
    }

    /// Timers, finished runs and due checks at `now`.
    fn tick(&mut self, now: Instant) {
        self.runs.handle_timer(self.poll.registry(), now);
        while let Some(f) = self.runs.poll_finished() {
            self.handle_finished(f, now);
        }
        if self.stopping.is_none() {
            self.sched.handle_timer(now);
            while let Some(start) = self.sched.poll_start() {
                self.lateness
                    .record(now.saturating_duration_since(start.due));
                self.start(start.slot, Role::Check, None, now);
            }
        }
        // Spawn failures finish at once; handle them in this same tick.
        while let Some(f) = self.runs.poll_finished() {
            self.handle_finished(f, now);
        }
        if let Some(c) = self.control.as_mut() {
            c.handle_timer(self.poll.registry(), now);
        }
        self.outbox.handle_timer(now);
        self.forwarder
            .handle_timer(self.poll.registry(), self.outbox.spool(), now);
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut t = [
            if self.stopping.is_none() {
                self.sched.poll_timeout()
            } else {
                None
            },
            self.runs.poll_timeout(),
            self.control.as_ref().and_then(Control::poll_timeout),
            self.stopping.map(|s| s + SHUTDOWN_LIMIT),
            self.outbox.poll_timeout(),
            self.forwarder.poll_timeout(),
        ];
        t.sort();
        t.into_iter().flatten().next()
    }

    fn start(&mut self, i: usize, role: Role, check: Option<(&str, i32)>, now: Instant) {
        let m = &self.modules[i];
        log::debug!("module {}: starting {:?}", m.name, role);
        let runs = &mut self.runs;
        with_module_start(&self.cfg.path, &self.node, m, role, check, |s| {
            runs.start(s, now)
        });
    }

    fn handle_finished(&mut self, f: Finished, now: Instant) {
        let Some(i) = self.index(&f.module) else {
            log::info!(
                "module {}: {:?} finished ({}) after the module was removed",
                f.module,
                f.role,
                f.outcome.describe()
            );
            return;
        };
        log::debug!(
            "module {}: {:?} {} in {} ms",
            f.module,
            f.role,
            f.outcome.describe(),
            f.dur.as_millis()
        );
        let dur_ms = u32::try_from(f.dur.as_millis()).unwrap_or(u32::MAX);
        let st = &mut self.stats[i];
        st.last = Some((now, f.role, f.outcome));
        let event = |kind: Kind, out: String| Event {
            ts_ms: unix_ms(),
            module: f.module.clone(),
            kind,
            code: f.outcome.code(),
            dur_ms,
            out,
        };
        match f.role {
            Role::Check => {
                st.runs = st.runs.saturating_add(1);
                let m = &self.modules[i];
                let d = decide::decide(
                    &m.settings,
                    &mut st.decision,
                    f.outcome,
                    m.response.is_some(),
                    now,
                );
                if let Some(held) = d.held_back {
                    log::debug!(
                        "module {}: condition present, no response: {held:?}",
                        f.module
                    );
                }
                match d.event {
                    Some(Kind::Error) => {
                        st.errors = st.errors.saturating_add(1);
                        log::warn!(
                            "module {}: check failed: {}",
                            f.module,
                            f.outcome.describe()
                        );
                        let out = join(&f.outcome.describe(), &f.output);
                        self.outbox.push(event(Kind::Error, out), now);
                    }
                    Some(kind) => {
                        if kind == Kind::Fired {
                            st.fired = st.fired.saturating_add(1);
                        }
                        self.outbox.push(event(kind, f.output.clone()), now);
                    }
                    None => {}
                }
                if d.respond {
                    self.start(i, Role::Response, Some((&f.output, f.outcome.code())), now);
                } else {
                    self.sched.handle_done(i);
                }
            }
            Role::Response | Role::Support => {
                st.responses = st.responses.saturating_add(1);
                if f.outcome != Outcome::Exited(0) {
                    log::warn!(
                        "module {}: response failed: {}",
                        f.module,
                        f.outcome.describe()
                    );
                }
                let out = if matches!(f.outcome, Outcome::Exited(_)) {
                    f.output
                } else {
                    join(&f.outcome.describe(), &f.output)
                };
                self.outbox.push(event(Kind::Response, out), now);
                self.sched.handle_done(i);
            }
        }
    }

    /// Re-reads the config and rescans the modules. A broken config is kept out
    /// (the running one stays) but the modules are rescanned all the same, so an
    /// installed or removed module is seen; `Err` says why the config was refused.
    fn reload(&mut self, now: Instant, why: &str) -> Result<(), String> {
        log::info!("{why}: reloading {}", self.cfg.path.display());
        match load_config(&self.cfg.path) {
            Ok(cfg) => {
                if cfg.control_socket != self.cfg.control_socket {
                    log::warn!("control_socket changed; the new path takes effect on restart");
                }
                if cfg.mqtt != self.cfg.mqtt
                    || cfg.spool != self.cfg.spool
                    || cfg.spool_dir != self.cfg.spool_dir
                {
                    log::warn!("spool and broker settings changed; they take effect on restart");
                }
                log::set_max_level(cfg.log_level);
                self.node = node_name(&cfg);
                self.cfg = Config {
                    control_socket: self.cfg.control_socket.clone(),
                    ..cfg
                };
                self.install_modules(now);
                Ok(())
            }
            Err(e) => {
                log::error!("reload failed, keeping the running config:\n{e}");
                self.install_modules(now);
                Err(e)
            }
        }
    }

    fn begin_stop(&mut self, now: Instant, sig: i32) {
        if self.stopping.is_none() {
            log::info!(
                "signal {sig}: stopping; terminating {} runs",
                self.runs.len()
            );
            self.stopping = Some(now);
            self.runs.terminate_all(now);
            self.forwarder
                .begin_stop(self.poll.registry(), self.outbox.spool(), now);
        }
    }

    fn handle_control(&mut self, t: Token, now: Instant) {
        let Some(c) = self.control.as_mut() else {
            return;
        };
        let reqs = c.handle_event(self.poll.registry(), t, now);
        for (client, req) in reqs {
            let text = match req {
                Request::Status => self.status(now),
                Request::Reload => match self.reload(now, "control socket") {
                    Ok(()) => "ok\n".to_string(),
                    Err(e) => format!(
                        "error: modules rescanned, but the config was refused (the running one stays): {}\n",
                        e.lines().next().unwrap_or_default()
                    ),
                },
                Request::Emit { suffix, sync, body } => {
                    match self.outbox.emit(&suffix, &body, sync, now) {
                        Ok(seq) => format!("ok {seq}\n"),
                        Err(e) => format!("error: {e}\n"),
                    }
                }
                Request::TooLarge(max) => {
                    format!("error: message too large: over spool_max_record ({max} bytes)\n")
                }
                Request::Unknown(r) => {
                    format!("error: unknown request `{r}` (known: status, emit, reload)\n")
                }
            };
            if let Some(c) = self.control.as_mut() {
                c.reply(self.poll.registry(), client, &text);
            }
        }
    }

    /// The text `crd status` prints.
    fn status(&self, now: Instant) -> String {
        let mut s = String::new();
        let l = &self.lateness;
        let _ = writeln!(
            s,
            "crd {} node {} pid {}",
            env!("CARGO_PKG_VERSION"),
            self.node,
            std::process::id()
        );
        let _ = writeln!(
            s,
            "uptime_s: {}",
            now.duration_since(self.started).as_secs()
        );
        let _ = writeln!(s, "modules: {}", self.modules.len());
        let _ = writeln!(s, "running: {}", self.runs.len());
        let _ = writeln!(s, "queued: {}", self.sched.queued());
        let _ = writeln!(s, "wakeups: {}", self.wakeups);
        let _ = writeln!(s, "starts: {}", l.count());
        let _ = writeln!(s, "lateness_p50_us: {}", l.percentile_us(50));
        let _ = writeln!(s, "lateness_p99_us: {}", l.percentile_us(99));
        let _ = writeln!(s, "lateness_max_us: {}", l.max_us());
        let _ = writeln!(s, "cpu_self_us: {}", sys::self_cpu_us());
        let _ = writeln!(s, "max_rss_kib: {}", sys::max_rss_kib());
        self.outbox.status(&mut s, now);
        self.forwarder.status(&mut s, now);
        let _ = writeln!(
            s,
            "\n{:<24} {:<8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8}  last",
            "MODULE", "STATE", "RUNS", "FIRED", "RESP", "ERRORS", "OVERRN", "NEXT_S"
        );
        for (i, (m, st)) in self.modules.iter().zip(&self.stats).enumerate() {
            let state = if !m.settings.enabled {
                "disabled"
            } else if self.sched.is_running(i) {
                "running"
            } else if st.decision.firing {
                "firing"
            } else {
                "ok"
            };
            let next = self
                .sched
                .next_due(i)
                .map(|t| t.saturating_duration_since(now).as_secs().to_string())
                .unwrap_or_else(|| "-".into());
            let last = st
                .last
                .map(|(t, role, o)| {
                    format!(
                        "{:?} {} {}s ago",
                        role,
                        o.describe(),
                        now.saturating_duration_since(t).as_secs()
                    )
                    .to_lowercase()
                })
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                s,
                "{:<24} {:<8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8}  {}",
                m.name,
                state,
                st.runs,
                st.fired,
                st.responses,
                st.errors,
                self.sched.overruns(i),
                next,
                last
            );
        }
        s
    }
}

/// The one definition of a module run (check or response), shared by the daemon and
/// `crd check`: the module's executable, directory, limits, and environment
/// (`CRD_CONFIG`, `CRD_MODULE`, `CRD_NODE`; for a response also `CRD_CHECK_OUTPUT`
/// and `CRD_CHECK_CODE` from `check`). `f` receives the start, borrowing all that.
pub fn with_module_start<R>(
    config: &Path,
    node: &str,
    m: &Module,
    role: Role,
    check: Option<(&str, i32)>,
    f: impl FnOnce(run::Start<'_>) -> R,
) -> R {
    let program = match role {
        Role::Response => m
            .response
            .as_deref()
            .expect("a response is only started for a module that has one"),
        _ => &m.check,
    };
    let code = check.map(|(_, c)| OsString::from(c.to_string()));
    let mut env: Vec<(&str, &OsStr)> = vec![
        ("CRD_CONFIG", config.as_os_str()),
        ("CRD_MODULE", OsStr::new(&m.name)),
        ("CRD_NODE", OsStr::new(node)),
    ];
    if let (Some((out, _)), Some(code)) = (check, code.as_ref()) {
        env.push(("CRD_CHECK_OUTPUT", OsStr::new(out)));
        env.push(("CRD_CHECK_CODE", code));
    }
    f(run::Start {
        module: &m.name,
        role,
        spec: Spec {
            program,
            args: &[],
            dir: &m.dir,
            env: &env,
            limits: limits(&m.settings),
            streams: Streams::Capture,
            own_group: true,
        },
        timeout: m.settings.timeout,
        output_limit: m.settings.output_limit,
    })
}

fn join(a: &str, b: &str) -> String {
    if b.is_empty() {
        a.to_string()
    } else {
        format!("{a}\n{b}")
    }
}

/// Runs one child in the foreground (`crd check`, `crd -x`) with the same machinery
/// as the daemon: own poll, SIGCHLD reaping, timeout and kill. SIGINT/SIGTERM to crd
/// terminate the child's group.
pub fn run_once(start: run::Start<'_>) -> io::Result<Finished> {
    let mut poll = Poll::new()?;
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;
    let exits = sys::sigchld_fd()?;
    poll.registry().register(
        &mut SourceFd(&exits.as_raw_fd()),
        CHILD_EXITS,
        Interest::READABLE,
    )?;
    let mut runs = Runs::new(RUNS)?;
    let mut events = Events::with_capacity(16);
    runs.start(start, Instant::now());
    loop {
        if let Some(f) = runs.poll_finished() {
            return Ok(f);
        }
        let timeout = if runs.has_pending_reads() {
            Some(Duration::ZERO)
        } else {
            runs.poll_timeout()
                .map(|t| t.saturating_duration_since(Instant::now()))
        };
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        let mut reap = false;
        for ev in events.iter() {
            if ev.token() == SIGNALS {
                if signals.pending().next().is_some() {
                    runs.terminate_all(now);
                }
            } else if ev.token() == CHILD_EXITS {
                sys::drain_signalfd(exits.as_raw_fd());
                reap = true;
            } else if runs.owns(ev.token()) {
                runs.handle_readable(poll.registry(), ev.token());
            }
        }
        if reap {
            while let Some(r) = sys::reap_any() {
                runs.handle_exit(poll.registry(), &r, now);
            }
        }
        runs.handle_pending_reads(poll.registry());
        runs.handle_timer(poll.registry(), now);
    }
}
