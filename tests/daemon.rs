//! Integration tests of the daemon: the real `crd` binary, real `/bin/sh` modules in a
//! temp dir, real signals.

mod common;
use common::*;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(20);

#[test]
fn a_check_that_fires_runs_its_response_with_the_crd_environment() {
    let sb = Sandbox::new("fires");
    sb.module(
        "Full",
        "echo 'disk 97%'\nexit 0",
        Some("printf '%s|%s|%s|%s|%s' \"$CRD_MODULE\" \"$CRD_NODE\" \"$CRD_CHECK_OUTPUT\" \"$CRD_CHECK_CODE\" \"$(pwd)\" > ../../responded\nprintf '%s' \"$HOME$USER\" > ../../leaked"),
    );
    sb.config("interval = 1");
    let d = sb.start();
    // The shell creates the file before it writes it: wait for the content.
    assert!(
        wait_for(LONG, || !sb.read("responded").is_empty()),
        "{}",
        d.log()
    );
    let dir = sb.path("modules/Full");
    assert_eq!(
        sb.read("responded"),
        format!("Full|testnode|disk 97%|0|{}", dir.display())
    );
    assert_eq!(sb.read("leaked"), "", "environment must be cleared");
    assert!(
        wait_for(LONG, || d.log().contains("kind=response code=0")),
        "{}",
        d.log()
    );
    let log = d.log();
    assert!(log.contains("event module=Full kind=fired code=0"), "{log}");
}

#[test]
fn a_check_that_never_fires_never_responds_and_makes_no_events() {
    let sb = Sandbox::new("quiet");
    sb.module(
        "Quiet",
        "echo run >> ../../runs\nexit 1",
        Some("touch ../../responded"),
    );
    sb.config("interval = 200ms");
    let d = sb.start();
    assert!(
        wait_for(LONG, || count_lines(&sb.path("runs")) >= 5),
        "{}",
        d.log()
    );
    assert!(!sb.exists("responded"));
    assert!(!d.log().contains("event module=Quiet"), "{}", d.log());
    let row = module_row(&d.status(), "Quiet");
    assert_eq!(row[0], "ok");
    assert!(row[1].parse::<u32>().unwrap() >= 5);
    assert_eq!(&row[2..5], ["0", "0", "0"]);
}

#[test]
fn check_errors_are_events_without_response() {
    let sb = Sandbox::new("errors");
    sb.module(
        "Broken",
        "echo oops >&2\nexit 7",
        Some("touch ../../responded"),
    );
    sb.config("interval = 200ms");
    let d = sb.start();
    assert!(
        wait_for(LONG, || d
            .log()
            .contains("event module=Broken kind=error code=7")),
        "{}",
        d.log()
    );
    assert!(d.log().contains("oops"));
    assert!(!sb.exists("responded"));
}

#[test]
fn trigger_after_and_cooldown_apply_in_the_daemon() {
    let sb = Sandbox::new("trigger");
    sb.module(
        "Flappy",
        "echo x >> ../../runs\nexit 0",
        Some("echo r >> ../../responses"),
    );
    sb.config("interval = 100ms\ntrigger_after = 3\ncooldown = 1h");
    let d = sb.start();
    assert!(
        wait_for(LONG, || count_lines(&sb.path("runs")) >= 8),
        "{}",
        d.log()
    );
    // Third hit responds; cooldown of an hour holds back every later one.
    assert_eq!(count_lines(&sb.path("responses")), 1);
}

