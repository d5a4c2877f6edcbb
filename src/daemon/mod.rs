//! The daemon: the one poll loop (`child::poller::Poller`) with the daemon's own
//! sources, and the carrying-out of what the pure parts decide.
//!
//! Inputs: signals (TERM, INT, HUP and CHLD through one signalfd),
//! child pipes, the control socket, the broker socket, and timers. The poll timeout
//! is the minimum of every component's `poll_timeout()`; nothing else wakes the loop,
//! so an idle crd sleeps until the next due check. The loop never sleeps, never waits
//! on a child and never reads what is not ready; what can still hold it (name
//! resolution, fdatasync, a reload's rescan) is listed in ARCHITECTURE.md.
//!
//! Data flow per wake-up: signals -> reap exits -> read pipes -> timeouts -> finished
//! runs -> `core::lifecycle` -> events to the outbox (the spool) and responses to
//! spawn -> due checks from the scheduler -> control requests and the broker -> the
//! outbox writes what came in this iteration and syncs when due.

mod ports;
mod wake;

use crate::child::poller::{FIRST_FREE_TOKEN, Poller, Wake};
use crate::child::recipe::{Host, Purpose, Recipe};
use crate::child::run::{Finished, Runs};
use crate::child::sys;
use crate::collect::{Action, Collector, PUMP_BUDGET_RECORDS, PUMP_SLICE_RECORDS};
use crate::command::edge::{self, Edge, Message};
use crate::command::relay::Relay;
use crate::core::config::Config;
use crate::core::decide::Outcome;
use crate::core::event::Kind;
use crate::core::lifecycle::{self, ModuleState, Next};
use crate::core::module::Module;
use crate::core::module::Role;
use crate::core::schedule::{Lateness, Scheduler};
use crate::core::status::{ModuleRow, Status};
use crate::host::clock::unix_ms;
use crate::host::control::{self, Control, Request, Response};
use crate::host::files::{load_config, node_name};
use crate::host::metrics::Metrics;
use crate::host::modules;
use crate::host::outbox::Outbox;
use crate::mqtt::forward::{Forwarder, RESOLVE_TIMEOUT};
use crate::mqtt::session::Up;
use crate::mqtt::wire;
use libc::{SIGHUP, SIGINT, SIGTERM};
use mio::Token;
use ports::EdgePort;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use wake::Part;

const CONTROL: Token = Token(FIRST_FREE_TOKEN);
const MQTT: Token = Token(FIRST_FREE_TOKEN + 1);
const CONTROL_CLIENTS: usize = FIRST_FREE_TOKEN + 2;
const RUNS: usize = CONTROL_CLIENTS + control::MAX_CLIENTS;
/// After SIGTERM/SIGINT, the longest crd waits for children before it exits anyway.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

pub struct Daemon {
    cfg: Config,
    node: String,
    euid: u32,
    /// This crd's own modules and their schedule.
    own: Own,
    runs: Runs,
    outbox: Outbox,
    forwarder: Forwarder,
    control: Option<Control>,
    poller: Poller,
    /// What takes messages from the broker besides the forwarder itself.
    bus: Bus,
    clock: Clock,
    /// The metrics file for Prometheus, written on its own timer.
    metrics: Metrics,
    stopping: Option<Instant>,
    /// A log level given on the command line (`-v`): it wins over `log_level` in
    /// the config, at start and at every reload.
    pinned_log_level: Option<log::LevelFilter>,
}

/// The modules this crd found, their states and counters (by the same index),
/// and their schedule.
struct Own {
    modules: Vec<Module>,
    stats: Vec<ModuleState>,
    sched: Scheduler,
    lateness: Lateness,
}

/// The parts fed by messages from the broker.
#[derive(Default)]
struct Bus {
    /// Subscribed modules' machinery, once a module subscribes.
    collector: Option<Collector>,
    /// Remote commands to this node, when `commands` names modules.
    commands: Option<Edge>,
    /// Commands `crd send` handed over, republished until accepted (with the
    /// collector).
    relay: Option<Relay>,
    /// Messages the broker delivered that no module asked for.
    unasked: u64,
}

/// The loop's clocks and counts.
struct Clock {
    started: Instant,
    wakeups: u64,
    /// The wall clock (unix ms), read once per loop turn with `now` (`turn`):
    /// what every component is handed, so they all see one time.
    wall: u64,
}

