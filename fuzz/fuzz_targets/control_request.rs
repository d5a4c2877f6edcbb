//! Fuzz target: `parse_request` never panics on any bytes a control-socket client
//! sends; an `Emit`'s body is never longer than the input (it is the input's tail
//! after the first newline) and its suffix is one word; when `over` is set, what
//! would have been an `Emit` is `TooLarge(max_body)` and nothing else changes;
//! an `Unknown` request holds one line.
//!
//! Input: a flags byte (bit 0: `over`), two bytes of `max_body` (big-endian), then
//! the bytes the client sent (request line, newline, body).

#![no_main]

use crd::host::control::{parse_request, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [flags, m0, m1, inbuf @ ..] = data else { return };
    let over = flags & 1 != 0;
    let max_body = usize::from(u16::from_be_bytes([*m0, *m1]));
    let req = parse_request(inbuf, over, max_body);
    // The same bytes, with `over` flipped.
    let other = parse_request(inbuf, !over, max_body);
    let (with, without) = if over { (&req, &other) } else { (&other, &req) };
    match without {
        Request::Emit { suffix, body, .. } => {
            assert!(body.len() <= inbuf.len(), "{} body bytes from {}", body.len(), inbuf.len());
            assert!(inbuf.ends_with(body));
            assert!(!suffix.is_empty() && !suffix.contains(char::is_whitespace), "{suffix:?}");
            assert_eq!(*with, Request::TooLarge(max_body), "over, yet {with:?}");
        }
        Request::TooLarge(_) => panic!("TooLarge without over"),
        Request::Unknown(line) => {
            assert!(!line.contains('\n'), "{line:?}");
            assert_eq!(with, without);
        }
        Request::Status | Request::Reload | Request::Fleet { .. } => assert_eq!(with, without),
    }
});
