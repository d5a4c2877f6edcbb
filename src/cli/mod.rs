//! The command line: raw arguments turned into one validated action, once.
//!
//! `crd` (daemon), `crd -x NAME [ARGS...]`, the commands of `COMMANDS` (`check`,
//! `status`, `emit`, `dump`, `resolve`, `fleet`, `register`, `send`, `replies`),
//! and the options of `TOP` (`--check-config`, `--install NAME[@REF] [-l
//! LOCATION]`, `--list`, `--remove NAME`, `--version`, `--help`); docs/cli.md
//! documents each, and tests/docs.rs holds it to these two tables. Exit codes: 0
//! ok, 1 failure, 2 usage or config error, and those of `crd emit` and `crd send`
//! below; every message goes to stderr and says what and where. `-x` is
//! taken apart by hand before `args.rs` parses the rest, so that a support
//! module's own arguments (`-f`, `--`, anything) reach it untouched.

use crate::child::poller::run_once;
use crate::child::recipe::{Host, Recipe};
use crate::child::sys;
#[cfg(feature = "collector")]
use crate::command::envelope::{Answer, Command, Refusal, Reply};
use crate::core::config::{self, Config};
use crate::core::decide::{self, Outcome};
use crate::core::event::Cause;
use crate::daemon::Daemon;
use crate::host::control::{CallError, Request, Response, call};
use crate::host::files::node_name;
use crate::host::modules;
use crate::install::Failure;
use args::{Opt, Parsed, Pos, Spec, Stop};
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::PathBuf;

mod args;

/// `println!`/`eprintln!` that drop output to a closed stream (`crd status | head`)
/// instead of panicking on EPIPE. Each is a call of one function (`line`), so
/// the stream's handle and the dropped result are not repeated at every one
/// of the 60-odd messages (1.2 KB of MIPS code).
macro_rules! out {
    ($($t:tt)*) => {
        line(false, format_args!($($t)*))
    };
}
macro_rules! err {
    ($($t:tt)*) => {
        line(true, format_args!($($t)*))
    };
}

/// One line to stdout, or stderr with `to_stderr`; a write error is dropped.
#[inline(never)]
fn line(to_stderr: bool, text: std::fmt::Arguments) {
    let text = format!("{text}\n");
    let _ = if to_stderr {
        std::io::stderr().write_all(text.as_bytes())
    } else {
        stdout().write_all(text.as_bytes())
    };
}

/// Standard output, unbuffered: each write goes out at once, through a
/// duplicate of descriptor 1 (nothing is written if that fails). crd writes
/// whole lines or whole reports, so std's line buffer for stdout (`Stdout`'s
/// `Write`, about 3.8 KB of MIPS code) buys nothing.
fn stdout() -> Box<dyn Write> {
    use std::os::fd::AsFd;
    match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(std::fs::File::from(fd)),
        Err(_) => Box::new(std::io::sink()),
    }
}

/// At most `limit` bytes of standard input, unbuffered, through a duplicate of
/// descriptor 0 (std's buffered `Stdin` is about 1.9 KB of MIPS code for one
/// read); no descriptor 0 reads as empty, as with std's.
fn read_stdin(limit: u64) -> std::io::Result<Vec<u8>> {
    use std::os::fd::AsFd;
    let mut b = Vec::new();
    match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => std::fs::File::from(fd).take(limit).read_to_end(&mut b)?,
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => 0,
        Err(e) => return Err(e),
    };
    Ok(b)
}

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAIL: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
/// `crd emit` only: the request reached the daemon but no answer came in time, so
/// whether the record was spooled is not known.
pub const EXIT_UNKNOWN: i32 = 3;
/// `crd send --wait`: the node answered `interrupted` (its run was cut by a crash).
pub const EXIT_INTERRUPTED: i32 = 75;
/// `crd send --wait`: the node refused the command (not allowed, unknown module,
/// bad signature, malformed, busy).
pub const EXIT_REFUSED: i32 = 77;
/// `crd send --wait`: the node refused the command as expired.
pub const EXIT_EXPIRED: i32 = 78;
/// `crd send --wait`: no final answer within the wait.
pub const EXIT_NO_ANSWER: i32 = 124;

/// A switch.
const fn opt(long: &'static str, short: Option<char>, help: &'static str) -> Opt {
    Opt {
        long,
        short,
        value: None,
        help,
    }
}

/// An option with a value, named after the option in usage (`--spool <spool>`).
const fn val(long: &'static str, short: Option<char>, help: &'static str) -> Opt {
    Opt {
        value: Some(long),
        ..opt(long, short, help)
    }
}

const fn pos(name: &'static str, required: bool, help: &'static str) -> Pos {
    Pos {
        name,
        required,
        greedy: false,
        help,
    }
}

const fn cmd(
    name: &'static str,
    about: &'static str,
    opts: &'static [Opt],
    pos: &'static [Pos],
) -> Spec {
    Spec {
        name,
        about,
        opts,
        pos,
        subcommands: &[],
    }
}

