//! DNS messages for the routers' resolver (`resolv.rs`): the query for one name and
//! one type, and the addresses the answer to it gives. Pure: bytes in, bytes or
//! addresses out; no socket, no file, no clock. Read RFC 1035 section 4 first
//! (4.1.1 the header, 4.1.2 the question, 4.1.3 a resource record, 4.1.4
//! compression), then RFC 1034 3.6.2 (CNAME) and RFC 3596 (AAAA).
//!
//! ```text
//!  0      2      4        6        8        10       12
//!  +------+------+--------+--------+--------+--------+--------------------------
//!  |  id  |flags |qdcount |ancount |nscount |arcount | question, answers, ...
//!  +------+------+--------+--------+--------+--------+--------------------------
//!  flags: QR(1) opcode(4) AA TC RD | RA Z(3) rcode(4)
//!  question: name, qtype u16, qclass u16
//!  answer:   name, type u16, class u16, ttl u32, rdlength u16, rdata
//!  name:     labels (a length byte 1..=63, then the bytes), a 0 byte at the end;
//!            or, in place of the rest, a pointer 0b11 + 14-bit offset (4.1.4)
//! ```
//!
//! An answer is checked against the query it claims to answer (id, one question
//! equal to ours but for letter case), and decoded within bounds: a name at most
//! 255 bytes, compression pointers only backwards and each before the last (so a
//! pointer loop is an error, not a hang), counts that fit the message, a CNAME
//! chain followed in the answer's order, at most `MAX_ADDRESSES` addresses.

use std::net::IpAddr;

/// Longest name asked, without its final dot (RFC 1035 2.3.4: 255 bytes encoded).
pub const NAME_MAX_BYTES: usize = 253;
/// A DNS message over UDP without EDNS0 (RFC 1035 4.2.1); a longer answer comes
/// truncated (TC), which is an error here: no TCP fallback.
pub const MESSAGE_MAX_BYTES: usize = 512;
/// Addresses taken from one answer; the rest are ignored.
pub const MAX_ADDRESSES: usize = 16;
pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
const TYPE_CNAME: u16 = 5;
const CLASS_IN: u16 = 1;
const HEADER_BYTES: usize = 12;
/// The smallest resource record: the root name, then 10 fixed bytes.
const RR_MIN_BYTES: usize = 11;

/// Why a name cannot be asked, or an answer is not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// The name: empty, an empty label or one over 63 bytes, over 253 bytes.
    Name,
    /// Another id: not the answer to this query (a stray or a spoof).
    Id,
    /// Not a response to a standard query, or not to our one question.
    Question,
    /// The server cut the answer (TC): it needs TCP, which this resolver lacks.
    Truncated,
    /// The message ends before what its header or a length promises.
    Short,
    /// More records than the message could hold.
    Count,
    /// A name in the answer: a pointer forwards or in a loop, a reserved label
    /// type, over 255 bytes.
    Label,
    /// An address record of the wrong length.
    Record,
}

