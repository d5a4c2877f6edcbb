//! End-to-end loss detection: per edge stream, the seqs received, and the
//! gaps between them that stay open past a grace time. An edge numbers its
//! records consecutively per stream; what breaks the numbering is said by the
//! edge itself: a record after a jump its spool made carries `"prev"` (the
//! seq before it: the ones between were never sent), and its spool's notices
//! (module `spool`, `notice`) name the ranges dropped when it was full or
//! skipped after an unclean stop. So a gap left open past the grace is what
//! the transport lost (a broker, a cluster node). No IO (the rate limit of
//! the collector's reports aside, kept here for want of room there).
//!
//! Only a stream whose every record reaches this collector can be judged:
//! events, `crd emit`s and command replies all take seqs of it, on
//! `<prefix>/<node>/event/...`, `<prefix>/<node>/<suffix>` and
//! `<prefix>/<node>/reply/<id>`. So a node is tracked only when a subscribed
//! filter covers all of `<prefix>/<node>/#` (`covers`).
//!
//! Per stream: the highest seq seen, and at most `MAX_GAPS` open gaps, each a
//! range (`lo..=hi`) and when it opened; a seq arriving fills or splits its
//! gap, so reordering inside the grace time reports nothing. A hostile
//! publisher (seq 1, 10^9, 2, 10^9 + 1, ...) costs one range a jump, never
//! anything per missing seq; past `MAX_GAPS` the oldest gap of the stream is
//! forgotten (counted), past `MAX_STREAMS` the stream heard from least
//! recently (counted). A stream is known from the first seq seen of it: what
//! came before that is not this collector's to judge. What was reported or
//! said dropped is kept per stream for `crd fleet`, for at most
//! `MAX_REPORTED` streams.

use crate::collect::message::hex_u64;
use crate::collect::shards::KeyMap;
use crate::host::logger::RateLimit;
use crate::rules::value::{self, Member};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Streams tracked; past it the one heard from least recently is forgotten.
pub const MAX_STREAMS: usize = 10_000;
/// Open gaps kept per stream; past it the oldest is forgotten.
pub const MAX_GAPS: usize = 16;
/// Streams whose losses and drops are kept for `crd fleet`; past it the one
/// reported least recently is forgotten.
pub const MAX_REPORTED: usize = 1_000;

/// An open gap: seqs `lo..=hi` not received since `since`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Gap {
    lo: u64,
    hi: u64,
    since: Instant,
}

#[derive(Debug)]
struct Stream {
    node: Box<str>,
    /// The highest seq seen.
    hi: u64,
    gaps: Vec<Gap>,
    /// `Gaps::clock` when last heard from.
    used: u64,
}

/// What `crd fleet` shows of a stream: the gaps reported lost, the events in
/// them and the last range; the events its edge said it dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Report {
    node: Box<str>,
    lost: u64,
    lost_events: u64,
    last: (u64, u64),
    dropped_events: u64,
    /// `Gaps::clock` when last changed.
    used: u64,
}

/// Counters for `crd status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Gaps reported lost in transit, and the events in them.
    pub lost: u64,
    pub lost_events: u64,
    /// Ranges the edge said its spool dropped, and the events in them.
    pub dropped: u64,
    pub dropped_events: u64,
    /// Seq jumps to a new lease after an edge's crash (neither).
    pub resumed: u64,
    /// Gaps past the grace on a node another member of the group reports.
    pub others: u64,
    /// Gaps forgotten at `MAX_GAPS`, streams at `MAX_STREAMS`.
    pub gaps_forgotten: u64,
    pub streams_forgotten: u64,
}

/// A stream's losses and drops in `crd fleet --json`: `last` is the last
/// range lost, `[lo, hi]`.
#[derive(Debug, serde::Serialize)]
pub struct Row<'a> {
    pub node: &'a str,
    pub stream: String,
    pub lost: u64,
    pub lost_events: u64,
    pub last: Option<(u64, u64)>,
    pub dropped_events: u64,
}

/// A gap reported: node and stream, seqs `lo..=hi`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lost {
    pub node: String,
    pub stream: u64,
    pub lo: u64,
    pub hi: u64,
}