/// The commands, in `--help`'s order; `command` maps them to `Cmd`.
static COMMANDS: [Spec; 9] = [
    cmd(
        "check",
        "run one module's check (and its response, if the check fires) once, in the \
         foreground, and print what happened",
        &[],
        &[pos("name", true, "the module's name")],
    ),
    cmd(
        "status",
        "ask the running daemon for its state: modules, last outcomes, next runs, counters",
        &[opt(
            "json",
            None,
            "one JSON object instead of the lines and the table",
        )],
        &[],
    ),
    cmd(
        "emit",
        "queue an event through the running daemon: it is published at \
         <prefix>/<node>/SUFFIX. Exits 0 once the record is in the spool file (with \
         --sync: on disk), 1 if the daemon is not running or refused it, 2 on bad input, \
         3 if the daemon took the request but did not answer in time (outcome unknown).",
        &[opt(
            "sync",
            None,
            "return only once the record is on disk (fdatasync), not just in the file",
        )],
        &[
            pos(
                "suffix",
                true,
                "topic suffix: levels of letters, digits, `_`, `.`, `-` separated by `/`",
            ),
            pos(
                "message",
                false,
                "the message; `-` reads it from stdin; none: an empty message",
            ),
        ],
    ),
    cmd(
        "dump",
        "print the spool's records not yet acknowledged by the broker, oldest first, one \
         per line: seq, ts_ms, kind, module, code, dur_ms, output. Safe beside a running \
         daemon (reads only).",
        &[val(
            "spool",
            None,
            "spool directory (default: spool_dir from the config)",
        )],
        &[],
    ),
    cmd(
        "resolve",
        "resolve a broker address (host:port, host, [v6]:port) as the daemon does and \
         print one address per line. The daemon runs this as a child, so a resolver that \
         does not answer never holds its loop.",
        &[],
        &[pos("broker", true, "the broker address")],
    ),
    cmd(
        "fleet",
        "ask the running collector for the fleet: each node online or offline, since \
         when, its version, and its last event",
        &[opt("json", None, "one JSON object instead of the table")],
        &[],
    ),
    cmd(
        "register",
        "ask the running collector for a rule module's register: every key and its value \
         (one `KEY VALUE` line each, sorted by key), or one key's value",
        &[],
        &[
            pos(
                "module",
                true,
                "the rule module (a module with `register` in its settings)",
            ),
            pos(
                "key",
                false,
                "one key (a node, a topic, a module, or `*` for `by = all`)",
            ),
        ],
    ),
    cmd(
        "send",
        "send a remote command: run support module MODULE with ARGS on NODE (whose \
         `commands` must list it), signed with command_key_file if the config has one. \
         Handed to the running collector's relay when there is one (it republishes until \
         the node accepts), else published here. NODE may be a pattern (`*`, `?`) over \
         the collector's fleet; --all is every node of it. Options go before NODE. Prints \
         the command's id; with --wait, each reply as it comes (busy is retried, not \
         final), and exits with the remote exit code, or 75 interrupted, 77 refused, 78 \
         expired, 124 no final answer in time (several nodes: 0 only if all exited 0, \
         else 1); 1 if the broker or the daemon cannot be reached, 2 on bad input.",
        &[
            opt(
                "all",
                None,
                "every node of the running collector's fleet (MODULE comes first then)",
            ),
            val(
                "ttl",
                None,
                "how long the command may still start, from now (default 1h, at least 1s)",
            ),
            val(
                "wait",
                None,
                "wait this long for the command's answer (e.g. 30s)",
            ),
        ],
        &[
            pos("node", true, "the node to run it on"),
            pos("module", true, "the support module to run"),
            Pos {
                name: "args",
                required: false,
                greedy: true,
                help: "its arguments, each one argv entry there (no shell)",
            },
        ],
    ),
    cmd(
        "replies",
        "ask the running collector's relay for the commands it sends: one line each, `ID \
         NODE MODULE STATE SENT_MS` (STATE: sending, accepted, done:CODE, refused:WHY, \
         interrupted, unanswered); with ID, the replies kept for it, one JSON object a line",
        &[],
        &[pos("id", false, "one command's id")],
    ),
];

static TOP: Spec = Spec {
    name: "crd",
    about: "crd, the Condition/Response Daemon. Without a command it runs the daemon in \
            the foreground. `crd -x NAME [ARGS...]` runs support module NAME with ARGS and \
            exits with its exit code.",
    opts: &[
        val(
            "config",
            Some('c'),
            "config file (default: $CRD_CONFIG, else /etc/CRD/crd.conf)",
        ),
        opt(
            "verbose",
            Some('v'),
            "log at debug level (overrides log_level)",
        ),
        opt(
            "check-config",
            None,
            "validate the config and the modules, print problems, exit 0 (valid) or 2",
        ),
        opt("version", Some('V'), "print the version and exit"),
        val(
            "install",
            None,
            "install module NAME (or NAME@REF: a tag, branch, commit, or the version of a \
             directory or .tar.gz) from the configured repository, or from -l",
        ),
        val(
            "location",
            Some('l'),
            "with --install: the module's own location (git URL, directory, .tar.gz)",
        ),
        opt(
            "list",
            None,
            "list the modules in modules_dir: version, kind, revision, install time, source",
        ),
        opt(
            "json",
            None,
            "with --list: one JSON array instead of the table",
        ),
        val("remove", None, "remove module NAME from modules_dir"),
        // Listed for --help: `split_x` takes `-x` before the parser sees it.
        val(
            "x",
            Some('x'),
            "run support module NAME with the remaining arguments (see above)",
        ),
    ],
    pos: &[],
    subcommands: &COMMANDS,
};

/// What the command line asks for.
struct Args {
    config: Option<PathBuf>,
    verbose: bool,
    check_config: bool,
    version: bool,
    install: Option<String>,
    location: Option<String>,
    list: bool,
    json: bool,
    remove: Option<String>,
    cmd: Option<Cmd>,
}

impl Args {
    fn from(p: Parsed) -> Args {
        Args {
            config: p.value("config").map(PathBuf::from),
            verbose: p.switch("verbose"),
            check_config: p.switch("check-config"),
            version: p.switch("version"),
            install: p.value("install"),
            location: p.value("location"),
            list: p.switch("list"),
            json: p.switch("json"),
            remove: p.value("remove"),
            cmd: p.sub.map(|(k, c)| command(k, *c)),
        }
    }
}

