//! The one recipe for every child crd starts: which program, with which arguments,
//! in which directory, with which `CRD_*` environment, limits, streams, timeout and
//! output bound. The daemon's checks and responses, `crd check`, `crd -x`, the
//! `install`/`rollback` scripts and the tools `crd --install` runs (git, wget, gzip)
//! are all built here, so a new variable or limit reaches every caller at once.
//! `spawn` turns a recipe into a process; `run` follows it to its end.
//!
//! Every module child gets `CRD_CONFIG`, `CRD_MODULE` and `CRD_NODE`; a response
//! also `CRD_CHECK_OUTPUT` (at most 16 KiB of it) and `CRD_CHECK_CODE`, and the
//! check's whole output on stdin; an install script `CRD_MODULE_DIR` and
//! `CRD_STEP`. Fetch tools get no `CRD_*` variables, only `HOME`,
//! `GIT_TERMINAL_PROMPT=0` (never wait for a password) and `LC_ALL=C`. `PATH` is
//! added by `spawn` from crd's own.

use crate::child::sys::Limits;
use crate::core::config::ModuleSettings;
use crate::core::module::{Module, Role};
use crate::core::output::head_tail;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Open descriptors a child may hold (`RLIMIT_NOFILE`).
pub const CHILD_OPEN_FILES: u32 = 1024;

/// How the child's standard streams are wired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Streams {
    /// stdin `/dev/null` (or the recipe's input); stdout and stderr into one pipe
    /// read by the poll loop.
    Capture,
    /// All three inherited from crd (`crd -x`).
    Inherit,
    /// stdin as for `Capture`, stdout into this open file (crd keeps owning it), stderr
    /// into the pipe read by the loop (`gzip -dc` for `crd --install`).
    StdoutTo(std::os::fd::RawFd),
}

/// Everything needed to start one child and follow it to its end.
#[derive(Clone, Debug)]
pub struct Recipe {
    /// The module (or, for a fetch tool, the module being installed), for logs.
    pub module: String,
    pub role: Role,
    /// Whom its end is for (`Finished::purpose`).
    pub purpose: Purpose,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub dir: PathBuf,
    /// Variables besides `PATH`; the rest of crd's environment is not passed on.
    pub env: Vec<(&'static str, OsString)>,
    pub limits: Limits,
    pub streams: Streams,
    /// A process group of its own (always, except `crd -x` on a terminal, where the
    /// child must stay in the terminal's foreground group).
    pub own_group: bool,
    pub timeout: Duration,
    /// Output kept, bytes (head and tail).
    pub output_limit: u32,
    /// What the child reads on stdin (none: `/dev/null`).
    pub input: Option<Vec<u8>>,
    /// What the child reads on descriptor 3 (`CRD_CHECK_OUTPUT_FILE`, a
    /// response's check output); none: descriptor 3 is not open.
    pub fd3: Option<Vec<u8>>,
}

/// Whom a run's end is for: the daemon hands each `Finished` to the part that
/// asked for the run by this value, not by asking every part whether it owns
/// the run's id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Purpose {
    /// A module's check or response on the schedule (the edge's lifecycle), and
    /// every run outside the daemon (`crd -x`, `crd check`, install tools).
    #[default]
    Module,
    /// The collector's run of a journal record; the tag is the collector's own.
    Collect(u32),
    /// The remote command running (one at a time).
    Command,
    /// `crd resolve NAME`: the broker's address.
    Resolve,
}

/// A tool `crd --install` runs for a module (git, a downloader, gzip): what
/// `Recipe::tool` takes besides the module's name and settings.
pub struct Tool<'a> {
    pub program: &'a Path,
    pub args: Vec<OsString>,
    /// Where it runs (the fetch's work directory).
    pub dir: &'a Path,
    /// Bytes per file it writes (`RLIMIT_FSIZE`), instead of the module's.
    pub file_limit: u64,
    pub timeout: Duration,
    pub streams: Streams,
}

/// Bytes of the check's output passed in `CRD_CHECK_OUTPUT` (head and tail, with
/// a marker): Linux refuses one environment string over 128 KiB, and all of argv
/// and the environment together over a quarter of the stack limit, so the variable
/// stays small; the whole capture is on the response's descriptor 3
/// (`CHECK_OUTPUT_FILE`), and on the edge on its stdin too.
pub const CHECK_OUTPUT_ENV_BYTES: usize = 16 * 1024;

/// Where every response reads its check's whole output (up to `output_limit`):
/// descriptor 3, a file of its own positioned at its start.
pub const CHECK_OUTPUT_FILE: &str = "/dev/fd/3";

