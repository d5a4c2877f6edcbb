//! What a group member keeps for the work other members own (`group.rs`): per
//! journal record, the jobs it would have run had it owned their keys (a
//! plain module's check, a rule's check, or the events and response a rule's
//! shadow decision made), each with its owner, and the record's bytes. A
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
//! Compact, since a burst holds the other members' whole share of it until
//! their progress comes (one progress interval or more): a record is kept as
//! its journal encoding in one allocation and decoded only when taken over; a
//! job keeps its key's hash and its group's index, not their names.
//! Bounded: at most `MAX_RECORDS` records and `MAX_BYTES` of their bytes;
//! past either the oldest record held is forgotten (counted: its owner still
//! runs it; only its takeover is lost). No IO.

use crate::collect::message::{Facts, Message, View};
use crate::collect::work::Job;
use crate::core::event::Event;
use std::collections::VecDeque;

/// Records held at most.
pub const MAX_RECORDS: usize = 16_384;
/// Bytes of held records at most.
pub const MAX_BYTES: usize = 8 << 20;
/// Group names a job can name (`Parked::group` is an index into them); a
/// job of a group past it is not held (counted as forgotten).
pub const MAX_GROUPS: usize = 256;

/// A job another member owns, held here (32 bytes: a burst holds thousands).
#[derive(Debug)]
pub struct Parked {
    /// The owner (`group::member_id`).
    pub owner: u64,
    /// The key the owner was chosen by (`group::key`).
    pub key: u64,
    /// Its group, by `Holds::group`.
    pub group: u8,
    pub todo: Todo,
}

/// What a held job does.
#[derive(Debug)]
pub enum Todo {
    /// A plain module's check on the record: the module is the one of the
    /// group whose key on the record's origin is `Parked::key`, found again
    /// when taken over (the hold keeps no name).
    Check,
    /// Anything else (a rule's check with its register's key, a decision's
    /// response and events), kept whole.
    Whole(Box<Whole>),
}

#[derive(Debug)]
pub struct Whole {
    /// The run it would start (`None`: only events to send).
    pub job: Option<Job>,
    /// The events the owner's decision sends (a rule's `fired`, `cleared`).
    pub emit: Vec<Event>,
}

/// One record's held jobs, with the record's journal encoding (it is not in
/// work).
struct Record {
    seq: u64,
    raw: Box<[u8]>,
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
    /// By journal seq, ascending (records are parked in the order they are
    /// read): a deque, not a tree, since a burst holds thousands and a
    /// tree's nodes cost more than the record's own bytes.
    records: VecDeque<Record>,
    bytes: usize,
    /// The group names jobs were held for (at most `MAX_GROUPS`).
    groups: Vec<Box<str>>,
    pub counts: Counts,
}

impl Holds {
    /// The index of group `g` for `Parked::group` (`None` past `MAX_GROUPS`).
    pub fn group(&mut self, g: &str) -> Option<u8> {
        let i = match self.groups.iter().position(|x| &**x == g) {
            Some(i) => i,
            None if self.groups.len() < MAX_GROUPS => {
                self.groups.push(g.into());
                self.groups.len() - 1
            }
            None => return None,
        };
        u8::try_from(i).ok()
    }

    /// Where record `seq` is, or would go.
    fn find(&self, seq: u64) -> Result<usize, usize> {
        self.records.binary_search_by_key(&seq, |r| r.seq)
    }

    /// Holds `p` for journal record `seq` (`v`, encoded once per record);
    /// the oldest record goes past a bound.
    pub fn park(&mut self, seq: u64, v: &View<'_>, p: Parked) {
        if let Ok(i) = self.find(seq) {
            self.records[i].jobs.push(p);
            return;
        }
        while self.full() {
            let Some(oldest) = self.records.pop_front() else {
                break;
            };
            self.bytes -= oldest.raw.len();
            self.counts.forgotten += 1;
        }
        let mut raw = Vec::new();
        Message::encode_into(
            &mut raw,
            v.topic,
            v.payload,
            v.received_ms,
            v.event.as_ref(),
        );
        self.bytes += raw.len();
        let r = Record {
            seq,
            raw: raw.into_boxed_slice(),
            jobs: vec![p],
        };
        match self.find(seq) {
            Err(i) if i == self.records.len() => self.records.push_back(r),
            Err(i) | Ok(i) => self.records.insert(i, r),
        }
    }

    /// Whether record `seq` has jobs held.
    pub fn holds(&self, seq: u64) -> bool {
        self.find(seq).is_ok()
    }

