//! The scheduler: which module is due, when, and whether it may start now.
//!
//! Pure and driven by `now`: `handle_timer(now)` moves due modules to a bounded ready
//! queue, `poll_start()` hands out starts while fewer than `max_parallel` runs are
//! going, `handle_done(slot)` frees a slot, and `poll_timeout()` is the next due time
//! (the earliest entry of a binary heap), which the daemon uses as its poll timeout.
//! It spawns nothing and reads no clock.
//!
//! Rules:
//! - Each module is due every `interval`, on a fixed grid (`due + interval`), so runs
//!   do not drift with their own duration.
//! - First runs are spread over each module's first interval in groups of
//!   `max_parallel` (see `phases`), so 200 modules at `interval = 1` make a steady
//!   stream of small batches instead of one burst a second, and each batch starts
//!   without waiting for a free parallel slot.
//! - A module never overlaps itself: due while running or already queued counts one
//!   overrun and is dropped. Ticks missed while the loop was away (a suspended
//!   machine, a clock jump) are skipped and counted too, never replayed as a burst.
//! - The ready queue holds at most one entry per module, so it is bounded by the
//!   module count.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Slot {
    interval: Duration,
    running: bool,
    queued: bool,
    overruns: u32,
}

/// A run the daemon should start now: `slot` is the module's index, `due` when it
/// should have started (for lateness).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Start {
    pub slot: usize,
    pub due: Instant,
}

#[derive(Debug)]
pub struct Scheduler {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
    slots: Vec<Slot>,
    ready: VecDeque<Start>,
    running: u32,
    max_parallel: u32,
}

/// First-run offsets. Modules of one interval start in groups of `group` (the
/// `max_parallel` they can all start at once without queueing), and the groups are
/// spread evenly over the interval. One wake-up then starts a whole group, and their
/// exits tend to arrive together: measured, this cuts the daemon's CPU per check run
/// by about 3x against one start per wake-up, while no start waits for a free slot.
fn phases(intervals: &[Option<Duration>], group: u32) -> Vec<Duration> {
    let mut out = vec![Duration::ZERO; intervals.len()];
    let mut done = vec![false; intervals.len()];
    for i in 0..intervals.len() {
        let Some(iv) = intervals[i] else { continue };
        if done[i] {
            continue;
        }
        let members: Vec<usize> = (i..intervals.len())
            .filter(|&j| intervals[j] == Some(iv))
            .collect();
        let groups = (members.len() as u32).div_ceil(group);
        for (k, &j) in members.iter().enumerate() {
            out[j] = (iv / groups) * (k as u32 / group);
            done[j] = true;
        }
    }
    out
}

impl Scheduler {
    /// One slot per interval, in module order; `None` is a disabled module (never due).
    pub fn new(intervals: &[Option<Duration>], max_parallel: u32, now: Instant) -> Scheduler {
        let max_parallel = max_parallel.max(1);
        let phases = phases(intervals, max_parallel);
        let mut heap = BinaryHeap::with_capacity(intervals.len());
        let mut slots = Vec::with_capacity(intervals.len());
        for (i, iv) in intervals.iter().enumerate() {
            let interval = iv.unwrap_or(Duration::MAX);
            if iv.is_some() {
                heap.push(Reverse((now + phases[i], i)));
            }
            slots.push(Slot {
                interval,
                running: false,
                queued: false,
                overruns: 0,
            });
        }
        Scheduler {
            heap,
            slots,
            ready: VecDeque::with_capacity(intervals.len()),
            running: 0,
            max_parallel,
        }
    }

