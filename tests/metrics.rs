//! The metrics file end to end: a real edge crd and a real collector crd with
//! `metrics_file` and a 1 s `metrics_interval`; each file they write is
//! checked by the real `promtool check metrics` (Debian package
//! `prometheus`; the tests fail, not skip, without it) and read against
//! `crd status --json` of the same daemon.

mod common;
use common::*;
use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

/// `promtool check metrics < file`: exit 0 and nothing said, so no lint
/// problem either.
fn promtool_is_silent(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`) must be installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn status_json(sb: &Sandbox) -> Value {
    let (code, out, err) = sb.run(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// The value of the sample `series` (name and labels) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The naming rule of docs/monitoring.md: a JSON key's metric name (counters add
/// `_total`) and the factor from its JSON value to the metric's.
fn metric_of(key: &str) -> (String, f64) {
    let (stem, ago) = key.strip_suffix("_ago").map_or((key, ""), |s| (s, "_ago"));
    let (stem, unit, f) = if let Some(s) = stem.strip_suffix("_us") {
        (s, "_seconds", 1e-6)
    } else if let Some(s) = stem.strip_suffix("_s") {
        (s, "_seconds", 1.0)
    } else if let Some(s) = stem.strip_suffix("_kib") {
        (s, "_bytes", 1024.0)
    } else {
        (stem, "", 1.0)
    };
    (format!("crd_{stem}{unit}{ago}"), f)
}

/// The file written after `crd status --json` was asked, and the answer
/// asked again after it: every figure that held still between the two is
/// in the file with the same number (a gauge `NAME` or a counter
/// `NAME_total`; a rule module's as `crd_rule_FIGURE{module=...}`); a text
/// or a `null` is not there. Returns the file and the numbers compared.
fn file_agrees_with_status(sb: &Sandbox, file: &str, node: &str) -> (String, usize) {
    let before = status_json(sb);
    let old = sb.read(file);
    assert!(
        wait_for(LONG, || {
            let now = sb.read(file);
            !now.is_empty() && now != old
        }),
        "{file} not written again"
    );
    let text = sb.read(file);
    let after = status_json(sb);
    let mut compared = 0;
    for (k, v) in before.as_object().unwrap() {
        if k == "pid" || k == "module_table" || after[k] != *v {
            continue;
        }
        let (series, f) = match k.strip_prefix("rule_").and_then(|r| r.rsplit_once('_')) {
            Some((module, fig)) => (
                format!("crd_rule_{fig}"),
                format!("{{node=\"{node}\",module=\"{module}\"}}"),
            ),
            None => (metric_of(k).0, format!("{{node=\"{node}\"}}")),
        };
        let scale = metric_of(k).1;
        let got = sample(&text, &format!("{series}{f}"))
            .or_else(|| sample(&text, &format!("{series}_total{f}")));
        let want = match v {
            Value::Number(n) => n.as_f64().map(|n| n * scale),
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            _ => None,
        };
        match (got, want) {
            (Some(g), Some(w)) => assert!((g - w).abs() <= w * 1e-12, "{k}: {g} != {w}\n{text}"),
            (None, None) => {}
            _ => panic!("{k}: {v} in crd status, {got:?} in the file\n{text}"),
        }
        compared += usize::from(want.is_some());
    }
    (text, compared)
}

/// An edge crd (a node name that needs escaping in a label) writes the file
/// beside its config on its interval; promtool finds nothing to say; its
/// numbers are those of `crd status --json`, counters and gauges typed as
/// docs/monitoring.md says, a module's row labelled by the module.
#[test]
fn an_edge_writes_metrics_promtool_accepts_with_the_numbers_of_its_status() {
    let edge = Sandbox::new("metrics-edge");
    edge.module("Disk", "echo full\nexit 0", None);
    edge.config_node(
        "edge\"q\\1",
        "metrics_file = crd.prom\nmetrics_interval = 1s\ninterval = 1h",
    );
    let d = edge.start();
    assert!(
        wait_for(LONG, || edge
            .read("crd.prom")
            .contains("crd_module_runs_total")),
        "{}",
        d.log()
    );
    assert!(wait_for(
        LONG,
        || status_json(&edge)["module_table"][0]["runs"] == 1
    ));
    let node = "edge\\\"q\\\\1";
    let (text, compared) = file_agrees_with_status(&edge, "crd.prom", node);
    promtool_is_silent(&text);
    assert!(compared >= 30, "{compared} figures compared\n{text}");
    for (kind, name) in [
        ("counter", "crd_spool_fsyncs_total"),
        ("counter", "crd_wakeups_total"),
        ("counter", "crd_cpu_self_seconds_total"),
        ("counter", "crd_module_fired_total"),
        ("gauge", "crd_spool_depth"),
        ("gauge", "crd_uptime_seconds"),
        ("gauge", "crd_max_rss_bytes"),
        ("gauge", "crd_module_next_seconds"),
    ] {
        assert!(
            text.contains(&format!("\n# TYPE {name} {kind}\n")),
            "{name}\n{text}"
        );
    }
    let row = |col: &str| {
        sample(
            &text,
            &format!("crd_module_{col}{{node=\"{node}\",module=\"Disk\"}}"),
        )
    };
    assert_eq!(
        (row("runs_total"), row("fired_total")),
        (Some(1.0), Some(1.0))
    );
    assert!(text.contains(&format!(
        "crd_info{{node=\"{node}\",version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    )));
    let mode = std::fs::metadata(edge.path("crd.prom"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
    assert!(!edge.exists("crd.prom.tmp"));
}

/// A collector's file: its `collect_*` figures and a rule module's, one
/// family per figure labelled by the module; promtool finds nothing to say.
#[cfg(feature = "collector")]
#[test]
fn a_collector_writes_metrics_with_its_rules_labelled_by_module() {
    let central = Sandbox::new("metrics-central");
    let b = central.queueing_broker();
    central.write(
        "modules/Hot/module.conf",
        "subscribe = plant/+/temp\nregister = max\nvalue = .\nperiod = 1m\nabove = 30\n",
    );
    central.script("modules/Hot/response", "true");
    central.write("modules/Sink/module.conf", "subscribe = plant/+/temp\n");
    central.script("modules/Sink/response", "cat > /dev/null");
    central.config_node(
        "central",
        &format!(
            "broker = {}\nmetrics_file = m/crd.prom\nmetrics_interval = 1s",
            b.addr()
        ),
    );
    std::fs::create_dir_all(central.path("m")).unwrap();
    let c = central.start();
    assert!(
        wait_for(LONG, || c.log().contains("mqtt: subscribed")),
        "{}",
        c.log()
    );
    for (node, t) in [("a", "21"), ("b", "35")] {
        let st = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &b.port.to_string(), "-q", "1"])
            .args(["-t", &format!("plant/{node}/temp"), "-m", t])
            .status()
            .unwrap();
        assert!(st.success());
    }
    // Both messages run (Sink's two responses, Hot's one) and nothing is left.
    let settled = || {
        let s = status_json(&central);
        s["collect_runs"] == 3 && s["collect_running"] == 0 && s["collect_queued"] == 0
    };
    assert!(
        wait_for(LONG, settled),
        "{}\n{}",
        c.log(),
        status_json(&central)
    );
    let (text, compared) = file_agrees_with_status(&central, "m/crd.prom", "central");
    promtool_is_silent(&text);
    assert!(compared >= 60, "{compared} figures compared\n{text}");
    let series = |s: &str| sample(&text, s);
    // The two messages and the collector's own retained status.
    assert_eq!(
        series("crd_collect_received_total{node=\"central\"}"),
        Some(3.0)
    );
    assert_eq!(
        series("crd_rule_keys{node=\"central\",module=\"Hot\"}"),
        Some(2.0)
    );
    assert_eq!(
        series("crd_rule_hits_total{node=\"central\",module=\"Hot\"}"),
        Some(1.0)
    );
    assert_eq!(text.matches("# TYPE crd_rule_keys gauge\n").count(), 1);
}
