//! The fleet as the collector sees it: every node's retained status
//! (`<prefix>/<node>/status`: online, or offline as its will or clean stop), since
//! when, its version, and the last crd event the collector received from it. No
//! IO; `crd fleet` prints it. Bounded to `MAX_NODES`; past it the node heard from
//! least recently is forgotten (counted). Small per node (its name and 24 bytes:
//! times to the second, versions, module names and kinds as numbers in a table of
//! at most `MAX_WORDS`), so that 10,000 nodes fit in well under a MiB. Not kept on disk: the broker replays the
//! retained statuses at every subscribe, so a restart knows the states again
//! (only the last events are forgotten).
//!
//! With the fleet page on (`fleet_html`), also each node's modules' retained
//! states (`<prefix>/<node>/state/<module>`: ON or OFF since when), at most
//! `MAX_STATES_PER_NODE` a node, 8 bytes each.
//!
//! It also holds the loss detection of the edges' streams (`gaps.rs`, fed by
//! the collector), whose report ends `crd fleet`.

use crate::collect::gaps::{self, Gaps};
use crate::core::output::terminal_safe;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::Write as _;

/// Nodes tracked.
pub const MAX_NODES: usize = 10_000;
/// Distinct versions, module names and event kinds held (each node refers to
/// them by number: a fleet has few). Past it the words no node uses any more are
/// dropped; if all are in use, a new one is shown as `?` (counted).
pub const MAX_WORDS: usize = 1024;
/// Longest word kept, bytes (longer ones are cut at a character boundary).
pub const MAX_WORD_BYTES: usize = 64;
/// Module states held per node (more are not tracked, counted in `states_full`).
pub const MAX_STATES_PER_NODE: usize = 64;

/// A crd status payload (`mqtt::wire::status_json`).
#[derive(Deserialize)]
struct Status {
    state: String,
    #[serde(default)]
    version: String,
}

/// A module's retained state payload (`mqtt::wire::state_json`).
#[derive(Deserialize)]
struct ModulePayload {
    state: String,
    #[serde(default)]
    since: u64,
}

/// One module's condition on a node, as the page shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleState<'a> {
    pub module: &'a str,
    pub on: bool,
    /// When it last changed (the node's clock, unix ms, to the second).
    pub since_ms: u64,
}

/// What is held per module state: 8 bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Held {
    since_s: u32,
    module: u16,
    on: bool,
}

/// One node, as `crd fleet --json` shows it (units in the key names; times are
/// kept to the second).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Node<'a> {
    pub node: &'a str,
    /// `online`, `offline`, or `unknown` (events seen, no status yet).
    pub state: &'a str,
    /// When the state last changed (the collector's clock, unix ms; 0: unknown).
    pub since_ms: u64,
    pub version: &'a str,
    /// The last crd event received from it: when, module and kind.
    pub last_event_ms: u64,
    pub last_event_module: &'a str,
    pub last_event_kind: &'a str,
}

/// What is held per node: 24 bytes beside its name (times in unix seconds,
/// strings as numbers in `words`). Its module states, when the page is on, are in
/// `Fleet::states`, so that a fleet without the page pays nothing for them.
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    used: u64,
    since_s: u32,
    event_s: u32,
    version: u16,
    module: u16,
    kind: u16,
    state: State,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    #[default]
    Unknown,
    Online,
    Offline,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Online => "online",
            State::Offline => "offline",
        }
    }
}

#[derive(Debug)]
pub struct Fleet {
    nodes: HashMap<Box<str>, Entry>,
    /// Each node's module states (the fleet page's), for nodes in `nodes` only.
    states: HashMap<Box<str>, Box<[Held]>>,
    /// Word 0 is the empty string ("none"), word 1 `?` (the table was full).
    words: Vec<Box<str>>,
    word_ids: HashMap<Box<str>, u16>,
    clock: u64,
    pub forgotten: u64,
    /// Words shown as `?` because `MAX_WORDS` were in use.
    pub words_full: u64,
    /// Module states not tracked: their node had `MAX_STATES_PER_NODE`.
    pub states_full: u64,
    /// Bumped on every change the fleet page shows.
    pub changes: u64,
    /// The edges' streams checked for events lost on the way (`gaps.rs`):
    /// `crd fleet` ends with what did not arrive.
    pub gaps: Gaps,
}

