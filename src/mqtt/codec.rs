//! MQTT 3.1.1 packets as bytes, both ways, for the session: those crd sends
//! (CONNECT, SUBSCRIBE, PUBACK, PINGREQ, DISCONNECT; the session writes its
//! PUBLISH itself, straight into its output) and those a broker sends a client
//! (CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP). Pure: bytes in, values out.
//!
//! It is written here rather than taken from rumqttc's v4 codec and the `bytes`
//! crate it reads from, which would cost a router's build about 10 KB; the tests
//! check these bytes against rumqttc's codec, kept as a dev-dependency. Section numbers refer to
//! the MQTT 3.1.1 OASIS standard.

/// What crd puts in CONNECT (3.1).
pub struct Connect<'a> {
    pub client_id: &'a str,
    /// Seconds (3.1.2.10).
    pub keep_alive: u16,
    pub clean_session: bool,
    pub login: Option<(&'a str, &'a str)>,
    /// Topic and payload, published at QoS 1 and retained (3.1.2.5).
    pub will: Option<(&'a str, &'a [u8])>,
}

/// PINGREQ (3.12).
pub const PINGREQ: [u8; 2] = [0xC0, 0];
/// DISCONNECT (3.14).
pub const DISCONNECT: [u8; 2] = [0xE0, 0];

/// A packet from the broker.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet {
    /// CONNACK (3.2): the return code, 0 = accepted.
    /// Return code, and whether the broker kept the session (3.2.2.2).
    ConnAck(u8, bool),
    /// PUBLISH (3.3); `qos` is 0, 1 or 2, `pkid` present from QoS 1.
    Publish {
        topic: String,
        payload: Vec<u8>,
        qos: u8,
        pkid: Option<u16>,
        dup: bool,
        retain: bool,
    },
    /// PUBACK (3.4): the packet id.
    PubAck(u16),
    /// SUBACK (3.9): the packet id and one return code per filter.
    SubAck { pkid: u16, codes: Vec<u8> },
    /// PINGRESP (3.13).
    PingResp,
    /// A packet a broker does not send a client here: its type (the fixed
    /// header's upper four bits), named by `packet_name`.
    Other(u8),
}

/// The name of packet type `t` (2.2.1), for messages.
pub fn packet_name(t: u8) -> &'static str {
    const NAMES: [&str; 16] = [
        "reserved type 0",
        "CONNECT",
        "CONNACK",
        "PUBLISH",
        "PUBACK",
        "PUBREC",
        "PUBREL",
        "PUBCOMP",
        "SUBSCRIBE",
        "SUBACK",
        "UNSUBSCRIBE",
        "UNSUBACK",
        "PINGREQ",
        "PINGRESP",
        "DISCONNECT",
        "reserved type 15",
    ];
    NAMES[usize::from(t & 15)]
}

/// What a CONNACK's non-zero return code means (3.2.2.3).
pub fn refusal(code: u8) -> String {
    let why = match code {
        1 => "unacceptable protocol version",
        2 => "client identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => "reserved return code",
    };
    format!("{why} (return code {code})")
}

/// Writes a remaining length (2.2.3, 1 to 4 bytes of 7 bits) into `out`;
/// returns how many bytes it took.
pub fn remaining_length(mut n: usize, out: &mut [u8; 4]) -> usize {
    let mut k = 0;
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        out[k] = if n > 0 { byte | 0x80 } else { byte };
        k += 1;
        if n == 0 || k == out.len() {
            return k;
        }
    }
}

/// Appends a fixed header: type and flags, then the remaining length.
fn fixed_header(first: u8, remaining: usize, out: &mut Vec<u8>) {
    let mut len = [0u8; 4];
    let k = remaining_length(remaining, &mut len);
    out.push(first);
    out.extend_from_slice(&len[..k]);
}

