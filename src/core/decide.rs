//! The decision: from a check's outcome to an event and whether to respond.
//!
//! Pure: it takes the module's settings, its decision state, the outcome and `now`,
//! and returns what to do. It owns the exit-code contract (README, The exit-code
//! contract), the Nagios convention, `trigger_after` (N consecutive hits) and
//! `cooldown` (least time between two response starts). It never spawns anything.
//!
//! Events are made on changes and actions, not on every quiet run: `fired` for each
//! hit at or past `trigger_after`, `cleared` when a fired condition goes away, `error`
//! for every failed check. A check that keeps finding nothing produces no events (its
//! runs are counted in `crd status`), so a quiet router does not fill its spool.

use crate::core::config::{Convention, ModuleSettings, Severity};
use crate::core::event::{CODE_EXEC_FAILED, CODE_SIGNAL_BASE, CODE_TIMEOUT, Kind};
use std::time::Instant;

/// How a child run ended. Expected outcomes are data, not errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    /// The executable could not be started (exec failed, or fork failed).
    ExecFailed,
}

impl Outcome {
    /// The code recorded in events: the exit code, or the shell's spelling of the rest.
    pub fn code(self) -> i32 {
        match self {
            Outcome::Exited(c) => c,
            Outcome::Signaled(s) => CODE_SIGNAL_BASE + s,
            Outcome::TimedOut => CODE_TIMEOUT,
            Outcome::ExecFailed => CODE_EXEC_FAILED,
        }
    }

    pub fn describe(self) -> String {
        match self {
            Outcome::Exited(c) => format!("exit {c}"),
            Outcome::Signaled(s) => format!("killed by signal {s}"),
            Outcome::TimedOut => "timed out".into(),
            Outcome::ExecFailed => "could not be started".into(),
        }
    }
}

/// What a check's outcome means under the module's convention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The condition is present (at or above `respond_at` for Nagios).
    Hit,
    /// The condition is not present.
    Clear,
    /// The check itself failed.
    Error,
}

pub fn verdict(s: &ModuleSettings, o: Outcome) -> Verdict {
    match (s.convention, o) {
        (Convention::Exit, Outcome::Exited(0)) => Verdict::Hit,
        (Convention::Exit, Outcome::Exited(1)) => Verdict::Clear,
        (Convention::Nagios, Outcome::Exited(0)) => Verdict::Clear,
        (Convention::Nagios, Outcome::Exited(c @ (1 | 2))) => {
            let sev = if c == 1 {
                Severity::Warning
            } else {
                Severity::Critical
            };
            if sev >= s.respond_at {
                Verdict::Hit
            } else {
                Verdict::Clear
            }
        }
        // Nagios 3 (unknown), any other code, signals, timeouts, exec failures.
        _ => Verdict::Error,
    }
}

/// Per-module memory of past runs; it survives a config reload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Consecutive hits so far.
    pub hits: u32,
    /// The condition fired and has not cleared since.
    pub firing: bool,
    pub last_response: Option<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub event: Option<Kind>,
    pub respond: bool,
    /// Why a hit did not respond, for the log.
    pub held_back: Option<HeldBack>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeldBack {
    /// Fewer than `trigger_after` consecutive hits so far.
    Trigger { hits: u32, needed: u32 },
    /// The last response started less than `cooldown` ago.
    Cooldown,
    /// The module has no `response` executable.
    NoResponse,
}