/// `COMMANDS[k]`'s arguments as a `Cmd` (the parser has checked the required
/// positionals are there).
fn command(k: usize, c: Parsed) -> Cmd {
    let need = |i: usize| c.pos(i).unwrap_or_default();
    match COMMANDS[k].name {
        "check" => Cmd::Check(CheckCmd { name: need(0) }),
        "status" => Cmd::Status(StatusCmd {
            json: c.switch("json"),
        }),
        "emit" => Cmd::Emit(EmitCmd {
            suffix: need(0),
            message: c.pos(1),
            sync: c.switch("sync"),
        }),
        "dump" => Cmd::Dump(DumpCmd {
            spool: c.value("spool").map(PathBuf::from),
        }),
        "resolve" => Cmd::Resolve(ResolveCmd { broker: need(0) }),
        "fleet" => Cmd::Fleet(FleetCmd {
            json: c.switch("json"),
        }),
        "register" => Cmd::Register(RegisterCmd {
            module: need(0),
            key: c.pos(1),
        }),
        "send" => Cmd::Send(SendCmd {
            all: c.switch("all"),
            ttl: c.value("ttl").unwrap_or_else(|| "1h".into()),
            wait: c.value("wait"),
            node: need(0),
            module: need(1),
            args: c.pos.get(2..).map(<[_]>::to_vec).unwrap_or_default(),
        }),
        _ => Cmd::Replies(RepliesCmd { id: c.pos(0) }),
    }
}

enum Cmd {
    Check(CheckCmd),
    Status(StatusCmd),
    Emit(EmitCmd),
    Dump(DumpCmd),
    Resolve(ResolveCmd),
    Fleet(FleetCmd),
    Register(RegisterCmd),
    Send(SendCmd),
    Replies(RepliesCmd),
}

struct RepliesCmd {
    id: Option<String>,
}

#[cfg_attr(not(feature = "collector"), allow(dead_code))]
struct SendCmd {
    all: bool,
    ttl: String,
    wait: Option<String>,
    node: String,
    module: String,
    args: Vec<String>,
}

struct RegisterCmd {
    module: String,
    key: Option<String>,
}

struct FleetCmd {
    json: bool,
}

struct ResolveCmd {
    broker: String,
}

struct EmitCmd {
    suffix: String,
    message: Option<String>,
    sync: bool,
}

struct DumpCmd {
    spool: Option<PathBuf>,
}

struct CheckCmd {
    name: String,
}

struct StatusCmd {
    json: bool,
}

/// Splits `argv` at `-x NAME`: the options before it, the name and its arguments.
fn split_x(argv: &[OsString]) -> (Vec<OsString>, Option<(OsString, Vec<OsString>)>) {
    let mut i = 1;
    while i < argv.len() {
        let a = argv[i].as_os_str();
        if a == "-x" {
            let name = argv.get(i + 1).cloned().unwrap_or_default();
            let rest = argv.get(i + 2..).map(<[_]>::to_vec).unwrap_or_default();
            return (argv[..i].to_vec(), Some((name, rest)));
        }
        // Skip the value of an option that takes one.
        if a == "-c" || a == "--config" {
            i += 1;
        }
        if !a.to_string_lossy().starts_with('-') {
            break; // a subcommand: no -x after it
        }
        i += 1;
    }
    (argv.to_vec(), None)
}

/// Stands for the message `-` of `crd emit`, so the parser takes it as a plain
/// positional; an argument can never hold a NUL byte, so no real message is
/// mistaken for it.
const STDIN_MARKER: &str = "\0stdin";

/// Replaces a bare `-` after `emit SUFFIX` with `STDIN_MARKER`.
fn stdin_marker(mut args: Vec<String>) -> Vec<String> {
    if let Some(i) = args.iter().position(|a| a == "emit") {
        for a in args.iter_mut().skip(i + 2) {
            if a == "-" {
                *a = STDIN_MARKER.into();
            }
        }
    }
    args
}

/// `crd` with `argv`: the exit code.
pub fn main(argv: Vec<OsString>) -> i32 {
    let (head, x) = split_x(&argv);
    let args = match parse_args(&head) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if args.version {
        out!("crd {}", env!("CARGO_PKG_VERSION"));
        return EXIT_OK;
    }
    let cfg = match crate::host::files::load_config(&config_path(args.config.clone())) {
        Ok(c) => c,
        Err(e) => {
            err!("crd: config errors:\n{e}");
            return EXIT_USAGE;
        }
    };
    let level = if args.verbose {
        log::LevelFilter::Debug
    } else {
        cfg.log_level
    };
    crate::host::logger::init(level);

    if let Some((name, rest)) = x {
        return support(&cfg, &name, rest);
    }
    if args.check_config {
        return check_config(&cfg);
    }
    if let Some(code) = manage_modules(&cfg, &args) {
        return code;
    }
    run_command(cfg, args.cmd, args.verbose)
}

/// The options before any `-x` parsed into `Args`; `Err` is the exit code once
/// `--help` or the usage error has been printed.
fn parse_args(head: &[OsString]) -> Result<Args, i32> {
    let strs: Vec<String> = match head.iter().map(|a| a.clone().into_string()).collect() {
        Ok(v) => v,
        Err(a) => {
            err!("crd: argument {a:?} is not valid UTF-8");
            return Err(EXIT_USAGE);
        }
    };
    let strs = stdin_marker(strs);
    let refs: Vec<&str> = strs.iter().map(String::as_str).collect();
    let cmd_name = refs
        .first()
        .map(|s| s.rsplit('/').next().unwrap_or(s))
        .unwrap_or("crd");
    match args::parse(&TOP, cmd_name, refs.get(1..).unwrap_or_default()) {
        Ok(p) => Ok(Args::from(p)),
        Err(Stop::Help(text)) => {
            out!("{text}");
            Err(EXIT_OK)
        }
        Err(Stop::Error(e)) => {
            err!("{e}");
            Err(EXIT_USAGE)
        }
    }
}