/// What a server said of the name, for the type asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The addresses (none: the name exists, without this type).
    Addresses(Vec<IpAddr>),
    /// NXDOMAIN (rcode 3): no such name.
    NoName,
    /// Another rcode: 2 server failure, 5 refused, ...
    Failed(u8),
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The query for `name` (a final dot allowed) and `qtype`, recursion desired.
pub fn query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, Bad> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > NAME_MAX_BYTES {
        return Err(Bad::Name);
    }
    let mut q = Vec::with_capacity(HEADER_BYTES + name.len() + 6);
    q.extend_from_slice(&id.to_be_bytes());
    // RD set, one question, no other section.
    q.extend_from_slice(&[0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(Bad::Name);
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(q)
}

/// `msg` read as the answer to `query` (which `query()` made).
pub fn answer(query: &[u8], msg: &[u8]) -> Result<Answer, Bad> {
    let question = &query[HEADER_BYTES..];
    if msg.len() < HEADER_BYTES {
        return Err(Bad::Short);
    }
    if msg[..2] != query[..2] {
        return Err(Bad::Id);
    }
    // QR set, opcode 0 (a standard query), one question.
    if msg[2] & 0xf8 != 0x80 || u16_at(msg, 4) != 1 {
        return Err(Bad::Question);
    }
    let Some(echo) = msg.get(HEADER_BYTES..HEADER_BYTES + question.len()) else {
        return Err(Bad::Short);
    };
    // The name in any letter case (a server may echo it as it stores it), then
    // qtype and qclass exactly.
    let (name, tail) = question.split_at(question.len() - 4);
    if !echo[..name.len()].eq_ignore_ascii_case(name) || echo[name.len()..] != *tail {
        return Err(Bad::Question);
    }
    if msg[2] & 0x02 != 0 {
        return Err(Bad::Truncated);
    }
    match msg[3] & 0x0f {
        0 => {}
        3 => return Ok(Answer::NoName),
        rcode => return Ok(Answer::Failed(rcode)),
    }
    let mut at = HEADER_BYTES + question.len();
    let count = usize::from(u16_at(msg, 6));
    if count * RR_MIN_BYTES > msg.len() - at {
        return Err(Bad::Count);
    }
    // The CNAME chain from the name asked, in the order servers write it
    // (RFC 1034 3.6.2), then the addresses of its end.
    let qtype = u16_at(tail, 0);
    let mut want = decode_name(query, HEADER_BYTES)?.0;
    let mut out = Vec::new();
    for _ in 0..count {
        let (owner, next) = decode_name(msg, at)?;
        let fixed = msg.get(next..next + 10).ok_or(Bad::Short)?;
        let start = next + 10;
        at = start + usize::from(u16_at(fixed, 8));
        let data = msg.get(start..at).ok_or(Bad::Short)?;
        let rtype = u16_at(fixed, 0);
        if u16_at(fixed, 2) != CLASS_IN || owner != want {
            continue;
        }
        if rtype == TYPE_CNAME {
            want = decode_name(msg, start)?.0;
            continue;
        }
        let ip = match (<[u8; 4]>::try_from(data), <[u8; 16]>::try_from(data)) {
            _ if rtype != qtype => continue,
            (Ok(v4), _) if qtype == TYPE_A => IpAddr::from(v4),
            (_, Ok(v6)) if qtype == TYPE_AAAA => IpAddr::from(v6),
            _ => return Err(Bad::Record),
        };
        if out.len() < MAX_ADDRESSES {
            out.push(ip);
        }
    }
    Ok(Answer::Addresses(out))
}

/// The name at `at`, pointers followed, as uncompressed labels in lower case
/// (so two names compare with `==`), and the offset just past it in place.
fn decode_name(msg: &[u8], mut at: usize) -> Result<(Vec<u8>, usize), Bad> {
    let mut out = Vec::new();
    let mut end = None;
    // Each pointer must go before the last one's target (the first: before the
    // name's start), so a chain of pointers always ends.
    let mut limit = at;
    loop {
        let len = *msg.get(at).ok_or(Bad::Short)?;
        match len {
            0 => {
                out.push(0);
                return Ok((out, end.unwrap_or(at + 1)));
            }
            1..=63 => {
                let label = msg.get(at + 1..at + 1 + usize::from(len));
                let label = label.ok_or(Bad::Short)?;
                out.push(len);
                out.extend(label.iter().map(u8::to_ascii_lowercase));
                // RFC 1035 2.3.4: 255 bytes with the final 0.
                if out.len() >= 255 {
                    return Err(Bad::Label);
                }
                at += 1 + usize::from(len);
            }
            0xc0..=0xff => {
                let low = *msg.get(at + 1).ok_or(Bad::Short)?;
                let to = usize::from(len & 0x3f) << 8 | usize::from(low);
                if to >= limit {
                    return Err(Bad::Label);
                }
                end.get_or_insert(at + 2);
                limit = to;
                at = to;
            }
            _ => return Err(Bad::Label),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The answer to `q` with flags byte 3 = `rcode` and `ancount` records
    /// `rrs` (raw bytes each: owner name, fixed fields, rdata).
    pub(crate) fn reply(q: &[u8], flags: [u8; 2], ancount: u16, rrs: &[u8]) -> Vec<u8> {
        let mut m = q.to_vec();
        m[2..4].copy_from_slice(&flags);
        m[6..8].copy_from_slice(&ancount.to_be_bytes());
        m.extend_from_slice(rrs);
        m
    }

    /// A record's bytes: `owner` (raw name bytes), type, class IN, ttl 60, rdata.
    pub(crate) fn rr(owner: &[u8], rtype: u16, data: &[u8]) -> Vec<u8> {
        let mut r = owner.to_vec();
        r.extend_from_slice(&rtype.to_be_bytes());
        r.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
        r.extend_from_slice(&(data.len() as u16).to_be_bytes());
        r.extend_from_slice(data);
        r
    }

    /// A name's labels, uncompressed.
    pub(crate) fn wire(name: &str) -> Vec<u8> {
        let mut w = Vec::new();
        for l in name.split('.').filter(|l| !l.is_empty()) {
            w.push(l.len() as u8);
            w.extend_from_slice(l.as_bytes());
        }
        w.push(0);
        w
    }

    const OK: [u8; 2] = [0x81, 0x80];
    /// A pointer to the question's name (offset 12).
    const TO_QUESTION: [u8; 2] = [0xc0, 12];

    #[test]
    fn a_query_is_the_header_then_the_labels() {
        let q = query(0x1234, "a.bc.", TYPE_AAAA).unwrap();
        assert_eq!(
            q,
            [
                0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 2, b'b', b'c', 0, 0, 28, 0, 1
            ]
        );
        assert_eq!(query(1, "a.bc", TYPE_A).unwrap()[18..20], [0, 1]);
    }

    #[test]
    fn a_name_that_cannot_be_asked_is_refused() {
        let long_label = "x".repeat(64);
        let long_name = [
            "y".repeat(63),
            "y".repeat(63),
            "y".repeat(63),
            "y".repeat(62),
        ]
        .join(".");
        assert_eq!(long_name.len(), 254);
        for bad in ["", ".", "a..b", ".a", &long_label, &long_name] {
            assert_eq!(query(1, bad, TYPE_A), Err(Bad::Name), "{bad:?}");
        }
        assert!(
            query(1, &long_name[1..], TYPE_A).is_ok(),
            "253 bytes is allowed"
        );
    }

    #[test]
    fn addresses_come_from_records_whose_name_is_a_pointer() {
        let q = query(7, "broker.lan", TYPE_A).unwrap();
        let mut rrs = rr(&TO_QUESTION, TYPE_A, &[192, 168, 1, 2]);
        rrs.extend(rr(&TO_QUESTION, TYPE_A, &[192, 168, 1, 3]));
        let a = answer(&q, &reply(&q, OK, 2, &rrs)).unwrap();
        let want = vec![[192, 168, 1, 2].into(), [192, 168, 1, 3].into()];
        assert_eq!(a, Answer::Addresses(want));
    }

    #[test]
    fn a_cname_chain_is_followed_to_its_addresses_and_others_are_ignored() {
        let q = query(9, "WWW.example.com", TYPE_AAAA).unwrap();
        // www.example.com CNAME edge.cdn.example.com (compressed: "edge" "cdn" +
        // pointer to "example.com" at 16); edge... CNAME last.example.com;
        // last.example.com AAAA ::1; another name's AAAA and an A of the end.
        let mut rrs = rr(&TO_QUESTION, TYPE_CNAME, b"\x04edge\x03cdn\xc0\x10");
        // The first CNAME's data: its owner (2 bytes), the fixed 10.
        let edge = [0xc0, (q.len() + 12) as u8];
        rrs.extend(rr(&edge, TYPE_CNAME, b"\x04last\xc0\x10"));
        rrs.extend(rr(&wire("other.example.com"), TYPE_AAAA, &[0xfe; 16]));
        rrs.extend(rr(&wire("last.EXAMPLE.com"), TYPE_A, &[10, 0, 0, 1]));
        let mut six = [0u8; 16];
        six[15] = 1;
        rrs.extend(rr(&wire("last.example.com"), TYPE_AAAA, &six));
        let a = answer(&q, &reply(&q, OK, 5, &rrs)).unwrap();
        assert_eq!(a, Answer::Addresses(vec![IpAddr::from(six)]));
    }

    #[test]
    fn a_cname_loop_ends_with_no_address() {
        let q = query(9, "a.example", TYPE_A).unwrap();
        let mut rrs = rr(&wire("a.example"), TYPE_CNAME, &wire("b.example"));
        rrs.extend(rr(&wire("b.example"), TYPE_CNAME, &wire("a.example")));
        let a = answer(&q, &reply(&q, OK, 2, &rrs)).unwrap();
        assert_eq!(a, Answer::Addresses(vec![]));
    }

    #[test]
    fn rcodes_and_the_truncation_flag() {
        let q = query(3, "x.lan", TYPE_A).unwrap();
        assert_eq!(
            answer(&q, &reply(&q, [0x81, 0x83], 0, &[])),
            Ok(Answer::NoName)
        );
        assert_eq!(
            answer(&q, &reply(&q, [0x81, 0x82], 0, &[])),
            Ok(Answer::Failed(2))
        );
        assert_eq!(
            answer(&q, &reply(&q, [0x83, 0x80], 0, &[])),
            Err(Bad::Truncated)
        );
    }

    #[test]
    fn an_answer_to_another_query_is_not_taken() {
        let q = query(0x0101, "broker.lan", TYPE_A).unwrap();
        let rrs = rr(&TO_QUESTION, TYPE_A, &[1, 2, 3, 4]);
        let mut m = reply(&q, OK, 1, &rrs);
        m[1] ^= 1;
        assert_eq!(answer(&q, &m), Err(Bad::Id));
        let other = query(0x0101, "broker.lam", TYPE_A).unwrap();
        assert_eq!(answer(&q, &reply(&other, OK, 1, &rrs)), Err(Bad::Question));
        let aaaa = query(0x0101, "broker.lan", TYPE_AAAA).unwrap();
        assert_eq!(answer(&q, &reply(&aaaa, OK, 0, &[])), Err(Bad::Question));
        assert_eq!(
            answer(&q, &q),
            Err(Bad::Question),
            "a query, not a response"
        );
        let upper = query(0x0101, "BROKER.Lan", TYPE_A).unwrap();
        let ok = answer(&q, &reply(&upper, OK, 1, &rrs)).unwrap();
        assert_eq!(ok, Answer::Addresses(vec![[1, 2, 3, 4].into()]));
    }

    #[test]
    fn a_hostile_answer_is_refused_without_a_hang() {
        let q = query(5, "x.lan", TYPE_A).unwrap();
        // An owner name that points at itself, one that points forwards, and
        // two pointers that point at each other.
        let at = q.len() as u8;
        let own = rr(&[0xc0, at], TYPE_A, &[1, 1, 1, 1]);
        assert_eq!(answer(&q, &reply(&q, OK, 1, &own)), Err(Bad::Label));
        let fwd = rr(&[0xc0, at + 2], TYPE_A, &[1, 1, 1, 1]);
        assert_eq!(answer(&q, &reply(&q, OK, 1, &fwd)), Err(Bad::Label));
        let mut pair = rr(&[0xc0, at + 2], TYPE_CNAME, &[0xc0, at]);
        pair.extend(rr(&[0xc0, at], TYPE_A, &[1, 1, 1, 1]));
        assert_eq!(answer(&q, &reply(&q, OK, 2, &pair)), Err(Bad::Label));
        // A count the message cannot hold, a record cut short, a wrong length.
        let one = rr(&TO_QUESTION, TYPE_A, &[1, 1, 1, 1]);
        assert_eq!(answer(&q, &reply(&q, OK, 0xffff, &one)), Err(Bad::Count));
        let m = reply(&q, OK, 1, &one);
        assert_eq!(answer(&q, &m[..m.len() - 1]), Err(Bad::Short));
        let five = rr(&TO_QUESTION, TYPE_A, &[1, 1, 1, 1, 1]);
        assert_eq!(answer(&q, &reply(&q, OK, 1, &five)), Err(Bad::Record));
        // A name over 255 bytes, made of labels that repeat through pointers.
        let mut long = Vec::new();
        let mut names = Vec::new();
        for i in 0..6 {
            let here = q.len() + long.len();
            long.extend(rr(&names_with(&names, i), TYPE_CNAME, &[0xc0, 12]));
            names.push(here);
        }
        let long_owner = names_with(&names, 9);
        long.extend(rr(&long_owner, TYPE_A, &[1, 1, 1, 1]));
        assert_eq!(answer(&q, &reply(&q, OK, 7, &long)), Err(Bad::Label));
    }

    /// A 63-byte label, then a pointer to the owner of the last record in
    /// `names` (or the end).
    fn names_with(names: &[usize], fill: u8) -> Vec<u8> {
        let mut n = vec![63];
        n.extend([b'a' + fill; 63]);
        match names.last() {
            Some(&at) => n.extend([0xc0 | (at >> 8) as u8, at as u8]),
            None => n.push(0),
        }
        n
    }

    /// Every cut and every flipped bit of a good answer decodes or is refused,
    /// never panics.
    #[test]
    fn every_truncation_and_bit_flip_is_survived() {
        let q = query(0xabcd, "www.example.com", TYPE_A).unwrap();
        let mut rrs = rr(&TO_QUESTION, TYPE_CNAME, b"\x01e\xc0\x10");
        rrs.extend(rr(&wire("e.example.com"), TYPE_A, &[10, 1, 2, 3]));
        let m = reply(&q, OK, 2, &rrs);
        assert_eq!(
            answer(&q, &m),
            Ok(Answer::Addresses(vec![[10, 1, 2, 3].into()]))
        );
        for n in 0..m.len() {
            assert!(answer(&q, &m[..n]).is_err(), "cut at {n}");
        }
        for bit in 0..m.len() * 8 {
            let mut f = m.clone();
            f[bit / 8] ^= 1 << (bit % 8);
            let _ = answer(&q, &f);
        }
    }
}
