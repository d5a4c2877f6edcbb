//! The sender's relay, in a collector daemon: `crd send` on the central host hands
//! its command over the control socket; the relay journals it (a `Waiting` entry
//! of a table like the edge's, in `spool_dir/relay/`, synced before `crd send` is
//! told `ok`) and publishes it at QoS 1 again and again (2 s, doubling to 5 min)
//! until an `accepted` (or final) reply arrives or its ttl passes, so a command to
//! a node that has never connected, whose session the broker does not know yet,
//! still gets there once it does. Replies to the commands it relays arrive on
//! `<prefix>/+/reply/+`; the last `REPLIES_KEPT` of them are kept for `crd
//! replies` and for `crd send --wait`, which asks for them.
//!
//! `busy` is not a final answer: the node had no room then. The command stays
//! `Waiting` and is published again when that node sends a final reply (a slot
//! freed: the oldest busy command to it goes first, one per reply) or, failing
//! that, on its backoff (the oldest busy one to a node only). Commands queued for
//! a node while it is busy wait behind those, so a node takes them in the order
//! they were queued, as its table of ids seen expects. Past its ttl the relay gives up (`unanswered`) and keeps
//! a reply of its own for it, `refused`/`expired`, so `crd send --wait` ends.
//!
//! The edge answers a copy of a command it has already seen with its state
//! (`resent`), never a second run, so republishing is safe. The first final
//! answer stands: a later one (a refused forgery of the id) is kept for `crd
//! replies` but changes no state.
//!
//! The relay is a machine: the daemon hands it `crd send`'s commands, the
//! replies read and `now`/`wall`; it publishes through a `Publish` (the
//! daemon's forwarder; a test's memory), and its table sits on a `Storage`
//! (files in the daemon, memory in the tests). It reads no clock and no file
//! itself (`open`, at start, aside).
//!
//! Protocol of `replies` (control socket): the answer always has a first line,
//! starting `# `, so it is never empty and the client never waits on silence: for
//! the list, the column names; for one id, that command's line
//! (`# ID NODE MODULE STATE SENT_MS`), then its replies kept.

use crate::command::envelope::{self, Answer, Refusal, Reply};
use crate::command::error::{Error, Reason};
use crate::command::table::{self, End, Entry, Limits, State, Table};
use crate::core::sha256::to_hex;
use crate::core::status::Status;
use crate::spool::storage::{FileStorage, Storage};
use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

/// The relay's table: 10,000 commands remembered, 4096 of them not yet answered.
pub const RELAY: Limits = Limits {
    max_ids: 10_000,
    max_pending: 4096,
};
/// The first republish after this; the wait doubles each time.
pub const FIRST_RETRY: Duration = Duration::from_secs(2);
/// The longest wait between two publishes of one command.
pub const MAX_RETRY: Duration = Duration::from_secs(300);
/// Replies kept for `crd replies`, at most, and their bytes at most.
pub const REPLIES_KEPT: usize = 256;
pub const REPLIES_BYTES: usize = 1 << 20;

struct Try {
    id: [u8; 16],
    node: Box<str>,
    at: Instant,
    backoff: Duration,
    /// Its node answered `busy` to the last copy: published again when that
    /// node frees a slot (a final reply), or at `at`.
    busy: bool,
}

/// Where the relay's commands go out: the daemon's forwarder (`daemon::ports`).
pub trait Publish {
    /// Publishes at QoS 1 now; false when it cannot now (not connected, its
    /// window full), and the relay tries again a second later.
    fn publish_now(&mut self, topic: &str, payload: &[u8], now: Instant) -> bool;
}

pub struct Relay<S: Storage = FileStorage> {
    prefix: String,
    table: Table<S>,
    /// Oldest first: the order commands were queued in.
    tries: Vec<Try>,
    /// The newest `now` given (open, queue, pump): a try woken by a reply is due
    /// at it, so `poll_timeout` makes the loop call `pump` at once.
    last_now: Instant,
    replies: VecDeque<([u8; 16], String)>,
    replies_bytes: usize,
    dirty: bool,
    queued: u64,
    published: u64,
    answered: u64,
    unanswered: u64,
}

impl Relay<FileStorage> {
    /// The relay over its table in `spool_dir/relay/`.
    pub fn open(spool_dir: &std::path::Path, prefix: &str, now: Instant) -> Result<Relay, Error> {
        let dir = spool_dir.join("relay");
        let st = FileStorage::open(&dir).map_err(|e| Reason::At(dir.clone(), e))?;
        Relay::with(st, prefix, now).map_err(|e| Reason::At(dir, e).into())
    }
}

