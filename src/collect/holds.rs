//! What a group member keeps for the work other members own (`group.rs`): per
//! journal record, the jobs it would have run had it owned their keys (a
//! plain module's check, a rule's check, or the events and response a rule's
//! shadow decision made), each with its owner, and a copy of the record. A
//! hold goes when its owner's progress says it finished everything before the
//! record (`release`), and is taken over when its owner leaves the group
//! (`take_over`: the member that owns the key now runs it; another holds it
//! for that one).
//!
//! In memory only: the record itself is retired from this member's journal at
//! once (its owner journaled it before acknowledging it), so holds never fill
//! the journal or pause the socket, which would stop this member reading the
//! very will that frees them. The cost: a member that restarts holds nothing
//! for the others until new records come, and a taken-over job runs from
//! memory (a crash of the member running it then loses it: a second fault).
//! Bounded: at most `MAX_RECORDS` records and `MAX_BYTES` of their payloads;
//! past either the oldest record held is forgotten (counted: its owner still
//! runs it; only its takeover is lost). No IO.

use crate::collect::message::{Facts, Message, View};
use crate::collect::work::Job;
use crate::core::event::Event;
use std::collections::{BTreeMap, HashSet};

/// Records held at most.
pub const MAX_RECORDS: usize = 16_384;
/// Bytes of held records' payloads and topics at most.
pub const MAX_BYTES: usize = 8 << 20;

/// A job another member owns, held here.
#[derive(Debug)]
pub struct Parked {
    /// The owner (`group::member_id`).
    pub owner: u64,
    pub group: Box<str>,
    /// The key the owner was chosen by (`group::key`).
    pub key: Vec<u8>,
    /// The run it would start (`None`: only events to send).
    pub job: Option<Job>,
    /// The events the owner's decision sends (a rule's `fired`, `cleared`).
    pub emit: Vec<Event>,
}

/// One record's held jobs, with the record (owned: it is not in work).
struct Record {
    msg: Message,
    facts: Facts,
    jobs: Vec<Parked>,
}

/// Jobs now this member's, of one record: what `take_over` hands back.
pub struct Taken {
    pub seq: u64,
    pub msg: Message,
    pub facts: Facts,
    pub jobs: Vec<Parked>,
}

/// Counters for `crd status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Jobs released by their owner's progress.
    pub released: u64,
    /// Jobs taken over from a member that left.
    pub taken: u64,
    /// Records forgotten at the bounds.
    pub forgotten: u64,
}

#[derive(Default)]
pub struct Holds {
    records: BTreeMap<u64, Record>,
    /// The crd events of the records held, by (stream, seq): a copy that
    /// arrives meanwhile is a duplicate, as one done is.
    events: HashSet<(u64, u64)>,
    bytes: usize,
    pub counts: Counts,
}

impl Holds {
    /// Holds `p` for journal record `seq` (`v`, copied once per record);
    /// the oldest record goes past a bound.
    pub fn park(&mut self, seq: u64, v: &View<'_>, p: Parked) {
        if let Some(r) = self.records.get_mut(&seq) {
            r.jobs.push(p);
            return;
        }
        while self.full()
            && let Some(&oldest) = self.records.keys().next()
        {
            self.remove(oldest);
            self.counts.forgotten += 1;
        }
        let (msg, facts) = v.to_owned();
        self.bytes += msg.payload.len() + msg.topic.len();
        if let Some(e) = &facts.event {
            self.events.insert((e.stream_id(), e.seq));
        }
        self.records.insert(
            seq,
            Record {
                msg,
                facts,
                jobs: vec![p],
            },
        );
    }

    /// Whether the crd event (stream, seq) is in a record held.
    pub fn has_event(&self, stream: u64, seq: u64) -> bool {
        self.events.contains(&(stream, seq))
    }

    /// Whether record `seq` has jobs held.
    pub fn holds(&self, seq: u64) -> bool {
        self.records.contains_key(&seq)
    }

