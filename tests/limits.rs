//! Integration tests of bounded children: hostile checks against the real binary.
//! Each keeps a well-behaved `Tick` module beside it to show the loop keeps its
//! schedule. The heavy tests take a lock so they do not load the machine together.

mod common;
use common::*;
use std::sync::Mutex;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn tick(sb: &Sandbox) {
    sb.module("Tick", "echo t >> ../../ticks\nexit 1", None);
}

#[test]
fn a_hung_check_and_its_pipe_holding_grandchild_die_at_the_timeout() {
    let _g = heavy();
    let sb = Sandbox::new("hang");
    tick(&sb);
    // The grandchild inherits stdout, so the pipe stays open after the check dies.
    sb.module(
        "Hang",
        "sleep 7342 &\necho $! > ../../gc\necho $$ > ../../pid\nsleep 7342",
        Some("touch ../../responded"),
    );
    sb.config("interval = 500ms\n[module Hang]\ninterval = 1h\ntimeout = 1s");
    let d = sb.start();
    assert!(
        wait_for(LONG, || d
            .log()
            .contains("event module=Hang kind=error code=124")),
        "{}",
        d.log()
    );
    let gc: i32 = sb.read("gc").trim().parse().unwrap();
    let pid: i32 = sb.read("pid").trim().parse().unwrap();
    assert!(
        wait_for(LONG, || !alive(gc) && !alive(pid)),
        "check or grandchild survived the timeout"
    );
    assert!(!sb.exists("responded"));
    // Tick ran throughout: at 500 ms, the ~1.1 s of timeout plus grace holds >= 2 ticks.
    let before = count_lines(&sb.path("ticks"));
    assert!(
        wait_for(LONG, || count_lines(&sb.path("ticks")) >= before + 3),
        "{}",
        d.log()
    );
    assert_eq!(
        module_row(&d.status(), "Tick")[5],
        "0",
        "Tick never overran"
    );
}

#[test]
fn a_check_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let _g = heavy();
    let sb = Sandbox::new("ignore-term");
    sb.module(
        "Stubborn",
        "trap '' TERM\necho $$ > ../../pid\nwhile :; do sleep 1; done",
        None,
    );
    sb.config("interval = 1h\ntimeout = 500ms");
    let d = sb.start();
    assert!(
        wait_for(LONG, || d.log().contains("kind=error code=124")),
        "{}",
        d.log()
    );
    let pid: i32 = sb.read("pid").trim().parse().unwrap();
    assert!(!alive(pid));
}

#[test]
fn fifty_megabytes_of_output_complete_with_bounded_output() {
    let _g = heavy();
    let sb = Sandbox::new("chatty");
    tick(&sb);
    sb.module(
        "Chatty",
        "echo FIRST\nhead -c 52428800 /dev/zero | tr '\\0' y\necho\necho LAST\nexit 0",
        Some("printf '%s' \"$CRD_CHECK_OUTPUT\" > ../../seen"),
    );
    sb.config("interval = 500ms\noutput_limit = 4k\n[module Chatty]\ninterval = 1h\ntimeout = 60s");
    let d = sb.start();
    assert!(
        wait_for(Duration::from_secs(90), || sb.exists("seen")
            && d.log().contains("kind=response")),
        "{}",
        d.log()
    );
    let seen = sb.read("seen");
    assert!(seen.len() <= 4096 + 64, "kept {} bytes", seen.len());
    assert!(seen.starts_with("FIRST\n"), "head kept");
    assert!(seen.ends_with("LAST"), "tail kept");
    assert!(
        seen.contains("[... 52424"),
        "dropped count shown: {}",
        &seen[..200]
    );
    assert!(d.log().contains("event module=Chatty kind=fired code=0"));
    assert_eq!(module_row(&d.status(), "Tick")[4], "0");
}

#[test]
fn a_check_past_its_memory_limit_fails_as_an_error_without_response() {
    let _g = heavy();
    let sb = Sandbox::new("memory");
    sb.module(
        "Hog",
        "x=$(head -c 67108864 /dev/zero | tr '\\0' a)\necho ${#x}\nexit 0",
        Some("touch ../../responded"),
    );
    sb.config("interval = 1h\nmemory_limit = 16M");
    let d = sb.start();
    assert!(
        wait_for(LONG, || d.log().contains("event module=Hog kind=error")),
        "{}",
        d.log()
    );
    assert!(!sb.exists("responded"));
    assert!(!d.log().contains("kind=fired"));
}

#[test]
fn a_fork_loop_is_killed_as_a_group_and_the_schedule_holds() {
    let _g = heavy();
    let sb = Sandbox::new("forks");
    tick(&sb);
    sb.module(
        "Forker",
        "while :; do sleep 7343 & done",
        Some("touch ../../responded"),
    );
    sb.config(
        "interval = 500ms\nprocess_limit = 200\n[module Forker]\ninterval = 1h\ntimeout = 1s",
    );
    let d = sb.start();
    assert!(
        wait_for(LONG, || d.log().contains("event module=Forker kind=error")),
        "{}",
        d.log()
    );
    assert!(
        wait_for(LONG, || pids_with("sleep 7343").is_empty()),
        "{} forked sleeps survived",
        pids_with("sleep 7343").len()
    );
    let before = count_lines(&sb.path("ticks"));
    assert!(
        wait_for(LONG, || count_lines(&sb.path("ticks")) >= before + 2),
        "{}",
        d.log()
    );
    assert!(!sb.exists("responded"));
}