impl<S: Storage> Relay<S> {
    /// The relay over the table in `st`: every command not yet accepted is
    /// published again at once.
    pub fn with(st: S, prefix: &str, now: Instant) -> io::Result<Relay<S>> {
        let (table, warnings) = Table::open(st, RELAY)?;
        for w in warnings {
            log::warn!("{w}");
        }
        let tries = table
            .iter()
            .filter(|e| matches!(e.state, State::Waiting(_)))
            .map(|e| Try {
                id: e.id,
                node: e.node.clone(),
                at: now,
                backoff: FIRST_RETRY,
                busy: false,
            })
            .collect::<Vec<_>>();
        if !tries.is_empty() {
            log::info!("relay: {} commands still to deliver", tries.len());
        }
        Ok(Relay {
            prefix: prefix.to_string(),
            table,
            tries,
            last_now: now,
            replies: VecDeque::new(),
            replies_bytes: 0,
            dirty: false,
            queued: 0,
            published: 0,
            answered: 0,
            unanswered: 0,
        })
    }

    /// The replies of every node.
    pub fn filter(&self) -> String {
        format!("{}/+/reply/+", self.prefix)
    }

    /// Whether `topic` is a reply topic, `<prefix>/<node>/reply/<id>`.
    pub fn is_reply(&self, topic: &str) -> bool {
        topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|t| t.strip_prefix('/'))
            .and_then(|t| t.split_once('/'))
            .and_then(|(_, t)| t.strip_prefix("reply/"))
            .is_some_and(|id| !id.contains('/'))
    }

    /// Journals command `body` (JSON, made and signed by `crd send`) for `node`
    /// and schedules its first publish; its id once durable.
    pub fn queue(&mut self, node: &str, body: &[u8], now: Instant) -> Result<String, Error> {
        if let Err(why) = crate::core::config::valid_node(node) {
            return Err(Reason::BadNode(node.to_string(), why).into());
        }
        self.last_now = now;
        let mut c = envelope::read(body)?;
        let c = match envelope::parse(&c.id, body) {
            Ok(_) if !c.to.is_empty() && c.to != node => {
                return Err(Reason::ForAnother(c.to, node.to_string()).into());
            }
            Ok(_) => {
                c.to = node.to_string();
                c
            }
            Err(e) => return Err(e),
        };
        let id = table::id_bytes(&c.id).ok_or(Reason::IdNotBytes)?;
        let min = crate::core::dur::ms(envelope::MIN_TTL);
        if c.ttl_ms < min {
            return Err(Reason::TtlTooShort(c.ttl_ms, min).into());
        }
        if self.table.get(&id).is_some() {
            return Err(Reason::Known(c.id).into());
        }
        if self.table.full() {
            return Err(Reason::Full(RELAY.max_pending).into());
        }
        let payload = serde_json::to_vec(&c).map_err(Reason::Json)?;
        let e = Entry {
            id,
            sent: c.sent,
            node: node.into(),
            module: c.module.as_str().into(),
            state: State::Waiting(payload.into()),
        };
        self.table
            .set(e)
            .and_then(|_| self.table.sync())
            .map_err(Reason::Journal)?;
        // Behind the commands its node answered `busy`: in line, not ahead.
        let busy = self.tries.iter().any(|t| t.busy && *t.node == *node);
        self.tries.push(Try {
            id,
            node: node.into(),
            at: if busy { now + FIRST_RETRY } else { now },
            backoff: FIRST_RETRY,
            busy,
        });
        self.queued += 1;
        log::info!(
            "relay: command {} ({} {:?}) for {node} queued",
            c.id,
            c.module,
            c.args
        );
        Ok(c.id)
    }

    /// Publishes the commands due; ends those past their ttl as `unanswered`,
    /// each with a `refused`/`expired` reply of the relay's own.
    pub fn pump(&mut self, fwd: &mut dyn Publish, now: Instant, wall: u64) {
        self.last_now = now;
        // Nodes with a busy command met in this pass: only the oldest busy
        // command to a node goes out on its timer, so they are taken in order.
        let mut busy_nodes: Vec<Box<str>> = Vec::new();
        let mut i = 0;
        while i < self.tries.len() {
            let t = &mut self.tries[i];
            if t.busy {
                if busy_nodes.contains(&t.node) {
                    if t.at <= now {
                        t.at = now + t.backoff;
                    }
                    i += 1;
                    continue;
                }
                busy_nodes.push(t.node.clone());
            }
            if t.at > now {
                i += 1;
                continue;
            }
            let id = self.tries[i].id;
            let Some(e) = self.table.get(&id).cloned() else {
                self.tries.remove(i);
                continue;
            };
            let State::Waiting(payload) = &e.state else {
                self.tries.remove(i);
                continue;
            };
            let ttl = envelope::parse(&to_hex(&id), payload)
                .map(|c| c.ttl_ms)
                .unwrap_or(0);
            let end_ms = e.sent.saturating_add(ttl);
            if wall >= envelope::CLOCK_SET_MS && end_ms < wall {
                self.give_up(e, wall);
                self.tries.remove(i);
                continue;
            }
            let topic = format!("{}/{}/cmd/{}", self.prefix, e.node, to_hex(&id));
            // Due again after the backoff, or just past the ttl, to give up then.
            let left = match wall >= envelope::CLOCK_SET_MS {
                true => Duration::from_millis(end_ms - wall + 1),
                false => MAX_RETRY,
            };
            let t = &mut self.tries[i];
            if fwd.publish_now(&topic, payload, now) {
                self.published += 1;
                t.at = now + t.backoff.min(left);
                t.backoff = (t.backoff * 2).min(MAX_RETRY);
                t.busy = false;
            } else {
                t.at = now + Duration::from_secs(1).min(left);
            }
            i += 1;
        }
        self.sync();
    }

    /// `e` was not accepted within its ttl: `unanswered`, and answered
    /// `expired` for `crd send --wait` and `crd replies`.
    fn give_up(&mut self, e: Entry, wall: u64) {
        let hex = to_hex(&e.id);
        log::warn!(
            "relay: command {hex} for {} not accepted within its ttl; given up",
            e.node
        );
        self.unanswered += 1;
        let a = Answer::Refused {
            why: Refusal::Expired,
            detail: format!(
                "not accepted by {} within its ttl; the relay gave up",
                e.node
            ),
        };
        let json = envelope::reply_json(&hex, &e.node, &e.module, wall, &a, false);
        self.keep(e.id, json);
        self.set(Entry {
            state: State::Ended(End::Unanswered),
            ..e
        });
    }

    /// Keeps a reply for `crd replies`, within `REPLIES_KEPT` and `REPLIES_BYTES`.
    fn keep(&mut self, id: [u8; 16], text: String) {
        self.replies_bytes += text.len();
        self.replies.push_back((id, text));
        while self.replies.len() > REPLIES_KEPT || self.replies_bytes > REPLIES_BYTES {
            if let Some((_, t)) = self.replies.pop_front() {
                self.replies_bytes -= t.len();
            }
        }
    }

    fn set(&mut self, e: Entry) {
        if let Err(err) = self.table.set(e) {
            log::error!("relay journal: {err}");
        }
        self.dirty = true;
    }

    fn sync(&mut self) {
        if self.dirty {
            self.dirty = false;
            if let Err(e) = self.table.sync() {
                log::error!("relay journal: {e}");
            }
        }
    }

    /// A message on a reply topic: kept and applied if it answers a command this
    /// relay sends.
    pub fn observe(&mut self, payload: &[u8]) {
        let r = match Reply::parse(payload) {
            Ok(r) => r,
            Err(e) => {
                log::debug!("relay: a reply skipped: {e}");
                return;
            }
        };
        let Some(id) = table::id_bytes(&r.id) else {
            return;
        };
        let Some(e) = self.table.get(&id).cloned() else {
            return;
        };
        self.keep(id, String::from_utf8_lossy(payload).into_owned());
        let state = match (&r.answer, &e.state) {
            // The first final answer stands (a relay that gave up learns the
            // real one).
            (_, State::Ended(end)) if *end != End::Unanswered => return,
            (a, State::Waiting(_)) if a.is_busy() => {
                log::debug!("relay: command {} for {}: busy", r.id, e.node);
                if let Some(t) = self.tries.iter_mut().find(|t| t.id == id) {
                    t.busy = true;
                }
                return;
            }
            (a, _) if a.is_busy() => return,
            (Answer::Accepted, State::Waiting(_)) => State::Started,
            (Answer::Accepted, _) => return,
            (Answer::Done { code, dur_ms, .. }, _) => State::Ended(End::Done {
                code: *code,
                dur_ms: *dur_ms,
            }),
            (Answer::Interrupted, _) => State::Ended(End::Interrupted),
            (Answer::Refused { why, .. }, _) => State::Ended(End::Refused(*why)),
        };
        // Accepted or ended: never published again, so no timer of its own.
        self.tries.retain(|t| t.id != id);
        if matches!(state, State::Ended(_)) {
            self.answered += 1;
            // A slot freed at that node: its oldest busy command goes again now.
            let now = self.last_now;
            if let Some(t) = self
                .tries
                .iter_mut()
                .find(|t| t.busy && t.node == e.node && t.id != id)
            {
                t.busy = false;
                t.at = now;
            }
        }
        log::info!(
            "relay: command {} for {}: {}",
            r.id,
            e.node,
            r.answer.name()
        );
        self.set(Entry { state, ..e });
    }

    /// After a read: what `observe` changed, durable.
    pub fn after_input(&mut self) {
        self.sync();
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tries.iter().map(|t| t.at).min()
    }

    /// `crd replies`: after the first line (column names), one line per command
    /// (`ID NODE MODULE STATE SENT_MS`), oldest first; with `id`, that command's
    /// line after `# `, then the replies kept for it, one JSON object a line.
    /// `Err`: why there is no such command.
    pub fn replies(&self, id: Option<&str>) -> Result<String, Error> {
        let mut out = String::new();
        match id {
            Some(hex) => {
                let Some(id) = table::id_bytes(hex) else {
                    return Err(Reason::BadAskedId(hex.to_string()).into());
                };
                let Some(e) = self.table.get(&id) else {
                    return Err(Reason::NoCommand(hex.to_string()).into());
                };
                out.push_str("# ");
                line(&mut out, e);
                for (_, t) in self.replies.iter().filter(|(i, _)| *i == id) {
                    out.push_str(t);
                    out.push('\n');
                }
            }
            None => {
                out.push_str("# ID NODE MODULE STATE SENT_MS\n");
                for e in self.table.iter() {
                    line(&mut out, e);
                }
            }
        }
        Ok(out)
    }

    pub fn status(&self, s: &mut Status) {
        s.count("relay_queued", self.queued);
        s.count("relay_published", self.published);
        s.num("relay_sending", self.tries.len() as u64);
        s.count("relay_answered", self.answered);
        s.count("relay_unanswered", self.unanswered);
    }
}