    /// The oldest record with a job held for `owner`.
    pub fn oldest_of(&self, owner: u64) -> Option<u64> {
        let mut held = self.records.iter();
        held.find(|r| r.jobs.iter().any(|p| p.owner == owner))
            .map(|r| r.seq)
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
    /// jobs there go; returns the records left with none (no longer held).
    pub fn release(&mut self, owner: u64, before: u64) -> Vec<u64> {
        let end = self.find(before).unwrap_or_else(|i| i);
        let mut emptied = Vec::new();
        for r in self.records.range_mut(..end) {
            let n = r.jobs.len();
            r.jobs.retain(|p| p.owner != owner);
            self.counts.released += (n - r.jobs.len()) as u64;
            if r.jobs.is_empty() {
                emptied.push(r.seq);
            }
        }
        self.drop_empty();
        emptied
    }

    /// Records left with no job go (and the deque's room a burst left, once
    /// three quarters of it stand empty).
    fn drop_empty(&mut self) {
        let bytes = &mut self.bytes;
        self.records.retain(|r| {
            if !r.jobs.is_empty() {
                return true;
            }
            *bytes -= r.raw.len();
            false
        });
        if self.records.len() < self.records.capacity() / 4 {
            self.records.shrink_to_fit();
        }
    }

    /// Member `gone` left: each of its jobs goes to the key's owner now,
    /// `owner_now(group, key)` (`None`: this member). Returns the jobs now
    /// this member's, by record; the records emptied are no longer held.
    pub fn take_over(
        &mut self,
        gone: u64,
        owner_now: &dyn Fn(&str, u64) -> Option<u64>,
    ) -> Vec<Taken> {
        let mut out = Vec::new();
        for r in &mut self.records {
            let mut mine = Vec::new();
            let mut i = 0;
            while i < r.jobs.len() {
                let p = &r.jobs[i];
                if p.owner != gone {
                    i += 1;
                    continue;
                }
                let group = self.groups.get(usize::from(p.group)).map_or("", |g| g);
                match owner_now(group, p.key) {
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
            // Encoded by `park`: it decodes.
            let Ok((msg, facts)) = View::of(&r.raw).map(|v| v.to_owned()) else {
                continue;
            };
            out.push(Taken {
                seq: r.seq,
                msg,
                facts,
                jobs: mine,
            });
        }
        self.drop_empty();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::work::Step;

    fn parked(owner: u64, key: u64) -> Parked {
        Parked {
            owner,
            group: 0,
            key,
            todo: Todo::Whole(Box::new(Whole {
                job: Some(Job {
                    seq: 0,
                    module: "M".into(),
                    step: Step::Check,
                    reg: None,
                    shadow: None,
                }),
                emit: Vec::new(),
            })),
        }
    }

    const MINE: u64 = 5;

    fn record(topic: &str) -> Vec<u8> {
        let mut b = Vec::new();
        Message::encode_into(&mut b, topic, b"payload", 1, None);
        b
    }

    /// Held without the event's fields, a crd event's record decodes to the
    /// same message and facts the journal's record gave.
    #[test]
    fn a_crd_event_taken_over_has_the_facts_it_was_read_with() {
        use crate::collect::message::EventRef;
        let payload = br#"{"node":"n1","stream":"00000000000000ab","seq":7,"ts":1,"module":"M","kind":"fired","code":2,"dur_ms":1,"out":"x","hop":1}"#;
        let mut rec = Vec::new();
        let e = EventRef::parse(payload);
        assert!(e.is_some());
        Message::encode_into(&mut rec, "crd/n1/event/M", payload, 5, e.as_ref());
        let v = View::of(&rec).unwrap();
        let mut h = Holds::default();
        h.park(3, &v, parked(7, 1));
        let taken = h.take_over(7, &|_: &str, _: u64| None);
        let (msg, facts) = v.to_owned();
        assert_eq!(taken[0].msg, msg);
        assert_eq!(taken[0].facts, facts);
        assert!(facts.event.is_some());
    }

    #[test]
    fn a_held_job_is_small() {
        assert!(std::mem::size_of::<Parked>() <= 32);
    }

    #[test]
    fn progress_releases_only_its_owners_jobs_before_its_mark() {
        let mut h = Holds::default();
        let rec = record("q/a");
        let v = View::of(&rec).unwrap();
        for seq in 1..=5 {
            h.park(seq, &v, parked(7, 1));
        }
        h.park(3, &v, parked(8, 1));
        assert_eq!(h.len(), 5);
        assert_eq!((h.release(7, 4)), vec![1, 2], "3 is still 8's");
        assert!(h.holds(3) && !h.holds(1));
        assert_eq!((h.release(8, 10)), vec![3]);
        assert_eq!((h.release(7, 10)), vec![4, 5]);
        assert!(h.is_empty());
        assert_eq!(h.bytes, 0);
        assert_eq!(h.counts.released, 6);
    }

    #[test]
    fn a_member_leaving_hands_its_jobs_to_the_keys_owners_now() {
        let mut h = Holds::default();
        let rec = record("q/a");
        let v = View::of(&rec).unwrap();
        h.park(1, &v, parked(7, MINE));
        h.park(1, &v, parked(7, 2));
        h.park(2, &v, parked(8, MINE));
        let now = |_: &str, k: u64| (k != MINE).then_some(9);
        let taken = h.take_over(7, &now);
        assert_eq!(taken.len(), 1);
        assert_eq!((taken[0].seq, taken[0].jobs.len()), (1, 1));
        assert_eq!(taken[0].jobs[0].key, MINE);
        assert_eq!(taken[0].msg.topic, "q/a");
        assert!(h.holds(1), "the other job is held for 9 now");
        assert_eq!(h.release(9, 2).len(), 1);
        assert!(h.holds(2), "8 did not leave");
        assert_eq!(h.counts.taken, 1);
    }

    #[test]
    fn a_record_parked_out_of_order_keeps_the_seq_order() {
        let mut h = Holds::default();
        let rec = record("q/a");
        let v = View::of(&rec).unwrap();
        for seq in [5, 3, 9, 4] {
            h.park(seq, &v, parked(7, 1));
        }
        assert_eq!(h.release(7, 5), vec![3, 4]);
        assert!(h.holds(5) && h.holds(9) && !h.holds(4));
        let taken = h.take_over(7, &|_: &str, _: u64| None);
        let seqs: Vec<u64> = taken.iter().map(|t| t.seq).collect();
        assert_eq!(seqs, vec![5, 9]);
        assert!(h.is_empty());
    }

    #[test]
    fn past_the_bound_the_oldest_record_is_forgotten() {
        let mut h = Holds::default();
        let rec = record("q/a");
        let v = View::of(&rec).unwrap();
        for seq in 0..MAX_RECORDS as u64 + 3 {
            h.park(seq, &v, parked(1, 1));
        }
        assert_eq!((h.len(), h.counts.forgotten), (MAX_RECORDS, 3));
        assert!(!h.holds(2) && h.holds(3));
    }
}
