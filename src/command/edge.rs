//! The edge's side of remote commands, in the daemon's loop. With `commands =`
//! set, the daemon subscribes to `<prefix>/<node>/cmd/+` (QoS 1, persistent
//! session: the broker queues commands while the router is offline) and hands
//! each message here:
//!
//! 1. Checked first, each refusal a `refused` reply saying why: `malformed`,
//!    then `bad signature` (signing on). Neither is remembered, so a forged
//!    message cannot claim the id of a real command.
//! 2. An id seen before (redelivery, resend, replay) runs nothing: its earlier
//!    answer goes out again, marked `resent`. Only a message that passed step 1
//!    gets it: a tampered copy of a known id is `bad signature`, and learns
//!    nothing of the earlier run.
//! 3. Checked next: `expired`, `not allowed`, `unknown module`, `busy`. These
//!    refusals are remembered (a copy gets the same answer), except `busy`, so
//!    a busy one can be sent again (the relay and `crd send --wait` do).
//! 4. Accepted: journaled in the table (`Waiting`); the PUBACK goes out only once
//!    the table is synced (`after_input`); an `accepted` reply goes to the spool.
//! 5. Run one at a time, in arrival order: `Started` is synced before the child
//!    is spawned, so a crash from then on ends in `interrupted`, never a second
//!    run. The `done` reply (code, head+tail of the output, duration) is synced
//!    into the spool before the table says `Done`.
//!
//! The edge is a machine: the daemon hands it messages, finished runs and
//! `now`/`wall`; it answers with PUBACKs owed (`after_input`) and recipes
//! (`start_next`). Its table sits on a `Storage` (files in the daemon, memory
//! in the tests), and what it needs of the host, the outbox its replies go to
//! and the module directory, comes through a `Port`: it reads no clock and no
//! file itself (`open` and `read_key`, at start and reload, aside).
//!
//! Expiry basis: the edge's wall clock once it is set (after 2020); before that
//! (a router at 1970 before NTP), the newest `sent` among the commands it has
//! accepted, the sender's clock carried forward; with neither, the command runs
//! (there is no basis to refuse it, and a router that has never been reached is
//! the one that most needs its first command).

use crate::child::recipe::{Host, Recipe};
use crate::child::run::Finished;
use crate::command::envelope::{self, Answer, Command, Refusal};
use crate::command::error::{Error, Reason};
use crate::command::table::{self, End, Entry, State, Table};
use crate::core::config::{Config, ModuleSettings};
use crate::core::event::{Event, Kind};
use crate::core::output::head_tail;
use crate::core::sha256::to_hex;
use crate::core::status::Status;
use crate::host::logger::RateLimit;
use crate::host::{self, files};
use crate::spool::storage::{FileStorage, Storage};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What the edge needs of its host: the daemon's is the outbox (the spool)
/// and the module directory (`daemon::ports`); a test's is memory.
pub trait Port {
    /// Puts a reply into the outbox; its seq there, if it was taken.
    fn push(&mut self, ev: Event, now: Instant) -> Option<u64>;
    /// Makes the outbox durable; false when record `seq` is not durable yet.
    fn sync(&mut self, seq: u64, now: Instant) -> bool;
    /// Module `name`'s support executable and its settings, or why it cannot
    /// run here.
    fn support(&self, name: &str) -> Result<(PathBuf, ModuleSettings), host::error::Error>;
}

pub struct Edge<S: Storage = FileStorage> {
    node: String,
    prefix: String,
    allowed: Vec<String>,
    key: Option<Vec<u8>>,
    table: Table<S>,
    /// PUBACKs owed once the table is synced: (connection, packet id).
    acks: Vec<(u64, u16)>,
    /// The run in flight: its run id and the command's id.
    running: Option<[u8; 16]>,
    /// A start that could not be journaled: retried after this.
    retry_at: Option<Instant>,
    /// Refused messages, hostile or broken, are logged at a bounded rate
    /// (all counted).
    log_refused: RateLimit,
    counts: Counts,
}

/// The edge's figures for `crd status`.
#[derive(Default)]
struct Counts {
    received: u64,
    refused: u64,
    duplicates: u64,
    done: u64,
    interrupted: u64,
}

