//! The spool's bytes on disk: segment header, record frame, checkpoint slot, and the
//! CRC-32C that guards each. Pure: bytes in, values out; no file is touched here.
//!
//! Read first: ARCHITECTURE.md, Reliability (what the formats must survive). Every integer is
//! big-endian, written with `to_be_bytes`, so a spool moved between a mips (BE) and
//! an arm (LE) router reads the same; no field is `usize`-sized.
//!
//! Segment file `seg-<first_seq as 16 hex digits>.q`:
//!
//! ```text
//! segment header, 36 bytes
//!  0       4      6      8              16             24             32      36
//!  +-------+------+------+--------------+--------------+--------------+-------+
//!  | "CRDq"| ver  | 0    | stream (u64) | first_seq    | prev_last    | crc32c|  crc over 0..32
//!  +-------+------+------+--------------+--------------+--------------+-------+
//! prev_last: the last seq of the previous segment when this one was created, so a
//! sealed segment's end is known without reading it, also across the seq jump a
//! crash leaves (records are contiguous within a segment).
//! then records, back to back:
//!  0      2          6              14       18
//!  +------+----------+--------------+--------+--------------------+
//!  |C5 D1 | len (u32)| seq (u64)    | crc32c | payload (len bytes)|  crc over 0..14 + payload
//!  +------+----------+--------------+--------+--------------------+
//! ```
//!
//! An ack mark has the record's frame with its own magic, no payload, and the
//! watermark where a record has its seq: every record with `seq <= acked` was
//! acknowledged. Marks ride in the group commit that syncs records anyway (and
//! follow each new segment's header), so the watermark is durable without a
//! checkpoint write; recovery takes the newest segment's last valid mark.
//!
//! ```text
//!  0      2          6              14       18
//!  +------+----------+--------------+--------+
//!  |C5 D2 | 0 (u32)  | acked (u64)  | crc32c |  crc over 0..14
//!  +------+----------+--------------+--------+
//! ```
//!
//! A crd from before marks reads a spool that has them, skipping each as a
//! corrupt record (counted, no record lost).
//!
//! The record magic is neither 0x0000 nor 0xFFFF, so zero- or 0xFF-filled tails left
//! by a power cut never parse as records; `len` is checked against `RECORD_LIMIT_BYTES`
//! and the bytes actually present before anything is allocated.
//!
//! Checkpoint file `checkpoint`: two 48-byte slots at offsets 0 and 48, written
//! alternately (slot = epoch % 2); recovery takes the valid slot with the higher epoch,
//! so a torn checkpoint write costs at most the previous watermark (duplicates).
//!
//! ```text
//!  0       4      6      8           16            24             32           40      44
//!  +-------+------+------+-----------+-------------+--------------+------------+-------+----+
//!  | "CRDc"| ver  | 0    | epoch u64 | acked u64   | next_seq u64 | stream u64 | crc32c| 0  |
//!  +-------+------+------+-----------+-------------+--------------+------------+-------+----+
//! ```

/// Format version this crd writes and reads.
pub const VERSION: u16 = 1;
pub const SEGMENT_MAGIC: [u8; 4] = *b"CRDq";
pub const CHECKPOINT_MAGIC: [u8; 4] = *b"CRDc";
pub const RECORD_MAGIC: [u8; 2] = [0xC5, 0xD1];
pub const MARK_MAGIC: [u8; 2] = [0xC5, 0xD2];
pub const SEGMENT_HEADER_BYTES: usize = crate::core::config::SPOOL_SEGMENT_HEADER_BYTES;
pub const RECORD_HEADER_BYTES: usize = crate::core::config::SPOOL_RECORD_HEADER_BYTES;
pub const CHECKPOINT_SLOT_BYTES: usize = 48;
/// Hard ceiling on a record's payload, whatever `spool_max_record` is configured to:
/// a length above it is corruption, never an allocation.
pub const RECORD_LIMIT_BYTES: u32 = crate::core::config::SPOOL_RECORD_LIMIT_BYTES;
/// Largest seq (or segment first seq) taken as valid: far beyond anything real
/// (a million events a second for 100,000 years), and far enough below `u64::MAX`
/// that no arithmetic on a seq read from disk can overflow.
pub const MAX_SEQ: u64 = 1 << 62;

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), table-driven.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_extend(0, data)
}

