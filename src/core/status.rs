//! `crd status`: the daemon's figures as one ordered list of named values and
//! a row per module, printed either as `key: value` lines and a table (what an
//! operator reads) or as one JSON object (`crd status --json`, what a script or
//! a monitoring agent reads). Each part of the daemon adds its own figures; the
//! two renderings come from the same list, so they cannot disagree. The JSON
//! puts the table under `module_table` (`modules` is the count, as in the text).
//! Pure.
//!
//! JSON keys are the text's keys; a value that the text writes with a unit or a
//! word keeps its unit in the key instead: `mqtt_last_connect: 5s ago` is
//! `"mqtt_last_connect_s_ago": 5` (`null` for never), `spool_oldest_unacked_seq:
//! -` is `null`, `yes`/`no` are `true`/`false`. A figure that the text prints
//! only when it has one is `null` in JSON, so every key is always there.

use crate::core::output::{push_decimal, terminal_safe};
use std::borrow::Cow;
use std::fmt::Write;

/// One figure.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Num(u64),
    Text(String),
    Flag(bool),
    /// Seconds since something happened; `None`: never.
    Ago(Option<u64>),
    /// A number or nothing yet (`-` in the text).
    Maybe(Option<u64>),
    /// A text line only when there is one (`null` in JSON).
    Opt(Option<String>),
}

/// One row of the module table.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleRow {
    pub name: String,
    /// `ok`, `firing`, `running` or `disabled`.
    pub state: &'static str,
    pub runs: u64,
    pub fired: u64,
    pub responses: u64,
    pub errors: u64,
    pub overruns: u64,
    /// Seconds to its next scheduled run (none for a subscribed module).
    pub next_s: Option<u64>,
    /// The last outcome (`check exit 0`, ...) and how long ago, in seconds.
    pub last: Option<(String, u64)>,
}

/// Everything `crd status` prints.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Status {
    pub version: String,
    pub node: String,
    pub pid: u32,
    /// The figures in order; a key is most often one of crd's own literals,
    /// borrowed, not copied (a status holds about a hundred).
    items: Vec<(Cow<'static, str>, Value)>,
    pub modules: Vec<ModuleRow>,
}

impl Status {
    pub fn new(version: &str, node: &str, pid: u32) -> Status {
        Status {
            version: version.into(),
            node: node.into(),
            pid,
            // A collector's status holds about a hundred figures: room for
            // them at once, not seven reallocations on the way.
            items: Vec::with_capacity(128),
            ..Status::default()
        }
    }

    pub fn put(&mut self, key: impl Into<Cow<'static, str>>, v: Value) {
        self.items.push((key.into(), v));
    }

    pub fn num(&mut self, key: impl Into<Cow<'static, str>>, n: u64) {
        self.put(key, Value::Num(n));
    }

    pub fn text(&mut self, key: impl Into<Cow<'static, str>>, t: impl Into<String>) {
        self.put(key, Value::Text(t.into()));
    }

