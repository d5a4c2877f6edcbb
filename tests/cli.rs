//! Integration tests of the command line: `-x`, `check`, `--check-config`, usage.

mod common;
use common::*;
use std::io::Write;
use std::process::Stdio;

#[test]
fn x_runs_a_support_module_with_its_args_and_returns_its_exit_code() {
    let sb = Sandbox::new("x");
    sb.script(
        "modules/say/say",
        "printf '%s|' \"$@\"\necho \"$CRD_MODULE\"\nexit 3",
    );
    let (code, out, _) = sb.run(&["-x", "say", "-f", "--", "a b"]);
    assert_eq!(code, 3);
    assert_eq!(out, "-f|--|a b|say\n");
    sb.script("modules/ok/ok", "exit 0");
    assert_eq!(sb.run(&["-x", "ok"]).0, 0);
}

#[test]
fn x_passes_stdin_through() {
    let sb = Sandbox::new("x-stdin");
    sb.script("modules/cat/cat", "tr a-z A-Z");
    let mut c = sb
        .crd(&["-x", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = c.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\n");
}

#[test]
fn x_refuses_bad_names_with_exit_2() {
    let sb = Sandbox::new("x-names");
    for name in ["../etc", "a/b", ".hidden", "..", ""] {
        let (code, _, err) = sb.run(&["-x", name]);
        assert_eq!(code, 2, "{name}");
        assert!(err.contains("bad support module name"), "{name}: {err}");
    }
    let (code, _, err) = sb.run(&["-x", "absent"]);
    assert_eq!(code, 2);
    assert!(err.contains("no support module `absent`"), "{err}");
}

#[test]
fn x_times_out_with_124_and_kills_the_group() {
    let sb = Sandbox::new("x-timeout");
    sb.script("modules/slow/slow", "sleep 7344 &\nsleep 7344");
    sb.script("modules/slow/module.conf", "timeout = 300ms");
    std::fs::set_permissions(
        sb.path("modules/slow/module.conf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let (code, _, err) = sb.run(&["-x", "slow"]);
    assert_eq!(code, 124, "{err}");
    assert!(err.contains("timed out"), "{err}");
    assert!(wait_for(std::time::Duration::from_secs(10), || pids_with(
        "sleep 7344"
    )
    .is_empty()));
}

#[test]
fn check_command_runs_check_and_response_once() {
    let sb = Sandbox::new("check-cmd");
    sb.module(
        "Hit",
        "echo found it\nexit 0",
        Some("echo fixed: $CRD_CHECK_OUTPUT"),
    );
    let (code, out, err) = sb.run(&["check", "Hit"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("check Hit: exit 0"), "{out}");
    assert!(out.contains("  | found it"), "{out}");
    assert!(out.contains("response Hit: exit 0"), "{out}");
    assert!(out.contains("  | fixed: found it"), "{out}");

    sb.module("Bad", "exit 9", None);
    let (code, out, _) = sb.run(&["check", "Bad"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("check Bad: exit 9") && out.contains("Error"),
        "{out}"
    );

    let (code, _, err) = sb.run(&["check", "Nope"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("module Nope:") && err.contains("check is missing"),
        "{err}"
    );
}

#[test]
fn check_config_reports_every_error_with_file_and_line() {
    let sb = Sandbox::new("checkconf");
    sb.config("interval = 30\nintervall = 5\n\n[module X]\ntimeout = forever\nmemory_limit = 1T");
    let (code, out, err) = sb.run(&["--check-config"]);
    assert_eq!(code, 2, "{out}");
    let conf = sb.conf().display().to_string();
    assert!(
        err.contains(&format!("{conf}:6: key `intervall`: unknown key")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{conf}:9: key `timeout`: bad duration")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{conf}:10: key `memory_limit`: bad size unit")),
        "{err}"
    );
}

#[test]
fn check_config_accepts_a_good_config_and_reports_module_problems() {
    let sb = Sandbox::new("checkconf-ok");
    sb.module("Good", "exit 1", None);
    sb.module("Bad", "exit 1", None);
    std::fs::write(sb.path("modules/Bad/module.conf"), "timeout = never\n").unwrap();
    let (code, out, err) = sb.run(&["--check-config"]);
    // A refused module is a failed check, though the daemon would run the rest:
    // a deployment gated on --check-config should not ship it.
    assert_eq!(code, 2, "{err}");
    assert!(out.contains("1 module refused (Bad)"), "{out}");
    assert!(out.contains("1 modules runnable"), "{out}");
    assert!(
        err.contains("module Bad:") && err.contains("module.conf:1: key `timeout`"),
        "{err}"
    );
}

#[test]
fn a_missing_config_runs_with_defaults_and_crd_config_env_is_honoured() {
    let sb = Sandbox::new("noconf");
    let mut cmd = crd_command(&sb.path("absent.conf"), &["--check-config"]);
    cmd.env_remove("CRD_CONFIG");
    let (code, out, _) = run_to_end(cmd);
    assert_eq!(code, 0);
    assert!(out.contains("absent.conf: ok"), "{out}");
    // Without -c, CRD_CONFIG names the file.
    let bin = std::env::var("CRD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_crd").to_string());
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("--check-config").env("CRD_CONFIG", sb.conf());
    let (code, out, _) = run_to_end(cmd);
    assert_eq!(code, 0);
    assert!(out.contains(&sb.conf().display().to_string()), "{out}");
}

#[test]
fn usage_errors_exit_2_and_help_and_version_exit_0() {
    let sb = Sandbox::new("usage");
    let (code, _, err) = sb.run(&["--bogus"]);
    assert_eq!(code, 2);
    assert!(err.contains("--bogus"), "{err}");
    let (code, out, _) = sb.run(&["--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("check-config") && out.contains("status"),
        "{out}"
    );
    let (code, out, _) = sb.run(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("crd "), "{out}");
}

/// `--check-config` makes the daemon's own check of `command_key_file` and names
/// the line: a key file the daemon would refuse (`remote commands are off`:
/// missing, too short, or readable by others) is not valid.
#[test]
fn check_config_refuses_a_command_key_file_the_daemon_cannot_use() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new("checkconf-key");
    sb.script("modules/say/say", "echo hi");
    let key = sb.path("key");
    sb.config(&format!(
        "commands = say\ncommand_key_file = {}",
        key.display()
    ));
    let conf = sb.conf().display().to_string();
    let at = format!("{conf}:6: key `command_key_file`:");
    let cases: [(Option<&str>, u32, &str); 3] = [
        (None, 0o600, "No such file"),
        (Some("12345"), 0o600, "5 bytes"),
        (Some(&"k".repeat(40)), 0o644, "mode 0644"),
    ];
    for (text, mode, why) in cases {
        let _ = std::fs::remove_file(&key);
        if let Some(t) = text {
            std::fs::write(&key, t).unwrap();
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let (code, out, err) = sb.run(&["--check-config"]);
        assert_eq!(code, 2, "{why}: {out}{err}");
        assert!(err.contains(&at) && err.contains(why), "{why}: {err}");
        assert!(err.contains("remote commands off"), "{err}");
        assert!(out.contains("command_key_file refused"), "{out}");
    }
    // The key the daemon takes passes.
    std::fs::write(&key, "k".repeat(40)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, out, err) = sb.run(&["--check-config"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(": ok;"), "{out}");
}

/// A relative `modules_dir` is taken from the config file's directory, wherever
/// crd is started from (children run in their module's directory, where a path
/// relative to the start would not be found), and `CRD_CONFIG` is absolute.
#[test]
fn relative_paths_in_the_config_are_taken_from_its_directory() {
    let sb = Sandbox::new("relpaths");
    std::fs::write(
        sb.conf(),
        "node = t\nmodules_dir = modules\ncontrol_socket = crd.sock\nspool_dir = spool\ninterval = 1h\n",
    )
    .unwrap();
    sb.module("Rel", "echo \"$PWD $CRD_CONFIG\" > ../../ran\nexit 1", None);
    let mut cmd = sb.crd(&["--check-config"]);
    cmd.current_dir("/");
    let (code, out, err) = run_to_end(cmd);
    assert_eq!(code, 0, "{out}{err}");
    let modules = sb.path("modules").display().to_string();
    assert!(
        out.contains(&format!("1 modules runnable from {modules}")),
        "{out}"
    );
    // The daemon, started from `/`, runs the module.
    let log = std::fs::File::create(sb.path("crd.log")).unwrap();
    let mut cmd = sb.crd(&[]);
    cmd.current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    let mut d = cmd.spawn().unwrap();
    let ran = wait_for(std::time::Duration::from_secs(20), || {
        sb.read("ran").ends_with('\n')
    });
    let _ = d.kill();
    let _ = d.wait();
    assert!(ran, "{}", sb.read("crd.log"));
    assert_eq!(
        sb.read("ran"),
        format!("{modules}/Rel {}\n", sb.conf().display())
    );
    assert!(sb.exists("spool") && sb.exists("crd.sock"));
}

/// A module with `register` but no `subscribe` (and so no `check`) is refused,
/// naming the line that set `register`, rather than passed over in silence.
#[test]
fn check_config_refuses_a_register_without_subscribe_naming_its_line() {
    let sb = Sandbox::new("checkconf-rule");
    sb.write(
        "modules/Rule/module.conf",
        "period = 1m\nregister = count\n",
    );
    sb.write("modules/Rule2/module.conf", "description = a rule\n");
    if cfg!(feature = "collector") {
        // (Without the collector, `register` in crd.conf is a parse error.)
        sb.config("[module Rule2]\nregister = count\nperiod = 1m");
    }
    let (code, out, err) = sb.run(&["--check-config"]);
    assert_eq!(code, 2, "{out}{err}");
    let own = sb.path("modules/Rule/module.conf").display().to_string();
    assert!(err.contains(&format!("{own}:2: key `register`")), "{err}");
    assert!(out.contains("refused (Rule"), "{out}");
    if cfg!(feature = "collector") {
        let conf = sb.conf().display().to_string();
        assert!(err.contains(&format!("{conf}:6: key `register`")), "{err}");
        assert!(err.contains("needs `subscribe`"), "{err}");
        assert!(out.contains("2 modules refused (Rule, Rule2)"), "{out}");
    }
}