/// Decides on one finished check. `has_response` says whether the module has a
/// `response` to run.
pub fn decide(
    s: &ModuleSettings,
    st: &mut State,
    o: Outcome,
    has_response: bool,
    now: Instant,
) -> Decision {
    let quiet = Decision {
        event: None,
        respond: false,
        held_back: None,
    };
    match verdict(s, o) {
        Verdict::Clear => {
            st.hits = 0;
            if st.firing {
                st.firing = false;
                Decision {
                    event: Some(Kind::Cleared),
                    ..quiet
                }
            } else {
                quiet
            }
        }
        Verdict::Error => {
            // A failed check is not a hit: it breaks a run of consecutive hits.
            st.hits = 0;
            Decision {
                event: Some(Kind::Error),
                ..quiet
            }
        }
        Verdict::Hit => {
            st.hits = st.hits.saturating_add(1);
            if st.hits < s.trigger_after {
                let held = HeldBack::Trigger {
                    hits: st.hits,
                    needed: s.trigger_after,
                };
                return Decision {
                    held_back: Some(held),
                    ..quiet
                };
            }
            st.firing = true;
            let cooled = st
                .last_response
                .is_none_or(|t| now.saturating_duration_since(t) >= s.cooldown);
            let (respond, held_back) = match (has_response, cooled) {
                (false, _) => (false, Some(HeldBack::NoResponse)),
                (true, false) => (false, Some(HeldBack::Cooldown)),
                (true, true) => (true, None),
            };
            if respond {
                st.last_response = Some(now);
            }
            Decision {
                event: Some(Kind::Fired),
                respond,
                held_back,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> ModuleSettings {
        ModuleSettings::default()
    }

    #[test]
    fn exit_convention() {
        let s = settings();
        assert_eq!(verdict(&s, Outcome::Exited(0)), Verdict::Hit);
        assert_eq!(verdict(&s, Outcome::Exited(1)), Verdict::Clear);
        for o in [
            Outcome::Exited(2),
            Outcome::Exited(255),
            Outcome::Signaled(9),
            Outcome::TimedOut,
            Outcome::ExecFailed,
        ] {
            assert_eq!(verdict(&s, o), Verdict::Error, "{o:?}");
        }
    }

    #[test]
    fn nagios_convention_respects_respond_at() {
        let mut s = settings();
        s.convention = Convention::Nagios;
        assert_eq!(verdict(&s, Outcome::Exited(0)), Verdict::Clear);
        assert_eq!(
            verdict(&s, Outcome::Exited(1)),
            Verdict::Clear,
            "warning < critical"
        );
        assert_eq!(verdict(&s, Outcome::Exited(2)), Verdict::Hit);
        assert_eq!(verdict(&s, Outcome::Exited(3)), Verdict::Error, "unknown");
        assert_eq!(verdict(&s, Outcome::Exited(4)), Verdict::Error);
        s.respond_at = Severity::Warning;
        assert_eq!(verdict(&s, Outcome::Exited(1)), Verdict::Hit);
        assert_eq!(verdict(&s, Outcome::Exited(2)), Verdict::Hit);
    }

    #[test]
    fn codes_follow_shell_conventions() {
        assert_eq!(Outcome::Exited(3).code(), 3);
        assert_eq!(Outcome::Signaled(9).code(), 137);
        assert_eq!(Outcome::TimedOut.code(), 124);
        assert_eq!(Outcome::ExecFailed.code(), 127);
    }

    #[test]
    fn hit_fires_and_responds_then_clear_clears_once() {
        let s = settings();
        let mut st = State::default();
        let t0 = Instant::now();
        let d = decide(&s, &mut st, Outcome::Exited(0), true, t0);
        assert_eq!(
            d,
            Decision {
                event: Some(Kind::Fired),
                respond: true,
                held_back: None
            }
        );
        let d = decide(
            &s,
            &mut st,
            Outcome::Exited(1),
            true,
            t0 + Duration::from_secs(1),
        );
        assert_eq!(d.event, Some(Kind::Cleared));
        let d = decide(
            &s,
            &mut st,
            Outcome::Exited(1),
            true,
            t0 + Duration::from_secs(2),
        );
        assert_eq!(d.event, None, "a quiet check makes no events");
        assert!(!d.respond);
    }

    #[test]
    fn trigger_after_needs_consecutive_hits() {
        let mut s = settings();
        s.trigger_after = 3;
        let mut st = State::default();
        let t0 = Instant::now();
        let mut run = |o, secs| decide(&s, &mut st, o, true, t0 + Duration::from_secs(secs));
        let d = run(Outcome::Exited(0), 0);
        assert_eq!(d.held_back, Some(HeldBack::Trigger { hits: 1, needed: 3 }));
        assert_eq!(run(Outcome::Exited(0), 1).event, None);
        // An error breaks the run.
        assert_eq!(run(Outcome::Exited(7), 2).event, Some(Kind::Error));
        assert_eq!(run(Outcome::Exited(0), 3).event, None);
        assert_eq!(run(Outcome::Exited(0), 4).event, None);
        let d = run(Outcome::Exited(0), 5);
        assert_eq!((d.event, d.respond), (Some(Kind::Fired), true));
        // Still present: keeps firing (and responding, no cooldown set).
        assert!(run(Outcome::Exited(0), 6).respond);
        // A clear resets the count.
        assert_eq!(run(Outcome::Exited(1), 7).event, Some(Kind::Cleared));
        assert_eq!(run(Outcome::Exited(0), 8).event, None);
    }

    #[test]
    fn cooldown_holds_back_responses_but_not_events() {
        let mut s = settings();
        s.cooldown = Duration::from_secs(60);
        let mut st = State::default();
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        assert!(decide(&s, &mut st, Outcome::Exited(0), true, at(0)).respond);
        let d = decide(&s, &mut st, Outcome::Exited(0), true, at(59));
        assert_eq!(
            d,
            Decision {
                event: Some(Kind::Fired),
                respond: false,
                held_back: Some(HeldBack::Cooldown)
            }
        );
        // Cooldown runs from the last response that started, not the last hit.
        assert!(decide(&s, &mut st, Outcome::Exited(0), true, at(60)).respond);
        assert!(!decide(&s, &mut st, Outcome::Exited(0), true, at(61)).respond);
    }

    #[test]
    fn no_response_executable_still_fires() {
        let s = settings();
        let mut st = State::default();
        let d = decide(&s, &mut st, Outcome::Exited(0), false, Instant::now());
        assert_eq!(
            d,
            Decision {
                event: Some(Kind::Fired),
                respond: false,
                held_back: Some(HeldBack::NoResponse)
            }
        );
        assert_eq!(st.last_response, None);
    }

    #[test]
    fn errors_while_firing_keep_the_firing_state() {
        let s = settings();
        let mut st = State::default();
        let t0 = Instant::now();
        decide(&s, &mut st, Outcome::Exited(0), true, t0);
        assert_eq!(
            decide(&s, &mut st, Outcome::TimedOut, true, t0).event,
            Some(Kind::Error)
        );
        assert!(st.firing);
        assert_eq!(
            decide(&s, &mut st, Outcome::Exited(1), true, t0).event,
            Some(Kind::Cleared)
        );
    }
}
