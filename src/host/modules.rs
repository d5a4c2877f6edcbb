//! Module discovery: which directories under `modules_dir` are runnable modules, and
//! with which settings.
//!
//! A module is a directory `<modules_dir>/<Name>/` holding an executable `check`, an
//! optional executable `response` and an optional `module.conf`. A support module
//! (`crd -x Name`) is `<modules_dir>/<Name>/<Name>`. Files are refused the way cron
//! and sudo refuse them: group- or world-writable, or owned by someone other than
//! root or crd's own user; the rule covers the module directory and everything in
//! it, since the scripts source files beside them (`params`). A module with a problem is skipped with one warning per
//! problem; the others run. This file reads directories and metadata, and nothing
//! else: it never runs a module.

use crate::core::config::{self, Config, ModuleSettings};
pub use crate::core::module::Module;
use crate::host::error::{Error, Reason};
use crate::host::files::read_bounded;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Most module directories looked at in one scan; more are reported and ignored.
pub const MAX_MODULES: usize = 1024;

/// Entries of one module directory looked at (files, directories, symlinks), at
/// most; a larger module is refused rather than half checked.
pub const MAX_MODULE_ENTRIES: usize = 1024;
/// Deepest directory level inside a module that is checked.
pub const MAX_MODULE_DEPTH: usize = 8;

/// Why a file or directory may not be trusted: group- or world-writable, or owned
/// by someone other than root or crd's own user. `None` when it is fine. Follows
/// symlinks (what matters is what a script reads).
fn trust_problem(path: &Path, euid: u32) -> Option<String> {
    let md = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return Some(format!("{}: {e}", path.display())),
    };
    let mode = md.permissions().mode();
    if mode & 0o022 != 0 {
        return Some(format!(
            "{} is group- or world-writable (mode {:04o}); refusing to run it",
            path.display(),
            mode & 0o7777
        ));
    }
    if md.uid() != 0 && md.uid() != euid {
        return Some(format!(
            "{} is owned by uid {}, not root or crd's user (uid {euid}); refusing to run it",
            path.display(),
            md.uid()
        ));
    }
    None
}

/// Why `path` cannot be run as a module's executable: missing, not a regular file,
/// or not executable.
fn exec_problem(path: &Path) -> Option<String> {
    let md = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return Some(format!("{}: {e}", path.display())),
    };
    if !md.is_file() {
        return Some(format!("{} is not a regular file", path.display()));
    }
    if md.permissions().mode() & 0o111 == 0 {
        return Some(format!("{} is not executable (chmod +x)", path.display()));
    }
    None
}

/// The trust rule applied to a whole module: the directory itself and everything
/// in it (a `params` file the scripts source, a library directory, the
/// executables), one problem per entry. `.git` is not descended into (crd runs
/// nothing from it); symlinked directories are checked but not followed.
fn tree_problems(dir: &Path, euid: u32) -> Vec<String> {
    fn walk(d: &Path, depth: usize, euid: u32, seen: &mut usize, out: &mut Vec<String>) {
        let mut entries: Vec<_> = match fs::read_dir(d) {
            Ok(e) => e.flatten().map(|e| e.path()).collect(),
            Err(e) => {
                out.push(format!("{}: {e}", d.display()));
                return;
            }
        };
        // Paths in one directory differ, so unstable sorts the same, and
        // its heapsort is smaller than a merge sort for this one type.
        entries.sort_unstable();
        for p in entries {
            if p.file_name().is_some_and(|n| n == ".git") {
                continue;
            }
            *seen += 1;
            if *seen > MAX_MODULE_ENTRIES {
                out.push(format!(
                    "more than {MAX_MODULE_ENTRIES} files in the module; refusing to run it"
                ));
                return;
            }
            out.extend(trust_problem(&p, euid));
            let real_dir = fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
            if real_dir {
                if depth >= MAX_MODULE_DEPTH {
                    out.push(format!(
                        "{} is deeper than {MAX_MODULE_DEPTH} levels; refusing to run it",
                        p.display()
                    ));
                } else {
                    walk(&p, depth + 1, euid, seen, out);
                }
            }
        }
    }
    let mut out: Vec<String> = trust_problem(dir, euid).into_iter().collect();
    walk(dir, 1, euid, &mut 0, &mut out);
    out
}

