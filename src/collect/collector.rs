//! The collector: subscribed modules run once per matching message, at least
//! once end to end, on the central crd.
//!
//! Flow, all in the daemon's loop: the forwarder's session delivers messages
//! (`handle_inbound`); each one that a module subscribes to is appended to the
//! journal (a spool of its own under `spool_dir/journal`), and its PUBACK goes out
//! only once that record is durable, after one group-commit fdatasync for all the
//! messages of a read (`after_input`). The journal's reader then hands records to
//! runs (`pump`, `poll_start`): a module's check with the payload on stdin, then
//! its response when the check says so, through the same lifecycle as the edge
//! (`core::lifecycle`, with `trigger_after` and `cooldown` kept per module and
//! origin node). A record is retired (acknowledged in the journal) when every run
//! it started has finished; retirements reach the journal's checkpoint at most
//! every `RETIRE_SYNC_INTERVAL`, after the logs that say what they fed and ran.
//! After a crash the records past the checkpoint run again (a crd event done,
//! or a register fed, is known from those logs and runs or feeds nothing); what
//! was not yet acknowledged the broker sends again (a persistent session).
//!
//! Bounded: at most `max_parallel` collector runs at once, at most
//! `READ_AHEAD_RECORDS` records read from the journal and held in RAM, at most
//! `MAX_STATES` (module, origin) states; while the journal holds more than
//! `BACKLOG_RECORDS` unretired records, or is three quarters full, the daemon
//! stops reading the socket (`paused`) and the broker keeps the rest. A full
//! journal refuses a message rather than drop one it holds (acknowledged, so
//! the broker forgot it): the refused one is not acknowledged, and once the
//! journal has room again (`REDELIVERY_WAIT` after the refusal at the soonest)
//! the daemon reconnects, so the broker sends it again (`wants_redelivery`).

use crate::child::recipe::{Host, Recipe};
use crate::child::run::Finished;
use crate::collect::message::{self, Facts, Message, View};
use crate::collect::persist::Persist;
use crate::collect::{fault, origins, page, presence, rulestate};
use crate::core::config::{Config, SpoolConfig};
use crate::core::config::{Convention, RegisterBy};
use crate::core::decide::{self, Outcome};
use crate::core::event::{Event, Kind};
use crate::core::lifecycle::{self, ModuleState, Next, Ran};
use crate::core::module::{Module, Role};
use crate::core::output::terminal_safe;
use crate::core::status::{Status, Value};
use crate::core::topic;
use crate::host::logger::RateLimit;
use crate::host::outbox::Outbox;
use crate::mqtt::session::{Inbound, Up};
use crate::rules::register::{self, Registers, Spec};
use crate::rules::value;
use crate::spool::storage::FileStorage;
use crate::spool::{AppendError, Spool};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Records read from the journal and held (with their payload) until retired.
pub const READ_AHEAD_RECORDS: usize = 32;
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
/// Journal records `pump` takes in one loop turn at most.
pub const PUMP_BUDGET_RECORDS: usize = 4096;
pub use origins::MAX_STATES;
/// The collector's directory inside `spool_dir`: the journal (a spool of its own,
/// `journal/`), the table of events done and the registers (`state/`).
pub const COLLECT_DIR: &str = "collect";
/// The fleet page (`fleet_html`) is rewritten at most this often, when the fleet
/// changed.
pub const PAGE_INTERVAL: Duration = Duration::from_secs(5);
/// Records retired are made durable (the registers' and the table's logs
/// synced, then the journal's watermark in its checkpoint) at most this often:
/// three fsyncs an interval, not a loop turn. What a crash of crd replays past
/// the watermark is known done (the logs are written every turn) and runs
/// nothing again but a message that is not a crd event (at least once); a
/// power cut may run again what retired in this last interval.
pub const RETIRE_SYNC_INTERVAL: Duration = Duration::from_millis(50);

/// Which run of a message a job is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// The module's check (or, without one, a hit at once).
    Check,
    /// Decided without a run: a rule's condition stopped holding (false), or
    /// holds and the rule module has no check (true).
    Decided(bool),
    Response {
        output: String,
        code: i32,
    },
}

/// A rule module's key and value for one message: its `trigger_after` and
/// `cooldown` go by the key, and its runs get them as `CRD_REGISTER_KEY`,
/// `CRD_REGISTER_VALUE`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RegKey {
    key: String,
    value: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Job {
    seq: u64,
    module: String,
    step: Step,
    reg: Option<Box<RegKey>>,
}

/// What settles a check's outcome (or a decision made without a run): the
/// collector's per-origin state, borrowed apart from the record the outcome is
/// about (held, or read in place).
struct Decide<'a> {
    origins: &'a mut origins::Origins,
    checking: &'a mut Vec<(String, String)>,
    log_runs: &'a mut RateLimit,
}

impl Decide<'_> {
    /// The lifecycle's next step for module `m`'s `job` that `ran`, on a
    /// message from `origin` (`id` names it in a warning); `None` when nothing
    /// follows (fired already: once per crossing).
    #[allow(clippy::too_many_arguments)]
    fn decide(
        self,
        m: &Module,
        job: &Job,
        ran: Ran,
        origin: &str,
        id: &dyn Fn() -> String,
        outbox: &mut Outbox,
        now: Instant,
        wall_ms: u64,
    ) -> Option<Next> {
        // Only the decision state is kept per origin (the run counters are the
        // edge's business): it goes in and out of a ModuleState for the lifecycle.
        let rule = job.reg.is_some();
        if rule && job.step == Step::Check {
            self.checking
                .retain(|(cm, ck)| !(*cm == job.module && *ck == origin));
        }
        let a = self.origins.with(m, origin, now, |st| {
            if rule
                && st.firing
                && ran.role == Role::Check
                && decide::verdict(&m.settings, ran.outcome) == decide::Verdict::Hit
            {
                // Fired already (a check of an earlier message said so while
                // this one's ran): once per crossing.
                return None;
            }
            let mut ms = ModuleState {
                decision: std::mem::take(st),
                ..ModuleState::default()
            };
            let a = lifecycle::finished(m, &mut ms, ran, now, wall_ms);
            *st = ms.decision;
            Some(a)
        })?;
        if let Some(w) = &a.warning
            && self.log_runs.allow(now, "collector: failed runs")
        {
            log::warn!("module {}: {w} (message {})", m.name, id());
        }
        if let Some(ev) = a.emit {
            outbox.push(ev, now);
        }
        Some(a.next)
    }
}