/// One message on this node's command topic, as the forwarder delivered it.
pub struct Message<'a> {
    /// The connection it came on and its packet id: acknowledged once what it
    /// changed is durable (`after_input`).
    pub conn: u64,
    pub pkid: Option<u16>,
    /// The topic's last level.
    pub id: &'a str,
    /// The payload, or its size when it was too large to be kept.
    pub payload: Result<&'a [u8], usize>,
}

/// Where the edge's replies go and when: its port, the loop's `now`, and the
/// wall clock (unix ms) a reply carries.
pub struct Outgoing<'a> {
    pub port: &'a mut dyn Port,
    pub now: Instant,
    pub wall: u64,
}

/// A message refused by `Edge::check`: why, the detail, and the module it
/// named ("" when not known).
struct Refused {
    why: Refusal,
    detail: String,
    module: String,
}

impl Refused {
    /// Refused as `malformed`.
    fn malformed(detail: String, module: String) -> Refused {
        Refused {
            why: Refusal::Malformed,
            detail,
            module,
        }
    }
}

/// Reads the shared secret: mode 0600 (no group or other bits) and at least
/// `MIN_KEY_BYTES` bytes, a trailing newline not counted.
pub fn read_key(path: &Path) -> Result<Vec<u8>, Error> {
    let at = |e| Reason::At(path.into(), e);
    let mode = files::mode(path).map_err(at)?;
    if mode & 0o077 != 0 {
        return Err(Reason::KeyMode(path.into(), mode & 0o7777).into());
    }
    let mut key = files::read_bounded(path, 4096).map_err(at)?.into_bytes();
    while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        key.pop();
    }
    if key.len() < envelope::MIN_KEY_BYTES {
        let short = Reason::KeyShort(path.into(), key.len(), envelope::MIN_KEY_BYTES);
        return Err(short.into());
    }
    Ok(key)
}

impl Edge<FileStorage> {
    /// The edge's commands, when `commands` names any module: its key read
    /// (`read_key`), its table on files in `spool_dir/command/` (`with`).
    pub fn open(
        cfg: &Config,
        node: &str,
        out: &mut Outgoing<'_>,
    ) -> Result<Option<Edge<FileStorage>>, Error> {
        if cfg.commands.is_empty() {
            return Ok(None);
        }
        let key = match &cfg.command_key_file {
            Some(p) => Some(read_key(p).map_err(Reason::CommandKey)?),
            None => None,
        };
        let dir = cfg.spool_dir.join("command");
        let st = FileStorage::open(&dir).map_err(|e| Reason::At(dir.clone(), e))?;
        let e = Edge::with(st, cfg, key, node, out).map_err(|e| Reason::At(dir, e))?;
        Ok(Some(e))
    }
}

impl<S: Storage> Edge<S> {
    /// The edge over the table in `st`: runs that a crash cut are answered
    /// `interrupted` here, and commands journaled but never started wait again.
    pub fn with(
        st: S,
        cfg: &Config,
        key: Option<Vec<u8>>,
        node: &str,
        out: &mut Outgoing<'_>,
    ) -> io::Result<Edge<S>> {
        let (table, warnings) = Table::open(st, table::EDGE)?;
        for w in warnings {
            log::warn!("{w}");
        }
        let mut e = Edge {
            node: node.to_string(),
            prefix: cfg.mqtt.topic_prefix.clone(),
            allowed: cfg.commands.clone(),
            key,
            table,
            acks: Vec::new(),
            running: None,
            retry_at: None,
            log_refused: RateLimit::default(),
            counts: Counts::default(),
        };
        for s in e.table.started() {
            log::warn!(
                "command {} ({}): its run was cut by a crash or power cut; not run again",
                to_hex(&s.id),
                s.module
            );
            e.counts.interrupted += 1;
            e.end(s, End::Interrupted, out);
        }
        e.table.sync()?;
        log::info!(
            "remote commands on: {} (signed: {}), {} ids remembered, {} waiting",
            e.allowed.join(" "),
            if e.key.is_some() { "yes" } else { "no" },
            e.table.len(),
            e.table.pending()
        );
        Ok(e)
    }

    /// The filter this node's commands arrive on.
    pub fn filter(&self) -> String {
        format!("{}/{}/cmd/+", self.prefix, self.node)
    }