#[derive(Debug)]
pub struct Gaps {
    streams: KeyMap<Stream>,
    reported: KeyMap<Report>,
    clock: u64,
    pub counts: Counts,
    /// How long a gap stays open before it is reported.
    pub grace: Duration,
    /// The topic prefix, and the subscribed filters that may cover a node's
    /// topics whole (`covers`); none: nothing is tracked.
    prefix: String,
    cover: Vec<String>,
    /// The collector group in which the member that owns a node reports its
    /// gaps (`None`: this collector reports every one).
    pub group: Option<String>,
    /// When the first open gap's grace may run out: never later, sometimes
    /// earlier (a gap filled since), as `expired` then finds.
    next_due: Option<Instant>,
    /// The bound on the collector's lines and events about gaps.
    pub told: RateLimit,
}

impl Default for Gaps {
    fn default() -> Gaps {
        Gaps::new(Duration::from_secs(60))
    }
}

/// What a range taken out of the open gaps was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Said {
    /// The edge's spool dropped it (full, or its directory vanished).
    Dropped,
    /// Never given: the edge resumed above its seq lease after a crash.
    Resumed,
}

/// Whether topic filter `filter` covers every topic of node `node` under
/// `prefix` (`<prefix>/<node>/#`, its events, emits and replies): `#`,
/// `<prefix>/#`, `<prefix>/+/#`, `<prefix>/<node>/#`, a `+` for any level.
pub fn covers(filter: &str, prefix: &str, node: &str) -> bool {
    let mut f = filter.split('/');
    for level in prefix.split('/').chain([node]) {
        match f.next() {
            Some("#") => return true,
            Some(l) if l == "+" || l == level => {}
            _ => return false,
        }
    }
    f.next() == Some("#")
}

/// The kind and range of an edge's spool notice (`out` of an `error` event of
/// module `spool`, `host::outbox`): `... , seq LO..=HI` last.
pub fn notice(out: &str) -> Option<(Said, u64, u64)> {
    let (head, range) = out.rsplit_once(", seq ")?;
    let (lo, hi) = range.split_once("..=")?;
    let (lo, hi): (u64, u64) = (lo.parse().ok()?, hi.parse().ok()?);
    let said = if head.starts_with("unclean stop: ") {
        Said::Resumed
    } else if head.starts_with("spool full: ") || head.starts_with("spool directory vanished") {
        Said::Dropped
    } else {
        return None;
    };
    (lo <= hi).then_some((said, lo, hi))
}

/// A record's place in its stream, from the members of its JSON (a reply's,
/// a status's, a spool notice's): node, stream, seq, prev, and `out`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Place {
    pub node: String,
    pub stream: u64,
    pub seq: Option<u64>,
    pub prev: Option<u64>,
    pub out: String,
}

impl Place {
    /// The members of `payload` that say where it sits; `None` when it is not
    /// a JSON object with a node and a stream of 16 hex digits.
    pub fn of(payload: &[u8]) -> Option<Place> {
        let mut p = Place::default();
        let mut hex = false;
        let uint = |t: &str| t.parse::<u64>().ok();
        value::members(payload, |k, v| match (k, v) {
            (b"node", Member::Str(s)) => p.node = s.into_owned(),
            (b"stream", Member::Str(s)) => {
                hex = s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
                p.stream = hex_u64(&s);
            }
            (b"seq", Member::Token(t)) => p.seq = uint(t),
            (b"prev", Member::Token(t)) => p.prev = uint(t),
            (b"out", Member::Str(s)) => p.out = s.into_owned(),
            _ => {}
        })
        .ok()?;
        (hex && !p.node.is_empty()).then_some(p)
    }
}

impl Gaps {
    pub fn new(grace: Duration) -> Gaps {
        Gaps {
            streams: KeyMap::default(),
            reported: KeyMap::default(),
            clock: 0,
            counts: Counts::default(),
            grace,
            prefix: String::new(),
            cover: Vec::new(),
            group: None,
            next_due: None,
            told: RateLimit::default(),
        }
    }

