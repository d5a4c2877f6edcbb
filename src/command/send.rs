//! The sender's side (`crd send`): a command made (a random id, the sender's
//! clock, signed with `command_key_file` when the config has one), published at
//! QoS 1 on `<prefix>/<node>/cmd/<id>`, and, when asked to wait, its replies
//! read from `<prefix>/<node>/reply/<id>` (subscribed before the command goes
//! out, so none is missed) until a final one or the deadline; a `busy` answer is
//! not final: the same command goes out again, with backoff, while it waits.

use crate::command::edge::read_key;
use crate::command::envelope::{self, Answer, Command, Reply};
use crate::command::error::{Error, Reason};
use crate::core::config::Config;
use crate::core::sha256::to_hex;
use crate::mqtt::client::Client;
use std::io::Read;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest wait for the broker: resolution, connect, CONNACK, SUBACK, PUBACK.
pub const BROKER_WAIT: Duration = Duration::from_secs(10);
/// A command a node answered `busy` is sent again after this (`--wait` without
/// the relay); the wait doubles each time.
pub const BUSY_FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest wait between two copies of a busy command.
pub const BUSY_MAX_RETRY: Duration = Duration::from_secs(10);

/// A fresh id: 128 bits from the kernel's random source, as hex.
pub fn new_id() -> Result<String, Error> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(Reason::Random)?;
    Ok(to_hex(&b))
}

/// The command to run `module ARGS` on `node`, living `ttl`, from `from`; signed
/// when `cfg` has `command_key_file`.
pub fn make(
    cfg: &Config,
    node: &str,
    module: &str,
    args: Vec<String>,
    ttl: Duration,
    from: &str,
) -> Result<Command, Error> {
    if let Err(why) = crate::core::config::valid_name(module) {
        return Err(Reason::BadModule(module.to_string(), why).into());
    }
    if let Err(why) = crate::core::config::valid_node(node) {
        return Err(Reason::BadNode(node.to_string(), why).into());
    }
    let sent = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(crate::core::dur::ms)
        .unwrap_or(0);
    let mut c = Command {
        id: new_id()?,
        module: module.to_string(),
        args,
        from: from.to_string(),
        to: node.to_string(),
        sent,
        ttl_ms: crate::core::dur::ms(ttl),
        sig: None,
    };
    if let Some(p) = &cfg.command_key_file {
        let key = read_key(p).map_err(Reason::CommandKey)?;
        c.sig = Some(envelope::sign(&key, node, &c));
    }
    Ok(c)
}

/// Whether `r` is a command's last word: `accepted` is not, nor `busy` (the node
/// had no room then; the relay, or `send` while it waits, sends it again).
pub fn is_final(r: &Reply) -> bool {
    r.answer != Answer::Accepted && !r.answer.is_busy()
}

/// Publishes `c` to `node`; with `wait`, hands each reply to `on_reply` until a
/// final one (returned) or `wait` passes (`None`). A `busy` node gets the same
/// command again (same id: it runs once) after `BUSY_FIRST_RETRY`, doubling to
/// `BUSY_MAX_RETRY`, while the wait lasts.
pub fn send(
    cfg: &Config,
    node: &str,
    c: &Command,
    wait: Option<Duration>,
    mut on_reply: impl FnMut(&Reply),
) -> Result<Option<Reply>, String> {
    let prefix = &cfg.mqtt.topic_prefix;
    let start = Instant::now();
    let client_id = format!("crd-send-{}", &c.id[..12]);
    let mut link = Client::connect(&cfg.mqtt, client_id, start + BROKER_WAIT)?;
    let reply_topic = format!("{prefix}/{node}/reply/{}", c.id);
    if wait.is_some() {
        link.subscribe(&reply_topic, Instant::now() + BROKER_WAIT)?;
    }
    let payload = serde_json::to_vec(c).map_err(|e| e.to_string())?;
    let topic = format!("{prefix}/{node}/cmd/{}", c.id);
    link.publish(&topic, &payload, Instant::now() + BROKER_WAIT)?;
    let Some(wait) = wait else {
        link.close();
        return Ok(None);
    };
    let until = Instant::now() + wait;
    let (mut again, mut backoff) = (None::<Instant>, BUSY_FIRST_RETRY);
    loop {
        let m = match link.next_message(again.map_or(until, |a| a.min(until)))? {
            Some(m) => m,
            None if Instant::now() >= until => break,
            None => {
                again = None;
                link.publish(&topic, &payload, Instant::now() + BROKER_WAIT)?;
                continue;
            }
        };
        if m.topic != reply_topic {
            continue;
        }
        match Reply::parse(&m.payload) {
            Ok(r) if r.id == c.id => {
                on_reply(&r);
                if is_final(&r) {
                    link.close();
                    return Ok(Some(r));
                }
                if matches!(r.answer, Answer::Refused { .. }) {
                    again = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(BUSY_MAX_RETRY);
                }
            }
            Ok(_) => log::warn!("{}: a reply to another command, skipped", m.topic),
            Err(e) => log::warn!("{}: {e}, skipped", m.topic),
        }
    }
    link.close();
    Ok(None)
}