    /// A new module table after a reload. `from[j]` is the old index of new module
    /// `j` (the same module by name), `None` for a module new to the table. A module
    /// that was already scheduled keeps its next due time, its overrun count and its
    /// running or queued state: a reload (SIGHUP, `crd --install`) does not re-run
    /// anything. A changed interval takes effect from the next run: the next due
    /// time is the old one, or one new interval from now if that is sooner. Modules
    /// new to the table (or newly enabled) get first-run phases among themselves,
    /// as at start: one alone starts at once, several are spread over their interval.
    pub fn reconfigure(
        &mut self,
        intervals: &[Option<Duration>],
        from: &[Option<usize>],
        max_parallel: u32,
        now: Instant,
    ) {
        let mut old_due: Vec<Option<Instant>> = vec![None; self.slots.len()];
        for Reverse((t, i)) in self.heap.drain() {
            old_due[i] = Some(t);
        }
        let fresh: Vec<Option<Duration>> = intervals
            .iter()
            .zip(from)
            .map(|(iv, f)| match f {
                Some(i) if old_due[*i].is_some() => None,
                _ => *iv,
            })
            .collect();
        let max_parallel = max_parallel.max(1);
        let phases = phases(&fresh, max_parallel);
        let mut slots = Vec::with_capacity(intervals.len());
        for (j, iv) in intervals.iter().enumerate() {
            let old = from[j].map(|i| &self.slots[i]);
            let interval = iv.unwrap_or(Duration::MAX);
            if let Some(iv) = *iv {
                let due = match from[j].and_then(|i| old_due[i]) {
                    Some(d) if old.is_some_and(|o| o.interval != iv) => d.min(now + iv),
                    Some(d) => d,
                    None => now + phases[j],
                };
                self.heap.push(Reverse((due, j)));
            }
            slots.push(Slot {
                interval,
                running: old.is_some_and(|o| o.running),
                queued: false,
                overruns: old.map_or(0, |o| o.overruns),
            });
        }
        // Queued starts of modules that are still enabled stay queued, in order.
        let ready: VecDeque<Start> = self
            .ready
            .drain(..)
            .filter_map(|st| {
                let j = from.iter().position(|f| *f == Some(st.slot))?;
                intervals[j]?;
                slots[j].queued = true;
                Some(Start {
                    slot: j,
                    due: st.due,
                })
            })
            .collect();
        self.running = slots.iter().filter(|s| s.running).count() as u32;
        self.slots = slots;
        self.ready = ready;
        self.max_parallel = max_parallel;
    }

    /// Moves every module due at or before `now` to the ready queue.
    pub fn handle_timer(&mut self, now: Instant) {
        while let Some(&Reverse((due, i))) = self.heap.peek() {
            if due > now {
                break;
            }
            self.heap.pop();
            let slot = &mut self.slots[i];
            let mut next = due + slot.interval;
            if next <= now {
                // The loop was away for whole intervals (a suspend, a clock jump):
                // skip them and count them. In u64 nanoseconds (584 years:
                // saturating, never wrapping); the count saturates too.
                let iv = super::dur::ns(slot.interval).max(1);
                let behind = super::dur::ns(now.duration_since(due));
                let missed = u32::try_from(behind / iv).unwrap_or(u32::MAX);
                slot.overruns = slot.overruns.saturating_add(missed);
                // The first grid point after `now`: due + k * interval.
                next = now + Duration::from_nanos(iv - behind % iv);
            }
            self.heap.push(Reverse((next, i)));
            if slot.running || slot.queued {
                slot.overruns = slot.overruns.saturating_add(1);
            } else {
                slot.queued = true;
                self.ready.push_back(Start { slot: i, due });
            }
        }
    }

    /// The next run to start, if a parallel slot is free. Call until `None`.
    pub fn poll_start(&mut self) -> Option<Start> {
        if self.running >= self.max_parallel {
            return None;
        }
        let s = self.ready.pop_front()?;
        let slot = &mut self.slots[s.slot];
        slot.queued = false;
        slot.running = true;
        self.running += 1;
        Some(s)
    }

    /// A module's run (check and response) is over.
    pub fn handle_done(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        if slot.running {
            slot.running = false;
            self.running -= 1;
        }
    }

    /// Marks a module as running without a start (a run that outlived a reload).
    pub fn mark_running(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        if !slot.running {
            slot.running = true;
            self.running += 1;
        }
    }

    /// When the next module falls due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// When module `i` is next due.
    pub fn next_due(&self, i: usize) -> Option<Instant> {
        self.heap
            .iter()
            .find(|Reverse((_, s))| *s == i)
            .map(|Reverse((t, _))| *t)
    }