    /// At a bound.
    fn full(&self) -> bool {
        self.records.len() >= MAX_RECORDS || self.bytes >= MAX_BYTES
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Member `owner` finished everything journaled here before `before`: its
    /// jobs there go; the records left with none, with their facts.
    pub fn release(&mut self, owner: u64, before: u64) -> Vec<(u64, Facts)> {
        let mut emptied = Vec::new();
        for (&seq, r) in self.records.range_mut(..before) {
            let n = r.jobs.len();
            r.jobs.retain(|p| p.owner != owner);
            self.counts.released += (n - r.jobs.len()) as u64;
            if r.jobs.is_empty() {
                emptied.push(seq);
            }
        }
        emptied
            .into_iter()
            .filter_map(|seq| Some((seq, self.remove(seq)?.facts)))
            .collect()
    }

    fn remove(&mut self, seq: u64) -> Option<Record> {
        let r = self.records.remove(&seq)?;
        self.bytes -= r.msg.payload.len() + r.msg.topic.len();
        if let Some(e) = &r.facts.event {
            self.events.remove(&(e.stream_id(), e.seq));
        }
        Some(r)
    }

    /// Member `gone` left: each of its jobs goes to the key's owner now,
    /// `owner_now(group, key)` (`None`: this member). Returns the jobs now
    /// this member's, by record; the records emptied are no longer held.
    pub fn take_over(
        &mut self,
        gone: u64,
        owner_now: &dyn Fn(&str, &[u8]) -> Option<u64>,
    ) -> Vec<Taken> {
        let mut out = Vec::new();
        let seqs: Vec<u64> = self
            .records
            .iter()
            .filter(|(_, r)| r.jobs.iter().any(|p| p.owner == gone))
            .map(|(s, _)| *s)
            .collect();
        for seq in seqs {
            let r = self.records.get_mut(&seq).expect("just listed");
            let mut mine = Vec::new();
            let mut i = 0;
            while i < r.jobs.len() {
                if r.jobs[i].owner != gone {
                    i += 1;
                    continue;
                }
                match owner_now(&r.jobs[i].group, &r.jobs[i].key) {
                    Some(other) => {
                        r.jobs[i].owner = other;
                        i += 1;
                    }
                    None => mine.push(r.jobs.swap_remove(i)),
                }
            }
            if mine.is_empty() {
                continue;
            }
            self.counts.taken += mine.len() as u64;
            let (msg, facts) = if r.jobs.is_empty() {
                let r = self.remove(seq).expect("held");
                (r.msg, r.facts)
            } else {
                (r.msg.clone(), r.facts.clone())
            };
            out.push(Taken {
                seq,
                msg,
                facts,
                jobs: mine,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::work::Step;

    fn parked(owner: u64, key: &str) -> Parked {
        Parked {
            owner,
            group: "g".into(),
            key: key.as_bytes().to_vec(),
            job: Some(Job {
                seq: 0,
                module: "M".into(),
                step: Step::Check,
                reg: None,
                shadow: None,
            }),
            emit: Vec::new(),
        }
    }

    fn record(topic: &str) -> Vec<u8> {
        let mut b = Vec::new();
        Message::encode_into(&mut b, topic, b"payload", 1, None);
        b
    }

    #[test]
    fn progress_releases_only_its_owners_jobs_before_its_mark() {
        let mut h = Holds::default();
        let rec = record("q/a");
        let v = View::of(&rec).unwrap();
        for seq in 1..=5 {
            h.park(seq, &v, parked(7, "k"));
        }
        h.park(3, &v, parked(8, "k"));
        assert_eq!(h.len(), 5);
        let seqs = |v: Vec<(u64, Facts)>| v.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
        assert_eq!(seqs(h.release(7, 4)), vec![1, 2], "3 is still 8's");
        assert!(h.holds(3) && !h.holds(1));
        assert_eq!(seqs(h.release(8, 10)), vec![3]);
        assert_eq!(seqs(h.release(7, 10)), vec![4, 5]);
        assert!(h.is_empty());
        assert_eq!(h.bytes, 0);
        assert_eq!(h.counts.released, 6);
    }

    #[test]
    fn a_member_leaving_hands_its_jobs_to_the_keys_owners_now() {
        let mut h = Holds::default();
        let rec = record("q/a");
        let v = View::of(&rec).unwrap();
        h.park(1, &v, parked(7, "mine"));
        h.park(1, &v, parked(7, "theirs"));
        h.park(2, &v, parked(8, "mine"));
        let now = |_: &str, k: &[u8]| (k != b"mine").then_some(9);
        let taken = h.take_over(7, &now);
        assert_eq!(taken.len(), 1);
        assert_eq!((taken[0].seq, taken[0].jobs.len()), (1, 1));
        assert_eq!(taken[0].jobs[0].key, b"mine");
        assert_eq!(taken[0].msg.topic, "q/a");
        assert!(h.holds(1), "the other job is held for 9 now");
        assert_eq!(h.release(9, 2).len(), 1);
        assert!(h.holds(2), "8 did not leave");
        assert_eq!(h.counts.taken, 1);
    }

    #[test]
    fn past_the_bound_the_oldest_record_is_forgotten() {
        let mut h = Holds::default();
        let rec = record("q/a");
        let v = View::of(&rec).unwrap();
        for seq in 0..MAX_RECORDS as u64 + 3 {
            h.park(seq, &v, parked(1, "k"));
        }
        assert_eq!((h.len(), h.counts.forgotten), (MAX_RECORDS, 3));
        assert!(!h.holds(2) && h.holds(3));
    }
}