/// The config file to read: `-c`, else `$CRD_CONFIG`, else the default, made
/// absolute.
fn config_path(given: Option<PathBuf>) -> PathBuf {
    let config_path = given
        .or_else(|| std::env::var_os("CRD_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_CONFIG));
    // Absolute, so that the paths in it resolve against its directory and
    // children (which run in their module's directory) get a `CRD_CONFIG` that
    // holds there too.
    match std::env::current_dir() {
        Ok(dir) if config_path.is_relative() => dir.join(config_path),
        _ => config_path,
    }
}

/// `--install`, `--remove`, `--list` and the usage errors of their options; `None`
/// when the command line asks for none of them.
fn manage_modules(cfg: &Config, args: &Args) -> Option<i32> {
    let picked = [
        args.install.is_some(),
        args.list,
        args.remove.is_some(),
        args.cmd.is_some(),
    ];
    if picked.iter().filter(|&&p| p).count() > 1 {
        err!("crd: --install, --list, --remove and commands exclude each other");
        return Some(EXIT_USAGE);
    }
    if args.location.is_some() && args.install.is_none() {
        err!("crd: -l LOCATION goes with --install NAME");
        return Some(EXIT_USAGE);
    }
    if let Some(spec) = &args.install {
        let r = crate::install::install(cfg, spec, args.location.as_deref(), &mut stdout());
        return Some(report("install", r));
    }
    if let Some(name) = &args.remove {
        return Some(report("remove", crate::install::remove(cfg, name)));
    }
    if args.json && !args.list {
        err!("crd: --json goes with --list (`crd status --json`, `crd fleet --json`)");
        return Some(EXIT_USAGE);
    }
    if !args.list {
        return None;
    }
    Some(match crate::install::list(cfg, args.json) {
        Ok(text) => {
            let _ = stdout().write_all(text.as_bytes());
            EXIT_OK
        }
        Err(e) => {
            err!("crd: --list: {}", e.message());
            install_exit(&e)
        }
    })
}

/// Runs the command, or the daemon when there is none.
fn run_command(cfg: Config, cmd: Option<Cmd>, verbose: bool) -> i32 {
    match cmd {
        Some(Cmd::Check(c)) => check_once(&cfg, &c.name),
        Some(Cmd::Status(st)) => ask(&cfg, &Request::Status { json: st.json }, false),
        Some(Cmd::Fleet(f)) => ask(&cfg, &Request::Fleet { json: f.json }, false),
        Some(Cmd::Register(r)) => register(&cfg, &r),
        Some(Cmd::Emit(e)) => emit(&cfg, &e),
        Some(Cmd::Send(c)) => send(&cfg, c),
        Some(Cmd::Replies(r)) => match r.id {
            Some(id) if !crate::command::envelope::valid_id(&id) => {
                err!("crd: replies: bad id `{id}`");
                EXIT_USAGE
            }
            id => ask(&cfg, &Request::Replies { id }, true),
        },
        Some(Cmd::Dump(d)) => dump(&cfg, d.spool.as_deref()),
        Some(Cmd::Resolve(r)) => resolve(&r.broker),
        None => run_daemon(cfg, verbose.then_some(log::LevelFilter::Debug)),
    }
}

/// `crd register MODULE [KEY]`: asks the collector for a rule module's register.
fn register(cfg: &Config, r: &RegisterCmd) -> i32 {
    if config::valid_name(&r.module).is_err()
        || r.key.as_deref().is_some_and(|k| k.contains(['\n', '\r']))
    {
        err!("crd: register: bad module name or key");
        return EXIT_USAGE;
    }
    let req = Request::Register {
        module: r.module.clone(),
        key: r.key.clone(),
    };
    ask(cfg, &req, false)
}

/// `crd resolve BROKER`: prints the addresses the daemon would connect to.
fn resolve(broker: &str) -> i32 {
    match crate::mqtt::forward::resolve(broker) {
        Ok(addrs) => {
            for a in addrs {
                out!("{a}");
            }
            EXIT_OK
        }
        Err(e) => {
            err!("crd: resolve {broker}: {e}");
            EXIT_FAIL
        }
    }
}

fn report(what: &str, r: Result<String, Failure>) -> i32 {
    match r {
        Ok(line) => {
            out!("{line}");
            EXIT_OK
        }
        Err(e) => {
            err!("crd: --{what}: {}", e.message());
            install_exit(&e)
        }
    }
}

/// Exit code of a failed `--install`, `--remove` or `--list`.
fn install_exit(e: &Failure) -> i32 {
    match e {
        Failure::Usage(_) => EXIT_USAGE,
        Failure::Failed(_) => EXIT_FAIL,
    }
}

fn run_daemon(cfg: Config, pinned: Option<log::LevelFilter>) -> i32 {
    sys::report_fatal_signals();
    let d = Daemon::new(cfg);
    match d.and_then(|mut d| {
        if let Some(level) = pinned {
            d.pin_log_level(level);
        }
        d.run()
    }) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            log::error!("{e}");
            EXIT_FAIL
        }
    }
}

