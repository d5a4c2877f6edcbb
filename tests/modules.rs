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
