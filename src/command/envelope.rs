//! A remote command and its replies as they travel, without IO: the command's JSON
//! (`id`, `module`, `args`, `from`, `sent`, `ttl_ms`, `sig`) parsed and checked,
//! the bytes its HMAC-SHA256 signature covers, and the reply JSON the edge sends
//! back on `<prefix>/<node>/reply/<id>`. Both ends use this file: the edge to
//! check, `crd send` to build and sign.
//!
//! What the signature covers (`signed_bytes`): a version tag, then the target node,
//! id, module, from, sent, ttl_ms and every argument, each as a netstring
//! (`LEN:BYTES,`), so no two envelopes sign the same bytes and a signed command
//! cannot be moved to another node or given a longer life.

use crate::core::sha256::{ct_eq, hmac, to_hex};
use serde::{Deserialize, Serialize};

/// A command id: 128 random bits as 32 lowercase hex digits, made by the sender.
pub const ID_HEX_DIGITS: usize = 32;
/// Largest command payload taken, bytes (a larger one is refused as malformed).
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;
/// Most arguments in a command.
pub const MAX_ARGS: usize = 64;
/// Bytes of a run's output in its `done` reply (head and tail, marked where cut).
pub const REPLY_OUT_BYTES: usize = 8 * 1024;
/// Shortest shared secret in `command_key_file`, bytes.
pub const MIN_KEY_BYTES: usize = 32;
/// Wall clocks before this (2020-01-01, unix ms) are taken as not set (a router
/// before NTP): they give no basis for a command's expiry.
pub const CLOCK_SET_MS: u64 = 1_577_836_800_000;

/// A command as sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub id: String,
    pub module: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub from: String,
    /// The target node (informative: the signature covers the node the command
    /// is for whether or not this is given).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
    /// The sender's wall clock when it made the command, unix ms.
    pub sent: u64,
    /// How long after `sent` the command may still run, ms.
    pub ttl_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

/// Why a command is not run; the `why` of a `refused` reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not valid JSON, a field missing or out of bounds, or its id not the topic's.
    Malformed,
    /// Signing is on and `sig` is missing or wrong.
    BadSignature,
    /// `sent + ttl_ms` is past (by the edge's clock, or the newest command it ran).
    Expired,
    /// The module is not in `commands`.
    NotAllowed,
    /// No such support module on this node.
    UnknownModule,
    /// Too many commands already wait to run.
    Busy,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::BadSignature => "bad signature",
            Refusal::Expired => "expired",
            Refusal::NotAllowed => "not allowed",
            Refusal::UnknownModule => "unknown module",
            Refusal::Busy => "busy",
        }
    }

    /// Its number in the edge's table on disk.
    pub fn code(self) -> u8 {
        match self {
            Refusal::Malformed => 1,
            Refusal::BadSignature => 2,
            Refusal::Expired => 3,
            Refusal::NotAllowed => 4,
            Refusal::UnknownModule => 5,
            Refusal::Busy => 6,
        }
    }

    pub fn from_code(c: u8) -> Option<Refusal> {
        [
            Refusal::Malformed,
            Refusal::BadSignature,
            Refusal::Expired,
            Refusal::NotAllowed,
            Refusal::UnknownModule,
            Refusal::Busy,
        ]
        .into_iter()
        .find(|r| r.code() == c)
    }

    pub fn from_name(s: &str) -> Option<Refusal> {
        (1..=6)
            .filter_map(Refusal::from_code)
            .find(|r| r.as_str() == s)
    }
}

