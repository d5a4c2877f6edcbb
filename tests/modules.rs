//! Tests of the example and support modules shipped in `modules/`, run through the
//! real `crd check` and `crd -x`. Commands that would touch the machine (`ping`, `ip`,
//! `systemctl`) are stubs placed first in PATH; nothing leaves the sandbox.

mod common;
use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Copies `modules/NAME` from the repository into the sandbox, with `params`.
fn install(sb: &Sandbox, name: &str, params: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("modules")
        .join(name);
    let dst = sb.path(&format!("modules/{name}"));
    fs::create_dir_all(&dst).unwrap();
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o755)).unwrap();
    for e in fs::read_dir(src).unwrap().flatten() {
        let to = dst.join(e.file_name());
        fs::copy(e.path(), &to).unwrap();
        // A checkout made with a loose umask must not make the copy group-writable.
        let mode = fs::metadata(&to).unwrap().permissions().mode() & 0o755;
        fs::set_permissions(&to, fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::write(dst.join("params"), params).unwrap();
    fs::set_permissions(dst.join("params"), fs::Permissions::from_mode(0o644)).unwrap();
}

/// A stub directory put first in PATH; `crd` in it is the binary under test.
fn stubs(sb: &Sandbox, scripts: &[(&str, &str)]) -> String {
    for (name, body) in scripts {
        sb.script(&format!("stubs/{name}"), body);
    }
    let bin = std::env::var("CRD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_crd").to_string());
    fs::create_dir_all(sb.path("stubs")).unwrap();
    let link = sb.path("stubs/crd");
    if !link.exists() {
        std::os::unix::fs::symlink(bin, link).unwrap();
    }
    // No sbin: a real ifup/ifdown must never be reached from a test.
    format!("{}:/usr/bin:/bin", sb.path("stubs").display())
}

fn crd_with_path(sb: &Sandbox, path: &str, args: &[&str]) -> (i32, String, String) {
    let mut c = sb.crd(args);
    c.env("PATH", path);
    run_to_end(c)
}

