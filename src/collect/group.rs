//! Collector groups (`subscribe_group`): which live member of a group does the
//! work of a key. Every member subscribes to its modules' whole filters (no
//! shared subscription), journals every message, feeds every rule register and
//! marks every crd event it sees as done; only the work is split: each
//! (module, origin), origin being a rule's register key, else a crd event's
//! node, else the topic, belongs to one live member, the one with the highest
//! rendezvous weight (`weight`) of its name and the key. So every member's
//! registers hold the whole stream, a crd event sent again finds every
//! member's table of events done, and one origin's checks, responses and
//! reactions run on one member, in order, through one lifecycle.
//!
//! Members are learnt from the bus: a collector publishes its retained status
//! again with `"groups":[...]` once the broker acknowledged its subscription
//! (whatever the broker routes after that status reaches it), and its will or
//! its clean stop says `offline` without them. One broker hands every member
//! those statuses and the messages in one order, so each journal record is
//! decided by the view in force when it was journaled (`Views` keeps a view
//! per journal seq where it changed, until no record before the change is left
//! to take): the same view on every member, hence one owner. A record
//! recovered from the journal at start was journaled under a view this run
//! never saw: it runs here (a crd event done elsewhere is found in the table
//! of events done; otherwise it may run twice). A group none of whose members
//! is known (each member before its own status comes back) runs everything on
//! every member rather than nothing.
//!
//! The last member to leave a group stays in the views as its ghost
//! (`Member::ghost`), owning every key while no live member is left: the
//! messages queued for the members' persistent sessions while the whole group
//! was down are then one member's in every member's order (each reads the
//! same leaves, queued at QoS 1, before that backlog), rather than each
//! member's own. A ghost that comes back is a member again and runs them once
//! its own live status is back (until then it holds them, under `ghost_id`);
//! a member live beside a ghost for `ghost_grace` announces it buried
//! (`Views::bury`, on its progress topic), and where that announcement sits
//! in the order, before or after the ghost's live status, decides on every
//! member alike whether the ghost's backlog is taken over by the live
//! members or run by the ghost come back (`Views::buried`). Statuses replayed as retained at a subscribe
//! land at a different place in each member's order, so on a session the
//! broker kept (the leaves were queued) they change no view. No IO.

use crate::core::module::Module;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Members tracked, over all groups; statuses past it are ignored (counted).
pub const MAX_MEMBERS: usize = 256;
/// Groups one status may name (more are ignored).
pub const MAX_GROUPS_PER_MEMBER: usize = 16;
/// Progress markers kept per member (past it the oldest go: a hold is then
/// released by a later marker, never an earlier one).
pub const MAX_MARKERS: usize = 64;
/// A member publishes its progress at most this often.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Views kept for records not yet taken; past it the two oldest merge (the
/// older records are then decided by the newer view: counted).
pub const MAX_VIEWS: usize = 64;

/// A member's progress (`<prefix>/<node>/progress`, `{"k":K,"done":D}` as
/// `Views::progress` writes it): marker K, and the newest of its own earlier
/// markers before which it finished every record it owns (D, 0: none). Read
/// by hand: a serde derive here cost the collector's build more than the
/// whole group logic.
fn marker(b: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(b).ok()?;
    let (k, done) = s
        .strip_prefix("{\"k\":")?
        .strip_suffix('}')?
        .split_once(",\"done\":")?;
    Some((k.parse().ok()?, done.parse().ok()?))
}

/// The names a bury announcement names (`Views::bury`), at most
/// `MAX_MEMBERS`. By hand, as `marker`.
fn bury_names(b: &[u8]) -> Option<Vec<String>> {
    const KEY: &[u8] = b"{\"bury\":[";
    let mut at = KEY.len();
    if !b.starts_with(KEY) {
        return None;
    }
    let mut out = Vec::new();
    while b.get(at) == Some(&b'"') && out.len() < MAX_MEMBERS {
        let (n, end) = crate::core::json::read_string(b, at).ok()?;
        out.push(n.into_owned());
        at = end + usize::from(b.get(end) == Some(&b','));
    }
    Some(out)
}

/// The longest `period` of the rules of `modules` in a group (zero without
/// any): after that long a joining member's registers hold what a member
/// there before holds.
fn join_wait(modules: &[Module]) -> Duration {
    let grouped = modules
        .iter()
        .filter(|m| m.settings.enabled && m.settings.subscribe_group.is_some());
    let rule = |m: &Module| m.settings.rule.register.and(m.settings.rule.period);
    grouped.filter_map(rule).max().unwrap_or(Duration::ZERO)
}

/// A member's id in holds and progress: its name hashed.
pub fn member_id(name: &str) -> u64 {
    fnv1a(name.as_bytes())
}

/// The groups a crd status names (`mqtt::wire::status_json`: `state` first,
/// `groups` last), and whether it says `"joining":true`: none unless it says
/// `online`. By hand, as `marker`.
fn status_groups(b: &[u8]) -> Option<(Vec<String>, bool)> {
    if !b.starts_with(b"{\"state\":\"") {
        return None;
    }
    if !b.starts_with(b"{\"state\":\"online\"") {
        return Some((Vec::new(), false));
    }
    const JOINING: &[u8] = b",\"joining\":true";
    let joining = b.windows(JOINING.len()).any(|w| w == JOINING);
    const KEY: &[u8] = b",\"groups\":[";
    let Some(at) = b.windows(KEY.len()).position(|w| w == KEY) else {
        return Some((Vec::new(), false));
    };
    let mut at = at + KEY.len();
    let mut out = Vec::new();
    while b.get(at) == Some(&b'"') && out.len() < MAX_GROUPS_PER_MEMBER {
        let (g, end) = crate::core::json::read_string(b, at).ok()?;
        out.push(g.into_owned());
        at = end + usize::from(b.get(end) == Some(&b','));
    }
    Some((out, joining))
}

/// A member: its groups, and whether it is still joining (its registers
/// and its table of events done hold only what came since it joined, so it
/// owns no key while a member that is not joining is left in the group), or
/// a ghost (the last to leave its groups: it owns their keys only while no
/// live member is left).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Member {
    groups: Box<[Box<str>]>,
    joining: bool,
    ghost: bool,
}

impl Member {
    fn of(&self, group: &str) -> bool {
        self.groups.iter().any(|g| &**g == group)
    }
}

/// The live members and the groups each is in, sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members(BTreeMap<Box<str>, Member>);

impl Members {
    /// The member of `group` that owns `key` (`None`: the group has none):
    /// among those not joining, or, with none of those left, among all.
    pub fn owner(&self, group: &str, k: u64) -> Option<&str> {
        let best = |ok: &dyn Fn(&Member) -> bool| {
            self.0
                .iter()
                .filter(|(_, m)| m.of(group) && ok(m))
                .max_by_key(|(name, _)| weight(name, k))
                .map(|(name, _)| &**name)
        };
        best(&|m| !m.ghost && !m.joining)
            .or_else(|| best(&|m| !m.ghost))
            .or_else(|| best(&|m| m.ghost))
    }