    /// The id level of `topic` if it is one of this node's command topics.
    pub fn id_of<'a>(&self, topic: &'a str) -> Option<&'a str> {
        let rest = topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('/')?
            .strip_prefix(self.node.as_str())?
            .strip_prefix("/cmd/")?;
        (!rest.contains('/')).then_some(rest)
    }

    /// Takes the allowed modules from a reloaded config, and its key as the
    /// caller read it (`read_key`): none, a key, or why it could not be read
    /// (the key read before is kept).
    pub fn configure(&mut self, cfg: &Config, key: Option<Result<Vec<u8>, Error>>) {
        self.allowed = cfg.commands.clone();
        match key {
            Some(Ok(k)) => self.key = Some(k),
            Some(Err(e)) => log::error!("command_key_file {e}; keeping the key read before"),
            None => self.key = None,
        }
    }

    /// Pushes answer `a` to command `id` into the outbox; its seq there, if
    /// the spool took it.
    fn reply(
        &self,
        id: &str,
        module: &str,
        a: &Answer,
        resent: bool,
        out: &mut Outgoing<'_>,
    ) -> Option<u64> {
        let json = envelope::reply_json(id, &self.node, module, out.wall, a, resent);
        out.port.push(
            Event {
                ts_ms: out.wall,
                module: id.to_string(),
                kind: Kind::Reply,
                code: 0,
                dur_ms: 0,
                out: json,
                cause: None,
            },
            out.now,
        )
    }

    /// One message on this node's command topic, through the steps the file's
    /// doc lists (1 `check`, 2 the table, 3 `refusal`, 4 the journal). Its
    /// PUBACK is owed once what it changed is durable (`after_input`).
    pub fn handle(&mut self, msg: Message<'_>, out: &mut Outgoing<'_>) {
        let id = msg.id;
        self.counts.received += 1;
        if let Some(p) = msg.pkid {
            self.acks.push((msg.conn, p));
        }
        let (idb, payload, c) = match self.check(&msg) {
            Ok(checked) => checked,
            Err(r) => return self.refuse(id, r.why, r.detail, &r.module, out),
        };
        // Only now, with the message checked, may an id seen before be answered:
        // a copy of a known id whose bytes were changed is a forgery, and gets
        // `bad signature`, never the earlier result.
        if let Some(e) = self.table.get(&idb).cloned() {
            self.counts.duplicates += 1;
            log::info!(
                "command {id}: seen before ({}); answered again, not run",
                e.module
            );
            let a = answer_of(&e);
            self.reply(id, &e.module, &a, true, out);
            return;
        }
        let entry = Entry {
            id: idb,
            sent: c.sent,
            node: "".into(),
            module: c.module.as_str().into(),
            state: State::Waiting(payload.into()),
        };
        if let Some((why, detail)) = self.refusal(&c, &*out.port, out.wall) {
            self.refuse(id, why, detail, &c.module, out);
            // `busy` is not remembered: the command may be sent again.
            if why == Refusal::Busy {
                return;
            }
            let e = Entry {
                state: State::Ended(End::Refused(why)),
                ..entry
            };
            if let Err(err) = self.table.set(e) {
                log::error!("command {id}: journal: {err}");
            }
            return;
        }
        log::info!(
            "command {id}: {} {:?} from {} accepted",
            c.module,
            c.args,
            c.from
        );
        if let Err(err) = self.table.set(entry) {
            // Not durable: no PUBACK, the broker sends it again.
            log::error!("command {id}: journal: {err}; not acknowledged");
            self.acks.pop_if(|a| Some(a.1) == msg.pkid);
            return;
        }
        self.reply(id, &c.module, &Answer::Accepted, false, out);
    }

    /// Step 1, whose refusals are not remembered: the id in the topic, the size,
    /// the JSON and its addressee, then (signing on) the signature. Gives the
    /// id's bytes, the payload and the command, or the refusal.
    fn check<'m>(&self, msg: &Message<'m>) -> Result<([u8; 16], &'m [u8], Command), Refused> {
        let id = msg.id;
        let Some(idb) = table::id_bytes(id) else {
            let detail = format!("bad id `{id}` in the topic");
            return Err(Refused::malformed(detail, String::new()));
        };
        let payload = match msg.payload {
            Ok(p) => p,
            Err(size) => {
                let detail = format!("{size} bytes, over {}", envelope::MAX_COMMAND_BYTES);
                return Err(Refused::malformed(detail, String::new()));
            }
        };
        let c = match envelope::parse(id, payload) {
            Ok(c) if !c.to.is_empty() && c.to != self.node => {
                let detail = format!("addressed to node `{}`", c.to);
                return Err(Refused::malformed(detail, c.module));
            }
            Ok(c) => c,
            Err(e) => return Err(Refused::malformed(e.to_string(), String::new())),
        };
        if let Some(key) = &self.key
            && !envelope::verify(key, &self.node, &c)
        {
            return Err(Refused {
                why: Refusal::BadSignature,
                detail: String::new(),
                module: c.module,
            });
        }
        Ok((idb, payload, c))
    }

    /// Step 3, for a checked command not seen before: why it is refused, with
    /// the detail, if it is: expired (against `wall`, or, before the clock is
    /// set, the newest `sent` accepted), sent before an id this node forgot, not
    /// allowed, an unknown module, or busy.
    fn refusal(&self, c: &Command, port: &dyn Port, wall: u64) -> Option<(Refusal, String)> {
        let basis = if wall >= envelope::CLOCK_SET_MS {
            wall
        } else {
            self.table.newest_sent()
        };
        if basis > 0 && envelope::expired(c, basis) {
            Some((
                Refusal::Expired,
                format!("sent {} + ttl {} ms < {basis}", c.sent, c.ttl_ms),
            ))
        } else if c.sent <= self.table.forgot_sent {
            // Perhaps one of the ids forgotten at the table's bound: it may have
            // run already, so it runs no more.
            Some((
                Refusal::Expired,
                format!(
                    "sent {} <= {}, the newest of the ids this node no longer remembers \
                     ({} kept)",
                    c.sent,
                    self.table.forgot_sent,
                    table::EDGE.max_ids
                ),
            ))
        } else if !self.allowed.contains(&c.module) {
            Some((Refusal::NotAllowed, String::new()))
        } else if let Err(e) = port.support(&c.module) {
            Some((Refusal::UnknownModule, e.to_string()))
        } else if self.table.full() {
            let detail = format!("{} commands wait already", table::EDGE.max_pending);
            Some((Refusal::Busy, detail))
        } else {
            None
        }
    }

    /// Refuses command `id` (naming `module`): counted, logged within
    /// `RATE_LINES` a `RATE_WINDOW` (`host::logger`), answered.
    fn refuse(
        &mut self,
        id: &str,
        why: Refusal,
        detail: String,
        module: &str,
        out: &mut Outgoing<'_>,
    ) {
        self.counts.refused += 1;
        if self
            .log_refused
            .allow(out.now, "commands: refused messages")
        {
            log::warn!("command {id} refused: {} {detail}", why.as_str());
        }
        let a = Answer::Refused { why, detail };
        self.reply(id, module, &a, false, out);
    }

    /// After a read's messages: syncs the table, then the PUBACKs it allows.
    pub fn after_input(&mut self) -> Vec<(u64, u16)> {
        if self.acks.is_empty() {
            return Vec::new();
        }
        match self.table.sync() {
            Ok(()) => std::mem::take(&mut self.acks),
            Err(e) => {
                log::error!(
                    "commands: journal sync: {e}; not acknowledged (the broker sends them again)"
                );
                self.acks.clear();
                Vec::new()
            }
        }
    }

    /// The oldest waiting command's run, when none runs: the daemon starts it
    /// and hands its end back (`Purpose::Command`, `handle_finished`).
    pub fn start_next(&mut self, host: Host<'_>, out: &mut Outgoing<'_>) -> Option<Recipe> {
        let now = out.now;
        if self.running.is_some() || self.retry_at.is_some_and(|t| now < t) {
            return None;
        }
        self.retry_at = None;
        let e = self.table.next_waiting().cloned()?;
        let hex = to_hex(&e.id);
        let State::Waiting(payload) = &e.state else {
            return None;
        };
        let Ok(c) = envelope::parse(&hex, payload) else {
            self.end(e, End::Refused(Refusal::Malformed), out);
            return None;
        };
        let (exe, settings) = match out.port.support(&c.module) {
            Ok(v) if self.allowed.contains(&c.module) => v,
            Ok(_) => {
                self.end(e, End::Refused(Refusal::NotAllowed), out);
                return None;
            }
            Err(_) => {
                self.end(e, End::Refused(Refusal::UnknownModule), out);
                return None;
            }
        };
        let started = Entry {
            state: State::Started,
            ..e.clone()
        };
        if let Err(err) = self.table.set(started).and_then(|_| self.table.sync()) {
            log::error!("command {hex}: journal: {err}; start retried in 5 s");
            // It did not start: waiting again, in the table and in its log (the
            // later record wins), or the retry would find nothing to start.
            let _ = self.table.set(e);
            self.retry_at = Some(now + Duration::from_secs(5));
            return None;
        }
        log::info!("command {hex}: running {} {:?}", c.module, c.args);
        let r = Recipe::command(host, &c.module, &exe, &settings, &c.args, &hex, &c.from);
        self.running = Some(e.id);
        Some(r)
    }

    /// The command's run finished: its `done` reply, synced, then `Done`.
    pub fn handle_finished(&mut self, f: Finished, out: &mut Outgoing<'_>) {
        let Some(id) = self.running.take() else {
            return;
        };
        let Some(e) = self.table.get(&id).cloned() else {
            return;
        };
        let code = f.outcome.code();
        let dur_ms = u32::try_from(crate::core::dur::ms(f.dur)).unwrap_or(u32::MAX);
        log::info!(
            "command {}: {} {} in {dur_ms} ms",
            to_hex(&id),
            e.module,
            f.outcome.describe()
        );
        self.counts.done += 1;
        let text = head_tail(&f.output, envelope::REPLY_OUT_BYTES).into_owned();
        self.finish(e, End::Done { code, dur_ms }, Some(text), out);
    }

    /// Sends the final answer of a command that did not run, then records it.
    fn end(&mut self, e: Entry, end: End, out: &mut Outgoing<'_>) {
        self.finish(e, end, None, out)
    }

    /// Sends the final answer (synced into the spool), then records it.
    fn finish(&mut self, e: Entry, end: End, text: Option<String>, out: &mut Outgoing<'_>) {
        let hex = to_hex(&e.id);
        let mut a = answer(end);
        if let (Answer::Done { out: o, .. }, Some(text)) = (&mut a, text) {
            *o = text;
        }
        let seq = self.reply(&hex, &e.module, &a, false, out);
        if let Some(seq) = seq
            && !out.port.sync(seq, out.now)
        {
            log::error!("command {hex}: its reply is not durable yet (spool sync failed)");
        }
        let e = Entry {
            state: State::Ended(end),
            ..e
        };
        if let Err(err) = self.table.set(e).and_then(|_| self.table.sync()) {
            log::error!("command {hex}: journal: {err}");
        }
    }

    /// A command's figures for `crd status`.
    pub fn status(&self, s: &mut Status) {
        s.count("commands_received", self.counts.received);
        s.count("commands_run", self.counts.done);
        s.count("commands_refused", self.counts.refused);
        s.count("commands_duplicates", self.counts.duplicates);
        s.count("commands_interrupted", self.counts.interrupted);
        s.num("commands_waiting", self.table.pending() as u64);
        s.num("commands_ids_kept", self.table.len() as u64);
    }

    /// When a start that could not be journaled is retried.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.retry_at
    }
}

