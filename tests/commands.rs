//! Remote commands, the edge's side, end to end: the real `crd` binary,
//! a real mosquitto with persistence on a free loopback port, commands published
//! with `mosquitto_pub`, replies read with `mosquitto_sub`, real `/bin/sh`
//! support modules, SIGKILL.

mod common;
use common::*;
use crd::command::envelope::{self, Command};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const LONG: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A fresh 32-hex-digit id (time, pid and a counter: unique within a run).
fn new_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{:016x}{:08x}{:08x}",
        now_ms() as u128 * 1000 + u128::from(N.fetch_add(1, Ordering::Relaxed)),
        std::process::id(),
        N.load(Ordering::Relaxed)
    )
}

fn command(module: &str, args: &[&str]) -> Command {
    Command {
        id: new_id(),
        module: module.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        from: "test".into(),
        to: String::new(),
        sent: now_ms(),
        ttl_ms: 60_000,
        sig: None,
    }
}

fn publish(port: u16, topic: &str, payload: &[u8]) {
    let mut c = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic, "-s"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (Debian package `mosquitto-clients`)");
    use std::io::Write;
    c.stdin.take().unwrap().write_all(payload).unwrap();
    assert!(c.wait().unwrap().success());
}

fn send(port: u16, c: &Command) {
    publish(
        port,
        &format!("crd/edge1/cmd/{}", c.id),
        &serde_json::to_vec(c).unwrap(),
    );
}

/// A reply as its JSON travels, read here by serde rather than by crd's own
/// `envelope::Reply::parse`, so these tests hold the wire, not the parser.
#[derive(Debug, serde::Deserialize)]
struct Reply {
    node: String,
    reply: String,
    #[serde(default)]
    module: String,
    code: Option<i32>,
    out: Option<String>,
    why: Option<String>,
    detail: Option<String>,
    #[serde(default)]
    resent: bool,
}

/// The replies to `id` received so far.
fn replies(sub: &Subscriber, id: &str) -> Vec<Reply> {
    let topic = format!("crd/edge1/reply/{id} ");
    sub.lines()
        .iter()
        .filter_map(|l| l.strip_prefix(&topic))
        .map(|j| serde_json::from_str(j).unwrap_or_else(|e| panic!("{e}: {j}")))
        .collect()
}

fn wait_reply(sub: &Subscriber, id: &str, kind: &str, d: &Daemon) -> Reply {
    let mut found = None;
    let ok = wait_for(LONG, || {
        found = replies(sub, id).into_iter().rfind(|r| r.reply == kind);
        found.is_some()
    });
    assert!(
        ok,
        "no `{kind}` reply to {id}; replies: {:?}\nlog:\n{}",
        sub.lines(),
        d.log()
    );
    found.unwrap()
}

/// An edge with support modules `Echo` (prints its argv, one per line, counts its
/// runs) and `Forbidden` (not in `commands`), and `Missing` allowed but absent.
fn edge(tag: &str, extra: &str) -> (Sandbox, Broker) {
    let sb = Sandbox::new(tag);
    let b = sb.queueing_broker();
    sb.script(
        "modules/Echo/Echo",
        "echo run >> ../../ran\nfor a in \"$@\"; do echo \"[$a]\"; done\n\
         echo \"id=$CRD_COMMAND_ID from=$CRD_COMMAND_FROM node=$CRD_NODE\"\nexit 3",
    );
    sb.script("modules/Forbidden/Forbidden", "echo no >> ../../ran");
    sb.config_node(
        "edge1",
        &format!(
            "broker = {}\ninterval = 1h\ncommands = Echo Missing Slow\n{extra}",
            b.addr()
        ),
    );
    (sb, b)
}

fn subscribed(d: &Daemon) {
    assert!(
        wait_for(LONG, || d
            .log()
            .contains("mqtt: subscribed to crd/edge1/cmd/+")),
        "{}",
        d.log()
    );
}

