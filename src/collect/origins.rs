//! What the collector remembers per (module, origin) to decide the next message:
//! consecutive hits, whether the condition is firing, when it last responded
//! (`core::decide::State`), so that `trigger_after` and `cooldown` hold per origin
//! node. No IO.
//!
//! Only a state that would decide differently from a fresh one is kept: none for a
//! module whose every message is a hit with no `trigger_after`, `cooldown` or
//! check to clear it, however many nodes it hears from. At most `MAX_STATES`
//! states; past it the least recently used one goes (counted), and that origin
//! starts afresh. Each is 40 bytes (see `Origins`).

use super::shards::Shards;
use crate::core::decide::State;
use crate::core::module::Module;
use std::hash::{BuildHasher, RandomState};
use std::time::Instant;

/// (module, origin) states kept.
pub const MAX_STATES: usize = 10_000;

#[derive(Debug)]
struct Slot {
    used: u64,
    state: State,
}

/// States by a keyed 64-bit hash of (module, origin), not by name: 40 bytes a
/// state and no allocation of its own. Two origins share a state only if their
/// hashes collide, about n²/2^65 (1 in 10^11 at 10,000), and the key is random
/// per process, so a publisher cannot aim for it.
#[derive(Debug, Default)]
pub struct Origins {
    states: Shards<Slot>,
    keys: RandomState,
    clock: u64,
    pub evicted: u64,
}

/// Whether `st` decides the next run of `m` as a fresh state would.
fn as_fresh(m: &Module, st: &State, now: Instant) -> bool {
    let s = &m.settings;
    (st.hits == 0 || s.trigger_after <= 1)
        // Only a check or a rule's condition can clear a firing condition (and
        // say `cleared`).
        && (!st.firing || (m.check.is_none() && m.settings.rule.register.is_none()))
        && st.last_response.is_none_or(|t| {
            m.response.is_none() || now.saturating_duration_since(t) >= s.cooldown
        })
}

impl Origins {
    /// Runs `f` on the state of (`m`, `origin`), fresh if none is kept, and keeps
    /// it afterwards only if it is not as fresh.
    pub fn with<R>(
        &mut self,
        m: &Module,
        origin: &str,
        now: Instant,
        f: impl FnOnce(&mut State) -> R,
    ) -> R {
        self.clock += 1;
        let key = self.keys.hash_one((m.name.as_str(), origin));
        if let Some(slot) = self.states.get_mut(key) {
            slot.used = self.clock;
            let r = f(&mut slot.state);
            if as_fresh(m, &slot.state, now) {
                self.states.remove(key);
            }
            return r;
        }
        let mut state = State::default();
        let r = f(&mut state);
        if !as_fresh(m, &state, now) {
            if self.states.len() >= MAX_STATES
                && let Some(oldest) = self.states.min_key_by(|s| s.used)
            {
                self.states.remove(oldest);
                self.evicted += 1;
            }
            let slot = Slot {
                used: self.clock,
                state,
            };
            self.states.insert(key, slot);
        }
        r
    }

    /// The state of (`m`, `origin`) if one is kept (a fresh one otherwise),
    /// without touching it.
    pub fn peek(&self, m: &Module, origin: &str) -> Option<&State> {
        let key = self.keys.hash_one((m.name.as_str(), origin));
        self.states.get(key).map(|s| &s.state)
    }

    /// States kept.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::decide::{Outcome, decide};
    use std::path::PathBuf;
    use std::time::Duration;

    fn module(check: bool, response: bool, trigger_after: u32, cooldown_s: u64) -> Module {
        let mut m = Module {
            name: "M".into(),
            dir: PathBuf::from("/nonexistent/M"),
            check: check.then(|| PathBuf::from("/bin/true")),
            response: response.then(|| PathBuf::from("/bin/true")),
            settings: Default::default(),
        };
        m.settings.trigger_after = trigger_after;
        m.settings.cooldown = Duration::from_secs(cooldown_s);
        m
    }

    fn run(o: &mut Origins, m: &Module, origin: &str, code: i32, now: Instant) -> bool {
        o.with(m, origin, now, |st| {
            decide(
                &m.settings,
                st,
                Outcome::Exited(code),
                m.response.is_some(),
                now,
            )
            .respond
        })
    }

    #[test]
    fn a_module_with_nothing_to_remember_keeps_no_state() {
        let t = Instant::now();
        let mut o = Origins::default();
        let m = module(false, false, 1, 0);
        for i in 0..1000 {
            run(&mut o, &m, &format!("n{i}"), 0, t);
        }
        assert!(o.is_empty());
        // A response without cooldown remembers nothing either.
        let m = module(false, true, 1, 0);
        assert!(run(&mut o, &m, "n1", 0, t) && run(&mut o, &m, "n1", 0, t));
        assert!(o.is_empty());
    }

    #[test]
    fn trigger_after_cooldown_and_firing_are_kept_per_origin_until_as_fresh() {
        let t = Instant::now();
        let mut o = Origins::default();
        // trigger_after 2: the first hit is remembered, per origin.
        let m = module(false, true, 2, 0);
        assert!(!run(&mut o, &m, "a", 0, t));
        assert!(!run(&mut o, &m, "b", 0, t));
        assert_eq!(o.len(), 2);
        assert!(run(&mut o, &m, "a", 0, t), "a's second hit");
        // A cooldown is kept until it has passed, then the state goes.
        let m = module(false, true, 1, 10);
        let mut o = Origins::default();
        assert!(run(&mut o, &m, "a", 0, t));
        assert!(!run(&mut o, &m, "a", 0, t + Duration::from_secs(5)));
        assert!(
            run(&mut o, &m, "b", 0, t),
            "another origin is not held back"
        );
        assert_eq!(o.len(), 2);
        assert!(run(&mut o, &m, "a", 0, t + Duration::from_secs(10)));
        o.with(&m, "a", t + Duration::from_secs(30), |_| ());
        assert_eq!(o.len(), 1, "a's cooldown passed: forgotten");
        // With a check, firing is kept until the check clears it.
        let m = module(true, false, 1, 0);
        let mut o = Origins::default();
        run(&mut o, &m, "a", 0, t);
        assert_eq!(o.len(), 1);
        let cleared = o.with(&m, "a", t, |st| {
            decide(&m.settings, st, Outcome::Exited(1), false, t).event
        });
        assert_eq!(cleared, Some(crate::core::event::Kind::Cleared));
        assert!(o.is_empty());
    }

    #[test]
    fn the_least_recently_used_state_goes_at_the_bound() {
        let t = Instant::now();
        let mut o = Origins::default();
        let m = module(true, false, 1, 0);
        for i in 0..MAX_STATES {
            run(&mut o, &m, &format!("n{i}"), 0, t);
        }
        run(&mut o, &m, "n0", 0, t); // n0 used again: n1 is the oldest
        run(&mut o, &m, "new", 0, t);
        assert_eq!((o.len(), o.evicted), (MAX_STATES, 1));
        let firing = |o: &mut Origins, n: &str| o.with(&m, n, t, |st| st.firing);
        assert!(firing(&mut o, "n0"));
        assert!(!firing(&mut o, "n1"), "forgotten: fresh");
    }
}
