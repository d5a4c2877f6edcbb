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
//!
//! The third rendering, `to_prometheus`, is the same list in Prometheus's text
//! exposition format, for node_exporter's textfile collector: numbers only
//! (texts are not metrics), names `crd_<key>`, a `Count` a counter and every
//! other number a gauge; see `to_prometheus` for the naming rule.

use crate::core::output::{push_decimal, terminal_safe};
use std::borrow::Cow;
use std::fmt::Write;

/// One figure.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A number that goes up and down (a depth, a count of things held).
    Num(u64),
    /// A number that only grows while this crd runs (things done, dropped,
    /// refused): a counter to Prometheus. Printed as `Num` is.
    Count(u64),
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

    /// A figure that only grows while this crd runs (`Value::Count`).
    pub fn count(&mut self, key: impl Into<Cow<'static, str>>, n: u64) {
        self.put(key, Value::Count(n));
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
                Value::Num(n) | Value::Count(n) | Value::Maybe(Some(n)) => push_decimal(&mut s, *n),
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
                Value::Num(n) | Value::Count(n) | Value::Ago(Some(n)) | Value::Maybe(Some(n)) => {
                    n.to_string()
                }
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

impl Status {
    /// The list in Prometheus's text exposition format (version 0.0.4), for
    /// node_exporter's textfile collector. Every number is one metric family
    /// (`# HELP` naming the `crd status --json` key it comes from, `# TYPE`),
    /// its sample labelled with the node:
    ///
    /// - the name is `crd_` and the JSON key, with a unit in Prometheus's base
    ///   unit (`_s` and `_us` become `_seconds`, microseconds written as
    ///   decimal seconds; `_kib` becomes `_bytes`), and `_total` after a
    ///   counter (a `Value::Count`); every other number, `yes`/`no` (1/0)
    ///   among them, is a gauge;
    /// - a rule module's figure (`rule_<module>_<figure>`) is
    ///   `crd_rule_<figure>` and the module table's column is
    ///   `crd_module_<column>`, each with the module as a second label;
    /// - texts (versions, the broker, errors) are not metrics: the version is
    ///   a label of `crd_info`, the one text made a label; a figure without a
    ///   value (`never`, `-`) is left out.
    ///
    /// No label comes from the bus: the node is this crd's, the modules are
    /// on its disk.
    pub fn to_prometheus(&self) -> String {
        let mut p = Prom {
            s: String::with_capacity(96 * (self.items.len() + 7 * self.modules.len() + 2)),
            name: String::with_capacity(64),
            node: String::with_capacity(self.node.len() + 8),
        };
        p.node.push_str("node=\"");
        push_label_value(&mut p.node, &self.node);
        p.node.push('"');
        p.family(&["info"], &["version"], &Value::Num(1));
        p.s.push_str("crd_info{");
        p.s.push_str(&p.node);
        p.s.push_str(",version=\"");
        push_label_value(&mut p.s, &self.version);
        p.s.push_str("\"} 1\n");
        for (k, v) in &self.items {
            if number(v).is_none() || rule_figure(k).is_some() {
                continue;
            }
            let k: &str = k;
            let scale = p.family(&[k], &[k], v);
            p.sample(None, v, scale);
        }
        // A rule's figures come module by module; a family's samples must be
        // together: one family per figure, at its first sample, its modules'
        // samples under it.
        for (i, (k, v)) in self.items.iter().enumerate() {
            let Some((_, fig)) = rule_figure(k) else {
                continue;
            };
            let same = |k: &str| rule_figure(k).is_some_and(|(_, f)| f == fig);
            if self.items[..i].iter().any(|(k, _)| same(k)) {
                continue;
            }
            let scale = p.family(&["rule_", fig], &["rule_<module>_", fig], v);
            for (k, v) in &self.items[i..] {
                if let Some((m, _)) = rule_figure(k).filter(|r| r.1 == fig) {
                    p.sample(Some(m), v, scale);
                }
            }
        }
        for (col, get) in MODULE_COLUMNS {
            let Some(first) = self.modules.iter().map(get).find(|v| number(v).is_some()) else {
                continue;
            };
            let scale = p.family(&["module_", col], &["module_table ", col], &first);
            for m in &self.modules {
                p.sample(Some(&m.name), &get(m), scale);
            }
        }
        p.s
    }
}

/// The module table's numbers, by their JSON names.
type Column = (&'static str, fn(&ModuleRow) -> Value);
const MODULE_COLUMNS: [Column; 7] = [
    ("runs", |m| Value::Count(m.runs)),
    ("fired", |m| Value::Count(m.fired)),
    ("responses", |m| Value::Count(m.responses)),
    ("errors", |m| Value::Count(m.errors)),
    ("overruns", |m| Value::Count(m.overruns)),
    ("next_s", |m| Value::Maybe(m.next_s)),
    // `last_s_ago`: an `Ago`'s key is without its unit.
    ("last", |m| Value::Ago(m.last.as_ref().map(|l| l.1))),
];

/// A value's number for Prometheus; `None` for a text or a figure without one.
fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Num(n) | Value::Count(n) | Value::Ago(Some(n)) | Value::Maybe(Some(n)) => Some(*n),
        Value::Flag(b) => Some(u64::from(*b)),
        Value::Text(_) | Value::Opt(_) | Value::Ago(None) | Value::Maybe(None) => None,
    }
}

