//! What the collector decides without a fork: rule modules' registers fed by
//! each message (`Rules`), and the per-origin lifecycle a check's outcome, or a
//! decision made without a run, goes through (`Decider`). No IO: the feeds go
//! to `Persist`'s log in memory, the events a decision emits are returned.

use crate::collect::message::{self, View};
use crate::collect::origins::Origins;
use crate::collect::persist::Persist;
use crate::collect::rulestate;
use crate::collect::work::{Job, RegKey, Step};
use crate::core::config::RegisterBy;
use crate::core::decide;
use crate::core::event::Event;
use crate::core::lifecycle::{self, ModuleState, Next, Ran};
use crate::core::module::{Module, Role};
use crate::host::logger::RateLimit;
use crate::rules::register::{self, Registers, Spec};
use crate::rules::value;
use crate::spool::storage::Storage;
use std::collections::BTreeMap;
use std::time::Instant;

/// A rule module's register and its counters for `crd status`.
pub struct Rule {
    pub regs: Registers,
    /// Messages that fed nothing (no value at `value`, not a number, out of range).
    pub skipped: u64,
    /// Messages after which the condition held.
    pub hits: u64,
}

impl Rule {
    pub fn new(regs: Registers) -> Rule {
        Rule {
            regs,
            skipped: 0,
            hits: 0,
        }
    }
}

/// Rule modules' registers, by module name, and how far the journal fed them.
#[derive(Default)]
pub struct Rules {
    pub by_module: BTreeMap<String, Rule>,
    /// Journal records up to this seq fed the registers before the restart: a
    /// replay of them feeds nothing again.
    pub fed_through: u64,
    /// The highest journal seq fed (what a snapshot includes).
    pub fed_max: u64,
    /// A reload dropped rules: the registers' log is written whole at the next
    /// timer, so a restart does not feed them again.
    pub dropped: bool,
}

/// A message fed to a rule: the key it went by, whether the condition holds.
pub struct Fed<'m> {
    pub key: &'m str,
    pub holds: bool,
    value: Option<f64>,
    /// The text fed (an `equals` rule's value).
    text: Option<String>,
    equals: bool,
}

impl Fed<'_> {
    /// What a run of it is told; made only for a message that leads to one
    /// (most do not: formatting the value each time was a cost per message).
    pub fn reg(&self) -> Box<RegKey> {
        let value = match (&self.text, self.equals) {
            (Some(t), true) => t.clone(),
            _ => register::format_value(self.value),
        };
        Box::new(RegKey {
            key: self.key.to_string(),
            value,
        })
    }
}

/// The key a rule module's register goes by, for message `msg`.
fn key_of<'m>(by: RegisterBy, msg: &'m View<'_>) -> &'m str {
    let key = match by {
        RegisterBy::Node => msg.origin(),
        RegisterBy::Topic => msg.topic,
        RegisterBy::Module => msg.event.as_ref().map_or(msg.topic, |e| &e.module),
        RegisterBy::All => "*",
    };
    message::cut(key, message::MAX_ORIGIN_BYTES)
}

impl Rules {
    /// Rule module `m`'s register: kept when what it keeps is unchanged (a
    /// reload may have changed the condition: the data stays), else new.
    fn entry(&mut self, m: &Module, spec: Spec) -> &mut Rule {
        let keep = self
            .by_module
            .get(&m.name)
            .is_some_and(|r| r.regs.same_data(&spec));
        if keep {
            let rule = self.by_module.get_mut(&m.name).expect("just looked");
            rule.regs.set_condition(spec.condition);
            return rule;
        }
        self.by_module
            .insert(m.name.clone(), Rule::new(Registers::new(spec)));
        self.by_module.get_mut(&m.name).expect("just inserted")
    }