    /// The subscribed `filters` (under topic prefix `prefix`): those that
    /// cover a node's every topic turn tracking on for the nodes they cover.
    /// A stream no filter covers any more is forgotten.
    pub fn subscribed<'f>(&mut self, prefix: &str, filters: impl Iterator<Item = &'f str>) {
        self.prefix = prefix.to_string();
        // Those that cover some node: a name or `+` at its level, or `#`.
        let node_level = prefix.split('/').count();
        let some = |f: &&str| covers(f, prefix, f.split('/').nth(node_level).unwrap_or(""));
        self.cover = filters.filter(some).map(str::to_string).collect();
        self.cover.dedup();
        let (prefix, cover) = (&self.prefix, &self.cover);
        let covered = |node: &str| cover.iter().any(|f| covers(f, prefix, node));
        self.streams.retain(|_, s| covered(&s.node));
    }

    /// Whether any node is tracked.
    pub fn on(&self) -> bool {
        !self.cover.is_empty()
    }

    /// Record `seq` of `stream` (from `node`) received at `now`; `prev`: the
    /// seq before it, where the edge's numbering jumped (the seqs between
    /// were never sent).
    pub fn seen(&mut self, node: &str, stream: u64, seq: u64, prev: Option<u64>, now: Instant) {
        if self.cover.is_empty() {
            return;
        }
        self.clock += 1;
        // One lookup for a known stream (every message of a fleet's).
        let Some(s) = self.streams.get_mut(&stream) else {
            self.learn(node, stream, seq);
            return;
        };
        s.used = self.clock;
        // What the edge never sent is no gap.
        let below = match prev {
            Some(p) if p < seq.saturating_sub(1) => {
                take(&mut s.gaps, p + 1, seq - 1);
                p
            }
            _ => seq.saturating_sub(1),
        };
        if seq > s.hi {
            if below > s.hi {
                let gap = Gap {
                    lo: s.hi + 1,
                    hi: below,
                    since: now,
                };
                push_gap(s, gap, &mut self.counts, &mut self.next_due, self.grace);
            }
            s.hi = seq;
            return;
        }
        // Late, filling its gap (a split may pass the bound); or a
        // duplicate, or one whose gap was reported already: nothing.
        take(&mut s.gaps, seq, seq);
        while s.gaps.len() > MAX_GAPS {
            s.gaps.remove(0);
            self.counts.gaps_forgotten += 1;
        }
    }

    /// The edge's own word on `lo..=hi` of `stream` (`Said`): taken out of the
    /// open gaps; one not reached yet is noted as seen up to `hi`.
    pub fn said(&mut self, stream: u64, lo: u64, hi: u64, what: Said) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        take(&mut s.gaps, lo, hi);
        if hi > s.hi {
            // Said before a later seq showed the gap: nothing to open for it.
            s.hi = hi;
        }
        match what {
            Said::Dropped => {
                // Numbers from the bus: counted without overflowing.
                let n = (hi - lo).saturating_add(1);
                let c = &mut self.counts;
                c.dropped += 1;
                c.dropped_events = c.dropped_events.saturating_add(n);
                let node = s.node.clone();
                let r = self.report(stream, &node);
                r.dropped_events = r.dropped_events.saturating_add(n);
            }
            Said::Resumed => self.counts.resumed += 1,
        }
    }

    /// An edge's status says every record of `stream` up to `seq` reached the
    /// broker: a tail this collector has not received opens a gap.
    pub fn latest(&mut self, stream: u64, seq: u64, now: Instant) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        if seq > s.hi {
            let gap = Gap {
                lo: s.hi + 1,
                hi: seq,
                since: now,
            };
            push_gap(s, gap, &mut self.counts, &mut self.next_due, self.grace);
            s.hi = seq;
        }
    }

    /// When a gap's grace may run out (`expired` is due).
    pub fn due(&self) -> Option<Instant> {
        self.next_due
    }

    /// The gaps open for the grace or longer at `now`, no longer open (a seq
    /// of one arriving later changes nothing): those on a node `mine` says
    /// this collector reports are returned and counted, the others counted
    /// as another member's.
    pub fn expired(&mut self, now: Instant, mine: impl Fn(&str) -> bool) -> Vec<Lost> {
        if self.next_due.is_none_or(|t| t > now) {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut next: Option<Instant> = None;
        let grace = self.grace;
        for (&stream, s) in &mut self.streams {
            s.gaps.retain(|g| {
                if g.since + grace > now {
                    next = Some(next.map_or(g.since + grace, |t| t.min(g.since + grace)));
                    return true;
                }
                out.push(Lost {
                    node: s.node.to_string(),
                    stream,
                    lo: g.lo,
                    hi: g.hi,
                });
                false
            });
        }
        self.next_due = next;
        out.retain(|l| {
            let m = mine(&l.node);
            if !m {
                self.counts.others += 1;
            }
            m
        });
        for l in &out {
            let n = l.hi - l.lo + 1;
            self.counts.lost += 1;
            self.counts.lost_events = self.counts.lost_events.saturating_add(n);
            let r = self.report(l.stream, &l.node);
            r.lost += 1;
            r.lost_events = r.lost_events.saturating_add(n);
            r.last = (l.lo, l.hi);
        }
        out.sort_by_key(|l| (l.stream, l.lo));
        out
    }

    /// Streams tracked.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Gaps open now, over all streams.
    pub fn open(&self) -> usize {
        self.streams.values().map(|s| s.gaps.len()).sum()
    }

    /// `crd fleet`'s lines for the streams with events lost or dropped, by
    /// node (names from the bus made safe by the caller's `clean`).
    pub fn table(&self, clean: impl Fn(&str) -> String) -> String {
        let mut rows: Vec<(&u64, &Report)> = self.reported.iter().collect();
        if rows.is_empty() {
            return String::new();
        }
        rows.sort_by(|a, b| (&a.1.node, a.0).cmp(&(&b.1.node, b.0)));
        let mut s = String::from("\nevents that did not arrive, by node and stream:\n");
        for (stream, r) in rows {
            let _ = write!(s, "{} {stream:016x}: ", clean(&r.node));
            if r.lost > 0 {
                let (lo, hi) = r.last;
                let _ = write!(
                    s,
                    "{} lost in {} gaps (last seq {lo}..={hi})",
                    r.lost_events, r.lost
                );
            }
            if r.dropped_events > 0 {
                let sep = if r.lost > 0 { ", " } else { "" };
                let _ = write!(s, "{sep}{} dropped by its spool", r.dropped_events);
            }
            s.push('\n');
        }
        s
    }

    /// `crd fleet --json`'s `"gaps"`, by node.
    pub fn rows(&self) -> Vec<Row<'_>> {
        let mut rows: Vec<Row<'_>> = self
            .reported
            .iter()
            .map(|(stream, r)| Row {
                node: &r.node,
                stream: format!("{stream:016x}"),
                lost: r.lost,
                lost_events: r.lost_events,
                last: (r.lost > 0).then_some(r.last),
                dropped_events: r.dropped_events,
            })
            .collect();
        rows.sort_by(|a, b| (a.node, &a.stream).cmp(&(b.node, &b.stream)));
        rows
    }

    /// An unknown `stream` is known from `seq` on, when a subscription
    /// covers its node (the least recently heard one forgotten at the bound).
    fn learn(&mut self, node: &str, stream: u64, seq: u64) {
        if !self.cover.iter().any(|f| covers(f, &self.prefix, node)) {
            return;
        }
        if self.streams.len() >= MAX_STREAMS {
            let oldest = self.streams.iter().min_by_key(|(_, s)| s.used);
            if let Some(&k) = oldest.map(|(k, _)| k) {
                self.streams.remove(&k);
                self.counts.streams_forgotten += 1;
            }
        }
        let s = Stream {
            node: node.into(),
            hi: seq,
            gaps: Vec::new(),
            used: self.clock,
        };
        self.streams.insert(stream, s);
    }

    /// `stream`'s report, made (the least recently changed forgotten at
    /// `MAX_REPORTED`).
    fn report(&mut self, stream: u64, node: &str) -> &mut Report {
        self.clock += 1;
        if !self.reported.contains_key(&stream) && self.reported.len() >= MAX_REPORTED {
            let oldest = self.reported.iter().min_by_key(|(_, r)| r.used);
            if let Some(&k) = oldest.map(|(k, _)| k) {
                self.reported.remove(&k);
            }
        }
        let r = self.reported.entry(stream).or_insert_with(|| Report {
            node: node.into(),
            ..Report::default()
        });
        r.used = self.clock;
        r
    }
}