    pub fn overruns(&self, i: usize) -> u32 {
        self.slots[i].overruns
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.slots[i].running
    }

    pub fn running(&self) -> u32 {
        self.running
    }

    pub fn queued(&self) -> usize {
        self.ready.len()
    }
}

/// Start lateness (start - due) as a log2 histogram over microseconds: bucket k holds
/// lateness below 2^k µs. Fixed size, so it never grows with uptime.
#[derive(Clone, Debug, Default)]
pub struct Lateness {
    buckets: [u32; Lateness::BUCKETS],
    count: u32,
    max_us: u64,
}

impl Lateness {
    /// 2^25 µs is about 33 s; anything later lands in the last bucket.
    pub const BUCKETS: usize = 26;

    pub fn record(&mut self, late: Duration) {
        let us = super::dur::us(late);
        let k = (64 - us.leading_zeros() as usize).min(Self::BUCKETS - 1);
        self.buckets[k] = self.buckets[k].saturating_add(1);
        self.count = self.count.saturating_add(1);
        self.max_us = self.max_us.max(us);
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// An upper bound, in µs, on the `p`-th percentile (0 < p <= 100).
    pub fn percentile_us(&self, p: u32) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let want = (u64::from(self.count) * u64::from(p)).div_ceil(100);
        let mut seen = 0u64;
        for (k, n) in self.buckets.iter().enumerate() {
            seen += u64::from(*n);
            if seen >= want {
                if k == Self::BUCKETS - 1 {
                    return self.max_us;
                }
                return (1u64 << k).min(self.max_us.max(1));
            }
        }
        self.max_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn drain(s: &mut Scheduler) -> Vec<usize> {
        std::iter::from_fn(|| s.poll_start())
            .map(|st| st.slot)
            .collect()
    }

    #[test]
    fn first_runs_are_spread_over_the_interval_in_groups_of_max_parallel() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(&[Some(ms(1000)); 8], 2, t0);
        assert_eq!(s.poll_timeout(), Some(t0));
        s.handle_timer(t0);
        assert_eq!(drain(&mut s), vec![0, 1]);
        assert_eq!(s.poll_timeout(), Some(t0 + ms(250)));
        s.handle_done(0);
        s.handle_done(1);
        s.handle_timer(t0 + ms(749));
        assert_eq!(drain(&mut s), vec![2, 3]);
        assert_eq!(s.queued(), 2, "4 and 5 wait for a slot");
        assert_eq!(s.poll_timeout(), Some(t0 + ms(750)), "6 and 7 are due next");
    }

    /// Missed intervals are counted in a u64: a long stop with a short interval
    /// must count exactly, and `missed + 1` must not wrap.
    #[test]
    fn a_jump_of_100_days_skips_to_the_next_grid_point_and_counts_exactly() {
        let day = Duration::from_secs(86_400);
        let t0 = Instant::now();
        let mut s = Scheduler::new(&[Some(ms(1)), Some(day)], 8, t0);
        s.handle_timer(t0);
        assert_eq!(drain(&mut s), vec![0, 1]);
        s.handle_done(0);
        s.handle_done(1);
        let now = t0 + day * 100 + ms(1) / 2;
        s.handle_timer(now);
        assert_eq!(drain(&mut s), vec![0, 1], "each runs once, no burst");
        // 1 ms: due at t0 + 1 ms .. t0 + 100 d: 8.64e9 ticks, all but one missed;
        // the count saturates instead of wrapping.
        assert_eq!(s.overruns(0), u32::MAX);
        assert_eq!(s.next_due(0), Some(t0 + day * 100 + ms(1)));
        // 1 day: due at t0 + 1 d .. t0 + 100 d: 100 ticks, 99 missed.
        assert_eq!(s.overruns(1), 99);
        assert_eq!(s.next_due(1), Some(t0 + day * 101));
        assert_eq!(s.poll_timeout(), Some(t0 + day * 100 + ms(1)));
    }