/// Whether `s` is a command id.
pub fn valid_id(s: &str) -> bool {
    s.len() == ID_HEX_DIGITS && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The command in `payload`, received on a topic whose last level is `topic_id`.
pub fn parse(topic_id: &str, payload: &[u8]) -> Result<Command, String> {
    if payload.len() > MAX_COMMAND_BYTES {
        return Err(format!("{} bytes, over {MAX_COMMAND_BYTES}", payload.len()));
    }
    let c: Command = serde_json::from_slice(payload).map_err(|e| format!("not a command: {e}"))?;
    if !valid_id(&c.id) {
        return Err(format!(
            "bad id `{}` (want {ID_HEX_DIGITS} lowercase hex digits)",
            c.id
        ));
    }
    if c.id != topic_id {
        return Err(format!("id `{}` is not the topic's `{topic_id}`", c.id));
    }
    crate::core::config::valid_name(&c.module)
        .map_err(|why| format!("bad module name `{}`: {why}", c.module))?;
    if c.args.len() > MAX_ARGS {
        return Err(format!("{} arguments, over {MAX_ARGS}", c.args.len()));
    }
    if c.args.iter().any(|a| a.contains('\0')) {
        return Err("an argument holds a NUL byte".into());
    }
    Ok(c)
}

/// The bytes the signature of `c` to node `node` covers.
pub fn signed_bytes(node: &str, c: &Command) -> Vec<u8> {
    let mut b = b"crd-command-v1\n".to_vec();
    let mut put = |x: &[u8]| {
        b.extend_from_slice(x.len().to_string().as_bytes());
        b.push(b':');
        b.extend_from_slice(x);
        b.push(b',');
    };
    put(node.as_bytes());
    put(c.id.as_bytes());
    put(c.module.as_bytes());
    put(c.from.as_bytes());
    put(c.sent.to_string().as_bytes());
    put(c.ttl_ms.to_string().as_bytes());
    put(c.args.len().to_string().as_bytes());
    for a in &c.args {
        put(a.as_bytes());
    }
    b
}

/// The signature of `c` to `node` under `key`, as hex.
pub fn sign(key: &[u8], node: &str, c: &Command) -> String {
    to_hex(&hmac(key, &signed_bytes(node, c)))
}

/// Whether `c` carries a valid signature for `node` under `key` (compared in
/// constant time).
pub fn verify(key: &[u8], node: &str, c: &Command) -> bool {
    let Some(sig) = &c.sig else {
        return false;
    };
    ct_eq(sign(key, node, c).as_bytes(), sig.as_bytes())
}

/// Whether `c` is past its life at time `basis` (unix ms).
pub fn expired(c: &Command, basis: u64) -> bool {
    c.sent.saturating_add(c.ttl_ms) < basis
}

/// A reply's kind and what it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Journaled; it will run (or has run).
    Accepted,
    /// It ran: the exit code (124 timed out, 128+N killed by signal N), the run's
    /// duration and its output (head and tail).
    Done {
        code: i32,
        dur_ms: u32,
        out: String,
    },
    /// It was cut by a crash or power cut; it is not run again.
    Interrupted,
    Refused {
        why: Refusal,
        detail: String,
    },
}

impl Answer {
    pub fn name(&self) -> &'static str {
        match self {
            Answer::Accepted => "accepted",
            Answer::Done { .. } => "done",
            Answer::Interrupted => "interrupted",
            Answer::Refused { .. } => "refused",
        }
    }
}

#[derive(Serialize)]
struct WireReply<'a> {
    id: &'a str,
    node: &'a str,
    reply: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    module: &'a str,
    ts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dur_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    out: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    why: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    resent: bool,
}

/// The reply JSON: `{"id","node","reply","module","ts",...}` with `code`, `dur_ms`,
/// `out` for `done`, `why` and `detail` for `refused`, and `"resent":true` when it
/// answers a command seen before.
pub fn reply_json(id: &str, node: &str, module: &str, ts: u64, a: &Answer, resent: bool) -> String {
    let mut w = WireReply {
        id,
        node,
        reply: a.name(),
        module,
        ts,
        code: None,
        dur_ms: None,
        out: None,
        why: None,
        detail: None,
        resent,
    };
    match a {
        Answer::Done { code, dur_ms, out } => {
            w.code = Some(*code);
            w.dur_ms = Some(*dur_ms);
            w.out = Some(out);
        }
        Answer::Refused { why, detail } => {
            w.why = Some(why.as_str());
            w.detail = (!detail.is_empty()).then_some(detail.as_str());
        }
        Answer::Accepted | Answer::Interrupted => {}
    }
    serde_json::to_string(&w).unwrap_or_default()
}

