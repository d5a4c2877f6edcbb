//! The MQTT 3.1.1 client session, sans IO: bytes and `now` in, bytes to send, events
//! and the next deadline out. It owns CONNECT/CONNACK, keepalive, the in-flight
//! window of QoS 1 publishes and the packet id -> spool seq map, and for a
//! subscriber SUBSCRIBE/SUBACK, inbound PUBLISH (QoS 0 and 1) and the PUBACK the
//! caller sends when it chooses (once the message is journaled). An inbound
//! PUBLISH larger than `max_incoming` is never buffered whole: its topic and packet
//! id are kept, the rest is skipped as it arrives, and it is reported as
//! `Up::Oversized`, so the caller can acknowledge it and say so. Packets are
//! encoded and decoded by `codec.rs`.
//!
//! It never touches a socket or a clock; `forward.rs` carries its output to the
//! broker. Section numbers refer to the MQTT 3.1.1 OASIS standard.

use crate::mqtt::codec::{self, Packet};
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// Largest packet taken whole from the broker for a client that only publishes
/// (CONNACK, PUBACK, SUBACK, PINGRESP), bytes; a subscriber sets `max_incoming`
/// from `max_message`. A larger PUBLISH is skipped (`Up::Oversized`), any other
/// larger packet is a protocol error.
pub const MAX_INCOMING_PACKET: usize = 64 * 1024;
/// Room for a PUBLISH's topic and header next to its payload, bytes.
pub const TOPIC_ALLOWANCE: usize = 64 * 1024 + 16;
/// Longest wait for CONNACK after CONNECT.
pub const CONNACK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    pub client_id: String,
    pub keepalive: Duration,
    /// QoS 1 publishes awaiting PUBACK, at most.
    pub max_inflight: u16,
    pub login: Option<(String, String)>,
    /// Last will: topic and payload, published retained by the broker if crd
    /// vanishes without DISCONNECT (3.1.2.5).
    pub will: Option<(String, Vec<u8>)>,
    /// Largest packet crd sends, bytes.
    pub max_packet: usize,
    /// Largest packet taken whole from the broker, bytes (see `MAX_INCOMING_PACKET`).
    pub max_incoming: usize,
    /// A clean session (3.1.2.4): the broker keeps nothing for crd between
    /// connections. A subscriber wants it off, so the broker queues its messages
    /// while it is away.
    pub clean_session: bool,
}

/// A PUBLISH from the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    pub topic: String,
    pub payload: Vec<u8>,
    /// The packet id to acknowledge (QoS 1); `None` for QoS 0.
    pub pkid: Option<u16>,
    pub dup: bool,
    pub retain: bool,
}

/// What the broker's bytes meant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Up {
    /// CONNACK with return code 0: publishing may start; whether the broker
    /// kept this client's session (its subscriptions and what it queued).
    Connected {
        session_present: bool,
    },
    /// PUBACK of a publish; `Some(seq)` for a spool record.
    Acked(Option<u64>),
    /// SUBACK: the indices (in the SUBSCRIBE's order) of the filters the broker
    /// refused (return code 0x80); empty when all were granted.
    Subscribed {
        refused: Vec<usize>,
    },
    Message(Inbound),
    /// A PUBLISH over `max_incoming`: skipped, never buffered whole. `size` is its
    /// payload in bytes; `pkid` must still be acknowledged (else the broker sends it
    /// again on every connection).
    Oversized {
        topic: String,
        size: usize,
        pkid: Option<u16>,
    },
}

/// A PUBLISH being skipped: bytes of it still to come.
#[derive(Debug)]
struct Skip {
    left: usize,
    topic: String,
    size: usize,
    pkid: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionError {
    /// Bytes that are not MQTT 3.1.1 from a broker, or a packet crd cannot send.
    Protocol(String),
    /// CONNACK with a non-zero return code (bad credentials, not authorized, ...).
    Refused(String),
    /// Nothing from the broker for 1.5 x keepalive.
    Silent,
    /// No CONNACK within `CONNACK_TIMEOUT` of the CONNECT.
    NoConnAck,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Protocol(m) => write!(f, "protocol error: {m}"),
            SessionError::Refused(m) => write!(f, "broker refused the connection: {m}"),
            SessionError::Silent => write!(f, "broker silent past the keepalive deadline"),
            SessionError::NoConnAck => write!(
                f,
                "no CONNACK within {} s of CONNECT",
                CONNACK_TIMEOUT.as_secs()
            ),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    AwaitConnAck { since: Instant },
    Connected,
}

/// Bytes queued for the socket: appended at the end, written from `start`. The
/// written prefix is dropped only when it outweighs what is left (or all of it
/// is written), so each byte is moved at most about once.
#[derive(Default)]
pub struct OutBuf {
    buf: Vec<u8>,
    start: usize,
}

impl OutBuf {
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Marks `n` bytes as written.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.clear();
        }
    }
    fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }
    fn extend(&mut self, data: &[u8]) {
        if self.start > 0 && self.start >= self.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }
}