impl Default for Fleet {
    fn default() -> Fleet {
        Fleet {
            nodes: HashMap::new(),
            states: HashMap::new(),
            words: vec!["".into(), "?".into()],
            word_ids: HashMap::new(),
            clock: 0,
            forgotten: 0,
            words_full: 0,
            states_full: 0,
            changes: 0,
            gaps: Gaps::default(),
        }
    }
}

fn secs(ms: u64) -> u32 {
    u32::try_from(ms / 1000).unwrap_or(u32::MAX)
}

impl Fleet {
    /// An empty fleet whose streams `gaps` checks.
    pub fn with_gaps(gaps: Gaps) -> Fleet {
        Fleet {
            gaps,
            ..Fleet::default()
        }
    }

    fn entry(&mut self, node: &str) -> &mut Entry {
        self.clock += 1;
        if !self.nodes.contains_key(node) {
            if self.nodes.len() >= MAX_NODES
                && let Some(oldest) = self
                    .nodes
                    .iter()
                    .min_by_key(|(_, n)| n.used)
                    .map(|(k, _)| k.clone())
            {
                self.nodes.remove(&oldest);
                self.states.remove(&oldest);
                self.forgotten += 1;
            }
            self.nodes.insert(node.into(), Entry::default());
        }
        let n = self.nodes.get_mut(node).expect("just inserted");
        n.used = self.clock;
        n
    }

    /// The number of `w` (cut to `MAX_WORD_BYTES`), added if new.
    fn word(&mut self, w: &str) -> u16 {
        let mut cut = w.len().min(MAX_WORD_BYTES);
        while !w.is_char_boundary(cut) {
            cut -= 1;
        }
        let w = &w[..cut];
        if w.is_empty() {
            return 0;
        }
        if let Some(&i) = self.word_ids.get(w) {
            return i;
        }
        if self.words.len() >= MAX_WORDS {
            self.drop_unused_words();
        }
        if self.words.len() >= MAX_WORDS {
            self.words_full += 1;
            return 1;
        }
        let i = self.words.len() as u16;
        self.words.push(w.into());
        self.word_ids.insert(w.into(), i);
        i
    }

    /// Rebuilds `words` with only those a node refers to, renumbered.
    fn drop_unused_words(&mut self) {
        let mut map = vec![u16::MAX; self.words.len()];
        map[0] = 0;
        map[1] = 1;
        let mut kept: Vec<Box<str>> = vec!["".into(), "?".into()];
        let states = self
            .states
            .values_mut()
            .flat_map(|s| s.iter_mut().map(|h| &mut h.module));
        let nodes = self
            .nodes
            .values_mut()
            .flat_map(|n| [&mut n.version, &mut n.module, &mut n.kind]);
        for w in nodes.chain(states) {
            let i = usize::from(*w);
            if map[i] == u16::MAX {
                map[i] = kept.len() as u16;
                kept.push(std::mem::take(&mut self.words[i]));
            }
            *w = map[i];
        }
        self.word_ids = kept
            .iter()
            .enumerate()
            .skip(2)
            .map(|(i, w)| (w.clone(), i as u16))
            .collect();
        self.words = kept;
    }

    /// A message on `<prefix>/<node>/status`; false when it is not a crd status.
    pub fn status(&mut self, node: &str, payload: &[u8], now_ms: u64) -> bool {
        let Ok(s) = serde_json::from_slice::<Status>(payload) else {
            return false;
        };
        let state = match s.state.as_str() {
            "online" => State::Online,
            "offline" => State::Offline,
            _ => return false,
        };
        let version = (!s.version.is_empty()).then(|| self.word(&s.version));
        let n = self.entry(node);
        if n.state != state {
            n.state = state;
            n.since_s = secs(now_ms);
        }
        if let Some(v) = version {
            n.version = v;
        }
        self.changes += 1;
        true
    }