/// Opens `gap` on `s`, the oldest forgotten past `MAX_GAPS`; the next due
/// time moves up to its end of grace.
fn push_gap(
    s: &mut Stream,
    gap: Gap,
    counts: &mut Counts,
    next_due: &mut Option<Instant>,
    grace: Duration,
) {
    if s.gaps.len() >= MAX_GAPS {
        s.gaps.remove(0);
        counts.gaps_forgotten += 1;
    }
    s.gaps.push(gap);
    let due = gap.since + grace;
    *next_due = Some(next_due.map_or(due, |t| t.min(due)));
}

/// Takes `lo..=hi` out of `gaps` (each gap cut or split, keeping its time).
fn take(gaps: &mut Vec<Gap>, lo: u64, hi: u64) {
    let mut i = 0;
    while i < gaps.len() {
        let g = gaps[i];
        if g.hi < lo || g.lo > hi {
            i += 1;
            continue;
        }
        let left = (g.lo < lo).then(|| Gap { hi: lo - 1, ..g });
        let right = (g.hi > hi).then(|| Gap { lo: hi + 1, ..g });
        match (left, right) {
            (Some(l), Some(r)) => {
                gaps[i] = l;
                gaps.insert(i + 1, r);
                i += 2;
            }
            (Some(one), None) | (None, Some(one)) => {
                gaps[i] = one;
                i += 1;
            }
            (None, None) => {
                gaps.remove(i);
            }
        }
    }
}