/// Loads module `name` from `cfg.modules_dir`; `Err` lists every problem found.
/// A module needs an executable `check`, except a subscribed one (`subscribe` in
/// its `module.conf` or its `[module NAME]`), for which every message is a hit.
pub fn load(cfg: &Config, name: &str, euid: u32) -> Result<Module, Vec<String>> {
    if let Err(why) = config::valid_name(name) {
        return Err(vec![format!("bad module name `{name}`: {why}")]);
    }
    let dir = cfg.modules_dir.join(name);
    let mut problems = tree_problems(&dir, euid);
    // The settings only from files that passed the trust rule.
    let own = if problems.is_empty() {
        own_settings(&dir).unwrap_or_else(|mut e| {
            problems.append(&mut e);
            Vec::new()
        })
    } else {
        Vec::new()
    };
    let settings = cfg.module_settings(name, &own);
    // Without the collector the rule keys are refused as they are read.
    if cfg!(feature = "collector")
        && let Some(why) = settings.rule.problem(!settings.subscribe.is_empty())
    {
        // Blamed on the line that set the key: the section wins over module.conf.
        let key = settings.rule.blamed_key();
        let conf = dir.join("module.conf");
        let at = match cfg.section_line_of(name, key) {
            Some(l) => format!("{}:{l}", cfg.path.display()),
            None => match read_bounded(&conf, config::MAX_CONFIG_BYTES)
                .ok()
                .and_then(|t| config::key_line(&t, key))
            {
                Some(l) => format!("{}:{l}", conf.display()),
                None => conf.display().to_string(),
            },
        };
        problems.push(format!("{at}: key `{key}`: {why}"));
    }
    let check = dir.join("check");
    let check = if check.exists() {
        problems.extend(exec_problem(&check));
        Some(check)
    } else {
        // A register without `subscribe` was refused above, for what it is.
        if settings.subscribe.is_empty() && settings.rule.register.is_none() {
            problems.push(format!("{} is missing", check.display()));
        }
        None
    };
    let response = dir.join("response");
    let response = if response.exists() {
        problems.extend(exec_problem(&response));
        Some(response)
    } else {
        None
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Module {
        name: name.to_string(),
        settings,
        dir,
        check,
        response,
    })
}

/// Whether the directory of module `name` is one: it has a `check`, or it
/// subscribes or keeps a register (its `module.conf` or `[module NAME]` sets
/// `subscribe` or `register`; `load` then refuses a register without
/// `subscribe`, rather than the module being passed over in silence). Anything
/// else (a support module alone) is passed over.
fn is_module(cfg: &Config, dir: &Path, name: &str) -> bool {
    if dir.join("check").exists() {
        return true;
    }
    let in_section = cfg.sections.iter().any(|s| {
        s.name == name
            && s.overrides.iter().any(|o| {
                matches!(
                    o,
                    config::Setting::Subscribe(_) | config::Setting::Register(_)
                )
            })
    });
    in_section
        || read_bounded(&dir.join("module.conf"), config::MAX_CONFIG_BYTES).is_ok_and(|t| {
            t.lines().any(|l| {
                matches!(
                    l.trim_start().split(['=', ' ']).next(),
                    Some("subscribe" | "register")
                )
            })
        })
}

/// The module's own `module.conf` overrides (none when the file is absent). The
/// caller has checked the module's files (`tree_problems`).
fn own_settings(dir: &Path) -> Result<Vec<config::Setting>, Vec<String>> {
    let path = dir.join("module.conf");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = read_bounded(&path, config::MAX_CONFIG_BYTES)
        .map_err(|e| vec![format!("{}: {e}", path.display())])?;
    config::parse_module_conf(&text, &path).map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
}

/// What a scan of `modules_dir` found.
#[derive(Debug, Default)]
pub struct Scan {
    /// The runnable modules, sorted by name.
    pub modules: Vec<Module>,
    /// One line per problem (a refused module's file, a section naming no module).
    pub warnings: Vec<String>,
    /// Modules that have a `check` but were refused.
    pub refused: Vec<String>,
}