    /// A message on `<prefix>/<node>/state/<module>`: ON or OFF since when, or
    /// empty (the module was removed). False when it is neither.
    pub fn module_state(&mut self, node: &str, module: &str, payload: &[u8]) -> bool {
        let held = if payload.is_empty() {
            None
        } else {
            let Ok(p) = serde_json::from_slice::<ModulePayload>(payload) else {
                return false;
            };
            let on = match p.state.as_str() {
                "ON" => true,
                "OFF" => false,
                _ => return false,
            };
            Some((on, secs(p.since)))
        };
        let w = self.word(module);
        self.entry(node);
        let held_now = self.states.remove(node).unwrap_or_default();
        let at = held_now.iter().position(|h| h.module == w);
        let mut v = held_now.into_vec();
        let mut full = false;
        match (at, held) {
            (Some(i), None) => {
                v.remove(i);
            }
            (Some(i), Some((on, since_s))) => {
                v[i] = Held {
                    since_s,
                    module: w,
                    on,
                }
            }
            (None, Some((on, since_s))) if v.len() < MAX_STATES_PER_NODE => {
                v.push(Held {
                    since_s,
                    module: w,
                    on,
                });
            }
            (None, Some(_)) => full = true,
            (None, None) => {}
        }
        if !v.is_empty() {
            self.states.insert(node.into(), v.into_boxed_slice());
        }
        self.states_full += u64::from(full);
        self.changes += 1;
        true
    }

