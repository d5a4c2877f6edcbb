//! A module's lifecycle: from one finished run to what the daemon does next. Pure:
//! the run's outcome and output, the module, its state, `now` and the wall-clock
//! time come in; the state is updated and `Actions` come out. The daemon carries
//! them out in order (append the event to the spool, then start the response or
//! let the scheduler run the module again); it decides nothing itself.
//!
//! A check goes through `decide` (the exit-code contract, `trigger_after`,
//! `cooldown`); a response always makes a `response` event. Either way exactly one
//! `Next` follows, so a module can never stay "running" after its last child ended.
//! The same lifecycle serves a run started by a timer (the edge) or, later, by a
//! message (the collector).

use crate::core::decide::{self, HeldBack, Outcome};
use crate::core::event::{Event, Kind};
use crate::core::module::{Module, Role};
use std::time::{Duration, Instant};

/// One run that ended: which executable, how, what it printed, how long it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ran {
    pub role: Role,
    pub outcome: Outcome,
    /// The bounded capture (or why the program could not be started).
    pub output: String,
    pub dur: Duration,
}

/// A module's memory of past runs, kept by name across reloads: the decision state
/// and the counters `crd status` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleState {
    pub decision: decide::State,
    /// Checks finished.
    pub runs: u32,
    /// Checks that fired.
    pub fired: u32,
    /// Responses finished.
    pub responses: u32,
    /// Checks that failed.
    pub errors: u32,
    /// When the last run ended, which executable it was, and how.
    pub last: Option<(Instant, Role, Outcome)>,
}

/// What follows a run, once its event (if any) is appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Start the module's response, passing it the check's output and exit code.
    Respond { output: String, code: i32 },
    /// The module is done; it may be scheduled again.
    Done,
}

/// What the daemon does after one run, in this order: `emit`, then `next`.
/// `warning` and `held_back` are for the log only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actions {
    pub emit: Option<Event>,
    pub next: Next,
    /// A failed check or response, in words.
    pub warning: Option<String>,
    /// Why a hit did not start the response.
    pub held_back: Option<HeldBack>,
}

/// The lifecycle step for module `m` after `ran` ended at `now` (monotonic) and
/// `wall_ms` (unix milliseconds, for the event's `ts` only).
pub fn finished(m: &Module, st: &mut ModuleState, ran: Ran, now: Instant, wall_ms: u64) -> Actions {
    st.last = Some((now, ran.role, ran.outcome));
    let code = ran.outcome.code();
    let event = |kind: Kind, out: String| Event {
        ts_ms: wall_ms,
        module: m.name.clone(),
        kind,
        code,
        dur_ms: u32::try_from(super::dur::ms(ran.dur)).unwrap_or(u32::MAX),
        out,
        cause: None,
    };
    match ran.role {
        Role::Check => {
            st.runs = st.runs.saturating_add(1);
            let d = decide::decide(
                &m.settings,
                &mut st.decision,
                ran.outcome,
                m.response.is_some(),
                now,
            );
            let mut warning = None;
            let emit = match d.event {
                Some(Kind::Error) => {
                    st.errors = st.errors.saturating_add(1);
                    let why = ran.outcome.describe();
                    warning = Some(format!("check failed: {why}"));
                    Some(event(Kind::Error, join(&why, &ran.output)))
                }
                Some(kind) => {
                    if kind == Kind::Fired {
                        st.fired = st.fired.saturating_add(1);
                    }
                    Some(event(kind, ran.output.clone()))
                }
                None => None,
            };
            let next = if d.respond {
                Next::Respond {
                    output: ran.output,
                    code,
                }
            } else {
                Next::Done
            };
            Actions {
                emit,
                next,
                warning,
                held_back: d.held_back,
            }
        }
        Role::Response | Role::Support => {
            st.responses = st.responses.saturating_add(1);
            let warning = (ran.outcome != Outcome::Exited(0))
                .then(|| format!("response failed: {}", ran.outcome.describe()));
            // A response's own exit code is its event's `code`; a signal, timeout or
            // exec failure is also said in words before the output.
            let out = if matches!(ran.outcome, Outcome::Exited(_)) {
                ran.output
            } else {
                join(&ran.outcome.describe(), &ran.output)
            };
            Actions {
                emit: Some(event(Kind::Response, out)),
                next: Next::Done,
                warning,
                held_back: None,
            }
        }
    }
}