#[test]
fn log_size_fires_over_the_limit_and_empties_the_directory() {
    let sb = Sandbox::new("mod-logsize");
    let log = sb.path("log");
    fs::create_dir_all(log.join("sub")).unwrap();
    fs::write(log.join("big.log"), vec![b'x'; 40 * 1024]).unwrap();
    fs::write(log.join("sub/more.log"), b"y").unwrap();
    install(
        &sb,
        "LogSize",
        &format!("LOG_DIR={}\nLIMIT_KB=16\n", log.display()),
    );
    let (code, out, err) = sb.run(&["check", "LogSize"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("check LogSize: exit 0") && out.contains("KiB (limit 16 KiB)"),
        "{out}"
    );
    assert!(out.contains("emptied"), "{out}");
    assert!(log.is_dir(), "the directory itself stays");
    assert_eq!(fs::read_dir(&log).unwrap().count(), 0);
    let (code, out, _) = sb.run(&["check", "LogSize"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("exit 1 in") && !out.contains("response"),
        "{out}"
    );
}

#[test]
fn disk_full_fires_at_the_threshold_and_deletes_only_old_files() {
    let sb = Sandbox::new("mod-disk");
    let tmp = sb.path("tmp");
    fs::create_dir_all(&tmp).unwrap();
    fs::write(tmp.join("old file"), b"o").unwrap();
    fs::write(tmp.join("new"), b"n").unwrap();
    let ok = std::process::Command::new("touch")
        .args(["-d", "10 days ago"])
        .arg(tmp.join("old file"))
        .status()
        .unwrap();
    assert!(ok.success());
    let dir = sb.dir.display().to_string();
    install(
        &sb,
        "DiskFull",
        &format!(
            "MOUNT={dir}\nPERCENT=0\nCLEAN_DIRS={}\nKEEP_DAYS=7\n",
            tmp.display()
        ),
    );
    let (code, out, err) = sb.run(&["check", "DiskFull"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("check DiskFull: exit 0") && out.contains("% full"),
        "{out}"
    );
    assert!(out.contains("removed 1 files older than 7 days"), "{out}");
    assert!(!tmp.join("old file").exists());
    assert!(tmp.join("new").exists());
    install(&sb, "DiskFull", &format!("MOUNT={dir}\nPERCENT=101\n"));
    let (_, out, _) = sb.run(&["check", "DiskFull"]);
    assert!(out.contains("check DiskFull: exit 1"), "{out}");
}

#[test]
fn wan_down_fires_when_no_host_answers_and_restarts_the_link() {
    let sb = Sandbox::new("mod-wan");
    let rec = sb.path("ip.log");
    let path = stubs(
        &sb,
        &[
            (
                "ping",
                "echo \"$@\" >> \"$(dirname \"$0\")/../pings\"\n[ -f \"$(dirname \"$0\")/../up\" ]",
            ),
            ("ip", &format!("echo \"$*\" >> {}", rec.display())),
        ],
    );
    install(
        &sb,
        "WanDown",
        "HOSTS=\"192.0.2.1 192.0.2.2\"\nDEVICE=wan0\n",
    );
    let (code, out, err) = crd_with_path(&sb, &path, &["check", "WanDown"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no answer from: 192.0.2.1 192.0.2.2"), "{out}");
    assert!(out.contains("ip link down/up wan0"), "{out}");
    assert_eq!(sb.read("ip.log"), "link set wan0 down\nlink set wan0 up\n");
    assert_eq!(count_lines(&sb.path("pings")), 2);
    fs::write(sb.path("up"), "").unwrap();
    let (_, out, _) = crd_with_path(&sb, &path, &["check", "WanDown"]);
    assert!(out.contains("check WanDown: exit 1"), "{out}");
    // A dry run says what it would do and touches nothing.
    fs::remove_file(sb.path("up")).unwrap();
    install(&sb, "WanDown", "HOSTS=192.0.2.1\nDEVICE=wan0\nDRY_RUN=1\n");
    let (code, out, err) = crd_with_path(&sb, &path, &["check", "WanDown"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dry run: would restart wan/wan0"), "{out}");
    assert_eq!(sb.read("ip.log"), "link set wan0 down\nlink set wan0 up\n");
}

/// `make run`'s demo (sandbox/setup.sh, run elsewhere): 12 s of it, every
/// module having run at least once, logs no warning or error (a newcomer's first
/// sight), whether or not this machine has ping.
#[test]
fn the_make_run_demo_runs_without_a_warning() {
    let sb = Sandbox::new("demo");
    let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("sandbox/setup.sh");
    let out = std::process::Command::new(setup)
        .env("CRD_SANDBOX_RUN", sb.path("run"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let conf = String::from_utf8(out.stdout).unwrap();
    let d = std::process::Command::new(env!("CARGO_BIN_EXE_crd"))
        .args(["-c", conf.trim()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(12));
    crd::child::sys::kill_pid(d.id(), libc::SIGTERM).unwrap();
    let out = d.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
    for m in ["DiskFull", "LogSize"] {
        assert!(
            log.contains(&format!("module={m} kind=response code=0")),
            "{m}: {log}"
        );
    }
    // WanDown fires only where ping is missing; then its response is a dry run.
    if log.contains("module=WanDown kind=fired") {
        assert!(
            log.contains("module=WanDown kind=response code=0 dur_ms="),
            "{log}"
        );
        assert!(log.contains("dry run: would restart"), "{log}");
    }
}

#[test]
fn process_down_restarts_the_service_through_the_support_module() {
    let sb = Sandbox::new("mod-proc");
    let initd = sb.path("initd");
    sb.script(
        "initd/crd-test-svc",
        "echo \"$1\" >> \"$(dirname \"$0\")/../restarts\"",
    );
    let path = stubs(&sb, &[]);
    install(
        &sb,
        "ProcessDown",
        "PROCESS=crd-no-such-process\nSERVICE=crd-test-svc\n",
    );
    install(
        &sb,
        "restart-service",
        &format!("INIT_D={}\n", initd.display()),
    );
    let (code, out, err) = crd_with_path(&sb, &path, &["check", "ProcessDown"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("crd-no-such-process is not running"), "{out}");
    assert!(out.contains("restarted crd-test-svc via"), "{out}");
    assert_eq!(sb.read("restarts"), "restart\n");

    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    install(&sb, "ProcessDown", "PROCESS=sleep\n");
    let (_, out, _) = crd_with_path(&sb, &path, &["check", "ProcessDown"]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(out.contains("check ProcessDown: exit 1"), "{out}");
}

#[test]
fn restart_service_falls_back_to_systemd_and_refuses_bad_names() {
    let sb = Sandbox::new("mod-restart");
    let path = stubs(
        &sb,
        &[(
            "systemctl",
            "echo \"$*\" > \"$(dirname \"$0\")/../systemctl\"",
        )],
    );
    install(
        &sb,
        "restart-service",
        &format!("INIT_D={}\n", sb.path("no-initd").display()),
    );
    let (code, out, err) = crd_with_path(&sb, &path, &["-x", "restart-service", "foo"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "restarted foo via systemctl\n");
    assert_eq!(sb.read("systemctl"), "restart foo\n");
    for bad in ["../x", "", ".x"] {
        let (code, _, err) = crd_with_path(&sb, &path, &["-x", "restart-service", bad]);
        assert_eq!(code, 2, "{bad}: {err}");
    }
    let path = stubs(&sb, &[("systemctl", "exit 5")]);
    let (code, _, err) = crd_with_path(&sb, &path, &["-x", "restart-service", "foo"]);
    assert_eq!(code, 1);
    assert!(err.contains("restarting foo failed"), "{err}");
}

#[test]
fn shipped_modules_pass_crd_check_config() {
    let sb = Sandbox::new("mod-conf");
    for m in [
        "LogSize",
        "DiskFull",
        "WanDown",
        "ProcessDown",
        "restart-service",
    ] {
        install(&sb, m, "");
    }
    let (code, out, err) = sb.run(&["--check-config"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok; 4 modules runnable"), "{out}");
    assert!(err.is_empty(), "{err}");
}

/// `crd --install NAME` with this repository's `modules/` as the repository.
fn install_from_repo(sb: &Sandbox, path: &str, name: &str) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("modules");
    sb.config(&format!("repository = {}", repo.display()));
    let (code, out, err) = crd_with_path(sb, path, &["--install", name]);
    assert_eq!(code, 0, "{out}{err}");
    out
}

#[test]
fn mqtt_notify_spools_a_message_through_the_running_daemon() {
    let sb = Sandbox::new("mod-notify");
    let path = stubs(&sb, &[]);
    let out = install_from_repo(&sb, &path, "mqtt-notify");
    assert!(out.contains("install: exit 0"), "{out}");
    assert!(out.contains("crd emit is available"), "{out}");
    let (code, _, err) = crd_with_path(&sb, &path, &["-x", "mqtt-notify", "nobody listens"]);
    assert_eq!(code, 1, "no daemon: {err}");
    let mut d = sb.start();
    let (code, out, err) = crd_with_path(
        &sb,
        &path,
        &["-x", "mqtt-notify", "-t", "alerts/disk", "disk is", "full"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "1", "the seq of the spooled record");
    let (code, out, _) = crd_with_path(&sb, &path, &["-x", "mqtt-notify", "plain"]);
    assert_eq!((code, out.trim()), (0, "2"));
    let (code, _, _) = crd_with_path(&sb, &path, &["-x", "mqtt-notify"]);
    assert_eq!(code, 2);
    let (code, _, _) = crd_with_path(&sb, &path, &["-x", "mqtt-notify", "-t"]);
    assert_eq!(code, 2);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(std::time::Duration::from_secs(10)).is_some());
    let (_, dump, _) = sb.run(&["dump"]);
    let lines: Vec<&str> = dump.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 2, "{dump}");
    assert!(
        lines[0].starts_with("1 ")
            && lines[0].contains("alerts/disk")
            && lines[0].contains("\"disk is full\""),
        "{dump}"
    );
    assert!(
        lines[1].contains("notify") && lines[1].contains("\"plain\""),
        "{dump}"
    );
}

#[test]
fn log_trim_deletes_the_oldest_files_until_under_the_limit() {
    let sb = Sandbox::new("mod-logtrim");
    let path = stubs(&sb, &[]);
    install_from_repo(&sb, &path, "log-trim");
    let log = sb.path("log");
    fs::create_dir_all(&log).unwrap();
    for (i, age_h) in [(1, 3), (2, 2), (3, 1)] {
        let f = log.join(format!("app.{i}.log"));
        fs::write(&f, vec![b'x'; 30 * 1024]).unwrap();
        let st = std::process::Command::new("touch")
            .args(["-d", &format!("-{age_h} hours")])
            .arg(&f)
            .status()
            .unwrap();
        assert!(st.success());
    }
    fs::write(log.join("keep.txt"), vec![b'k'; 100 * 1024]).unwrap();
    let dir = log.to_str().unwrap();
    let (code, out, err) = crd_with_path(&sb, &path, &["-x", "log-trim", dir, "50", "*.log"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("deleted") && out.contains("30 KiB (limit 50 KiB)"),
        "{out}"
    );
    assert!(!log.join("app.1.log").exists() && !log.join("app.2.log").exists());
    assert!(log.join("app.3.log").exists(), "the newest stays");
    assert!(
        log.join("keep.txt").exists(),
        "files outside the pattern stay"
    );
    // The newest alone is over the limit: truncated, not deleted.
    let (code, out, _) = crd_with_path(&sb, &path, &["-x", "log-trim", dir, "10", "*.log"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("truncated"), "{out}");
    assert_eq!(fs::metadata(log.join("app.3.log")).unwrap().len(), 0);
    for bad in [&["-x", "log-trim"][..], &["-x", "log-trim", dir, "ten"][..]] {
        assert_eq!(crd_with_path(&sb, &path, bad).0, 2, "{bad:?}");
    }
    let missing = sb.path("nope");
    let (code, _, err) = crd_with_path(
        &sb,
        &path,
        &["-x", "log-trim", missing.to_str().unwrap(), "1"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("is not a directory"), "{err}");
}

#[test]
fn restart_service_installs_from_the_repository_and_is_listed() {
    let sb = Sandbox::new("mod-restart-inst");
    let path = stubs(&sb, &[("systemctl", "exit 0")]);
    let out = install_from_repo(&sb, &path, "restart-service");
    assert!(out.contains("init system found"), "{out}");
    let list = sb.run(&["--list"]).1;
    let row = list
        .lines()
        .find(|l| l.starts_with("restart-service "))
        .unwrap();
    assert!(row.contains(" 1.0 ") && row.contains("support"), "{row}");
}

/// `make demo-fleet` (sandbox/demo-fleet.sh) for 21 s instead of 120: it prints an
/// edge's event, the collector's rule reacting, a command's reply and the fleet,
/// then leaves no process behind.
#[test]
fn the_fleet_demo_shows_an_event_a_rule_and_a_command_then_stops() {
    let sb = Sandbox::new("demo-fleet");
    let dir = sb.path("fleet");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("sandbox/demo-fleet.sh");
    let out = std::process::Command::new(script)
        .env("DEMO_SECONDS", "21")
        .env("CRD_BIN", env!("CARGO_BIN_EXE_crd"))
        .env("CRD_DEMO_DIR", &dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "bus: event edge1 Flaky fired: flaky on edge1",
        "bus: event edge2 Flaky cleared",
        "bus: event central Storm response: storm on edge",
        "bus: reply edge1 done",
        "send: done: exit 0 in ",
        "send: up (s): ",
        "fleet: edge2 ",
    ] {
        assert!(text.contains(want), "{want} in\n{text}");
    }
    assert!(dir.join("fleet.html").exists());
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        pids_with(&dir.display().to_string()),
        Vec::<i32>::new(),
        "all stopped"
    );
}