/// `--check-config`: the config parsed (or `main` already exited 2), then what
/// the daemon would refuse at start although it parsed: a `command_key_file` it
/// cannot use (the daemon then runs with remote commands off, and `crd send`
/// fails), then every module. Either exits 2: the daemon would run the rest, but
/// a deployment gated on this must not ship a router that runs less than it was
/// given. Other warnings (no `modules_dir` yet, a `[module NAME]` for a module not
/// installed, as a package's config may carry) are printed and exit 0.
fn check_config(cfg: &Config) -> i32 {
    let mut refused_key = false;
    if let Some(p) = &cfg.command_key_file {
        // The very check the daemon's commands and `crd send` make.
        if let Err(e) = crate::command::edge::read_key(p) {
            let e = config::ConfigError {
                file: cfg.path.clone(),
                line: crate::host::files::read_bounded(&cfg.path, config::MAX_CONFIG_BYTES)
                    .ok()
                    .and_then(|t| config::key_line(&t, "command_key_file"))
                    .unwrap_or(0),
                key: Some("command_key_file".into()),
                msg: config::Shape::CommandKey(e.to_string()).into(),
            };
            err!("crd: {e}");
            refused_key = true;
        }
    }
    let scan = modules::discover(cfg, sys::euid());
    for w in &scan.warnings {
        err!("crd: {w}");
    }
    let runnable = scan.modules.len();
    if !refused_key && scan.refused.is_empty() {
        out!(
            "{}: ok; {runnable} modules runnable from {}",
            cfg.path.display(),
            cfg.modules_dir.display()
        );
        return EXIT_OK;
    }
    let mut what = Vec::new();
    if refused_key {
        what.push("command_key_file refused".to_string());
    }
    let refused = scan.refused.len();
    if refused > 0 {
        what.push(format!(
            "{refused} module{} refused ({})",
            if refused == 1 { "" } else { "s" },
            scan.refused.join(", ")
        ));
    }
    out!(
        "{}: {}; {runnable} modules runnable from {}",
        cfg.path.display(),
        what.join(", "),
        cfg.modules_dir.display()
    );
    EXIT_USAGE
}

/// Sends `request` to the running daemon and prints its answer; an error answer
/// exits 1. With `header`, the answer's first line (`# ...`: the relay's column
/// names, or a command's own line, there so that the answer is never empty) is
/// not printed: `crd replies [ID]`.
fn ask(cfg: &Config, request: &Request, header: bool) -> i32 {
    match call(&cfg.control_socket, request) {
        Ok(Response::Error(why)) => {
            err!("crd: {why}");
            EXIT_FAIL
        }
        Ok(r) => {
            let text = r.encode();
            let body = match text.strip_prefix("# ").filter(|_| header) {
                Some(t) => t.split_once('\n').map_or("", |(_, rest)| rest),
                None => &text,
            };
            let _ = stdout().write_all(body.as_bytes());
            EXIT_OK
        }
        Err(e) => {
            err!(
                "crd: cannot reach the daemon at {}: {e} (is crd running?)",
                cfg.control_socket.display()
            );
            EXIT_FAIL
        }
    }
}

/// Inside a collector's run of a message: its events' hop and cause
/// (`CRD_HOP`, `CRD_CAUSE`), so what `crd emit` sends counts toward
/// `max_hops` as they do. A router build has no collector, so no such run.
#[cfg(feature = "collector")]
fn run_cause() -> Option<Cause> {
    let env = |k| std::env::var(k).unwrap_or_default();
    let hop = env("CRD_HOP").parse().ok()?;
    Cause::new(hop, &env("CRD_CAUSE"))
}

#[cfg(not(feature = "collector"))]
fn run_cause() -> Option<Cause> {
    None
}

fn emit(cfg: &Config, e: &EmitCmd) -> i32 {
    if let Err(why) = config::valid_topic_suffix(&e.suffix) {
        err!("crd: emit: bad suffix `{}`: {why}", e.suffix);
        return EXIT_USAGE;
    }
    let max = cfg.spool.max_record as usize;
    let body = match e.message.as_deref() {
        Some(STDIN_MARKER) => match read_stdin(max as u64 + 1) {
            Ok(b) => b,
            Err(err) => {
                err!("crd: emit: reading stdin: {err}");
                return EXIT_FAIL;
            }
        },
        Some(m) => m.as_bytes().to_vec(),
        None => Vec::new(),
    };
    if body.len() > max {
        err!("crd: emit: message over spool_max_record ({max} bytes)");
        return EXIT_FAIL;
    }
    let req = Request::Emit {
        suffix: e.suffix.clone(),
        sync: e.sync,
        cause: run_cause(),
        body,
    };
    match call(&cfg.control_socket, &req) {
        Ok(Response::Done(seq)) => {
            out!("{seq}");
            EXIT_OK
        }
        Ok(r) => {
            err!("crd: emit: {}", r.why());
            EXIT_FAIL
        }
        Err(CallError::Unreachable(e)) => {
            err!(
                "crd: emit: cannot reach the daemon at {}: {e} (is crd running?)",
                cfg.control_socket.display()
            );
            EXIT_FAIL
        }
        Err(CallError::NoAnswer(e)) => {
            err!(
                "crd: emit: no answer from the daemon at {} ({e}): the record may or may not \
                 be in the spool (`crd dump` shows what is)",
                cfg.control_socket.display()
            );
            EXIT_UNKNOWN
        }
    }
}

fn dump(cfg: &Config, dir: Option<&std::path::Path>) -> i32 {
    let dir = dir.unwrap_or(&cfg.spool_dir);
    let mut sp = match crate::host::outbox::open_read_only(dir, cfg.spool) {
        Ok(sp) => sp,
        Err(e) => {
            err!("crd: dump: {e}");
            return EXIT_FAIL;
        }
    };
    out!(
        "# stream {:016x} acked {} next {} depth {}",
        sp.stream(),
        sp.acked(),
        sp.next_seq(),
        sp.depth()
    );
    loop {
        match sp.read_next() {
            Ok(Some((seq, payload))) => match crate::core::event::decode(payload) {
                Ok(ev) => out!(
                    "{seq} {} {} {} {} {} {:?}",
                    ev.ts_ms,
                    ev.kind.as_str(),
                    ev.module,
                    ev.code,
                    ev.dur_ms,
                    ev.out
                ),
                Err(e) => out!("{seq} ? {e}"),
            },
            Ok(None) => break,
            Err(e) => {
                err!("crd: dump: {e}");
                return EXIT_FAIL;
            }
        }
    }
    let c = sp.stats().corrupt;
    if c > 0 {
        err!("crd: dump: skipped {c} corrupt records");
    }
    EXIT_OK
}