/// What every module child is told about the crd that runs it.
#[derive(Clone, Copy, Debug)]
pub struct Host<'a> {
    /// The config file (`CRD_CONFIG`).
    pub config: &'a Path,
    /// This node's name (`CRD_NODE`).
    pub node: &'a str,
}

/// The rlimits of a module's children.
pub fn limits(s: &ModuleSettings) -> Limits {
    Limits {
        address_space: s.memory_limit,
        cpu_seconds: s.cpu_limit,
        open_files: CHILD_OPEN_FILES,
        file_size: s.file_limit,
        processes: s.process_limit,
    }
}

impl Recipe {
    /// A captured child in its own process group, with the module's limits,
    /// `timeout` and `output_limit`, and the three `CRD_*` variables of `host`.
    fn module_child(
        host: Host<'_>,
        name: &str,
        role: Role,
        program: &Path,
        dir: &Path,
        s: &ModuleSettings,
    ) -> Recipe {
        Recipe {
            module: name.to_string(),
            role,
            purpose: Purpose::Module,
            program: program.to_path_buf(),
            args: Vec::new(),
            dir: dir.to_path_buf(),
            env: vec![
                ("CRD_CONFIG", host.config.into()),
                ("CRD_MODULE", name.into()),
                ("CRD_NODE", host.node.into()),
            ],
            limits: limits(s),
            streams: Streams::Capture,
            own_group: true,
            timeout: s.timeout,
            output_limit: s.output_limit,
            input: None,
            fd3: None,
        }
    }

    /// A module's check (the daemon and `crd check`); `None` for a subscribed
    /// module without one.
    pub fn check(host: Host<'_>, m: &Module) -> Option<Recipe> {
        let program = m.check.as_deref()?;
        Some(Recipe::module_child(
            host,
            &m.name,
            Role::Check,
            program,
            &m.dir,
            &m.settings,
        ))
    }

    /// A module's response to a check that exited `code` printing `output` (the
    /// capture, at most `output_limit` bytes): the whole of it on descriptor 3
    /// (`CRD_CHECK_OUTPUT_FILE`, as for a collector's response) and on stdin, and
    /// at most `CHECK_OUTPUT_ENV_BYTES` of it in `CRD_CHECK_OUTPUT`. `None` when the
    /// module has no response.
    pub fn response(host: Host<'_>, m: &Module, output: String, code: i32) -> Option<Recipe> {
        let program = m.response.as_deref()?;
        let mut r =
            Recipe::module_child(host, &m.name, Role::Response, program, &m.dir, &m.settings);
        let env = head_tail(&output, CHECK_OUTPUT_ENV_BYTES).into_owned();
        r.env.push(("CRD_CHECK_OUTPUT", env.into()));
        r.env.push(("CRD_CHECK_CODE", code.to_string().into()));
        r.env
            .push(("CRD_CHECK_OUTPUT_FILE", CHECK_OUTPUT_FILE.into()));
        let output = output.into_bytes();
        r.fd3 = Some(output.clone());
        r.input = Some(output);
        Some(r)
    }