/// Scans `modules_dir`. A directory without `check` (a pure support module) is not
/// a scheduled module and is passed over silently.
pub fn discover(cfg: &Config, euid: u32) -> Scan {
    let mut warnings = Vec::new();
    let entries = match fs::read_dir(&cfg.modules_dir) {
        Ok(e) => e,
        Err(e) => {
            warnings.push(format!("modules_dir {}: {e}", cfg.modules_dir.display()));
            return Scan {
                warnings,
                ..Scan::default()
            };
        }
    };
    let mut names = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Hidden entries (staging dirs of installs, editors' files) are not modules.
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        if names.len() == MAX_MODULES {
            warnings.push(format!(
                "more than {MAX_MODULES} module directories in {}; ignoring the rest",
                cfg.modules_dir.display()
            ));
            break;
        }
        names.push(name);
    }
    names.sort();
    let mut modules = Vec::new();
    let mut refused = Vec::new();
    for name in names {
        let dir = cfg.modules_dir.join(&name);
        if !is_module(cfg, &dir, &name) {
            continue;
        }
        match load(cfg, &name, euid) {
            Ok(m) => modules.push(m),
            Err(problems) => {
                for p in problems {
                    warnings.push(format!("module {name}: {p}; module skipped"));
                }
                refused.push(name);
            }
        }
    }
    for sec in &cfg.sections {
        if !modules.iter().any(|m| m.name == sec.name) {
            warnings.push(format!(
                "{}:{}: [module {}] names no runnable module in {}",
                cfg.path.display(),
                sec.line,
                sec.name,
                cfg.modules_dir.display()
            ));
        }
    }
    Scan {
        modules,
        warnings,
        refused,
    }
}