/// A rule module's register and its counters for `crd status`.
struct Rule {
    regs: Registers,
    /// Messages that fed nothing (no value at `value`, not a number, out of range).
    skipped: u64,
    /// Messages after which the condition held.
    hits: u64,
}

/// The exit code a check under `c` gives for a hit or a clear: what a rule
/// decided without a run, or a module without a check, goes through the same
/// lifecycle as a check's exit.
fn synthetic(c: Convention, hit: bool) -> Outcome {
    match (c, hit) {
        (Convention::Exit, true) => Outcome::Exited(0),
        (Convention::Exit, false) => Outcome::Exited(1),
        (Convention::Nagios, true) => Outcome::Exited(2),
        (Convention::Nagios, false) => Outcome::Exited(0),
    }
}

/// A journal record being worked on.
struct Held {
    msg: Message,
    facts: Facts,
    /// Jobs of this record not yet done.
    left: u32,
}

/// Counters for `crd status`.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub received: u64,
    pub journaled: u64,
    pub unmatched: u64,
    pub own: u64,
    pub retained: u64,
    pub oversized: u64,
    pub refused: u64,
    /// Messages on a crd event topic that are not a crd event (run as they are).
    pub malformed_events: u64,
    /// Reconnects asked for so the broker sends refused messages again.
    pub redeliveries: u64,
    pub runs: u64,
    pub corrupt: u64,
    /// Messages a rule decided without a run.
    pub decided: u64,
    /// Fleet page writes, and those that failed.
    pub page_writes: u64,
    pub page_errors: u64,
}

pub struct Collector {
    journal: Spool<FileStorage>,
    journal_dir: std::path::PathBuf,
    /// The disk refused the journal's writes (`fault.rs`): paused, retrying.
    faults: fault::Faults,
    /// A fault began: its `error` event, sent at the next `pump`.
    fault_event: Option<String>,
    max_message: usize,
    max_parallel: usize,
    /// PUBACKs owed once the record is durable: (journal seq, connection, pkid).
    acks_due: Vec<(u64, u64, u16)>,
    /// The journal record being written or read, reused (at most one record:
    /// 1 MiB).
    record: Vec<u8>,
    /// The jobs of the record `pump` is on, reused (one per matching module).
    jobs: Vec<Job>,
    records: BTreeMap<u64, Held>,
    /// Checks to start, in journal order.
    ready: VecDeque<Job>,
    /// Responses to start, in the order their checks ended: they go before new
    /// checks, first come first served, so the oldest record is retired first
    /// (its journal watermark must move for a restart not to run it again).
    responses: VecDeque<Job>,
    /// (run id, job) of runs in flight.
    running: Vec<(usize, Job)>,
    origins: origins::Origins,
    /// Rule modules' registers, by module name.
    rules: BTreeMap<String, Rule>,
    /// (module, key) of rule checks queued or running: a message of the same key
    /// meanwhile starts no second check (at most one per record held and
    /// module).
    checking: Vec<(String, String)>,
    stats: Stats,
    /// `<prefix>/<node>/`: this crd's own topics. Its own events are never run
    /// (a module on `crd/+/event/#` would otherwise run on its own `fired`, again
    /// and again).
    own_topics: String,
    /// The topic prefix (`topic_prefix`), for status topics.
    prefix: String,
    fleet: presence::Fleet,
    /// Bounds on per-message log lines (and error events).
    log_bad: RateLimit,
    log_refused: RateLimit,
    /// The journal refused a message (not acknowledged) since the last reconnect.
    refused_at: Option<Instant>,
    log_runs: RateLimit,
    /// crd events already run, by (stream, seq), and what the registers were
    /// fed, on disk (`persist.rs`).
    persist: Persist<FileStorage>,
    /// A reload dropped rules: the registers' log is written whole at the next
    /// timer, so a restart does not feed them again.
    rules_dropped: bool,
    /// Journal records up to this seq fed the registers before the restart: a
    /// replay of them feeds nothing again.
    fed_through: u64,
    /// The highest journal seq fed (what a snapshot includes).
    fed_max: u64,
    /// Since when records retired have waited for the journal's checkpoint
    /// (`None`: none wait).
    retired_since: Option<Instant>,
    /// `pump` stopped at its budget with records left to read.
    busy: bool,
    /// The fleet page: where, the fleet's `changes` it last showed, when it may
    /// be written next.
    page: Option<std::path::PathBuf>,
    page_shown: Option<u64>,
    page_next: Instant,
    log_page: RateLimit,
    node: String,
}

/// The journal's spool settings: the spool's, with segments large enough for the
/// largest message and its topic.
pub fn journal_config(cfg: &Config) -> SpoolConfig {
    let max_record = (cfg.max_message as usize + topic::MAX_TOPIC_BYTES + 64) as u32;
    let segment = cfg
        .spool
        .segment
        .max(u64::from(max_record) + 4096)
        .min(crate::core::config::MAX_SPOOL_SEGMENT_BYTES);
    SpoolConfig {
        size: cfg.spool.size.max(4 * segment),
        segment,
        max_record: max_record.min(crate::core::config::SPOOL_RECORD_LIMIT_BYTES),
        ..cfg.spool
    }
}

/// An `error` event of module `collector`, to the edge spool.
fn push_error(outbox: &mut Outbox, now: Instant, wall_ms: u64, out: String) {
    let e = Event {
        ts_ms: wall_ms,
        module: "collector".into(),
        kind: Kind::Error,
        code: 0,
        dur_ms: 0,
        out,
    };
    outbox.push(e, now);
}

