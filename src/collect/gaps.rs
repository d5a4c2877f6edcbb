//! End-to-end loss detection: per edge stream, the seqs received, and the
//! gaps between them that stay open past a grace time. An edge numbers its
//! events consecutively per stream; what breaks the numbering is said by the
//! edge itself in its stream (module `spool`: records dropped when its spool
//! was full, or a jump to a new seq lease after a crash), so a gap left open
//! after those is what the transport lost (a broker, a cluster node). No IO.
//!
//! Per stream: the highest seq seen, and at most `MAX_GAPS` open gaps, each a
//! range (`lo..=hi`) and when it opened; a seq arriving fills or splits its
//! gap, so reordering inside the grace time reports nothing. A hostile
//! publisher (seq 1, 10^9, 2, 10^9 + 1, ...) costs one range a jump, never
//! anything per missing seq; past `MAX_GAPS` the oldest gap of the stream is
//! forgotten (counted), past `MAX_STREAMS` the stream heard from least
//! recently (counted). A stream is known from the first seq seen of it: what
//! came before that is not this collector's to judge.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Streams tracked; past it the one heard from least recently is forgotten.
pub const MAX_STREAMS: usize = 10_000;
/// Open gaps kept per stream; past it the oldest is forgotten.
pub const MAX_GAPS: usize = 16;

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
    /// Gaps forgotten at `MAX_GAPS`, streams at `MAX_STREAMS`.
    pub gaps_forgotten: u64,
    pub streams_forgotten: u64,
}

/// A gap reported: node and stream, seqs `lo..=hi`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lost {
    pub node: String,
    pub stream: u64,
    pub lo: u64,
    pub hi: u64,
}

#[derive(Debug, Default)]
pub struct Gaps {
    streams: HashMap<u64, Stream>,
    clock: u64,
    pub counts: Counts,
}

/// What a range taken out of the open gaps was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Said {
    /// The edge's spool dropped it (full, or its directory vanished).
    Dropped,
    /// Never given: the edge resumed above its seq lease after a crash.
    Resumed,
}

impl Gaps {
    /// Event `seq` of `stream` (from `node`) received at `now`.
    pub fn seen(&mut self, node: &str, stream: u64, seq: u64, now: Instant) {
        if !self.known(node, stream, seq) {
            return;
        }
        let s = self.streams.get_mut(&stream).expect("known");
        if seq > s.hi {
            if seq > s.hi + 1 {
                let gap = Gap {
                    lo: s.hi + 1,
                    hi: seq - 1,
                    since: now,
                };
                push_gap(s, gap, &mut self.counts);
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
                self.counts.dropped += 1;
                self.counts.dropped_events += hi.saturating_sub(lo) + 1;
            }
            Said::Resumed => self.counts.resumed += 1,
        }
    }

    /// An edge's status says its latest seq of `stream` is `seq`: a tail it
    /// sent and this collector has not received opens a gap.
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
            push_gap(s, gap, &mut self.counts);
            s.hi = seq;
        }
    }

    /// When the oldest open gap's grace runs out.
    pub fn due(&self, grace: Duration) -> Option<Instant> {
        let gaps = self.streams.values().flat_map(|s| s.gaps.iter());
        gaps.map(|g| g.since + grace).min()
    }

    /// The gaps open for `grace` or longer at `now`, reported (and no longer
    /// open: a seq of one arriving later changes nothing).
    pub fn expired(&mut self, now: Instant, grace: Duration) -> Vec<Lost> {
        let mut out = Vec::new();
        for (&stream, s) in &mut self.streams {
            s.gaps.retain(|g| {
                if g.since + grace > now {
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
        for l in &out {
            self.counts.lost += 1;
            self.counts.lost_events += l.hi - l.lo + 1;
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

    /// Whether `stream` was known before `seq`; if not, it is now, from
    /// `seq` (the least recently heard one forgotten at the bound).
    fn known(&mut self, node: &str, stream: u64, seq: u64) -> bool {
        self.clock += 1;
        if let Some(s) = self.streams.get_mut(&stream) {
            s.used = self.clock;
            return true;
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
        false
    }
}

/// Opens `gap` on `s`, the oldest forgotten past `MAX_GAPS`.
fn push_gap(s: &mut Stream, gap: Gap, counts: &mut Counts) {
    if s.gaps.len() >= MAX_GAPS {
        s.gaps.remove(0);
        counts.gaps_forgotten += 1;
    }
    s.gaps.push(gap);
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

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(60);

    fn feed(g: &mut Gaps, seqs: impl IntoIterator<Item = u64>, now: Instant) {
        for q in seqs {
            g.seen("n1", 7, q, now);
        }
    }

    #[test]
    fn reordering_inside_the_grace_reports_nothing_and_a_gap_past_it_is_reported_once() {
        let t0 = Instant::now();
        let mut g = Gaps::default();
        feed(&mut g, [1, 2, 5, 3, 4, 6, 9, 8], t0);
        assert_eq!(g.open(), 1, "7 missing");
        assert_eq!(g.due(GRACE), Some(t0 + GRACE));
        assert_eq!(g.expired(t0 + GRACE / 2, GRACE), vec![]);
        g.seen("n1", 7, 7, t0 + GRACE / 2);
        assert_eq!(g.open(), 0);
        feed(&mut g, [12, 20], t0 + GRACE / 2);
        g.seen("n1", 7, 15, t0 + GRACE / 2);
        let lost = g.expired(t0 + GRACE + GRACE / 2, GRACE);
        let at = |lo, hi| Lost {
            node: "n1".into(),
            stream: 7,
            lo,
            hi,
        };
        assert_eq!(lost, vec![at(10, 11), at(13, 14), at(16, 19)]);
        assert_eq!((g.counts.lost, g.counts.lost_events), (3, 8));
        assert_eq!(g.expired(t0 + GRACE * 5, GRACE), vec![], "once");
        g.seen("n1", 7, 10, t0 + GRACE * 5);
        assert_eq!(g.open(), 0, "a late one opens nothing");
    }

    #[test]
    fn what_the_edge_said_is_not_lost_and_its_first_seq_starts_a_stream() {
        let t0 = Instant::now();
        let mut g = Gaps::default();
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
        let lost = g.expired(t0 + GRACE, GRACE);
        assert_eq!((lost[0].lo, lost[0].hi), (66_003, 66_005));
        g.latest(99, 5, t0);
        assert!(
            g.open() == 0 && g.len() == 1,
            "an unknown stream's status opens nothing"
        );
    }

    #[test]
    fn a_hostile_numbering_costs_a_range_a_jump_and_is_bounded() {
        let t0 = Instant::now();
        let mut g = Gaps::default();
        for i in 0..10_000u64 {
            g.seen("h", 1, i + 1, t0);
            g.seen("h", 1, 1_000_000_000 + i * 1_000_000_000, t0);
        }
        assert!(g.open() <= MAX_GAPS, "{}", g.open());
        assert!(g.counts.gaps_forgotten > 0);
        for st in 0..(MAX_STREAMS as u64 + 10) {
            g.seen("n", 100 + st, 1, t0);
        }
        assert_eq!(g.len(), MAX_STREAMS);
        assert_eq!(g.counts.streams_forgotten, 11);
    }

    #[test]
    fn a_split_keeps_the_bound() {
        let t0 = Instant::now();
        let mut g = Gaps::default();
        feed(&mut g, [1, 1000], t0);
        for q in (3..1000).step_by(2) {
            g.seen("n1", 7, q, t0);
        }
        assert!(g.open() <= MAX_GAPS);
    }
}