/// The executable and settings of support module `name` (`crd -x`).
pub fn support(cfg: &Config, name: &str, euid: u32) -> Result<(PathBuf, ModuleSettings), Error> {
    if let Err(why) = config::valid_name(name) {
        return Err(Reason::BadSupportName(name.to_string(), why).into());
    }
    let dir = cfg.modules_dir.join(name);
    let exe = dir.join(name);
    if !exe.exists() {
        return Err(Reason::NoSupport(name.to_string(), exe).into());
    }
    let mut problems = tree_problems(&dir, euid);
    problems.extend(exec_problem(&exe));
    if !problems.is_empty() {
        return Err(Reason::Problems(problems.join("; ")).into());
    }
    let own = own_settings(&dir).map_err(|e| Reason::Problems(e.join("; ")))?;
    Ok((exe, cfg.module_settings(name, &own)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn tmp(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("crd-mod-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }

    fn file(path: &Path, text: &str, mode: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn cfg(dir: &Path, text: &str) -> Config {
        let mut c = config::parse_config(text, Path::new("crd.conf")).unwrap();
        c.modules_dir = dir.to_path_buf();
        c
    }

    #[test]
    fn discovery_skips_broken_modules_with_one_warning_each() {
        let t = tmp("disc");
        let d = &t.0;
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        file(&d.join("Good/check"), "#!/bin/sh\nexit 1\n", 0o755);
        file(&d.join("Good/response"), "#!/bin/sh\n", 0o755);
        file(&d.join("Good/module.conf"), "interval = 7\n", 0o644);
        file(&d.join("NoExec/check"), "#!/bin/sh\n", 0o644);
        file(&d.join("Writable/check"), "#!/bin/sh\n", 0o777);
        file(&d.join("BadConf/check"), "#!/bin/sh\n", 0o755);
        file(&d.join("BadConf/module.conf"), "intreval = 7\n", 0o644);
        file(&d.join("BadResp/check"), "#!/bin/sh\n", 0o755);
        file(&d.join("BadResp/response"), "#!/bin/sh\n", 0o600);
        file(&d.join("SupportOnly/SupportOnly"), "#!/bin/sh\n", 0o755);
        file(&d.join(".staging/check"), "#!/bin/sh\n", 0o755);
        for m in [
            "Good",
            "NoExec",
            "Writable",
            "BadConf",
            "BadResp",
            "SupportOnly",
            ".staging",
        ] {
            fs::set_permissions(d.join(m), fs::Permissions::from_mode(0o755)).unwrap();
        }
        let c = cfg(
            d,
            "[module Good]\ntimeout = 3\n[module Ghost]\ntimeout = 1\n",
        );
        let scan = discover(&c, crate::child::sys::euid());
        let (mods, warns) = (scan.modules, scan.warnings);
        assert_eq!(scan.refused, ["BadConf", "BadResp", "NoExec", "Writable"]);
        assert_eq!(mods.len(), 1, "{warns:#?}");
        let g = &mods[0];
        assert_eq!(g.name, "Good");
        assert_eq!(g.settings.interval.as_secs(), 7);
        assert_eq!(g.settings.timeout.as_secs(), 3);
        assert!(g.response.is_some());
        assert_eq!(warns.len(), 5, "{warns:#?}");
        let all = warns.join("\n");
        assert!(
            all.contains("module NoExec:") && all.contains("is not executable"),
            "{all}"
        );
        assert!(
            all.contains("module Writable:") && all.contains("world-writable (mode 0777)"),
            "{all}"
        );
        assert!(
            all.contains("module BadConf:")
                && all.contains("module.conf:1: key `intreval`: unknown key"),
            "{all}"
        );
        assert!(
            all.contains("module BadResp:") && all.contains("response is not executable"),
            "{all}"
        );
        assert!(
            all.contains("crd.conf:3: [module Ghost] names no runnable module"),
            "{all}"
        );
    }

    /// A subscribed module needs no check (every message is a hit) and
    /// is not scheduled.
    #[test]
    fn a_subscribed_module_needs_no_check() {
        if !cfg!(feature = "collector") {
            return; // `subscribe` is a config error there (core::config's tests).
        }
        let t = tmp("subscribed");
        let d = &t.0;
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        file(
            &d.join("Sink/module.conf"),
            "subscribe = crd/+/event/#\n",
            0o644,
        );
        file(&d.join("Sink/response"), "#!/bin/sh\n", 0o755);
        file(&d.join("BySection/response"), "#!/bin/sh\n", 0o755);
        file(&d.join("SupportOnly/SupportOnly"), "#!/bin/sh\n", 0o755);
        for m in ["Sink", "BySection", "SupportOnly"] {
            fs::set_permissions(d.join(m), fs::Permissions::from_mode(0o755)).unwrap();
        }
        let c = cfg(d, "[module BySection]\nsubscribe = a/+\n");
        let scan = discover(&c, crate::child::sys::euid());
        assert!(scan.warnings.is_empty(), "{:?}", scan.warnings);
        let names: Vec<_> = scan.modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["BySection", "Sink"]);
        for m in &scan.modules {
            assert!(
                m.check.is_none() && m.subscribed() && !m.scheduled(),
                "{m:?}"
            );
        }
    }

    #[test]
    fn missing_modules_dir_is_a_warning_not_a_crash() {
        let c = cfg(Path::new("/nonexistent/crd-modules"), "");
        let scan = discover(&c, 0);
        let (mods, warns) = (scan.modules, scan.warnings);
        assert!(mods.is_empty());
        assert!(warns[0].starts_with("modules_dir /nonexistent/crd-modules:"));
    }

    #[test]
    fn support_modules_refuse_bad_names_and_missing_files() {
        let t = tmp("support");
        let d = &t.0;
        file(&d.join("notify/notify"), "#!/bin/sh\n", 0o755);
        fs::set_permissions(d.join("notify"), fs::Permissions::from_mode(0o755)).unwrap();
        let c = cfg(d, "");
        assert!(support(&c, "notify", crate::child::sys::euid()).is_ok());
        for bad in ["../x", ".hidden", "a/b", ""] {
            assert!(
                support(&c, bad, 0)
                    .unwrap_err()
                    .to_string()
                    .starts_with("bad support module name"),
                "{bad}"
            );
        }
        assert!(
            support(&c, "absent", 0)
                .unwrap_err()
                .to_string()
                .starts_with("no support module `absent`")
        );
    }
}