#[test]
fn a_command_runs_once_with_its_argv_and_every_refusal_says_why() {
    let (sb, b) = edge("cmd-once", "");
    let d = sb.start();
    subscribed(&d);
    let sub = Subscriber::start(b.port, "crd/edge1/reply/#", "t-once", &sb.path("replies"));

    let c = command("Echo", &["a b", "$(touch pwned)", "*", ""]);
    send(b.port, &c);
    let done = wait_reply(&sub, &c.id, "done", &d);
    assert_eq!(done.code, Some(3), "{done:?}");
    assert_eq!(
        done.out.as_deref().unwrap(),
        format!(
            "[a b]\n[$(touch pwned)]\n[*]\n[]\nid={} from=test node=edge1",
            c.id
        ),
        "argv as sent, no shell"
    );
    assert!(!sb.exists("modules/Echo/pwned"));
    assert_eq!(
        (done.node.as_str(), done.module.as_str()),
        ("edge1", "Echo")
    );
    wait_reply(&sub, &c.id, "accepted", &d);

    // The same id published twice more by mosquitto_pub (a redelivery, a resend, a
    // replay): three times in all, one run, three `done` replies.
    send(b.port, &c);
    send(b.port, &c);
    let resent = || {
        replies(&sub, &c.id)
            .into_iter()
            .filter(|r| r.resent)
            .collect::<Vec<_>>()
    };
    assert!(wait_for(LONG, || resent().len() >= 2), "{:?}", sub.lines());
    for again in resent() {
        assert_eq!((again.reply.as_str(), again.code), ("done", Some(3)));
    }
    let dones = replies(&sub, &c.id)
        .iter()
        .filter(|r| r.reply == "done")
        .count();
    assert_eq!(dones, 3, "one done per copy: {:?}", sub.lines());
    assert_eq!(sb.read("ran"), "run\n", "run once");

    // Refusals, each with its reason; none runs anything.
    let forbidden = command("Forbidden", &[]);
    let missing = command("Missing", &[]);
    let old = Command {
        sent: now_ms() - 7_200_000,
        ttl_ms: 1000,
        ..command("Echo", &[])
    };
    for (c, why) in [
        (&forbidden, "not allowed"),
        (&missing, "unknown module"),
        (&old, "expired"),
    ] {
        send(b.port, c);
        let r = wait_reply(&sub, &c.id, "refused", &d);
        assert_eq!(r.why.as_deref(), Some(why), "{r:?}");
    }
    let bad = new_id();
    publish(b.port, &format!("crd/edge1/cmd/{bad}"), b"{\"id\":1");
    let r = wait_reply(&sub, &bad, "refused", &d);
    assert_eq!(r.why.as_deref(), Some("malformed"));
    publish(b.port, "crd/edge1/cmd/not-an-id", b"{}");
    let r = wait_reply(&sub, "not-an-id", "refused", &d);
    assert!(r.detail.unwrap().contains("bad id"), "detail names the id");
    let huge = vec![b'x'; envelope::MAX_COMMAND_BYTES + 1];
    let hid = new_id();
    publish(b.port, &format!("crd/edge1/cmd/{hid}"), &huge);
    let r = wait_reply(&sub, &hid, "refused", &d);
    assert!(
        r.detail.unwrap().contains("bytes, over"),
        "{:?}",
        sub.lines()
    );
    assert_eq!(sb.read("ran"), "run\n", "nothing else ran");

    let st = d.status();
    assert_eq!(stat_of(&st, "commands_run"), 1, "{st}");
    assert_eq!(stat_of(&st, "commands_refused"), 6, "{st}");
    assert_eq!(stat_of(&st, "commands_duplicates"), 2, "{st}");
    assert_eq!(stat_of(&st, "commands_received"), 9, "{st}");
    // The daemon goes on.
    let c2 = command("Echo", &["again"]);
    send(b.port, &c2);
    wait_reply(&sub, &c2.id, "done", &d);
    assert_eq!(sb.read("ran"), "run\nrun\n");
}

/// Each command gets its own run's exit code while checks end around it: 20
/// modules whose checks exit 1 every 200 ms, and 40 commands whose module exits
/// 0 (a run slot freed by a check whose end was not yet handled once named the
/// command's run, which then reported the check's exit 1).
#[test]
fn a_command_gets_its_own_exit_code_while_checks_end_around_it() {
    let sb = Sandbox::new("cmd-busy");
    let b = sb.queueing_broker();
    sb.script("modules/Ok/Ok", "exit 0");
    for i in 0..20 {
        sb.module(&format!("M{i:02}"), "exit 1", None);
    }
    sb.config_node(
        "edge1",
        &format!("broker = {}\ninterval = 200ms\ncommands = Ok\n", b.addr()),
    );
    let d = sb.start();
    subscribed(&d);
    let sub = Subscriber::start(b.port, "crd/edge1/reply/#", "t-busy", &sb.path("replies"));
    for _ in 0..40 {
        let c = command("Ok", &[]);
        send(b.port, &c);
        let r = wait_reply(&sub, &c.id, "done", &d);
        assert_eq!(r.code, Some(0), "{r:?}");
    }
}

/// A command sent while the router is offline is queued by the broker (persistent
/// session) and runs when it comes back.
#[test]
fn a_command_sent_while_the_edge_is_offline_runs_when_it_returns() {
    let (sb, b) = edge("cmd-offline", "");
    let mut d = sb.start();
    subscribed(&d);
    d.signal(libc::SIGTERM);
    d.wait_exit(LONG).expect("stopped");
    let sub = Subscriber::start(b.port, "crd/edge1/reply/#", "t-off", &sb.path("replies"));
    let c = command("Echo", &["late"]);
    send(b.port, &c);
    assert!(!sb.exists("ran"));
    let d = sb.start();
    let r = wait_reply(&sub, &c.id, "done", &d);
    assert!(r.out.unwrap().starts_with("[late]\n"));
}