impl Daemon {
    /// Keeps `level` across reloads, whatever the config's `log_level` says.
    pub fn pin_log_level(&mut self, level: log::LevelFilter) {
        self.pinned_log_level = Some(level);
    }

    /// Opens the spool and the control socket. Fails (and crd exits 1) when the
    /// spool is locked by another crd, has a format this crd does not read, or
    /// cannot be created: running without it would lose every event.
    pub fn new(cfg: Config) -> io::Result<Daemon> {
        let poller = Poller::new(&[SIGTERM, SIGINT, SIGHUP])?;
        // Its message as a String: an io::Error of the error itself would link
        // the Debug of every variant (3.8 KB on aarch64) for nothing.
        let mut outbox =
            Outbox::open(&cfg.spool_dir, cfg.spool).map_err(|e| io::Error::other(e.to_string()))?;
        let node = node_name(&cfg);
        let stream = outbox.spool().stream();
        let now = Instant::now();
        let mut forwarder = Forwarder::new(cfg.mqtt.clone(), &node, stream, MQTT, now);
        if let Some(old) = crate::host::files::ha_node(&cfg.spool_dir, &node) {
            log::info!("node renamed from {old}: its Home Assistant entities are emptied");
            forwarder.renamed_from(&old);
        }
        let euid = sys::euid();
        let mut d = Daemon {
            node,
            euid,
            own: Own {
                modules: Vec::new(),
                stats: Vec::new(),
                sched: Scheduler::new(&[], cfg.max_parallel, now),
                lateness: Lateness::default(),
            },
            runs: Runs::new(RUNS)?,
            outbox,
            forwarder,
            control: None,
            poller,
            bus: Bus::default(),
            clock: Clock {
                started: now,
                wakeups: 0,
                wall: unix_ms(),
            },
            metrics: Metrics::new(cfg.metrics_file.as_deref(), cfg.metrics_interval),
            stopping: None,
            pinned_log_level: None,
            cfg,
        };
        d.open_commands(now);
        for line in crate::install::recover(&d.cfg.modules_dir) {
            log::warn!("modules_dir: {line}");
        }
        d.install_modules(now);
        match Control::bind(
            &d.cfg.control_socket,
            d.poller.registry(),
            CONTROL,
            CONTROL_CLIENTS,
        ) {
            Ok(mut c) => {
                c.set_max_body(d.cfg.spool.max_record as usize);
                d.control = Some(c);
                // Holding the socket, this is the one crd of this config: the
                // groups a killed one left beside it are its to end.
                let record = crate::child::groups::record_path(&d.cfg.control_socket);
                if let Err(e) = d.runs.take_over_groups(&record) {
                    log::warn!("{}: {e}; no record of process groups", record.display());
                }
            }
            Err(e @ control::BindError::InUse(_)) => return Err(io::Error::other(e.to_string())),
            // Status is a convenience: without it crd still does its job.
            Err(e) => log::error!("{e}; `crd status` will not work"),
        }
        Ok(d)
    }

