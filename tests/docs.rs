//! The docs against the code, read as text the way `tidy.rs` reads the source:
//!
//! - docs/configuration.md has a section for every key of `core::config::KEYS`,
//!   with its scope and, for a key only collector builds take, that it is one;
//!   every key it has a section for is in `KEYS`.
//! - docs/cli.md has a row for every command of `src/cli/mod.rs`'s `COMMANDS`
//!   naming each of its options, a row for every option of `TOP`, and every exit
//!   code `cli` defines. The tables are read from the source, so the router's
//!   binary carries nothing for this.
//! - The manual page of the .deb (cross/deb/crd.8) is written by hand and held
//!   to the same lists: every command, every top-level option, every key.
//! - ARCHITECTURE.md's code map has a heading for every folder of `src/` and names
//!   every file in it; ARCHITECTURE.md stays within 40 KB, README.md within 200
//!   lines.
//! - Every relative link in README.md, ARCHITECTURE.md, docs/, bench/report.md
//!   and modules/README.md leads to a file that exists and, with a `#fragment`,
//!   to a heading there (GitHub's anchors).
//!
//! Each check is a function from texts to problems, and the tests at the bottom
//! plant an omission in a copy of the text and assert it is found, so these tests
//! can fail.

use crd::core::config::{KEYS, KeyBuilds, KeyScope};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The text of each `"..."` literal in `s`, in order (no escapes in the names
/// read here).
fn literals(s: &str) -> Vec<String> {
    s.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The first string literal after each `opt(` or `val(` in `block`.
fn options_in(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in block
        .match_indices("opt(")
        .chain(block.match_indices("val("))
    {
        if let Some(name) = literals(&block[i..]).into_iter().next() {
            out.push(name);
        }
    }
    out.sort();
    out
}

/// The command line the code parses: each command of `COMMANDS` with its
/// options, and the options of `TOP`.
struct Grammar {
    commands: BTreeMap<String, Vec<String>>,
    top: Vec<String>,
    exit_codes: Vec<String>,
}

fn grammar(cli: &str) -> Grammar {
    let start = cli
        .find("static COMMANDS")
        .expect("static COMMANDS in src/cli/mod.rs");
    let top_at = cli
        .find("static TOP")
        .expect("static TOP in src/cli/mod.rs");
    let commands_block = &cli[start..top_at];
    let top_block = &cli[top_at..];
    let top_block = &top_block[..top_block.find("\n};").expect("the end of TOP")];
    let mut commands = BTreeMap::new();
    for chunk in commands_block.split("cmd(").skip(1) {
        let name = literals(chunk)
            .into_iter()
            .next()
            .expect("a command's name");
        commands.insert(name, options_in(chunk));
    }
    let exit_codes = cli
        .lines()
        .filter(|l| l.starts_with("pub const EXIT_"))
        .filter_map(|l| l.split('=').nth(1))
        .map(|v| v.trim().trim_end_matches(';').to_string())
        .collect();
    Grammar {
        commands,
        top: options_in(top_block),
        exit_codes,
    }
}

/// How an option is written on the command line: `--long`, or `-x` for the
/// one-letter `x`.
fn flag(long: &str) -> String {
    if long.len() == 1 {
        format!("-{long}")
    } else {
        format!("--{long}")
    }
}

/// docs/cli.md against the grammar: a table row starting with `` | `crd NAME``
/// for each command, naming each of its options; a row naming each top-level
/// option; each exit code somewhere on the page.
fn check_cli_md(doc: &str, g: &Grammar) -> Vec<String> {
    let mut problems = Vec::new();
    let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with("| `")).collect();
    for (name, opts) in &g.commands {
        let head = format!("| `crd {name}");
        let Some(row) = rows.iter().find(|r| r.starts_with(&head)) else {
            problems.push(format!("docs/cli.md: no row for `crd {name}`"));
            continue;
        };
        for o in opts {
            if !row.contains(&flag(o)) {
                problems.push(format!(
                    "docs/cli.md: `crd {name}`'s row does not name {}",
                    flag(o)
                ));
            }
        }
    }
    for o in &g.top {
        let f = flag(o);
        if !rows
            .iter()
            .any(|r| r.contains(&format!("`{f}")) || r.contains(&format!(" {f}")))
        {
            problems.push(format!("docs/cli.md: no row names the option {f}"));
        }
    }
    for code in &g.exit_codes {
        if !doc.contains(code.as_str()) {
            problems.push(format!("docs/cli.md: exit code {code} is not documented"));
        }
    }
    problems
}

/// The scope cell of each `` ### `key` `` section of docs/configuration.md: the
/// first cell of the first table row under the heading's table header.
fn documented_keys(doc: &str) -> BTreeMap<String, String> {
    let mut keys = BTreeMap::new();
    let lines: Vec<&str> = doc.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let Some(name) = l.strip_prefix("### `").and_then(|r| r.strip_suffix('`')) else {
            continue;
        };
        let row = lines[i + 1..]
            .iter()
            .take_while(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
            .nth(1);
        let scope = row
            .and_then(|r| r.trim_matches('|').split('|').next())
            .unwrap_or("")
            .trim();
        keys.insert(name.to_string(), scope.to_string());
    }
    keys
}

fn check_configuration_md(doc: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let documented = documented_keys(doc);
    for k in KEYS {
        let Some(scope) = documented.get(k.name) else {
            problems.push(format!(
                "docs/configuration.md: no section for key `{}`",
                k.name
            ));
            continue;
        };
        let want = match k.scope {
            KeyScope::Global => "global",
            KeyScope::Module => "module",
            KeyScope::Both => "both",
        };
        if scope.split_whitespace().next() != Some(want) {
            problems.push(format!(
                "docs/configuration.md: `{}` has scope `{scope}`, the code says {want}",
                k.name
            ));
        }
        let collector = scope.contains("collector builds");
        if collector != (k.builds == KeyBuilds::Collector) {
            problems.push(format!(
                "docs/configuration.md: `{}` is{} marked (collector builds)",
                k.name,
                if collector { "" } else { " not" }
            ));
        }
        if !doc.contains(&format!("[`{0}`](#{0})", k.name)) {
            problems.push(format!(
                "docs/configuration.md: `{}` is not in the index",
                k.name
            ));
        }
    }
    for name in documented.keys() {
        if !KEYS.iter().any(|k| k.name == name) {
            problems.push(format!(
                "docs/configuration.md: `{name}` is not a key the code knows"
            ));
        }
    }
    problems
}

/// The manual page names every command, every top-level option (roff writes
/// `-` as `\-`) and every key.
fn check_man_page(man: &str, g: &Grammar) -> Vec<String> {
    let mut problems = Vec::new();
    let words: Vec<&str> = man
        .split(|c: char| c.is_whitespace() || c == '"')
        .map(|w| w.trim_start_matches("\\fB").trim_end_matches("\\fR"))
        .collect();
    for name in g.commands.keys() {
        if !man.lines().any(|l| {
            (l.starts_with(".B") || l.starts_with(".TP"))
                && l.split_whitespace().nth(1) == Some(name)
        }) {
            problems.push(format!(
                "cross/deb/crd.8: no entry for the command `{name}`"
            ));
        }
    }
    for o in &g.top {
        let roff = flag(o).replace('-', "\\-");
        if !man.contains(&roff) {
            problems.push(format!(
                "cross/deb/crd.8: the option {} is not named",
                flag(o)
            ));
        }
    }
    for k in KEYS {
        if !words.contains(&k.name) {
            problems.push(format!(
                "cross/deb/crd.8: the key `{}` is not named",
                k.name
            ));
        }
    }
    problems
}

/// GitHub's anchor of a heading: lowercase, letters, digits, `-` and `_` kept,
/// spaces to `-`, the rest dropped; a repeated anchor gets `-1`, `-2`, ...
fn anchors(md: &str) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    let mut fenced = false;
    for l in md.lines() {
        if l.starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !l.starts_with('#') {
            continue;
        }
        let text = l.trim_start_matches('#').trim();
        let slug: String = text
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.push(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}

/// The targets of the `[text](target)` links of `md`, outside code.
fn links(md: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (n, l) in md.lines().enumerate() {
        if l.starts_with("```") {
            fenced = !fenced;
        }
        if fenced {
            continue;
        }
        let mut rest = l;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push((n + 1, after[..end].to_string()));
            rest = &after[end..];
        }
    }
    out
}

/// Each relative link of the file `rel` (under `top`) that leads nowhere.
fn check_links(top: &Path, rel: &str) -> Vec<String> {
    let text = fs::read_to_string(top.join(rel)).unwrap_or_default();
    let dir = Path::new(rel).parent().unwrap_or(Path::new(""));
    let mut problems = Vec::new();
    for (line, target) in links(&text) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (path, frag) = match target.split_once('#') {
            Some((p, f)) => (p, Some(f)),
            None => (target.as_str(), None),
        };
        let file = if path.is_empty() {
            top.join(rel)
        } else {
            top.join(dir).join(path)
        };
        if !file.exists() {
            problems.push(format!("{rel}:{line}: {target}: no such file"));
            continue;
        }
        if let Some(frag) = frag {
            let md = fs::read_to_string(&file).unwrap_or_default();
            if !anchors(&md).iter().any(|a| a == frag) {
                problems.push(format!("{rel}:{line}: {target}: no such heading"));
            }
        }
    }
    problems
}