pub struct Session {
    cfg: SessionConfig,
    state: State,
    out: OutBuf,
    /// (packet id, spool seq) in send order.
    inflight: VecDeque<(u16, Option<u64>)>,
    next_pkid: u16,
    last_rx: Instant,
    last_tx: Instant,
    /// The SUBSCRIBE awaiting its SUBACK, and how many filters it carried.
    sub_pkid: Option<u16>,
    sub_filters: usize,
    skipping: Option<Skip>,
}

impl Session {
    pub fn new(cfg: SessionConfig, now: Instant) -> Session {
        Session {
            cfg,
            state: State::Idle,
            out: OutBuf::default(),
            inflight: VecDeque::new(),
            next_pkid: 1,
            last_rx: now,
            last_tx: now,
            sub_pkid: None,
            sub_filters: 0,
            skipping: None,
        }
    }

    /// A new connection: forgets the old one's in-flight publishes (the caller
    /// resends from the spool's watermark) and queues CONNECT, with a clean
    /// session (3.1.2.4) unless `set_subscriber` turned it off: crd's own spool,
    /// not the broker, holds what it has to send, while a subscriber's broker
    /// queues what arrives for it while it is away.
    pub fn start(&mut self, now: Instant) -> Result<(), SessionError> {
        self.reset();
        let mut b = Vec::new();
        codec::connect(
            &codec::Connect {
                client_id: &self.cfg.client_id,
                // Keep Alive is a 16-bit number of seconds (3.1.2.10).
                keep_alive: self.cfg.keepalive.as_secs().clamp(1, u64::from(u16::MAX)) as u16,
                clean_session: self.cfg.clean_session,
                login: self.cfg.login.as_ref().map(|(u, p)| (&u[..], &p[..])),
                will: self.cfg.will.as_ref().map(|(t, m)| (&t[..], &m[..])),
            },
            &mut b,
        );
        self.send(&b, "CONNECT", now)?;
        self.state = State::AwaitConnAck { since: now };
        self.last_rx = now;
        Ok(())
    }

    /// Makes this a subscriber's session: not clean, and PUBLISH packets up to
    /// `max_incoming` bytes taken whole.
    pub fn set_subscriber(&mut self, max_incoming: usize) {
        self.cfg.clean_session = false;
        self.cfg.max_incoming = max_incoming;
    }

    /// Sets the login for the next CONNECT (the password file is re-read for each).
    pub fn set_login(&mut self, login: Option<(String, String)>) {
        self.cfg.login = login;
    }

    /// Drops the connection state (after the socket closed).
    pub fn reset(&mut self) {
        self.state = State::Idle;
        self.out.clear();
        self.inflight.clear();
        self.sub_pkid = None;
        self.skipping = None;
    }

    /// Queues SUBSCRIBE (3.8) for `filters`, each at QoS 1; the SUBACK comes back
    /// as `Up::Subscribed`.
    pub fn subscribe(&mut self, filters: &[String], now: Instant) -> Result<(), SessionError> {
        let pkid = self.alloc_pkid();
        let mut b = Vec::new();
        codec::subscribe(pkid, filters, &mut b);
        self.send(&b, "SUBSCRIBE", now)?;
        self.sub_pkid = Some(pkid);
        self.sub_filters = filters.len();
        Ok(())
    }

    /// Queues the PUBACK (3.4) of an inbound QoS 1 PUBLISH.
    pub fn puback(&mut self, pkid: u16, now: Instant) -> Result<(), SessionError> {
        // An array, not a Vec: one a message on the collector's path.
        self.send(&codec::puback(pkid), "PUBACK", now)
    }

    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Whether one more QoS 1 publish fits in the window.
    pub fn window_open(&self) -> bool {
        self.is_connected() && self.inflight.len() < usize::from(self.cfg.max_inflight)
    }

    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Bytes waiting to be written to the socket; the caller consumes what it wrote.
    pub fn output(&mut self) -> &mut OutBuf {
        &mut self.out
    }

    /// Queues one encoded packet (`what` names it in an error).
    fn send(&mut self, b: &[u8], what: &str, now: Instant) -> Result<(), SessionError> {
        if b.len() > self.cfg.max_packet {
            return Err(SessionError::Protocol(format!(
                "cannot encode {what}: {} bytes, over the largest packet ({})",
                b.len(),
                self.cfg.max_packet
            )));
        }
        self.out.extend(b);
        self.last_tx = now;
        Ok(())
    }