fn join(a: &str, b: &str) -> String {
    if b.is_empty() {
        a.to_string()
    } else {
        format!("{a}\n{b}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::ModuleSettings;

    fn module(response: bool) -> Module {
        Module {
            name: "Disk".into(),
            dir: "/m/Disk".into(),
            check: Some("/m/Disk/check".into()),
            response: response.then(|| "/m/Disk/response".into()),
            settings: ModuleSettings::default(),
        }
    }

    fn check(outcome: Outcome, output: &str) -> Ran {
        Ran {
            role: Role::Check,
            outcome,
            output: output.into(),
            dur: Duration::from_millis(7),
        }
    }

    fn response(outcome: Outcome, output: &str) -> Ran {
        Ran {
            role: Role::Response,
            ..check(outcome, output)
        }
    }

    /// Drives the lifecycle on a virtual clock: `t0 + secs`, wall clock 1000 * secs.
    struct Clock {
        t0: Instant,
    }

    impl Clock {
        fn new() -> Clock {
            Clock { t0: Instant::now() }
        }
        fn at(&self, m: &Module, st: &mut ModuleState, secs: u64, ran: Ran) -> Actions {
            finished(m, st, ran, self.t0 + Duration::from_secs(secs), secs * 1000)
        }
    }

    fn kind(a: &Actions) -> Option<Kind> {
        a.emit.as_ref().map(|e| e.kind)
    }

    #[test]
    fn a_hit_fires_and_starts_the_response_with_the_checks_output() {
        let m = module(true);
        let mut st = ModuleState::default();
        let c = Clock::new();
        let a = c.at(&m, &mut st, 5, check(Outcome::Exited(0), "95%"));
        let ev = a.emit.as_ref().unwrap();
        assert_eq!(
            (
                ev.kind,
                ev.code,
                ev.dur_ms,
                ev.ts_ms,
                ev.out.as_str(),
                ev.module.as_str()
            ),
            (Kind::Fired, 0, 7, 5000, "95%", "Disk")
        );
        assert_eq!(
            a.next,
            Next::Respond {
                output: "95%".into(),
                code: 0
            }
        );
        assert_eq!((st.runs, st.fired, st.errors), (1, 1, 0));
        // The response ends: a response event, and the module is done.
        let a = c.at(&m, &mut st, 6, response(Outcome::Exited(0), "cleaned"));
        assert_eq!(kind(&a), Some(Kind::Response));
        assert_eq!(a.emit.unwrap().out, "cleaned");
        assert_eq!((a.next, a.warning), (Next::Done, None));
        assert_eq!(st.responses, 1);
        assert_eq!(
            st.last.map(|(_, r, o)| (r, o)),
            Some((Role::Response, Outcome::Exited(0)))
        );
    }

    #[test]
    fn cleared_once_after_firing_then_quiet() {
        let m = module(true);
        let mut st = ModuleState::default();
        let c = Clock::new();
        c.at(&m, &mut st, 0, check(Outcome::Exited(0), ""));
        let a = c.at(&m, &mut st, 30, check(Outcome::Exited(1), "ok now"));
        assert_eq!((kind(&a), &a.next), (Some(Kind::Cleared), &Next::Done));
        let a = c.at(&m, &mut st, 60, check(Outcome::Exited(1), ""));
        assert_eq!(
            (kind(&a), &a.next),
            (None, &Next::Done),
            "a quiet check makes no event"
        );
        assert_eq!(st.runs, 3);
    }

    #[test]
    fn trigger_after_holds_the_first_hits_back() {
        let mut m = module(true);
        m.settings.trigger_after = 3;
        let mut st = ModuleState::default();
        let c = Clock::new();
        for s in 0..2 {
            let a = c.at(&m, &mut st, s, check(Outcome::Exited(0), ""));
            assert_eq!((kind(&a), &a.next), (None, &Next::Done));
            assert_eq!(
                a.held_back,
                Some(HeldBack::Trigger {
                    hits: s as u32 + 1,
                    needed: 3
                })
            );
        }
        let a = c.at(&m, &mut st, 2, check(Outcome::Exited(0), ""));
        assert_eq!(kind(&a), Some(Kind::Fired));
        assert!(matches!(a.next, Next::Respond { .. }));
        assert_eq!(st.fired, 1);
    }

    #[test]
    fn cooldown_fires_but_does_not_respond_again_until_it_passed() {
        let mut m = module(true);
        m.settings.cooldown = Duration::from_secs(60);
        let mut st = ModuleState::default();
        let c = Clock::new();
        assert!(matches!(
            c.at(&m, &mut st, 0, check(Outcome::Exited(0), "")).next,
            Next::Respond { .. }
        ));
        let a = c.at(&m, &mut st, 30, check(Outcome::Exited(0), ""));
        assert_eq!((kind(&a), &a.next), (Some(Kind::Fired), &Next::Done));
        assert_eq!(a.held_back, Some(HeldBack::Cooldown));
        assert!(matches!(
            c.at(&m, &mut st, 60, check(Outcome::Exited(0), "")).next,
            Next::Respond { .. }
        ));
        assert_eq!(st.fired, 3);
    }

    #[test]
    fn a_failed_response_is_a_response_event_with_a_warning() {
        let m = module(true);
        let mut st = ModuleState::default();
        let c = Clock::new();
        c.at(&m, &mut st, 0, check(Outcome::Exited(0), ""));
        let a = c.at(&m, &mut st, 1, response(Outcome::Exited(3), "no space"));
        let ev = a.emit.as_ref().unwrap();
        assert_eq!(
            (ev.kind, ev.code, ev.out.as_str()),
            (Kind::Response, 3, "no space")
        );
        assert_eq!(a.warning.as_deref(), Some("response failed: exit 3"));
        assert_eq!(a.next, Next::Done);
        let a = c.at(&m, &mut st, 2, response(Outcome::TimedOut, "partial"));
        let ev = a.emit.unwrap();
        assert_eq!((ev.code, ev.out.as_str()), (124, "timed out\npartial"));
    }

    #[test]
    fn a_failed_check_is_an_error_event_without_a_response() {
        let m = module(true);
        let mut st = ModuleState::default();
        let c = Clock::new();
        let a = c.at(&m, &mut st, 0, check(Outcome::Signaled(9), "half"));
        let ev = a.emit.as_ref().unwrap();
        assert_eq!(
            (ev.kind, ev.code, ev.out.as_str()),
            (Kind::Error, 137, "killed by signal 9\nhalf")
        );
        assert_eq!(a.next, Next::Done);
        assert_eq!(
            a.warning.as_deref(),
            Some("check failed: killed by signal 9")
        );
        assert_eq!((st.runs, st.errors, st.fired), (1, 1, 0));
        let a = c.at(&m, &mut st, 1, check(Outcome::ExecFailed, ""));
        assert_eq!(a.emit.unwrap().out, "could not be started");
    }

    #[test]
    fn a_module_without_response_fires_and_is_done() {
        let m = module(false);
        let mut st = ModuleState::default();
        let a = Clock::new().at(&m, &mut st, 0, check(Outcome::Exited(0), "x"));
        assert_eq!((kind(&a), &a.next), (Some(Kind::Fired), &Next::Done));
        assert_eq!(a.held_back, Some(HeldBack::NoResponse));
    }
}