    /// Member `name` of `groups` left: in each of them where no live member is
    /// left it stays as the ghost (the older ghost of those groups goes).
    /// Returns the ids of the ghosts gone.
    fn haunt(&mut self, name: &str, groups: &[Box<str>]) -> Vec<u64> {
        let live = |g: &str| self.0.values().any(|m| !m.ghost && m.of(g));
        let last: Vec<Box<str>> = groups.iter().filter(|g| !live(g)).cloned().collect();
        if last.is_empty() {
            return Vec::new();
        }
        let mut gone = Vec::new();
        for (n, m) in self.0.iter_mut().filter(|(_, m)| m.ghost) {
            m.groups = m
                .groups
                .iter()
                .filter(|g| !last.contains(g))
                .cloned()
                .collect();
            if m.groups.is_empty() {
                gone.push(member_id(n));
            }
        }
        self.0.retain(|_, m| !(m.ghost && m.groups.is_empty()));
        let ghost = Member {
            groups: last.into(),
            joining: false,
            ghost: true,
        };
        self.0.insert(name.into(), ghost);
        gone
    }

    /// Whether a ghost is in a group where `name` is a live member.
    fn ghost_beside(&self, name: &str) -> bool {
        let Some(me) = self.0.get(name).filter(|m| !m.ghost) else {
            return false;
        };
        let ghosts = self.0.values().filter(|m| m.ghost);
        ghosts.flat_map(|m| m.groups.iter()).any(|g| me.of(g))
    }

    /// Members in any group (ghosts too).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Live members (not ghosts) in any group.
    pub fn live(&self) -> usize {
        self.0.values().filter(|m| !m.ghost).count()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether member `name` is still joining (`None`: not a member).
    pub fn joining(&self, name: &str) -> Option<bool> {
        self.0.get(name).map(|m| m.joining)
    }

    /// The members other than `name`, not joining, of a group `name` is in,
    /// sorted: those whose registers hold what came before `name` joined.
    pub fn settled_peers(&self, name: &str) -> Vec<&str> {
        let Some(me) = self.0.get(name) else {
            return Vec::new();
        };
        let shares = |m: &Member| me.groups.iter().any(|g| m.of(g));
        let peers = self.0.iter();
        peers
            .filter(|(n, m)| &***n != name && !m.joining && !m.ghost && shares(m))
            .map(|(n, _)| &**n)
            .collect()
    }

    /// `GROUP=MEMBER,MEMBER` for each group, space-separated, sorted; a
    /// member still joining has `(joining)` after its name.
    pub fn describe(&self) -> String {
        let mut groups: Vec<&str> = self
            .0
            .values()
            .flat_map(|m| m.groups.iter().map(|g| &**g))
            .collect();
        groups.sort_unstable();
        groups.dedup();
        let name = |n: &str, m: &Member| match (m.joining, m.ghost) {
            (_, true) => format!("{n}(gone)"),
            (true, _) => format!("{n}(joining)"),
            _ => n.to_string(),
        };
        let each = groups.iter().map(|g| {
            let of_g = self.0.iter().filter(|(_, m)| m.of(g));
            let names: Vec<String> = of_g.map(|(n, m)| name(n, m)).collect();
            format!("{g}={}", names.join(","))
        });
        each.collect::<Vec<_>>().join(" ")
    }

    /// The members as kept on disk (`persist.rs`): per member, a u8 with
    /// the count of its groups (bit 7 set: joining; bit 6: a ghost), its
    /// name and its groups' names, each a u8 length and the bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        let put = |b: &mut Vec<u8>, s: &str| {
            let s = &s.as_bytes()[..s.len().min(255)];
            b.push(s.len() as u8);
            b.extend_from_slice(s);
        };
        for (name, m) in &self.0 {
            let flags = if m.joining { 0x80 } else { 0 } | if m.ghost { 0x40 } else { 0 };
            b.push(m.groups.len() as u8 | flags);
            put(&mut b, name);
            for g in m.groups.iter() {
                put(&mut b, g);
            }
        }
        b
    }

    /// The members from `encode`'s bytes; `None` if they are not that.
    pub fn decode(b: &[u8]) -> Option<Members> {
        let mut at = 0;
        let mut out = BTreeMap::new();
        while at < b.len() {
            let (count, joining, ghost) = (b[at] & 0x3f, b[at] & 0x80 != 0, b[at] & 0x40 != 0);
            at += 1;
            let name = name(b, &mut at)?;
            let groups = (0..count)
                .map(|_| self::name(b, &mut at))
                .collect::<Option<Box<[Box<str>]>>>()?;
            if out.len() < MAX_MEMBERS {
                out.insert(
                    name,
                    Member {
                        groups,
                        joining,
                        ghost,
                    },
                );
            }
        }
        Some(Members(out))
    }

    /// The members of `group`, sorted.
    pub fn of<'a>(&'a self, group: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(_, m)| m.of(group))
            .map(|(n, _)| &**n)
    }
}

/// A name of `Members::encode` at `*at`: a u8 length and UTF-8 bytes.
fn name(b: &[u8], at: &mut usize) -> Option<Box<str>> {
    let n = usize::from(*b.get(*at)?);
    let s = std::str::from_utf8(b.get(*at + 1..*at + 1 + n)?).ok()?;
    *at += 1 + n;
    Some(s.into())
}

/// FNV-1a, 64 bits: the same on every target and byte order.
fn fnv1a(b: &[u8]) -> u64 {
    fnv1a_from(FNV_BASIS, b)
}