/// The markdown files whose links are checked.
fn linked_files() -> Vec<String> {
    let mut files = vec![
        "README.md".to_string(),
        "ARCHITECTURE.md".to_string(),
        "bench/report.md".to_string(),
        "modules/README.md".to_string(),
    ];
    let mut docs: Vec<String> = fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| format!("docs/{}", e.unwrap().file_name().to_string_lossy()))
        .filter(|n| n.ends_with(".md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// ARCHITECTURE.md's code map: a `### ` heading naming `src/F/` for every
/// folder, and every file of the folder but `mod.rs` named in backticks.
fn check_code_map(arch: &str, src: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut folders: Vec<PathBuf> = fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    folders.sort();
    for f in folders {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let heading = format!("`src/{name}/`");
        if !arch
            .lines()
            .any(|l| l.starts_with("### ") && l.contains(&heading))
        {
            problems.push(format!(
                "ARCHITECTURE.md: no code map heading for {heading}"
            ));
        }
        let mut files: Vec<String> = fs::read_dir(&f)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".rs") && n != "mod.rs")
            .collect();
        files.sort();
        for file in files {
            if !arch.contains(&format!("`{file}`")) && !arch.contains(&format!("`{name}/{file}`")) {
                problems.push(format!(
                    "ARCHITECTURE.md: the code map does not name src/{name}/{file}"
                ));
            }
        }
    }
    problems
}