/// Whether `topic` is a command reply's, `<prefix>/<node>/reply/<id>`.
pub fn is_reply(prefix: &str, topic: &str) -> bool {
    topic
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('/'))
        .and_then(|r| r.split_once('/'))
        .and_then(|(_, r)| r.strip_prefix("reply/"))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(60);

    fn tracking() -> Gaps {
        let mut g = Gaps::new(GRACE);
        g.subscribed("crd", ["crd/+/#"].into_iter());
        g
    }

    fn feed(g: &mut Gaps, seqs: impl IntoIterator<Item = u64>, now: Instant) {
        for q in seqs {
            g.seen("n1", 7, q, None, now);
        }
    }

    fn all(_: &str) -> bool {
        true
    }

    #[test]
    fn reordering_inside_the_grace_reports_nothing_and_a_gap_past_it_is_reported_once() {
        let t0 = Instant::now();
        let mut g = tracking();
        feed(&mut g, [1, 2, 5, 3, 4, 6, 9, 8], t0);
        assert_eq!(g.open(), 1, "7 missing");
        assert_eq!(g.due(), Some(t0 + GRACE));
        assert_eq!(g.expired(t0 + GRACE / 2, all), vec![]);
        g.seen("n1", 7, 7, None, t0 + GRACE / 2);
        assert_eq!(g.open(), 0);
        assert_eq!(g.expired(t0 + GRACE, all), vec![], "filled: due early");
        assert_eq!(g.due(), None, "nothing open: nothing due");
        feed(&mut g, [12, 20], t0 + GRACE / 2);
        g.seen("n1", 7, 15, None, t0 + GRACE / 2);
        let lost = g.expired(t0 + GRACE + GRACE / 2, all);
        let at = |lo, hi| Lost {
            node: "n1".into(),
            stream: 7,
            lo,
            hi,
        };
        assert_eq!(lost, vec![at(10, 11), at(13, 14), at(16, 19)]);
        assert_eq!((g.counts.lost, g.counts.lost_events), (3, 8));
        assert_eq!(g.expired(t0 + GRACE * 5, all), vec![], "once");
        g.seen("n1", 7, 10, None, t0 + GRACE * 5);
        assert_eq!(g.open(), 0, "a late one opens nothing");
        assert!(
            g.table(str::to_string)
                .contains("n1 0000000000000007: 8 lost in 3 gaps (last seq 16..=19)"),
            "{}",
            g.table(str::to_string)
        );
        let j = serde_json::to_string(&g.rows()).unwrap();
        assert!(j.contains(r#""lost_events":8,"last":[16,19]"#), "{j}");
    }

    #[test]
    fn what_the_edge_said_is_not_lost_and_its_first_seq_starts_a_stream() {
        let t0 = Instant::now();
        let mut g = tracking();
        feed(&mut g, [1000, 1001], t0);
        assert_eq!(g.open(), 0, "what came before the first seen is not judged");
        feed(&mut g, [1010], t0);
        g.said(7, 1002, 1009, Said::Dropped);
        assert_eq!(g.open(), 0);
        assert_eq!((g.counts.dropped, g.counts.dropped_events), (1, 8));
        // A crash: the notice of the new lease can come before its first seq.
        g.said(7, 1011, 66_000, Said::Resumed);
        feed(&mut g, [66_001, 66_002], t0);
        assert_eq!(g.open(), 0);
        assert_eq!(g.counts.resumed, 1);
        // The edge's status names a tail never received.
        g.latest(7, 66_005, t0);
        let lost = g.expired(t0 + GRACE, all);
        assert_eq!((lost[0].lo, lost[0].hi), (66_003, 66_005));
        g.latest(99, 5, t0);
        assert!(
            g.open() == 0 && g.len() == 1,
            "an unknown stream's status opens nothing"
        );
        assert_eq!(
            g.table(str::to_string),
            "\nevents that did not arrive, by node and stream:\n\
             n1 0000000000000007: 3 lost in 1 gaps (last seq 66003..=66005), 8 dropped by its spool\n"
        );
    }

    /// A record after a jump its edge's spool made says the seq before it:
    /// the seqs between open nothing, whenever the notice explaining them
    /// comes (or if it never does); a gap below `prev` still counts.
    #[test]
    fn a_record_that_says_its_prev_opens_no_gap_for_what_was_never_sent() {
        let t0 = Instant::now();
        let mut g = tracking();
        feed(&mut g, [1, 2, 3], t0);
        g.seen("n1", 7, 5_000, Some(3), t0);
        assert_eq!(g.open(), 0);
        g.seen("n1", 7, 9_000, Some(8_000), t0);
        let lost = g.expired(t0 + GRACE, all);
        assert_eq!(
            lost.iter().map(|l| (l.lo, l.hi)).collect::<Vec<_>>(),
            [(5_001, 8_000)],
            "up to prev is the transport's"
        );
        // One that says its prev arriving late (reordered) takes its range
        // out of the gap it was in.
        g.seen("n1", 7, 70_001, Some(9_000), t0 + GRACE);
        g.seen("n1", 7, 70_005, None, t0 + GRACE);
        assert_eq!(g.open(), 1);
        g.seen("n1", 7, 70_004, Some(70_001), t0 + GRACE);
        assert_eq!(g.open(), 0, "70,002..=70,003 never sent, 70,004 came");
    }

    #[test]
    fn a_hostile_numbering_costs_a_range_a_jump_and_is_bounded() {
        let t0 = Instant::now();
        let mut g = tracking();
        for i in 0..10_000u64 {
            g.seen("h", 1, i + 1, None, t0);
            g.seen("h", 1, 1_000_000_000 + i * 1_000_000_000, None, t0);
        }
        assert!(g.open() <= MAX_GAPS, "{}", g.open());
        assert!(g.counts.gaps_forgotten > 0);
        for st in 0..(MAX_STREAMS as u64 + 10) {
            g.seen("n", 100 + st, 1, None, t0);
        }
        assert_eq!(g.len(), MAX_STREAMS);
        assert_eq!(g.counts.streams_forgotten, 11);
        // Reports are bounded too.
        for st in 0..(MAX_REPORTED as u64 + 5) {
            g.seen("n", 100 + st, 3, None, t0);
            g.said(100 + st, 2, 2, Said::Dropped);
        }
        assert_eq!(g.reported.len(), MAX_REPORTED);
        // Numbers at the ends of u64: no overflow, nothing out of bounds.
        let mut g = tracking();
        for (seq, prev) in [
            (5, None),
            (0, None),
            (u64::MAX, Some(u64::MAX)),
            (0, Some(0)),
        ] {
            g.seen("h", 1, seq, prev, t0);
        }
        g.said(1, 0, u64::MAX, Said::Dropped);
        g.said(1, 0, u64::MAX, Said::Dropped);
        g.latest(1, u64::MAX, t0);
        assert_eq!(g.counts.dropped_events, u64::MAX);
        assert!(g.expired(t0 + GRACE, all).is_empty());
    }

    #[test]
    fn a_split_keeps_the_bound() {
        let t0 = Instant::now();
        let mut g = tracking();
        feed(&mut g, [1, 1000], t0);
        for q in (3..1000).step_by(2) {
            g.seen("n1", 7, q, None, t0);
        }
        assert!(g.open() <= MAX_GAPS);
    }

    /// Only nodes whose every topic a filter covers are tracked; a node's
    /// gaps another member owns are counted as theirs, not reported.
    #[test]
    fn only_covered_nodes_are_tracked_and_only_owned_ones_reported() {
        assert!(covers("#", "crd", "n1"));
        assert!(covers("crd/#", "crd", "n1"));
        assert!(covers("crd/+/#", "crd", "n1"));
        assert!(covers("+/n1/#", "crd", "n1"));
        assert!(covers("fleet/eu/+/#", "fleet/eu", "n1"));
        assert!(
            !covers("crd/+/event/#", "crd", "n1"),
            "emits and replies missed"
        );
        assert!(!covers("crd/n2/#", "crd", "n1"));
        assert!(!covers("crd/+", "crd", "n1"));
        assert!(!covers("other/#", "crd", "n1"));
        let t0 = Instant::now();
        let mut g = Gaps::new(GRACE);
        g.subscribed("crd", ["crd/+/event/#", "crd/+/status"].into_iter());
        assert!(!g.on());
        g.seen("n1", 7, 1, None, t0);
        g.seen("n1", 7, 5, None, t0);
        assert_eq!((g.len(), g.open()), (0, 0));
        g.subscribed("crd", ["crd/n1/#", "crd/+/event/#"].into_iter());
        for (node, stream) in [("n1", 7), ("n2", 8)] {
            g.seen(node, stream, 1, None, t0);
            g.seen(node, stream, 5, None, t0);
        }
        assert_eq!((g.len(), g.open()), (1, 1), "n1 only");
        g.subscribed("crd", ["crd/+/#"].into_iter());
        g.seen("n2", 8, 1, None, t0);
        g.seen("n2", 8, 5, None, t0);
        let lost = g.expired(t0 + GRACE, |n| n == "n2");
        assert_eq!(lost.len(), 1);
        assert_eq!((lost[0].node.as_str(), g.counts.others), ("n2", 1));
        g.subscribed("crd", std::iter::empty());
        assert!(g.is_empty() && !g.on(), "no longer covered: forgotten");
    }

    #[test]
    fn notices_and_places_are_read_from_what_the_edge_writes() {
        assert_eq!(
            notice("spool full: dropped 12 unsent records, seq 5..=16"),
            Some((Said::Dropped, 5, 16))
        );
        assert_eq!(
            notice("spool directory vanished and was made again: lost 3 unsent records, seq 1..=3"),
            Some((Said::Dropped, 1, 3))
        );
        assert_eq!(
            notice("unclean stop: 65530 seqs never sent, seq 7..=65536"),
            Some((Said::Resumed, 7, 65_536))
        );
        assert_eq!(notice("disk full, seq 1..=2"), None);
        assert_eq!(
            notice("spool full: dropped 1 unsent records, seq 9..=2"),
            None
        );
        assert_eq!(notice("spool full: dropped, seq x..=2"), None);
        let reply = br#"{"id":"ab","node":"n1","reply":"accepted","ts":1,"stream":"00000000000000ab","seq":9,"prev":4}"#;
        let p = Place::of(reply).unwrap();
        assert_eq!(
            (p.node.as_str(), p.stream, p.seq, p.prev),
            ("n1", 0xab, Some(9), Some(4))
        );
        let status =
            crate::mqtt::wire::status_json("online", "n1", "00000000000000ab", 5, &[], false);
        assert_eq!(Place::of(&status).unwrap().seq, None);
        assert_eq!(Place::of(br#"{"node":"n1","stream":"ab","seq":1}"#), None);
        assert_eq!(Place::of(b"not json"), None);
        assert!(is_reply("crd", "crd/n1/reply/0123abcd"));
        assert!(!is_reply("crd", "crd/n1/event/reply"));
        assert!(!is_reply("crd", "crd/n1/reply/a/b"));
    }
}