fn answer(end: End) -> Answer {
    match end {
        End::Done { code, dur_ms } => Answer::Done {
            code,
            dur_ms,
            out: String::new(),
        },
        End::Interrupted => Answer::Interrupted,
        End::Refused(why) => Answer::Refused {
            why,
            detail: String::new(),
        },
        End::Unanswered => Answer::Refused {
            why: Refusal::Expired,
            detail: "not accepted within its ttl".into(),
        },
    }
}

/// What a copy of a command seen before is answered: its state now (the output of
/// a done run is not kept; it went out once, through the spool).
fn answer_of(e: &Entry) -> Answer {
    match e.state {
        State::Waiting(_) | State::Started => Answer::Accepted,
        State::Ended(end) => answer(end),
    }
}

#[cfg(test)]
mod tests {
    //! The edge driven as a machine: its table in memory (`MemStorage`, with
    //! its faults and power cuts), its port in memory, a virtual clock
    //! (`t0 + Duration`) and wall clock; no broker, no disk, no child.
    use super::*;
    use crate::child::recipe::Purpose;
    use crate::child::run::Finished;
    use crate::command::envelope::{Command, Reply};
    use crate::core::config::parse_config;
    use crate::core::decide::Outcome;
    use crate::core::module::Role;
    use crate::spool::storage::{MemStorage, Op};