fn assert_none(problems: Vec<String>) {
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn configuration_md_documents_every_key_the_code_knows_with_its_scope() {
    assert_none(check_configuration_md(&read("docs/configuration.md")));
}

#[test]
fn cli_md_documents_every_command_option_and_exit_code() {
    let g = grammar(&read("src/cli/mod.rs"));
    assert!(
        g.commands.len() >= 9 && g.top.len() >= 10,
        "{:?} {:?}",
        g.commands,
        g.top
    );
    assert_none(check_cli_md(&read("docs/cli.md"), &g));
}

#[test]
fn the_man_page_names_every_command_option_and_key() {
    let g = grammar(&read("src/cli/mod.rs"));
    assert_none(check_man_page(&read("cross/deb/crd.8"), &g));
}

#[test]
fn the_code_map_names_every_folder_and_file_of_src() {
    assert_none(check_code_map(
        &read("ARCHITECTURE.md"),
        &root().join("src"),
    ));
}

#[test]
fn the_map_and_the_readme_stay_short() {
    let arch = fs::metadata(root().join("ARCHITECTURE.md")).unwrap().len();
    assert!(
        arch <= 40 * 1024,
        "ARCHITECTURE.md is {arch} bytes, over 40 KB"
    );
    let readme = read("README.md").lines().count();
    assert!(readme <= 200, "README.md is {readme} lines, over 200");
}

#[test]
fn every_relative_link_resolves() {
    let mut problems = Vec::new();
    for f in linked_files() {
        problems.extend(check_links(&root(), &f));
    }
    assert_none(problems);
}

// --- each check fails where it should: planted omissions ---

#[test]
fn a_key_left_out_of_configuration_md_or_made_up_is_found() {
    let doc = read("docs/configuration.md");
    let gone = doc.replacen("### `spool_segment`", "### spool_segment", 1);
    let p = check_configuration_md(&gone);
    assert!(
        p.iter()
            .any(|p| p.contains("no section for key `spool_segment`")),
        "{p:?}"
    );
    let wrong = doc.replacen("| global | 256k |", "| module | 256k |", 1);
    let p = check_configuration_md(&wrong);
    assert!(
        p.iter()
            .any(|p| p.contains("`spool_segment` has scope `module`")),
        "{p:?}"
    );
    let extra = format!("{doc}\n### `spool_colour`\n\n| scope |\n|---|\n| global |\n");
    let p = check_configuration_md(&extra);
    assert!(
        p.iter().any(|p| p.contains("`spool_colour` is not a key")),
        "{p:?}"
    );
}

#[test]
fn a_command_or_option_left_out_of_cli_md_is_found() {
    let g = grammar(&read("src/cli/mod.rs"));
    let doc = read("docs/cli.md");
    let gone = doc.replacen("| `crd replies", "| `crd answers", 1);
    let p = check_cli_md(&gone, &g);
    assert!(
        p.iter().any(|p| p.contains("no row for `crd replies`")),
        "{p:?}"
    );
    let row = doc.lines().find(|l| l.starts_with("| `crd send")).unwrap();
    let p = check_cli_md(&doc.replacen(row, &row.replace("--ttl", "--tt"), 1), &g);
    assert!(
        p.iter()
            .any(|p| p.contains("`crd send`'s row does not name --ttl")),
        "{p:?}"
    );
    let mut more = grammar(&read("src/cli/mod.rs"));
    more.top.push("colour".into());
    let p = check_cli_md(&doc, &more);
    assert!(p.iter().any(|p| p.contains("the option --colour")), "{p:?}");
}

#[test]
fn a_key_or_command_left_out_of_the_man_page_is_found() {
    let g = grammar(&read("src/cli/mod.rs"));
    let man = read("cross/deb/crd.8");
    let p = check_man_page(
        &man.replace("spool_sync_interval", "spool_sync_intervals"),
        &g,
    );
    assert!(
        p.iter().any(|p| p.contains("`spool_sync_interval`")),
        "{p:?}"
    );
    let p = check_man_page(&man.replace(".BR replies", ".BR answers"), &g);
    assert!(p.iter().any(|p| p.contains("command `replies`")), "{p:?}");
}

#[test]
fn a_file_left_out_of_the_code_map_is_found() {
    let arch = read("ARCHITECTURE.md").replace("`holds.rs`", "`hold.rs`");
    let p = check_code_map(&arch, &root().join("src"));
    assert_eq!(
        p,
        ["ARCHITECTURE.md: the code map does not name src/collect/holds.rs"]
    );
}

#[test]
fn a_broken_link_or_anchor_is_found() {
    let d = std::env::temp_dir().join(format!("crd-docs-links-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(d.join("docs")).unwrap();
    fs::write(
        d.join("docs/a.md"),
        "# A\n\n## The `spool`, and more\n\n### `node`\n",
    )
    .unwrap();
    fs::write(
        d.join("README.md"),
        "[a](docs/a.md) [b](docs/a.md#the-spool-and-more) [c](docs/a.md#node)\n\
         [d](docs/b.md) [e](docs/a.md#nodes) [f](https://example.org/x)\n```\n[g](nowhere.md)\n```\n",
    )
    .unwrap();
    let p = check_links(&d, "README.md");
    assert_eq!(
        p,
        [
            "README.md:2: docs/b.md: no such file",
            "README.md:2: docs/a.md#nodes: no such heading"
        ]
    );
    fs::remove_dir_all(&d).unwrap();
}
