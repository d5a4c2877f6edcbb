//! The house rules of `src/`, checked by reading the source, the way rust-analyzer
//! keeps its own without a reviewer. `make test` runs it; each violation is named
//! by file and line.
//!
//! - Every source file opens with a `//!` paragraph.
//! - `unsafe` appears only in `src/child/sys.rs`; child processes are built only in
//!   `src/child/` (no `std::process::Command` elsewhere).
//! - Every source file lives in a subsystem folder (`lib.rs` and `main.rs` aside), and
//!   a folder imports (`crate::FOLDER`) only what ARCHITECTURE.md's "may import" table
//!   allows it. The table is read from ARCHITECTURE.md itself, so the documented
//!   layering and the enforced one cannot drift; it has no cycles, so no import
//!   circle can come back.
//! - Pure folders (table: "pure") touch no file, socket, process, environment or
//!   clock: no `std::fs`, `std::net`, `std::os`, `std::process`, `std::env`, `mio`,
//!   `libc`, `Instant::now`, `SystemTime::now`, and no logging
//!   macros. Test code (`#[cfg(test)]` items) is exempt.
//! - Shape (`check_shape`): no function over 80 lines and no
//!   `too_many_arguments` allowed anywhere in `src/`; in collect/, command/,
//!   rules/ and daemon/ no struct over 15 named fields; collect/, command/, rules/
//!   and core/ read no clock and touch no file (`command/send.rs`, the CLI client
//!   that waits for its replies, aside); no two files import each other. What the
//!   tree still breaks is listed in `tests/tidy-debt.txt`, which only shrinks.
//!
//! - No development history (`check_history`): no issue number (the word, a
//!   space, a number) in src/, tests/, benches/, bench/, cross/, board-configs/,
//!   docs/, README.md or ARCHITECTURE.md. A comment says why the code is as it
//!   is now; how it came to be is in git log.
//!
//! The unit tests at the bottom feed the checker a planted bad tree and assert each
//! violation is found, so this test can fail.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// One folder's row of the table.
#[derive(Debug, Clone)]
struct Rule {
    may_import: Vec<String>,
    pure: bool,
}

/// The `backticked` words of a table cell.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Parses the "may import" table of ARCHITECTURE.md: rows whose first cell starts
/// with \`src/NAME/\`, whose next-to-last cell (kind) says `pure` or `io`, and whose
/// last cell lists the folders it may import, each in backticks (other words there
/// are ignored).
fn read_table(architecture: &str) -> BTreeMap<String, Rule> {
    let mut rules = BTreeMap::new();
    let mut in_table = false;
    for line in architecture.lines() {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if line.trim_start().starts_with('|') && cells.last() == Some(&"may import") {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        if !line.trim_start().starts_with('|') {
            break;
        }
        if cells.len() < 3 || cells[0].starts_with("--") || cells[0].starts_with(":-") {
            continue;
        }
        let Some(folder) = ticked(cells[0])
            .first()
            .and_then(|f| f.strip_prefix("src/"))
            .map(|f| f.trim_end_matches('/').to_string())
        else {
            continue;
        };
        let kind = cells[cells.len() - 2];
        let may_import = ticked(cells[cells.len() - 1]);
        rules.insert(
            folder.to_string(),
            Rule {
                may_import,
                pure: kind == "pure",
            },
        );
    }
    rules
}

/// The source with comments removed and the contents of string and char literals
/// blanked, line by line (so line numbers stay), plus whether each line opens with
/// `//!`. Good enough for Rust as this crate writes it: nested block comments,
/// raw strings with `#`s, byte strings, lifetimes.
fn code_lines(src: &str) -> Vec<String> {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let mut depth = 0usize; // block comment nesting
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied().unwrap_or(0);
        if depth > 0 {
            if c == b'*' && next == b'/' {
                depth -= 1;
                i += 2;
            } else if c == b'/' && next == b'*' {
                depth += 1;
                i += 2;
            } else {
                if c == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            continue;
        }
        if c == b'/' && next == b'/' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && next == b'*' {
            depth = 1;
            i += 2;
            continue;
        }
        // Raw strings: r"..", r#".."#, br#".."#.
        let raw_start = if c == b'r' && (next == b'"' || next == b'#') {
            Some(i + 1)
        } else if c == b'b' && next == b'r' {
            Some(i + 2)
        } else {
            None
        };
        let prev_ident = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if let (Some(mut j), false) = (raw_start, prev_ident) {
            let mut hashes = 0;
            while j < b.len() && b[j] == b'#' {
                hashes += 1;
                j += 1;
            }
            if j < b.len() && b[j] == b'"' {
                out.push('"');
                j += 1;
                loop {
                    if j >= b.len() {
                        break;
                    }
                    if b[j] == b'"'
                        && b[j + 1..]
                            .iter()
                            .take(hashes)
                            .filter(|&&h| h == b'#')
                            .count()
                            == hashes
                    {
                        j += 1 + hashes;
                        break;
                    }
                    if b[j] == b'\n' {
                        out.push('\n');
                    }
                    j += 1;
                }
                out.push('"');
                i = j;
                continue;
            }
        }
        if c == b'"' {
            out.push('"');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                if i < b.len() && b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            out.push('"');
            i += 1;
            continue;
        }
        if c == b'\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            let end = if next == b'\\' {
                b[i + 2..]
                    .iter()
                    .position(|&x| x == b'\'')
                    .map(|p| i + 2 + p)
            } else {
                // One UTF-8 character, then a quote.
                let len = match next {
                    0x00..=0x7f => 1,
                    0xc0..=0xdf => 2,
                    0xe0..=0xef => 3,
                    _ => 4,
                };
                (b.get(i + 1 + len) == Some(&b'\'')).then_some(i + 1 + len)
            };
            if let Some(e) = end {
                out.push_str("' '");
                i = e + 1;
                continue;
            }
        }
        out.push(c as char);
        i += 1;
    }
    out.split('\n').map(str::to_string).collect()
}