    const KEY: &[u8] = b"a shared secret of more than 32 bytes";
    const WALL: u64 = 1_800_000_000_000;

    /// The outbox and module directory in memory: replies pushed, how far
    /// they are durable, the modules that exist.
    #[derive(Default)]
    struct MemPort {
        pushed: Vec<Event>,
        durable: u64,
        modules: Vec<&'static str>,
    }

    impl Port for MemPort {
        fn push(&mut self, ev: Event, _: Instant) -> Option<u64> {
            self.pushed.push(ev);
            Some(self.pushed.len() as u64)
        }
        fn sync(&mut self, seq: u64, _: Instant) -> bool {
            self.durable = self.pushed.len() as u64;
            self.durable >= seq
        }
        fn support(&self, name: &str) -> Result<(PathBuf, ModuleSettings), host::error::Error> {
            let exe = PathBuf::from(format!("/opt/CRD/modules/{name}/support"));
            if self.modules.contains(&name) {
                Ok((exe, ModuleSettings::default()))
            } else {
                Err(host::error::Reason::NoSupport(name.into(), exe).into())
            }
        }
    }

    impl MemPort {
        fn with(modules: &[&'static str]) -> MemPort {
            MemPort {
                modules: modules.to_vec(),
                ..MemPort::default()
            }
        }

        /// The replies pushed so far, oldest first, as a sender reads them.
        fn replies(&self) -> Vec<Reply> {
            let parse = |e: &Event| Reply::parse(e.out.as_bytes()).expect("a reply");
            self.pushed.iter().map(parse).collect()
        }
    }