/// Continues a CRC-32C over more bytes.
///
/// A byte a step on a router (1 KiB of table; its spool moves a few events a
/// second); eight bytes a step where the collector is built (8 KiB of tables),
/// whose journal checks every message twice (written, then read back).
pub fn crc32c_extend(crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    #[cfg(feature = "collector")]
    let data = {
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            let lo = c ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            c = CRC_TABLES[7][(lo & 0xFF) as usize]
                ^ CRC_TABLES[6][((lo >> 8) & 0xFF) as usize]
                ^ CRC_TABLES[5][((lo >> 16) & 0xFF) as usize]
                ^ CRC_TABLES[4][(lo >> 24) as usize]
                ^ CRC_TABLES[3][w[4] as usize]
                ^ CRC_TABLES[2][w[5] as usize]
                ^ CRC_TABLES[1][w[6] as usize]
                ^ CRC_TABLES[0][w[7] as usize];
        }
        words.remainder()
    };
    for &b in data {
        c = CRC_TABLES[0][((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// Table k: the CRC of byte i followed by k zero bytes (slicing by 8).
#[cfg(feature = "collector")]
const CRC_SLICES: usize = 8;
#[cfg(not(feature = "collector"))]
const CRC_SLICES: usize = 1;

const CRC_TABLES: [[u32; 256]; CRC_SLICES] = {
    let mut t = [[0u32; 256]; CRC_SLICES];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0x82F6_3B78 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut s = 1;
    while s < CRC_SLICES {
        let mut i = 0;
        while i < 256 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xFF) as usize];
            i += 1;
        }
        s += 1;
    }
    t
};

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub stream: u64,
    pub first_seq: u64,
    /// Last seq in the previous segment (`first_seq - 1` unless a crash jumped).
    pub prev_last: u64,
}

/// Why a segment header was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer bytes than a header: an empty or just-created file.
    Short,
    /// Not a crd segment, or its header is damaged.
    Corrupt,
    /// A valid header of a format this crd does not know.
    Version(u16),
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut b = [0u8; SEGMENT_HEADER_BYTES];
        b[0..4].copy_from_slice(&SEGMENT_MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_be_bytes());
        b[8..16].copy_from_slice(&self.stream.to_be_bytes());
        b[16..24].copy_from_slice(&self.first_seq.to_be_bytes());
        b[24..32].copy_from_slice(&self.prev_last.to_be_bytes());
        let crc = crc32c(&b[0..32]);
        b[32..36].copy_from_slice(&crc.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<SegmentHeader, HeaderError> {
        if b.len() < SEGMENT_HEADER_BYTES {
            return Err(HeaderError::Short);
        }
        if b[0..4] != SEGMENT_MAGIC || crc32c(&b[0..32]) != be32(&b[32..36]) {
            return Err(HeaderError::Corrupt);
        }
        let v = be16(&b[4..6]);
        if v != VERSION {
            return Err(HeaderError::Version(v));
        }
        let h = SegmentHeader {
            stream: be64(&b[8..16]),
            first_seq: be64(&b[16..24]),
            prev_last: be64(&b[24..32]),
        };
        if h.first_seq == 0 || h.first_seq > MAX_SEQ || h.prev_last >= h.first_seq {
            return Err(HeaderError::Corrupt);
        }
        Ok(h)
    }
}

/// Bytes a record with `payload_len` bytes of payload takes on disk.
pub fn record_bytes(payload_len: usize) -> u64 {
    (RECORD_HEADER_BYTES + payload_len) as u64
}

