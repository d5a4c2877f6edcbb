//! The fleet as the collector sees it: every node's retained status
//! (`<prefix>/<node>/status`: online, or offline as its will or clean stop), since
//! when, its version, and the last crd event the collector received from it. No
//! IO; `crd fleet` prints it. Bounded to `MAX_NODES`; past it the node heard from
//! least recently is forgotten (counted). Small per node (its name and 24 bytes:
//! times to the second, versions, module names and kinds as numbers in a table of
//! at most `MAX_WORDS`), so that 10,000 nodes fit in well under a MiB. Not kept on disk: the broker replays the
//! retained statuses at every subscribe, so a restart knows the states again
//! (only the last events are forgotten).

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

/// A crd status payload (`mqtt::wire::status_json`).
#[derive(Deserialize)]
struct Status {
    state: String,
    #[serde(default)]
    version: String,
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
/// strings as numbers in `words`).
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
    /// Word 0 is the empty string ("none"), word 1 `?` (the table was full).
    words: Vec<Box<str>>,
    word_ids: HashMap<Box<str>, u16>,
    clock: u64,
    pub forgotten: u64,
    /// Words shown as `?` because `MAX_WORDS` were in use.
    pub words_full: u64,
}

impl Default for Fleet {
    fn default() -> Fleet {
        Fleet {
            nodes: HashMap::new(),
            words: vec!["".into(), "?".into()],
            word_ids: HashMap::new(),
            clock: 0,
            forgotten: 0,
            words_full: 0,
        }
    }
}

fn secs(ms: u64) -> u32 {
    u32::try_from(ms / 1000).unwrap_or(u32::MAX)
}

impl Fleet {
    fn entry(&mut self, node: &str) -> &mut Entry {
        self.clock += 1;
        if !self.nodes.contains_key(node)
            && self.nodes.len() >= MAX_NODES
            && let Some(oldest) = self
                .nodes
                .iter()
                .min_by_key(|(_, n)| n.used)
                .map(|(k, _)| k.clone())
        {
            self.nodes.remove(&oldest);
            self.forgotten += 1;
        }
        if !self.nodes.contains_key(node) {
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
        for n in self.nodes.values_mut() {
            for w in [&mut n.version, &mut n.module, &mut n.kind] {
                let i = usize::from(*w);
                if map[i] == u16::MAX {
                    map[i] = kept.len() as u16;
                    kept.push(std::mem::take(&mut self.words[i]));
                }
                *w = map[i];
            }
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
        true
    }

    /// A crd event from `node`.
    pub fn event(&mut self, node: &str, module: &str, kind: &str, now_ms: u64) {
        let (module, kind) = (self.word(module), self.word(kind));
        let n = self.entry(node);
        n.event_s = secs(now_ms);
        n.module = module;
        n.kind = kind;
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn sorted(&self) -> Vec<Node<'_>> {
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
            let last = if n.last_event_ms == 0 {
                "-".to_string()
            } else {
                format!("{} {}", n.last_event_module, n.last_event_kind)
            };
            let _ = writeln!(
                s,
                "{:<24} {:<8} {:>12} {:<10} {:>12}  {last}",
                n.node,
                n.state,
                age(n.since_ms),
                if n.version.is_empty() { "-" } else { n.version },
                age(n.last_event_ms),
            );
        }
        s
    }

    /// `crd fleet --json`: `{"nodes":[...],"forgotten":N}`.
    pub fn json(&self) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            nodes: Vec<Node<'a>>,
            forgotten: u64,
        }
        serde_json::to_string(&Out {
            nodes: self.sorted(),
            forgotten: self.forgotten,
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
}