    fn config(extra: &str) -> Config {
        let text = format!("node = edge1\ncommands = Echo\n{extra}");
        parse_config(&text, Path::new("crd.conf")).expect("config")
    }

    fn host() -> Host<'static> {
        Host {
            config: Path::new("crd.conf"),
            node: "edge1",
        }
    }

    fn open(
        st: MemStorage,
        key: Option<&[u8]>,
        port: &mut MemPort,
        t: Instant,
    ) -> Edge<MemStorage> {
        let out = &mut Outgoing {
            port,
            now: t,
            wall: WALL,
        };
        Edge::with(st, &config(""), key.map(<[u8]>::to_vec), "edge1", out).expect("open")
    }

    fn command(n: u8, module: &str, sent: u64) -> Command {
        Command {
            id: format!("{n:02x}").repeat(16),
            module: module.into(),
            args: vec!["a".into()],
            from: "central".into(),
            to: String::new(),
            sent,
            ttl_ms: 60_000,
            sig: None,
        }
    }

    /// Hands `c` to the edge as packet `pkid`; the PUBACKs its sync allows.
    fn deliver(
        e: &mut Edge<MemStorage>,
        c: &Command,
        pkid: u16,
        out: &mut Outgoing<'_>,
    ) -> Vec<(u64, u16)> {
        let payload = serde_json::to_vec(c).expect("json");
        let msg = Message {
            conn: 1,
            pkid: Some(pkid),
            id: &c.id,
            payload: Ok(&payload),
        };
        e.handle(msg, out);
        e.after_input()
    }

    fn ended(r: &Recipe, code: i32, output: &str, t: Instant) -> Finished {
        Finished {
            id: 0,
            module: r.module.clone(),
            role: r.role,
            purpose: r.purpose,
            outcome: Outcome::Exited(code),
            output: output.into(),
            started: t,
            dur: Duration::from_millis(40),
            stopped: false,
        }
    }