/// `crd send` in a router build: the sending side is the central host's.
#[cfg(not(feature = "collector"))]
fn send(_: &Config, _: SendCmd) -> i32 {
    err!(
        "crd: send: this crd is built without the collector (cargo feature `collector`): \
         send commands from the central host's crd"
    );
    EXIT_USAGE
}

/// `crd send`: the command made for each node NODE names, handed to the running
/// collector's relay (or published here), its id printed and, with `--wait`, its
/// replies; exits with what they say.
#[cfg(feature = "collector")]
fn send(cfg: &Config, c: SendCmd) -> i32 {
    let (ttl, wait) = match send_durations(&c) {
        Ok(d) => d,
        Err(code) => return code,
    };
    // NODE, or every node of the running collector's fleet it matches (`*`, `?`).
    let (node, module, args) = if c.all {
        let mut rest = c.args;
        rest.insert(0, c.module);
        (String::from("*"), c.node, rest)
    } else {
        (c.node, c.module, c.args)
    };
    let many = node.contains(['*', '?']);
    let nodes = if many {
        match fleet_nodes(cfg, &node) {
            Ok(v) => v,
            Err(code) => return code,
        }
    } else {
        vec![node]
    };
    let from = node_name(cfg);
    let mut cmds = Vec::new();
    for n in &nodes {
        match crate::command::send::make(cfg, n, &module, args.clone(), ttl, &from) {
            Ok(cmd) => cmds.push((n.clone(), cmd)),
            Err(e) => {
                err!("crd: send: {e}");
                return EXIT_USAGE;
            }
        }
    }
    let relayed = match hand_to_relay(cfg, &cmds) {
        Ok(r) => r,
        Err(code) => return code,
    };
    for (n, cmd) in &cmds {
        if many {
            out!("{} {n}", cmd.id);
        } else {
            out!("{}", cmd.id);
        }
    }
    let finals = if relayed {
        match wait {
            None => return EXIT_OK,
            Some(w) => wait_relayed(cfg, &cmds, w, |r| show_reply(r, many)),
        }
    } else {
        match publish_here(cfg, &cmds, wait, many) {
            Ok(_) if wait.is_none() => return EXIT_OK,
            Ok(v) => v,
            Err(code) => return code,
        }
    };
    send_exit(&cmds, &finals, wait, relayed, many)
}

/// `--ttl` and `--wait` of `crd send`; `Err` is the exit code once the usage
/// error has been printed.
#[cfg(feature = "collector")]
fn send_durations(c: &SendCmd) -> Result<(std::time::Duration, Option<std::time::Duration>), i32> {
    let dur = |what: &str, v: &str| {
        config::parse_duration(v).map_err(|e| format!("crd: send: --{what}: {e}"))
    };
    let (ttl, wait) = match (
        dur("ttl", &c.ttl),
        c.wait.as_deref().map(|w| dur("wait", w)),
    ) {
        (Ok(t), None) => (t, None),
        (Ok(t), Some(Ok(w))) => (t, Some(w)),
        (Err(e), _) | (_, Some(Err(e))) => {
            err!("{e}");
            return Err(EXIT_USAGE);
        }
    };
    if ttl < crate::command::envelope::MIN_TTL {
        err!(
            "crd: send: --ttl {}: shorter than the minimum, {} ms (a command needs time \
             to reach its node)",
            c.ttl,
            crate::core::dur::ms(crate::command::envelope::MIN_TTL)
        );
        return Err(EXIT_USAGE);
    }
    Ok((ttl, wait))
}

/// The nodes of the running collector's fleet that `pattern` matches; `Err` is
/// the exit code once the reason has been printed.
#[cfg(feature = "collector")]
fn fleet_nodes(cfg: &Config, pattern: &str) -> Result<Vec<String>, i32> {
    let fleet = match call(&cfg.control_socket, &Request::Fleet { json: true }) {
        Ok(Response::Text(t)) => t,
        Ok(r) => {
            err!("crd: send: {}", r.why());
            return Err(EXIT_FAIL);
        }
        Err(e) => {
            err!("crd: send: `{pattern}` needs the running collector's fleet: {e}");
            return Err(EXIT_FAIL);
        }
    };
    let v: serde_json::Value = serde_json::from_str(&fleet).unwrap_or_default();
    let names: Vec<String> = v["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["node"].as_str())
                .filter(|n| glob(pattern, n))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        err!("crd: send: no node of the fleet matches `{pattern}`");
        return Err(EXIT_FAIL);
    }
    Ok(names)
}

/// Hands each command to the relay of a running collector: `Ok(false)` when there
/// is none (the caller publishes them itself), `Err` the exit code once the
/// failure has been printed.
#[cfg(feature = "collector")]
fn hand_to_relay(cfg: &Config, cmds: &[(String, Command)]) -> Result<bool, i32> {
    for (n, cmd) in cmds {
        let req = Request::Send {
            node: n.clone(),
            body: serde_json::to_vec(cmd).unwrap_or_default(),
        };
        match call(&cfg.control_socket, &req) {
            Ok(Response::Done(_)) => {}
            Ok(Response::Error(why)) if why == crate::host::control::NO_RELAY => return Ok(false),
            Ok(r) => {
                err!("crd: send: {n}: {}", r.why());
                return Err(EXIT_FAIL);
            }
            Err(CallError::Unreachable(_)) => return Ok(false),
            Err(e) => {
                err!("crd: send: {n}: the daemon did not answer: {e}");
                return Err(EXIT_FAIL);
            }
        }
    }
    Ok(true)
}