/// `rule_<module>_<figure>` as (module, figure); a figure's name has no `_`,
/// a module's may. Rules are a collector's: none in a router's build.
fn rule_figure(key: &str) -> Option<(&str, &str)> {
    if !cfg!(feature = "collector") {
        return None;
    }
    key.strip_prefix("rule_")?.rsplit_once('_')
}

/// How a value in crd's unit is written in Prometheus's base unit.
#[derive(Clone, Copy)]
enum Scale {
    Same,
    /// Microseconds as seconds.
    Micro,
    /// KiB as bytes.
    Kibi,
}

/// crd's unit suffixes and their base unit in Prometheus's names.
const UNITS: [(&str, &str, Scale); 3] = [
    ("_s", "_seconds", Scale::Same),
    ("_us", "_seconds", Scale::Micro),
    ("_kib", "_bytes", Scale::Kibi),
];

/// The text being written, the current family's name, and the node's label.
struct Prom {
    s: String,
    name: String,
    node: String,
}

impl Prom {
    /// Starts the family of the key `key` (in parts) holding values like `v`:
    /// its name (see `to_prometheus`), `# HELP` naming `help` (in parts),
    /// `# TYPE`. An `Ago`'s JSON key is the key and `_s_ago`, and so is its
    /// name before units. Returns the scale of its values.
    fn family(&mut self, key: &[&str], help: &[&str], v: &Value) -> Scale {
        let name = &mut self.name;
        name.clear();
        name.push_str("crd_");
        key.iter().for_each(|k| name.push_str(k));
        // `_s_ago`: the unit, then `_ago` after it.
        let ago = matches!(v, Value::Ago(_));
        if ago {
            name.push_str("_s");
        }
        let mut scale = Scale::Same;
        if let Some(&(from, to, sc)) = UNITS.iter().find(|u| name.ends_with(u.0)) {
            name.truncate(name.len() - from.len());
            name.push_str(to);
            scale = sc;
        }
        if ago {
            name.push_str("_ago");
        }
        let counter = matches!(v, Value::Count(_));
        if counter {
            name.push_str("_total");
        }
        let s = &mut self.s;
        s.push_str("# HELP ");
        s.push_str(name);
        s.push_str(" crd status: ");
        help.iter().for_each(|h| s.push_str(h));
        if ago {
            s.push_str("_s_ago");
        }
        s.push_str("\n# TYPE ");
        s.push_str(name);
        s.push_str(if counter { " counter\n" } else { " gauge\n" });
        scale
    }

    /// One sample of the current family: labelled with the node (and
    /// `module`), left out when `v` has no number.
    fn sample(&mut self, module: Option<&str>, v: &Value, scale: Scale) {
        let Some(n) = number(v) else {
            return;
        };
        let s = &mut self.s;
        s.push_str(&self.name);
        s.push('{');
        s.push_str(&self.node);
        if let Some(m) = module {
            s.push_str(",module=\"");
            push_label_value(s, m);
            s.push('"');
        }
        s.push_str("} ");
        match scale {
            Scale::Same => push_decimal(s, n),
            Scale::Kibi => push_decimal(s, n.saturating_mul(1024)),
            Scale::Micro => {
                push_decimal(s, n / 1_000_000);
                let mut frac = n % 1_000_000;
                if frac > 0 {
                    // Six digits, leading zeros kept, trailing ones dropped.
                    let mut digits = 6;
                    while frac % 10 == 0 {
                        frac /= 10;
                        digits -= 1;
                    }
                    let mut d = [b'0'; 6];
                    for c in d[..digits].iter_mut().rev() {
                        *c = b'0' + (frac % 10) as u8;
                        frac /= 10;
                    }
                    s.push('.');
                    d[..digits].iter().for_each(|&c| s.push(char::from(c)));
                }
            }
        }
        s.push('\n');
    }
}

