//! The fleet as the collector sees it: every node's retained status
//! (`<prefix>/<node>/status`: online, or offline as its will or clean stop), since
//! when, its version, and the last crd event the collector received from it. No
//! IO; `crd fleet` prints it. Bounded to `MAX_NODES`; past it the node heard from
//! least recently is forgotten (counted). Not kept on disk: the broker replays the
//! retained statuses at every subscribe, so a restart knows the states again
//! (only the last events are forgotten).

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::Write as _;

/// Nodes tracked.
pub const MAX_NODES: usize = 10_000;

/// A crd status payload (`mqtt::wire::status_json`).
#[derive(Deserialize)]
struct Status {
    state: String,
    #[serde(default)]
    version: String,
}

/// One node, as `crd fleet --json` shows it (units in the key names).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Node {
    pub node: String,
    /// `online`, `offline`, or `unknown` (events seen, no status yet).
    pub state: String,
    /// When the state last changed (the collector's clock, unix ms; 0: unknown).
    pub since_ms: u64,
    pub version: String,
    /// The last crd event received from it: when, module and kind.
    pub last_event_ms: u64,
    pub last_event_module: String,
    pub last_event_kind: String,
    #[serde(skip)]
    used: u64,
}

#[derive(Debug, Default)]
pub struct Fleet {
    nodes: HashMap<String, Node>,
    clock: u64,
    pub forgotten: u64,
}

impl Fleet {
    fn entry(&mut self, node: &str) -> &mut Node {
        self.clock += 1;
        if !self.nodes.contains_key(node)
            && self.nodes.len() >= MAX_NODES
            && let Some(oldest) = self
                .nodes
                .values()
                .min_by_key(|n| n.used)
                .map(|n| n.node.clone())
        {
            self.nodes.remove(&oldest);
            self.forgotten += 1;
        }
        let n = self.nodes.entry(node.to_string()).or_insert_with(|| Node {
            node: node.to_string(),
            state: "unknown".into(),
            ..Node::default()
        });
        n.used = self.clock;
        n
    }

    /// A message on `<prefix>/<node>/status`; false when it is not a crd status.
    pub fn status(&mut self, node: &str, payload: &[u8], now_ms: u64) -> bool {
        let Ok(s) = serde_json::from_slice::<Status>(payload) else {
            return false;
        };
        if s.state != "online" && s.state != "offline" {
            return false;
        }
        let n = self.entry(node);
        if n.state != s.state {
            n.state = s.state;
            n.since_ms = now_ms;
        }
        if !s.version.is_empty() {
            n.version = s.version;
        }
        true
    }

    /// A crd event from `node`.
    pub fn event(&mut self, node: &str, module: &str, kind: &str, now_ms: u64) {
        let n = self.entry(node);
        n.last_event_ms = now_ms;
        n.last_event_module = module.to_string();
        n.last_event_kind = kind.to_string();
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn sorted(&self) -> Vec<&Node> {
        let mut v: Vec<&Node> = self.nodes.values().collect();
        v.sort_by(|a, b| a.node.cmp(&b.node));
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
                if n.version.is_empty() {
                    "-"
                } else {
                    &n.version
                },
                age(n.last_event_ms),
            );
        }
        s
    }

    /// `crd fleet --json`: `{"nodes":[...],"forgotten":N}`.
    pub fn json(&self) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            nodes: Vec<&'a Node>,
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
}
