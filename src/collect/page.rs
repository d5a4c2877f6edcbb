//! The fleet page (`fleet_html`): one static HTML document rendered from the
//! collector's fleet, no IO and no JavaScript (a `refresh` meta tag reloads it).
//! A table of nodes x modules: each node's state and since when, its version,
//! its last event and how old it is, and per module whether its condition is ON
//! now; above it, the collector's own queue. Nodes with a problem (offline, or a
//! condition ON) come first. Every name from the network is escaped.
//!
//! Bounds: at most `MAX_ROWS` nodes (the rest counted below the table; `crd
//! fleet` lists all) and `MAX_COLUMNS` module columns (the rest of a node's ON
//! conditions in its last cell), so a page stays under about 1.5 MB.

use crate::collect::presence::{Fleet, ModuleState, Node};
use crate::host::logger::RateLimit;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The page is rewritten at most this often, when the fleet changed.
pub const PAGE_INTERVAL: Duration = Duration::from_secs(5);

/// When the page is written, and how its writes went: the writing itself is
/// the daemon's (`Action::WritePage`).
#[derive(Debug)]
pub struct Writer {
    /// Where it goes (`None`: no page).
    path: Option<PathBuf>,
    /// The fleet's `changes` it last showed.
    shown: Option<u64>,
    /// When it may be written next.
    next: Instant,
    log: RateLimit,
    /// Writes, and those that failed.
    pub writes: u64,
    pub errors: u64,
}

impl Writer {
    /// No page yet; one set is written at once (`now`) when due.
    pub fn new(now: Instant) -> Writer {
        Writer {
            path: None,
            shown: None,
            next: now,
            log: RateLimit::default(),
            writes: 0,
            errors: 0,
        }
    }

    /// Where the page goes (`None`: no page): written when next due.
    pub fn set_path(&mut self, path: Option<&Path>) {
        if self.path.as_deref() != path {
            self.path = path.map(Path::to_path_buf);
            self.shown = None;
        }
    }

    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }

    /// When the page is due, for a fleet at `changes`.
    pub fn due(&self, changes: u64) -> Option<Instant> {
        (self.path.is_some() && self.shown != Some(changes)).then_some(self.next)
    }

    /// The page is written now, showing the fleet at `changes`: where to.
    pub fn take(&mut self, changes: u64, now: Instant) -> Option<PathBuf> {
        let path = self.path.clone()?;
        self.next = now + PAGE_INTERVAL;
        self.shown = Some(changes);
        Some(path)
    }

    /// How the write of the page at `path` went.
    pub fn written(&mut self, path: &Path, r: std::io::Result<()>, now: Instant) {
        match r {
            Ok(()) => self.writes += 1,
            Err(e) => {
                self.errors += 1;
                if self.log.allow(now, "fleet page") {
                    log::warn!("fleet page {}: {e}", path.display());
                }
            }
        }
    }
}

/// Nodes shown.
pub const MAX_ROWS: usize = 1000;
/// Module columns shown.
pub const MAX_COLUMNS: usize = 40;

/// What the page says about the collector itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct Own<'a> {
    pub node: &'a str,
    /// Messages journaled, not yet done with.
    pub journal_depth: u64,
    /// Runs waiting for a slot.
    pub queued: u64,
    pub running: u64,
}