/// Appends `v` as a label value of the exposition format: `\`, `"` and a
/// line feed escaped (`\\`, `\"`, `\n`), everything else as it is.
fn push_label_value(s: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
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

    /// The exposition format's shape, as promtool reads it: every sample's
    /// family has `# HELP` and `# TYPE` just before its samples, once; names
    /// are `[a-z_]`, counters end in `_total` and nothing else does.
    fn check_exposition(text: &str) -> Vec<(String, String)> {
        let mut families: Vec<(String, String)> = Vec::new();
        let mut lines = text.lines().peekable();
        while let Some(l) = lines.next() {
            let help = l.strip_prefix("# HELP ").expect(l);
            let (name, h) = help.split_once(' ').expect(l);
            assert!(!h.is_empty(), "{l}");
            let t = lines.next().expect("a TYPE after HELP");
            let kind = t.strip_prefix(&format!("# TYPE {name} ")).expect(t);
            assert!(kind == "counter" || kind == "gauge", "{t}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name}");
            assert!(
                name.bytes()
                    .all(|c| c.is_ascii_lowercase() || c == b'_' || c.is_ascii_digit())
            );
            assert!(!families.iter().any(|f| f.0 == name), "{name} twice");
            families.push((name.to_string(), kind.to_string()));
            let mut samples = 0;
            while lines.peek().is_some_and(|l| !l.starts_with('#')) {
                let l = lines.next().unwrap();
                assert!(l.starts_with(&format!("{name}{{node=\"")), "{l}");
                let (_, v) = l.rsplit_once("} ").expect(l);
                assert!(v.parse::<f64>().is_ok(), "{l}");
                samples += 1;
            }
            assert!(samples > 0, "{name} without a sample");
        }
        families
    }

    #[test]
    fn prometheus_counts_are_counters_other_numbers_gauges_and_texts_are_left_out() {
        let mut st = sample();
        st.count("spool_fsyncs", 12);
        st.num("lateness_p50_us", 1_020_300);
        st.count("cpu_self_us", 5_000_000);
        st.num("max_rss_kib", 900);
        st.put("collect_group_joining", Value::Flag(true));
        let t = st.to_prometheus();
        let fams = check_exposition(&t);
        let kind = |n: &str| fams.iter().find(|f| f.0 == n).map(|f| f.1.as_str());
        assert_eq!(kind("crd_spool_fsyncs_total"), Some("counter"));
        assert_eq!(kind("crd_uptime_seconds"), Some("gauge"));
        assert_eq!(kind("crd_max_rss_bytes"), Some("gauge"));
        assert!(
            t.contains("\ncrd_spool_fsyncs_total{node=\"r\\\"1\"} 12\n"),
            "{t}"
        );
        assert!(
            t.contains("\ncrd_uptime_seconds{node=\"r\\\"1\"} 7\n"),
            "{t}"
        );
        assert!(t.contains("\ncrd_mqtt_last_connect_seconds_ago{node=\"r\\\"1\"} 5\n"));
        assert!(t.contains(
            "# HELP crd_mqtt_last_connect_seconds_ago crd status: mqtt_last_connect_s_ago\n"
        ));
        assert!(
            t.contains("crd_collect_paused{node=\"r\\\"1\"} 0\n"),
            "a flag is 0 or 1"
        );
        assert!(t.contains("crd_collect_group_joining{node=\"r\\\"1\"} 1\n"));
        assert!(
            t.contains("\ncrd_lateness_p50_seconds{node=\"r\\\"1\"} 1.0203\n"),
            "{t}"
        );
        assert!(
            t.contains("\ncrd_cpu_self_seconds_total{node=\"r\\\"1\"} 5\n"),
            "{t}"
        );
        assert!(
            t.contains("\ncrd_max_rss_bytes{node=\"r\\\"1\"} 921600\n"),
            "{t}"
        );
        assert!(t.starts_with(
            "# HELP crd_info crd status: version\n# TYPE crd_info gauge\n\
             crd_info{node=\"r\\\"1\",version=\"0.1.0\"} 1\n"
        ));
        // Texts, `never` and `-` are no metrics.
        for gone in [
            "mqtt_state",
            "spool_last_sync",
            "spool_oldest_unacked",
            "mqtt_last_error",
            "dropped_last",
        ] {
            assert!(!t.contains(gone), "{gone}: {t}");
        }
    }

    #[test]
    fn prometheus_microseconds_are_decimal_seconds() {
        for (us, want) in [
            (0, "0"),
            (1, "0.000001"),
            (999_999, "0.999999"),
            (1_500_000, "1.5"),
            (12_000_040, "12.00004"),
        ] {
            let mut st = Status::new("0.1.0", "n", 1);
            st.num("lateness_max_us", us);
            let t = st.to_prometheus();
            assert!(
                t.ends_with(&format!(
                    "\ncrd_lateness_max_seconds{{node=\"n\"}} {want}\n"
                )),
                "{t}"
            );
            assert_eq!(want.parse::<f64>().unwrap() * 1e6, us as f64);
        }
    }

    /// Label values are escaped as the format says: `\\`, `\"`, `\n`; the
    /// module table is one family per column, a sample per module, the
    /// module a label; a column without a value for a module leaves its
    /// sample out.
    #[test]
    fn prometheus_module_rows_are_labelled_and_label_values_escaped() {
        let mut st = sample();
        st.node = "a\\b\"c\nd".into();
        let t = st.to_prometheus();
        check_exposition(&t);
        let n = "node=\"a\\\\b\\\"c\\nd\"";
        for line in [
            format!("crd_module_runs_total{{{n},module=\"Disk\"}} 3"),
            format!("crd_module_runs_total{{{n},module=\"Lb\\n\"}} 0"),
            format!("crd_module_fired_total{{{n},module=\"Disk\"}} 1"),
            format!("crd_module_responses_total{{{n},module=\"Disk\"}} 1"),
            format!("crd_module_errors_total{{{n},module=\"Lb\\n\"}} 0"),
            format!("crd_module_overruns_total{{{n},module=\"Disk\"}} 0"),
            format!("crd_module_next_seconds{{{n},module=\"Disk\"}} 12"),
            format!("crd_module_last_seconds_ago{{{n},module=\"Disk\"}} 2"),
        ] {
            assert!(t.lines().any(|l| l == line), "{line}\n{t}");
        }
        assert!(t.contains("# TYPE crd_module_runs_total counter\n"));
        assert!(t.contains("# TYPE crd_module_next_seconds gauge\n"));
        assert!(
            t.contains("# HELP crd_module_last_seconds_ago crd status: module_table last_s_ago\n")
        );
        assert!(
            !t.contains("module=\"Lb\\n\"} 12")
                && t.matches("crd_module_next_seconds{").count() == 1
        );
    }

    /// A rule module's figures, written module by module in the list, are one
    /// family per figure with the module as a label.
    #[cfg(feature = "collector")]
    #[test]
    fn prometheus_rule_figures_are_one_family_each_labelled_by_module() {
        let mut st = Status::new("0.1.0", "c", 1);
        for (m, keys) in [("Load_avg", 3), ("Wan", 1)] {
            st.num(format!("rule_{m}_keys"), keys);
            st.count(format!("rule_{m}_hits"), keys * 10);
        }
        st.count("collect_decided", 4);
        let t = st.to_prometheus();
        let fams = check_exposition(&t);
        let names: Vec<&str> = fams.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "crd_info",
                "crd_collect_decided_total",
                "crd_rule_keys",
                "crd_rule_hits_total"
            ]
        );
        assert!(
            t.contains(
                "# HELP crd_rule_keys crd status: rule_<module>_keys\n# TYPE crd_rule_keys gauge\n\
             crd_rule_keys{node=\"c\",module=\"Load_avg\"} 3\n\
             crd_rule_keys{node=\"c\",module=\"Wan\"} 1\n"
            ),
            "{t}"
        );
        assert!(t.contains("crd_rule_hits_total{node=\"c\",module=\"Wan\"} 10\n"));
    }
}