    /// Queues a QoS 1 PUBLISH. `dup` marks a re-delivery (3.3.1.1); `seq` is the
    /// spool record it carries, returned in `Up::Acked` when the broker acks it.
    /// Encoded here, straight into the output buffer (the codec would want an
    /// owned topic and payload per message); the tests decode it with rumqttc.
    pub fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        retain: bool,
        dup: bool,
        seq: Option<u64>,
        now: Instant,
    ) -> Result<(), SessionError> {
        debug_assert!(self.is_connected());
        // Variable header: topic (a UTF-8 string, 1.5.3) and packet id (3.3.2).
        let remaining = 2 + topic.len() + 2 + payload.len();
        if topic.len() > usize::from(u16::MAX) || remaining + 5 > self.cfg.max_packet {
            return Err(SessionError::Protocol(format!(
                "PUBLISH of {remaining} bytes to `{topic}` is too large"
            )));
        }
        let pkid = self.alloc_pkid();
        // Fixed header (3.3.1): type 3, DUP, QoS 1, RETAIN; remaining length (2.2.3).
        let mut head = [0u8; 9];
        head[0] = 0x30 | (u8::from(dup) << 3) | (1 << 1) | u8::from(retain);
        let mut len = [0u8; 4];
        let k = codec::remaining_length(remaining, &mut len);
        head[1..1 + k].copy_from_slice(&len[..k]);
        let h = 1 + k;
        head[h..h + 2].copy_from_slice(&(topic.len() as u16).to_be_bytes());
        let o = &mut self.out;
        o.extend(&head[..h + 2]);
        o.extend(topic.as_bytes());
        o.extend(&pkid.to_be_bytes());
        o.extend(payload);
        self.last_tx = now;
        self.inflight.push_back((pkid, seq));
        Ok(())
    }

    /// The next packet id not in flight; never 0 (2.3.1).
    fn alloc_pkid(&mut self) -> u16 {
        loop {
            let id = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if id != 0 && self.sub_pkid != Some(id) && !self.inflight.iter().any(|&(p, _)| p == id)
            {
                return id;
            }
        }
    }

    /// Queues DISCONNECT (3.14): the broker then discards the will.
    pub fn disconnect(&mut self, now: Instant) {
        let _ = self.send(&codec::DISCONNECT, "DISCONNECT", now);
        self.state = State::Idle;
    }

    /// Takes every complete packet out of `buf` (partial ones stay for later, and
    /// of a PUBLISH over `max_incoming` only its head is ever kept).
    pub fn handle_input(
        &mut self,
        buf: &mut Vec<u8>,
        now: Instant,
        up: &mut Vec<Up>,
    ) -> Result<(), SessionError> {
        // Packets are taken from the front at `at`; the bytes they took are
        // dropped once, at the end (a partial packet is all that moves).
        let mut at = 0;
        let r = self.take_packets(buf, &mut at, now, up);
        buf.drain(..at);
        r
    }

    /// `handle_input`'s loop: takes each whole packet at `at` in `buf`, moving `at`
    /// past it, until what is left is partial.
    fn take_packets(
        &mut self,
        buf: &[u8],
        at: &mut usize,
        now: Instant,
        up: &mut Vec<Up>,
    ) -> Result<(), SessionError> {
        loop {
            if self.skipping.is_some() {
                if !self.skip_oversized(buf, at, now, up) {
                    return Ok(());
                }
                continue;
            }
            let rest = &buf[*at..];
            if let Some(big) = oversized(rest, self.cfg.max_incoming)? {
                match big {
                    Some((skip, head)) => {
                        *at += head;
                        self.last_rx = now;
                        self.skipping = Some(skip);
                        continue;
                    }
                    None => return Ok(()),
                }
            }
            let (p, used) = match codec::decode(rest, self.cfg.max_incoming) {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()),
                Err(e) => return Err(SessionError::Protocol(e)),
            };
            *at += used;
            self.last_rx = now;
            self.handle_packet(p, up)?;
        }
    }

    /// Passes over the bytes from `at` of the PUBLISH being skipped, and reports
    /// it as `Up::Oversized` once its last byte is past: whether it is.
    fn skip_oversized(
        &mut self,
        buf: &[u8],
        at: &mut usize,
        now: Instant,
        up: &mut Vec<Up>,
    ) -> bool {
        let Some(skip) = self.skipping.as_mut() else {
            return true;
        };
        let n = skip.left.min(buf.len() - *at);
        *at += n;
        skip.left -= n;
        if n > 0 {
            self.last_rx = now;
        }
        if skip.left > 0 {
            return false;
        }
        let s = self.skipping.take().expect("just matched");
        up.push(Up::Oversized {
            topic: s.topic,
            size: s.size,
            pkid: s.pkid,
        });
        true
    }

    /// Acts on one whole packet from the broker; one this state does not expect
    /// is a protocol error.
    fn handle_packet(&mut self, p: Packet, up: &mut Vec<Up>) -> Result<(), SessionError> {
        match (p, self.state) {
            (Packet::ConnAck(code, session_present), State::AwaitConnAck { .. }) => {
                if code != 0 {
                    return Err(SessionError::Refused(codec::refusal(code)));
                }
                self.state = State::Connected;
                up.push(Up::Connected { session_present });
            }
            (Packet::PubAck(pkid), State::Connected) => self.handle_puback(pkid, up),
            (Packet::SubAck { pkid, codes }, State::Connected) if self.sub_pkid == Some(pkid) => {
                self.handle_suback(&codes, up)?
            }
            (
                Packet::Publish {
                    topic,
                    payload,
                    qos,
                    pkid,
                    dup,
                    retain,
                },
                State::Connected,
            ) => {
                // crd subscribes at QoS 1; a broker never sends more (3.8.4).
                if qos == 2 {
                    return Err(SessionError::Protocol(
                        "a QoS 2 PUBLISH on a QoS 1 subscription".into(),
                    ));
                }
                up.push(Up::Message(Inbound {
                    topic,
                    payload,
                    pkid,
                    dup,
                    retain,
                }));
            }
            (Packet::PingResp, _) => {}
            (p, s) => return Err(unexpected(&p, s)),
        }
        Ok(())
    }

    /// PUBACK (3.4): the publish leaves the window.
    fn handle_puback(&mut self, pkid: u16, up: &mut Vec<Up>) {
        // Brokers ack in order (4.6), but any order and unknown ids are handled:
        // the spool's watermark only moves over a contiguous acked prefix anyway.
        if let Some(i) = self.inflight.iter().position(|&(p, _)| p == pkid) {
            if let Some((_, seq)) = self.inflight.remove(i) {
                up.push(Up::Acked(seq));
            }
        } else {
            log::debug!("mqtt: PUBACK for unknown packet id {pkid}");
        }
    }

    /// SUBACK (3.9) of the SUBSCRIBE awaiting it: which filters were refused.
    fn handle_suback(&mut self, codes: &[u8], up: &mut Vec<Up>) -> Result<(), SessionError> {
        self.sub_pkid = None;
        // One return code per filter, in order (3.9.3).
        if codes.len() != self.sub_filters {
            return Err(SessionError::Protocol(format!(
                "SUBACK with {} return codes for {} filters",
                codes.len(),
                self.sub_filters
            )));
        }
        let refused = (0..codes.len()).filter(|&i| codes[i] == 0x80).collect();
        up.push(Up::Subscribed { refused });
        Ok(())
    }

    /// The next instant `handle_timer` has work: CONNACK deadline, a keepalive
    /// PINGREQ due, or the silent-broker deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Idle => None,
            State::AwaitConnAck { since } => Some(since + CONNACK_TIMEOUT),
            State::Connected => Some((self.last_tx + self.cfg.keepalive).min(self.dead_at())),
        }
    }

    fn dead_at(&self) -> Instant {
        self.last_rx + self.cfg.keepalive * 3 / 2
    }

    /// Sends PINGREQ when nothing was sent for a keepalive (3.1.2.10); declares
    /// the broker dead when nothing came from it for 1.5 x keepalive (a PINGRESP
    /// answers every PINGREQ, so a live broker is never that quiet).
    pub fn handle_timer(&mut self, now: Instant) -> Result<(), SessionError> {
        match self.state {
            State::Idle => Ok(()),
            State::AwaitConnAck { since } if now >= since + CONNACK_TIMEOUT => {
                Err(SessionError::NoConnAck)
            }
            State::AwaitConnAck { .. } => Ok(()),
            State::Connected => {
                if now >= self.dead_at() {
                    return Err(SessionError::Silent);
                }
                if now >= self.last_tx + self.cfg.keepalive {
                    self.send(&codec::PINGREQ, "PINGREQ", now)?;
                }
                Ok(())
            }
        }
    }
}