/// Publishes each command from here, waiting up to `wait` for each one's final
/// reply; `Err` is the exit code once the failure has been printed.
#[cfg(feature = "collector")]
fn publish_here(
    cfg: &Config,
    cmds: &[(String, Command)],
    wait: Option<std::time::Duration>,
    many: bool,
) -> Result<Vec<Option<Reply>>, i32> {
    let mut v = Vec::new();
    for (n, cmd) in cmds {
        match crate::command::send::send(cfg, n, cmd, wait, |r| show_reply(r, many)) {
            Ok(r) => v.push(r),
            Err(e) => {
                err!("crd: send: {e}");
                return Err(EXIT_FAIL);
            }
        }
    }
    Ok(v)
}

/// Prints one reply as it comes, prefixed with its node when there are `many`.
#[cfg(feature = "collector")]
fn show_reply(r: &Reply, many: bool) {
    let who = if many {
        format!("{}: ", r.node)
    } else {
        String::new()
    };
    match &r.answer {
        Answer::Accepted => out!("{who}accepted by {}", r.node),
        Answer::Done { code, dur_ms, out } => {
            out!("{who}done: exit {code} in {dur_ms} ms");
            if !out.is_empty() {
                out!("{out}");
            }
        }
        a if a.is_busy() => out!("{who}busy, retrying"),
        Answer::Refused { why, detail } => err!(
            "crd: send: {} refused the command: {}{}",
            r.node,
            why.as_str(),
            if detail.is_empty() {
                String::new()
            } else {
                format!(" ({detail})")
            }
        ),
        Answer::Interrupted => err!("crd: send: {} answered `interrupted`", r.node),
    }
}

/// Names each node without a final answer in `wait`, then the exit code: the one
/// node's, or for `many` 0 only if every node ran the command and exited 0, else 1.
#[cfg(feature = "collector")]
fn send_exit(
    cmds: &[(String, Command)],
    finals: &[Option<Reply>],
    wait: Option<std::time::Duration>,
    relayed: bool,
    many: bool,
) -> i32 {
    for ((n, _), r) in cmds.iter().zip(finals) {
        if r.is_none() {
            err!(
                "crd: send: no final answer from {n} in {} s ({})",
                wait.unwrap_or_default().as_secs(),
                if relayed {
                    "the relay keeps sending it until its ttl"
                } else {
                    "the command stays queued at the broker until its ttl"
                }
            );
        }
    }
    if many {
        if finals.iter().all(|r| reply_exit(r) == 0) {
            EXIT_OK
        } else {
            EXIT_FAIL
        }
    } else {
        reply_exit(&finals[0])
    }
}

/// The exit code a final reply (or none) stands for.
#[cfg(feature = "collector")]
fn reply_exit(r: &Option<Reply>) -> i32 {
    match r {
        None => EXIT_NO_ANSWER,
        Some(r) => match r.answer {
            Answer::Done { code, .. } => code,
            Answer::Interrupted => EXIT_INTERRUPTED,
            Answer::Refused {
                why: Refusal::Expired,
                ..
            } => EXIT_EXPIRED,
            Answer::Refused { .. } | Answer::Accepted => EXIT_REFUSED,
        },
    }
}

#[cfg(feature = "collector")]
/// Polls the relay for the replies to `cmds` until each has a final one or `wait`
/// passes; hands each new reply to `shown`. A command the relay holds as ended
/// whose final reply it no longer keeps (it keeps the last 256) ends with the
/// answer its state line says.
fn wait_relayed(
    cfg: &Config,
    cmds: &[(String, Command)],
    wait: std::time::Duration,
    mut shown: impl FnMut(&Reply),
) -> Vec<Option<Reply>> {
    use std::time::{Duration, Instant};
    /// Time between two polls of the relay.
    const POLL: Duration = Duration::from_millis(100);
    let until = Instant::now() + wait;
    let mut seen = vec![0usize; cmds.len()];
    let mut finals: Vec<Option<Reply>> = vec![None; cmds.len()];
    loop {
        for (i, (node, cmd)) in cmds.iter().enumerate() {
            if finals[i].is_some() {
                continue;
            }
            let id = Some(cmd.id.clone());
            let Ok(Response::Text(text)) = call(&cfg.control_socket, &Request::Replies { id })
            else {
                continue;
            };
            let replies: Vec<Reply> = text
                .lines()
                .filter_map(|l| Reply::parse(l.as_bytes()).ok())
                .collect();
            // Replies fall out of the relay's window: count from the newest seen.
            let new = replies.len().saturating_sub(seen[i]);
            for r in &replies[replies.len() - new..] {
                shown(r);
                if crate::command::send::is_final(r) {
                    finals[i] = Some(r.clone());
                    break;
                }
            }
            seen[i] = replies.len();
            if finals[i].is_none() {
                let state = text
                    .strip_prefix("# ")
                    .and_then(|t| t.lines().next())
                    .and_then(|l| l.split(' ').nth(3));
                if let Some(r) = state.and_then(|s| reply_of_state(&cmd.id, node, s)) {
                    shown(&r);
                    finals[i] = Some(r);
                }
            }
        }
        let now = Instant::now();
        if finals.iter().all(Option::is_some) || now >= until {
            return finals;
        }
        std::thread::sleep(POLL.min(until - now));
    }
}

