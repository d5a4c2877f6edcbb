//! The spool through the real binary: events and `crd emit` records survive restarts
//! and SIGKILL, `crd dump` shows them, `crd status` reports the spool, damage and
//! foreign versions are handled as docs/spool.md's reliability list says. No broker: nothing is acked.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(20);

/// `crd dump` as (seq, kind, module, output) rows.
fn dump(sb: &Sandbox) -> Vec<(u64, String, String, String)> {
    let (code, out, err) = sb.run(&["dump"]);
    assert_eq!(code, 0, "crd dump failed: {err}");
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.splitn(7, ' ').collect();
            assert_eq!(f.len(), 7, "dump line `{l}`");
            (
                f[0].parse().unwrap(),
                f[2].to_string(),
                f[3].to_string(),
                f[6].to_string(),
            )
        })
        .collect()
}

/// The oldest segment file of the sandbox's spool.
fn oldest_segment(sb: &Sandbox) -> std::path::PathBuf {
    std::fs::read_dir(sb.path("spool"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .min()
        .expect("a segment")
}

#[test]
fn events_survive_a_restart_and_seq_continues() {
    let sb = Sandbox::new("sp-restart");
    sb.module("Full", "echo over 20 MB", Some("echo cleaned"));
    sb.config("interval = 1");
    let d = sb.start();
    assert!(
        wait_for(LONG, || d.log().contains("kind=response")),
        "{}",
        d.log()
    );
    d.stop(LONG);
    let rows = dump(&sb);
    assert!(rows.len() >= 2, "{rows:?}");
    assert!(
        rows.iter()
            .any(|r| r.1 == "fired" && r.2 == "Full" && r.3 == "\"over 20 MB\""),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r.1 == "response" && r.3 == "\"cleaned\""),
        "{rows:?}"
    );
    let last = rows.last().unwrap().0;

    // Restart: the old records are still there, new seqs continue after them.
    let d = sb.start();
    let (code, out, err) = sb.run(&["emit", "after/restart", "x"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.trim().parse::<u64>().unwrap() > last,
        "seq continues: {out}"
    );
    d.stop(LONG);
    let again = dump(&sb);
    assert_eq!(
        &again[..rows.len()],
        &rows[..],
        "records before the restart are intact"
    );
    assert!(again.windows(2).all(|w| w[0].0 < w[1].0), "in seq order");
}

#[test]
fn emit_records_messages_from_arguments_and_stdin() {
    let sb = Sandbox::new("sp-emit");
    sb.config("spool_max_record = 1k");
    let d = sb.start();
    let (code, out, err) = sb.run(&["emit", "alerts/disk", "disk is full"]);
    assert_eq!(code, 0, "{err}");
    let s1: u64 = out.trim().parse().unwrap();

    let mut c = sb.crd(&["emit", "multi", "-", "--sync"]);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"line one\nline two\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    let s2: u64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    assert!(s2 > s1);

    // Bad input: exit 2 for a bad suffix, 1 for a refused record; both say why.
    let (code, _, err) = sb.run(&["emit", "a//b", "x"]);
    assert_eq!(code, 2);
    assert!(err.contains("bad suffix `a//b`"), "{err}");
    let (code, _, err) = sb.run(&["emit", "status", "x"]);
    assert_eq!(code, 2, "{err}");
    let big = "y".repeat(2000);
    let (code, _, err) = sb.run(&["emit", "big", &big]);
    assert_eq!(code, 1);
    assert!(err.contains("spool_max_record"), "{err}");
    // Near the limit: the framing pushes it over, the daemon refuses it alone.
    let edge = "z".repeat(1015);
    let (code, _, err) = sb.run(&["emit", "edge", &edge]);
    assert_eq!(code, 1);
    assert!(err.contains("message too large"), "{err}");
    let status = d.status();
    assert_eq!(stat_of(&status, "spool_too_large"), 1, "{status}");
    let (code, _, err) = sb.run(&["emit", "after", "ok"]);
    assert_eq!(code, 0, "the daemon goes on: {err}");

    let rows = dump(&sb);
    let emits: Vec<_> = rows.iter().filter(|r| r.1 == "emit").collect();
    assert_eq!(emits.len(), 3, "{rows:?}");
    assert_eq!(
        (emits[0].0, emits[0].2.as_str(), emits[0].3.as_str()),
        (s1, "alerts/disk", "\"disk is full\"")
    );
    assert_eq!(
        (emits[1].0, emits[1].2.as_str(), emits[1].3.as_str()),
        (s2, "multi", "\"line one\\nline two\\n\"")
    );
    d.stop(LONG);
}

#[test]
fn emit_without_a_daemon_fails_clearly() {
    let sb = Sandbox::new("sp-nodaemon");
    let (code, _, err) = sb.run(&["emit", "x", "y"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot reach the daemon") && err.contains("is crd running?"),
        "{err}"
    );
}

#[test]
fn status_reports_the_spool() {
    let sb = Sandbox::new("sp-status");
    let d = sb.start();
    for i in 0..5 {
        let (code, _, err) = sb.run(&["emit", "n", &i.to_string()]);
        assert_eq!(code, 0, "{err}");
    }
    let (code, _, err) = sb.run(&["emit", "n", "synced", "--sync"]);
    assert_eq!(code, 0, "{err}");
    let s = d.status();
    assert_eq!(stat_of(&s, "spool_depth"), 6, "{s}");
    assert_eq!(stat_of(&s, "spool_oldest_unacked_seq"), 1, "{s}");
    assert_eq!(stat_of(&s, "spool_next_seq"), 7, "{s}");
    assert_eq!(stat_of(&s, "spool_dropped"), 0, "{s}");
    assert!(stat_of(&s, "spool_bytes") > 6 * 18, "{s}");
    assert!(
        s.contains("spool_last_sync: 0s ago") || s.contains("spool_last_sync: 1s ago"),
        "{s}"
    );
    assert!(s.contains("spool_state: ok"), "{s}");
    d.stop(LONG);
}

#[test]
fn a_full_spool_drops_the_oldest_segment_and_says_so() {
    let sb = Sandbox::new("sp-full");
    sb.config("spool_size = 8k\nspool_segment = 4k\nspool_max_record = 1k");
    let d = sb.start();
    let msg = "m".repeat(400);
    for _ in 0..40 {
        let (code, _, err) = sb.run(&["emit", "fill", &msg]);
        assert_eq!(code, 0, "{err}");
    }
    let s = d.status();
    let dropped = stat_of(&s, "spool_dropped");
    assert!(dropped > 0, "{s}");
    d.stop(LONG);
    let total: u64 = std::fs::read_dir(sb.path("spool"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(total <= 8 * 1024, "disk use {total} within spool_size");
    let rows = dump(&sb);
    assert!(
        rows.iter()
            .any(|r| r.1 == "error" && r.2 == "spool" && r.3.contains("spool full: dropped")),
        "{rows:?}"
    );
}

#[test]
fn sigkill_while_emitting_loses_no_acknowledged_emit() {
    let sb = Sandbox::new("sp-kill");
    // Small segments so kills also land around rotations.
    sb.config("spool_segment = 16k\nspool_size = 4M\nspool_max_record = 1k");
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let rounds = 12;
    for round in 0..rounds {
        let d = sb.start();
        let conf = sb.conf();
        // Emit from a thread while the daemon is killed at a varying moment.
        let emitter = std::thread::spawn(move || {
            let mut ok = Vec::new();
            for i in 0..400 {
                let msg = format!("r{round}-{i}");
                let (code, out, _) = run_to_end(crd_command(&conf, &["emit", "loop", &msg]));
                if code == 0 {
                    ok.push((out.trim().parse::<u64>().unwrap(), msg));
                } else {
                    break; // the daemon is gone
                }
            }
            ok
        });
        std::thread::sleep(Duration::from_millis(150 + 37 * round as u64 % 200));
        d.signal(libc::SIGKILL);
        let ok = emitter.join().unwrap();
        drop(d);
        for (seq, msg) in ok {
            assert!(acked.insert(seq, msg).is_none(), "seq given twice");
        }
    }
    assert!(
        acked.len() > rounds,
        "the loop emitted something: {}",
        acked.len()
    );
    let rows = dump(&sb);
    let have: BTreeMap<u64, String> = rows
        .into_iter()
        .filter(|r| r.1 == "emit")
        .map(|r| (r.0, r.3.trim_matches('"').to_string()))
        .collect();
    for (seq, msg) in &acked {
        assert_eq!(
            have.get(seq),
            Some(msg),
            "emit {seq} returned 0 but is not in the spool"
        );
    }
    // The daemon starts cleanly on what the kills left.
    let d = sb.start();
    d.stop(LONG);
}

#[test]
fn damage_and_foreign_files_do_not_stop_the_daemon() {
    let sb = Sandbox::new("sp-damage");
    let d = sb.start();
    for i in 0..3 {
        assert_eq!(sb.run(&["emit", "d", &i.to_string()]).0, 0);
    }
    d.stop(LONG);
    let seg = oldest_segment(&sb);
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[0xff; 700]).unwrap();
    f.write_all(&[0xC5, 0xD1, 0xff, 0xff, 0xff, 0xff]).unwrap();
    drop(f);
    std::fs::write(sb.path("spool/README"), "an operator's note").unwrap();
    let d = sb.start();
    assert!(
        d.log().contains("cut a torn tail of 706 bytes"),
        "{}",
        d.log()
    );
    assert!(
        d.log().contains("ignoring foreign file README"),
        "{}",
        d.log()
    );
    assert_eq!(sb.run(&["emit", "d", "3"]).0, 0);
    d.stop(LONG);
    let msgs: Vec<String> = dump(&sb).into_iter().map(|r| r.3).collect();
    assert_eq!(msgs, ["\"0\"", "\"1\"", "\"2\"", "\"3\""]);
}

#[test]
fn an_unknown_spool_version_is_refused_with_a_clear_message() {
    let sb = Sandbox::new("sp-version");
    let d = sb.start();
    d.stop(LONG);
    let seg = oldest_segment(&sb);
    // A version-9 header with a valid CRC, as a future crd would write it.
    let mut b = std::fs::read(&seg).unwrap();
    b[4..6].copy_from_slice(&9u16.to_be_bytes());
    let crc = crd::spool::format::crc32c(&b[0..32]);
    b[32..36].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(&seg, &b).unwrap();
    let (code, _, err) = sb.run(&[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("format version 9") && err.contains("refusing to guess"),
        "{err}"
    );
    let (code, _, err) = sb.run(&["dump"]);
    assert_eq!(code, 1, "{err}");
}