    /// (Re)discovers modules and reconfigures the schedule, keeping each module's
    /// state, counters, next due time and any run in flight (`Scheduler::reconfigure`).
    fn install_modules(&mut self, now: Instant) {
        let scan = modules::discover(&self.cfg, self.euid);
        let mods = scan.modules;
        for w in scan.warnings {
            log::warn!("{w}");
        }
        // Each module keeps its state, counters and schedule by name.
        let from: Vec<Option<usize>> = mods.iter().map(|m| self.index(&m.name)).collect();
        let mut old_stats = std::mem::take(&mut self.own.stats);
        self.own.stats = from
            .iter()
            .map(|f| {
                f.map(|i| std::mem::take(&mut old_stats[i]))
                    .unwrap_or_default()
            })
            .collect();
        let intervals: Vec<Option<Duration>> = mods
            .iter()
            .map(|m| m.scheduled().then_some(m.settings.interval))
            .collect();
        self.own
            .sched
            .reconfigure(&intervals, &from, self.cfg.max_parallel, now);
        self.own.modules = mods;
        // A run of a module that was removed and is back (new to the schedule) is
        // still running: the module must not overlap it.
        let busy: Vec<String> = self.runs.iter().map(|(m, ..)| m.to_string()).collect();
        for name in busy {
            if let Some(i) = self
                .index(&name)
                .filter(|&i| self.own.modules[i].scheduled())
            {
                self.own.sched.mark_running(i);
            }
        }
        // The scheduled modules the forwarder announces: a removed one's
        // retained state (and discovery config) is cleared from the broker.
        // A new one has no state until its first check decides
        // (`module_finished`).
        let names: Vec<(&str, &'static str)> = self
            .own
            .modules
            .iter()
            .filter(|m| m.scheduled())
            .map(|m| (m.name.as_str(), m.settings.device_class))
            .collect();
        self.forwarder.set_modules(&names, now);
        self.install_collector(now);
        let enabled = self
            .own
            .modules
            .iter()
            .filter(|m| m.settings.enabled)
            .count();
        log::info!(
            "{} modules ({} enabled) from {}",
            self.own.modules.len(),
            enabled,
            self.cfg.modules_dir.display()
        );
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.own
            .modules
            .binary_search_by(|m| m.name.as_str().cmp(name))
            .ok()
    }

    /// Runs until SIGTERM/SIGINT; returns once every child is gone.
    pub fn run(&mut self) -> io::Result<()> {
        log::info!(
            "crd {} started: node {}, pid {}",
            env!("CARGO_PKG_VERSION"),
            self.node,
            std::process::id()
        );
        let mut woken = Vec::new();
        loop {
            let now = self.turn(Instant::now());
            self.tick(now);
            if let Some(t) = self.stopping {
                let done =
                    self.runs.is_empty() && self.forwarder.try_finish(self.poller.registry());
                if done || now >= t + SHUTDOWN_LIMIT {
                    if !done {
                        log::warn!(
                            "{} runs not reaped, {} publishes not acked; exiting anyway",
                            self.runs.len(),
                            self.forwarder.inflight()
                        );
                    }
                    if let Some(c) = self.bus.collector.as_mut() {
                        c.close(now);
                    }
                    self.outbox.close(now);
                    log::info!("stopped");
                    return Ok(());
                }
            }
            let deadline = self.next_deadline(now);
            self.runs.flush_record();
            let woke = self.poller.wait(&mut self.runs, deadline, &mut woken)?;
            let now = self.turn(woke);
            self.clock.wakeups += 1;
            for w in woken.drain(..) {
                match w {
                    Wake::Signal(SIGHUP) => {
                        let _ = self.reload(now, "SIGHUP");
                    }
                    Wake::Signal(sig) => self.begin_stop(now, sig),
                    Wake::Ready { token, hung_up, .. }
                        if self.control.as_ref().is_some_and(|c| c.owns(token)) =>
                    {
                        let reqs = match self.control.as_mut() {
                            Some(c) => c.handle_event(self.poller.registry(), token, hung_up, now),
                            None => Vec::new(),
                        };
                        self.answer(reqs, now);
                    }
                    Wake::Ready {
                        token, readable, ..
                    } if self.forwarder.owns(token) => {
                        self.forwarder.handle_event(
                            self.poller.registry(),
                            self.outbox.spool(),
                            readable,
                            now,
                        );
                        self.take_inbound(now);
                    }
                    Wake::Ready { .. } => {}
                }
            }
        }
    }

    /// The loop's clocks for this turn: `now` as given, the wall clock read.
    fn turn(&mut self, now: Instant) -> Instant {
        self.clock.wall = unix_ms();
        now
    }

    /// Timers, finished runs and due checks at `now`.
    fn tick(&mut self, now: Instant) {
        self.runs.handle_timer(self.poller.registry(), now);
        while let Some(f) = self.runs.poll_finished() {
            self.handle_finished(f, now);
        }
        if self.stopping.is_none() {
            self.own.sched.handle_timer(now);
            while let Some(start) = self.own.sched.poll_start() {
                self.own
                    .lateness
                    .record(now.saturating_duration_since(start.due));
                let r = Recipe::check(self.host(), &self.own.modules[start.slot])
                    .expect("invariant: only modules with a check are scheduled");
                self.start(&r, now);
            }
        }
        // Spawn failures finish at once; handle them in this same tick.
        while let Some(f) = self.runs.poll_finished() {
            self.handle_finished(f, now);
        }
        if let Some(c) = self.control.as_mut() {
            c.handle_timer(self.poller.registry(), now);
            let reqs = c.handle_pending_reads(self.poller.registry(), now);
            self.answer(reqs, now);
        }
        self.outbox.handle_timer(now);
        self.forwarder
            .handle_timer(self.poller.registry(), self.outbox.spool(), now);
        // Home Assistant's diagnostic sensors: the backlog and the last error
        // now (the forwarder bounds how often they go out).
        let backlog = self.outbox.spool().depth();
        self.forwarder
            .set_diag(backlog, self.outbox.last_error(), now);
        if self.forwarder.has_pending_input() {
            // Bytes left past the read budget: read on (edge-triggered, no new event).
            self.forwarder
                .handle_event(self.poller.registry(), self.outbox.spool(), true, now);
            self.take_inbound(now);
        }
        if let Some(c) = self.bus.collector.as_mut() {
            c.handle_timer(now, self.clock.wall);
            self.collector_actions(now);
        }
        if self.stopping.is_none() {
            self.collect(now);
            self.run_commands(now);
            if let Some(r) = self.bus.relay.as_mut() {
                r.pump(&mut self.forwarder, now, self.clock.wall);
            }
        }
        if let Some(name) = self.forwarder.poll_resolve() {
            let r = Recipe::resolver(name, RESOLVE_TIMEOUT);
            log::debug!("mqtt: resolving {name} in a child");
            self.runs.start(&r, now);
            // A spawn failure finishes at once.
            while let Some(f) = self.runs.poll_finished() {
                self.handle_finished(f, now);
            }
        }
        if self.metrics.due(now) {
            let text = self.status_of(now).to_prometheus();
            self.metrics.write(&text, now);
        }
    }

    /// The soonest any part needs a turn (`wake.rs`): the poll's timeout.
    /// While stopping, no check is due, and the shutdown's limit is.
    fn next_deadline(&self, now: Instant) -> Option<Instant> {
        // Called on each part's own type, not through `dyn Part`: no vtables,
        // and the small ones inline.
        let stop = self.stopping.map(|s| s + SHUTDOWN_LIMIT);
        [
            stop.map_or_else(|| self.own.sched.wake_at(now), Some),
            self.runs.wake_at(now),
            self.control.wake_at(now),
            self.bus.collector.wake_at(now),
            self.bus.commands.wake_at(now),
            self.bus.relay.wake_at(now),
            self.outbox.wake_at(now),
            self.forwarder.wake_at(now),
            self.metrics.wake_at(now),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// What every child of this daemon is told about it.
    fn host(&self) -> Host<'_> {
        Host {
            config: &self.cfg.path,
            node: &self.node,
        }
    }

    fn start(&mut self, r: &Recipe, now: Instant) {
        log::debug!("module {}: starting {:?}", r.module, r.role);
        self.runs.start(r, now);
    }

    /// Hands a finished run to the part that asked for it (its recipe's
    /// `Purpose`).
    fn handle_finished(&mut self, f: Finished, now: Instant) {
        match f.purpose {
            Purpose::Module => self.module_finished(f, now),
            Purpose::Command => {
                if let Some(e) = self.bus.commands.as_mut() {
                    let mut port = EdgePort {
                        outbox: &mut self.outbox,
                        cfg: &self.cfg,
                        euid: self.euid,
                    };
                    e.handle_finished(f, &mut port.at(now, self.clock.wall));
                    self.run_commands(now);
                }
            }
            Purpose::Collect(_) => {
                if let Some(c) = self.bus.collector.as_mut() {
                    c.handle_finished(f, &self.own.modules, now, self.clock.wall);
                    self.collect(now);
                }
            }
            Purpose::Resolve => self.resolved(f, now),
        }
    }

    /// The broker's name resolved in a child (`crd resolve NAME`): its
    /// addresses, one a line, to the forwarder.
    fn resolved(&mut self, f: Finished, now: Instant) {
        let result = match f.outcome {
            Outcome::Exited(0) => Ok(f
                .output
                .lines()
                .filter_map(|l| l.trim().parse::<SocketAddr>().ok())
                .collect()),
            Outcome::TimedOut => Err(format!(
                "no answer from the resolver within {} s",
                RESOLVE_TIMEOUT.as_secs()
            )),
            o => Err(format!(
                "{} ({})",
                f.output.lines().last().unwrap_or_default(),
                o.describe()
            )),
        };
        self.forwarder
            .handle_resolved(self.poller.registry(), self.outbox.spool(), result, now);
    }

    /// Carries out the lifecycle step of a module's finished run: log, append
    /// its event, then start the response or hand the module back to the
    /// scheduler.
    fn module_finished(&mut self, f: Finished, now: Instant) {
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
            crate::core::dur::ms(f.dur)
        );
        if f.stopped && f.role == Role::Check {
            // Cut short by crd's own shutdown: not the module's error, and no
            // verdict either (the check did not get to say).
            log::info!(
                "module {}: check cut short by the shutdown ({}); no event",
                f.module,
                f.outcome.describe()
            );
            self.own.sched.handle_done(i);
            return;
        }
        let (check, code) = (f.role == Role::Check, f.outcome.code());
        let a = lifecycle::finished(
            &self.own.modules[i],
            &mut self.own.stats[i],
            f.ran(),
            now,
            self.clock.wall,
        );
        let module = &self.own.modules[i].name;
        if let Some(w) = &a.warning {
            log::warn!("module {module}: {w}");
        }
        if let Some(held) = a.held_back {
            log::debug!("module {module}: condition present, no response: {held:?}");
        }
        let decided = check
            && self.own.modules[i].scheduled()
            && a.emit.as_ref().is_none_or(|e| e.kind != Kind::Error);
        if let Some(ev) = a.emit {
            let (kind, code, ts) = (ev.kind, ev.code, ev.ts_ms);
            let changed = matches!(kind, Kind::Fired | Kind::Cleared);
            let out = changed.then(|| wire::state_out(&ev.out).to_string());
            let seq = self.outbox.push(ev, now);
            if let Some(out) = out {
                let p = wire::state_json(kind == Kind::Fired, ts, Some(code), seq, &out);
                self.forwarder.set_state(module, p, now);
            }
        }
        // A check that decided gives a module with no state yet its first
        // (OFF unless it fired): until then the broker keeps the state it
        // had, so a restart does not flip a firing module ON, OFF, ON.
        if decided && !self.forwarder.has_state(module) {
            let p = wire::state_json(false, self.clock.wall, Some(code), None, "");
            self.forwarder.set_state(module, p, now);
        }
        match a.next {
            Next::Respond { output, code } => {
                let r = Recipe::response(self.host(), &self.own.modules[i], output, code)
                    .expect("the lifecycle responds only for a module with a response");
                self.start(&r, now);
            }
            Next::Done => self.own.sched.handle_done(i),
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
                log::set_max_level(self.pinned_log_level.unwrap_or(cfg.log_level));
                self.node = node_name(&cfg);
                self.cfg = Config {
                    control_socket: self.cfg.control_socket.clone(),
                    ..cfg
                };
                self.metrics
                    .configure(self.cfg.metrics_file.as_deref(), self.cfg.metrics_interval);
                self.open_commands(now);
                self.install_modules(now);
                Ok(())
            }
            Err(e) => {
                log::error!("reload failed, keeping the running config:\n{e}");
                self.install_modules(now);
                Err(e.to_string())
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
                .begin_stop(self.poller.registry(), self.outbox.spool(), now);
        }
    }

    /// Messages the broker delivered: to the collector, which journals them, and
    /// PUBACKs for those now durable (one write for the whole read). Without a
    /// collector a message here is one the broker sent unasked (a persistent
    /// session left by another client with the same id): counted and dropped,
    /// unacknowledged.
    fn take_inbound(&mut self, now: Instant) {
        let mut inbound = self.forwarder.take_inbound();
        if !inbound.is_empty() {
            self.route_inbound(&mut inbound, now);
        }
        // On every path, so the list's allocation is reused by the next read.
        self.forwarder.give_back_inbound(inbound);
    }

    /// Hands each inbound message to what wants it: the edge's commands, the
    /// relay's replies, the collector (in that order).
    fn route_inbound(&mut self, inbound: &mut Vec<(u64, Up)>, now: Instant) {
        if let Some(e) = self.bus.commands.as_mut() {
            let mut port = EdgePort {
                outbox: &mut self.outbox,
                cfg: &self.cfg,
                euid: self.euid,
            };
            let out = &mut port.at(now, self.clock.wall);
            inbound.retain(|(conn, up)| {
                let (topic, pkid, payload) = match up {
                    Up::Message(m) => (&m.topic, m.pkid, Ok(&m.payload[..])),
                    Up::Oversized { topic, size, pkid } => (topic, *pkid, Err(*size)),
                    _ => return true,
                };
                let Some(id) = e.id_of(topic) else {
                    return true;
                };
                let msg = Message {
                    conn: *conn,
                    pkid,
                    id,
                    payload,
                };
                e.handle(msg, out);
                false
            });
            for (conn, pkid) in e.after_input() {
                self.forwarder.puback(conn, pkid, now);
            }
            self.forwarder.flush_acks();
            self.run_commands(now);
            if inbound.is_empty() {
                return;
            }
        }
        if let Some(r) = self.bus.relay.as_mut() {
            // Replies to relayed commands: noted; passed on only if a module
            // subscribes to them.
            let modules = &self.own.modules;
            let forwarder = &mut self.forwarder;
            inbound.retain(|(conn, up)| match up {
                Up::Message(m) if r.is_reply(&m.topic) => {
                    r.observe(&m.payload);
                    if Collector::wants(modules, &m.topic) {
                        return true;
                    }
                    if let Some(p) = m.pkid {
                        forwarder.puback(*conn, p, now);
                    }
                    false
                }
                _ => true,
            });
            r.after_input();
            self.forwarder.flush_acks();
            if inbound.is_empty() {
                return;
            }
        }
        let Some(c) = self.bus.collector.as_mut() else {
            let n = inbound.len() as u64;
            self.bus.unasked = self.bus.unasked.saturating_add(n);
            log::debug!("mqtt: {n} messages nobody subscribed to; dropped");
            return;
        };
        for (conn, up) in inbound.drain(..) {
            c.handle_inbound(conn, up, &self.own.modules, now, self.clock.wall);
        }
        // One group commit for the whole read, then the PUBACKs it allows, sent
        // before the records are pumped: the broker sends the next messages
        // while this turn runs them, rather than after.
        c.after_input(now);
        self.collector_actions(now);
        self.collect(now);
    }

    /// Hands journaled messages to runs while collector slots are free, and
    /// carries out what the collector asks.
    fn collect(&mut self, now: Instant) {
        // In slices, each one's actions carried out before the next is taken.
        for _ in 0..PUMP_BUDGET_RECORDS / PUMP_SLICE_RECORDS {
            let Some(c) = self.bus.collector.as_mut() else {
                return;
            };
            c.pump(&self.own.modules, now, self.clock.wall);
            if !c.busy() {
                break;
            }
            self.collector_actions(now);
        }
        let Some(c) = self.bus.collector.as_mut() else {
            return;
        };
        let host = Host {
            config: &self.cfg.path,
            node: &self.node,
        };
        while let Some(r) = c.poll_start(host, &self.own.modules, now) {
            log::debug!("module {}: starting {:?} for a message", r.module, r.role);
            self.runs.start(&r, now);
        }
        self.collector_actions(now);
        let Some(c) = self.bus.collector.as_mut() else {
            return;
        };
        self.forwarder.set_paused(c.paused());
        if c.wants_redelivery(now) {
            self.forwarder
                .redeliver(self.poller.registry(), self.outbox.spool(), now);
        }
    }

    /// What the collector asked for: events spooled, PUBACKs sent (in one
    /// write), the fleet page put in place, progress markers published.
    fn collector_actions(&mut self, now: Instant) {
        let Some(c) = self.bus.collector.as_mut() else {
            return;
        };
        let mut acked = false;
        while let Some(a) = c.poll_action() {
            match a {
                Action::Emit(ev) => {
                    self.outbox.push(ev, now);
                }
                Action::Ack(conn, pkid) => {
                    self.forwarder.puback(conn, pkid, now);
                    acked = true;
                }
                Action::WritePage(path, html) => {
                    let r = crate::host::files::replace(&path, html.as_bytes(), 0o644);
                    c.page_written(&path, r, now);
                }
                Action::Publish(topic, payload) => {
                    self.forwarder.publish_now(&topic, &payload, now);
                }
                Action::Settled => self.forwarder.settled(now),
            }
        }
        if acked {
            self.forwarder.flush_acks();
        }
    }

    /// Opens the edge's side of remote commands when `commands` names modules
    /// (at start, or at the first reload that sets it); later reloads change the
    /// allowed modules and the key.
    fn open_commands(&mut self, now: Instant) {
        if let Some(e) = self.bus.commands.as_mut() {
            let key = self.cfg.command_key_file.as_deref().map(edge::read_key);
            e.configure(&self.cfg, key);
            return;
        }
        if self.cfg.commands.is_empty() {
            return;
        }
        if self.cfg.mqtt.broker.is_empty() {
            log::error!("commands is set but no broker is configured: no command can arrive");
            return;
        }
        let mut port = EdgePort {
            outbox: &mut self.outbox,
            cfg: &self.cfg,
            euid: self.euid,
        };
        match Edge::open(&self.cfg, &self.node, &mut port.at(now, self.clock.wall)) {
            Ok(e) => self.bus.commands = e,
            Err(e) => log::error!("remote commands are off: {e}"),
        }
    }

    /// Starts the next waiting command, if none runs.
    fn run_commands(&mut self, now: Instant) {
        let Some(e) = self.bus.commands.as_mut() else {
            return;
        };
        let host = Host {
            config: &self.cfg.path,
            node: &self.node,
        };
        let mut port = EdgePort {
            outbox: &mut self.outbox,
            cfg: &self.cfg,
            euid: self.euid,
        };
        if let Some(r) = e.start_next(host, &mut port.at(now, self.clock.wall)) {
            self.runs.start(&r, now);
        }
        // A spawn failure finishes at once.
        while let Some(f) = self.runs.poll_finished() {
            self.handle_finished(f, now);
        }
    }

    /// Opens the collector when a module subscribes (and tells the forwarder what
    /// to subscribe to, with the command topic); a reload adds new filters at once
    /// (a removed one stays subscribed until the broker forgets the session; its
    /// messages match no module and are acknowledged and counted).
    fn install_collector(&mut self, now: Instant) {
        let mut filters = Collector::filters(
            &self.own.modules,
            &self.cfg.mqtt.topic_prefix,
            self.cfg.fleet_html.is_some(),
        );
        if filters.is_empty() {
            if let Some(c) = self.bus.collector.as_mut() {
                c.configure(&self.own.modules);
            }
            if let Some(e) = &self.bus.commands {
                self.forwarder
                    .subscribe_to(vec![e.filter()], self.cfg.max_message, now);
            }
            return;
        }
        if let Some(e) = &self.bus.commands {
            filters.push(e.filter());
        }
        if self.bus.collector.is_none() {
            if self.cfg.mqtt.broker.is_empty() {
                log::error!(
                    "modules subscribe to {} but no broker is configured: they will not run",
                    filters.join(" ")
                );
                return;
            }
            match Collector::open(&self.cfg, &self.node, now) {
                Ok(c) => self.bus.collector = Some(c),
                Err(e) => {
                    log::error!("collector: {e}; subscribed modules will not run");
                    return;
                }
            }
            match Relay::open(&self.cfg.spool_dir, &self.cfg.mqtt.topic_prefix, now) {
                Ok(r) => self.bus.relay = Some(r),
                Err(e) => log::error!("relay: {e}; crd send publishes by itself"),
            }
        }
        if let Some(r) = &self.bus.relay {
            filters.push(r.filter());
        }
        if let Some(c) = self.bus.collector.as_mut() {
            // The rules' registers: from disk at start, pruned on a reload.
            c.configure(&self.own.modules);
            c.set_page(self.cfg.fleet_html.as_deref());
        }
        let joining = self.bus.collector.as_ref().is_some_and(|c| c.joining());
        self.forwarder
            .set_groups(Collector::groups(&self.own.modules), joining);
        self.forwarder
            .subscribe_to(filters, self.cfg.max_message, now);
    }

    /// Carries out control requests and sends their replies.
    fn answer(&mut self, reqs: Vec<(usize, Request)>, now: Instant) {
        const NO_COLLECTOR: &str = "this crd collects nothing (no module subscribes)";
        for (client, req) in reqs {
            let r = match req {
                Request::Status { json } => {
                    let s = self.status_of(now);
                    Response::Text(if json { s.to_json() } else { s.to_text() })
                }
                Request::Fleet { json } => match &self.bus.collector {
                    Some(c) => Response::Text(c.fleet(json, self.clock.wall)),
                    None => Response::Error(NO_COLLECTOR.into()),
                },
                Request::Register { module, key } => match &self.bus.collector {
                    Some(c) => c
                        .register(&module, key.as_deref(), self.clock.wall)
                        .map_or_else(|e| Response::Error(e.to_string()), Response::Text),
                    None => Response::Error(NO_COLLECTOR.into()),
                },
                Request::Reload => match self.reload(now, "control socket") {
                    Ok(()) => Response::Done(String::new()),
                    Err(e) => Response::Error(format!(
                        "modules rescanned, but the config was refused (the running one stays): {}",
                        e.lines().next().unwrap_or_default()
                    )),
                },
                Request::Emit {
                    suffix,
                    sync,
                    cause,
                    body,
                } => match self.outbox.emit(&suffix, &body, sync, cause, now) {
                    Ok(seq) => Response::Done(seq.to_string()),
                    Err(e) => Response::Error(e.to_string()),
                },
                Request::Send { node, body } => match self.bus.relay.as_mut() {
                    Some(r) => match r.queue(&node, &body, now) {
                        Ok(id) => {
                            r.pump(&mut self.forwarder, now, self.clock.wall);
                            Response::Done(id)
                        }
                        Err(e) => Response::Error(e.to_string()),
                    },
                    None => Response::Error(control::NO_RELAY.into()),
                },
                Request::Replies { id } => match &self.bus.relay {
                    Some(r) => r
                        .replies(id.as_deref())
                        .map_or_else(|e| Response::Error(e.to_string()), Response::Text),
                    None => Response::Error(control::NO_RELAY.into()),
                },
                Request::TooLarge(max) => Response::Error(format!(
                    "message too large: over spool_max_record ({max} bytes)"
                )),
                Request::Unknown(r) => Response::Error(format!(
                    "unknown request `{r}` (known: status, emit, reload, fleet, register, send, replies)"
                )),
            };
            if let Some(c) = self.control.as_mut() {
                c.reply(self.poller.registry(), client, &r, now);
            }
        }
    }

    /// What `crd status` prints (as lines and a table, or one JSON object)
    /// and the metrics file holds.
    fn status_of(&self, now: Instant) -> Status {
        let mut s = Status::new(env!("CARGO_PKG_VERSION"), &self.node, std::process::id());
        let l = &self.own.lateness;
        s.num("uptime_s", now.duration_since(self.clock.started).as_secs());
        s.num("modules", self.own.modules.len() as u64);
        s.num("running", self.runs.len() as u64);
        s.num("queued", self.own.sched.queued() as u64);
        s.count("wakeups", self.clock.wakeups);
        s.count("starts", u64::from(l.count()));
        s.num("lateness_p50_us", l.percentile_us(50));
        s.num("lateness_p99_us", l.percentile_us(99));
        s.num("lateness_max_us", l.max_us());
        s.count("cpu_self_us", sys::self_cpu_us());
        s.num("max_rss_kib", sys::max_rss_kib());
        self.outbox.status(&mut s, now);
        self.forwarder.status(&mut s, now);
        s.count("mqtt_unasked_messages", self.bus.unasked);
        if let Some(c) = &self.bus.collector {
            c.status(&mut s);
        }
        if let Some(e) = &self.bus.commands {
            e.status(&mut s);
        }
        if let Some(r) = &self.bus.relay {
            r.status(&mut s);
        }
        self.metrics.status(&mut s);
        for (i, (m, st)) in self.own.modules.iter().zip(&self.own.stats).enumerate() {
            let state = if !m.settings.enabled {
                "disabled"
            } else if self.own.sched.is_running(i) {
                "running"
            } else if st.decision.firing {
                "firing"
            } else {
                "ok"
            };
            s.modules.push(ModuleRow {
                name: m.name.clone(),
                state,
                runs: u64::from(st.runs),
                fired: u64::from(st.fired),
                responses: u64::from(st.responses),
                errors: u64::from(st.errors),
                overruns: u64::from(self.own.sched.overruns(i)),
                next_s: self
                    .own
                    .sched
                    .next_due(i)
                    .map(|t| t.saturating_duration_since(now).as_secs()),
                last: st.last.map(|(t, role, o)| {
                    (
                        format!("{} {}", role.as_str(), o.describe()),
                        now.saturating_duration_since(t).as_secs(),
                    )
                }),
            });
        }
        s
    }
}