    /// Accepted (the PUBACK after the table's sync), run once, its `done`
    /// reply durable before the table says `Done`; a copy afterwards is
    /// answered `resent` and starts nothing.
    #[test]
    fn a_command_runs_once_and_a_copy_gets_its_answer_again() {
        let t0 = Instant::now();
        let mut port = MemPort::with(&["Echo"]);
        let mut e = open(MemStorage::new(), None, &mut port, t0);
        let c = command(1, "Echo", WALL);
        let out = &mut Outgoing {
            port: &mut port,
            now: t0,
            wall: WALL,
        };
        assert_eq!(deliver(&mut e, &c, 7, out), vec![(1, 7)]);
        let r = e.start_next(host(), out).expect("a recipe");
        assert_eq!(
            (r.purpose, r.role, r.module.as_str()),
            (Purpose::Command, Role::Support, "Echo")
        );
        assert_eq!(r.args, vec![std::ffi::OsString::from("a")]);
        assert!(e.start_next(host(), out).is_none(), "one at a time");
        out.now = t0 + Duration::from_secs(1);
        e.handle_finished(ended(&r, 3, "hello\n", t0), out);
        assert!(e.start_next(host(), out).is_none(), "nothing waits");
        assert_eq!(
            deliver(&mut e, &c, 8, out),
            vec![(1, 8)],
            "a copy is acknowledged"
        );
        assert!(e.start_next(host(), out).is_none(), "and runs nothing");
        let r = port.replies();
        let names: Vec<_> = r.iter().map(|r| (r.answer.name(), r.resent)).collect();
        assert_eq!(
            names,
            [("accepted", false), ("done", false), ("done", true)],
            "{r:?}"
        );
        assert!(matches!(&r[1].answer, Answer::Done { code: 3, out, .. } if out == "hello\n"));
        assert_eq!(port.durable, 2, "the done reply was synced");
        let idb = table::id_bytes(&c.id).expect("id");
        assert!(matches!(
            e.table.get(&idb).map(|e| &e.state),
            Some(State::Ended(End::Done { code: 3, .. }))
        ));
    }

    /// A power cut once `Started` is synced: the reopened edge answers
    /// `interrupted` and never starts it again; one cut before leaves it
    /// waiting, and it runs.
    #[test]
    fn a_run_cut_by_a_power_cut_is_interrupted_never_run_twice() {
        let t0 = Instant::now();
        for started in [false, true] {
            let mut port = MemPort::with(&["Echo"]);
            let mut e = open(MemStorage::new(), None, &mut port, t0);
            let out = &mut Outgoing {
                port: &mut port,
                now: t0,
                wall: WALL,
            };
            deliver(&mut e, &command(2, "Echo", WALL), 1, out);
            if started {
                assert!(e.start_next(host(), out).is_some());
            }
            let mut st = e.table.into_storage();
            st.power_cut(|_, _| None, false);
            let mut port = MemPort::with(&["Echo"]);
            let t1 = t0 + Duration::from_secs(30);
            let mut e = open(st, None, &mut port, t1);
            let out = &mut Outgoing {
                port: &mut port,
                now: t1,
                wall: WALL + 30_000,
            };
            let again = e.start_next(host(), out);
            assert_eq!(again.is_some(), !started, "started: {started}");
            let r = port.replies();
            if started {
                assert_eq!(r.len(), 1, "{r:?}");
                assert_eq!(r[0].answer, Answer::Interrupted);
                assert_eq!(e.counts.interrupted, 1);
            } else {
                assert!(r.is_empty(), "{r:?}");
            }
        }
    }