/// The final reply a relay's STATE (`done:CODE`, `refused:WHY`, `interrupted`,
/// `unanswered`) stands for; `None` while it is not final.
#[cfg(feature = "collector")]
fn reply_of_state(id: &str, node: &str, state: &str) -> Option<Reply> {
    let refused = |why| Answer::Refused {
        why,
        detail: "its replies are no longer kept by the relay".into(),
    };
    let answer = match state.split_once(':') {
        Some(("done", c)) => Answer::Done {
            code: c.parse().ok()?,
            dur_ms: 0,
            out: String::new(),
        },
        Some(("refused", w)) => refused(Refusal::from_name(&w.replace('-', " "))?),
        None if state == "interrupted" => Answer::Interrupted,
        None if state == "unanswered" => refused(Refusal::Expired),
        _ => return None,
    };
    Some(Reply {
        id: id.to_string(),
        node: node.to_string(),
        module: String::new(),
        ts: 0,
        answer,
        resent: false,
    })
}

/// Whether `name` matches `pat`, `*` any run of bytes and `?` any one.
#[cfg(feature = "collector")]
fn glob(pat: &str, name: &str) -> bool {
    let (p, n) = (pat.as_bytes(), name.as_bytes());
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == b'?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == b'*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

fn support(cfg: &Config, name: &OsStr, args: Vec<OsString>) -> i32 {
    let name = name.to_string_lossy();
    let (exe, settings) = match modules::support(cfg, &name, sys::euid()) {
        Ok(v) => v,
        Err(e) => {
            err!("crd: -x: {e}");
            return EXIT_USAGE;
        }
    };
    let node = node_name(cfg);
    let host = Host {
        config: &cfg.path,
        node: &node,
    };
    let on_terminal = sys::stdin_is_tty();
    let recipe = Recipe::support(host, &name, &exe, &settings, args, on_terminal);
    match run_once(&recipe) {
        Ok(f) => {
            match f.outcome {
                Outcome::TimedOut => err!(
                    "crd: -x {name}: timed out after {} ms",
                    crate::core::dur::ms(settings.timeout)
                ),
                Outcome::ExecFailed => err!("crd: -x {name}: {}", f.output),
                _ => {}
            }
            f.outcome.code()
        }
        Err(e) => {
            err!("crd: -x {name}: {e}");
            EXIT_FAIL
        }
    }
}

fn check_once(cfg: &Config, name: &str) -> i32 {
    let m = match modules::load(cfg, name, sys::euid()) {
        Ok(m) => m,
        Err(problems) => {
            for p in problems {
                err!("crd: module {name}: {p}");
            }
            return EXIT_USAGE;
        }
    };
    let node = node_name(cfg);
    let host = Host {
        config: &cfg.path,
        node: &node,
    };
    let Some(check) = Recipe::check(host, &m) else {
        out!("check {name}: none (a subscribed module without a check: every message is a hit)");
        return EXIT_OK;
    };
    let f = match run_once(&check) {
        Ok(f) => f,
        Err(e) => {
            err!("crd: check {name}: {e}");
            return EXIT_FAIL;
        }
    };
    let verdict = decide::verdict(&m.settings, f.outcome);
    out!(
        "check {name}: {} in {} ms: {:?}",
        f.outcome.describe(),
        crate::core::dur::ms(f.dur),
        verdict
    );
    print_output(&f.output);
    match verdict {
        decide::Verdict::Error => return EXIT_FAIL,
        decide::Verdict::Clear => return EXIT_OK,
        decide::Verdict::Hit => {}
    }
    // `crd check` is a manual run: trigger_after and cooldown are daemon state and do
    // not apply here.
    let Some(response) = Recipe::response(host, &m, f.output.clone(), f.outcome.code()) else {
        out!("response {name}: none (the module has no response)");
        return EXIT_OK;
    };
    let r = match run_once(&response) {
        Ok(r) => r,
        Err(e) => {
            err!("crd: response {name}: {e}");
            return EXIT_FAIL;
        }
    };
    out!(
        "response {name}: {} in {} ms",
        r.outcome.describe(),
        crate::core::dur::ms(r.dur)
    );
    print_output(&r.output);
    if r.outcome == Outcome::Exited(0) {
        EXIT_OK
    } else {
        EXIT_FAIL
    }
}

fn print_output(out: &str) {
    for line in out.lines() {
        out!("  | {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn x_takes_everything_after_the_name_verbatim() {
        let (head, x) = split_x(&os(&[
            "crd", "-c", "f.conf", "-x", "notify", "-f", "--", "x",
        ]));
        assert_eq!(head, os(&["crd", "-c", "f.conf"]));
        let (name, rest) = x.unwrap();
        assert_eq!(name, "notify");
        assert_eq!(rest, os(&["-f", "--", "x"]));
    }

    #[test]
    fn x_after_a_subcommand_is_the_subcommands_business() {
        let (head, x) = split_x(&os(&["crd", "check", "-x"]));
        assert!(x.is_none());
        assert_eq!(head.len(), 3);
    }

    #[cfg(feature = "collector")]
    #[test]
    fn node_patterns_match_whole_names() {
        for (p, n, m) in [
            ("*", "r1", true),
            ("r*", "r1", true),
            ("r*", "gw", false),
            ("r?", "r12", false),
            ("r??", "r12", true),
            ("*-eu-*", "gw-eu-7", true),
            ("*-eu-*", "gw-us-7", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("r1", "r1", true),
            ("", "r1", false),
        ] {
            assert_eq!(glob(p, n), m, "{p} {n}");
        }
    }

    #[test]
    fn config_value_named_dash_x_is_not_x() {
        let (_, x) = split_x(&os(&["crd", "-c", "-x"]));
        assert!(x.is_none());
    }
}