/// A reply as `crd send` and `crd replies` read it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Reply {
    pub id: String,
    #[serde(default)]
    pub node: String,
    pub reply: String,
    #[serde(default)]
    pub module: String,
    #[serde(default)]
    pub ts: u64,
    #[serde(default)]
    pub code: Option<i32>,
    #[serde(default)]
    pub dur_ms: Option<u32>,
    #[serde(default)]
    pub out: Option<String>,
    #[serde(default)]
    pub why: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub resent: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> Command {
        Command {
            id: "0123456789abcdef0123456789abcdef".into(),
            module: "Reboot".into(),
            args: vec!["now".into(), "a b".into()],
            from: "central".into(),
            to: String::new(),
            sent: 1_800_000_000_000,
            ttl_ms: 3_600_000,
            sig: None,
        }
    }

    #[test]
    fn a_command_round_trips_and_its_id_must_be_the_topics() {
        let c = cmd();
        let j = serde_json::to_vec(&c).unwrap();
        assert_eq!(parse(&c.id, &j).unwrap(), c);
        let e = parse("ffffffffffffffffffffffffffffffff", &j).unwrap_err();
        assert!(e.contains("not the topic's"), "{e}");
        for bad in [
            &b"{"[..],
            br#"{"id":"0123456789ABCDEF0123456789ABCDEF","module":"X","sent":1,"ttl_ms":1}"#,
            br#"{"id":"0123456789abcdef0123456789abcdef","module":"../x","sent":1,"ttl_ms":1}"#,
            br#"{"id":"0123456789abcdef0123456789abcdef","module":"X","sent":-1,"ttl_ms":1}"#,
            br#"{"id":"0123456789abcdef0123456789abcdef","module":"X","ttl_ms":1}"#,
            br#"{"id":"0123456789abcdef0123456789abcdef","module":"X","args":[1],"sent":1,"ttl_ms":1}"#,
        ] {
            assert!(parse(&c.id, bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let many = Command {
            args: vec!["x".into(); MAX_ARGS + 1],
            ..cmd()
        };
        assert!(parse(&c.id, &serde_json::to_vec(&many).unwrap()).is_err());
        let big = vec![b' '; MAX_COMMAND_BYTES + 1];
        assert!(parse(&c.id, &big).unwrap_err().contains("over"));
    }

    #[test]
    fn a_signature_binds_node_id_module_args_sent_and_ttl() {
        let key = [7u8; 32];
        let mut c = cmd();
        c.sig = Some(sign(&key, "r1", &c));
        assert!(verify(&key, "r1", &c));
        assert!(!verify(&key, "r2", &c), "another node");
        assert!(!verify(&[8u8; 32], "r1", &c), "another key");
        let changed: [fn(&mut Command); 7] = [
            |c| c.id.replace_range(0..1, "f"),
            |c| c.module.push('X'),
            |c| c.args.push("x".into()),
            |c| c.args[1] = "a".into(),
            |c| c.sent += 1,
            |c| c.ttl_ms += 1,
            |c| c.from.push('x'),
        ];
        for f in changed {
            let mut d = c.clone();
            f(&mut d);
            assert!(!verify(&key, "r1", &d), "{d:?}");
        }
        // Moving bytes between fields changes the signed bytes too.
        let mut d = c.clone();
        d.args = vec!["now".into(), "a".into(), "b".into()];
        assert_ne!(signed_bytes("r1", &c), signed_bytes("r1", &d));
        assert!(!verify(&key, "r1", &Command { sig: None, ..c }));
    }

    #[test]
    fn expiry_is_sent_plus_ttl() {
        let c = cmd();
        assert!(!expired(&c, c.sent + c.ttl_ms));
        assert!(expired(&c, c.sent + c.ttl_ms + 1));
        let forever = Command {
            ttl_ms: u64::MAX,
            ..cmd()
        };
        assert!(!expired(&forever, u64::MAX));
    }

    #[test]
    fn replies_are_json_with_what_each_kind_carries() {
        let id = "0123456789abcdef0123456789abcdef";
        let done = Answer::Done {
            code: 3,
            dur_ms: 12,
            out: "a\"b".into(),
        };
        let r: Reply =
            serde_json::from_str(&reply_json(id, "r1", "Ping", 9, &done, false)).unwrap();
        assert_eq!(
            (
                r.reply.as_str(),
                r.code,
                r.dur_ms,
                r.out.as_deref(),
                r.resent
            ),
            ("done", Some(3), Some(12), Some("a\"b"), false)
        );
        let no = Answer::Refused {
            why: Refusal::NotAllowed,
            detail: String::new(),
        };
        let j = reply_json(id, "r1", "Reboot", 9, &no, true);
        assert_eq!(
            j,
            r#"{"id":"0123456789abcdef0123456789abcdef","node":"r1","reply":"refused","module":"Reboot","ts":9,"why":"not allowed","resent":true}"#
        );
        for c in 1..=6 {
            let r = Refusal::from_code(c).unwrap();
            assert_eq!(Refusal::from_name(r.as_str()), Some(r));
        }
        assert_eq!(Refusal::from_code(0), None);
    }
}