/// `s` with `&`, `<`, `>`, `"` and `'` as character references: safe in text
/// and in a quoted attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `12 s`, `5 min`, `3 h`, `2 d`: how long before `now_ms` `t_ms` was; `-` for 0.
fn age(now_ms: u64, t_ms: u64) -> String {
    if t_ms == 0 {
        return "-".into();
    }
    let s = now_ms.saturating_sub(t_ms) / 1000;
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// `2026-12-03 21:50:28 UTC` from unix ms.
fn utc(ms: u64) -> String {
    let c = crate::core::date::civil(ms / 1000);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

const STYLE: &str = "body{font-family:sans-serif;margin:1em}\
table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:2px 6px;text-align:left}\
th{background:#eee}tr.offline td.state{background:#fcc}tr.online td.state{background:#cfc}\
td.on{background:#f66;color:#fff;font-weight:bold}td.off{color:#888}";

/// The page, rendered at `now_ms` (the collector's clock).
pub fn render(fleet: &Fleet, own: Own<'_>, now_ms: u64) -> String {
    let (nodes, counts) = shown_nodes(fleet);
    let columns = Columns::of(&nodes);
    let mut h = String::with_capacity(4096 + nodes.len() * (160 + 16 * columns.names.len()));
    write_head(&mut h, &counts, own, now_ms);
    columns.write_header(&mut h);
    for (n, states) in &nodes {
        write_row(&mut h, n, states, &columns, now_ms);
    }
    h.push_str("</tbody>\n</table>\n");
    if counts.total > nodes.len() {
        let _ = writeln!(
            h,
            "<p id=\"more\">{} more nodes not shown (`crd fleet` lists them all).</p>",
            counts.total - nodes.len()
        );
    }
    h.push_str("</body>\n</html>\n");
    h
}

/// What the summary line counts, over every node (shown or not).
struct Counts {
    total: usize,
    online: usize,
    offline: usize,
    /// Module conditions ON, over all nodes.
    conditions: usize,
}

/// A node and its module states.
type Row<'a> = (Node<'a>, Vec<ModuleState<'a>>);

/// The first `MAX_ROWS` nodes, problems first (offline, or a condition ON), then
/// by name; and the counts over all of them.
fn shown_nodes(fleet: &Fleet) -> (Vec<Row<'_>>, Counts) {
    let mut nodes: Vec<Row<'_>> = fleet
        .sorted()
        .into_iter()
        .map(|n| {
            let states = fleet.states_of(n.node);
            (n, states)
        })
        .collect();
    let on = |s: &[ModuleState]| s.iter().filter(|m| m.on).count();
    let counts = Counts {
        total: nodes.len(),
        online: nodes.iter().filter(|n| n.0.state == "online").count(),
        offline: nodes.iter().filter(|n| n.0.state == "offline").count(),
        conditions: nodes.iter().map(|n| on(&n.1)).sum(),
    };
    // Stable: by name within each group.
    nodes.sort_by_key(|n| !(n.0.state == "offline" || on(&n.1) > 0));
    nodes.truncate(MAX_ROWS);
    (nodes, counts)
}

/// The module columns: the first `MAX_COLUMNS` module names of the shown nodes,
/// sorted, and whether there were more.
struct Columns<'a> {
    names: Vec<&'a str>,
    more: bool,
}

impl<'a> Columns<'a> {
    fn of(nodes: &[Row<'a>]) -> Columns<'a> {
        let mut names: Vec<&str> = nodes
            .iter()
            .flat_map(|n| n.1.iter().map(|m| m.module))
            .collect();
        names.sort_unstable();
        names.dedup();
        let more = names.len() > MAX_COLUMNS;
        names.truncate(MAX_COLUMNS);
        Columns { names, more }
    }

    /// Opens the table with its header row.
    fn write_header(&self, h: &mut String) {
        h.push_str(
            "<table id=\"fleet\">\n<thead><tr><th>node</th><th>state</th><th>since</th>\
             <th>version</th><th>last event</th><th>event age</th>",
        );
        for c in &self.names {
            let _ = write!(h, "<th class=\"module\">{}</th>", escape(c));
        }
        if self.more {
            h.push_str("<th>other modules ON</th>");
        }
        h.push_str("</tr></thead>\n<tbody>\n");
    }
}

/// The document's head, the summary line and the collector's own line.
fn write_head(h: &mut String, counts: &Counts, own: Own<'_>, now_ms: u64) {
    let Counts {
        total,
        online,
        offline,
        conditions,
    } = counts;
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"refresh\" content=\"10\">\n<title>crd fleet: {total} nodes</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n<h1>crd fleet</h1>\n\
         <p id=\"summary\">{total} nodes: {online} online, {offline} offline; \
         {conditions} conditions ON.</p>\n\
         <p id=\"collector\">Collector <b>{}</b> at {}: {} messages journaled, \
         {} runs queued, {} running.</p>\n",
        escape(own.node),
        utc(now_ms),
        own.journal_depth,
        own.queued,
        own.running,
    );
}

/// One node's row: its state, since when, version, last event, and a cell per
/// module column (the rest of its ON conditions in a last cell).
fn write_row(
    h: &mut String,
    n: &Node<'_>,
    states: &[ModuleState<'_>],
    columns: &Columns<'_>,
    now_ms: u64,
) {
    let last = if n.last_event_ms == 0 {
        "-".to_string()
    } else {
        escape(&format!("{} {}", n.last_event_module, n.last_event_kind))
    };
    let _ = write!(
        h,
        "<tr class=\"{}\"><td class=\"node\">{}</td><td class=\"state\">{}</td>\
         <td>{}</td><td>{}</td><td>{last}</td><td>{}</td>",
        n.state,
        escape(n.node),
        n.state,
        age(now_ms, n.since_ms),
        if n.version.is_empty() {
            "-".to_string()
        } else {
            escape(n.version)
        },
        age(now_ms, n.last_event_ms),
    );
    for c in &columns.names {
        match states.iter().find(|m| m.module == *c) {
            Some(m) => {
                let _ = write!(
                    h,
                    "<td class=\"{}\" title=\"since {}\">{}</td>",
                    if m.on { "on" } else { "off" },
                    age(now_ms, m.since_ms),
                    if m.on { "ON" } else { "off" },
                );
            }
            None => h.push_str("<td></td>"),
        }
    }
    if columns.more {
        let rest: Vec<String> = states
            .iter()
            .filter(|m| m.on && !columns.names.contains(&m.module))
            .map(|m| escape(m.module))
            .collect();
        let _ = write!(h, "<td class=\"on\">{}</td>", rest.join(" "));
    }
    h.push_str("</tr>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use html5gum::{Token, Tokenizer};

    /// The page as tokens: no tokenizer error, and (tag, text) pairs of the
    /// table cells.
    fn cells(html: &str) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        let mut in_cell = false;
        for t in Tokenizer::new(html) {
            match t.unwrap() {
                Token::Error(e) => panic!("HTML error {e:?} in\n{html}"),
                Token::StartTag(t) if &*t.name == b"script" => panic!("a script tag"),
                Token::StartTag(t) if &*t.name == b"tr" => rows.push(Vec::new()),
                Token::StartTag(t) if matches!(&**t.name, b"td" | b"th") => {
                    in_cell = true;
                    rows.last_mut().unwrap().push(String::new());
                }
                Token::EndTag(t) if matches!(&**t.name, b"td" | b"th") => in_cell = false,
                Token::String(s) if in_cell => rows
                    .last_mut()
                    .unwrap()
                    .last_mut()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&s)),
                _ => {}
            }
        }
        rows
    }

    fn fleet() -> Fleet {
        let mut f = Fleet::default();
        f.status("r1", br#"{"state":"online","version":"0.1.0"}"#, 1_000_000);
        f.event("r1", "Disk", "cleared", 1_100_000);
        f.module_state("r1", "Disk", br#"{"state":"OFF","since":1100000}"#);
        f.module_state("r1", "WanDown", br#"{"state":"OFF","since":900000}"#);
        f.status("r2", br#"{"state":"offline"}"#, 1_150_000);
        f.status(
            "<script>alert(1)</script>",
            br#"{"state":"online"}"#,
            1_000_000,
        );
        f.module_state(
            "<script>alert(1)</script>",
            "Wan\"Down<b>",
            br#"{"state":"ON","since":1190000}"#,
        );
        f
    }

    #[test]
    fn nodes_by_modules_with_problems_first_and_every_name_escaped() {
        let own = Own {
            node: "central & co",
            journal_depth: 3,
            queued: 2,
            running: 1,
        };
        let html = render(&fleet(), own, 1_200_000);
        let rows = cells(&html);
        assert_eq!(
            rows[0],
            [
                "node",
                "state",
                "since",
                "version",
                "last event",
                "event age",
                "Disk",
                "Wan\"Down<b>",
                "WanDown"
            ]
        );
        // Problems first: the node with a condition ON, the offline one; then r1.
        assert_eq!(
            rows[1],
            [
                "<script>alert(1)</script>",
                "online",
                "3 min",
                "-",
                "-",
                "-",
                "",
                "ON",
                ""
            ]
        );
        assert_eq!(rows[2][..3], ["r2", "offline", "50 s"]);
        assert_eq!(
            rows[3],
            [
                "r1",
                "online",
                "3 min",
                "0.1.0",
                "Disk cleared",
                "100 s",
                "off",
                "",
                "off"
            ]
        );
        assert_eq!(rows.len(), 4);
        assert!(html.contains("3 nodes: 2 online, 1 offline; 1 conditions ON."));
        assert!(html.contains(
            "Collector <b>central &amp; co</b> at 1970-01-01 00:20:00 UTC: 3 messages journaled, 2 runs queued, 1 running."
        ));
        assert!(!html.contains("<script>"));
    }

    #[test]
    fn rows_and_columns_are_bounded() {
        let mut f = Fleet::default();
        for i in 0..MAX_ROWS + 7 {
            f.status(&format!("n{i:04}"), br#"{"state":"online"}"#, 1000);
        }
        for i in 0..MAX_COLUMNS + 3 {
            f.module_state(
                "n0000",
                &format!("m{i:02}"),
                br#"{"state":"ON","since":1000}"#,
            );
        }
        let html = render(&f, Own::default(), 2000);
        let rows = cells(&html);
        assert_eq!(rows.len(), 1 + MAX_ROWS);
        assert_eq!(rows[0].len(), 6 + MAX_COLUMNS + 1);
        assert_eq!(rows[0].last().unwrap(), "other modules ON");
        assert_eq!(rows[1].last().unwrap(), "m40 m41 m42");
        assert!(html.contains("<p id=\"more\">7 more nodes not shown"));
    }

    #[test]
    fn ages_and_dates() {
        assert_eq!(age(10_000, 0), "-");
        assert_eq!(age(10_000, 20_000), "0 s");
        assert_eq!(age(120_000, 1000), "119 s");
        assert_eq!(age(200_000, 1000), "3 min");
        assert_eq!(age(7_200_000, 1000), "119 min");
        assert_eq!(age(90_000_000, 1), "24 h");
        assert_eq!(age(3 * 86_400_000, 1), "2 d");
        assert_eq!(utc(1_796_335_362_792), "2026-12-03 22:02:42 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