    /// The module states of `node`, sorted by module.
    pub fn states_of(&self, node: &str) -> Vec<ModuleState<'_>> {
        let Some(held) = self.states.get(node) else {
            return Vec::new();
        };
        let mut v: Vec<ModuleState> = held
            .iter()
            .map(|h| ModuleState {
                module: &self.words[usize::from(h.module)],
                on: h.on,
                since_ms: u64::from(h.since_s) * 1000,
            })
            .collect();
        v.sort_by(|a, b| a.module.cmp(b.module));
        v
    }

    /// A crd event from `node`.
    pub fn event(&mut self, node: &str, module: &str, kind: &str, now_ms: u64) {
        // Most often a known node with the module and kind of its last event:
        // one lookup, not three (the words are not hashed again).
        if let Some(n) = self.nodes.get_mut(node) {
            let same = |i: u16, w: &str| *self.words[usize::from(i)] == *w;
            if same(n.module, module) && same(n.kind, kind) {
                self.clock += 1;
                n.used = self.clock;
                n.event_s = secs(now_ms);
                self.changes += 1;
                return;
            }
        }
        let (module, kind) = (self.word(module), self.word(kind));
        let n = self.entry(node);
        n.event_s = secs(now_ms);
        n.module = module;
        n.kind = kind;
        self.changes += 1;
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node, sorted by name.
    pub fn sorted(&self) -> Vec<Node<'_>> {
        let w = |i: u16| &*self.words[usize::from(i)];
        let mut v: Vec<Node> = self
            .nodes
            .iter()
            .map(|(name, n)| Node {
                node: name,
                state: n.state.name(),
                since_ms: u64::from(n.since_s) * 1000,
                version: w(n.version),
                last_event_ms: u64::from(n.event_s) * 1000,
                last_event_module: w(n.module),
                last_event_kind: w(n.kind),
            })
            .collect();
        v.sort_by(|a, b| a.node.cmp(b.node));
        v
    }

    /// `crd fleet`: one line per node, ages relative to `now_ms`.
    pub fn table(&self, now_ms: u64) -> String {
        let age = |t: u64| {
            if t == 0 {
                "-".to_string()
            } else {
                format!("{}s ago", now_ms.saturating_sub(t) / 1000)
            }
        };
        let mut s = format!(
            "{:<24} {:<8} {:>12} {:<10} {:>12}  LAST EVENT\n",
            "NODE", "STATE", "SINCE", "VERSION", "EVENT AGE"
        );
        for n in self.sorted() {
            // Every name here came from the bus: made harmless for the
            // operator's terminal (an ESC sequence, a U+202E reversal).
            let last = if n.last_event_ms == 0 {
                "-".to_string()
            } else {
                format!(
                    "{} {}",
                    terminal_safe(n.last_event_module),
                    terminal_safe(n.last_event_kind)
                )
            };
            let _ = writeln!(
                s,
                "{:<24} {:<8} {:>12} {:<10} {:>12}  {last}",
                terminal_safe(n.node),
                terminal_safe(n.state),
                age(n.since_ms),
                if n.version.is_empty() {
                    "-".into()
                } else {
                    terminal_safe(n.version)
                },
                age(n.last_event_ms),
            );
        }
        s + &self.gaps.table(|n| terminal_safe(n).into_owned())
    }

    /// `crd fleet --json`: `{"nodes":[...],"forgotten":N,"gaps":[...]}`.
    pub fn json(&self) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            nodes: Vec<Node<'a>>,
            forgotten: u64,
            gaps: Vec<gaps::Row<'a>>,
        }
        serde_json::to_string(&Out {
            nodes: self.sorted(),
            forgotten: self.forgotten,
            gaps: self.gaps.rows(),
        })
        .unwrap_or_default()
            + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_events_make_the_fleet() {
        let mut f = Fleet::default();
        assert!(f.status(
            "r1",
            br#"{"state":"online","node":"r1","stream":"00","version":"0.1.0","boot_ms":5}"#,
            1000
        ));
        assert!(!f.status("r2", b"online", 1000), "not a crd status");
        f.event("r2", "Disk", "fired", 2000);
        f.status("r1", br#"{"state":"offline","node":"r1"}"#, 3000);
        let t = f.table(5000);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[1].starts_with("r1")
                && lines[1].contains("offline")
                && lines[1].contains("2s ago")
                && lines[1].contains("0.1.0"),
            "{t}"
        );
        assert!(
            lines[2].starts_with("r2")
                && lines[2].contains("unknown")
                && lines[2].contains("Disk fired"),
            "{t}"
        );
        let j: serde_json::Value = serde_json::from_str(&f.json()).unwrap();
        assert_eq!(j["nodes"][0]["node"], "r1");
        assert_eq!(j["nodes"][0]["since_ms"], 3000);
        assert_eq!(j["nodes"][1]["last_event_kind"], "fired");
        assert_eq!(j["forgotten"], 0);
    }

    #[test]
    fn a_nodes_next_event_updates_its_time_and_words() {
        let mut f = Fleet::default();
        f.event("r1", "Disk", "fired", 2000);
        f.event("r1", "Disk", "fired", 7000);
        let j: serde_json::Value = serde_json::from_str(&f.json()).unwrap();
        assert_eq!(j["nodes"][0]["last_event_ms"], 7000);
        f.event("r1", "Disk", "cleared", 8000);
        f.event("r1", "Wan", "cleared", 9000);
        let long = "x".repeat(MAX_WORD_BYTES + 10);
        f.event("r2", &long, "fired", 9000);
        f.event("r2", &long, "fired", 10_000);
        let j: serde_json::Value = serde_json::from_str(&f.json()).unwrap();
        assert_eq!(j["nodes"][0]["last_event_ms"], 9000);
        assert_eq!(j["nodes"][0]["last_event_module"], "Wan");
        assert_eq!(j["nodes"][0]["last_event_kind"], "cleared");
        assert_eq!(j["nodes"][1]["last_event_ms"], 10_000);
        assert_eq!(j["nodes"][1]["last_event_module"], &long[..MAX_WORD_BYTES]);
    }

    #[test]
    fn the_node_heard_from_least_recently_goes_at_the_bound() {
        let mut f = Fleet::default();
        for i in 0..MAX_NODES {
            f.event(&format!("n{i}"), "m", "fired", 1);
        }
        f.event("n0", "m", "fired", 2);
        f.event("new", "m", "fired", 3);
        assert_eq!((f.len(), f.forgotten), (MAX_NODES, 1));
        assert!(f.table(0).contains("n0 "), "n0 was heard from again");
        assert!(!f.table(0).lines().any(|l| l.starts_with("n1 ")));
    }

    #[test]
    fn words_no_node_uses_are_dropped_and_a_full_table_shows_a_question_mark() {
        let mut f = Fleet::default();
        // Each node's module a new word, then replaced: the old ones are unused.
        for i in 0..3 * MAX_WORDS {
            f.event("r1", &format!("m{i}"), "fired", 1000);
        }
        assert_eq!(f.words_full, 0);
        assert!(f.words.len() <= MAX_WORDS);
        let j: serde_json::Value = serde_json::from_str(&f.json()).unwrap();
        assert_eq!(
            j["nodes"][0]["last_event_module"],
            format!("m{}", 3 * MAX_WORDS - 1)
        );
        // All in use: a new word is `?`, counted; the others are intact.
        let mut f = Fleet::default();
        for i in 0..MAX_WORDS {
            f.event(&format!("n{i}"), &format!("m{i}"), "fired", 1000);
        }
        f.event("last", "brand-new", "fired", 1000);
        assert!(f.words_full >= 1);
        let t = f.table(1000);
        assert!(
            t.lines()
                .any(|l| l.starts_with("last ") && l.ends_with("? fired")),
            "{t}"
        );
        assert!(
            t.lines()
                .any(|l| l.starts_with("n7 ") && l.ends_with("m7 fired")),
            "{t}"
        );
        // A long word is cut, not refused.
        let mut f = Fleet::default();
        f.status(
            "n7",
            format!(r#"{{"state":"online","version":"{}"}}"#, "v".repeat(500)).as_bytes(),
            1,
        );
        assert!(f.table(1000).contains(&"v".repeat(MAX_WORD_BYTES)));
    }

    #[test]
    fn module_states_are_tracked_per_node_and_bounded() {
        let mut f = Fleet::default();
        let on = br#"{"state":"ON","since":5000,"code":0,"seq":3}"#;
        assert!(f.module_state("r1", "WanDown", on));
        assert!(f.module_state(
            "r1",
            "Disk",
            br#"{"state":"OFF","since":1000,"code":null,"seq":null}"#
        ));
        assert!(!f.module_state("r1", "Bad", b"{\"state\":\"maybe\"}"));
        assert!(!f.module_state("r1", "Bad", b"ON"));
        let s = f.states_of("r1");
        assert_eq!(
            s,
            [
                ModuleState {
                    module: "Disk",
                    on: false,
                    since_ms: 1000
                },
                ModuleState {
                    module: "WanDown",
                    on: true,
                    since_ms: 5000
                },
            ]
        );
        // A change replaces, an empty payload removes.
        f.module_state("r1", "WanDown", br#"{"state":"OFF","since":9000}"#);
        f.module_state("r1", "Disk", b"");
        assert_eq!(
            f.states_of("r1"),
            [ModuleState {
                module: "WanDown",
                on: false,
                since_ms: 9000
            }]
        );
        for i in 0..MAX_STATES_PER_NODE + 5 {
            f.module_state("r2", &format!("m{i}"), on);
        }
        assert_eq!(f.states_of("r2").len(), MAX_STATES_PER_NODE);
        assert_eq!(f.states_full, 5);
        // Their module names survive a renumbering of the words.
        let before = f.states_of("r1")[0].module.to_string();
        f.drop_unused_words();
        assert_eq!(f.states_of("r1")[0].module, before);
        assert!(f.states_of("nobody").is_empty());
    }
}