/// Which lines belong to `#[cfg(test)]` items (the attribute's line to the item's
/// closing brace).
fn test_lines(code: &[String]) -> Vec<bool> {
    let mut in_test = vec![false; code.len()];
    let mut n = 0;
    while n < code.len() {
        if code[n].trim_start().starts_with("#[cfg(test)]") {
            let mut depth = 0i64;
            let mut opened = false;
            let mut m = n;
            while m < code.len() {
                in_test[m] = true;
                for ch in code[m].chars() {
                    match ch {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                let ended =
                    (opened && depth <= 0) || (!opened && code[m].trim_end().ends_with(';'));
                if ended {
                    break;
                }
                m += 1;
            }
            n = m + 1;
        } else {
            n += 1;
        }
    }
    in_test
}

/// Whether `needle` occurs in `hay` as a whole word (not inside an identifier).
fn has_word(hay: &str, needle: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    hay.match_indices(needle).any(|(at, _)| {
        let before = hay[..at].chars().next_back();
        let after = hay[at + needle.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// The folders a line names as `crate::FOLDER`.
fn crate_paths(line: &str) -> Vec<String> {
    let mut v = Vec::new();
    for (at, _) in line.match_indices("crate::") {
        if line[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // `$crate::`, `foo_crate::`, `::crate::`
        }
        let rest = &line[at + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            v.push(name);
        }
        // `use crate::{a::x, b::y}`: every folder in the group.
        if let Some(group) = rest.strip_prefix('{') {
            for part in group.split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    v.push(name);
                }
            }
        }
    }
    v
}

const IMPURE: [&str; 10] = [
    "std::fs",
    "std::net",
    "std::os",
    "std::process",
    "std::env",
    "mio",
    "libc",
    "Instant::now",
    "SystemTime::now",
    "log::",
];
const LOG_MACROS: [&str; 5] = ["error!", "warn!", "info!", "debug!", "trace!"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Checks the tree at `src` against `rules`; one line per violation,
/// `path:line: what`.
fn check_tree(src: &Path, rules: &BTreeMap<String, Rule>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    for f in &files {
        let rel = f.strip_prefix(src).expect("under src").to_path_buf();
        let shown = Path::new("src").join(&rel).display().to_string();
        let text = fs::read_to_string(f).unwrap_or_default();
        let mut report =
            |line: usize, what: String| problems.push(format!("{shown}:{line}: {what}"));
        if !text.trim_start().starts_with("//!") {
            report(
                1,
                "does not open with a `//!` paragraph saying what it owns".into(),
            );
        }
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let folder = if parts.len() == 1 {
            if parts[0] != "lib.rs" && parts[0] != "main.rs" {
                report(
                    1,
                    "a source file outside a subsystem folder (see ARCHITECTURE.md)".into(),
                );
            }
            None
        } else {
            Some(parts[0].clone())
        };
        let rule = folder.as_ref().and_then(|f| rules.get(f));
        if let (Some(f), None) = (&folder, rule) {
            report(
                1,
                format!("folder `{f}` has no row in ARCHITECTURE.md's \"may import\" table"),
            );
        }
        let is_sys = rel == Path::new("child/sys.rs");
        let in_child = folder.as_deref() == Some("child");
        let code = code_lines(&text);
        let tests = test_lines(&code);
        for (n, line) in code.iter().enumerate() {
            let ln = n + 1;
            if !is_sys && has_word(line, "unsafe") {
                report(ln, "`unsafe` outside src/child/sys.rs".into());
            }
            if !in_child && (line.contains("process::Command") || has_word(line, "Command::new")) {
                report(ln, "child processes are built in src/child/ only".into());
            }
            if line.contains("super::super") {
                report(
                    ln,
                    "`super::super` reaches across folders; name it `crate::FOLDER`".into(),
                );
            }
            let (Some(f), Some(rule)) = (&folder, rule) else {
                continue;
            };
            for to in crate_paths(line) {
                if to != *f && !rule.may_import.contains(&to) {
                    report(
                        ln,
                        format!("`{f}` may not import `crate::{to}` (ARCHITECTURE.md, may import)"),
                    );
                }
            }
            if rule.pure && !tests[n] {
                for bad in IMPURE {
                    let hit = if bad.ends_with("::") || bad.contains("::") {
                        line.contains(bad)
                            && (bad != "log::"
                                || LOG_MACROS
                                    .iter()
                                    .any(|m| line.contains(&format!("log::{m}"))))
                    } else {
                        has_word(line, bad)
                    };
                    if hit {
                        report(
                            ln,
                            format!("pure folder `{f}` touches `{}`", bad.trim_end_matches("::")),
                        );
                    }
                }
            }
        }
    }
    problems
}

/// Lines a function may span outside tests (its signature to its closing brace).
const MAX_FN_LINES: usize = 80;
/// Named fields a struct may have in the central folders.
const MAX_FIELDS: usize = 15;
/// Folders whose structs are split by concern (`MAX_FIELDS`).
const SPLIT_FOLDERS: [&str; 4] = ["collect", "command", "rules", "daemon"];
/// Folders that read no clock and touch no file: the loop hands them `now`, and
/// the daemon carries out what they ask for.
const NO_CLOCK_FOLDERS: [&str; 4] = ["collect", "command", "rules", "core"];
/// The command-line client, which waits for its replies itself.
const CLIENT_FILES: [&str; 1] = ["command/send.rs"];

/// The function names declared on `line` (`fn name`), if any.
fn fn_name(line: &str) -> Option<String> {
    let at = line
        .match_indices("fn ")
        .find(|(at, _)| !line[..*at].ends_with(|c: char| c.is_alphanumeric() || c == '_'))?;
    let name: String = line[at.0 + 3..]
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// The line (index) where the item opened at `start` closes: the first `{` on or
/// after it, to its matching `}`; `None` for a declaration without a body.
fn body_end(code: &[String], start: usize) -> Option<usize> {
    let mut depth = 0i64;
    let mut opened = false;
    for (m, line) in code.iter().enumerate().skip(start) {
        for ch in line.chars() {
            match ch {
                '{' => {
                    depth += 1;
                    opened = true;
                }
                '}' => depth -= 1,
                ';' if !opened && depth == 0 => return None,
                _ => {}
            }
        }
        if opened && depth <= 0 {
            return Some(m);
        }
    }
    None
}

/// Whether a line at a struct's top level starts a named field (`name:` or
/// `pub name:`, any `pub(..)`).
fn is_field(line: &str) -> bool {
    let mut t = line.trim_start();
    if let Some(rest) = t.strip_prefix("pub") {
        t = match rest.strip_prefix('(') {
            Some(r) => r.split_once(')').map_or("", |(_, r)| r),
            None => rest,
        }
        .trim_start();
    }
    let name = t
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .map_or(t, |end| &t[..end]);
    !name.is_empty() && t[name.len()..].starts_with(':') && !t[name.len()..].starts_with("::")
}

/// The named fields of the struct whose body spans `code[open..=close]`.
fn fields(code: &[String], open: usize, close: usize) -> usize {
    let mut depth = 0i64;
    let mut n = 0;
    for line in &code[open..=close] {
        if depth == 1 && is_field(line) {
            n += 1;
        }
        for ch in line.chars() {
            match ch {
                '{' | '(' | '<' | '[' => depth += 1,
                '}' | ')' | '>' | ']' => depth -= 1,
                _ => {}
            }
        }
    }
    n
}

/// The source files `line` imports, as paths relative to `src/` (`a/b.rs`),
/// for `crate::a::b` and, from `folder`, `super::b`; only paths that name a
/// file that exists in `files`.
fn file_imports(line: &str, folder: &str, files: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |f: String| {
        if files.contains(&f) && !out.contains(&f) {
            out.push(f);
        }
    };
    for (at, _) in line.match_indices("crate::") {
        if line[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let parts: Vec<&str> = line[at + 7..]
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .next()
            .unwrap_or("")
            .split("::")
            .collect();
        if parts.len() >= 2 {
            add(format!("{}/{}.rs", parts[0], parts[1]));
        }
        // `use crate::a::{b::x, c}`
        if let Some(i) = line[at..].find("::{") {
            let a: String = line[at + 7..].chars().take_while(|c| *c != ':').collect();
            for part in line[at + i + 3..].split([',', '}']) {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                add(format!("{a}/{name}.rs"));
            }
        }
    }
    for (at, _) in line.match_indices("super::") {
        if line[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &line[at + 7..];
        let names: Vec<String> = if let Some(group) = rest.strip_prefix('{') {
            group.split([',', '}']).map(str::to_string).collect()
        } else {
            vec![rest.to_string()]
        };
        for n in names {
            let name: String = n
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            add(format!("{folder}/{name}.rs"));
        }
    }
    out
}

/// The shape rules: functions over `MAX_FN_LINES`, `too_many_arguments`
/// allowed, structs over `MAX_FIELDS` in `SPLIT_FOLDERS`, clock reads and
/// `std::fs` in `NO_CLOCK_FOLDERS`, and circles of imports between files.
/// One line per violation, `path:line: what`.
fn check_shape(src: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let rels: Vec<String> = files
        .iter()
        .map(|f| {
            f.strip_prefix(src)
                .expect("under src")
                .display()
                .to_string()
        })
        .collect();
    let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (f, rel) in files.iter().zip(&rels) {
        let shown = format!("src/{rel}");
        let text = fs::read_to_string(f).unwrap_or_default();
        let code = code_lines(&text);
        let tests = test_lines(&code);
        let folder = rel.split('/').next().unwrap_or("").to_string();
        let mut report =
            |line: usize, what: String| problems.push(format!("{shown}:{line}: {what}"));
        let client = CLIENT_FILES.contains(&rel.as_str());
        // A `tests.rs` is a `#[cfg(test)] mod tests;` of its folder.
        let test_file = rel.ends_with("/tests.rs");
        let mut imports = Vec::new();
        for (n, line) in code.iter().enumerate() {
            if tests[n] || test_file {
                continue;
            }
            if line.contains("too_many_arguments") {
                report(n + 1, "allows `too_many_arguments`: pass a struct".into());
            }
            if NO_CLOCK_FOLDERS.contains(&folder.as_str()) && !client {
                for bad in ["Instant::now", "SystemTime::now", "std::fs"] {
                    if line.contains(bad) {
                        report(
                            n + 1,
                            format!(
                                "`{folder}` reads no clock and touches no file, but uses `{bad}`: take it from the loop"
                            ),
                        );
                    }
                }
            }
            if let (Some(name), Some(end)) = (fn_name(line), body_end(&code, n))
                && end - n + 1 > MAX_FN_LINES
            {
                let len = end - n + 1;
                report(
                    n + 1,
                    format!("fn {name} is {len} lines, over {MAX_FN_LINES}"),
                );
            }
            let t = line.trim_start();
            let is_struct = t.starts_with("struct ")
                || t.starts_with("pub struct ")
                || t.starts_with("pub(crate) struct ");
            if is_struct
                && SPLIT_FOLDERS.contains(&folder.as_str())
                && !client
                && let Some(end) = body_end(&code, n)
                && fields(&code, n, end) > MAX_FIELDS
            {
                let k = fields(&code, n, end);
                let name: String = t
                    .split("struct ")
                    .nth(1)
                    .unwrap_or("")
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                report(
                    n + 1,
                    format!("struct {name} has {k} fields, over {MAX_FIELDS}: split it by concern"),
                );
            }
            for to in file_imports(line, &folder, &rels) {
                if to != *rel && !to.ends_with("mod.rs") && !imports.contains(&to) {
                    imports.push(to);
                }
            }
        }
        graph.insert(rel.clone(), imports);
    }
    for (from, tos) in &graph {
        for to in tos {
            if from < to && graph.get(to).is_some_and(|back| back.contains(from)) {
                problems.push(format!(
                    "src/{from}:1: import circle with src/{to}: move the shared vocabulary into one of them"
                ));
            }
        }
    }
    problems
}

/// Violations of the shape rules that are known and being paid off, one
/// `path: what` a line (`tests/tidy-debt.txt`): each must still occur (the list
/// only shrinks), and nothing else may.
fn debt() -> Vec<String> {
    fs::read_to_string(root().join("tests/tidy-debt.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// A problem without its line number, and its counts as `N` (a function
/// shortened but still long is the same debt), as the debt list names it.
fn debt_key(problem: &str) -> String {
    let mut parts = problem.splitn(3, ':');
    let (path, _line, what) = (
        parts.next().unwrap_or(""),
        parts.next(),
        parts.next().unwrap_or("").trim(),
    );
    let mut what_n = String::new();
    for c in what.chars() {
        if !c.is_ascii_digit() {
            what_n.push(c);
        } else if !what_n.ends_with('N') {
            what_n.push('N');
        }
    }
    format!("{path}: {what_n}")
}

/// The folders `from` reaches through the table; used to prove the table itself
/// has no cycle.
fn reaches(rules: &BTreeMap<String, Rule>, from: &str, to: &str, seen: &mut Vec<String>) -> bool {
    let Some(r) = rules.get(from) else {
        return false;
    };
    for m in &r.may_import {
        if m == to {
            return true;
        }
        if !seen.contains(m) {
            seen.push(m.clone());
            if reaches(rules, m, to, seen) {
                return true;
            }
        }
    }
    false
}

/// Where the history check looks: folders walked whole, and single files.
const HISTORY_PLACES: [&str; 9] = [
    "src",
    "tests",
    "benches",
    "bench",
    "cross",
    "board-configs",
    "docs",
    "README.md",
    "ARCHITECTURE.md",
];

/// Every text file under `path` (or `path` itself), sorted; files that are not
/// UTF-8 (images, binaries) are skipped by the caller.
fn all_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        out.push(path.to_path_buf());
        return;
    }
    let Ok(rd) = fs::read_dir(path) else { return };
    let mut entries: Vec<PathBuf> = rd.map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        all_files(&p, out);
    }
}

/// Where `line` names an issue by number: `issue`, `issues` or `Issue` (any
/// case), blanks and an optional `#`, then a digit, at a word start.
fn names_an_issue(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    let b = lower.as_bytes();
    let mut from = 0;
    while let Some(k) = lower[from..].find("issue") {
        let at = from + k;
        from = at + 5;
        if at > 0 && (b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_') {
            continue;
        }
        let mut i = at + 5;
        if b.get(i) == Some(&b's') {
            i += 1;
        }
        let blanks = i;
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
        if b.get(i) == Some(&b'#') {
            i += 1;
        }
        if (i > blanks || b.get(blanks) == Some(&b'#')) && b.get(i).is_some_and(u8::is_ascii_digit)
        {
            return true;
        }
    }
    false
}

/// Each line under `top`'s `HISTORY_PLACES` that names an issue by number, as
/// `path:line: ...` relative to `top`.
fn check_history(top: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for p in HISTORY_PLACES {
        all_files(&top.join(p), &mut files);
    }
    let mut problems = Vec::new();
    for f in files {
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        let rel = f.strip_prefix(top).unwrap_or(&f).display().to_string();
        for (n, line) in text.lines().enumerate() {
            if names_an_issue(line) {
                problems.push(format!(
                    "{rel}:{}: names an issue by number; say why the code is as it is now",
                    n + 1
                ));
            }
        }
    }
    problems
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn table() -> BTreeMap<String, Rule> {
    let text = fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    read_table(&text)
}

#[test]
fn src_keeps_the_house_rules() {
    let rules = table();
    let problems = check_tree(&root().join("src"), &rules);
    assert!(
        problems.is_empty(),
        "house rules broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn src_keeps_the_shape_rules_or_pays_its_listed_debt() {
    let problems = check_shape(&root().join("src"));
    let debt = debt();
    let new: Vec<&String> = problems
        .iter()
        .filter(|p| !debt.contains(&debt_key(p)))
        .collect();
    let keys: Vec<String> = problems.iter().map(|p| debt_key(p)).collect();
    let paid: Vec<&String> = debt.iter().filter(|d| !keys.contains(d)).collect();
    assert!(
        new.is_empty(),
        "shape rules broken:\n{}",
        new.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        paid.is_empty(),
        "paid off: remove from tests/tidy-debt.txt:\n{}",
        paid.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_may_import_table_is_there_and_has_no_cycle() {
    let rules = table();
    for f in [
        "core", "spool", "mqtt", "child", "host", "install", "daemon", "cli", "collect", "rules",
        "command",
    ] {
        assert!(
            rules.contains_key(f),
            "no row for src/{f}/ in ARCHITECTURE.md: {rules:?}"
        );
    }
    assert!(
        rules["core"].pure && rules["core"].may_import.is_empty(),
        "{:?}",
        rules["core"]
    );
    for (f, r) in &rules {
        for m in &r.may_import {
            assert!(
                rules.contains_key(m),
                "src/{f}/ may import `{m}`, which has no row"
            );
        }
        assert!(
            !reaches(&rules, f, f, &mut Vec::new()),
            "the table has a cycle through {f}"
        );
        assert!(
            !r.may_import.contains(&"cli".to_string()),
            "nothing imports cli, but {f} may"
        );
    }
}

// --- the checker fails where it should: a planted bad tree ---

fn planted(tag: &str, files: &[(&str, &str)]) -> PathBuf {
    let d = std::env::temp_dir().join(format!("crd-tidy-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    for (p, text) in files {
        let p = d.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    d
}

fn expect(problems: &[String], file_line: &str, what: &str) {
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with(file_line) && p.contains(what)),
        "expected `{file_line}: ...{what}...` among:\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_planted_bad_tree_is_refused_with_file_and_line() {
    let d = planted(
        "bad",
        &[
            ("lib.rs", "//! root\npub mod core;\n"),
            ("stray.rs", "//! a file outside any folder\n"),
            ("core/mod.rs", "// no doc paragraph\npub mod a;\n"),
            (
                "core/a.rs",
                "//! pure\nuse crate::host::files;\nuse std::fs::File;\n\nfn f() { let t = std::time::Instant::now(); log::warn!(\"x\"); }\n\
                 fn g() { unsafe { } }\n// crate::daemon in a comment is fine; \"unsafe\" too\nconst S: &str = \"crate::daemon unsafe\";\n\
                 #[cfg(test)]\nmod tests {\n    fn t() { let _ = std::time::Instant::now(); }\n}\n",
            ),
            (
                "host/mod.rs",
                "//! io\nuse crate::daemon::Daemon;\nuse crate::{core::x, cli::y};\n",
            ),
            (
                "host/run.rs",
                "//! io\nfn f() { std::process::Command::new(\"sh\"); }\n",
            ),
            (
                "child/sys.rs",
                "//! the one unsafe file\nfn f() { unsafe { } }\n",
            ),
            ("gadgets/mod.rs", "//! a folder without a row\n"),
        ],
    );
    let p = check_tree(&d, &table());
    expect(&p, "src/stray.rs:1", "outside a subsystem folder");
    expect(&p, "src/core/mod.rs:1", "`//!` paragraph");
    expect(&p, "src/core/a.rs:2", "may not import `crate::host`");
    expect(&p, "src/core/a.rs:3", "touches `std::fs`");
    expect(&p, "src/core/a.rs:5", "touches `Instant::now`");
    expect(&p, "src/core/a.rs:5", "touches `log`");
    expect(&p, "src/core/a.rs:6", "`unsafe` outside");
    expect(&p, "src/host/mod.rs:2", "may not import `crate::daemon`");
    expect(&p, "src/host/mod.rs:3", "may not import `crate::cli`");
    expect(&p, "src/host/run.rs:2", "built in src/child/ only");
    expect(&p, "src/gadgets/mod.rs:1", "no row");
    // Comments, strings and test code are not code that breaks the rules.
    assert!(
        !p.iter()
            .any(|l| l.starts_with("src/core/a.rs:7") || l.starts_with("src/core/a.rs:8")),
        "{p:#?}"
    );
    assert!(
        !p.iter().any(|l| l.starts_with("src/core/a.rs:11")),
        "{p:#?}"
    );
    assert!(
        !p.iter().any(|l| l.starts_with("src/child/sys.rs")),
        "{p:#?}"
    );
    assert!(
        !p.iter()
            .any(|l| l.starts_with("src/host/mod.rs:3") && l.contains("`crate::core`")),
        "{p:#?}"
    );
    assert_eq!(p.len(), 11, "{p:#?}");
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_planted_misshapen_tree_is_refused_with_file_and_line() {
    let long: String = (0..81).map(|i| format!("    let x{i} = {i};\n")).collect();
    let many: String = (0..16).map(|i| format!("    pub f{i}: u8,\n")).collect();
    let d = planted(
        "shape",
        &[
            ("child/recipe.rs", "//! a\nuse super::spawn::Kind;\n"),
            (
                "child/spawn.rs",
                "//! b\nuse crate::child::recipe::Recipe;\n",
            ),
            (
                "collect/big.rs",
                &format!(
                    "//! c\nfn long() {{\n{long}}}\n#[allow(clippy::too_many_arguments)]\nfn many(a: u8) {{}}\n\
                     pub struct Wide {{\n{many}}}\nfn t() {{ let n = std::time::Instant::now(); std::fs::read(\"x\"); }}\n"
                ),
            ),
            (
                "spool/ok.rs",
                &format!(
                    "//! the basement keeps its shape\npub struct Wide {{\n{many}}}\nfn t() {{ std::fs::read(\"x\"); }}\n"
                ),
            ),
            (
                "command/send.rs",
                "//! the client\nfn t() { let n = std::time::Instant::now(); }\n",
            ),
        ],
    );
    let p = check_shape(&d);
    expect(&p, "src/collect/big.rs:2", "fn long is 83 lines");
    expect(&p, "src/collect/big.rs:85", "too_many_arguments");
    expect(&p, "src/collect/big.rs:87", "struct Wide has 16 fields");
    expect(&p, "src/collect/big.rs:105", "`Instant::now`");
    expect(&p, "src/collect/big.rs:105", "`std::fs`");
    expect(
        &p,
        "src/child/recipe.rs:1",
        "import circle with src/child/spawn.rs",
    );
    assert_eq!(p.len(), 6, "{p:#?}");
    assert_eq!(
        debt_key("src/a.rs:12: fn f is 93 lines, over 80"),
        "src/a.rs: fn f is N lines, over N"
    );
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn no_issue_numbers_in_code_docs_or_tests() {
    let problems = check_history(&root());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_planted_issue_number_is_refused_with_file_and_line() {
    // Built from pieces, so this file itself holds no issue number.
    let word = ["Iss", "ue"].concat();
    let d = planted(
        "history",
        &[
            ("src/a.rs", &format!("//! ok\n// {word} 17: fixed\n")),
            (
                "docs/b.md",
                &format!("# b\n\nsee {} #4\n", word.to_lowercase()),
            ),
            (
                "README.md",
                &format!("the {}s 15 and 16\n", word.to_lowercase()),
            ),
            (
                "bench/c.py",
                "# a tissue 3 ply, issues of note, issue-free\n",
            ),
        ],
    );
    let p = check_history(&d);
    expect(&p, "src/a.rs:2", "names an issue");
    expect(&p, "docs/b.md:3", "names an issue");
    expect(&p, "README.md:1", "names an issue");
    assert_eq!(p.len(), 3, "{p:#?}");
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_circle_is_refused_by_the_table() {
    let mut rules = table();
    rules
        .get_mut("core")
        .unwrap()
        .may_import
        .push("host".into());
    assert!(reaches(&rules, "core", "core", &mut Vec::new()));
}

#[test]
fn the_lexer_keeps_lines_and_drops_comments_and_literals() {
    let code =
        code_lines("a /* x\n y */ b // c\nlet s = r#\"q \"x\" \"#;\nlet c = '{'; fn f<'a>() {}\n");
    assert_eq!(code[0], "a ");
    assert_eq!(code[1], " b ");
    assert_eq!(code[2], "let s = \"\";");
    assert_eq!(code[3], "let c = ' '; fn f<'a>() {}");
}