/// A run cut by SIGKILL (and its child killed, as a power cut would) is answered
/// `interrupted` after the restart and never run again, also when the command
/// arrives again.
#[test]
fn a_run_cut_by_a_crash_is_interrupted_and_never_run_twice() {
    let (sb, b) = edge("cmd-kill", "");
    sb.script("modules/Slow/Slow", "echo run >> ../../ran\nexec sleep 60");
    let mut d = sb.start();
    subscribed(&d);
    let sub = Subscriber::start(b.port, "crd/edge1/reply/#", "t-kill", &sb.path("replies"));
    let c = command("Slow", &[]);
    send(b.port, &c);
    assert!(wait_for(LONG, || sb.exists("ran")), "{}", d.log());
    d.signal(libc::SIGKILL);
    d.wait_exit(LONG).expect("killed");
    // The power cut takes the child too.
    for pid in pids_with("sleep 60") {
        let _ = crd::child::sys::kill_pid(pid as u32, libc::SIGKILL);
    }
    let d = sb.start();
    let r = wait_reply(&sub, &c.id, "interrupted", &d);
    assert_eq!(r.module, "Slow");
    send(b.port, &c);
    assert!(
        wait_for(LONG, || replies(&sub, &c.id).iter().any(|r| r.resent)),
        "{:?}",
        sub.lines()
    );
    let again = replies(&sub, &c.id).into_iter().find(|r| r.resent).unwrap();
    assert_eq!(again.reply, "interrupted");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sb.read("ran"), "run\n", "never run twice");
    assert_eq!(d.stat("commands_interrupted"), 1);
}

/// Publishes `msgs` (topic, payload) at QoS 1 on one MQTT 3.1.1 connection and
/// waits for every PUBACK: a flood in one process, where `mosquitto_pub` would
/// be one process a message.
fn publish_many(port: u16, msgs: &[(String, Vec<u8>)]) {
    use std::io::{Read, Write};
    fn packet(first: u8, body: &[u8]) -> Vec<u8> {
        let (mut p, mut n) = (vec![first], body.len());
        loop {
            let b = (n % 128) as u8;
            n /= 128;
            p.push(if n > 0 { b | 128 } else { b });
            if n == 0 {
                break;
            }
        }
        p.extend_from_slice(body);
        p
    }
    fn string(b: &mut Vec<u8>, s: &[u8]) {
        b.extend_from_slice(&(s.len() as u16).to_be_bytes());
        b.extend_from_slice(s);
    }
    let mut t = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    t.set_read_timeout(Some(LONG)).unwrap();
    let mut c = Vec::new();
    string(&mut c, b"MQTT");
    c.extend_from_slice(&[4, 2, 0, 60]);
    string(&mut c, format!("t-flood-{}", std::process::id()).as_bytes());
    t.write_all(&packet(0x10, &c)).unwrap();
    let mut connack = [0u8; 4];
    t.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    let mut out = Vec::new();
    for (i, (topic, payload)) in msgs.iter().enumerate() {
        let mut b = Vec::new();
        string(&mut b, topic.as_bytes());
        b.extend_from_slice(&(i as u16 + 1).to_be_bytes());
        b.extend_from_slice(payload);
        out.extend_from_slice(&packet(0x32, &b));
    }
    t.write_all(&out).unwrap();
    let mut acks = vec![0u8; 4 * msgs.len()];
    t.read_exact(&mut acks).unwrap();
    assert!(acks.chunks(4).all(|a| a[0] == 0x40), "PUBACKs");
    t.write_all(&[0xe0, 0]).unwrap();
}

/// Past the table's bound (`EDGE.max_ids`, 128) the oldest ended id is forgotten; a copy of
/// it arriving later is refused as `expired` (sent no later than the newest id
/// forgotten), never run again, though its ttl has not passed.
#[test]
fn a_command_forgotten_at_the_bound_is_refused_not_run_again() {
    let (sb, b) = edge("cmd-bound", "");
    let d = sb.start();
    subscribed(&d);
    let sub = Subscriber::start(b.port, "crd/edge1/reply/#", "t-bound", &sb.path("replies"));
    let first = Command {
        sent: now_ms() - 1000,
        ..command("Echo", &["first"])
    };
    send(b.port, &first);
    wait_reply(&sub, &first.id, "done", &d);
    let flood: Vec<Command> = (0..crd::command::table::EDGE.max_ids)
        .map(|_| command("Forbidden", &[]))
        .collect();
    let msgs: Vec<(String, Vec<u8>)> = flood
        .iter()
        .map(|c| {
            (
                format!("crd/edge1/cmd/{}", c.id),
                serde_json::to_vec(c).unwrap(),
            )
        })
        .collect();
    publish_many(b.port, &msgs);
    let last = &flood.last().unwrap().id;
    wait_reply(&sub, last, "refused", &d);
    let before = replies(&sub, &first.id).len();
    send(b.port, &first);
    assert!(
        wait_for(LONG, || replies(&sub, &first.id).len() > before),
        "{}",
        d.log()
    );
    let r = replies(&sub, &first.id).pop().unwrap();
    assert_eq!(
        (r.reply.as_str(), r.why.as_deref()),
        ("refused", Some("expired"))
    );
    assert!(r.detail.unwrap().contains("no longer remembers"));
    assert_eq!(sb.read("ran"), "run\n", "run once");
    assert_eq!(d.stat("commands_run"), 1);
}

