//! `crd --install`, `--list`, `--remove` against the real binary: sources are local
//! git repositories (`git init`, `file://` URLs), directories, tarballs (made with
//! `tar`, or byte by byte for hostile ones) and a tarball served over loopback HTTP.
//! Install scripts are real `/bin/sh` scripts; the crash test SIGKILLs the real
//! `crd --install` in the middle of its `install` script.

mod common;
use common::*;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Writes module `name` (a support module printing `NAME VERSION`) into `dir`.
fn support_module(dir: &Path, name: &str, version: &str) {
    fs::create_dir_all(dir).unwrap();
    let exe = dir.join(name);
    fs::write(&exe, format!("#!/bin/sh\necho \"{name} {version} $*\"\n")).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(
        dir.join("module.conf"),
        format!("description = test module\nversion = {version}\n"),
    )
    .unwrap();
}

fn script(path: &Path, body: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "advice.detachedHead=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn tar_gz(src_parent: &Path, entry: &str, out: &Path) {
    let st = Command::new("tar")
        .arg("czf")
        .arg(out)
        .arg("-C")
        .arg(src_parent)
        .arg(entry)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Hidden entries left in modules_dir besides the lock.
fn leftovers(sb: &Sandbox) -> Vec<String> {
    fs::read_dir(sb.path("modules"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n != ".install.lock")
        .collect()
}

fn ok(r: (i32, String, String)) -> String {
    assert_eq!(r.0, 0, "stdout:\n{}\nstderr:\n{}", r.1, r.2);
    r.1
}

#[test]
fn directory_install_then_x_list_and_remove() {
    let sb = Sandbox::new("inst-dir");
    support_module(&sb.path("src/hello"), "hello", "1.0");
    let src = sb.path("src/hello");
    let out = ok(sb.run(&["--install", "hello", "-l", src.to_str().unwrap()]));
    assert!(out.contains("installed hello 1.0"), "{out}");
    assert!(out.contains("no daemon reachable"), "{out}");
    assert_eq!(
        ok(sb.run(&["-x", "hello", "a", "b"])).trim(),
        "hello 1.0 a b"
    );
    let list = ok(sb.run(&["--list"]));
    let row = list.lines().find(|l| l.starts_with("hello ")).unwrap();
    assert!(
        row.contains("1.0") && row.contains("support") && row.contains("tree:"),
        "{row}"
    );
    assert!(row.ends_with(src.to_str().unwrap()), "{row}");
    // The same as JSON, beside a module copied by hand (no install record).
    sb.module("Byhand", "exit 1", None);
    let j: serde_json::Value = serde_json::from_str(&ok(sb.run(&["--list", "--json"]))).unwrap();
    let all = j.as_array().unwrap();
    let hello = all.iter().find(|m| m["name"] == "hello").unwrap();
    assert_eq!(hello["version"], "1.0");
    assert_eq!(hello["kind"], "support");
    assert!(
        hello["revision"].as_str().unwrap().starts_with("tree:"),
        "{hello}"
    );
    assert_eq!(hello["source"], src.to_str().unwrap());
    assert!(hello["installed_unix_s"].as_u64().unwrap() > 1_700_000_000);
    assert!(hello["installed"].is_string());
    let byhand = all.iter().find(|m| m["name"] == "Byhand").unwrap();
    assert_eq!(byhand["kind"], "check");
    for k in [
        "version",
        "revision",
        "installed_unix_s",
        "installed",
        "source",
    ] {
        assert!(byhand[k].is_null(), "{k}: {byhand}");
    }
    let (code, _, err) = sb.run(&["--json"]);
    assert_eq!(code, 2, "--json alone is a usage error");
    assert!(err.contains("--json goes with --list"), "{err}");
    let rec = sb.read("modules/hello/.crd-install");
    assert!(
        rec.contains("tree_sha256 = ") && rec.contains("installed_at = "),
        "{rec}"
    );
    let out = ok(sb.run(&["--remove", "hello"]));
    assert!(out.contains("removed hello"), "{out}");
    assert!(!sb.exists("modules/hello"));
    assert!(!ok(sb.run(&["--list"])).contains("hello"));
    let (code, _, err) = sb.run(&["--remove", "hello"]);
    assert_eq!(code, 1);
    assert!(err.contains("no module `hello`"), "{err}");
    assert!(leftovers(&sb).is_empty());
}

#[test]
fn git_install_pins_a_tag_upgrades_and_records_the_commit() {
    let sb = Sandbox::new("inst-git");
    let repo = sb.path("repo");
    support_module(&repo, "hello", "1.0");
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "v1"]);
    git(&repo, &["tag", "v1"]);
    let c1 = git(&repo, &["rev-parse", "HEAD"]);
    support_module(&repo, "hello", "2.0");
    git(&repo, &["commit", "-qam", "v2"]);
    let c2 = git(&repo, &["rev-parse", "HEAD"]);
    let url = format!("file://{}", repo.display());

    let out = ok(sb.run(&["--install", "hello@v1", "-l", &url]));
    assert!(
        out.contains("installed hello 1.0") && out.contains(&c1[..12]),
        "{out}"
    );
    assert_eq!(ok(sb.run(&["-x", "hello"])).trim(), "hello 1.0");
    assert!(
        sb.read("modules/hello/.crd-install")
            .contains(&format!("commit = {c1}"))
    );
    assert!(
        !sb.exists("modules/hello/.git"),
        "the clone's .git is not installed"
    );

    // Upgrade to the branch head, then back to v1 by its commit id.
    let out = ok(sb.run(&["--install", "hello", "-l", &url]));
    assert!(
        out.contains("installed hello 2.0") && out.contains(&c2[..12]),
        "{out}"
    );
    assert_eq!(ok(sb.run(&["-x", "hello"])).trim(), "hello 2.0");
    let out = ok(sb.run(&["--install", &format!("hello@{c1}"), "-l", &url]));
    assert!(out.contains("installed hello 1.0"), "{out}");
    let list = ok(sb.run(&["--list"]));
    assert!(list.contains(&c1[..12]), "{list}");

    let (code, _, err) = sb.run(&["--install", "hello@nosuchtag", "-l", &url]);
    assert_eq!(code, 1);
    assert!(err.contains("nosuchtag"), "{err}");
    assert_eq!(ok(sb.run(&["-x", "hello"])).trim(), "hello 1.0");
    assert!(leftovers(&sb).is_empty(), "{:?}", leftovers(&sb));
}