    /// A start whose `Started` cannot be synced is not run; it is tried again
    /// 5 s later on the loop's clock, not before.
    #[test]
    fn a_start_that_cannot_be_journaled_waits_5_s_and_is_tried_again() {
        let t0 = Instant::now();
        let mut port = MemPort::with(&["Echo"]);
        let mut e = open(MemStorage::new(), None, &mut port, t0);
        let out = &mut Outgoing {
            port: &mut port,
            now: t0,
            wall: WALL,
        };
        deliver(&mut e, &command(3, "Echo", WALL), 1, out);
        e.table.storage().fail(Op::Sync, 0, io::ErrorKind::Other);
        assert!(e.start_next(host(), out).is_none());
        assert_eq!(e.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        out.now = t0 + Duration::from_millis(4_999);
        assert!(e.start_next(host(), out).is_none(), "not before its time");
        out.now = t0 + Duration::from_secs(5);
        assert!(e.start_next(host(), out).is_some(), "tried again");
        assert_eq!(e.poll_timeout(), None);
    }

    /// Refusals by the virtual wall clock and the port: expired (remembered:
    /// a copy gets the same answer), unknown module, not allowed, and busy past
    /// 16 waiting (not remembered: sent again once there is room, it is
    /// accepted).
    #[test]
    fn refusals_expired_unknown_not_allowed_and_busy() {
        let t0 = Instant::now();
        let mut port = MemPort::with(&["Echo"]);
        let mut e = open(MemStorage::new(), None, &mut port, t0);
        let out = &mut Outgoing {
            port: &mut port,
            now: t0,
            wall: WALL,
        };
        let old = command(4, "Echo", WALL - 61_000);
        deliver(&mut e, &old, 1, out);
        deliver(&mut e, &old, 2, out);
        e.allowed.push("Gone".into());
        deliver(&mut e, &command(5, "Gone", WALL), 3, out);
        deliver(&mut e, &command(6, "Other", WALL), 4, out);
        for n in 0..16 {
            deliver(&mut e, &command(0x10 + n, "Echo", WALL), 5, out);
        }
        let busy = command(0x40, "Echo", WALL);
        deliver(&mut e, &busy, 6, out);
        let r = port.replies();
        let why = |r: &Reply| match &r.answer {
            Answer::Refused { why, .. } => why.as_str(),
            a => a.name(),
        };
        let got: Vec<_> = r.iter().map(why).collect();
        let mut want = vec!["expired", "expired", "unknown module", "not allowed"];
        want.extend(["accepted"; 16]);
        want.push("busy");
        assert_eq!(got, want);
        let out = &mut Outgoing {
            port: &mut port,
            now: t0,
            wall: WALL,
        };
        let r = e.start_next(host(), out).expect("the oldest waiting");
        e.handle_finished(ended(&r, 0, "", t0), out);
        deliver(&mut e, &busy, 7, out);
        assert_eq!(
            port.replies().last().map(|r| r.answer.name()),
            Some("accepted")
        );
    }

    /// A copy of a known id with a changed argument and the original signature is
    /// a forgery: `bad signature`, not the earlier `done`; the genuine copy still
    /// gets its earlier answer.
    #[test]
    fn a_tampered_copy_of_a_known_id_is_refused_before_the_lookup() {
        let t0 = Instant::now();
        let mut port = MemPort::with(&["Echo"]);
        let mut e = open(MemStorage::new(), Some(KEY), &mut port, t0);
        let mut c = command(9, "Echo", WALL);
        c.sig = Some(envelope::sign(KEY, "edge1", &c));
        // The id is known and its run done (as `handle_finished` leaves it).
        let idb = table::id_bytes(&c.id).expect("id");
        let done = End::Done { code: 0, dur_ms: 1 };
        let entry = Entry {
            id: idb,
            sent: c.sent,
            node: "".into(),
            module: "Echo".into(),
            state: State::Ended(done),
        };
        e.table.set(entry).expect("set");
        let mut tampered = c.clone();
        tampered.args = vec!["rm -rf /".into()];
        let out = &mut Outgoing {
            port: &mut port,
            now: t0,
            wall: WALL,
        };
        deliver(&mut e, &tampered, 1, out);
        deliver(&mut e, &c, 2, out);
        let r = port.replies();
        assert_eq!(r.len(), 2, "{r:?}");
        let bad = Answer::Refused {
            why: Refusal::BadSignature,
            detail: String::new(),
        };
        assert_eq!(r[0].answer, bad, "{r:?}");
        assert!(!r[0].resent, "{r:?}");
        assert!(matches!(r[1].answer, Answer::Done { code: 0, .. }), "{r:?}");
        assert!(r[1].resent, "{r:?}");
        assert_eq!(
            e.table.get(&idb).map(|e| &e.state),
            Some(&State::Ended(done))
        );
    }
}