#[test]
fn broken_modules_are_skipped_with_a_warning_and_the_rest_run() {
    let sb = Sandbox::new("skip");
    sb.module("Good", "touch ../../good\nexit 1", None);
    sb.module("Open", "exit 0", None);
    sb.script("modules/NoExec/check", "exit 0");
    std::fs::set_permissions(
        sb.path("modules/Open/check"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    std::fs::set_permissions(
        sb.path("modules/NoExec/check"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    sb.config("interval = 1");
    let d = sb.start();
    assert!(wait_for(LONG, || sb.exists("good")), "{}", d.log());
    let log = d.log();
    assert!(
        log.contains("module Open:") && log.contains("world-writable"),
        "{log}"
    );
    assert!(
        log.contains("module NoExec:") && log.contains("not executable"),
        "{log}"
    );
    assert!(log.contains("1 modules (1 enabled)"), "{log}");
}

#[test]
fn sighup_applies_a_good_config_and_keeps_the_old_one_on_a_broken_one() {
    let sb = Sandbox::new("hup");
    sb.module("A", "echo a >> ../../a\nexit 1", None);
    sb.config("interval = 200ms\n[module B]\nenabled = no");
    sb.module("B", "echo b >> ../../b\nexit 1", None);
    let d = sb.start();
    assert!(wait_for(LONG, || count_lines(&sb.path("a")) >= 2));
    assert_eq!(count_lines(&sb.path("b")), 0, "B is disabled");

    sb.config("interval = 200ms\n");
    d.signal(libc::SIGHUP);
    assert!(
        wait_for(LONG, || count_lines(&sb.path("b")) >= 2),
        "{}",
        d.log()
    );

    sb.config("interval = 200ms\ninterval = 5s\nbogus = 1");
    d.signal(libc::SIGHUP);
    assert!(
        wait_for(LONG, || d
            .log()
            .contains("reload failed, keeping the running config")),
        "{}",
        d.log()
    );
    let log = d.log();
    assert!(
        log.contains("crd.conf:6: key `interval`: duplicate key"),
        "{log}"
    );
    assert!(
        log.contains("crd.conf:7: key `bogus`: unknown key"),
        "{log}"
    );
    let before = count_lines(&sb.path("b"));
    assert!(
        wait_for(LONG, || count_lines(&sb.path("b")) >= before + 2),
        "still on the old schedule"
    );
}

#[test]
fn sighup_keeps_running_children() {
    let sb = Sandbox::new("hup-run");
    sb.module("Slow", "sleep 1\necho done >> ../../done\nexit 1", None);
    sb.config("interval = 300ms\ntimeout = 10s");
    let d = sb.start();
    assert!(wait_for(LONG, || module_row(&d.status(), "Slow")[0] == "running"));
    d.signal(libc::SIGHUP);
    assert!(wait_for(LONG, || sb.exists("done")), "{}", d.log());
    assert!(!d.log().contains("error"), "{}", d.log());
}

#[test]
fn sigterm_exits_zero_and_leaves_no_child_behind() {
    let sb = Sandbox::new("term");
    sb.module(
        "Sleeper",
        "sleep 7341 &\necho $! > ../../gc\nsleep 7341",
        None,
    );
    sb.config("interval = 1\ntimeout = 1h");
    let mut d = sb.start();
    assert!(wait_for(LONG, || sb
        .read("gc")
        .trim()
        .parse::<i32>()
        .is_ok()));
    let gc: i32 = sb.read("gc").trim().parse().unwrap();
    assert!(alive(gc));
    d.signal(libc::SIGTERM);
    let st = d.wait_exit(LONG).expect("crd exits after SIGTERM");
    assert_eq!(st.code(), Some(0), "{}", d.log());
    assert!(wait_for(LONG, || !alive(gc)), "grandchild survived");
    assert!(wait_for(LONG, || pids_with("sleep 7341").is_empty()));
    assert!(!sb.exists("crd.sock"), "control socket removed on exit");
}

/// A daemon that dies of a signal says so in its log (a router build's panic is a
/// trap, with no message of its own), and still dies of that signal.
#[test]
fn a_fatal_signal_is_named_in_the_log_and_still_ends_the_daemon() {
    use std::os::unix::process::ExitStatusExt;
    let sb = Sandbox::new("fatal");
    sb.config("interval = 1h");
    let mut d = sb.start();
    d.signal(libc::SIGSEGV);
    let st = d.wait_exit(LONG).expect("crd ends on SIGSEGV");
    assert_eq!(st.signal(), Some(libc::SIGSEGV), "{st:?}\n{}", d.log());
    assert!(
        d.log()
            .contains("crd: fatal signal 11 (SIGSEGV): a bug in crd, please report it"),
        "{}",
        d.log()
    );
}

/// A daemon whose module `Hit` fires every 200 ms (and `more` modules beside
/// it), once `Hit` has run twice.
fn hit_twice(sb: &Sandbox, more: &[(&str, &str)]) -> Daemon {
    sb.module("Hit", "exit 0", Some("exit 0"));
    for (name, check) in more {
        sb.module(name, check, None);
    }
    sb.config("interval = 200ms");
    let d = sb.start();
    assert!(wait_for(LONG, || module_row(&d.status(), "Hit")[3]
        .parse::<u32>()
        .unwrap_or(0)
        >= 2));
    d
}

#[test]
fn status_reports_modules_and_counters() {
    let sb = Sandbox::new("status");
    let d = hit_twice(&sb, &[]);
    let s = d.status();
    assert!(s.starts_with("crd "), "{s}");
    assert!(stat_of(&s, "starts") >= 2);
    assert_eq!(stat_of(&s, "modules"), 1);
    let row = module_row(&s, "Hit");
    assert_eq!(row[0], "firing");
    // The last outcome: the role (its response ran last) and the exit code.
    assert!(
        s.lines()
            .any(|l| l.starts_with("Hit ") && l.contains("response exit 0")),
        "{s}"
    );
}

#[test]
fn status_json_is_one_object_with_every_figure_the_text_prints() {
    let sb = Sandbox::new("statusjson");
    let d = hit_twice(&sb, &[("Quiet", "exit 1")]);
    let text = d.status();
    let (code, out, err) = sb.run(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).expect("one JSON object");
    let o = j.as_object().unwrap();
    assert_eq!(o["pid"], d.pid() as u64);
    // Every `key: value` line of the text is a key of the object, of the same
    // kind (the figures move between the two reads: a number stays a number).
    let mut keys = 0;
    for line in text.lines().skip(1).take_while(|l| !l.is_empty()) {
        let (k, v) = line.split_once(": ").unwrap();
        let (k, v) = match v.strip_suffix("s ago") {
            Some(n) => (format!("{k}_s_ago"), n),
            None if v == "never" => (format!("{k}_s_ago"), v),
            None => (k.to_string(), v),
        };
        let got = o
            .get(&k)
            .unwrap_or_else(|| panic!("{k} missing from {out}"));
        match v.parse::<u64>() {
            Ok(n) => assert!(got.is_u64(), "{k}: {got} for {n}"),
            Err(_) if v == "-" || v == "never" => {
                assert!(got.is_null() || got.is_u64(), "{k}: {got}")
            }
            Err(_) if v == "yes" || v == "no" => assert_eq!(got, &(v == "yes"), "{k}"),
            Err(_) => assert_eq!(got, v, "{k}"),
        }
        keys += 1;
    }
    assert!(keys >= 30, "{keys} figures");
    assert_eq!(o["modules"], 2);
    assert_eq!(o["spool_state"], "ok");
    assert!(
        o["mqtt_last_error"].is_null(),
        "printed only when there is one"
    );
    let mods = o["module_table"].as_array().unwrap();
    let hit = mods.iter().find(|m| m["name"] == "Hit").unwrap();
    assert_eq!(hit["state"], "firing");
    assert!(hit["runs"].as_u64().unwrap() >= 2 && hit["fired"].as_u64() >= Some(1));
    assert!(
        hit["last"].as_str().unwrap().starts_with("response"),
        "{hit}"
    );
    assert!(hit["next_s"].is_u64() && hit["last_s_ago"].is_u64());
    let quiet = mods.iter().find(|m| m["name"] == "Quiet").unwrap();
    assert_eq!(quiet["state"], "ok");
}

#[test]
fn status_without_a_daemon_fails_clearly() {
    let sb = Sandbox::new("nostatus");
    let (code, _, err) = sb.run(&["status"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot reach the daemon") && err.contains("crd.sock"),
        "{err}"
    );
}

#[test]
fn a_second_daemon_on_the_same_socket_refuses_to_start() {
    let sb = Sandbox::new("twice");
    sb.config("interval = 1");
    let _d = sb.start();
    let (code, _, err) = sb.run(&[]);
    assert_eq!(code, 1);
    assert!(err.contains("is locked by another crd"), "{err}");
    // Another spool, the same socket: refused too, naming the socket.
    let other = sb.path("other.conf");
    let text = sb.read("crd.conf").replace("/spool\n", "/spool2\n");
    std::fs::write(&other, text).unwrap();
    let (code, _, err) = common::run_to_end(common::crd_command(&other, &[]));
    assert_eq!(code, 1);
    assert!(err.contains("is in use: is another crd running?"), "{err}");
}

#[test]
fn an_idle_daemon_wakes_only_for_due_checks() {
    let sb = Sandbox::new("idle");
    sb.module("Rare", "echo r >> ../../runs\nexit 1", None);
    sb.config("interval = 1");
    let d = sb.start();
    assert!(wait_for(LONG, || count_lines(&sb.path("runs")) >= 4));
    let s = d.status();
    let runs = module_row(&s, "Rare")[1].parse::<u64>().unwrap();
    let wakeups = stat_of(&s, "wakeups");
    // Per run: the due timer, pipe data/EOF, SIGCHLD, plus the status requests.
    // A busy loop would show thousands.
    assert!(
        wakeups <= runs * 6 + 10,
        "{wakeups} wake-ups for {runs} runs"
    );
}

#[test]
fn two_hundred_modules_at_one_second_all_run_on_time() {
    let sb = Sandbox::new("many");
    for i in 0..200 {
        sb.module(&format!("M{i:03}"), "exit 1", None);
    }
    sb.config("interval = 1\nmax_parallel = 16");
    let d = sb.start();
    assert!(
        wait_for(LONG, || stat_of(&d.status(), "starts") >= 800),
        "{}",
        d.log()
    );
    let s = d.status();
    for i in 0..200 {
        let row = module_row(&s, &format!("M{i:03}"));
        assert!(row[1].parse::<u32>().unwrap() >= 3, "{row:?}");
        assert_eq!(row[4], "0", "errors: {row:?}");
        assert_eq!(row[5], "0", "overruns: {row:?}");
    }
}

#[test]
fn a_check_that_cannot_be_executed_is_an_error_with_the_reason() {
    let sb = Sandbox::new("noexec");
    sb.script("modules/Ghost/check", "exit 0");
    std::fs::write(
        sb.path("modules/Ghost/check"),
        "#!/nonexistent/interpreter\n",
    )
    .unwrap();
    sb.module("Tick", "echo t >> ../../ticks\nexit 1", None);
    sb.config("interval = 300ms");
    let d = sb.start();
    assert!(
        wait_for(LONG, || d
            .log()
            .contains("event module=Ghost kind=error code=127")),
        "{}",
        d.log()
    );
    assert!(
        d.log().contains("cannot start") && d.log().contains("No such file"),
        "{}",
        d.log()
    );
    assert!(
        wait_for(LONG, || count_lines(&sb.path("ticks")) >= 2),
        "the loop goes on"
    );
}

#[test]
fn children_get_default_signal_dispositions_not_crds() {
    let sb = Sandbox::new("sigdfl");
    // crd ignores SIGPIPE and catches CHLD/TERM/INT/HUP; a child must not inherit that.
    sb.module(
        "Dfl",
        "sh -c 'kill -PIPE $$; exit 0'; echo \"pipe=$?\" > ../../codes\nsh -c 'kill -HUP $$; exit 0'; echo \"hup=$?\" >> ../../codes\nexit 1",
        None,
    );
    sb.config("interval = 1h");
    let d = sb.start();
    assert!(
        wait_for(LONG, || count_lines(&sb.path("codes")) == 2),
        "{}",
        d.log()
    );
    assert_eq!(sb.read("codes"), "pipe=141\nhup=129\n");
}

#[test]
fn nul_bytes_in_check_output_reach_the_response_without_them() {
    let sb = Sandbox::new("nul");
    sb.module(
        "Nul",
        "printf 'a\\000b'\nexit 0",
        Some("printf '%s' \"$CRD_CHECK_OUTPUT\" > ../../seen"),
    );
    sb.config("interval = 1h");
    let d = sb.start();
    assert!(wait_for(LONG, || sb.read("seen") == "ab"), "{}", d.log());
}

#[test]
fn a_broken_stderr_pipe_does_not_stop_the_daemon() {
    let sb = Sandbox::new("brokenlog");
    sb.module("Tick", "echo t >> ../../ticks\nexit 0", Some("exit 0"));
    sb.config("interval = 200ms\nlog_level = debug");
    let mut child = sb
        .crd(&[])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Nobody reads crd's log any more: every log write now fails with EPIPE.
    drop(child.stderr.take());
    assert!(
        wait_for(LONG, || count_lines(&sb.path("ticks")) >= 5),
        "crd stopped running checks"
    );
    assert!(child.try_wait().unwrap().is_none(), "crd exited");
    crd::child::sys::kill_pid(child.id(), libc::SIGTERM).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