#[test]
fn the_configured_repository_holds_one_folder_per_module() {
    let sb = Sandbox::new("inst-repo");
    let (code, _, err) = sb.run(&["--install", "hello"]);
    assert_eq!(code, 2);
    assert!(err.contains("no repository configured"), "{err}");

    let repo = sb.path("repo");
    support_module(&repo.join("hello"), "hello", "1.0");
    support_module(&repo.join("other"), "other", "3.1");
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "modules"]);
    sb.config(&format!("repository = file://{}", repo.display()));
    ok(sb.run(&["--install", "other"]));
    assert_eq!(ok(sb.run(&["-x", "other"])).trim(), "other 3.1");
    let (code, _, err) = sb.run(&["--install", "missing"]);
    assert_eq!(code, 1);
    assert!(err.contains("has no module `missing`"), "{err}");

    // A plain directory as the repository works the same way.
    sb.config(&format!("repository = {}", repo.display()));
    ok(sb.run(&["--install", "hello"]));
    assert_eq!(ok(sb.run(&["-x", "hello"])).trim(), "hello 1.0");
}

#[test]
fn tarballs_local_pinned_and_over_http() {
    let sb = Sandbox::new("inst-tar");
    support_module(&sb.path("build/hello-1.0"), "hello", "1.0");
    let tgz = sb.path("hello-1.0.tar.gz");
    tar_gz(&sb.path("build"), "hello-1.0", &tgz);
    let t = tgz.to_str().unwrap();
    let out = ok(sb.run(&["--install", "hello@1.0", "-l", t]));
    assert!(
        out.contains("installed hello 1.0") && out.contains("sha256:"),
        "{out}"
    );
    let digest =
        String::from_utf8(Command::new("sha256sum").arg(&tgz).output().unwrap().stdout).unwrap();
    let rec = sb.read("modules/hello/.crd-install");
    assert!(
        rec.contains(&format!("archive_sha256 = {}", &digest[..64])),
        "{rec}"
    );
    assert_eq!(ok(sb.run(&["-x", "hello"])).trim(), "hello 1.0");
    let (code, _, err) = sb.run(&["--install", "hello@2.0", "-l", t]);
    assert_eq!(code, 1);
    assert!(err.contains("version is `1.0`"), "{err}");

    // A repository URL ending in `/` serves NAME.tar.gz; fetched with wget/curl.
    support_module(&sb.path("build/web"), "web", "4.2");
    let served = sb.path("web.tar.gz");
    tar_gz(&sb.path("build"), "web", &served);
    let body = fs::read(&served).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        // Answers two requests at most, then stops.
        let mut paths = Vec::new();
        for _ in 0..2 {
            let Ok((mut s, _)) = listener.accept() else {
                break;
            };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut req = [0u8; 2048];
            let n = s.read(&mut req).unwrap_or(0);
            let line = String::from_utf8_lossy(&req[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            let path = line.split(' ').nth(1).unwrap_or("").to_string();
            if path == "/mods/web.tar.gz" {
                let _ = write!(
                    s,
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(&body);
            } else {
                let _ = write!(s, "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            }
            paths.push(path);
        }
        paths
    });
    sb.config(&format!("repository = http://127.0.0.1:{port}/mods/"));
    let out = ok(sb.run(&["--install", "web"]));
    assert!(out.contains("installed web 4.2"), "{out}");
    assert_eq!(ok(sb.run(&["-x", "web"])).trim(), "web 4.2");
    let (code, _, err) = sb.run(&["--install", "nothere"]);
    assert_eq!(code, 1);
    assert!(err.contains("fetching http://127.0.0.1"), "{err}");
    assert_eq!(
        server.join().unwrap(),
        ["/mods/web.tar.gz", "/mods/nothere.tar.gz"]
    );
    assert!(leftovers(&sb).is_empty(), "{:?}", leftovers(&sb));
}

/// Version 2 of `hello` whose `install` is `body`; its rollback appends to `marker`.
fn failing_v2(sb: &Sandbox, body: &str) -> (PathBuf, PathBuf) {
    let src = sb.path("v2/hello");
    support_module(&src, "hello", "2.0");
    script(&src.join("install"), body);
    let marker = sb.path("rollback.ran");
    script(
        &src.join("rollback"),
        &format!(
            "echo \"rollback $CRD_MODULE $CRD_STEP\" >> {}",
            marker.display()
        ),
    );
    (src, marker)
}

#[test]
fn a_failing_install_rolls_back_and_keeps_the_previous_version() {
    let sb = Sandbox::new("inst-fail");
    support_module(&sb.path("v1/hello"), "hello", "1.0");
    ok(sb.run(&[
        "--install",
        "hello",
        "-l",
        sb.path("v1/hello").to_str().unwrap(),
    ]));
    let (src, marker) = failing_v2(&sb, "echo 'cannot do it' >&2; exit 3");
    let (code, out, err) = sb.run(&["--install", "hello", "-l", src.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("`install` of hello failed (exit 3)"), "{err}");
    assert!(
        out.contains("cannot do it"),
        "the script's output is shown: {out}"
    );
    assert_eq!(
        fs::read_to_string(&marker).unwrap(),
        "rollback hello rollback\n"
    );
    assert_eq!(ok(sb.run(&["-x", "hello"])).trim(), "hello 1.0");
    assert!(leftovers(&sb).is_empty(), "{:?}", leftovers(&sb));

    // An install script that passes: its environment, and the new version in place.
    let src3 = sb.path("v3/hello");
    support_module(&src3, "hello", "3.0");
    let seen = sb.path("install.env");
    script(
        &src3.join("install"),
        &format!(
            "echo \"$CRD_MODULE $CRD_STEP $CRD_MODULE_DIR $(pwd)\" > {}",
            seen.display()
        ),
    );
    ok(sb.run(&["--install", "hello", "-l", src3.to_str().unwrap()]));
    let env = fs::read_to_string(&seen).unwrap();
    let modules = sb.path("modules");
    assert_eq!(
        env.trim(),
        format!(
            "hello install {}/hello {}/.staging-hello",
            modules.display(),
            modules.display()
        )
    );
    assert_eq!(ok(sb.run(&["-x", "hello"])).trim(), "hello 3.0");
}

#[test]
fn a_hanging_install_times_out_and_rolls_back() {
    let sb = Sandbox::new("inst-hang");
    sb.config("timeout = 1s");
    let (src, marker) = failing_v2(&sb, "sleep 60 & sleep 60");
    let t0 = Instant::now();
    let (code, _, err) = sb.run(&["--install", "hello", "-l", src.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("timed out after 1000 ms"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    assert!(fs::read_to_string(&marker).unwrap().contains("rollback"));
    assert!(!sb.exists("modules/hello"));
    assert!(leftovers(&sb).is_empty(), "{:?}", leftovers(&sb));
}

/// One tar entry: name, type flag, mode, data, link target.
type Entry<'a> = (&'a str, u8, u32, &'a [u8], &'a str);

/// A gzipped tar of `entries`, by hand.
fn hostile_tgz(path: &Path, entries: &[Entry<'_>]) {
    let mut t = Vec::new();
    for (name, kind, mode, data, link) in entries {
        t.extend(crd::install::tar::ustar_header(
            name,
            *kind,
            *mode,
            data.len() as u64,
            link,
        ));
        t.extend_from_slice(data);
        t.resize(t.len().div_ceil(512) * 512, 0);
    }
    t.resize(t.len() + 1024, 0);
    let mut gz = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(fs::File::create(path).unwrap())
        .spawn()
        .unwrap();
    gz.stdin.take().unwrap().write_all(&t).unwrap();
    assert!(gz.wait().unwrap().success());
}

#[test]
fn hostile_names_archives_links_modes_and_sizes_are_refused() {
    let sb = Sandbox::new("inst-hostile");
    sb.config("install_max_size = 64k");
    for bad in [
        "a/b",
        "..",
        ".hidden",
        "../etc",
        "x@-upload-pack=evil",
        "x y",
    ] {
        let (code, _, err) = sb.run(&["--install", bad, "-l", "/"]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("bad"), "{bad}: {err}");
    }
    let (code, _, err) = sb.run(&["--remove", "../modules"]);
    assert_eq!(code, 2, "{err}");

    let exe: &[u8] = b"#!/bin/sh\necho hi\n";
    let outside = sb.path("escaped");
    let abs = format!("{}/abs", sb.dir.display());
    let big: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let zeros = vec![0u8; 4 << 20];
    let cases: Vec<(&str, Vec<Entry<'_>>, &str)> = vec![
        (
            "dotdot",
            vec![
                ("evil", b'0', 0o755, exe, ""),
                ("../escaped", b'0', 0o644, b"x", ""),
            ],
            "`..`",
        ),
        (
            "absolute2",
            vec![
                ("evil", b'0', 0o755, exe, ""),
                (&abs, b'0', 0o644, b"x", ""),
            ],
            "absolute path",
        ),
        (
            "link",
            vec![
                ("evil", b'0', 0o755, exe, ""),
                ("etc", b'2', 0o777, b"", "/etc"),
            ],
            "points outside",
        ),
        (
            "through",
            vec![
                ("evil", b'0', 0o755, exe, ""),
                ("up", b'2', 0o777, b"", "."),
                ("up/x", b'0', 0o644, b"x", ""),
            ],
            "through a symlink",
        ),
        ("setuid", vec![("evil", b'0', 0o4755, exe, "")], "setuid"),
        (
            "device",
            vec![
                ("evil", b'0', 0o755, exe, ""),
                ("null", b'3', 0o644, b"", ""),
            ],
            "device",
        ),
        (
            "big",
            vec![
                ("evil", b'0', 0o755, exe, ""),
                ("blob", b'0', 0o644, &big, ""),
            ],
            "install_max_size",
        ),
        (
            "bomb",
            vec![
                ("evil", b'0', 0o755, exe, ""),
                ("zeros", b'0', 0o644, &zeros, ""),
            ],
            "install_max_size",
        ),
    ];
    for (tag, entries, want) in cases {
        let p = sb.path(&format!("{tag}.tar.gz"));
        hostile_tgz(&p, &entries);
        let (code, _, err) = sb.run(&["--install", "evil", "-l", p.to_str().unwrap()]);
        assert_eq!(code, 1, "{tag}: {err}");
        assert!(err.contains(want), "{tag}: {err}");
        assert!(!sb.exists("modules/evil"), "{tag}");
        assert!(leftovers(&sb).is_empty(), "{tag}: {:?}", leftovers(&sb));
    }
    assert!(!outside.exists());
    assert!(!Path::new(&abs).exists());

    // The same from a directory: a symlink out of the tree, a setuid file.
    let d = sb.path("dirsrc/evil");
    fs::create_dir_all(&d).unwrap();
    script(&d.join("evil"), "echo hi");
    std::os::unix::fs::symlink("/etc/passwd", d.join("passwd")).unwrap();
    let (code, _, err) = sb.run(&["--install", "evil", "-l", d.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("passwd: symlink to `/etc/passwd` points outside"),
        "{err}"
    );
    fs::remove_file(d.join("passwd")).unwrap();
    fs::set_permissions(d.join("evil"), fs::Permissions::from_mode(0o4755)).unwrap();
    let (code, _, err) = sb.run(&["--install", "evil", "-l", d.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("setuid"), "{err}");
    // A module that needs a newer crd, or whose module.conf is broken.
    fs::set_permissions(d.join("evil"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(d.join("module.conf"), "min_crd_version = 99.0\n").unwrap();
    let (code, _, err) = sb.run(&["--install", "evil", "-l", d.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("needs crd 99.0 or newer"), "{err}");
    fs::write(d.join("module.conf"), "timeout = soon\n").unwrap();
    let (code, _, err) = sb.run(&["--install", "evil", "-l", d.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("evil/module.conf:1") && err.contains("timeout"),
        "{err}"
    );
    fs::remove_file(d.join("module.conf")).unwrap();
    // Neither a support executable nor a check: not a module.
    fs::remove_file(d.join("evil")).unwrap();
    fs::write(d.join("README"), "nothing to run").unwrap();
    let (code, _, err) = sb.run(&["--install", "evil", "-l", d.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("holds no module"), "{err}");
    assert!(leftovers(&sb).is_empty());
}

#[test]
fn sigkill_during_install_leaves_only_what_the_next_start_cleans() {
    let sb = Sandbox::new("inst-kill");
    support_module(&sb.path("v1/hello"), "hello", "1.0");
    ok(sb.run(&[
        "--install",
        "hello",
        "-l",
        sb.path("v1/hello").to_str().unwrap(),
    ]));
    let src = sb.path("v2/hello");
    support_module(&src, "hello", "2.0");
    let pidfile = sb.path("install.pid");
    script(
        &src.join("install"),
        &format!("echo $$ > {}; exec sleep 60", pidfile.display()),
    );
    let mut child = sb
        .crd(&["--install", "hello", "-l", src.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(20), || sb
        .exists("install.pid")
        && !sb.read("install.pid").trim().is_empty()));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let script_pid: i32 = sb.read("install.pid").trim().parse().unwrap();
    // SAFETY: a plain kill(2) of the test's own grandchild.
    unsafe {
        libc::kill(script_pid, libc::SIGKILL);
    }
    assert!(sb.exists("modules/.staging-hello"), "{:?}", leftovers(&sb));
    assert_eq!(ok(sb.run(&["-x", "hello"])).trim(), "hello 1.0");

    // The daemon's start cleans up; then a new install goes through.
    let mut d = sb.start();
    assert!(d.log().contains("removed .staging-hello"), "{}", d.log());
    assert!(leftovers(&sb).is_empty(), "{:?}", leftovers(&sb));
    fs::remove_file(src.join("install")).unwrap();
    let out = ok(sb.run(&["--install", "hello", "-l", src.to_str().unwrap()]));
    assert!(out.contains("the running daemon reloaded"), "{out}");
    assert_eq!(ok(sb.run(&["-x", "hello"])).trim(), "hello 2.0");
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).is_some());
}

#[test]
fn the_running_daemon_picks_up_installed_and_removed_modules() {
    let sb = Sandbox::new("inst-daemon");
    sb.config("interval = 1");
    let d = sb.start();
    let src = sb.path("src/Watch");
    script(&src.join("check"), "exit 1");
    fs::write(src.join("module.conf"), "version = 0.5\ninterval = 1\n").unwrap();
    let out = ok(sb.run(&["--install", "Watch", "-l", src.to_str().unwrap()]));
    assert!(
        out.contains("the running daemon reloaded its modules"),
        "{out}"
    );
    let listed = |s: &str| {
        s.lines()
            .any(|l| l.split_whitespace().next() == Some("Watch"))
    };
    assert!(
        wait_for(Duration::from_secs(10), || listed(&d.status())),
        "{}\n{}",
        d.status(),
        d.log()
    );
    assert!(
        wait_for(Duration::from_secs(10), || module_row(&d.status(), "Watch")
            [1]
            != "0"),
        "the installed check runs: {}",
        d.status()
    );
    let list = ok(sb.run(&["--list"]));
    assert!(
        list.lines()
            .any(|l| l.starts_with("Watch ") && l.contains(" check ")),
        "{list}"
    );
    // A broken crd.conf is refused by the daemon, but the modules are rescanned.
    let good = sb.read("crd.conf");
    fs::write(sb.conf(), format!("{good}\nno_such_key = 1\n")).unwrap();
    let src2 = sb.path("src/Watch2");
    script(&src2.join("check"), "exit 1");
    // (The installer reads a good copy; only the daemon re-reads the broken one.)
    let copy = sb.path("installer.conf");
    fs::write(&copy, &good).unwrap();
    let out = ok(run_to_end(crd_command(
        &copy,
        &["--install", "Watch2", "-l", src2.to_str().unwrap()],
    )));
    assert!(out.contains("the config was refused"), "{out}");
    let status = || run_to_end(crd_command(&copy, &["status"])).1;
    assert!(
        wait_for(Duration::from_secs(10), || status()
            .lines()
            .any(|l| l.starts_with("Watch2 "))),
        "{}",
        status()
    );
    fs::write(sb.conf(), good).unwrap();
    ok(sb.run(&["--remove", "Watch"]));
    assert!(
        wait_for(Duration::from_secs(10), || !listed(&d.status())),
        "{}",
        d.status()
    );
}

#[test]
fn without_git_git_locations_fail_clearly_and_the_rest_works() {
    let sb = Sandbox::new("inst-nogit");
    // PATH holds gzip and nothing else.
    let bin = sb.path("bin");
    fs::create_dir_all(&bin).unwrap();
    let gzip = ["/bin/gzip", "/usr/bin/gzip"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap();
    std::os::unix::fs::symlink(gzip, bin.join("gzip")).unwrap();
    let run = |args: &[&str]| {
        let mut c = sb.crd(args);
        c.env("PATH", &bin);
        run_to_end(c)
    };
    let (code, _, err) = run(&[
        "--install",
        "hello",
        "-l",
        "https://git.example.org/ops/hello.git",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("git is not installed"), "{err}");
    support_module(&sb.path("src/hello"), "hello", "1.0");
    assert_eq!(
        run(&[
            "--install",
            "hello",
            "-l",
            sb.path("src/hello").to_str().unwrap()
        ])
        .0,
        0
    );
    tar_gz(&sb.path("src"), "hello", &sb.path("hello.tar.gz"));
    let r = run(&[
        "--install",
        "hello",
        "-l",
        sb.path("hello.tar.gz").to_str().unwrap(),
    ]);
    assert_eq!(r.0, 0, "{r:?}");
    assert!(r.1.contains("sha256:"), "{r:?}");
}

#[test]
fn install_and_remove_need_write_access_to_modules_dir() {
    let sb = Sandbox::new("inst-perm");
    support_module(&sb.path("src/hello"), "hello", "1.0");
    fs::set_permissions(sb.path("crd.conf"), fs::Permissions::from_mode(0o644)).unwrap();
    // Run as an unprivileged user (root ignores directory modes), with a copy of the
    // binary that user can reach.
    let bin = sb.path("crd-copy");
    let real = std::env::var("CRD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_crd").into());
    fs::copy(real, &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin);
        c
    } else {
        fs::set_permissions(sb.path("modules"), fs::Permissions::from_mode(0o555)).unwrap();
        Command::new(&bin)
    };
    cmd.arg("-c").arg(sb.conf());
    cmd.args([
        "--install",
        "hello",
        "-l",
        sb.path("src/hello").to_str().unwrap(),
    ]);
    let (code, _, err) = run_to_end(cmd);
    fs::set_permissions(sb.path("modules"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot write to modules_dir"), "{err}");
    assert!(err.contains("need write access"), "{err}");
}