impl Collector {
    /// Opens (creating) the journal in `spool_dir/journal` and recovers it: the
    /// records not yet retired will run.
    pub fn open(cfg: &Config, node: &str, now: Instant) -> Result<Collector, String> {
        let base = cfg.spool_dir.join(COLLECT_DIR);
        let dir = base.join("journal");
        let st = FileStorage::open(&dir).map_err(|e| format!("journal {}: {e}", dir.display()))?;
        let open = |d: &std::path::Path| {
            FileStorage::open(d).map_err(|e| format!("collector {}: {e}", d.display()))
        };
        let (persist, warnings) = Persist::open(open(&base.join("state"))?, open(&base)?)
            .map_err(|e| format!("collector {}: {e}", base.display()))?;
        for w in warnings {
            log::warn!("collector: {w}");
        }
        let stream = || 1;
        let (mut journal, rec) = Spool::open(st, journal_config(cfg), stream, false)
            .map_err(|e| format!("{e} (journal {})", dir.display()))?;
        // Its watermark follows the registers' log and the events-done table
        // (see `handle_timer`): written by this collector's checkpoint, never ahead.
        journal.watermark_in_checkpoint_only();
        journal.keep_unacknowledged();
        log::info!(
            "collector: journal {}: {} messages to run",
            dir.display(),
            rec.records_unacked
        );
        Ok(Collector {
            journal,
            journal_dir: dir,
            faults: fault::Faults::default(),
            fault_event: None,
            max_message: cfg.max_message as usize,
            max_parallel: cfg.max_parallel.max(1) as usize,
            acks_due: Vec::new(),
            record: Vec::new(),
            jobs: Vec::new(),
            records: BTreeMap::new(),
            ready: VecDeque::new(),
            responses: VecDeque::new(),
            running: Vec::new(),
            origins: origins::Origins::default(),
            rules: BTreeMap::new(),
            checking: Vec::new(),
            stats: Stats::default(),
            own_topics: format!("{}/{node}/", cfg.mqtt.topic_prefix),
            prefix: cfg.mqtt.topic_prefix.clone(),
            fleet: presence::Fleet::default(),
            log_bad: RateLimit::default(),
            log_refused: RateLimit::default(),
            refused_at: None,
            log_runs: RateLimit::default(),
            persist,
            rules_dropped: false,
            fed_through: 0,
            fed_max: 0,
            retired_since: None,
            busy: false,
            page: None,
            page_shown: None,
            page_next: now,
            log_page: RateLimit::default(),
            node: node.to_string(),
        })
    }

    /// Where the fleet page goes (`fleet_html`; `None`: no page). Written at the
    /// next timer.
    pub fn set_page(&mut self, path: Option<&std::path::Path>) {
        if self.page.as_deref() != path {
            self.page = path.map(std::path::Path::to_path_buf);
            self.page_shown = None;
        }
    }

    fn page_due(&self) -> Option<Instant> {
        (self.page.is_some() && self.page_shown != Some(self.fleet.changes))
            .then_some(self.page_next)
    }

    /// Renders the fleet page and puts it in place whole (written beside it,
    /// renamed over it; not synced: a view, rewritten within seconds), mode 0644
    /// for the web server that serves it.
    fn write_page(&mut self, now: Instant, wall_ms: u64) {
        let Some(path) = self.page.clone() else {
            return;
        };
        let own = page::Own {
            node: &self.node,
            journal_depth: self.journal.depth(),
            queued: (self.ready.len() + self.responses.len()) as u64,
            running: self.running.len() as u64,
        };
        let html = page::render(&self.fleet, own, wall_ms);
        let r = crate::host::files::replace(&path, html.as_bytes(), 0o644);
        self.page_next = now + PAGE_INTERVAL;
        self.page_shown = Some(self.fleet.changes);
        match r {
            Ok(()) => self.stats.page_writes += 1,
            Err(e) => {
                self.stats.page_errors += 1;
                if self.log_page.allow(now, "fleet page") {
                    log::warn!("fleet page {}: {e}", path.display());
                }
            }
        }
    }