const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a of `b` continued from the hash `h` of what came before it.
fn fnv1a_from(h: u64, b: &[u8]) -> u64 {
    b.iter().fold(h, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The rendezvous weight of member `m` for a key hashed to `k` (splitmix64's
/// finalizer over both hashes, so a member's weights are unrelated across keys).
fn weight(m: &str, k: u64) -> u64 {
    let mut z = fnv1a(m.as_bytes()) ^ k.rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The key of module `module`'s work on `origin`: the FNV-1a hash of
/// `module`, a zero byte and `origin` (hashed in place, no copy made; a held
/// job keeps these 8 bytes, not the names).
pub fn key(module: &str, origin: &str) -> u64 {
    let h = fnv1a_from(FNV_BASIS, module.as_bytes());
    fnv1a_from(fnv1a_from(h, &[0]), origin.as_bytes())
}

/// Counters for `crd status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Jobs this member ran or decided as the key's owner.
    pub owned: u64,
    /// Jobs left to the member that owns their key.
    pub others: u64,
    /// Times the members changed.
    pub changes: u64,
    /// Statuses ignored at `MAX_MEMBERS`.
    pub full: u64,
    /// Views merged at `MAX_VIEWS`.
    pub merged: u64,
    /// Jobs of a member that left, not reported done, read after it left:
    /// decided again among the members now.
    pub reassigned: u64,
    /// Ghosts buried after `ghost_grace` (their held work taken over).
    pub buried: u64,
    /// Retained statuses a subscribe replayed on a kept session: no change.
    pub replayed: u64,
}

/// The views by the journal seq from which each holds.
#[derive(Debug)]
pub struct Views {
    node: Box<str>,
    /// (first journal seq, members), oldest first; never empty.
    views: VecDeque<(u64, Rc<Members>)>,
    pub counts: Counts,
    /// The members changed since they were last made durable: records
    /// journaled under the new view must not be durable before it is.
    pub unsynced: bool,
    progress: Progress,
    join: Join,
    /// `group_join_wait` (`None`: the longest `period` of the rules).
    join_wait: Option<Duration>,
    /// How long a ghost beside this member may come back (`bury`).
    ghost_grace: Duration,
    /// Since when this member is live beside a ghost.
    beside_ghost: Option<Instant>,
    /// The broker kept this member's session at its last connect: the
    /// statuses of the time it was away were queued in order.
    session_kept: bool,
    /// Started with members kept on disk (a restart, not a new member): its
    /// kept session had the status filter already.
    restarted: bool,
    /// The id work this member owns as a ghost is held under until its own
    /// live status is back or it is buried: never its own id, which its own
    /// progress markers release.
    ghost_id: u64,
}

/// `ghost_grace` unless set: the daemon sets 2 × keepalive.
const GHOST_GRACE: Duration = Duration::from_secs(60);

/// This member's joining: it announces itself `"joining":true` until its
/// registers hold a whole rule period of the stream (`Views::settle`).
#[derive(Debug, PartialEq, Eq)]
enum Join {
    /// Not joining: a member since before this run (kept on disk), or done.
    Settled,
    /// Joining; once its own joining status came back through the broker
    /// (from there on it reads what the others read): when, and how long its
    /// registers need from then.
    Joining(Option<(Instant, Duration)>),
}

/// Whether this member does a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// This member.
    Me,
    /// Another live member (`member_id`).
    Other(u64),
}

/// The members' progress markers, by the journal seq each arrived before
/// here. The broker hands every member the markers and the messages in one
/// order, so a marker sits between the same two messages in every member's
/// journal, and "done before marker D" names the same records everywhere.
#[derive(Debug, Default)]
struct Progress {
    /// Per member id: (marker, journal seq it arrived before), ascending.
    marks: BTreeMap<u64, VecDeque<(u64, u64)>>,
    /// This member's next marker (1 after each start: a lower number than
    /// the last seen says a member restarted).
    next: u64,
    /// When this member last published one, and its number while it has not
    /// come back (a lost one is given up after `MARKER_LOST`).
    last: Option<Instant>,
    outstanding: Option<u64>,
    /// The journal seq the last published `done` stood for.
    reported: u64,
    /// Per member id: the journal seq before which it finished all it owns.
    done_before: BTreeMap<u64, u64>,
    /// When the views were made (the first marker is due from then).
    started: Option<Instant>,
}

/// A marker of this member's not back after this long is taken as lost.
const MARKER_LOST: Duration = Duration::from_secs(5);

impl Views {
    /// Views for member `node`, starting with the members kept on disk (the
    /// view of the records recovered from the journal, and of the next ones
    /// until a status changes it). Without any kept, the groups have no
    /// member, and records journaled before `first_seq` (recovered) run here.
    pub fn new(
        node: &str,
        first_seq: u64,
        kept: Option<Members>,
        now: Instant,
        join_wait: Option<Duration>,
    ) -> Views {
        let join = match kept.as_ref().and_then(|k| k.joining(node)) {
            Some(false) => Join::Settled,
            _ => Join::Joining(None),
        };
        let restarted = kept.as_ref().is_some_and(|m| !m.is_empty());
        let (from, members) = match kept {
            Some(m) if !m.is_empty() => (0, m),
            _ => (first_seq, Members::default()),
        };
        let mut views = VecDeque::new();
        views.push_back((from, Rc::new(members)));
        Views {
            node: node.into(),
            views,
            counts: Counts::default(),
            unsynced: false,
            progress: Progress {
                next: 1,
                started: Some(now),
                ..Progress::default()
            },
            join,
            join_wait,
            ghost_grace: GHOST_GRACE,
            beside_ghost: None,
            session_kept: false,
            restarted,
            ghost_id: fnv1a_from(member_id(node), b"(gone)"),
        }
    }

    /// Whether this member is still joining: its status says so, and it owns
    /// no key while a member that is not is left in its groups.
    pub fn joining(&self) -> bool {
        self.join != Join::Settled
    }

    /// This member's own joining status came back at `now` (what the broker
    /// routes to the group reaches it from there on): its registers hold a
    /// whole period of the stream after the longest `period` of the rules of
    /// `modules` in a group, or `group_join_wait` when set.
    pub fn joined(&mut self, now: Instant, modules: &[Module]) {
        if self.join == Join::Joining(None) {
            let wait = self.join_wait.unwrap_or_else(|| join_wait(modules));
            self.join = Join::Joining(Some((now, wait)));
        }
    }

    /// When this member stops joining (`settle`): after its wait, or at once
    /// when no other member of its groups is settled (then nobody knows more
    /// than it does: a group starting, or the others gone).
    pub fn settle_due(&self) -> Option<Instant> {
        let Join::Joining(Some((at, wait))) = self.join else {
            return None;
        };
        if self.now().settled_peers(&self.node).is_empty() {
            return Some(at);
        }
        Some(at + wait)
    }

    /// Stops joining when due at `now`: `true` when this member is to say so
    /// in its status.
    pub fn settle(&mut self, now: Instant) -> bool {
        if self.settle_due().is_some_and(|t| t <= now) {
            self.join = Join::Settled;
            return true;
        }
        false
    }

    /// The members now (of the records journaled next).
    pub fn now(&self) -> &Members {
        &self.views.back().expect("never empty").1
    }

    /// A status of `node` (`<prefix>/<node>/status`), in the order the broker
    /// delivered it, before record `next_seq` is journaled: `None` if the
    /// members did not change, else the ids of those that left.
    pub fn status(&mut self, node: &str, payload: &[u8], next_seq: u64) -> Option<Vec<u64>> {
        let (groups, joining) = status_groups(payload)?;
        let groups: Box<[Box<str>]> = groups
            .iter()
            .filter(|g| crate::core::topic::valid_group(g).is_ok())
            .map(|g| g.as_str().into())
            .collect();
        let member = Member {
            groups,
            joining,
            ghost: false,
        };
        let now = self.now();
        let leaving = member.groups.is_empty();
        match now.0.get(node) {
            None if leaving => return None,
            Some(m) if *m == member => return None,
            // A ghost left already (its offline again, its will late).
            Some(m) if leaving && m.ghost => return None,
            _ => {}
        }
        if !leaving && !now.0.contains_key(node) && now.0.len() >= MAX_MEMBERS {
            self.counts.full += 1;
            return None;
        }
        let mut next = now.clone();
        // A member that left, or whose groups changed: its held work is
        // decided again (where it is still the owner, it stays its).
        let mut left = match now.0.get(node) {
            Some(_) => vec![member_id(node)],
            None => Vec::new(),
        };
        if leaving {
            let old = next.0.remove(node).expect("a member");
            left.extend(next.haunt(node, &old.groups));
        } else {
            next.0.insert(node.into(), member);
        }
        if left.contains(&member_id(&self.node)) {
            // This member was a ghost here: what it held as one is decided again.
            left.push(self.ghost_id);
        }
        self.push_view(next, next_seq);
        Some(left)
    }

    /// `next` becomes the view of the records from `next_seq` on. A view no
    /// record was journaled under is kept too: the work held when it came
    /// was decided by it (`owner` walks the changes). Past `MAX_VIEWS` the
    /// oldest such view goes, else the two oldest merge (the older one's
    /// records then go by the newer): counted either way.
    fn push_view(&mut self, next: Members, next_seq: u64) {
        self.counts.changes += 1;
        self.unsynced = true;
        self.views.push_back((next_seq, Rc::new(next)));
        if self.views.len() > MAX_VIEWS {
            self.counts.merged += 1;
            let empty = (0..self.views.len() - 1).find(|&i| self.views[i].0 >= self.views[i + 1].0);
            if let Some(i) = empty {
                self.views.remove(i);
            } else {
                let (from, _) = self.views.pop_front().expect("over the bound");
                self.views[0].0 = from;
            }
        }
    }

    /// Connected; `kept`: the broker kept the session.
    pub fn connected(&mut self, kept: bool) {
        self.session_kept = kept;
    }

    /// Whether a status that came `retained` (replayed at a subscribe) is to
    /// be read: not on a kept session of a member restarted with its
    /// members, where the live ones were queued in their place and a
    /// replayed one lands elsewhere in each member's order. A new member
    /// (whose kept session, if any, may not have had the status filter: a
    /// prefix changed, a state wiped) learns the members from them.
    pub fn reads_status(&mut self, retained: bool) -> bool {
        if retained && self.session_kept && self.restarted {
            self.counts.replayed += 1;
            return false;
        }
        true
    }

    /// Sets how long a member live beside a ghost waits for it to come back
    /// before it takes over what it holds for it.
    pub fn set_ghost_grace(&mut self, grace: Duration) {
        self.ghost_grace = grace;
    }

    /// After a status at `now`: whether this member is live beside a ghost
    /// (from when).
    pub fn note_ghosts(&mut self, now: Instant) {
        if !self.now().ghost_beside(&self.node) {
            self.beside_ghost = None;
        } else if self.beside_ghost.is_none() {
            self.beside_ghost = Some(now);
        }
    }

    /// When the ghosts beside this member are to be buried (`bury`).
    pub fn bury_due(&self) -> Option<Instant> {
        self.beside_ghost.map(|t| t + self.ghost_grace)
    }

    /// The announcement that the ghosts beside this member are buried
    /// (`bury_due` passed): `{"bury":[names]}`, published on this member's
    /// progress topic; they go where it comes back (`buried`). Announced
    /// again after another grace while they are still ghosts here.
    pub fn bury(&mut self, now: Instant) -> Option<Vec<u8>> {
        let ghosts: Vec<String> = self
            .now()
            .0
            .iter()
            .filter(|(_, m)| m.ghost)
            .map(|(n, _)| n.to_string())
            .collect();
        self.beside_ghost = (!ghosts.is_empty()).then_some(now);
        if ghosts.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        crate::core::json::Obj::new(&mut out)
            .strs("bury", &ghosts)
            .end();
        Some(out)
    }

    /// A member's announcement `payload` (`bury`), read before record
    /// `next_seq`: the members it names that are still ghosts go from the
    /// view (they owned nothing from where a member was live). In every
    /// member's order it sits at one place: a ghost whose live status came
    /// before it stays, one whose status comes after it finds its backlog
    /// taken over. `None` if nothing changed, else the ids whose held work
    /// the key's owners now take over.
    pub fn buried(&mut self, payload: &[u8], next_seq: u64) -> Option<Vec<u64>> {
        let names = bury_names(payload)?;
        let mut next = self.now().clone();
        let mut gone = Vec::new();
        for n in &names {
            if next.0.get(n.as_str()).is_some_and(|m| m.ghost) {
                next.0.remove(n.as_str());
                self.counts.buried += 1;
                gone.push(member_id(n));
                if **n == *self.node {
                    gone.push(self.ghost_id);
                }
            }
        }
        if gone.is_empty() {
            return None;
        }
        self.push_view(next, next_seq);
        Some(gone)
    }

    /// Who does the work of `key` in `group` for journal record `seq`: its
    /// owner among the members of when it was journaled; if that one left or
    /// changed since (the record is read after the status was heard) and had
    /// not reported it done, its owner among the members right after that
    /// change, and so on: as a job held when the change came is taken over
    /// (`status`, `buried`), so a member that reads late decides as one that
    /// read early. This member as a ghost holds its own (`ghost_id`).
    pub fn owner(&mut self, group: &str, key: u64, seq: u64) -> Owner {
        let i = self.views.partition_point(|(from, _)| *from <= seq);
        let Some(mut i) = i.checked_sub(1) else {
            // Journaled before this run: not knowing the view, run it.
            return Owner::Me;
        };
        let mut moved = false;
        let owner = loop {
            let view = &self.views[i].1;
            let Some(m) = view.owner(group, key) else {
                break None;
            };
            let was = view.0.get(m);
            let changed = (i + 1..self.views.len()).find(|&j| self.views[j].1.0.get(m) != was);
            let Some(j) = changed else {
                break Some(m);
            };
            if self.done_by(member_id(m), seq) {
                // It reported this one done before it changed: still its.
                break Some(m);
            }
            moved = true;
            i = j;
        };
        self.counts.reassigned += u64::from(moved);
        match (owner, self.ghost_held()) {
            (Some(m), _) if m != &*self.node => Owner::Other(member_id(m)),
            // This member as its ghost: held until its live status is back.
            (Some(_), Some(ghost)) => Owner::Other(ghost),
            _ => Owner::Me,
        }
    }

    /// The id this member holds what it owns as a ghost under, while it is
    /// one (its live status not back yet): its progress must not say that
    /// work done.
    pub fn ghost_held(&self) -> Option<u64> {
        let me = self.now().0.get(&*self.node);
        me.is_some_and(|m| m.ghost).then_some(self.ghost_id)
    }

    /// The owner of `key` in `group` now, if another member (`member_id`).
    pub fn other_now(&self, group: &str, key: u64) -> Option<u64> {
        self.now()
            .owner(group, key)
            .filter(|m| *m != &*self.node)
            .map(member_id)
    }

    /// Counts a job done here or left to its owner.
    pub fn count(&mut self, o: Owner) {
        match o {
            Owner::Me => self.counts.owned += 1,
            Owner::Other(_) => self.counts.others += 1,
        }
    }

    /// A progress marker of `node`, arrived before journal record
    /// `next_seq`: the member's id and the journal seq before which it has
    /// finished every record it owns (`None`: nothing known yet).
    pub fn marker(&mut self, node: &str, payload: &[u8], next_seq: u64) -> Option<(u64, u64)> {
        let (k, done) = marker(payload)?;
        let id = member_id(node);
        let marks = self.progress.marks.entry(id).or_default();
        if marks.back().is_some_and(|&(last, _)| last >= k) {
            // Numbered from 1 again: it restarted, its old markers mean nothing.
            marks.clear();
        }
        marks.push_back((k, next_seq));
        if marks.len() > MAX_MARKERS {
            marks.pop_front();
        }
        let i = marks.partition_point(|&(mk, _)| mk <= done);
        if id == member_id(&self.node) && self.progress.outstanding == Some(k) {
            self.progress.outstanding = None;
        }
        let marks = &self.progress.marks[&id];
        let before = marks.get(i.checked_sub(1)?)?.1;
        let b = self.progress.done_before.entry(id).or_default();
        *b = (*b).max(before);
        Some((id, before))
    }

    /// Per member id, the journal seq before which it reported everything
    /// it owns done: what is handed to it is released up to there.
    pub fn done_marks(&self) -> Vec<(u64, u64)> {
        self.progress
            .done_before
            .iter()
            .map(|(&id, &b)| (id, b))
            .collect()
    }

    /// Whether member `id` reported record `seq` done (it finished all it
    /// owns journaled before a later one).
    pub fn done_by(&self, id: u64, seq: u64) -> bool {
        self.progress.done_before.get(&id).is_some_and(|&b| seq < b)
    }

    /// This member's newest marker back at or before journal seq `upto`:
    /// (its number, where it arrived), (0, 0) if none.
    fn own_done(&self, upto: u64) -> (u64, u64) {
        let Some(m) = self.progress.marks.get(&member_id(&self.node)) else {
            return (0, 0);
        };
        let i = m.partition_point(|&(_, at)| at <= upto);
        i.checked_sub(1).map_or((0, 0), |i| m[i])
    }

    /// When this member has progress to publish (`progress`): while its
    /// groups have another member, no marker of its is on its way, and
    /// records arrived since its last marker or its `done` moved. `upto`:
    /// the oldest record it owns not yet finished, or not yet read;
    /// `next_seq`: the journal's next record.
    pub fn progress_due(&self, upto: u64, next_seq: u64) -> Option<Instant> {
        let p = &self.progress;
        if self.now().len() < 2 {
            return None;
        }
        if p.outstanding.is_some() {
            return p.last.map(|t| t + MARKER_LOST);
        }
        let last_at = p
            .marks
            .get(&member_id(&self.node))
            .and_then(|m| m.back())
            .map_or(0, |&(_, at)| at);
        let (_, done_at) = self.own_done(upto);
        let news = next_seq > last_at || done_at > p.reported || last_at == 0;
        news.then(|| p.last.map(|t| t + PROGRESS_INTERVAL).or(p.started))?
    }

    /// This member's progress to publish at `now`, when due
    /// (`progress_due`): a new marker, and the newest of its own markers
    /// back at or before `upto` (0: none).
    pub fn progress(&mut self, upto: u64, next_seq: u64, now: Instant) -> Option<Vec<u8>> {
        if self.progress_due(upto, next_seq)? > now {
            return None;
        }
        let (done, at) = self.own_done(upto);
        let p = &mut self.progress;
        p.last = Some(now);
        p.reported = at;
        let k = p.next;
        p.next += 1;
        p.outstanding = Some(k);
        Some(format!("{{\"k\":{k},\"done\":{done}}}").into_bytes())
    }

    /// Records before `seq` are all taken: the views only they needed go.
    pub fn taken_before(&mut self, seq: u64) {
        while self.views.len() > 1 && self.views[1].0 <= seq {
            self.views.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn online(groups: &[&str]) -> Vec<u8> {
        let g: Vec<String> = groups.iter().map(|g| format!("\"{g}\"")).collect();
        format!(
            "{{\"state\":\"online\",\"node\":\"x\",\"groups\":[{}]}}",
            g.join(",")
        )
        .into_bytes()
    }

    const OFFLINE: &[u8] = b"{\"state\":\"offline\",\"node\":\"x\"}";

    fn joining(groups: &[&str]) -> Vec<u8> {
        let g: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        crate::mqtt::wire::status_json("online", "x", "00", 1, &g, true)
    }

    /// A member joining owns no key while a settled one is left, and
    /// settles after its wait, or at once when nobody knows more than it.
    #[test]
    fn a_joining_member_owns_nothing_until_it_settles() {
        let t0 = Instant::now();
        let wait = Duration::from_secs(60);
        let mut v = Views::new("c", 1, None, t0, Some(wait));
        assert!(v.joining(), "no state kept: joining");
        v.status("a", &online(&["g"]), 1);
        v.status("b", &online(&["g"]), 1);
        v.status("c", &joining(&["g"]), 1);
        assert_eq!(v.now().describe(), "g=a,b,c(joining)");
        assert_eq!(v.now().settled_peers("c"), ["a", "b"]);
        assert_eq!(v.settle_due(), None, "its own status not back yet");
        v.joined(t0, &[]);
        let keys: Vec<u64> = (0..300).map(|i| key("M", &format!("n{i}"))).collect();
        for k in &keys {
            assert_ne!(v.now().owner("g", *k), Some("c"));
        }
        assert_eq!(v.settle_due(), Some(t0 + wait));
        assert!(!v.settle(t0 + wait / 2));
        assert!(v.settle(t0 + wait));
        assert!(!v.joining());
        assert!(
            v.status("c", &online(&["g"]), 5).is_some(),
            "its settled status"
        );
        let owns = keys.iter().filter(|k| v.now().owner("g", **k) == Some("c"));
        assert!((50..=150).contains(&owns.count()), "a third of the keys");
        // Kept on disk: a restart is settled at once.
        let kept = Members::decode(&v.now().encode()).unwrap();
        assert_eq!(&kept, v.now());
        assert!(!Views::new("c", 9, Some(kept.clone()), t0, None).joining());
        assert!(
            Views::new("d", 9, Some(kept), t0, None).joining(),
            "not kept"
        );
    }

    #[test]
    fn joining_members_own_the_keys_when_no_settled_one_is_left() {
        let t0 = Instant::now();
        let long = Some(Duration::from_secs(600));
        let mut v = Views::new("c", 1, None, t0, long);
        v.status("a", &online(&["g"]), 1);
        v.status("c", &joining(&["g"]), 1);
        v.status("d", &joining(&["g"]), 1);
        v.joined(t0, &[]);
        assert_eq!(v.now().owner("g", fnv1a(b"k")), Some("a"));
        v.status("a", OFFLINE, 2);
        let owner = v.now().owner("g", fnv1a(b"k")).unwrap();
        assert!(owner == "c" || owner == "d");
        assert_eq!(v.settle_due(), Some(t0), "nobody knows more: at once");
        assert!(v.settle(t0));
        // A group starting together: each finds no settled peer.
        let mut w = Views::new("e", 1, None, t0, long);
        w.status("f", &joining(&["g"]), 1);
        w.status("e", &joining(&["g"]), 1);
        w.joined(t0, &[]);
        assert!(w.settle(t0));
    }

    /// The whole group stopped (a, then b, the last), messages queued for
    /// both, both started again: each reads the same leaves before the
    /// backlog, so the backlog is the ghost b's on both, and a's and b's
    /// after a comes back.
    #[test]
    fn the_last_member_to_leave_owns_the_backlog_as_a_ghost_on_every_member() {
        let t0 = Instant::now();
        let both = {
            let mut v = Views::new("a", 1, None, t0, None);
            v.status("a", &online(&["g"]), 1);
            v.status("b", &online(&["g"]), 1);
            v.now().encode()
        };
        let keys: Vec<u64> = (0..50).map(|i| key("M", &format!("n{i}"))).collect();
        let b_id = Owner::Other(member_id("b"));
        // a stopped first, while b ran: it kept both; b saw a leave.
        let mut a = Views::new("a", 1, Members::decode(&both), t0, None);
        let mut b = {
            let mut v = Views::new("b", 1, Members::decode(&both), t0, None);
            v.status("a", OFFLINE, 1);
            Views::new("b", 1, Members::decode(&v.now().encode()), t0, None)
        };
        assert!(!a.joining() && !b.joining(), "restarted with their state");
        a.connected(true);
        b.connected(true);
        // Queued in order: a's own leave (on a), b's leave, the backlog.
        assert!(a.status("a", OFFLINE, 10).is_some());
        assert!(a.status("b", OFFLINE, 10).is_some());
        assert!(b.status("b", OFFLINE, 10).is_some());
        assert_eq!(a.now().describe(), "g=b(gone)");
        assert_eq!(b.now().describe(), "g=b(gone)");
        let b_ghost = Owner::Other(b.ghost_id);
        for &k in &keys {
            assert_eq!(a.owner("g", k, 10), b_id, "the ghost's, held on a");
            assert_eq!(b.owner("g", k, 10), b_ghost, "b holds it as the ghost");
        }
        // A status replayed at a subscribe on a kept session changes nothing;
        // a new member (no members kept) reads them.
        assert!(!a.reads_status(true) && a.reads_status(false));
        assert_eq!(a.counts.replayed, 1);
        let mut fresh = Views::new("c", 1, None, t0, None);
        fresh.connected(true);
        assert!(fresh.reads_status(true), "how a new member learns them");
        // A ghost's offline again (its will, late) changes nothing either.
        assert_eq!(a.status("b", OFFLINE, 11), None);
        // a comes back: the records after it are a's on both.
        a.status("a", &online(&["g"]), 20);
        b.status("a", &online(&["g"]), 20);
        a.note_ghosts(t0);
        b.note_ghosts(t0);
        for &k in &keys {
            assert_eq!(a.owner("g", k, 20), Owner::Me);
            assert_eq!(b.owner("g", k, 20), Owner::Other(member_id("a")));
            assert_eq!(a.owner("g", k, 19), b_id, "still the ghost's");
        }
        // Kept on disk with the ghost.
        assert_eq!(Members::decode(&a.now().encode()).as_ref(), Some(a.now()));
        assert_eq!(b.bury_due(), None, "b is the ghost, not beside one");
        let grace = Duration::from_secs(4);
        a.set_ghost_grace(grace);
        assert_eq!(a.bury_due(), Some(t0 + grace));
        // b back in time: a member again, nothing to bury.
        let mut a2 = Views::new("a", 1, Members::decode(&a.now().encode()), t0, None);
        a2.status("b", &online(&["g"]), 30);
        a2.note_ghosts(t0);
        assert_eq!(a2.bury_due(), None);
        assert_eq!(a2.now().describe(), "g=a,b");
        // b never back: announced buried after the grace; gone where the
        // announcement comes back, what was held for it is a's.
        let said = a.bury(t0 + grace).expect("a ghost beside");
        assert_eq!(said, b"{\"bury\":[\"b\"]}");
        assert_eq!(a.bury_due(), Some(t0 + grace * 2), "said again if not back");
        assert_eq!(a.now().describe(), "g=a,b(gone)", "until it comes back");
        assert_eq!(a.buried(&said, 30), Some(vec![member_id("b")]));
        assert_eq!(a.now().describe(), "g=a");
        assert_eq!(a.buried(&said, 31), None, "said twice: once");
        assert_eq!(a.counts.buried, 1);
        for &k in &keys {
            assert_eq!(a.owner("g", k, 19), Owner::Me, "taken over");
            assert_eq!(a.other_now("g", k), None);
        }
    }

    /// A ghost back late, or a member that buried it: where the bury sits in
    /// the order against the ghost's live status decides, on both alike, who
    /// runs the ghost's backlog (the live members, or the members now with
    /// the ghost back); never both, never none.
    #[test]
    fn a_bury_and_the_ghosts_return_decide_alike_in_either_order() {
        let t0 = Instant::now();
        let kept = |node| {
            let mut v = Views::new(node, 1, None, t0, None);
            v.status("a", &online(&["g"]), 1);
            v.status("b", &online(&["g"]), 1);
            v.status("a", OFFLINE, 1);
            v.status("b", OFFLINE, 1);
            Views::new(node, 1, Members::decode(&v.now().encode()), t0, None)
        };
        let keys: Vec<u64> = (0..50).map(|i| key("M", &format!("n{i}"))).collect();
        let bury = b"{\"bury\":[\"b\"]}";
        for bury_first in [true, false] {
            let (mut a, mut b) = (kept("a"), kept("b"));
            assert_eq!(a.now().describe(), "g=b(gone)");
            a.status("a", &online(&["g"]), 10);
            b.status("a", &online(&["g"]), 10);
            let b_ghost = Owner::Other(b.ghost_id);
            for &k in &keys {
                assert_eq!(a.owner("g", k, 5), Owner::Other(member_id("b")));
                assert_eq!(b.owner("g", k, 5), b_ghost, "held until b's status");
            }
            let step = |i: usize, v: &mut Views| match i {
                0 => v.buried(bury, 11),
                _ => v.status("b", &online(&["g"]), 12),
            };
            let order = if bury_first { [0, 1] } else { [1, 0] };
            // What each held for the ghost goes, as `take_over` does it, to
            // the key's owner when the first of the two is read; the second
            // changes nothing held any more.
            let mut runs = vec![[false; 2]; keys.len()];
            for (n, i) in order.into_iter().enumerate() {
                let left = (step(i, &mut a), step(i, &mut b));
                if n == 1 {
                    let ids = left.0.iter().chain(&left.1).flatten().count();
                    assert_eq!(ids, 0, "nothing held left to decide: {left:?}");
                    continue;
                }
                let (left_a, left_b) = (left.0.unwrap(), left.1.unwrap());
                assert!(left_a.contains(&member_id("b")), "a decides b's again");
                assert!(left_b.contains(&b.ghost_id), "b decides its ghost's again");
                for (r, &k) in runs.iter_mut().zip(&keys) {
                    *r = [a.other_now("g", k).is_none(), b.other_now("g", k).is_none()];
                }
            }
            assert_eq!(a.now().describe(), "g=a,b");
            assert_eq!(b.now().describe(), "g=a,b");
            // Exactly one runs each: all on a after a bury, split by the
            // members now where b came back first.
            assert!(runs.iter().all(|r| r[0] != r[1]), "{bury_first}: {runs:?}");
            let on_b = runs.iter().filter(|r| r[1]).count();
            assert_eq!(on_b == 0, bury_first, "{on_b} of {} on b", keys.len());
            assert_eq!(a.counts.buried, u64::from(bury_first));
        }
    }

    /// A ghost leaves its place to the next last member: one a group.
    #[test]
    fn a_group_has_one_ghost_the_last_to_leave() {
        let mut v = Views::new("c", 1, None, Instant::now(), None);
        v.status("a", &online(&["g", "h"]), 1);
        v.status("b", &online(&["g"]), 1);
        v.status("a", OFFLINE, 2);
        assert_eq!(v.now().describe(), "g=b h=a(gone)");
        assert_eq!(v.status("b", OFFLINE, 3), Some(vec![member_id("b")]));
        assert_eq!(v.now().describe(), "g=b(gone) h=a(gone)");
        v.status("a", &online(&["g"]), 4);
        v.status("a", OFFLINE, 5);
        assert_eq!(v.now().describe(), "g=a(gone)", "b's place and h gone");
        assert_eq!(v.now().live(), 0);
    }

    #[test]
    fn every_key_has_one_owner_and_a_member_leaving_moves_only_its_keys() {
        let mut v = Views::new("a", 1, None, Instant::now(), None);
        for m in ["a", "b", "c"] {
            assert!(v.status(m, &online(&["g"]), 1).is_some());
        }
        let before: Vec<String> = (0..3000)
            .map(|i| {
                v.now()
                    .owner("g", key("M", &format!("n{i}")))
                    .unwrap()
                    .to_string()
            })
            .collect();
        for m in ["a", "b", "c"] {
            let share = before.iter().filter(|o| *o == m).count();
            assert!((800..=1200).contains(&share), "{m} owns {share} of 3000");
        }
        assert_eq!(v.status("b", OFFLINE, 1), Some(vec![member_id("b")]));
        for (i, was) in before.iter().enumerate() {
            let now = v.now().owner("g", key("M", &format!("n{i}"))).unwrap();
            if was != "b" {
                assert_eq!(now, was, "key n{i} moved though its owner stayed");
            } else {
                assert_ne!(now, "b");
            }
        }
        assert_eq!(
            v.now().owner("other", fnv1a(b"k")),
            None,
            "a group without members"
        );
        v.status("d", &online(&["h", "g"]), 1);
        assert_eq!(v.now().describe(), "g=a,c,d h=d");
    }

    #[test]
    fn a_record_is_decided_by_the_view_it_was_journaled_under() {
        let mut v = Views::new("a", 10, None, Instant::now(), None);
        assert_eq!(
            v.owner("g", fnv1a(b"k"), 5),
            Owner::Me,
            "recovered: runs here"
        );
        assert_eq!(
            v.owner("g", fnv1a(b"k"), 10),
            Owner::Me,
            "no member known: runs"
        );
        v.status("a", &online(&["g"]), 10);
        v.status("b", &online(&["g"]), 10);
        // Keys b owns while both are members.
        let b_keys: Vec<u64> = (0..100)
            .map(|i| key("M", &format!("n{i}")))
            .filter(|k| v.now().owner("g", *k) == Some("b"))
            .collect();
        assert!(!b_keys.is_empty());
        v.status("b", OFFLINE, 20);
        for &k in &b_keys {
            assert_eq!(v.owner("g", k, 20), Owner::Me, "journaled after b left");
            assert_eq!(
                v.owner("g", k, 19),
                Owner::Me,
                "b's, but b left before it was read"
            );
        }
        v.taken_before(20);
        assert_eq!(v.views.len(), 1);
        assert_eq!(v.owner("g", b_keys[0], 25), Owner::Me);
        // Kept on disk and read back at a restart: the recovered records
        // (before the first seq of the new run) go by it.
        v.status("b", &online(&["g"]), 30);
        let kept = Members::decode(&v.now().encode()).expect("round trip");
        assert_eq!(&kept, v.now());
        let mut w = Views::new("a", 40, Some(kept), Instant::now(), None);
        let b = Owner::Other(member_id("b"));
        assert_eq!(w.owner("g", b_keys[0], 35), b, "b's, recovered");
        assert_eq!(
            Views::new("a", 40, None, Instant::now(), None).owner("g", b_keys[0], 35),
            Owner::Me
        );
        let enc = v.now().encode();
        assert_eq!(Members::decode(&enc[..enc.len() - 1]), None, "cut");
        assert_eq!(Members::decode(&[]), Some(Members::default()));
    }

    #[test]
    fn statuses_without_change_make_no_view_and_the_views_are_bounded() {
        let mut v = Views::new("a", 1, None, Instant::now(), None);
        assert!(v.status("a", &online(&["g"]), 1).is_some());
        assert!(
            v.status("a", &online(&["g"]), 2).is_none(),
            "the same again"
        );
        assert!(v.status("c", b"not json", 2).is_none());
        assert!(v.status("c", OFFLINE, 2).is_none(), "was not a member");
        assert!(
            v.status("d", &online(&[]), 2).is_none(),
            "online, in no group"
        );
        assert!(
            v.status("e", &online(&["bad/name"]), 2).is_none(),
            "no valid group"
        );
        for i in 0..(MAX_VIEWS as u64 * 2) {
            let s = if i % 2 == 0 {
                online(&["g"])
            } else {
                OFFLINE.to_vec()
            };
            assert!(v.status("b", &s, 10 + i).is_some());
        }
        assert_eq!(v.views.len(), MAX_VIEWS);
        assert!(v.counts.merged > 0);
        assert_eq!(v.views[0].0, 1, "the oldest view's start is kept");
        // A flood of changes with no record between: the views with records
        // stay, those with none go first.
        let had: Vec<u64> = v.views.iter().map(|(from, _)| *from).collect();
        for i in 0..(MAX_VIEWS as u64 * 4) {
            let s = if i % 2 == 0 {
                online(&["g"])
            } else {
                OFFLINE.to_vec()
            };
            assert!(v.status("b", &s, 500).is_some());
        }
        assert_eq!(v.views.len(), MAX_VIEWS);
        let now: Vec<u64> = v.views.iter().map(|(from, _)| *from).collect();
        assert_eq!(
            now[1..MAX_VIEWS - 1],
            had[2..],
            "the two oldest merged, once"
        );
        assert_eq!((now[0], now[MAX_VIEWS - 1]), (1, 500));
    }

    #[test]
    fn members_are_bounded() {
        let mut v = Views::new("a", 1, None, Instant::now(), None);
        for i in 0..MAX_MEMBERS + 5 {
            v.status(&format!("m{i}"), &online(&["g"]), 1);
        }
        assert_eq!(v.now().of("g").count(), MAX_MEMBERS);
        assert_eq!(v.now().len(), MAX_MEMBERS);
        assert_eq!(v.counts.full, 5);
        assert!(
            v.status("m0", OFFLINE, 1).is_some(),
            "leaving is always taken"
        );
    }

    /// Markers name journal positions: "done before marker D" is the seq
    /// where D arrived; a member numbering from 1 again restarted.
    #[test]
    fn progress_markers_name_journal_positions() {
        let mut v = Views::new("a", 1, None, Instant::now(), None);
        let t0 = Instant::now();
        assert_eq!(v.progress(5, 5, t0), None, "alone: nobody to tell");
        v.status("a", &online(&["g"]), 1);
        v.status("b", &online(&["g"]), 1);
        let mk = |k: u64, done: u64| format!("{{\"k\":{k},\"done\":{done}}}").into_bytes();
        assert_eq!(v.marker("b", &mk(1, 0), 10), None, "nothing done yet");
        assert_eq!(v.marker("b", &mk(2, 1), 20), Some((member_id("b"), 10)));
        assert_eq!(v.marker("b", &mk(3, 1), 30), Some((member_id("b"), 10)));
        assert_eq!(v.marker("b", &mk(4, 3), 40), Some((member_id("b"), 30)));
        // b restarted: its old markers are gone.
        assert_eq!(v.marker("b", &mk(1, 0), 50), None);
        assert_eq!(v.marker("b", &mk(2, 1), 60), Some((member_id("b"), 50)));
        assert_eq!(v.marker("b", b"junk", 70), None);
        assert!(v.done_by(member_id("b"), 49) && !v.done_by(member_id("b"), 50));
        // Own markers: published, come back, and count once passed.
        let p1 = v.progress(5, 12, t0).expect("two members");
        assert_eq!(p1, mk(1, 0));
        let t1 = t0 + PROGRESS_INTERVAL;
        assert_eq!(v.progress(5, 12, t1), None, "marker 1 not back yet");
        v.marker("a", &p1, 12);
        assert_eq!(
            v.progress(11, 12, t0 + PROGRESS_INTERVAL / 2),
            None,
            "too soon"
        );
        let p2 = v.progress(11, 14, t1).unwrap();
        assert_eq!(
            p2,
            mk(2, 0),
            "record 11 is not finished: marker 1 at 12 not passed"
        );
        v.marker("a", &p2, 15);
        let t2 = t1 + PROGRESS_INTERVAL;
        let p3 = v.progress(15, 15, t2).unwrap();
        assert_eq!(p3, mk(3, 2), "done moved");
        v.marker("a", &p3, 15);
        let t3 = t2 + PROGRESS_INTERVAL;
        assert_eq!(v.progress(15, 15, t3), None, "nothing new: quiet");
        assert_eq!(v.progress_due(15, 15), None);
        assert_eq!(v.progress_due(15, 16), Some(t3), "a record arrived");
        let p4 = v.progress(15, 16, t3).unwrap();
        assert_eq!(p4, mk(4, 3));
        // Lost on the way: given up after a while.
        assert_eq!(v.progress(16, 17, t3 + PROGRESS_INTERVAL), None);
        assert!(v.progress(16, 17, t3 + MARKER_LOST).is_some());
        for k in 0..(MAX_MARKERS as u64 + 10) {
            v.marker("c", &mk(k + 1, 0), 100 + k);
        }
        assert_eq!(v.progress.marks[&member_id("c")].len(), MAX_MARKERS);
    }

    #[test]
    fn statuses_and_markers_read_as_crd_writes_them() {
        use crate::mqtt::wire::status_json;
        let g = ["g1".to_string(), "a\"b".to_string()];
        let on = status_json("online", "n", "00", 1, &g, false);
        assert_eq!(status_groups(&on), Some((g.to_vec(), false)));
        let joining = status_json("online", "n", "00", 1, &g, true);
        assert_eq!(status_groups(&joining), Some((g.to_vec(), true)));
        assert_eq!(
            status_groups(&status_json("online", "n", "00", 1, &[], false)),
            Some((vec![], false))
        );
        assert_eq!(
            status_groups(&status_json("offline", "n", "00", 1, &g, false)),
            Some((vec![], false))
        );
        assert_eq!(status_groups(b"junk"), None);
        assert_eq!(marker(b"{\"k\":7,\"done\":5}"), Some((7, 5)));
        for bad in [&b"{\"k\":7}"[..], b"{\"k\":x,\"done\":5}", b""] {
            assert_eq!(marker(bad), None);
        }
    }

    #[test]
    fn weights_do_not_depend_on_the_platform() {
        // Fixed values: the same owner on every target and byte order.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let k = key("M", "n1");
        assert_eq!(k, fnv1a(b"M\0n1"), "hashed in place as if joined");
        assert_eq!(weight("a", k), weight("a", k));
        assert_ne!(weight("a", k), weight("b", k));
    }
}
