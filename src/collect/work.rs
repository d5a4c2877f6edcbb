//! The collector's work in hand: journal records held while their jobs run,
//! the checks and responses waiting for a slot, and the runs in flight, each
//! known by the collector's own tag (`Purpose::Collect`). Pure bookkeeping:
//! what a job means is `collector.rs`'s business.

use crate::collect::message::{Facts, Message};
use std::collections::{BTreeMap, VecDeque};

/// Records read from the journal and held (with their payload) until retired.
pub const READ_AHEAD_RECORDS: usize = 32;

/// Which run of a message a job is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
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
pub struct RegKey {
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub seq: u64,
    pub module: String,
    pub step: Step,
    pub reg: Option<Box<RegKey>>,
    /// Another group member owns the key (`group::member_id`): decided here
    /// only so that the key's state follows the owner's; what it would emit
    /// and start is held for that member (`holds.rs`), not carried out.
    pub shadow: Option<u64>,
}

/// A job of the record `pump` is on, before it is kept: its module by index
/// in the modules `pump` was handed. A job settled at once (a module without
/// a check, a rule's decision) is done with that, neither copying the
/// module's name nor finding the module by it (callgrind: ~400 instructions
/// of a message's ~7,000 on the journal path); a `Job`, which outlives the
/// modules of one call, is made for a run.
pub struct Draft {
    pub module: usize,
    pub step: Step,
    pub reg: Option<Box<RegKey>>,
    /// As `Job::shadow`.
    pub shadow: Option<u64>,
}

/// A journal record being worked on.
pub struct Held {
    pub msg: Message,
    pub facts: Facts,
    /// Jobs of this record not yet done.
    pub left: u32,
    /// Taken over from a group member that left: retired from the journal
    /// already (`holds.rs`), so its end retires nothing.
    pub taken: bool,
}

/// Records held, jobs queued, runs in flight.
#[derive(Default)]
pub struct Work {
    pub records: BTreeMap<u64, Held>,
    /// Checks to start, in journal order.
    pub ready: VecDeque<Job>,
    /// Responses to start, in the order their checks ended: they go before new
    /// checks, first come first served, so the oldest record is retired first
    /// (its journal watermark must move for a restart not to run it again).
    pub responses: VecDeque<Job>,
    /// (tag, job) of runs in flight.
    pub running: Vec<(u32, Job)>,
    /// The tag the next run gets.
    next_tag: u32,
    /// The jobs of the record `pump` is on, reused (one per matching module).
    pub jobs: Vec<Draft>,
    /// `pump` stopped at its budget with records left to read.
    pub busy: bool,
    /// The journal seq of the next record to read (those before it are
    /// taken).
    pub next_read: u64,
}

impl Work {
    /// Room to read another record.
    pub fn has_room(&self) -> bool {
        self.records.len() < READ_AHEAD_RECORDS
    }

    /// The next job to start: a response before a check.
    pub fn next_job(&mut self) -> Option<Job> {
        self.responses
            .pop_front()
            .or_else(|| self.ready.pop_front())
    }

    /// `job` starts: the tag its run carries.
    pub fn start(&mut self, job: Job) -> u32 {
        // At most `max_parallel` run; a tag still in flight is skipped.
        let mut tag = self.next_tag;
        while self.running.iter().any(|(t, _)| *t == tag) {
            tag = tag.wrapping_add(1);
        }
        self.next_tag = tag.wrapping_add(1);
        self.running.push((tag, job));
        tag
    }

    /// The run tagged `tag` ended: its job.
    pub fn finished(&mut self, tag: u32) -> Option<Job> {
        let i = self.running.iter().position(|(t, _)| *t == tag)?;
        Some(self.running.remove(i).1)
    }

    /// One job of record `seq` is done: the record, when it was its last.
    pub fn job_done(&mut self, seq: u64) -> Option<Held> {
        let h = self.records.get_mut(&seq)?;
        h.left = h.left.saturating_sub(1);
        if h.left > 0 {
            return None;
        }
        self.records.remove(&seq)
    }

    /// Whether the crd event (stream, seq) is in a record held.
    pub fn has_event(&self, stream: &str, seq: u64) -> bool {
        self.records.values().any(|h| {
            h.facts
                .event
                .as_ref()
                .is_some_and(|o| o.stream == stream && o.seq == seq)
        })
    }

    /// Jobs waiting for a slot.
    pub fn queued(&self) -> usize {
        self.ready.len() + self.responses.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(seq: u64) -> Job {
        Job {
            seq,
            module: "M".into(),
            step: Step::Check,
            reg: None,
            shadow: None,
        }
    }

    #[test]
    fn tags_in_flight_are_never_given_twice() {
        let mut w = Work {
            next_tag: u32::MAX - 1,
            ..Work::default()
        };
        let a = w.start(job(1));
        let b = w.start(job(2));
        assert_eq!((a, b), (u32::MAX - 1, u32::MAX));
        w.next_tag = a;
        let c = w.start(job(3));
        assert_eq!(c, 0, "wrapped past both tags in flight");
        assert_eq!(w.finished(b).map(|j| j.seq), Some(2));
        assert_eq!(w.finished(b), None, "once");
    }

    #[test]
    fn a_response_goes_before_a_check_and_a_record_ends_with_its_last_job() {
        let mut w = Work::default();
        w.ready.push_back(job(1));
        w.responses.push_back(Job {
            step: Step::Response {
                output: String::new(),
                code: 0,
            },
            ..job(2)
        });
        assert_eq!(w.next_job().map(|j| j.seq), Some(2));
        assert_eq!(w.next_job().map(|j| j.seq), Some(1));
        assert_eq!(w.next_job(), None);
    }
}
