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
//! Expiry basis: the edge's wall clock once it is set (after 2020); before that
//! (a router at 1970 before NTP), the newest `sent` among the commands it has
//! accepted, the sender's clock carried forward; with neither, the command runs
//! (there is no basis to refuse it, and a router that has never been reached is
//! the one that most needs its first command).

use crate::child::recipe::{Host, Recipe};
use crate::child::run::Finished;
use crate::command::envelope::{self, Answer, Command, Refusal};
use crate::command::table::{self, End, Entry, State, Table};
use crate::core::config::Config;
use crate::core::event::{Event, Kind};
use crate::core::output::head_tail;
use crate::core::sha256::to_hex;
use crate::core::status::Status;
use crate::host::files;
use crate::host::logger::RateLimit;
use crate::host::modules;
use crate::host::outbox::Outbox;
use crate::spool::storage::FileStorage;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Edge {
    node: String,
    prefix: String,
    allowed: Vec<String>,
    key: Option<Vec<u8>>,
    table: Table<FileStorage>,
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

/// Where the edge's replies go and when: the daemon's outbox (the spool), the
/// loop's `now`, and the wall clock (unix ms) a reply carries.
pub struct Outgoing<'a> {
    pub outbox: &'a mut Outbox,
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
pub fn read_key(path: &Path) -> Result<Vec<u8>, String> {
    let mode = files::mode(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{}: mode {:04o}, must be 0600 (no group or other access)",
            path.display(),
            mode & 0o7777
        ));
    }
    let mut key = files::read_bounded(path, 4096)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .into_bytes();
    while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        key.pop();
    }
    if key.len() < envelope::MIN_KEY_BYTES {
        return Err(format!(
            "{}: {} bytes, a key has at least {}",
            path.display(),
            key.len(),
            envelope::MIN_KEY_BYTES
        ));
    }
    Ok(key)
}