/// A flood of 10,000 commands on one connection: the edge takes what the broker
/// delivers (mosquitto queues at most 1000 per client and drops the rest), runs
/// them one at a time, refuses the ones past 16 waiting as `busy` (logged at a
/// bounded rate), keeps its checks on schedule throughout, and takes the next
/// command as usual; a 10 MB command is refused on the same connection.
#[test]
fn a_flood_of_commands_is_bounded_and_checks_stay_on_schedule() {
    let (sb, b) = edge("cmd-flood", "");
    sb.module("Tick", "date +%s%N >> ../../ticks\nexit 1", None);
    let text = sb.read("crd.conf").replace("interval = 1h", "interval = 1");
    sb.write("crd.conf", &text);
    let d = sb.start();
    subscribed(&d);
    let flood: Vec<(String, Vec<u8>)> = (0..10_000)
        .map(|i| {
            let c = command("Echo", &[&i.to_string()]);
            (
                format!("crd/edge1/cmd/{}", c.id),
                serde_json::to_vec(&c).unwrap(),
            )
        })
        .collect();
    let t0 = std::time::Instant::now();
    publish_many(b.port, &flood);
    // Until nothing more comes (the broker's queue drained) and none waits, 3 s
    // at least.
    let mut last = (0, std::time::Instant::now());
    while t0.elapsed() < Duration::from_secs(3)
        || last.1.elapsed() < Duration::from_secs(2)
        || d.stat("commands_waiting") > 0
    {
        assert!(t0.elapsed() < LONG, "still receiving: {}", d.status());
        let n = d.stat("commands_received");
        if n != last.0 {
            last = (n, std::time::Instant::now());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = d.status();
    let (received, run, refused) = (
        stat_of(&st, "commands_received"),
        stat_of(&st, "commands_run"),
        stat_of(&st, "commands_refused"),
    );
    assert!(received >= 1000, "{st}");
    assert_eq!(
        received,
        run + refused + stat_of(&st, "commands_waiting"),
        "{st}"
    );
    assert!(run >= 16 && refused > 0, "{st}");
    let busy = d.log().matches("refused: busy").count();
    assert!(busy > 0 && busy <= 20, "logged at a bounded rate: {busy}");
    // The checks kept their one-second schedule through the flood.
    let ticks: Vec<u128> = sb
        .read("ticks")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(ticks.len() >= 3, "{ticks:?}");
    let gap = ticks.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(gap < 1_500_000_000, "a check {gap} ns late");
    // And the next command runs as usual.
    let sub = Subscriber::start(b.port, "crd/edge1/reply/#", "t-flood", &sb.path("replies"));
    let c = command("Echo", &["after"]);
    send(b.port, &c);
    let r = wait_reply(&sub, &c.id, "done", &d);
    assert!(r.out.unwrap().starts_with("[after]\n"));
    // A 10 MB command: refused, read through without holding it.
    let id = new_id();
    publish(
        b.port,
        &format!("crd/edge1/cmd/{id}"),
        &vec![b'x'; 10_000_000],
    );
    let r = wait_reply(&sub, &id, "refused", &d);
    assert_eq!(r.detail.as_deref(), Some("10000000 bytes, over 16384"));
    assert!(d.stat("mqtt_connects") == 1, "{}", d.log());
}

/// With `command_key_file`, only commands signed with that key for this node run;
/// a key file others can read turns commands off.
#[test]
fn signed_commands_run_and_unsigned_or_misdirected_ones_do_not() {
    let (sb, b) = edge("cmd-sig", "");
    let key = b"0123456789abcdef0123456789abcdef-secret\n";
    sb.write("cmd.key", std::str::from_utf8(key).unwrap());
    let keyfile = sb.path("cmd.key");
    fs::set_permissions(&keyfile, fs::Permissions::from_mode(0o644)).unwrap();
    let conf = sb.read("crd.conf");
    fs::write(
        sb.conf(),
        format!("{conf}command_key_file = {}\n", keyfile.display()),
    )
    .unwrap();
    {
        let d = sb.start();
        assert!(
            wait_for(LONG, || d.log().contains("remote commands are off")),
            "{}",
            d.log()
        );
        assert!(d.log().contains("must be 0600"), "{}", d.log());
        assert!(!d.log().contains("cmd/+"), "not subscribed: {}", d.log());
    }
    fs::set_permissions(&keyfile, fs::Permissions::from_mode(0o600)).unwrap();
    let d = sb.start();
    subscribed(&d);
    assert!(d.log().contains("(signed: yes)"), "{}", d.log());
    let sub = Subscriber::start(b.port, "crd/edge1/reply/#", "t-sig", &sb.path("replies"));
    let k = &key[..key.len() - 1];

    let unsigned = command("Echo", &["x"]);
    let mut forged = command("Echo", &["x"]);
    forged.sig = Some(envelope::sign(
        b"another key of at least 32 bytes!!",
        "edge1",
        &forged,
    ));
    let mut elsewhere = command("Echo", &["x"]);
    elsewhere.sig = Some(envelope::sign(k, "edge2", &elsewhere));
    let mut stretched = command("Echo", &["x"]);
    stretched.sig = Some(envelope::sign(k, "edge1", &stretched));
    stretched.ttl_ms *= 1000;
    for c in [&unsigned, &forged, &elsewhere, &stretched] {
        send(b.port, c);
        let r = wait_reply(&sub, &c.id, "refused", &d);
        assert_eq!(r.why.as_deref(), Some("bad signature"), "{c:?}");
    }
    assert!(!sb.exists("ran"));
    // A forged copy does not take the id: the real command with it still runs.
    let mut good = unsigned.clone();
    good.sig = Some(envelope::sign(k, "edge1", &good));
    send(b.port, &good);
    let r = wait_reply(&sub, &good.id, "done", &d);
    assert_eq!(r.code, Some(3));
    assert_eq!(sb.read("ran"), "run\n");
    // A changed copy of the known id, with the genuine signature: a forgery,
    // refused before the id is looked up; the earlier `done` is not revealed.
    let mut tampered = good.clone();
    tampered.args = vec!["y".into()];
    send(b.port, &tampered);
    let r = wait_reply(&sub, &good.id, "refused", &d);
    assert_eq!(r.why.as_deref(), Some("bad signature"), "{r:?}");
    let dones = replies(&sub, &good.id);
    assert_eq!(
        dones.iter().filter(|r| r.reply == "done").count(),
        1,
        "{dones:?}"
    );
    assert_eq!(sb.read("ran"), "run\n");
}

/// `crd send` from a central host: signed with the central config's key, it waits
/// for the answer and exits with the remote exit code, or with the documented code
/// for each kind of refusal and for silence.
#[cfg(feature = "collector")]
#[test]
fn crd_send_signs_waits_and_exits_with_the_answer() {
    let (sb, b) = edge("cmd-send", "");
    let central = Sandbox::new("cmd-send-central");
    let key = "a shared secret of more than 32 bytes\n";
    for s in [&sb, &central] {
        s.write("cmd.key", key);
        fs::set_permissions(s.path("cmd.key"), fs::Permissions::from_mode(0o600)).unwrap();
        let conf = s.read("crd.conf");
        fs::write(
            s.conf(),
            format!("{conf}command_key_file = {}\n", s.path("cmd.key").display()),
        )
        .unwrap();
    }
    central.config_node(
        "central",
        &format!(
            "broker = {}\ncommand_key_file = {}\n",
            b.addr(),
            central.path("cmd.key").display()
        ),
    );
    let mut d = sb.start();
    subscribed(&d);

    let (code, out, err) = central.run(&["send", "--wait", "20s", "edge1", "Echo", "a b", "-x"]);
    assert_eq!(code, 3, "the remote exit code\n{out}\n{err}\n{}", d.log());
    let lines: Vec<&str> = out.lines().collect();
    assert!(envelope::valid_id(lines[0]), "{out}");
    assert_eq!(lines[1], "accepted by edge1", "{out}");
    assert!(lines[2].starts_with("done: exit 3 in "), "{out}");
    assert_eq!(lines[3..5], ["[a b]", "[-x]"], "{out}");
    assert!(
        lines[5].contains("from=central node=edge1"),
        "CRD_COMMAND_FROM is the sender's node: {out}"
    );

    let (code, _, err) = central.run(&["send", "--wait", "20s", "edge1", "Forbidden"]);
    assert_eq!(code, 77, "{err}");
    assert!(
        err.contains("edge1 refused the command: not allowed"),
        "{err}"
    );

    // Nobody answers for a node that is not there.
    let (code, _, err) = central.run(&["send", "--wait", "1s", "nobody", "Echo"]);
    assert_eq!(code, 124, "{err}");
    assert!(err.contains("no final answer from nobody"), "{err}");

    // Without --wait: out once the broker has it. Sent with `--ttl 1s` while the
    // edge is down; it starts 3 s later: expired when it gets there.
    d.signal(libc::SIGTERM);
    d.wait_exit(LONG).expect("stopped");
    let (code, out, err) = central.run(&["send", "--ttl", "1s", "edge1", "Echo"]);
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_string();
    // And one that waits: the node's `expired` is exit 78.
    let waiter = central
        .crd(&["send", "--ttl", "1s", "--wait", "30s", "edge1", "Echo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sub = Subscriber::start(b.port, "crd/edge1/reply/#", "t-send", &sb.path("replies"));
    std::thread::sleep(Duration::from_secs(3));
    let d = sb.start();
    let r = wait_reply(&sub, &id, "refused", &d);
    assert_eq!(r.why.as_deref(), Some("expired"), "{r:?}");
    let out = waiter.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("edge1 refused the command: expired"), "{err}");
    assert_eq!(sb.read("ran"), "run\n");

    // Bad input is a usage error naming it.
    let (code, _, err) = central.run(&["send", "edge1", "../x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad module name"), "{err}");
    let (code, _, err) = central.run(&["send", "--ttl", "soon", "edge1", "Echo"]);
    assert_eq!(code, 2, "{err}");
}

#[cfg(feature = "collector")]
fn passwd(file: &std::path::Path, user: &str, pass: &str) {
    let mut c = std::process::Command::new("mosquitto_passwd");
    c.arg("-b");
    if !file.exists() {
        c.arg("-c");
    }
    let (code, _, err) = run_to_end({
        c.arg(file).args([user, pass]);
        c
    });
    assert_eq!(code, 0, "{err}");
}

/// The shipped mosquitto `acl_file` (cross/mosquitto/acl): router r2 can neither
/// read r1's commands and replies nor send r1 a command; the central user can.
#[cfg(feature = "collector")]
#[test]
fn acl_file_confines_each_router_to_its_own_topics() {
    let sb = Sandbox::new("cmd-acl");
    let central = Sandbox::new("cmd-acl-central");
    let pw = sb.path("broker-pw");
    for (u, p) in [("r1", "p1"), ("r2", "p2"), ("central", "pc")] {
        passwd(&pw, u, p);
    }
    let acl = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cross/mosquitto/acl");
    let b = Broker::start(
        &sb.path("broker"),
        &format!(
            "allow_anonymous false\npassword_file {}\nacl_file {}\n",
            pw.display(),
            acl.display()
        ),
    );
    sb.script(
        "modules/Echo/Echo",
        "echo run >> ../../ran\necho \"$CRD_COMMAND_FROM $*\"",
    );
    sb.write("pw", "p1\n");
    sb.config_node(
        "r1",
        &format!(
            "broker = {}\nusername = r1\npassword_file = {}\ninterval = 1h\ncommands = Echo\n",
            b.addr(),
            sb.path("pw").display()
        ),
    );
    central.write("pw", "pc\n");
    central.config_node(
        "central",
        &format!(
            "broker = {}\nusername = central\npassword_file = {}\n",
            b.addr(),
            central.path("pw").display()
        ),
    );
    let d = sb.start();
    assert!(
        wait_for(LONG, || d
            .log()
            .contains("mqtt: subscribed to crd/r1/cmd/+")),
        "{}",
        d.log()
    );
    // r2 listens to everything of r1's and to its own commands (to show it is live).
    let port = b.port.to_string();
    // mosquitto's clients logged in as router r2.
    let as_r2 = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-u",
        "r2",
        "-P",
        "p2",
        "-q",
        "1",
    ];
    let spy_out = fs::File::create(sb.path("spy")).unwrap();
    let mut spy = std::process::Command::new("mosquitto_sub")
        .args(as_r2)
        .arg("-v")
        .args(["-t", "crd/r1/#", "-t", "crd/r2/cmd/#", "-W", "20"])
        .stdout(spy_out)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // r2 sends r1 a well-formed command: the broker drops it.
    let forged = command("Echo", &["from r2"]);
    let (code, _, err) = run_to_end({
        let mut c = std::process::Command::new("mosquitto_pub");
        c.args(as_r2)
            .args(["-t", &format!("crd/r1/cmd/{}", forged.id)])
            .args(["-m", &serde_json::to_string(&forged).unwrap()]);
        c
    });
    assert_eq!(code, 0, "{err}");
    // The central host's command gets through and is answered.
    let (code, out, err) = central.run(&["send", "--wait", "20s", "r1", "Echo", "hello"]);
    assert_eq!(code, 0, "{out}\n{err}\n{}", d.log());
    assert!(out.contains("central hello"), "{out}");
    // A message to r2's own command topic reaches it: the spy is live.
    let (code, _, err) = central.run(&["send", "r2", "Echo"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        wait_for(LONG, || sb.read("spy").contains("crd/r2/cmd/")),
        "r2 reads its own commands: {}",
        sb.read("spy")
    );
    std::thread::sleep(Duration::from_millis(500));
    let _ = spy.kill();
    let _ = spy.wait();
    let seen = sb.read("spy");
    assert!(!seen.contains("crd/r1/"), "r2 read r1's topics:\n{seen}");
    assert_eq!(sb.read("ran"), "run\n", "only the central command ran");
    assert!(!d.log().contains(&forged.id), "r1 never got r2's command");
}

/// A central host whose daemon collects (a module subscribes), so it relays.
#[cfg(feature = "collector")]
fn central_collector(tag: &str, b: &Broker) -> Sandbox {
    let central = Sandbox::new(tag);
    central.script("modules/Sink/check", "exit 1");
    central.write("modules/Sink/module.conf", "subscribe = crd/+/event/#\n");
    central.config_node("central", &format!("broker = {}\n", b.addr()));
    central
}

#[cfg(feature = "collector")]
fn wait_state(central: &Sandbox, id: &str, state: &str, d: &Daemon) {
    assert!(
        wait_for(Duration::from_secs(60), || {
            let (_, out, _) = central.run(&["replies"]);
            out.lines()
                .any(|l| l.starts_with(id) && l.split_whitespace().nth(3) == Some(state))
        }),
        "{id} never {state}: {}\n{}",
        central.run(&["replies"]).1,
        d.log()
    );
}

/// `crd send` beside a collector hands the command to its relay, which journals
/// it (it survives SIGKILL) and publishes it again and again: a node that had
/// never connected (the broker dropped the first copies: it knew no session for
/// it) still runs it once when it comes, and the answer is in `crd replies`.
#[cfg(feature = "collector")]
#[test]
fn the_relay_gets_a_command_to_a_node_that_never_connected() {
    let (sb, b) = edge("cmd-relay", "");
    let central = central_collector("cmd-relay-central", &b);
    let mut c = central.start();
    assert!(
        wait_for(LONG, || c.log().contains("crd/+/reply/+")),
        "{}",
        c.log()
    );
    let (code, out, err) = central.run(&["send", "--ttl", "1h", "edge1", "Echo", "hi"]);
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_string();
    assert!(envelope::valid_id(&id), "{out}");
    wait_state(&central, &id, "sending", &c);
    // The relay's journal survives SIGKILL.
    c.signal(libc::SIGKILL);
    c.wait_exit(LONG).expect("killed");
    let c = central.start();
    // The edge starts 5 s later.
    std::thread::sleep(Duration::from_secs(5));
    let d = sb.start();
    wait_state(&central, &id, "done:3", &c);
    assert_eq!(sb.read("ran"), "run\n", "{}", d.log());
    let (code, replies, _) = central.run(&["replies", &id]);
    assert_eq!(code, 0);
    let done: Vec<Reply> = replies
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &Reply| r.reply == "done")
        .collect();
    assert_eq!(done[0].out.as_deref().unwrap().lines().next(), Some("[hi]"));
    assert!(stat_of(&c.status(), "relay_published") >= 1);

    // With the node up, --wait through the relay prints the replies and exits
    // with the remote code.
    let (code, out, err) = central.run(&["send", "--wait", "30s", "edge1", "Echo", "x"]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(out.contains("accepted by edge1\ndone: exit 3 in "), "{out}");

    // A pattern over the fleet (edge1's status made it known), and --all (the
    // central node is in its own fleet too).
    let (code, out, err) = central.run(&["send", "--wait", "30s", "ed*", "Echo", "y"]);
    assert_eq!(code, 1, "Echo exits 3, so not all exited 0: {out}\n{err}");
    assert!(out.lines().next().unwrap().ends_with(" edge1"), "{out}");
    assert!(out.contains("edge1: done: exit 3"), "{out}");
    let (code, out, err) = central.run(&["send", "--all", "Echo", "z"]);
    assert_eq!(code, 0, "{err}");
    let mut to: Vec<&str> = out.lines().filter_map(|l| l.split(' ').nth(1)).collect();
    to.sort();
    assert_eq!(to, ["central", "edge1"], "{out}");
    assert!(wait_for(LONG, || sb.read("ran").lines().count() == 4));
    let (code, _, err) = central.run(&["send", "nobody*", "Echo"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no node of the fleet matches `nobody*`"),
        "{err}"
    );
    assert_eq!(sb.read("ran"), "run\nrun\nrun\nrun\n");
}

/// An edge for the relay's tests: `Note` appends its argument to `notes`,
/// `Echo` exits 3 at once, `Slow` takes 2 s, `Block` waits for the file `go`,
/// `Missing` is allowed but absent, `Forbidden` present but not allowed.
#[cfg(feature = "collector")]
fn relay_edge(tag: &str) -> (Sandbox, Broker) {
    let (sb, b) = edge(tag, "");
    sb.script("modules/Note/Note", "echo \"$1\" >> ../../notes");
    sb.script(
        "modules/Slow/Slow",
        "echo start >> ../../slow\nsleep 2\necho slow",
    );
    sb.script(
        "modules/Block/Block",
        "while [ ! -e ../../go ]; do sleep 0.05; done",
    );
    let conf = sb.read("crd.conf");
    fs::write(
        sb.conf(),
        conf.replace(
            "commands = Echo Missing Slow",
            "commands = Echo Missing Slow Note Block",
        ),
    )
    .unwrap();
    (sb, b)
}

/// A central collector, started, its relay subscribed to the replies.
#[cfg(feature = "collector")]
fn relay_up(tag: &str, b: &Broker) -> (Sandbox, Daemon) {
    let central = central_collector(tag, b);
    let c = central.start();
    assert!(
        wait_for(LONG, || c.log().contains("crd/+/reply/+")),
        "{}",
        c.log()
    );
    (central, c)
}

/// A burst of 200 commands to one edge through the relay, more than the 16 it
/// takes at once: the ones answered `busy` are sent again, so all 200 run, each
/// once (`busy` is not final).
#[cfg(feature = "collector")]
#[test]
fn a_burst_of_commands_to_a_busy_edge_runs_every_one_once() {
    const N: usize = 200;
    let (sb, b) = relay_edge("cmd-burst");
    let (central, c) = relay_up("cmd-burst-central", &b);
    let d = sb.start();
    subscribed(&d);
    let mut kids = Vec::new();
    for i in 0..N {
        let mut cmd = central.crd(&["send", "edge1", "Note", &format!("c{i}")]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        kids.push(cmd.spawn().unwrap());
    }
    for k in kids {
        let out = k.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ok = wait_for(Duration::from_secs(120), || {
        count_lines(&sb.path("notes")) >= N
    });
    assert!(
        ok,
        "{} of {N} ran\nrelay: {}\nedge: {}",
        count_lines(&sb.path("notes")),
        c.status(),
        d.status()
    );
    // Some were refused `busy` (else this proves nothing), and none ran twice.
    assert!(
        stat_of(&d.status(), "commands_refused") > 0,
        "{}",
        d.status()
    );
    std::thread::sleep(Duration::from_secs(3));
    let notes = sb.read("notes");
    let mut lines: Vec<&str> = notes.lines().collect();
    assert_eq!(lines.len(), N, "{notes}");
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), N, "a command ran twice:\n{notes}");
    let (_, list, _) = central.run(&["replies"]);
    assert_eq!(
        list.lines().filter(|l| l.contains(" done:0 ")).count(),
        N,
        "{list}"
    );
}

/// `crd send --wait` through the relay returns when the final reply comes (well
/// before the wait ends), with the exit code of the answer; `busy` is not final;
/// `crd replies ID` answers at once when there is no reply yet; the relay that
/// gives up at the ttl answers `expired` (78); a crash mid-run is 75; a ttl under
/// the minimum is refused (2).
#[cfg(feature = "collector")]
#[test]
fn crd_send_wait_through_the_relay_ends_with_the_answer() {
    use std::time::Instant;
    let (sb, b) = relay_edge("cmd-wait");
    let (central, _c) = relay_up("cmd-wait-central", &b);
    let mut d = sb.start();
    subscribed(&d);

    for _ in 0..3 {
        let t = Instant::now();
        let (code, out, err) = central.run(&["send", "--wait", "5s", "edge1", "Echo", "x"]);
        assert_eq!(code, 3, "{out}\n{err}");
        assert!(out.contains("accepted by edge1\ndone: exit 3 in "), "{out}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }
    let t = Instant::now();
    let (code, out, err) = central.run(&["send", "--wait", "8s", "edge1", "Slow"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("done: exit 0 in ") && out.contains("slow"),
        "{out}"
    );
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());

    // No reply yet (the node does not exist): answered at once, empty.
    let (code, out, err) = central.run(&["send", "nobody", "Echo"]);
    assert_eq!(code, 0, "{err}");
    let t = Instant::now();
    let (code, replies, err) = central.run(&["replies", out.trim()]);
    assert_eq!((code, replies.as_str()), (0, ""), "{err}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());

    // Each final answer, its exit code.
    let (code, _, err) = central.run(&["send", "--wait", "20s", "edge1", "Forbidden"]);
    assert_eq!(code, 77, "{err}");
    assert!(err.contains("refused the command: not allowed"), "{err}");
    let (code, _, err) = central.run(&["send", "--wait", "20s", "edge1", "Missing"]);
    assert_eq!(code, 77, "{err}");
    assert!(err.contains("refused the command: unknown module"), "{err}");
    let t = Instant::now();
    let (code, _, err) = central.run(&["send", "--ttl", "1s", "--wait", "10s", "nobody", "Echo"]);
    assert_eq!(code, 78, "the relay gave up at the ttl: {err}");
    assert!(err.contains("refused the command: expired"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    for ttl in ["0s", "1ms", "10ms", "999ms"] {
        let (code, _, err) = central.run(&["send", "--ttl", ttl, "--wait", "5s", "edge1", "Echo"]);
        assert_eq!(code, 2, "--ttl {ttl}: {err}");
        assert!(err.contains("shorter than the minimum"), "{err}");
    }

    // Busy: 16 commands hold every slot; the 17th is `busy`, sent again, and
    // runs once they end.
    for i in 0..16 {
        let (code, _, err) = central.run(&["send", "edge1", "Block", &i.to_string()]);
        assert_eq!(code, 0, "{err}");
    }
    assert!(
        wait_for(LONG, || stat_of(&d.status(), "commands_waiting") == 16),
        "{}",
        d.status()
    );
    let waiter = central
        .crd(&["send", "--wait", "60s", "edge1", "Note", "after"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for(LONG, || stat_of(&d.status(), "commands_refused") >= 3),
        "{}",
        d.status()
    );
    sb.write("go", "");
    let out = waiter.wait_with_output().unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{o}\n{e}");
    assert!(o.contains("busy, retrying\n"), "{o}");
    assert!(o.contains("done: exit 0"), "{o}");
    assert_eq!(sb.read("notes"), "after\n");

    // A run cut by a crash: `interrupted`, 75.
    let waiter = central
        .crd(&["send", "--wait", "60s", "edge1", "Slow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for(LONG, || sb.exists("slow")
        && sb.read("slow") == "start\nstart\n"));
    d.signal(libc::SIGKILL);
    d.wait_exit(LONG).expect("killed");
    let _d = sb.start();
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