/// Appends one framed record to `out`.
pub fn encode_record(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len())
        .expect("payload length is checked against the record limit first");
    // The header whole in an array, then one copy: at opt-level "z" each
    // `extend_from_slice` of a few bytes was a call to musl's slow memcpy.
    let mut head = [0u8; 18];
    head[..2].copy_from_slice(&RECORD_MAGIC);
    head[2..6].copy_from_slice(&len.to_be_bytes());
    head[6..14].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c_extend(crc32c(&head[..14]), payload);
    head[14..].copy_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
}

/// Appends an ack mark: every record with `seq <= acked` was acknowledged.
pub fn encode_mark(acked: u64, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&MARK_MAGIC);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&acked.to_be_bytes());
    let crc = crc32c(&out[start..start + 14]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A record header read from disk, before its payload is read; for an ack mark
/// (`mark`), `seq` is the watermark and there is no payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub len: u32,
    pub seq: u64,
    pub crc: u32,
    pub mark: bool,
}

/// Parses a record or mark header; `None` if the bytes cannot start one (wrong
/// magic, a length over `max_len` or over the `available` bytes from the
/// header's start, a mark with a length).
pub fn decode_record_header(b: &[u8], max_len: u32, available: u64) -> Option<RecordHeader> {
    if b.len() < RECORD_HEADER_BYTES {
        return None;
    }
    let mark = b[0..2] == MARK_MAGIC;
    if !mark && b[0..2] != RECORD_MAGIC {
        return None;
    }
    let len = be32(&b[2..6]);
    if len > max_len.min(RECORD_LIMIT_BYTES)
        || record_bytes(len as usize) > available
        || (mark && len != 0)
    {
        return None;
    }
    let seq = be64(&b[6..14]);
    if seq == 0 || seq > MAX_SEQ {
        return None;
    }
    Some(RecordHeader {
        len,
        seq,
        crc: be32(&b[14..18]),
        mark,
    })
}

/// Whether `payload` matches the header `h` whose first 14 bytes are `head`.
pub fn record_crc_ok(head: &[u8], h: &RecordHeader, payload: &[u8]) -> bool {
    crc32c_extend(crc32c(&head[0..14]), payload) == h.crc
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub epoch: u64,
    /// Every record with `seq <= acked` was acknowledged (0: none).
    pub acked: u64,
    /// No seq at or above this was handed out. While crd runs this is a lease
    /// (`SEQ_LEASE` ahead); a clean shutdown writes the exact next seq.
    pub next_seq: u64,
    pub stream: u64,
}

