//! Fuzz target: the event payload decoders never panic on any bytes; `decode_ref`
//! and `decode` accept and refuse the same payloads, and agree field by field on
//! what they accept; an accepted event encodes (`encode(&ev, usize::MAX)`) to a
//! payload that decodes to the same event; and cut to a smaller limit (the input's
//! last byte, times 4, below the full size) `encode` either gives up or returns a
//! payload within the limit that decodes to the same event but for `out`, which is
//! a prefix of the original followed by the cut mark.
//!
//! Input: a spool payload, as read from a record (version byte, then postcard).

#![no_main]

use crd::core::event::{decode, decode_ref, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let r = decode_ref(data);
    let d = decode(data);
    let (r, ev) = match (r, d) {
        (Ok(r), Ok(d)) => (r, d),
        (Err(a), Err(b)) => {
            assert_eq!(a, b);
            return;
        }
        (r, d) => panic!("decode_ref {r:?} but decode {d:?}"),
    };
    assert_eq!(r.ts_ms, ev.ts_ms);
    assert_eq!(r.module, ev.module);
    assert_eq!(r.kind, ev.kind);
    assert_eq!(r.code, ev.code);
    assert_eq!(r.dur_ms, ev.dur_ms);
    assert_eq!(r.out, ev.out);

    let full = encode(&ev, usize::MAX).expect("an unbounded encode never gives up");
    assert_eq!(decode(&full).as_ref(), Ok(&ev), "round trip of {full:02x?}");
    assert_eq!(decode_ref(&full), Ok(ev.as_ref()));

    let less = usize::from(*data.last().expect("accepted, so not empty")) * 4;
    let max = full.len().saturating_sub(less);
    if let Some(cut) = encode(&ev, max) {
        assert!(cut.len() <= max, "{} bytes over a limit of {max}", cut.len());
        let c = decode(&cut).expect("a cut payload decodes");
        assert_eq!((c.ts_ms, &c.module, c.kind, c.code, c.dur_ms), (ev.ts_ms, &ev.module, ev.kind, ev.code, ev.dur_ms));
        if less == 0 {
            assert_eq!(cut, full);
        } else {
            let kept = c.out.strip_suffix(" [cut to fit the spool's record limit]");
            let kept = kept.unwrap_or_else(|| panic!("{:?} is not marked as cut", c.out));
            assert!(ev.out.starts_with(kept), "{kept:?} is not a prefix of {:?}", ev.out);
        }
    }
});