impl Edge {
    /// The edge's commands, when `commands` names any module; runs that a crash
    /// cut are answered `interrupted` here, and commands journaled but never
    /// started are queued again.
    pub fn open(
        cfg: &Config,
        node: &str,
        outbox: &mut Outbox,
        now: Instant,
        wall: u64,
    ) -> Result<Option<Edge>, String> {
        if cfg.commands.is_empty() {
            return Ok(None);
        }
        let key = match &cfg.command_key_file {
            Some(p) => Some(read_key(p).map_err(|e| format!("command_key_file {e}"))?),
            None => None,
        };
        let dir = cfg.spool_dir.join("command");
        let st = FileStorage::open(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (table, warnings) =
            Table::open(st, table::EDGE).map_err(|e| format!("{}: {e}", dir.display()))?;
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
        let mut out = Outgoing { outbox, now, wall };
        for s in e.table.started() {
            log::warn!(
                "command {} ({}): its run was cut by a crash or power cut; not run again",
                to_hex(&s.id),
                s.module
            );
            e.counts.interrupted += 1;
            e.end(s, End::Interrupted, &mut out);
        }
        if let Err(err) = e.table.sync() {
            return Err(format!("{}: {err}", dir.display()));
        }
        log::info!(
            "remote commands on: {} (signed: {}), {} ids remembered, {} waiting",
            e.allowed.join(" "),
            if e.key.is_some() { "yes" } else { "no" },
            e.table.len(),
            e.table.pending()
        );
        Ok(Some(e))
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

    /// Takes allowed modules and the key from a reloaded config.
    pub fn configure(&mut self, cfg: &Config) {
        self.allowed = cfg.commands.clone();
        if let Some(p) = &cfg.command_key_file {
            match read_key(p) {
                Ok(k) => self.key = Some(k),
                Err(e) => log::error!("command_key_file {e}; keeping the key read before"),
            }
        } else {
            self.key = None;
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
        out.outbox.push(
            Event {
                ts_ms: out.wall,
                module: id.to_string(),
                kind: Kind::Reply,
                code: 0,
                dur_ms: 0,
                out: json,
            },
            out.now,
        )
    }

    /// One message on this node's command topic, through the steps the file's
    /// doc lists (1 `check`, 2 the table, 3 `refusal`, 4 the journal). Its
    /// PUBACK is owed once what it changed is durable (`after_input`).
    pub fn handle(&mut self, msg: Message<'_>, cfg: &Config, euid: u32, out: &mut Outgoing<'_>) {
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
        if let Some((why, detail)) = self.refusal(&c, cfg, euid, out.wall) {
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
            Err(e) => return Err(Refused::malformed(e, String::new())),
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
    fn refusal(
        &self,
        c: &Command,
        cfg: &Config,
        euid: u32,
        wall: u64,
    ) -> Option<(Refusal, String)> {
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
        } else if let Err(e) = modules::support(cfg, &c.module, euid) {
            Some((Refusal::UnknownModule, e))
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
    pub fn start_next(
        &mut self,
        host: Host<'_>,
        cfg: &Config,
        euid: u32,
        out: &mut Outgoing<'_>,
    ) -> Option<Recipe> {
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
        let (exe, settings) = match modules::support(cfg, &c.module, euid) {
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
            self.retry_at = Some(now + Duration::from_secs(5));
            return None;
        }
        log::info!("command {hex}: running {} {:?}", c.module, c.args);
        let r = Recipe::command(host, &c.module, &exe, &settings, &c.args, &hex, &c.from);
        self.running = Some(e.id);
        Some(r)
    }

    /// The command's run finished: its `done` reply, synced, then `Done`.
    pub fn handle_finished(&mut self, f: Finished, outbox: &mut Outbox, now: Instant, wall: u64) {
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
        let out = &mut Outgoing { outbox, now, wall };
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
        if let Some(seq) = seq {
            let _ = out.outbox.spool().sync(out.now);
            if out.outbox.spool().durable_seq() < seq {
                log::error!("command {hex}: its reply is not durable yet (spool sync failed)");
            }
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
        s.num("commands_received", self.counts.received);
        s.num("commands_run", self.counts.done);
        s.num("commands_refused", self.counts.refused);
        s.num("commands_duplicates", self.counts.duplicates);
        s.num("commands_interrupted", self.counts.interrupted);
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
    use super::*;
    use crate::command::envelope::{Command, Reply};
    use crate::core::config::parse_config;
    use std::os::unix::fs::PermissionsExt;

    const KEY: &[u8] = b"a shared secret of more than 32 bytes";

    fn dir(tag: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("crd-edge-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        p
    }

    /// The replies in the outbox's spool, oldest first.
    fn replies(outbox: &mut Outbox) -> Vec<Reply> {
        let mut out = Vec::new();
        outbox.spool().sync(Instant::now()).expect("sync");
        while let Ok(Some((_, b))) = outbox.spool().read_next() {
            let ev = crate::core::event::decode(b).expect("an event");
            out.push(Reply::parse(ev.out.as_bytes()).expect("a reply"));
        }
        out
    }

    /// A copy of a known id with a changed argument and the original signature is
    /// a forgery: `bad signature`, not the earlier `done`; the genuine copy still
    /// gets its earlier answer.
    #[test]
    fn a_tampered_copy_of_a_known_id_is_refused_before_the_lookup() {
        let d = dir("tampered");
        let key = d.join("cmd.key");
        std::fs::write(&key, KEY).expect("key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("mode");
        let cfg = parse_config(
            &format!(
                "node = edge1\nspool_dir = {}\nmodules_dir = {}\ncommands = Echo\n\
                 command_key_file = {}\n",
                d.join("spool").display(),
                d.join("modules").display(),
                key.display()
            ),
            Path::new("crd.conf"),
        )
        .expect("config");
        let mut outbox = Outbox::open(&d.join("out"), cfg.spool).expect("outbox");
        let (t0, wall) = (Instant::now(), 1_800_000_000_000);
        let mut edge = Edge::open(&cfg, "edge1", &mut outbox, t0, wall)
            .expect("open")
            .expect("commands on");
        let mut c = Command {
            id: "0123456789abcdef0123456789abcdef".into(),
            module: "Echo".into(),
            args: vec!["a".into()],
            from: "central".into(),
            to: String::new(),
            sent: wall,
            ttl_ms: 60_000,
            sig: None,
        };
        c.sig = Some(envelope::sign(KEY, "edge1", &c));
        let genuine = serde_json::to_vec(&c).expect("json");
        let id = c.id.clone();
        // The id is known and its run done (as `handle_finished` leaves it).
        let idb = table::id_bytes(&id).expect("id");
        let done = End::Done { code: 0, dur_ms: 1 };
        let e = Entry {
            id: idb,
            sent: c.sent,
            node: "".into(),
            module: "Echo".into(),
            state: State::Ended(done),
        };
        edge.table.set(e).expect("set");
        let mut tampered = c.clone();
        tampered.args = vec!["rm -rf /".into()];
        let tampered = serde_json::to_vec(&tampered).expect("json");
        for payload in [&tampered, &genuine] {
            let msg = Message {
                conn: 1,
                pkid: None,
                id: &id,
                payload: Ok(payload),
            };
            let out = &mut Outgoing {
                outbox: &mut outbox,
                now: t0,
                wall,
            };
            edge.handle(msg, &cfg, 0, out);
        }
        let r = replies(&mut outbox);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(
            r[0].answer,
            Answer::Refused {
                why: Refusal::BadSignature,
                detail: String::new()
            },
            "{r:?}"
        );
        assert!(!r[0].resent, "{r:?}");
        assert!(matches!(r[1].answer, Answer::Done { code: 0, .. }), "{r:?}");
        assert!(r[1].resent, "{r:?}");
        assert_eq!(
            edge.table.get(&idb).map(|e| &e.state),
            Some(&State::Ended(done))
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