    /// Feeds rule module `m`'s register with journal record `seq` (`msg`),
    /// logged in `persist` (a record fed before a restart is not fed again:
    /// the register decides as it is). `None`: the message fed nothing.
    pub fn feed<'m, S: Storage>(
        &mut self,
        m: &Module,
        spec: Spec,
        seq: u64,
        msg: &'m View<'_>,
        persist: &mut Persist<S>,
    ) -> Option<Fed<'m>> {
        let r = &m.settings.rule;
        let fed_through = self.fed_through;
        let rule = self.entry(m, spec);
        let key = key_of(r.by.unwrap_or_default(), msg);
        let equals = matches!(rule.regs.spec().condition, register::Condition::Equals(_));
        let got = match &r.value {
            None => value::Got::default(),
            Some(path) => match value::extract(msg.payload, path, equals) {
                Ok(g) => g,
                Err(_) => {
                    rule.skipped += 1;
                    return None;
                }
            },
        };
        if r.value.is_some() && got.num.is_none() && !equals {
            rule.skipped += 1;
            return None;
        }
        let reading = if seq <= fed_through {
            rule.regs
                .evaluate(key, msg.received_ms)
                .unwrap_or(register::Reading {
                    value: None,
                    holds: false,
                })
        } else {
            persist.fed(&rulestate::Fed {
                module: &m.name,
                key,
                num: got.num,
                text: got.text.as_deref(),
                t_ms: msg.received_ms,
                seq,
            });
            rule.regs
                .feed(key, got.num, got.text.as_deref(), msg.received_ms)
        };
        rule.hits += u64::from(reading.holds);
        if seq > fed_through {
            self.fed_max = self.fed_max.max(seq);
        }
        Some(Fed {
            key,
            holds: reading.holds,
            value: reading.value,
            text: got.text,
            equals,
        })
    }
}

/// The per-origin decision states, and the rule checks in hand.
#[derive(Default)]
pub struct Decider {
    pub origins: Origins,
    /// (module, key) of rule checks queued or running: a message of the same key
    /// meanwhile starts no second check (at most one per record held and
    /// module).
    checking: Vec<(String, String)>,
    log_runs: RateLimit,
}

/// What settled: the lifecycle's next step (`None`: nothing follows, fired
/// already), and the event to send.
pub struct Settled {
    pub next: Option<Next>,
    pub emit: Option<Event>,
}

impl Decider {
    /// What follows rule module `m`'s message `fed`: nothing (the condition
    /// still holds, or a check of its key runs), its check, or a decision
    /// without a run.
    pub fn next(&mut self, m: &Module, fed: &Fed<'_>) -> Option<(Step, Box<RegKey>)> {
        let state = self.origins.peek(m, fed.key);
        let firing = state.is_some_and(|s| s.firing);
        let checking = self
            .checking
            .iter()
            .any(|(cm, ck)| *cm == m.name && *ck == fed.key);
        match (fed.holds, firing) {
            // Once per crossing: a condition that still holds does nothing more;
            // nor while the check of an earlier message of this key runs.
            (true, true) => None,
            (true, false) if m.check.is_some() && checking => None,
            (true, false) if m.check.is_some() => {
                self.checking.push((m.name.clone(), fed.key.to_string()));
                Some((Step::Check, fed.reg()))
            }
            (true, false) => Some((Step::Decided(true), fed.reg())),
            // Stopped holding: `cleared` if it had fired; a run of hits broken.
            (false, _) if state.is_some() => Some((Step::Decided(false), fed.reg())),
            (false, _) => None,
        }
    }

    /// A rule's check that will not run: its key may start another.
    pub fn forget_check(&mut self, job: &Job) {
        if let (Some(reg), Step::Check) = (&job.reg, &job.step) {
            self.checking
                .retain(|(cm, ck)| !(*cm == job.module && *ck == reg.key));
        }
    }

    /// The lifecycle's step for module `m`'s job (its `step`, and whether it
    /// is a rule's) that `ran`, on a message from `origin` (`id` names it in a
    /// warning), at `now` (`wall_ms`).
    pub fn decide(
        &mut self,
        m: &Module,
        (step, rule): (&Step, bool),
        ran: Ran,
        origin: &str,
        id: &dyn Fn() -> String,
        (now, wall_ms): (Instant, u64),
    ) -> Settled {
        // Only the decision state is kept per origin (the run counters are the
        // edge's business): it goes in and out of a ModuleState for the lifecycle.
        if rule && *step == Step::Check {
            self.checking
                .retain(|(cm, ck)| !(*cm == m.name && *ck == origin));
        }
        let a = self.origins.with(m, origin, now, |st| {
            if rule
                && st.firing
                && ran.role == Role::Check
                && decide::verdict(&m.settings, ran.outcome) == decide::Verdict::Hit
            {
                // Fired already (a check of an earlier message said so while
                // this one's ran): once per crossing.
                return None;
            }
            let mut ms = ModuleState {
                decision: std::mem::take(st),
                ..ModuleState::default()
            };
            let a = lifecycle::finished(m, &mut ms, ran, now, wall_ms);
            *st = ms.decision;
            Some(a)
        });
        let Some(a) = a else {
            return Settled {
                next: None,
                emit: None,
            };
        };
        if let Some(w) = &a.warning
            && self.log_runs.allow(now, "collector: failed runs")
        {
            log::warn!("module {}: {w} (message {})", m.name, id());
        }
        Settled {
            next: Some(a.next),
            emit: a.emit,
        }
    }
}