impl Checkpoint {
    pub fn encode(&self) -> [u8; CHECKPOINT_SLOT_BYTES] {
        let mut b = [0u8; CHECKPOINT_SLOT_BYTES];
        b[0..4].copy_from_slice(&CHECKPOINT_MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_be_bytes());
        b[8..16].copy_from_slice(&self.epoch.to_be_bytes());
        b[16..24].copy_from_slice(&self.acked.to_be_bytes());
        b[24..32].copy_from_slice(&self.next_seq.to_be_bytes());
        b[32..40].copy_from_slice(&self.stream.to_be_bytes());
        let crc = crc32c(&b[0..40]);
        b[40..44].copy_from_slice(&crc.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Checkpoint, HeaderError> {
        if b.len() < CHECKPOINT_SLOT_BYTES {
            return Err(HeaderError::Short);
        }
        if b[0..4] != CHECKPOINT_MAGIC || crc32c(&b[0..40]) != be32(&b[40..44]) {
            return Err(HeaderError::Corrupt);
        }
        let v = be16(&b[4..6]);
        if v != VERSION {
            return Err(HeaderError::Version(v));
        }
        let c = Checkpoint {
            epoch: be64(&b[8..16]),
            acked: be64(&b[16..24]),
            next_seq: be64(&b[24..32]),
            stream: be64(&b[32..40]),
        };
        // Fields crd could never have written are damage, whatever the CRC says.
        if c.next_seq == 0 || c.next_seq > MAX_SEQ || c.acked >= c.next_seq || c.epoch > MAX_SEQ {
            return Err(HeaderError::Corrupt);
        }
        Ok(c)
    }

    /// The newer of the two slots of a checkpoint file's bytes, if either is valid.
    /// An unknown version in a valid slot is reported, never guessed at.
    pub fn best(file: &[u8]) -> Result<Option<Checkpoint>, u16> {
        let slot = |i: usize| file.get(i * CHECKPOINT_SLOT_BYTES..(i + 1) * CHECKPOINT_SLOT_BYTES);
        let mut best: Option<Checkpoint> = None;
        for i in 0..2 {
            match slot(i).map(Checkpoint::decode) {
                Some(Ok(c)) if best.is_none_or(|b| c.epoch > b.epoch) => best = Some(c),
                Some(Err(HeaderError::Version(v))) => return Err(v),
                _ => {}
            }
        }
        Ok(best)
    }
}

/// `seg-<16 hex digits>.q`: the name sorts like the number.
pub fn segment_name(first_seq: u64) -> String {
    format!("seg-{first_seq:016x}.q")
}

pub fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("seg-")?.strip_suffix(".q")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16)
        .ok()
        .filter(|&n| (1..=MAX_SEQ).contains(&n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_test_vectors() {
        // RFC 3720 (iSCSI), B.4, and the common "123456789" check value.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let inc: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&inc), 0x46DD_794E);
        let dec: Vec<u8> = (0..32).rev().collect();
        assert_eq!(crc32c(&dec), 0x113F_DB5C);
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c_extend(crc32c(b"1234"), b"56789"), 0xE306_9283);
    }

    #[test]
    fn crc32c_by_eight_bytes_equals_the_bitwise_definition() {
        fn bitwise(data: &[u8]) -> u32 {
            let mut c = !0u32;
            for &b in data {
                c ^= u32::from(b);
                for _ in 0..8 {
                    c = if c & 1 != 0 {
                        0x82F6_3B78 ^ (c >> 1)
                    } else {
                        c >> 1
                    };
                }
            }
            !c
        }
        let data: Vec<u8> = (0..1000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 999, 1000] {
            let d = &data[..len];
            assert_eq!(crc32c(d), bitwise(d), "{len} bytes");
            for cut in [0, 1, 3, 8, len / 2, len] {
                let (a, b) = d.split_at(cut.min(len));
                assert_eq!(
                    crc32c_extend(crc32c(a), b),
                    bitwise(d),
                    "{len} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn segment_header_round_trip_and_pinned_bytes() {
        let h = SegmentHeader {
            stream: 0x0102_0304_0506_0708,
            first_seq: 42,
            prev_last: 40,
        };
        let b = h.encode();
        assert_eq!(&b[0..8], b"CRDq\x00\x01\x00\x00");
        assert_eq!(
            &b[8..16],
            &[1, 2, 3, 4, 5, 6, 7, 8],
            "big-endian on every host"
        );
        assert_eq!(&b[16..24], &[0, 0, 0, 0, 0, 0, 0, 42]);
        assert_eq!(&b[24..32], &[0, 0, 0, 0, 0, 0, 0, 40]);
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        assert_eq!(SegmentHeader::decode(&b[..35]), Err(HeaderError::Short));
        let odd = SegmentHeader { prev_last: 42, ..h }.encode();
        assert_eq!(
            SegmentHeader::decode(&odd),
            Err(HeaderError::Corrupt),
            "prev_last >= first_seq"
        );
        let mut bad = b;
        bad[9] ^= 1;
        assert_eq!(SegmentHeader::decode(&bad), Err(HeaderError::Corrupt));
        let mut v2 = b;
        v2[5] = 2;
        let crc = crc32c(&v2[0..32]);
        v2[32..36].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(SegmentHeader::decode(&v2), Err(HeaderError::Version(2)));
    }

    #[test]
    fn record_round_trip_and_pinned_bytes() {
        let mut out = Vec::new();
        encode_record(7, b"hi", &mut out);
        assert_eq!(
            &out[0..14],
            &[0xC5, 0xD1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 7]
        );
        assert_eq!(out.len() as u64, record_bytes(2));
        let h = decode_record_header(&out, 100, out.len() as u64).unwrap();
        assert_eq!((h.len, h.seq), (2, 7));
        assert!(record_crc_ok(&out, &h, &out[18..]));
        assert!(!record_crc_ok(&out, &h, b"ho"));
    }

    #[test]
    fn hostile_headers_are_rejected_before_any_allocation() {
        let mut b = vec![0xC5, 0xD1, 0xFF, 0xFF, 0xFF, 0xFF];
        b.extend_from_slice(&[0; 12]);
        assert_eq!(
            decode_record_header(&b, u32::MAX, u64::MAX),
            None,
            "4 GiB length"
        );
        let mut out = Vec::new();
        encode_record(1, &[0; 100], &mut out);
        assert_eq!(
            decode_record_header(&out, 99, 1000),
            None,
            "over the configured max"
        );
        assert_eq!(
            decode_record_header(&out, 100, 117),
            None,
            "past the end of the file"
        );
        assert!(decode_record_header(&out, 100, 118).is_some());
        assert_eq!(decode_record_header(&[0; 18], 100, 100), None, "zero tail");
        assert_eq!(
            decode_record_header(&[0xFF; 18], 100, 100),
            None,
            "0xFF tail"
        );
    }

    #[test]
    fn checkpoint_slots() {
        let a = Checkpoint {
            epoch: 4,
            acked: 10,
            next_seq: 20,
            stream: 9,
        };
        let b = Checkpoint {
            epoch: 5,
            acked: 12,
            next_seq: 21,
            stream: 9,
        };
        let mut file = [0u8; 2 * CHECKPOINT_SLOT_BYTES];
        file[..48].copy_from_slice(&a.encode());
        file[48..].copy_from_slice(&b.encode());
        assert_eq!(Checkpoint::best(&file), Ok(Some(b)));
        file[60] ^= 0x40; // corrupt the newer slot
        assert_eq!(Checkpoint::best(&file), Ok(Some(a)));
        file[3] ^= 1; // and the older one
        assert_eq!(Checkpoint::best(&file), Ok(None));
        assert_eq!(Checkpoint::best(&file[..30]), Ok(None));
    }

    #[test]
    fn segment_names_sort_like_numbers() {
        assert_eq!(segment_name(255), "seg-00000000000000ff.q");
        assert_eq!(parse_segment_name("seg-00000000000000ff.q"), Some(255));
        for bad in [
            "seg-ff.q",
            "seg-00000000000000ff.q.tmp",
            "lock",
            "seg-zzzzzzzzzzzzzzzz.q",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
        assert!(segment_name(9) < segment_name(10));
    }

    #[test]
    fn impossible_seqs_are_damage_not_values() {
        let mut rec = Vec::new();
        encode_record(MAX_SEQ + 1, b"x", &mut rec);
        assert_eq!(decode_record_header(&rec, 64, rec.len() as u64), None);
        rec.clear();
        encode_record(MAX_SEQ, b"x", &mut rec);
        assert!(decode_record_header(&rec, 64, rec.len() as u64).is_some());
        let c = |acked, next_seq| {
            Checkpoint::decode(
                &Checkpoint {
                    epoch: 1,
                    acked,
                    next_seq,
                    stream: 9,
                }
                .encode(),
            )
        };
        assert!(c(4, 5).is_ok());
        assert_eq!(
            c(5, 5),
            Err(HeaderError::Corrupt),
            "acked must be below next_seq"
        );
        assert_eq!(c(0, 0), Err(HeaderError::Corrupt));
        assert_eq!(c(0, u64::MAX), Err(HeaderError::Corrupt));
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), None);
        assert_eq!(parse_segment_name(&segment_name(0)), None);
    }
}