    /// The figure `key`, if there is one (tests and tools).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.items.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The lines and the table. The `key: value` lines are pushed, not
    /// formatted: the bench and monitoring ask for them every few
    /// milliseconds, and `writeln!` for each would be most of a request's
    /// cost.
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(32 * (self.items.len() + self.modules.len() + 4));
        let _ = writeln!(
            s,
            "crd {} node {} pid {}",
            self.version,
            terminal_safe(&self.node),
            self.pid
        );
        // Names and text may come from the bus (a node's, a topic's): made
        // harmless for the terminal that shows them.
        for (k, v) in &self.items {
            if let Value::Opt(None) = v {
                continue;
            }
            match k {
                // One of crd's own literals: printable ASCII already.
                Cow::Borrowed(k) => s.push_str(k),
                Cow::Owned(k) => s.push_str(&terminal_safe(k)),
            }
            s.push_str(": ");
            match v {
                Value::Num(n) | Value::Maybe(Some(n)) => push_decimal(&mut s, *n),
                Value::Text(t) | Value::Opt(Some(t)) => s.push_str(&terminal_safe(t)),
                Value::Flag(b) => s.push_str(if *b { "yes" } else { "no" }),
                Value::Ago(Some(a)) => {
                    push_decimal(&mut s, *a);
                    s.push_str("s ago");
                }
                Value::Ago(None) => s.push_str("never"),
                Value::Maybe(None) => s.push('-'),
                Value::Opt(None) => {}
            }
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "\n{:<24} {:<8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8}  last",
            "MODULE", "STATE", "RUNS", "FIRED", "RESP", "ERRORS", "OVERRN", "NEXT_S"
        );
        for m in &self.modules {
            let next = m.next_s.map_or_else(|| "-".to_string(), |n| n.to_string());
            let last = m.last.as_ref().map_or_else(
                || "-".to_string(),
                |(o, ago)| format!("{} {ago}s ago", terminal_safe(o)),
            );
            let _ = writeln!(
                s,
                "{:<24} {:<8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8}  {}",
                terminal_safe(&m.name),
                m.state,
                m.runs,
                m.fired,
                m.responses,
                m.errors,
                m.overruns,
                next,
                last
            );
        }
        s
    }

    /// One JSON object (and a newline).
    pub fn to_json(&self) -> String {
        let mut s = String::from("{");
        let _ = write!(
            s,
            "\"version\":{},\"node\":{},\"pid\":{}",
            json_str(&self.version),
            json_str(&self.node),
            self.pid
        );
        for (k, v) in &self.items {
            let key = match v {
                Value::Ago(_) => json_str(&format!("{k}_s_ago")),
                _ => json_str(k),
            };
            let val = match v {
                Value::Num(n) | Value::Ago(Some(n)) | Value::Maybe(Some(n)) => n.to_string(),
                Value::Text(t) | Value::Opt(Some(t)) => json_str(t),
                Value::Flag(b) => b.to_string(),
                Value::Ago(None) | Value::Maybe(None) | Value::Opt(None) => "null".into(),
            };
            let _ = write!(s, ",{key}:{val}");
        }
        s.push_str(",\"module_table\":[");
        for (i, m) in self.modules.iter().enumerate() {
            let opt = |v: Option<u64>| v.map_or_else(|| "null".to_string(), |n| n.to_string());
            let _ = write!(
                s,
                "{}{{\"name\":{},\"state\":{},\"runs\":{},\"fired\":{},\"responses\":{},\
                 \"errors\":{},\"overruns\":{},\"next_s\":{},\"last\":{},\"last_s_ago\":{}}}",
                if i == 0 { "" } else { "," },
                json_str(&m.name),
                json_str(m.state),
                m.runs,
                m.fired,
                m.responses,
                m.errors,
                m.overruns,
                opt(m.next_s),
                m.last
                    .as_ref()
                    .map_or_else(|| "null".to_string(), |(o, _)| json_str(o)),
                opt(m.last.as_ref().map(|(_, a)| *a)),
            );
        }
        s.push_str("]}\n");
        s
    }
}