    /// A SIGHUP (and so every `crd --install`) keeps each unchanged module's next
    /// run rather than re-running every module at once.
    #[test]
    fn a_reload_keeps_each_unchanged_modules_next_run() {
        let t0 = Instant::now();
        let s30 = Duration::from_secs(30);
        let mut s = Scheduler::new(&[Some(s30), Some(ms(100))], 8, t0);
        s.handle_timer(t0);
        assert_eq!(drain(&mut s), vec![0, 1]);
        s.handle_done(0);
        // Reloads at 1, 2, 3 s with the same modules: nothing becomes due.
        for k in 1..=3u64 {
            s.reconfigure(
                &[Some(s30), Some(ms(100))],
                &[Some(0), Some(1)],
                8,
                t0 + ms(1000 * k),
            );
            assert_eq!(s.next_due(0), Some(t0 + s30));
            assert!(s.is_running(1), "a run in flight stays running");
            s.handle_timer(t0 + ms(1000 * k));
            assert!(drain(&mut s).is_empty(), "reload {k} started something");
        }
        assert_eq!(s.running(), 1);
        s.handle_done(1);
        assert_eq!(s.running(), 0);
    }

    #[test]
    fn a_reload_applies_a_changed_interval_from_the_next_run_and_phases_new_modules() {
        let t0 = Instant::now();
        let day = Duration::from_secs(86_400);
        let mut s = Scheduler::new(&[Some(day), Some(day)], 8, t0);
        s.handle_timer(t0);
        assert_eq!(drain(&mut s), vec![0, 1]);
        s.handle_done(0);
        s.handle_done(1);
        let now = t0 + ms(5000);
        // Module 0 now every minute; module 1 unchanged; two new modules at 10 s,
        // the old index 1 now at position 2 (a new module sorted before it).
        let m = Duration::from_secs(60);
        let ten = Duration::from_secs(10);
        s.reconfigure(
            &[Some(m), Some(ten), Some(day), Some(ten)],
            &[Some(0), None, Some(1), None],
            1,
            now,
        );
        assert_eq!(
            s.next_due(0),
            Some(now + m),
            "sooner of the old due and one new interval"
        );
        assert_eq!(s.next_due(2), Some(t0 + day), "unchanged: kept");
        assert_eq!(
            s.next_due(1),
            Some(now),
            "new modules: phased among themselves"
        );
        assert_eq!(s.next_due(3), Some(now + ten / 2));
        // A module that was disabled and is enabled again is new to the schedule.
        s.reconfigure(
            &[Some(m), None, Some(day), Some(ten)],
            &[Some(0), Some(1), Some(2), Some(3)],
            1,
            now,
        );
        assert_eq!(s.next_due(1), None);
        s.reconfigure(
            &[Some(m), Some(ten), Some(day), Some(ten)],
            &[Some(0), Some(1), Some(2), Some(3)],
            1,
            now + ms(1),
        );
        assert_eq!(s.next_due(1), Some(now + ms(1)));
    }