    /// The filters to subscribe to for `modules`: every enabled subscribed
    /// module's, as `$share/GROUP/FILTER` when it has a `subscribe_group`, each once;
    /// and, when there is any, the fleet's statuses (`<prefix>/+/status`, never
    /// shared: every collector wants the whole fleet).
    pub fn filters(modules: &[Module], prefix: &str, page: bool) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for m in modules
            .iter()
            .filter(|m| m.settings.enabled && m.subscribed())
        {
            for f in &m.settings.subscribe {
                let full = topic::shared(m.settings.subscribe_group.as_deref(), f);
                if !out.contains(&full) {
                    out.push(full);
                }
            }
        }
        let status = format!("{prefix}/+/status");
        if (page || !out.is_empty()) && !out.contains(&status) {
            out.push(status);
        }
        let states = format!("{prefix}/+/state/+");
        if page && !out.contains(&states) {
            out.push(states);
        }
        out
    }

    /// The node and module of a state topic `<prefix>/<node>/state/<module>`.
    fn state_of<'a>(&self, topic: &'a str) -> Option<(&'a str, &'a str)> {
        let (node, module) = topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('/')?
            .split_once("/state/")?;
        (!node.is_empty() && !node.contains('/') && !module.is_empty() && !module.contains('/'))
            .then_some((node, module))
    }

    /// Whether `topic` is a crd event's: `<prefix>/NODE/event/...`.
    fn event_topic(&self, topic: &str) -> bool {
        topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .and_then(|r| r.split_once('/'))
            .is_some_and(|(node, rest)| !node.is_empty() && rest.starts_with("event/"))
    }

    /// The node of a status topic `<prefix>/<node>/status`.
    fn status_node<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('/')?
            .strip_suffix("/status")
            .filter(|n| !n.is_empty() && !n.contains('/'))
    }

    /// `crd register MODULE [KEY]`: every key of rule module `module` with its
    /// value at `now_ms`, one `KEY VALUE` line each, sorted; or one key's value.
    pub fn register(&self, module: &str, key: Option<&str>, now_ms: u64) -> String {
        let Some(rule) = self.rules.get(module) else {
            return format!(
                "error: no register `{module}` (a rule module with `register`, fed at least once since the start)\n"
            );
        };
        // Keys (node names, topics) and text values came from the bus.
        let text = |k: &str, v: Option<f64>| match rule.regs.text(k) {
            Some(t) if !t.is_empty() => terminal_safe(t).into_owned(),
            _ => register::format_value(v),
        };
        match key {
            Some(k) => match rule.regs.get(k, now_ms) {
                Some(v) => format!("{}\n", text(k, v)),
                None => format!("error: register `{module}` has no key `{k}`\n"),
            },
            None => {
                let mut s = String::new();
                for (k, v) in rule.regs.list(now_ms) {
                    let _ = writeln!(s, "{} {}", terminal_safe(k), text(k, v));
                }
                s
            }
        }
    }

    /// At start: the registers from disk. After a reload: the registers of
    /// modules that are gone, or are no longer rules, are dropped (one whose
    /// settings changed starts empty when it is next fed).
    pub fn configure(&mut self, modules: &[Module]) {
        self.load_registers(modules);
        let before = self.rules.len();
        self.rules.retain(|name, _| {
            modules
                .iter()
                .any(|m| m.name == *name && m.settings.rule.register.is_some())
        });
        self.rules_dropped |= self.rules.len() != before;
    }

    /// The registers from disk, at the first `configure` (`persist.rs`): the
    /// snapshot, then the messages fed after it.
    fn load_registers(&mut self, modules: &[Module]) {
        let spec_of = |n: &str| {
            modules
                .iter()
                .find(|m| m.name == n)
                .and_then(|m| Spec::of(&m.settings.rule))
        };
        let restored = match self.persist.restore(&spec_of) {
            None => return,
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                // The messages fed only make sense on top of the snapshot.
                log::warn!("collector: registers: {e}; the registers start empty");
                self.rules_dropped = true;
                return;
            }
        };
        for (name, regs) in restored.rules {
            let rule = Rule {
                regs,
                skipped: 0,
                hits: 0,
            };
            self.rules.insert(name, rule);
        }
        let mut last = restored.through;
        for e in restored
            .fed
            .into_iter()
            .filter(|e| e.seq > restored.through)
        {
            let Some(spec) = spec_of(&e.module) else {
                continue;
            };
            let rule = self.rules.entry(e.module).or_insert_with(|| Rule {
                regs: Registers::new(spec),
                skipped: 0,
                hits: 0,
            });
            rule.regs.feed(&e.key, e.num, e.text.as_deref(), e.t_ms);
            last = last.max(e.seq);
        }
        self.fed_through = last;
        self.fed_max = last;
        if !self.rules.is_empty() {
            log::info!(
                "collector: registers of {} rules restored, through journal record {last}",
                self.rules.len()
            );
        }
    }

    /// `crd fleet`: the table, or JSON.
    pub fn fleet(&self, json: bool, now_ms: u64) -> String {
        if json {
            self.fleet.json()
        } else {
            self.fleet.table(now_ms)
        }
    }

    /// Whether an enabled module subscribes to a filter `topic` matches.
    pub fn wants(modules: &[Module], topic: &str) -> bool {
        Self::matching(modules, topic).next().is_some()
    }

    fn matching<'a, 't>(
        modules: &'a [Module],
        topic: &'t str,
    ) -> impl Iterator<Item = &'a Module> + use<'a, 't> {
        modules.iter().filter(move |m| {
            m.settings.enabled
                && m.subscribed()
                && m.settings
                    .subscribe
                    .iter()
                    .any(|f| topic::matches(f, topic))
        })
    }

    /// A message (or an oversized one) from the broker. Returns the PUBACKs that
    /// can go out at once (nothing to journal); the rest wait for `after_input`.
    pub fn handle_inbound(
        &mut self,
        conn: u64,
        up: Up,
        modules: &[Module],
        outbox: &mut Outbox,
        now: Instant,
        wall_ms: u64,
    ) -> Vec<(u64, u16)> {
        let mut now_acks = Vec::new();
        self.stats.received += 1;
        match up {
            Up::Oversized { topic, size, pkid } => {
                self.stats.oversized += 1;
                self.error_event(
                    outbox,
                    now,
                    wall_ms,
                    format!("message of {size} bytes on `{topic}` is over max_message ({}); acknowledged, not run", self.max_message),
                );
                now_acks.extend(pkid.map(|p| (conn, p)));
            }
            Up::Message(Inbound {
                topic,
                payload,
                pkid,
                retain,
                ..
            }) => {
                // Presence first, from every status and every crd event.
                let is_status = match self.status_node(&topic) {
                    Some(node) => self.fleet.status(node, &payload, wall_ms),
                    None => match self.state_of(&topic).filter(|_| self.page.is_some()) {
                        Some((node, module)) => self.fleet.module_state(node, module, &payload),
                        None => false,
                    },
                };
                // Parsed once here, borrowed (the journal keeps the payload).
                let event = message::EventRef::parse(&payload);
                if let Some(e) = &event {
                    self.fleet.event(&e.node, &e.module, &e.kind, wall_ms);
                } else if !retain && self.event_topic(&topic) {
                    // Malformed (cut, not JSON, not crd's): run as any payload.
                    self.stats.malformed_events += 1;
                    self.error_event(
                        outbox,
                        now,
                        wall_ms,
                        format!(
                            "message of {} bytes on `{}` is not a crd event; run as a plain payload",
                            payload.len(),
                            message::cut(&topic, 256)
                        ),
                    );
                }
                if is_status && Self::matching(modules, &topic).next().is_none() {
                    // Tracked for `crd fleet`; no module wants it.
                    now_acks.extend(pkid.map(|p| (conn, p)));
                } else if topic.starts_with(&self.own_topics) {
                    self.stats.own += 1;
                    now_acks.extend(pkid.map(|p| (conn, p)));
                } else if retain {
                    // A retained message replayed at subscribe is state, not an
                    // event: modules do not run on it.
                    self.stats.retained += 1;
                    now_acks.extend(pkid.map(|p| (conn, p)));
                } else if payload.len() > self.max_message {
                    self.stats.oversized += 1;
                    self.error_event(
                        outbox,
                        now,
                        wall_ms,
                        format!(
                            "message of {} bytes on `{topic}` is over max_message ({}); acknowledged, not run",
                            payload.len(),
                            self.max_message
                        ),
                    );
                    now_acks.extend(pkid.map(|p| (conn, p)));
                } else if Self::matching(modules, &topic).next().is_none() {
                    self.stats.unmatched += 1;
                    now_acks.extend(pkid.map(|p| (conn, p)));
                } else if event
                    .as_ref()
                    .is_some_and(|e| self.persist.seen.done(e.stream_id(), e.seq))
                {
                    // Run already (a redelivery, or the edge sent it again).
                    now_acks.extend(pkid.map(|p| (conn, p)));
                } else {
                    let mut record = std::mem::take(&mut self.record);
                    Message::encode_into(&mut record, &topic, &payload, wall_ms, event.as_ref());
                    let appended = self.journal.append(&record, now);
                    self.record = record;
                    match appended {
                        Ok(seq) => {
                            self.stats.journaled += 1;
                            if let Some(p) = pkid {
                                self.acks_due.push((seq, conn, p));
                            }
                        }
                        Err(e) => {
                            // Not acknowledged: the broker sends it again
                            // after a reconnect (`wants_redelivery`).
                            if let AppendError::Io(io) = &e {
                                self.journal_failed(io, now);
                            }
                            self.stats.refused += 1;
                            self.refused_at.get_or_insert(now);
                            if self.log_refused.allow(now, "collector: journal refused") {
                                log::warn!(
                                    "collector: journal refused a message on `{topic}`: {e}"
                                );
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        now_acks
    }

    /// An `error` event (and a log line) about a message, at a bounded rate: a
    /// flood of bad messages is counted in `crd status`, not echoed one for one.
    fn error_event(&mut self, outbox: &mut Outbox, now: Instant, wall_ms: u64, out: String) {
        if !self.log_bad.allow(now, "collector: bad messages") {
            return;
        }
        log::warn!("collector: {out}");
        push_error(outbox, now, wall_ms, out);
    }

    /// The disk refused a journal write or sync: paused until a retry gets
    /// through (`fault.rs`); the first failure of a fault is logged, with the
    /// path and the free space, and becomes an `error` event.
    fn journal_failed(&mut self, e: &std::io::Error, now: Instant) {
        let free = crate::child::sys::free_bytes(&self.journal_dir).ok();
        if let Some(text) = self.faults.failed(e, &self.journal_dir, free, now) {
            log::error!(
                "collector: journal: {text}; reading nothing more from the broker and \
                 acknowledging nothing more until it writes again (retrying, at most every {} s)",
                fault::RETRY_MAX.as_secs()
            );
            self.fault_event = Some(format!("journal: {text}; paused until it writes again"));
        }
    }

    /// After a read's messages: one fdatasync for all of them, then the PUBACKs of
    /// every message now durable: (connection, pkid).
    pub fn after_input(&mut self, now: Instant) -> Vec<(u64, u16)> {
        if self.acks_due.is_empty() {
            return Vec::new();
        }
        if let Err(e) = self.journal.sync(now) {
            self.journal_failed(&e, now);
        }
        self.durable_acks()
    }

    /// The PUBACKs owed for messages now durable (a retry after a fault made
    /// them so): (connection, pkid).
    pub fn durable_acks(&mut self) -> Vec<(u64, u16)> {
        if self.acks_due.is_empty() {
            return Vec::new();
        }
        let durable = self.journal.durable_seq();
        let mut out = Vec::new();
        self.acks_due.retain(|&(seq, conn, pkid)| {
            if seq <= durable {
                out.push((conn, pkid));
                false
            } else {
                true
            }
        });
        out
    }

    /// Stop reading the broker's socket: the journal holds enough not yet run.
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
                self.stats.redeliveries += 1;
                true
            }
            _ => false,
        }
    }

    /// Takes durable journal records into work (at most `READ_AHEAD_RECORDS` held)
    /// and settles the hits of modules without a check, which frees room at once:
    /// reads on while it does, up to `PUMP_BUDGET_RECORDS` a loop turn (`busy`
    /// then asks for another turn at once; nothing else would wake the loop).
    pub fn pump(&mut self, modules: &[Module], outbox: &mut Outbox, now: Instant, wall_ms: u64) {
        if let Some(out) = self.fault_event.take() {
            // Spooled if the edge spool can take it (it may sit on the same
            // full disk: then its own policy applies).
            push_error(outbox, now, wall_ms, out);
        }
        let mut budget = PUMP_BUDGET_RECORDS;
        self.busy = false;
        loop {
            let read = self.pump_once(modules, outbox, now, wall_ms, &mut budget);
            if budget == 0 {
                self.busy = true;
                return;
            }
            if read == 0 || self.records.len() >= READ_AHEAD_RECORDS {
                return;
            }
        }
    }

    /// Journal records left to read that `pump` stopped short of for its budget.
    pub fn busy(&self) -> bool {
        self.busy
    }

    /// One pass of `pump`; returns how many records it read.
    fn pump_once(
        &mut self,
        modules: &[Module],
        outbox: &mut Outbox,
        now: Instant,
        wall_ms: u64,
        budget: &mut usize,
    ) -> usize {
        let mut read = 0;
        // The record is copied here and read in place (`View`): a message that
        // leads to no run (most, on the rule path) costs no allocation.
        let mut record = std::mem::take(&mut self.record);
        let mut jobs = std::mem::take(&mut self.jobs);
        while self.records.len() < READ_AHEAD_RECORDS && *budget > 0 {
            jobs.clear();
            let seq = match self.journal.read_next() {
                Ok(Some((seq, bytes))) => {
                    record.clear();
                    record.extend_from_slice(bytes);
                    seq
                }
                Ok(None) => break,
                Err(e) => {
                    log::warn!("collector: journal read: {e}");
                    break;
                }
            };
            read += 1;
            *budget -= 1;
            let v = match View::of(&record) {
                Ok(v) => v,
                Err(e) => {
                    self.stats.corrupt += 1;
                    log::warn!("collector: journal record {seq}: {e}; skipped");
                    let _ = self.journal.ack(seq, now);
                    continue;
                }
            };
            if Self::matching(modules, v.topic).next().is_none() {
                let _ = self.journal.ack(seq, now);
                continue;
            }
            let done = v.event.as_ref().map(|e| (e.stream_id(), e.seq));
            if let Some(e) = &v.event {
                // Done already, or the same event is being run right now.
                let in_work = self.records.values().any(|h| {
                    h.facts
                        .event
                        .as_ref()
                        .is_some_and(|o| o.stream == e.stream && o.seq == e.seq)
                });
                if in_work {
                    self.persist.seen.counts.duplicates += 1;
                }
                if in_work || self.persist.seen.done(e.stream_id(), e.seq) {
                    let _ = self.journal.ack(seq, now);
                    continue;
                }
            }
            for m in Self::matching(modules, v.topic) {
                let job = |step, reg| Job {
                    seq,
                    module: m.name.clone(),
                    step,
                    reg,
                };
                match Spec::of(&m.settings.rule) {
                    None => jobs.push(job(Step::Check, None)),
                    Some(spec) => {
                        if let Some((step, reg)) = self.rule(m, spec, seq, &v) {
                            jobs.push(job(step, Some(reg)));
                        }
                    }
                }
            }
            if jobs.is_empty() {
                // Rules only, and none of them needs anything done.
                self.retire_untouched(done, seq, now);
                continue;
            }
            // Decided without a run (a rule, or a module without a check: every
            // message a hit): settled at once, so the next message of the same
            // key sees its state.
            let at_once = |job: &Job| {
                matches!(job.step, Step::Decided(_))
                    || modules
                        .iter()
                        .find(|m| m.name == job.module)
                        .is_some_and(|m| m.check.is_none())
            };
            if jobs.iter().all(at_once) {
                // Nothing to run first: settled from the record in place, held
                // (made owned) only for the responses that follow.
                let mut responses = Vec::new();
                for job in jobs.drain(..) {
                    if let Some(r) = self.settle_in_place(job, &v, modules, outbox, now, wall_ms) {
                        responses.push(r);
                    }
                }
                if responses.is_empty() {
                    self.retire_untouched(done, seq, now);
                    continue;
                }
                let (msg, facts) = v.to_owned();
                let left = responses.len() as u32;
                self.records.insert(seq, Held { msg, facts, left });
                self.responses.extend(responses);
                continue;
            }
            let (msg, facts) = v.to_owned();
            self.records.insert(
                seq,
                Held {
                    msg,
                    facts,
                    left: jobs.len() as u32,
                },
            );
            for job in jobs.drain(..) {
                if !at_once(&job) {
                    self.ready.push_back(job);
                } else if let Some(r) = self.settle_in_place(job, &v, modules, outbox, now, wall_ms)
                {
                    self.responses.push_back(r);
                } else {
                    self.job_done(seq, now);
                }
            }
        }
        self.record = record;
        self.jobs = jobs;
        read
    }

    /// Settles a job decided without a run (a rule's decision, or a module
    /// without a check), as a check with the matching exit code would have
    /// been, from the record read in place: the response job that follows, if
    /// one does.
    fn settle_in_place(
        &mut self,
        job: Job,
        v: &View<'_>,
        modules: &[Module],
        outbox: &mut Outbox,
        now: Instant,
        wall_ms: u64,
    ) -> Option<Job> {
        let m = modules.iter().find(|m| m.name == job.module)?;
        let hit = !matches!(job.step, Step::Decided(false));
        // A rule's decision says what it decided on, as a check's output would:
        // the `fired`/`cleared` event's `out`, and a response's check output.
        let output = job
            .reg
            .as_ref()
            .map_or_else(String::new, |r| format!("{} {}", r.key, r.value));
        let ran = Ran {
            role: Role::Check,
            outcome: synthetic(m.settings.convention, hit),
            output,
            dur: Duration::ZERO,
        };
        let origin = job.reg.as_ref().map_or(v.origin(), |r| &r.key);
        let d = Decide {
            origins: &mut self.origins,
            checking: &mut self.checking,
            log_runs: &mut self.log_runs,
        };
        match d.decide(m, &job, ran, origin, &|| v.id(), outbox, now, wall_ms)? {
            Next::Respond { output, code } => Some(Job {
                step: Step::Response { output, code },
                ..job
            }),
            Next::Done => None,
        }
    }

    /// A record no module has work for (rules that decided nothing): retired at
    /// once, and a crd event marked done like any other.
    fn retire_untouched(&mut self, event: Option<(u64, u64)>, seq: u64, now: Instant) {
        if let Some((stream, eseq)) = event {
            self.persist.mark(stream, eseq);
        }
        if let Err(e) = self.journal.ack(seq, now) {
            log::warn!("collector: journal checkpoint: {e}");
        }
        self.retired_since.get_or_insert(now);
    }

    /// Feeds rule module `m`'s register with one message and says what follows:
    /// nothing (no value, or nothing changes), a check to run (the condition
    /// starts to hold and the module has one), or a decision without a run.
    fn rule(
        &mut self,
        m: &Module,
        spec: Spec,
        seq: u64,
        msg: &View<'_>,
    ) -> Option<(Step, Box<RegKey>)> {
        let r = &m.settings.rule;
        let rule = match self.rules.get_mut(&m.name) {
            Some(rule) if rule.regs.same_data(&spec) => {
                // A reload may have changed the condition: the data stays.
                rule.regs.set_condition(spec.condition);
                rule
            }
            _ => {
                // New, or what it keeps changed (a reload): it starts empty.
                self.rules.insert(
                    m.name.clone(),
                    Rule {
                        regs: Registers::new(spec),
                        skipped: 0,
                        hits: 0,
                    },
                );
                self.rules.get_mut(&m.name).expect("just inserted")
            }
        };
        let key: &str = match r.by.unwrap_or_default() {
            RegisterBy::Node => msg.origin(),
            RegisterBy::Topic => msg.topic,
            RegisterBy::Module => msg.event.as_ref().map_or(msg.topic, |e| &e.module),
            RegisterBy::All => "*",
        };
        let key = message::cut(key, message::MAX_ORIGIN_BYTES);
        let equals = matches!(rule.regs.spec().condition, register::Condition::Equals(_));
        let got = match &r.value {
            None => value::Got::default(),
            Some(path) => match value::extract(msg.payload, path, equals) {
                Ok(g) => g,
                Err(_) => {
                    rule.skipped += 1;
                    return None;
                }
            },
        };
        if got.num.is_none() && !equals && r.value.is_some() {
            rule.skipped += 1;
            return None;
        }
        let reading = if seq <= self.fed_through {
            // Fed before the restart (the snapshot or the log has it): decide
            // on the register as it is.
            rule.regs
                .evaluate(key, msg.received_ms)
                .unwrap_or(register::Reading {
                    value: None,
                    holds: false,
                })
        } else {
            self.persist.fed(&rulestate::Fed {
                module: &m.name,
                key,
                num: got.num,
                text: got.text.as_deref(),
                t_ms: msg.received_ms,
                seq,
            });
            self.fed_max = self.fed_max.max(seq);
            rule.regs
                .feed(key, got.num, got.text.as_deref(), msg.received_ms)
        };
        rule.hits += u64::from(reading.holds);
        // What the run is told; made only for a message that leads to one
        // (most do not: formatting the value each time was a cost per message).
        let reg = || {
            let value = match (&got.text, equals) {
                (Some(t), true) => t.clone(),
                _ => register::format_value(reading.value),
            };
            Box::new(RegKey {
                key: key.to_string(),
                value,
            })
        };
        let state = self.origins.peek(m, key);
        let firing = state.is_some_and(|s| s.firing);
        let checking = || {
            self.checking
                .iter()
                .any(|(cm, ck)| *cm == m.name && *ck == key)
        };
        let next = match (reading.holds, firing) {
            // Once per crossing: a condition that still holds does nothing more;
            // nor while the check of an earlier message of this key runs.
            (true, true) => None,
            (true, false) if m.check.is_some() && checking() => None,
            (true, false) if m.check.is_some() => {
                self.checking.push((m.name.clone(), key.to_string()));
                Some((Step::Check, reg()))
            }
            (true, false) => Some((Step::Decided(true), reg())),
            // Stopped holding: `cleared` if it had fired; a run of hits broken.
            (false, _) if state.is_some() => Some((Step::Decided(false), reg())),
            (false, _) => None,
        };
        // Every message the rule fed and decided on without a fork (a check
        // started is not decided yet).
        if !matches!(next, Some((Step::Check, _))) {
            self.stats.decided += 1;
        }
        next
    }

    /// Starts runs while a collector slot is free and work is ready; `start`
    /// starts one (the daemon's `Runs::start`) and returns its run id.
    pub fn start_runs(
        &mut self,
        host: Host<'_>,
        modules: &[Module],
        now: Instant,
        mut start: impl FnMut(&Recipe) -> usize,
    ) {
        while self.running.len() < self.max_parallel {
            let Some(job) = self
                .responses
                .pop_front()
                .or_else(|| self.ready.pop_front())
            else {
                return;
            };
            let (Some(m), Some(held)) = (
                modules.iter().find(|m| m.name == job.module),
                self.records.get(&job.seq),
            ) else {
                // The module went away (reload): this job is done.
                self.forget_check(&job);
                self.job_done(job.seq, now);
                continue;
            };
            // The environment is made only for a run (most hits need none).
            let env = || held.facts.env(&held.msg);
            let recipe = match &job.step {
                Step::Check => Recipe::message_check(host, m, &env(), &held.msg.payload),
                Step::Response { output, code } => {
                    Recipe::message_response(host, m, &env(), &held.msg.payload, output, *code)
                }
                Step::Decided(_) => None,
            };
            let recipe = recipe.map(|mut r| {
                if let Some(reg) = &job.reg {
                    r.env.push(("CRD_REGISTER_KEY", reg.key.clone().into()));
                    r.env.push(("CRD_REGISTER_VALUE", reg.value.clone().into()));
                }
                r
            });
            let Some(recipe) = recipe else {
                self.forget_check(&job);
                self.job_done(job.seq, now);
                continue;
            };
            self.stats.runs += 1;
            let id = start(&recipe);
            self.running.push((id, job));
        }
    }

    /// A rule's check that will not run: its key may start another.
    fn forget_check(&mut self, job: &Job) {
        if let (Some(reg), Step::Check) = (&job.reg, &job.step) {
            self.checking
                .retain(|(cm, ck)| !(*cm == job.module && *ck == reg.key));
        }
    }

    /// Whether run `id` is one of the collector's.
    pub fn owns(&self, run_id: usize) -> bool {
        self.running.iter().any(|(id, _)| *id == run_id)
    }

    /// A collector run ended.
    pub fn handle_finished(
        &mut self,
        f: Finished,
        modules: &[Module],
        outbox: &mut Outbox,
        now: Instant,
        wall_ms: u64,
    ) {
        let Some(i) = self.running.iter().position(|(id, _)| *id == f.id) else {
            return;
        };
        let (_, job) = self.running.remove(i);
        if f.stopped {
            // Cut short by crd's shutdown: it runs again after the restart.
            return;
        }
        self.settle(job, f.ran(), modules, outbox, now, wall_ms);
    }

    /// The lifecycle step of one run of a message, carried out.
    fn settle(
        &mut self,
        job: Job,
        ran: Ran,
        modules: &[Module],
        outbox: &mut Outbox,
        now: Instant,
        wall_ms: u64,
    ) {
        let (Some(m), Some(held)) = (
            modules.iter().find(|m| m.name == job.module),
            self.records.get(&job.seq),
        ) else {
            self.job_done(job.seq, now);
            return;
        };
        // A rule's state goes by its register key.
        let origin = job
            .reg
            .as_ref()
            .map_or(held.facts.origin(&held.msg), |r| &r.key);
        let d = Decide {
            origins: &mut self.origins,
            checking: &mut self.checking,
            log_runs: &mut self.log_runs,
        };
        match d.decide(
            m,
            &job,
            ran,
            origin,
            &|| held.facts.id(&held.msg),
            outbox,
            now,
            wall_ms,
        ) {
            Some(Next::Respond { output, code }) => self.responses.push_back(Job {
                seq: job.seq,
                module: job.module,
                step: Step::Response { output, code },
                reg: job.reg,
            }),
            _ => self.job_done(job.seq, now),
        }
    }

    fn job_done(&mut self, seq: u64, now: Instant) {
        let Some(h) = self.records.get_mut(&seq) else {
            return;
        };
        h.left = h.left.saturating_sub(1);
        if h.left == 0 {
            if let Some(e) = &h.facts.event {
                self.persist.mark(e.stream_id(), e.seq);
            }
            self.records.remove(&seq);
            if let Err(e) = self.journal.ack(seq, now) {
                log::warn!("collector: journal checkpoint: {e}");
            }
            self.retired_since.get_or_insert(now);
        }
    }

    /// Every loop iteration: the journal's writes, syncs and checkpoint, and the
    /// table of events done when it changed and is due.
    pub fn handle_timer(&mut self, now: Instant, wall_ms: u64) {
        if self.faults.retry_due(now) {
            match self.journal.sync(now) {
                Ok(()) => {
                    if let Some(d) = self.faults.cleared(now) {
                        log::info!(
                            "collector: journal {} writes again after {} ms; reading from the broker again",
                            self.journal_dir.display(),
                            d.as_millis()
                        );
                    }
                }
                Err(e) => self.journal_failed(&e, now),
            }
        }
        if let Err(e) = self
            .journal
            .flush(now)
            .and_then(|()| self.journal.handle_timer(now))
        {
            self.journal_failed(&e, now);
        }
        // What the registers were fed and the events done are written every
        // loop turn (a crash of crd loses neither: a replayed message feeds
        // nothing twice and a done event does not run again), and made durable
        // with the journal's watermark at most every `RETIRE_SYNC_INTERVAL`:
        // first the registers' log, then the table's, then the watermark, so a
        // power cut between any two runs nothing again and feeds nothing twice,
        // never the reverse. (The events done before the registers' log would
        // lose a message: replayed, it is skipped as done, and nothing fed it.)
        if let Err(e) = self.persist.flush() {
            log::warn!("collector: writing what was done: {e}");
        }
        if self.rules_dropped {
            self.rules_dropped = false;
            if let Err(e) = self.persist.rewrite(
                &mut self.rules.iter().map(|(n, r)| (n.as_str(), &r.regs)),
                self.fed_max,
            ) {
                log::warn!("collector: writing the registers: {e}");
            }
        }
        if self
            .retired_since
            .is_some_and(|t| now >= t + RETIRE_SYNC_INTERVAL)
        {
            match self
                .sync_logs()
                .and_then(|()| self.journal.write_checkpoint())
            {
                Ok(()) => self.retired_since = None,
                Err(e) => {
                    // Tried again an interval later, not every turn.
                    self.retired_since = Some(now);
                    log::warn!("collector: journal checkpoint: {e}");
                }
            }
        }
        if self.page_due().is_some_and(|t| now >= t) {
            self.write_page(now, wall_ms);
        }
    }

    /// Makes what the registers were fed and the events done durable, the
    /// registers' first (`persist.rs`).
    fn sync_logs(&mut self) -> std::io::Result<()> {
        self.persist.sync(
            &mut self.rules.iter().map(|(n, r)| (n.as_str(), &r.regs)),
            self.fed_max,
        )
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let retire = self.retired_since.map(|t| t + RETIRE_SYNC_INTERVAL);
        // While paused, a finished run (a child's exit) wakes the loop instead.
        let redeliver = self
            .refused_at
            .filter(|_| !self.paused())
            .map(|t| t + REDELIVERY_WAIT);
        let seen = [
            retire,
            redeliver,
            self.page_due(),
            self.faults.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        match (self.journal.poll_timeout(), seen) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs of the collector in flight.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// On shutdown: everything synced, the checkpoint written.
    pub fn close(&mut self, now: Instant) {
        // The registers before the events done (see `handle_timer`).
        if let Err(e) = self.sync_logs() {
            log::error!("collector: syncing what was done: {e}");
        }
        if let Err(e) = self.journal.close(now) {
            log::error!("collector: closing the journal: {e}");
        }
    }

    /// The `collect_*` and `rule_*` figures of `crd status`.
    pub fn status(&self, s: &mut Status) {
        let st = &self.stats;
        s.num("collect_received", st.received);
        s.num("collect_journaled", st.journaled);
        s.num("collect_journal_depth", self.journal.depth());
        s.num("collect_journal_fsyncs", self.journal.stats().fsyncs);
        s.put(
            "collect_journal_error",
            Value::Opt(self.faults.now.as_ref().map(|f| f.text.clone())),
        );
        s.num("collect_journal_faults", self.faults.count);
        s.num("collect_runs", st.runs);
        s.num("collect_running", self.running.len() as u64);
        s.num(
            "collect_queued",
            (self.ready.len() + self.responses.len()) as u64,
        );
        s.num("collect_unmatched", st.unmatched);
        s.num("collect_own_skipped", st.own);
        s.num("collect_retained_skipped", st.retained);
        s.num("collect_oversized", st.oversized);
        s.num("collect_refused", st.refused);
        s.num("collect_malformed_events", st.malformed_events);
        s.num("collect_redeliveries", st.redeliveries);
        s.num("collect_corrupt", st.corrupt);
        let c = self.persist.seen.counts;
        s.num("collect_duplicates", c.duplicates);
        s.num("collect_seen_streams", self.persist.seen.streams() as u64);
        s.num("collect_seen_too_old", c.too_old);
        s.num("collect_seen_evicted", c.evicted);
        s.num("collect_fleet_nodes", self.fleet.len() as u64);
        s.num("collect_fleet_forgotten", self.fleet.forgotten);
        s.num("collect_origins", self.origins.len() as u64);
        s.num("collect_origins_evicted", self.origins.evicted);
        s.num("collect_fleet_words_full", self.fleet.words_full);
        s.num("collect_fleet_states_full", self.fleet.states_full);
        s.num("collect_page_writes", st.page_writes);
        s.num("collect_page_errors", st.page_errors);
        s.put("collect_paused", Value::Flag(self.paused()));
        s.num("collect_decided", st.decided);
        for (name, r) in &self.rules {
            s.num(format!("rule_{name}_keys"), r.regs.len() as u64);
            s.num(format!("rule_{name}_evicted"), r.regs.evicted);
            s.num(format!("rule_{name}_skipped"), r.skipped);
            s.num(format!("rule_{name}_hits"), r.hits);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::parse_config;
    use crate::mqtt::session::Inbound;
    use std::path::{Path, PathBuf};

    fn dir(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("crd-coll-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn message(pkid: u16) -> Up {
        Up::Message(Inbound {
            topic: "q/x".into(),
            payload: vec![b'x'; 1000],
            pkid: Some(pkid),
            dup: false,
            retain: false,
        })
    }

    /// The safety net under the pause, on a real journal: messages read while
    /// the journal is full are refused, not acknowledged (so the broker keeps
    /// them) and not allowed to drop acknowledged ones; once the journal has
    /// room again, and `REDELIVERY_WAIT` after the refusal, the collector asks
    /// once for the reconnect that makes the broker send them again.
    #[test]
    fn a_full_journal_refuses_and_asks_for_redelivery_once_it_has_room() {
        let d = dir("refuse");
        let cfg = parse_config(
            &format!(
                "node = me\nspool_dir = {}\nmax_message = 1k\nspool_size = 256k\nspool_segment = 128k\n",
                d.display()
            ),
            Path::new("crd.conf"),
        )
        .unwrap();
        let mut c = Collector::open(&cfg, "me", Instant::now()).unwrap();
        let mut outbox = Outbox::open(&d.join("out"), cfg.spool).unwrap();
        let mut m = Module {
            name: "M".into(),
            dir: d.join("M"),
            check: None,
            response: None,
            settings: Default::default(),
        };
        m.settings.subscribe = vec!["q/#".into()];
        let modules = [m];
        let t0 = Instant::now();
        // The daemon would have paused at 3/4; fed past it in one go, the
        // journal fills (no record is retired before `pump`).
        let (mut n, mut acked) = (0u16, Vec::new());
        while c.stats.refused < 5 {
            assert!(n < 2_000, "never refused: {:?}", c.stats);
            n += 1;
            acked.extend(c.handle_inbound(1, message(n), &modules, &mut outbox, t0, 0));
        }
        acked.extend(c.after_input(t0));
        let journaled = c.stats.journaled;
        assert_eq!(journaled + 5, u64::from(n));
        // Every journaled message acknowledged, none of the refused ones.
        assert_eq!(acked.len() as u64, journaled);
        assert!(acked.iter().all(|&(_, p)| u64::from(p) <= journaled));
        assert!(c.paused());
        assert!(!c.wants_redelivery(t0 + REDELIVERY_WAIT * 2), "still full");
        // Every record runs (a module without a check: settled at once) and is
        // retired; the journal has room again.
        while c.journal.bytes() * 4 > c.journal.config().size * PAUSE_FILL_QUARTERS {
            c.pump(&modules, &mut outbox, t0, 0);
            let _ = c.after_input(t0);
            c.handle_timer(t0 + Duration::from_secs(1), 0);
        }
        assert!(!c.paused());
        assert!(!c.wants_redelivery(t0 + REDELIVERY_WAIT / 2), "too soon");
        assert!(c.wants_redelivery(t0 + REDELIVERY_WAIT));
        assert!(!c.wants_redelivery(t0 + REDELIVERY_WAIT * 3), "asked once");
        let _ = std::fs::remove_dir_all(&d);
    }
}