/// `t` as a JSON string: quotes, backslashes and control characters escaped
/// (`json::string`'s escaping, serde_json's).
pub fn json_str(t: &str) -> String {
    let mut b = Vec::with_capacity(t.len() + 2);
    super::json::string(&mut b, t);
    String::from_utf8(b).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        let mut st = Status::new("0.1.0", "r\"1", 42);
        st.num("uptime_s", 7);
        st.text("mqtt_state", "connected");
        st.put("mqtt_last_connect", Value::Ago(Some(5)));
        st.put("spool_last_sync", Value::Ago(None));
        st.put("spool_oldest_unacked_seq", Value::Maybe(None));
        st.put("collect_paused", Value::Flag(false));
        st.put("mqtt_last_error", Value::Opt(None));
        st.put("spool_dropped_last", Value::Opt(Some("3..=9".into())));
        st.modules.push(ModuleRow {
            name: "Disk".into(),
            state: "firing",
            runs: 3,
            fired: 1,
            responses: 1,
            errors: 0,
            overruns: 0,
            next_s: Some(12),
            last: Some(("check exit 0".into(), 2)),
        });
        st.modules.push(ModuleRow {
            name: "Lb\n".into(),
            state: "ok",
            runs: 0,
            fired: 0,
            responses: 0,
            errors: 0,
            overruns: 0,
            next_s: None,
            last: None,
        });
        st
    }

    #[test]
    fn text_prints_lines_and_the_table() {
        let t = sample().to_text();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "crd 0.1.0 node r\"1 pid 42");
        assert_eq!(
            &lines[1..8],
            [
                "uptime_s: 7",
                "mqtt_state: connected",
                "mqtt_last_connect: 5s ago",
                "spool_last_sync: never",
                "spool_oldest_unacked_seq: -",
                "collect_paused: no",
                "spool_dropped_last: 3..=9",
            ],
            "a figure without a value prints no line"
        );
        assert!(lines[9].starts_with("MODULE"));
        assert!(lines[10].starts_with("Disk") && lines[10].ends_with("check exit 0 2s ago"));
        assert!(lines[10].contains(" firing ") && lines[10].contains(" 12  "));
    }

    /// The lines are pushed by hand: they read as `writeln!` writes them, and
    /// a key made at run time (a rule module's name in it) is made
    /// terminal-safe like any text.
    #[test]
    fn lines_read_as_formatted_and_made_keys_are_terminal_safe() {
        let mut st = Status::new("0.1.0", "n", 1);
        for n in [0, 9, 10, 12_345, u64::MAX] {
            st.num("k", n);
            st.put("m", Value::Maybe(Some(n)));
            st.put("a", Value::Ago(Some(n)));
        }
        st.num(format!("rule_{}_keys", "x\u{1b}[2J"), 3);
        st.text("t", "a\u{202e}b");
        let t = st.to_text();
        let mut want = String::from("crd 0.1.0 node n pid 1\n");
        for n in [0, 9, 10, 12_345, u64::MAX] {
            want.push_str(&format!("k: {n}\nm: {n}\na: {n}s ago\n"));
        }
        want.push_str("rule_x\\u{001b}[2J_keys: 3\nt: a\\u{202e}b\n");
        assert!(t.starts_with(&want), "{t}");
    }

    #[test]
    fn json_has_every_key_with_its_unit_and_escapes() {
        let j: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(j["node"], "r\"1");
        assert_eq!(j["pid"], 42);
        assert_eq!(j["uptime_s"], 7);
        assert_eq!(j["mqtt_state"], "connected");
        assert_eq!(j["mqtt_last_connect_s_ago"], 5);
        assert!(j["spool_last_sync_s_ago"].is_null());
        assert!(j["spool_oldest_unacked_seq"].is_null());
        assert_eq!(j["collect_paused"], false);
        assert!(j.get("mqtt_last_error").unwrap().is_null(), "always there");
        assert_eq!(j["spool_dropped_last"], "3..=9");
        let m = &j["module_table"];
        assert_eq!(m[0]["name"], "Disk");
        assert_eq!(m[0]["next_s"], 12);
        assert_eq!(m[0]["last"], "check exit 0");
        assert_eq!(m[0]["last_s_ago"], 2);
        assert_eq!(m[1]["name"], "Lb\n");
        assert!(m[1]["next_s"].is_null() && m[1]["last"].is_null());
        let every: String = (0u8..0x80).map(char::from).collect();
        let back: String = serde_json::from_str(&json_str(&every)).unwrap();
        assert_eq!(back, every);
        assert_eq!(json_str("é\u{1F600}"), "\"é\u{1F600}\"");
    }
}