/// Appends a length-prefixed string or binary field (1.5.3); callers keep it
/// under 64 KiB (topics, ids and credentials are checked where configured).
fn field(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(b.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    out.extend_from_slice(&b[..b.len().min(usize::from(u16::MAX))]);
}

/// Appends CONNECT (3.1).
pub fn connect(c: &Connect, out: &mut Vec<u8>) {
    let mut flags = 0u8;
    let mut payload = Vec::new();
    field(c.client_id.as_bytes(), &mut payload);
    if let Some((topic, msg)) = c.will {
        // Will flag, will QoS 1, will retain (3.1.2.5-3.1.2.7).
        flags |= 0x04 | 0x08 | 0x20;
        field(topic.as_bytes(), &mut payload);
        field(msg, &mut payload);
    }
    if let Some((user, pass)) = c.login {
        // An empty password is no password (3.1.2.9), as rumqttc sent it.
        flags |= 0x80;
        field(user.as_bytes(), &mut payload);
        if !pass.is_empty() {
            flags |= 0x40;
            field(pass.as_bytes(), &mut payload);
        }
    }
    if c.clean_session {
        flags |= 0x02;
    }
    // Protocol name "MQTT", level 4, flags, keep alive (3.1.2).
    let head = [0, 4, b'M', b'Q', b'T', b'T', 4, flags];
    fixed_header(0x10, head.len() + 2 + payload.len(), out);
    out.extend_from_slice(&head);
    out.extend_from_slice(&c.keep_alive.to_be_bytes());
    out.extend_from_slice(&payload);
}

/// Appends SUBSCRIBE (3.8) of `filters`, each at QoS 1.
pub fn subscribe(pkid: u16, filters: &[String], out: &mut Vec<u8>) {
    let len = 2 + filters.iter().map(|f| 2 + f.len() + 1).sum::<usize>();
    fixed_header(0x82, len, out);
    out.extend_from_slice(&pkid.to_be_bytes());
    for f in filters {
        field(f.as_bytes(), out);
        out.push(1);
    }
}

/// PUBACK (3.4).
pub fn puback(pkid: u16) -> [u8; 4] {
    let [hi, lo] = pkid.to_be_bytes();
    [0x40, 2, hi, lo]
}

/// The fixed header at the front of `buf`: (type and flags byte, header bytes,
/// remaining length); `Ok(None)` while it has not all arrived.
pub fn header(buf: &[u8]) -> Result<Option<(u8, usize, usize)>, String> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut remaining = 0usize;
    let mut at = 1;
    loop {
        let Some(&b) = buf.get(at) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7f) << (7 * (at - 1));
        at += 1;
        if b & 0x80 == 0 {
            return Ok(Some((first, at, remaining)));
        }
        if at > 4 {
            return Err("malformed remaining length".into());
        }
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Decodes the packet at the front of `buf`: `Ok(None)` until it has all
/// arrived, else the packet and the bytes it took. A packet over `max` bytes
/// (after its fixed header) is an error; the session skips oversized PUBLISH
/// packets before they get here.
pub fn decode(buf: &[u8], max: usize) -> Result<Option<(Packet, usize)>, String> {
    let Some((first, hdr, len)) = header(buf)? else {
        return Ok(None);
    };
    if len > max {
        return Err(format!(
            "a packet of {len} bytes from the broker (over {max})"
        ));
    }
    if buf.len() < hdr + len {
        return Ok(None);
    }
    let body = &buf[hdr..hdr + len];
    let kind = first >> 4;
    let exact = |n: usize| {
        if len == n {
            Ok(())
        } else {
            Err(format!("{} of {len} bytes", packet_name(kind)))
        }
    };
    let p = match kind {
        2 => {
            exact(2)?;
            Packet::ConnAck(body[1], body[0] & 1 != 0)
        }
        3 => {
            let qos = (first >> 1) & 3;
            if qos == 3 {
                return Err("PUBLISH with QoS 3".into());
            }
            let id = if qos > 0 { 2 } else { 0 };
            let tlen = body.get(..2).map_or(usize::MAX, |b| usize::from(be16(b)));
            if tlen.saturating_add(2 + id) > len {
                return Err("a PUBLISH shorter than its topic".into());
            }
            let topic = std::str::from_utf8(&body[2..2 + tlen])
                .map_err(|_| "a PUBLISH topic that is not UTF-8".to_string())?;
            Packet::Publish {
                topic: topic.to_string(),
                pkid: (qos > 0).then(|| be16(&body[2 + tlen..])),
                payload: body[2 + tlen + id..].to_vec(),
                qos,
                dup: first & 0x08 != 0,
                retain: first & 0x01 != 0,
            }
        }
        4 => {
            exact(2)?;
            Packet::PubAck(be16(body))
        }
        9 => {
            if len < 3 {
                return Err(format!("SUBACK of {len} bytes"));
            }
            Packet::SubAck {
                pkid: be16(body),
                codes: body[2..].to_vec(),
            }
        }
        13 => {
            exact(0)?;
            Packet::PingResp
        }
        t => Packet::Other(t),
    };
    Ok(Some((p, hdr + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use rumqttc::mqttbytes::QoS;
    use rumqttc::mqttbytes::v4::{self, Packet as R};

    fn rumqttc_reads(b: &[u8]) -> R {
        let mut m = BytesMut::from(b);
        let p = R::read(&mut m, 1 << 20).expect("rumqttc decodes it");
        assert!(m.is_empty(), "rumqttc took every byte");
        p
    }

    fn rumqttc_writes(p: R) -> Vec<u8> {
        let mut m = BytesMut::new();
        p.write(&mut m, 1 << 20).unwrap();
        m.to_vec()
    }

    #[test]
    fn connect_reads_as_rumqttc_writes_it() {
        for (login, will, clean) in [
            (None, None, true),
            (
                Some(("u", "p")),
                Some(("crd/r1/status", &b"offline"[..])),
                false,
            ),
            (Some(("user", "")), None, false),
        ] {
            let mut b = Vec::new();
            connect(
                &Connect {
                    client_id: "crd-r1",
                    keep_alive: 30,
                    clean_session: clean,
                    login,
                    will,
                },
                &mut b,
            );
            let R::Connect(c) = rumqttc_reads(&b) else {
                panic!("not a CONNECT")
            };
            let mut want = v4::Connect::new("crd-r1");
            want.keep_alive = 30;
            want.clean_session = clean;
            want.login = login.map(|(u, p)| v4::Login::new(u, p));
            want.last_will =
                will.map(|(t, m)| v4::LastWill::new(t, m.to_vec(), QoS::AtLeastOnce, true));
            assert_eq!(c, want);
            assert_eq!(b, rumqttc_writes(R::Connect(want)), "byte for byte");
        }
    }

    #[test]
    fn subscribe_puback_and_the_fixed_packets_match_rumqttc() {
        let filters = vec!["crd/+/event/#".to_string(), "$share/g/a".to_string()];
        let mut b = Vec::new();
        subscribe(7, &filters, &mut b);
        let mut want = v4::Subscribe::new_many(
            filters
                .iter()
                .map(|f| v4::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)),
        );
        want.pkid = 7;
        assert_eq!(b, rumqttc_writes(R::Subscribe(want)));
        assert_eq!(
            puback(65535).to_vec(),
            rumqttc_writes(R::PubAck(v4::PubAck::new(65535)))
        );
        assert_eq!(&PINGREQ[..], rumqttc_writes(R::PingReq));
        assert_eq!(&DISCONNECT[..], rumqttc_writes(R::Disconnect));
    }

    #[test]
    fn what_a_broker_sends_decodes_as_rumqttc_encodes_it() {
        let one = |p: R| {
            let b = rumqttc_writes(p);
            let (got, used) = decode(&b, 1 << 20).unwrap().expect("whole");
            assert_eq!(used, b.len());
            // Every strict prefix is incomplete, never an error.
            for cut in 0..b.len() {
                assert_eq!(decode(&b[..cut], 1 << 20), Ok(None), "cut at {cut}");
            }
            got
        };
        assert_eq!(
            one(R::ConnAck(v4::ConnAck::new(
                v4::ConnectReturnCode::NotAuthorized,
                false
            ))),
            Packet::ConnAck(5, false)
        );
        assert_eq!(
            one(R::ConnAck(v4::ConnAck::new(
                v4::ConnectReturnCode::Success,
                true
            ))),
            Packet::ConnAck(0, true)
        );
        assert_eq!(one(R::PubAck(v4::PubAck::new(9))), Packet::PubAck(9));
        assert_eq!(one(R::PingResp), Packet::PingResp);
        assert_eq!(
            one(R::SubAck(v4::SubAck::new(
                3,
                vec![
                    v4::SubscribeReasonCode::Success(QoS::AtLeastOnce),
                    v4::SubscribeReasonCode::Failure
                ]
            ))),
            Packet::SubAck {
                pkid: 3,
                codes: vec![1, 0x80]
            }
        );
        let mut p = v4::Publish::new("crd/n1/event/x", QoS::AtLeastOnce, b"{\"a\":1}".to_vec());
        p.pkid = 300;
        p.dup = true;
        p.retain = true;
        assert_eq!(
            one(R::Publish(p)),
            Packet::Publish {
                topic: "crd/n1/event/x".into(),
                payload: b"{\"a\":1}".to_vec(),
                qos: 1,
                pkid: Some(300),
                dup: true,
                retain: true
            }
        );
        let p = v4::Publish::new("t", QoS::AtMostOnce, Vec::new());
        assert!(matches!(
            one(R::Publish(p)),
            Packet::Publish { qos: 0, pkid: None, ref payload, .. } if payload.is_empty()
        ));
        assert_eq!(one(R::PingReq), Packet::Other(12));
    }

    #[test]
    fn malformed_packets_are_errors_naming_what() {
        let err = |b: &[u8]| decode(b, 1 << 20).unwrap_err();
        assert_eq!(
            err(&[0x30, 0x80, 0x80, 0x80, 0x80, 0x01]),
            "malformed remaining length"
        );
        assert_eq!(err(&[0x20, 0x03, 0, 0, 0]), "CONNACK of 3 bytes");
        assert_eq!(err(&[0x36, 0x02, 0, 1]), "PUBLISH with QoS 3");
        assert_eq!(
            err(&[0x32, 0x03, 0, 5, b'a']),
            "a PUBLISH shorter than its topic"
        );
        assert_eq!(
            err(&[0x30, 0x03, 0, 1, 0xFF]),
            "a PUBLISH topic that is not UTF-8"
        );
        assert_eq!(err(&[0x90, 0x02, 0, 1]), "SUBACK of 2 bytes");
        assert_eq!(
            decode(&[0x40, 0x02, 0, 1], 1),
            Err("a packet of 2 bytes from the broker (over 1)".into())
        );
    }
}