    #[test]
    fn a_reload_keeps_queued_starts_of_modules_still_there() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(&[Some(ms(100)); 3], 3, t0);
        s.handle_timer(t0);
        assert_eq!(s.queued(), 3);
        // Module 1 removed; 0 and 2 become 0 and 1.
        s.reconfigure(&[Some(ms(100)), Some(ms(100))], &[Some(0), Some(2)], 1, t0);
        assert_eq!(s.queued(), 2);
        assert_eq!(drain(&mut s), vec![0], "max_parallel is now 1");
        s.handle_done(0);
        assert_eq!(drain(&mut s), vec![1]);
    }

    #[test]
    fn phases_group_by_interval() {
        let a = Some(ms(1000));
        let b = Some(ms(300));
        let p = phases(&[a, b, a, None, a, b, a], 2);
        assert_eq!(p, vec![ms(0), ms(0), ms(0), ms(0), ms(500), ms(0), ms(500)]);
        let p = phases(&[a, a, a], 1);
        let third = ms(1000) / 3;
        assert_eq!(p, vec![ms(0), third, third * 2]);
    }

    #[test]
    fn due_times_follow_a_fixed_grid() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(&[Some(ms(100))], 1, t0);
        for k in 0..5u32 {
            let now = t0 + ms(100) * k + ms(30); // each start is 30 ms late
            s.handle_timer(now);
            let st = s.poll_start().expect("due");
            assert_eq!(st.due, t0 + ms(100) * k);
            s.handle_done(st.slot);
            assert_eq!(s.poll_timeout(), Some(t0 + ms(100) * (k + 1)));
        }
        assert_eq!(s.overruns(0), 0);
    }

    #[test]
    fn a_module_never_overlaps_itself() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(&[Some(ms(100))], 4, t0);
        s.handle_timer(t0);
        assert_eq!(drain(&mut s), vec![0]);
        s.handle_timer(t0 + ms(100));
        s.handle_timer(t0 + ms(200));
        assert_eq!(drain(&mut s), Vec::<usize>::new());
        assert_eq!(s.overruns(0), 2);
        s.handle_done(0);
        s.handle_timer(t0 + ms(300));
        assert_eq!(drain(&mut s), vec![0]);
    }

    #[test]
    fn max_parallel_queues_at_most_once_per_module() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(&[Some(ms(10)); 3], 1, t0);
        s.handle_timer(t0 + ms(9));
        assert_eq!(drain(&mut s), vec![0]);
        assert_eq!(s.queued(), 2);
        // Due again while still queued: an overrun, not a second queue entry.
        s.handle_timer(t0 + ms(15));
        assert_eq!(s.queued(), 2);
        assert_eq!(s.overruns(1) + s.overruns(2), 1);
        s.handle_done(0);
        assert_eq!(drain(&mut s), vec![1]);
        s.handle_done(1);
        assert_eq!(drain(&mut s), vec![2]);
        assert_eq!(s.running(), 1);
    }

    #[test]
    fn missed_ticks_are_skipped_and_counted_not_replayed() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(&[Some(ms(100))], 1, t0);
        // The machine was suspended for ~1 s.
        s.handle_timer(t0 + ms(1050));
        assert_eq!(drain(&mut s), vec![0]);
        assert_eq!(s.overruns(0), 10);
        assert_eq!(s.poll_timeout(), Some(t0 + ms(1100)));
    }

    #[test]
    fn disabled_modules_are_never_due() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(&[None, Some(ms(50))], 4, t0);
        s.handle_timer(t0 + ms(1000));
        assert_eq!(drain(&mut s), vec![1]);
        assert_eq!(s.next_due(0), None);
    }

    #[test]
    fn mark_running_after_reload_prevents_overlap() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(&[Some(ms(10))], 4, t0);
        s.mark_running(0);
        s.handle_timer(t0);
        assert_eq!(drain(&mut s), Vec::<usize>::new());
        assert!(s.is_running(0));
        s.handle_done(0);
        assert_eq!(s.running(), 0);
    }

    #[test]
    fn two_hundred_modules_stay_on_schedule_in_virtual_time() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(&[Some(ms(1000)); 200], 8, t0);
        let mut starts = 0;
        // Step 1 ms at a time for 10 s; every run takes 3 ms.
        let mut running: Vec<(Instant, usize)> = Vec::new();
        for step in 0..10_000u32 {
            let now = t0 + ms(1) * step;
            running.retain(|&(end, slot)| {
                if end <= now {
                    s.handle_done(slot);
                    false
                } else {
                    true
                }
            });
            s.handle_timer(now);
            while let Some(st) = s.poll_start() {
                assert!(now - st.due <= ms(1), "late start");
                running.push((now + ms(3), st.slot));
                starts += 1;
            }
        }
        assert_eq!(starts, 2000);
        assert!((0..200).all(|i| s.overruns(i) == 0));
    }

    #[test]
    fn lateness_percentiles_are_upper_bounds() {
        let mut l = Lateness::default();
        assert_eq!(l.percentile_us(99), 0);
        for _ in 0..98 {
            l.record(Duration::from_micros(300));
        }
        l.record(Duration::from_millis(5));
        l.record(Duration::from_secs(100));
        assert_eq!(l.count(), 100);
        assert_eq!(l.percentile_us(50), 512);
        assert_eq!(l.percentile_us(99), 8192);
        assert_eq!(l.percentile_us(100), 100_000_000);
        assert_eq!(l.max_us(), 100_000_000);
    }
}