/// A command's line in `crd replies`: `ID NODE MODULE STATE SENT_MS`.
fn line(out: &mut String, e: &Entry) {
    let state = match &e.state {
        State::Waiting(_) => "sending".to_string(),
        State::Started => "accepted".to_string(),
        State::Ended(End::Done { code, .. }) => format!("done:{code}"),
        State::Ended(End::Interrupted) => "interrupted".to_string(),
        State::Ended(End::Refused(r)) => format!("refused:{}", r.as_str().replace(' ', "-")),
        State::Ended(End::Unanswered) => "unanswered".to_string(),
    };
    out.push_str(&format!(
        "{} {} {} {state} {}\n",
        to_hex(&e.id),
        e.node,
        e.module,
        e.sent
    ));
}

#[cfg(test)]
mod tests {
    //! The relay driven as a machine: its table in memory (`MemStorage`, with
    //! power cuts), its publishes into memory, a virtual clock (`t0 +
    //! Duration`) and wall clock; no broker, no disk.
    use super::*;
    use crate::command::envelope::Command;
    use crate::spool::storage::MemStorage;

    const WALL: u64 = 1_800_000_000_000;

    /// The forwarder in memory: up or not, and what it published (topic, at).
    #[derive(Default)]
    struct Wire {
        down: bool,
        sent: Vec<(String, Instant)>,
    }