/// The error for packet `p` arriving in state `s`, which does not expect it.
fn unexpected(p: &Packet, s: State) -> SessionError {
    let kind = match p {
        Packet::ConnAck(..) => 2,
        Packet::Publish { .. } => 3,
        Packet::PubAck(_) => 4,
        Packet::SubAck { .. } => 9,
        Packet::PingResp => 13,
        Packet::Other(t) => *t,
    };
    SessionError::Protocol(format!(
        "unexpected {} while {}",
        codec::packet_name(kind),
        if matches!(s, State::Connected) {
            "connected"
        } else {
            "connecting"
        }
    ))
}

/// Looks at the packet at the front of `buf`: `None` when it is not over `limit`
/// (or its length is not complete yet); `Some(None)` when it is an oversized
/// PUBLISH whose head has not all arrived; `Some(Some((skip, n)))` once its
/// topic and packet id are read from its first `n` bytes (the rest is to be
/// skipped). An oversized packet of any other kind is a protocol error.
fn oversized(buf: &[u8], limit: usize) -> Result<Option<Option<(Skip, usize)>>, SessionError> {
    let Some((first, hdr, remaining)) = codec::header(buf).map_err(SessionError::Protocol)? else {
        return Ok(None);
    };
    if remaining <= limit {
        return Ok(None);
    }
    if first >> 4 != 3 {
        return Err(SessionError::Protocol(format!(
            "a packet of {remaining} bytes from the broker (over {limit})"
        )));
    }
    let qos = (first >> 1) & 3;
    if qos > 1 {
        return Err(SessionError::Protocol(
            "a QoS 2 PUBLISH on a QoS 1 subscription".into(),
        ));
    }
    // Variable header (3.3.2): the topic (2-byte length, then UTF-8), then the
    // packet id for QoS 1. The topic is at most 64 KiB: buffered, bounded.
    let Some(tlen) = buf
        .get(hdr..hdr + 2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    else {
        return Ok(Some(None));
    };
    let head = 2 + tlen + if qos == 1 { 2 } else { 0 };
    if head > remaining {
        return Err(SessionError::Protocol(
            "a PUBLISH shorter than its topic".into(),
        ));
    }
    if buf.len() < hdr + head {
        return Ok(Some(None));
    }
    let topic = String::from_utf8_lossy(&buf[hdr + 2..hdr + 2 + tlen]).into_owned();
    let pkid = (qos == 1).then(|| u16::from_be_bytes([buf[hdr + 2 + tlen], buf[hdr + 3 + tlen]]));
    Ok(Some(Some((
        Skip {
            left: remaining - head,
            topic,
            size: remaining - head,
            pkid,
        },
        hdr + head,
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use rumqttc::mqttbytes::QoS;
    use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet, PubAck, Publish};

    fn cfg() -> SessionConfig {
        SessionConfig {
            client_id: "crd-r1".into(),
            keepalive: Duration::from_secs(10),
            max_inflight: 3,
            login: Some(("u".into(), "p".into())),
            will: Some(("crd/r1/status".into(), b"offline".to_vec())),
            max_packet: 1 << 20,
            max_incoming: MAX_INCOMING_PACKET,
            clean_session: true,
        }
    }

    /// Decodes everything the session queued.
    fn sent(s: &mut Session) -> Vec<Packet> {
        let mut out = Vec::new();
        let o = s.output();
        let mut b = BytesMut::from(o.pending());
        o.consume(o.len());
        while !b.is_empty() {
            out.push(Packet::read(&mut b, 1 << 20).unwrap());
        }
        out
    }

    /// What a broker sends, encoded by rumqttc.
    fn broker(packets: &[Packet]) -> Vec<u8> {
        let mut b = BytesMut::new();
        for p in packets {
            p.write(&mut b, 1 << 20).unwrap();
        }
        b.to_vec()
    }

    fn connected(now: Instant) -> Session {
        let mut s = Session::new(cfg(), now);
        s.start(now).unwrap();
        sent(&mut s);
        let mut up = Vec::new();
        let mut b = broker(&[Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            false,
        ))]);
        s.handle_input(&mut b, now, &mut up).unwrap();
        assert_eq!(
            up,
            vec![Up::Connected {
                session_present: false
            }]
        );
        s
    }

    /// A subscriber's session (the collector's, the command edge's).
    #[test]
    fn a_subscriber_subscribes_receives_and_acknowledges_when_it_chooses() {
        use rumqttc::mqttbytes::v4::{SubAck, SubscribeReasonCode};
        let t0 = Instant::now();
        let mut s = Session::new(cfg(), t0);
        s.set_subscriber(1024);
        s.start(t0).unwrap();
        match &sent(&mut s)[..] {
            [Packet::Connect(c)] => assert!(!c.clean_session, "a persistent session"),
            p => panic!("{p:?}"),
        }
        let mut b = broker(&[Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            true,
        ))]);
        s.handle_input(&mut b, t0, &mut Vec::new()).unwrap();
        s.subscribe(&["crd/+/event/#".into(), "$share/g/x".into()], t0)
            .unwrap();
        let pkid = match &sent(&mut s)[..] {
            [Packet::Subscribe(sub)] => {
                let f: Vec<_> = sub
                    .filters
                    .iter()
                    .map(|f| (f.path.as_str(), f.qos))
                    .collect();
                assert_eq!(
                    f,
                    [
                        ("crd/+/event/#", QoS::AtLeastOnce),
                        ("$share/g/x", QoS::AtLeastOnce)
                    ]
                );
                sub.pkid
            }
            p => panic!("{p:?}"),
        };
        let mut publish = Publish::new("crd/r1/event/Disk", QoS::AtLeastOnce, b"{}".to_vec());
        publish.pkid = 7;
        let mut b = broker(&[
            Packet::SubAck(SubAck::new(
                pkid,
                vec![
                    SubscribeReasonCode::Success(QoS::AtLeastOnce),
                    SubscribeReasonCode::Failure,
                ],
            )),
            Packet::Publish(publish),
            Packet::Publish(Publish::new("a/b", QoS::AtMostOnce, b"q0".to_vec())),
        ]);
        let mut up = Vec::new();
        s.handle_input(&mut b, t0, &mut up).unwrap();
        assert_eq!(up[0], Up::Subscribed { refused: vec![1] });
        assert_eq!(
            up[1],
            Up::Message(Inbound {
                topic: "crd/r1/event/Disk".into(),
                payload: b"{}".to_vec(),
                pkid: Some(7),
                dup: false,
                retain: false,
            })
        );
        assert!(matches!(&up[2], Up::Message(m) if m.pkid.is_none() && m.topic == "a/b"));
        assert!(
            sent(&mut s).is_empty(),
            "no PUBACK until the caller says so"
        );
        s.puback(7, t0).unwrap();
        assert_eq!(sent(&mut s), vec![Packet::PubAck(PubAck::new(7))]);
    }

    /// Found by the mqtt_input fuzz target: a SUBACK with more return codes than
    /// the SUBSCRIBE had filters named a filter that does not exist.
    #[test]
    fn a_suback_must_answer_each_filter_once() {
        use rumqttc::mqttbytes::v4::{SubAck, SubscribeReasonCode};
        let t0 = Instant::now();
        let mut s = connected(t0);
        s.subscribe(&["a".into(), "b".into()], t0).unwrap();
        let pkid = match &sent(&mut s)[..] {
            [Packet::Subscribe(sub)] => sub.pkid,
            p => panic!("{p:?}"),
        };
        let codes = vec![SubscribeReasonCode::Failure; 10];
        let mut b = broker(&[Packet::SubAck(SubAck::new(pkid, codes))]);
        let e = s.handle_input(&mut b, t0, &mut Vec::new()).unwrap_err();
        assert_eq!(
            e,
            SessionError::Protocol("SUBACK with 10 return codes for 2 filters".into())
        );
    }

    /// A 10 MB message is never held in memory; its head is kept, the
    /// rest skipped as it arrives, and the caller told so it can acknowledge it.
    #[test]
    fn an_oversized_publish_is_skipped_as_it_arrives_and_reported() {
        let t0 = Instant::now();
        let mut s = connected(t0);
        s.set_subscriber(4096);
        let mut big = Publish::new("crd/r1/big", QoS::AtLeastOnce, vec![b'x'; 10 << 20]);
        big.pkid = 9;
        let mut after = Publish::new("crd/r1/small", QoS::AtLeastOnce, b"ok".to_vec());
        after.pkid = 10;
        let mut all = BytesMut::new();
        Packet::Publish(big).write(&mut all, 20 << 20).unwrap();
        all.extend_from_slice(&broker(&[Packet::Publish(after)]));
        let mut up = Vec::new();
        let mut buf = Vec::new();
        let mut most = 0;
        for chunk in all.chunks(4096) {
            buf.extend_from_slice(chunk);
            s.handle_input(&mut buf, t0, &mut up).unwrap();
            most = most.max(buf.len());
        }
        assert!(most <= 4096 + 16, "buffered {most} bytes at most");
        assert_eq!(
            up[0],
            Up::Oversized {
                topic: "crd/r1/big".into(),
                size: 10 << 20,
                pkid: Some(9)
            }
        );
        assert!(matches!(&up[1], Up::Message(m) if m.pkid == Some(10) && &m.payload[..] == b"ok"));
        // Any other packet over the limit is a protocol error.
        let mut s = connected(t0);
        let mut b = vec![0x90u8, 0xff, 0xff, 0x7f]; // SUBACK of 2 MiB
        assert!(matches!(
            s.handle_input(&mut b, t0, &mut Vec::new()),
            Err(SessionError::Protocol(_))
        ));
    }

    #[test]
    fn connect_carries_clean_session_keepalive_login_and_a_retained_will() {
        let now = Instant::now();
        let mut s = Session::new(cfg(), now);
        s.start(now).unwrap();
        let p = sent(&mut s);
        let Packet::Connect(c) = &p[0] else {
            panic!("{p:?}")
        };
        assert!(c.clean_session);
        assert_eq!(c.keep_alive, 10);
        assert_eq!(c.client_id, "crd-r1");
        assert_eq!(c.login.as_ref().unwrap().username, "u");
        let w = c.last_will.as_ref().unwrap();
        assert!(w.retain && w.qos == QoS::AtLeastOnce && w.topic == "crd/r1/status");
        assert!(!s.window_open(), "nothing is published before CONNACK");
    }

    #[test]
    fn a_refused_connack_is_an_error_naming_the_code() {
        let now = Instant::now();
        let mut s = Session::new(cfg(), now);
        s.start(now).unwrap();
        let mut b = broker(&[Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::BadUserNamePassword,
            false,
        ))]);
        let e = s.handle_input(&mut b, now, &mut Vec::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "broker refused the connection: bad user name or password (return code 4)"
        );
    }

    #[test]
    fn the_window_bounds_inflight_and_acks_map_back_to_seqs_in_any_order() {
        let now = Instant::now();
        let mut s = connected(now);
        for seq in 1..=3 {
            assert!(s.window_open());
            s.publish("t", &[1], false, false, Some(seq), now).unwrap();
        }
        assert!(!s.window_open(), "window of 3 is full");
        let ids: Vec<u16> = sent(&mut s)
            .into_iter()
            .map(|p| match p {
                Packet::Publish(p) => {
                    assert_eq!(p.qos, QoS::AtLeastOnce);
                    p.pkid
                }
                p => panic!("{p:?}"),
            })
            .collect();
        assert_eq!(ids, vec![1, 2, 3]);
        // Out of order, one unknown id, one split across two reads.
        let mut up = Vec::new();
        let mut b = broker(&[
            Packet::PubAck(PubAck::new(3)),
            Packet::PubAck(PubAck::new(77)),
            Packet::PubAck(PubAck::new(1)),
        ]);
        let tail = b.split_off(b.len() - 2);
        s.handle_input(&mut b, now, &mut up).unwrap();
        assert_eq!(up, vec![Up::Acked(Some(3))]);
        b.extend_from_slice(&tail);
        s.handle_input(&mut b, now, &mut up).unwrap();
        assert_eq!(up, vec![Up::Acked(Some(3)), Up::Acked(Some(1))]);
        assert!(s.window_open());
        assert_eq!(s.inflight(), 1);
    }

    #[test]
    fn hand_encoded_publishes_decode_with_rumqttc() {
        let now = Instant::now();
        let mut s = connected(now);
        for (len, retain, dup) in [
            (0usize, false, false),
            (100, true, false),
            (300, false, true),
            (20_000, true, true),
        ] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            s.publish("crd/r1/event/Ä", &payload, retain, dup, None, now)
                .unwrap();
            let p = sent(&mut s);
            let Packet::Publish(p) = &p[0] else {
                panic!("{p:?}")
            };
            assert_eq!(
                (p.topic.as_str(), &p.payload[..]),
                ("crd/r1/event/Ä", &payload[..])
            );
            assert_eq!((p.qos, p.retain, p.dup), (QoS::AtLeastOnce, retain, dup));
            assert_eq!(p.pkid as usize, s.inflight());
        }
        let big = vec![0u8; 2 << 20];
        assert!(matches!(
            s.publish("t", &big, false, false, None, now),
            Err(SessionError::Protocol(_))
        ));
    }

    #[test]
    fn the_output_buffer_keeps_order_across_partial_writes() {
        let mut o = OutBuf::default();
        o.extend(b"abcdef");
        o.consume(4);
        assert_eq!(o.pending(), b"ef");
        o.extend(b"gh"); // written prefix (4) outweighs the rest (2): compacted
        assert_eq!((o.pending(), o.start), (&b"efgh"[..], 0));
        o.consume(1);
        o.extend(b"i");
        assert_eq!(o.pending(), b"fghi");
        o.consume(10);
        assert!(o.is_empty() && o.buf.is_empty());
    }

    #[test]
    fn packet_ids_skip_zero_and_ids_in_flight() {
        let now = Instant::now();
        let mut s = connected(now);
        s.next_pkid = u16::MAX;
        s.publish("t", &[], false, false, Some(1), now).unwrap();
        s.publish("t", &[], false, false, Some(2), now).unwrap();
        s.next_pkid = u16::MAX; // in flight now: MAX and 1
        s.publish("t", &[], false, false, Some(3), now).unwrap();
        let ids: Vec<u16> = s.inflight.iter().map(|e| e.0).collect();
        assert_eq!(ids, vec![u16::MAX, 1, 2]);
    }

    #[test]
    fn keepalive_pings_when_idle_and_a_silent_broker_is_dead_within_one_and_a_half() {
        let t0 = Instant::now();
        let mut s = connected(t0);
        let ka = Duration::from_secs(10);
        assert_eq!(s.poll_timeout(), Some(t0 + ka));
        s.handle_timer(t0 + ka).unwrap();
        assert_eq!(sent(&mut s), vec![Packet::PingReq]);
        // The broker answers: alive.
        let mut b = broker(&[Packet::PingResp]);
        s.handle_input(&mut b, t0 + ka + Duration::from_millis(5), &mut Vec::new())
            .unwrap();
        s.handle_timer(t0 + ka * 2).unwrap();
        assert_eq!(sent(&mut s), vec![Packet::PingReq]);
        // Now silence: dead at last_rx + 1.5 x keepalive, not later.
        let last_rx = t0 + ka + Duration::from_millis(5);
        assert!(
            s.handle_timer(last_rx + ka * 3 / 2 - Duration::from_millis(1))
                .is_ok()
        );
        assert_eq!(
            s.handle_timer(last_rx + ka * 3 / 2),
            Err(SessionError::Silent)
        );
    }

    #[test]
    fn publishing_defers_pings_but_a_broker_that_never_acks_is_dead_at_one_and_a_half() {
        let t0 = Instant::now();
        let mut s = connected(t0);
        let ka = Duration::from_secs(10);
        // A publish a second fills the window of 3 (t = 1, 2, 3); nothing is acked.
        for i in 1..=14 {
            let now = t0 + Duration::from_secs(i);
            if s.window_open() {
                s.publish("t", &[], false, false, Some(i), now).unwrap();
            }
            s.handle_timer(now).unwrap();
        }
        let p = sent(&mut s);
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[..3].iter().all(|p| matches!(p, Packet::Publish(_))));
        assert_eq!(
            p[3],
            Packet::PingReq,
            "the ping comes a keepalive after the last publish"
        );
        assert_eq!(s.handle_timer(t0 + ka * 3 / 2), Err(SessionError::Silent));
    }

    #[test]
    fn no_connack_in_time_says_so_and_garbage_is_a_protocol_error() {
        let t0 = Instant::now();
        let mut s = Session::new(cfg(), t0);
        s.start(t0).unwrap();
        assert_eq!(s.poll_timeout(), Some(t0 + CONNACK_TIMEOUT));
        // A broker that never sends CONNACK is reported as such, not as silent
        // past 1.5 x keepalive: the timeout that fires is the CONNACK one.
        let e = s.handle_timer(t0 + CONNACK_TIMEOUT).unwrap_err();
        assert_eq!(e, SessionError::NoConnAck);
        assert_eq!(e.to_string(), "no CONNACK within 10 s of CONNECT");
        let mut s = connected(t0);
        let mut b = vec![0xF0u8, 0x00]; // reserved packet type 15
        assert!(matches!(
            s.handle_input(&mut b, t0, &mut Vec::new()),
            Err(SessionError::Protocol(_))
        ));
        // A PUBLISH from the broker is handed up (a daemon that subscribes to
        // nothing drops and counts it); one at QoS 2 is refused.
        let mut s = connected(t0);
        let mut b = broker(&[Packet::Publish(Publish::new("x", QoS::AtMostOnce, vec![]))]);
        let mut up = Vec::new();
        s.handle_input(&mut b, t0, &mut up).unwrap();
        assert!(matches!(&up[..], [Up::Message(m)] if m.topic == "x"));
        let mut q2 = Publish::new("x", QoS::ExactlyOnce, vec![]);
        q2.pkid = 1;
        let mut b = broker(&[Packet::Publish(q2)]);
        assert!(s.handle_input(&mut b, t0, &mut Vec::new()).is_err());
    }

    #[test]
    fn reconnect_forgets_the_window_and_marks_resends_dup() {
        let now = Instant::now();
        let mut s = connected(now);
        s.publish("t", &[], false, false, Some(5), now).unwrap();
        s.start(now).unwrap();
        assert_eq!(s.inflight(), 0);
        let p = sent(&mut s);
        assert!(matches!(p[..], [Packet::Connect(_)]), "{p:?}");
        let mut b = broker(&[Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            false,
        ))]);
        s.handle_input(&mut b, now, &mut Vec::new()).unwrap();
        s.publish("t", &[], false, true, Some(5), now).unwrap();
        let Packet::Publish(p) = &sent(&mut s)[0] else {
            panic!()
        };
        assert!(p.dup);
    }
}
