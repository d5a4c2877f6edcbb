//! Fuzz target: whatever bytes the broker sends, `Session::handle_input` never
//! panics, reports trouble only as a `SessionError`, stays within the memory cap
//! (`-malloc_limit_mb`), says `Connected` only once per connection attempt, and
//! never acks a seq that is not in flight: each `Acked(seq)` matches one publish
//! of this connection not acked before, and the in-flight count agrees.
//!
//! Input: a flags byte, two chunk-length bytes, then the broker's bytes. Flags bit
//! 0: a valid CONNACK (20 02 00 00) comes first, so the input meets a connected
//! session; bits 1-3: how many records (seqs 100, 101, ...) are published as soon
//! as the session is connected (packet ids 1, 2, ...); bit 4: the first of them
//! carries no seq; bit 5: a subscriber's session (a persistent session, packets
//! over 1 KiB skipped as `Oversized`, one SUBSCRIBE of two filters once
//! connected). The broker's bytes arrive in chunks of alternately (byte 1) + 1
//! and (byte 2) + 1 bytes, so packets split across reads. After an error the
//! session reconnects (`start`) and the rest of the bytes go to the new connection,
//! at most twice.

#![no_main]

use bytes::BytesMut;
use crd::mqtt::session::{Session, SessionConfig, Up};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

const CONNACK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

/// Publishes `n` records; returns what is in flight, as seqs.
fn publish(s: &mut Session, n: u8, first_none: bool, now: Instant) -> Vec<Option<u64>> {
    let mut sent = Vec::new();
    for i in 0..n {
        if !s.window_open() {
            break;
        }
        let seq = if first_none && i == 0 { None } else { Some(100 + u64::from(i)) };
        s.publish("crd/r1/event/m", &[i], false, false, seq, now).expect("a small publish fits");
        sent.push(seq);
    }
    sent
}

fuzz_target!(|data: &[u8]| {
    let [flags, c1, c2, input @ ..] = data else { return };
    let n = (flags >> 1) & 7;
    let first_none = flags & 16 != 0;
    let cfg = SessionConfig {
        client_id: "crd-r1".into(),
        keepalive: Duration::from_secs(30),
        max_inflight: 4,
        login: Some(("u".into(), "p".into())),
        will: Some(("crd/r1/status".into(), b"offline".to_vec())),
        max_packet: 1 << 16,
        max_incoming: crd::mqtt::session::MAX_INCOMING_PACKET,
        clean_session: true,
    };
    let subscriber = flags & 32 != 0;
    let t0 = Instant::now();
    let mut s = Session::new(cfg, t0);
    if subscriber {
        s.set_subscriber(1024);
    }
    s.start(t0).expect("CONNECT fits");
    // Seqs published on this connection and not acked yet.
    let mut inflight: Vec<Option<u64>> = Vec::new();
    let mut published = false;
    let mut buf = BytesMut::new();
    let mut up = Vec::new();
    if flags & 1 != 0 {
        buf.extend_from_slice(&CONNACK);
        s.handle_input(&mut buf, t0, &mut up).expect("a valid CONNACK");
        assert_eq!(up, [Up::Connected]);
        assert!(buf.is_empty());
    }
    let mut restarts = 0;
    let mut rest = input;
    let mut i = 0usize;
    while !rest.is_empty() {
        let now = t0 + Duration::from_millis(i as u64);
        if s.is_connected() && !published {
            inflight = publish(&mut s, n, first_none, now);
            if subscriber {
                s.subscribe(&["crd/+/event/#".into(), "$share/g/a".into()], now).expect("SUBSCRIBE fits");
            }
            published = true;
        }
        let want = usize::from(if i % 2 == 0 { *c1 } else { *c2 }) + 1;
        let (chunk, tail) = rest.split_at(want.min(rest.len()));
        rest = tail;
        i += 1;
        buf.extend_from_slice(chunk);
        let was_connected = s.is_connected();
        up.clear();
        let r = s.handle_input(&mut buf, now, &mut up);
        for u in &up {
            match u {
                Up::Connected => {}
                Up::Subscribed { refused } => assert!(refused.iter().all(|&i| i < 2), "{refused:?}"),
                Up::Message(m) => assert!(subscriber || m.payload.len() <= crd::mqtt::session::MAX_INCOMING_PACKET),
                Up::Oversized { size, .. } => assert!(*size > 0),
                Up::Acked(seq) => {
                    let at = inflight.iter().position(|x| x == seq);
                    let at = at.unwrap_or_else(|| panic!("acked {seq:?}, in flight {inflight:?}"));
                    inflight.remove(at);
                }
            }
        }
        let connects = up.iter().filter(|u| **u == Up::Connected).count();
        assert!(connects <= usize::from(!was_connected), "{up:?} (connected before: {was_connected})");
        // The session drops the bytes it parsed; what stays is less than a packet
        // (or, of an oversized PUBLISH, less than its head: topic and packet id).
        let limit = crd::mqtt::session::MAX_INCOMING_PACKET.max(crd::mqtt::session::TOPIC_ALLOWANCE) + 8;
        assert!(buf.len() <= limit, "{} bytes kept", buf.len());
        match r {
            Ok(()) => {
                assert_eq!(s.is_connected(), was_connected || connects == 1);
                assert_eq!(s.inflight(), inflight.len());
            }
            Err(e) => {
                let _ = e.to_string();
                if restarts == 2 {
                    return;
                }
                restarts += 1;
                s.start(now).expect("CONNECT fits");
                buf.clear();
                inflight.clear();
                published = false;
            }
        }
        let out = s.output();
        out.consume(out.len());
    }
});