    impl Publish for Wire {
        fn publish_now(&mut self, topic: &str, _: &[u8], now: Instant) -> bool {
            if !self.down {
                self.sent.push((topic.to_string(), now));
            }
            !self.down
        }
    }

    fn body(n: u8, sent: u64, ttl_ms: u64) -> (String, Vec<u8>) {
        let c = Command {
            id: format!("{n:02x}").repeat(16),
            module: "Echo".into(),
            args: Vec::new(),
            from: "central".into(),
            to: String::new(),
            sent,
            ttl_ms,
            sig: None,
        };
        (c.id.clone(), serde_json::to_vec(&c).expect("json"))
    }

    fn reply(id: &str, a: &Answer) -> Vec<u8> {
        envelope::reply_json(id, "n1", "Echo", WALL, a, false).into_bytes()
    }

    fn open(st: MemStorage, t: Instant) -> Relay<MemStorage> {
        Relay::with(st, "crd", t).expect("open")
    }

    /// Published at once, again after 2 s, 4 s later, ... until `accepted`
    /// arrives; then never again.
    #[test]
    fn a_command_is_published_again_doubling_until_it_is_accepted() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut r = open(MemStorage::new(), t0);
        let mut w = Wire::default();
        let (id, b) = body(1, WALL, 3_600_000);
        assert_eq!(r.queue("n1", &b, t0).expect("queued"), id);
        for t in [0, 1, 2, 5, 6, 13, 14] {
            r.pump(&mut w, s(t), WALL + t * 1000);
        }
        let at: Vec<_> = w
            .sent
            .iter()
            .map(|(_, t)| t.duration_since(t0).as_secs())
            .collect();
        assert_eq!(at, [0, 2, 6, 14]);
        assert_eq!(w.sent[0].0, format!("crd/n1/cmd/{id}"));
        assert_eq!(r.poll_timeout(), Some(s(30)));
        r.observe(&reply(&id, &Answer::Accepted));
        r.after_input();
        assert_eq!(r.poll_timeout(), None);
        r.pump(&mut w, s(100), WALL + 100_000);
        assert_eq!(w.sent.len(), 4);
        let listed = r.replies(Some(&id)).expect("known");
        assert!(
            listed.starts_with(&format!("# {id} n1 Echo accepted {WALL}\n")),
            "{listed}"
        );
    }

    /// With the forwarder down, tried each second; past its ttl, given up
    /// with a reply of the relay's own, kept for `crd replies`.
    #[test]
    fn offline_it_tries_each_second_and_past_its_ttl_it_gives_up() {
        let t0 = Instant::now();
        let mut r = open(MemStorage::new(), t0);
        let mut w = Wire {
            down: true,
            ..Wire::default()
        };
        let (id, b) = body(2, WALL, 5_000);
        r.queue("n1", &b, t0).expect("queued");
        r.pump(&mut w, t0, WALL);
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        let t6 = t0 + Duration::from_secs(6);
        r.pump(&mut w, t6, WALL + 6_000);
        assert!(w.sent.is_empty());
        assert_eq!((r.unanswered, r.poll_timeout()), (1, None));
        let listed = r.replies(Some(&id)).expect("known");
        assert!(
            listed.contains("unanswered") && listed.contains("the relay gave up"),
            "{listed}"
        );
    }

    /// `busy` keeps a command waiting; a final reply of its node frees a slot
    /// and it goes out in the same turn, not on its backoff.
    #[test]
    fn a_busy_command_goes_again_when_its_node_answers_another() {
        let t0 = Instant::now();
        let mut r = open(MemStorage::new(), t0);
        let mut w = Wire::default();
        let (a, ba) = body(3, WALL, 3_600_000);
        let (b, bb) = body(4, WALL, 3_600_000);
        r.queue("n1", &ba, t0).expect("a");
        r.queue("n1", &bb, t0).expect("b");
        r.pump(&mut w, t0, WALL);
        assert_eq!(w.sent.len(), 2);
        let busy = Answer::Refused {
            why: Refusal::Busy,
            detail: String::new(),
        };
        r.observe(&reply(&b, &busy));
        let t1 = t0 + Duration::from_secs(1);
        let done = Answer::Done {
            code: 0,
            dur_ms: 5,
            out: String::new(),
        };
        r.pump(&mut w, t1, WALL + 1_000);
        r.observe(&reply(&a, &done));
        r.after_input();
        r.pump(&mut w, t1, WALL + 1_000);
        let last = w.sent.last().expect("published");
        assert_eq!((last.0.ends_with(&b), last.1), (true, t1), "{:?}", w.sent);
        assert_eq!(r.answered, 1);
    }

    /// A queued command is synced before `crd send` hears `ok`: after a power
    /// cut the reopened relay publishes it at once; one ended survives as
    /// ended and is not published.
    #[test]
    fn after_a_power_cut_every_command_not_accepted_is_published_again() {
        let t0 = Instant::now();
        let mut r = open(MemStorage::new(), t0);
        let mut w = Wire::default();
        let (a, ba) = body(5, WALL, 3_600_000);
        let (b, bb) = body(6, WALL, 3_600_000);
        r.queue("n1", &ba, t0).expect("a");
        r.queue("n2", &bb, t0).expect("b");
        r.pump(&mut w, t0, WALL);
        let done = Answer::Done {
            code: 0,
            dur_ms: 5,
            out: String::new(),
        };
        r.observe(&reply(&a, &done));
        r.after_input();
        let mut st = r.table.into_storage();
        st.power_cut(|_, _| None, false);
        let t1 = t0 + Duration::from_secs(60);
        let mut r = open(st, t1);
        let mut w = Wire::default();
        r.pump(&mut w, t1, WALL + 60_000);
        let topics: Vec<_> = w.sent.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(topics, [format!("crd/n2/cmd/{b}")]);
        assert!(
            r.replies(Some(&a))
                .expect("known")
                .starts_with(&format!("# {a} n1 Echo done:0"))
        );
    }
}