    /// A subscribed module's check for one message: the payload on stdin, and the
    /// message's `CRD_*` variables (`env`) beside the module's three. `None` when
    /// the module has no check (every message is a hit).
    pub fn message_check(
        host: Host<'_>,
        m: &Module,
        env: &[(&'static str, OsString)],
        payload: &[u8],
    ) -> Option<Recipe> {
        let mut r = Recipe::check(host, m)?;
        r.env.extend(env.iter().cloned());
        r.input = Some(payload.to_vec());
        Some(r)
    }

    /// A subscribed module's response to one message: the payload on stdin (the
    /// message is what a collector's module acts on), the message's variables, and
    /// the check's output as on the edge: whole on descriptor 3
    /// (`CRD_CHECK_OUTPUT_FILE`), at most `CHECK_OUTPUT_ENV_BYTES` of it in
    /// `CRD_CHECK_OUTPUT`, with `CRD_CHECK_CODE`. `None` without a response.
    pub fn message_response(
        host: Host<'_>,
        m: &Module,
        env: &[(&'static str, OsString)],
        payload: &[u8],
        check_output: &str,
        code: i32,
    ) -> Option<Recipe> {
        let mut r = Recipe::response(host, m, String::new(), code)?;
        r.env.retain(|(k, _)| *k != "CRD_CHECK_OUTPUT");
        let out = head_tail(check_output, CHECK_OUTPUT_ENV_BYTES).into_owned();
        r.env.push(("CRD_CHECK_OUTPUT", out.into()));
        r.env.extend(env.iter().cloned());
        r.input = Some(payload.to_vec());
        r.fd3 = Some(check_output.as_bytes().to_vec());
        Some(r)
    }

    /// Support module `name` (`crd -x NAME ARGS...`): stdio is crd's own. On a
    /// terminal the child stays in crd's process group, so it can read the terminal.
    pub fn support(
        host: Host<'_>,
        name: &str,
        exe: &Path,
        s: &ModuleSettings,
        args: Vec<OsString>,
        on_terminal: bool,
    ) -> Recipe {
        let dir = exe.parent().unwrap_or(Path::new("/"));
        let mut r = Recipe::module_child(host, name, Role::Support, exe, dir, s);
        r.args = args;
        r.streams = Streams::Inherit;
        r.own_group = !on_terminal;
        r
    }

    /// Support module `name` run for remote command `id` (from `from`): as `crd -x
    /// NAME ARGS...` runs it (argv, no shell; the module's limits and `timeout`),
    /// but captured for the reply and in its own process group, with
    /// `CRD_COMMAND_ID` and `CRD_COMMAND_FROM` beside the module's three variables.
    pub fn command(
        host: Host<'_>,
        name: &str,
        exe: &Path,
        s: &ModuleSettings,
        args: &[String],
        id: &str,
        from: &str,
    ) -> Recipe {
        let dir = exe.parent().unwrap_or(Path::new("/"));
        let mut r = Recipe::module_child(host, name, Role::Support, exe, dir, s);
        r.args = args.iter().map(OsString::from).collect();
        r.purpose = Purpose::Command;
        r.env.push(("CRD_COMMAND_ID", id.into()));
        r.env.push(("CRD_COMMAND_FROM", from.into()));
        r
    }

    /// The `install` or `rollback` script (`step`) of module `name`, run in its
    /// staging directory before it is moved to `final_dir`.
    pub fn install_step(
        host: Host<'_>,
        name: &str,
        staged: &Path,
        final_dir: &Path,
        step: &str,
        s: &ModuleSettings,
    ) -> Recipe {
        let mut r = Recipe::module_child(host, name, Role::Support, &staged.join(step), staged, s);
        r.env.push(("CRD_MODULE_DIR", final_dir.into()));
        r.env.push(("CRD_STEP", step.into()));
        r
    }

    /// `crd resolve NAME` as a child of the daemon: name resolution blocks for as
    /// long as the resolver takes, so it never runs in the loop. `/proc/self/exe`
    /// is this very binary even after an upgrade replaced the file; `-c /dev/null`
    /// because the child needs no config (and must not fail on one). Small limits,
    /// no `CRD_*` variables, at most `timeout`.
    pub fn resolver(name: &str, timeout: Duration) -> Recipe {
        Recipe {
            module: "(resolve)".to_string(),
            role: Role::Support,
            purpose: Purpose::Resolve,
            program: PathBuf::from("/proc/self/exe"),
            args: ["-c", "/dev/null", "resolve", name]
                .iter()
                .map(OsString::from)
                .collect(),
            dir: PathBuf::from("/"),
            env: Vec::new(),
            limits: Limits {
                address_space: 256 << 20,
                cpu_seconds: 5,
                open_files: 64,
                file_size: 0,
                processes: 0,
            },
            streams: Streams::Capture,
            own_group: true,
            timeout,
            output_limit: 4096,
            input: None,
            fd3: None,
        }
    }

    /// A tool `crd --install` runs for module `name` (git, a downloader, gzip):
    /// the module's limits with the tool's `file_limit` bytes per written file, at
    /// least 4 KiB of output kept (for the error message), and the tool's `timeout`.
    pub fn tool(name: &str, s: &ModuleSettings, t: Tool<'_>) -> Recipe {
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
        let mut limits = limits(s);
        limits.file_size = t.file_limit;
        Recipe {
            module: name.to_string(),
            role: Role::Support,
            purpose: Purpose::Module,
            program: t.program.to_path_buf(),
            args: t.args,
            dir: t.dir.to_path_buf(),
            env: vec![
                ("HOME", home),
                ("GIT_TERMINAL_PROMPT", "0".into()),
                ("LC_ALL", "C".into()),
            ],
            limits,
            streams: t.streams,
            own_group: true,
            timeout: t.timeout,
            output_limit: s.output_limit.max(4096),
            input: None,
            fd3: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module() -> Module {
        Module {
            name: "Disk".into(),
            dir: "/m/Disk".into(),
            check: Some("/m/Disk/check".into()),
            response: Some("/m/Disk/response".into()),
            settings: ModuleSettings::default(),
        }
    }

    fn host() -> Host<'static> {
        Host {
            config: Path::new("/etc/CRD/crd.conf"),
            node: "r1",
        }
    }

    fn var<'a>(r: &'a Recipe, k: &str) -> Option<&'a str> {
        r.env
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn every_module_child_gets_the_same_three_variables_and_limits() {
        let m = module();
        let s = &m.settings;
        let all = [
            Recipe::check(host(), &m).unwrap(),
            Recipe::response(host(), &m, "out".into(), 0).unwrap(),
            Recipe::support(host(), "Disk", Path::new("/m/Disk/Disk"), s, vec![], false),
            Recipe::install_step(
                host(),
                "Disk",
                Path::new("/m/.staging-Disk"),
                &m.dir,
                "install",
                s,
            ),
        ];
        for r in &all {
            assert_eq!(var(r, "CRD_CONFIG"), Some("/etc/CRD/crd.conf"), "{r:?}");
            assert_eq!(var(r, "CRD_MODULE"), Some("Disk"), "{r:?}");
            assert_eq!(var(r, "CRD_NODE"), Some("r1"), "{r:?}");
            assert_eq!(r.limits, limits(s), "{r:?}");
            assert_eq!(r.timeout, s.timeout);
        }
    }

    #[test]
    fn a_response_carries_the_checks_output_and_code() {
        let m = module();
        let r = Recipe::response(host(), &m, "disk 95%".into(), 0).unwrap();
        assert_eq!(r.program, Path::new("/m/Disk/response"));
        assert_eq!(r.dir, Path::new("/m/Disk"));
        assert_eq!(var(&r, "CRD_CHECK_OUTPUT"), Some("disk 95%"));
        assert_eq!(var(&r, "CRD_CHECK_CODE"), Some("0"));
        assert_eq!(r.input.as_deref(), Some(&b"disk 95%"[..]));
        let mut none = module();
        none.response = None;
        assert!(Recipe::response(host(), &none, String::new(), 0).is_none());
        assert_eq!(
            var(&Recipe::check(host(), &m).unwrap(), "CRD_CHECK_OUTPUT"),
            None
        );
    }

    /// A 300,000-byte capture in one environment string would keep the response
    /// from starting (E2BIG): the variable is cut, the whole capture is on stdin.
    #[test]
    fn a_large_check_output_goes_to_stdin_and_the_variable_stays_small() {
        let m = module();
        let big = "x".repeat(300_000);
        let r = Recipe::response(host(), &m, big.clone(), 0).unwrap();
        let env = var(&r, "CRD_CHECK_OUTPUT").unwrap();
        assert!(env.len() <= CHECK_OUTPUT_ENV_BYTES + 64, "{}", env.len());
        assert!(env.contains("bytes cut"));
        assert_eq!(r.input.as_deref(), Some(big.as_bytes()));
    }

    #[test]
    fn support_on_a_terminal_stays_in_crds_group_and_inherits_stdio() {
        let m = module();
        let r = Recipe::support(
            host(),
            "n",
            Path::new("/m/n/n"),
            &m.settings,
            vec!["-f".into()],
            true,
        );
        assert!(!r.own_group);
        assert_eq!(r.streams, Streams::Inherit);
        assert_eq!(r.dir, Path::new("/m/n"));
        assert_eq!(r.args, vec![OsString::from("-f")]);
        let r = Recipe::support(host(), "n", Path::new("/m/n/n"), &m.settings, vec![], false);
        assert!(r.own_group);
    }

    #[test]
    fn install_steps_say_where_the_module_will_live() {
        let m = module();
        let r = Recipe::install_step(
            host(),
            "Disk",
            Path::new("/m/.staging-Disk"),
            Path::new("/m/Disk"),
            "rollback",
            &m.settings,
        );
        assert_eq!(r.program, Path::new("/m/.staging-Disk/rollback"));
        assert_eq!(r.dir, Path::new("/m/.staging-Disk"));
        assert_eq!(var(&r, "CRD_MODULE_DIR"), Some("/m/Disk"));
        assert_eq!(var(&r, "CRD_STEP"), Some("rollback"));
    }

    #[test]
    fn tools_get_no_crd_variables_and_their_own_file_limit() {
        let s = ModuleSettings {
            output_limit: 64,
            ..ModuleSettings::default()
        };
        let tool = Tool {
            program: Path::new("/usr/bin/git"),
            args: vec![],
            dir: Path::new("/m/.fetch-Disk"),
            file_limit: 12345,
            timeout: Duration::from_secs(300),
            streams: Streams::Capture,
        };
        let r = Recipe::tool("Disk", &s, tool);
        assert!(r.env.iter().all(|(k, _)| !k.starts_with("CRD_")), "{r:?}");
        assert_eq!(var(&r, "GIT_TERMINAL_PROMPT"), Some("0"));
        assert_eq!(r.limits.file_size, 12345);
        assert_eq!(r.limits.address_space, s.memory_limit);
        assert_eq!(r.output_limit, 4096, "enough output for an error message");
        assert_eq!(r.timeout, Duration::from_secs(300));
    }
}
