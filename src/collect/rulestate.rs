//! The rule modules' registers on disk, so they survive a restart: a
//! `durable::Log` (`persist.rs`) whose header is the highest journal seq its
//! snapshot includes (u64 BE), whose snapshot records are each rule's saved
//! registers (`rule_records`: the first piece `R` with the module name, more
//! pieces `C`, each at most `PIECE_BYTES`; the registers' own encoding,
//! `Registers::save`, is little-endian, as it always was), and whose changes are
//! the messages fed since (`fed`: module, key, flags, the number as f64 bits,
//! the text, receive time, journal seq; big-endian, strings with a u16 length).
//!
//! Before that log the registers were two files, read once at an upgrade:
//! `spool_dir/collect/registers` and `registers.log`.
//!
//! Snapshot: `CRDR`, version 1, the highest journal seq it includes (u64 LE),
//! the rule count (u32 LE), per rule its module name (u16 LE length, bytes) and
//! `Registers::save`; then CRC-32C (LE) of everything before it. Written whole to
//! `registers.tmp`, synced, renamed over `registers`, the directory synced.
//!
//! Log entry, one per message fed: u16 LE length, the body (module, key, a flag
//! byte, the number as f64 LE, the text, receive time u64 LE, journal seq u64
//! LE; strings as in the snapshot), CRC-32C (LE) of the body. The collector
//! appends a loop turn's entries in that turn and syncs them before it writes
//! the journal's checkpoint (at most every `collector::RETIRE_SYNC_INTERVAL`),
//! so a message retired from the journal is in the log or the snapshot; one fed but not yet logged is still in the journal and is fed again
//! after a crash. On start: the snapshot, then the log's entries past its seq;
//! the journal's records up to the highest seq seen feed nothing again. A torn
//! log tail is cut; a damaged snapshot is logged and the registers start empty
//! (the log is then ignored too: its entries only make sense on top of it).

use crate::collect::error::{Error, Reason};
use crate::rules::register::{Condition, Registers, Spec};
use crate::spool::format::crc32c_extend;
use std::io::{self, Read, Write};

pub const SNAPSHOT_FILE: &str = "registers";
pub const LOG_FILE: &str = "registers.log";
/// The most bytes of a rule's registers in one snapshot record.
pub const PIECE_BYTES: usize = 256 * 1024;
const MAGIC: &[u8; 5] = b"CRDR\x01";

/// A writer that keeps the CRC-32C of what went through it.
struct Crc<W> {
    inner: W,
    crc: u32,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.crc = crc32c_extend(self.crc, &b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Crc<R> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(b)?;
        self.crc = crc32c_extend(self.crc, &b[..n]);
        Ok(n)
    }
}

#[cfg(test)]
fn put_str(out: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    // Fixed-size pieces by `extend` of the array: `extend_from_slice` made a
    // memcpy call of two bytes (musl's is slow for those) at opt-level "z".
    out.extend((s.len() as u16).to_le_bytes());
    out.extend_from_slice(s);
}

/// Writes a legacy snapshot of `rules` (module name, registers) through `seq`
/// (tests make old files with it).
#[cfg(test)]
pub fn write_snapshot<'a>(
    w: &mut dyn Write,
    through: u64,
    rules: impl ExactSizeIterator<Item = (&'a str, &'a Registers)>,
) -> io::Result<()> {
    let mut c = Crc { inner: w, crc: 0 };
    c.write_all(MAGIC)?;
    c.write_all(&through.to_le_bytes())?;
    c.write_all(&(rules.len() as u32).to_le_bytes())?;
    for (name, regs) in rules {
        let mut n = Vec::new();
        put_str(&mut n, name);
        c.write_all(&n)?;
        regs.save(&mut c)?;
    }
    let crc = c.crc;
    c.inner.write_all(&crc.to_le_bytes())
}

/// Reads a snapshot: its seq and the registers of the rules `spec_of` knows
/// (by module name; others are read through and dropped). Any damage is an
/// error and nothing of it is used.
pub fn read_snapshot(
    r: &mut dyn Read,
    spec_of: &dyn Fn(&str) -> Option<Spec>,
) -> Result<(u64, Vec<(String, Registers)>), Error> {
    let mut c = Crc { inner: r, crc: 0 };
    let mut head = [0u8; 17];
    c.read_exact(&mut head).map_err(Reason::Header)?;
    if &head[..5] != MAGIC {
        return Err(Reason::NotASnapshot.into());
    }
    let through = u64::from_le_bytes(head[5..13].try_into().expect("8 bytes"));
    let count = u32::from_le_bytes(head[13..17].try_into().expect("4 bytes"));
    let mut out = Vec::new();
    for _ in 0..count {
        let mut len = [0u8; 2];
        c.read_exact(&mut len).map_err(Reason::Read)?;
        let mut name = vec![0u8; u16::from_le_bytes(len) as usize];
        c.read_exact(&mut name).map_err(Reason::Read)?;
        let name = String::from_utf8(name).map_err(|_| Reason::NameNotUtf8)?;
        if let Some(regs) = load_rule(&name, &mut c, spec_of)? {
            out.push((name, regs));
        }
    }
    let want = c.crc;
    let mut crc = [0u8; 4];
    c.inner.read_exact(&mut crc).map_err(Reason::ChecksumRead)?;
    if u32::from_le_bytes(crc) != want {
        return Err(Reason::ChecksumMismatch.into());
    }
    Ok((through, out))
}

/// One rule's registers read from `r`: `None` when its module is no rule now,
/// or its settings changed (read through and dropped).
fn load_rule(
    name: &str,
    r: &mut dyn Read,
    spec_of: &dyn Fn(&str) -> Option<Spec>,
) -> Result<Option<Registers>, Error> {
    let spec = spec_of(name);
    let mut regs = Registers::new(spec.clone().unwrap_or(Spec {
        kind: crate::core::config::RegisterKind::Count,
        width_ms: 0,
        keys: u32::MAX,
        condition: Condition::None,
    }));
    let fits = regs
        .load(r)
        .map_err(|e| Reason::Rule(name.to_string(), e))?;
    Ok((fits && spec.is_some()).then_some(regs))
}

/// Hands `f` the snapshot records of `rules` (see the top).
pub fn rule_records<'a>(
    rules: &mut dyn Iterator<Item = (&'a str, &'a Registers)>,
    f: &mut dyn FnMut(&[u8]),
) -> io::Result<()> {
    let mut buf = Vec::new();
    for (name, regs) in rules {
        buf.clear();
        regs.save(&mut buf)?;
        let mut first = vec![b'R'];
        put_str_be(&mut first, name);
        let mut pieces = buf.chunks(PIECE_BYTES);
        first.extend_from_slice(pieces.next().unwrap_or(&[]));
        f(&first);
        for p in pieces {
            let mut rec = Vec::with_capacity(1 + p.len());
            rec.push(b'C');
            rec.extend_from_slice(p);
            f(&rec);
        }
    }
    Ok(())
}

/// The rules in a snapshot's records (`rule_records`) that `spec_of` knows;
/// `Err` if any record is damaged (nothing of it is then used).
pub fn read_rules(
    records: &[Vec<u8>],
    spec_of: &dyn Fn(&str) -> Option<Spec>,
) -> Result<Vec<(String, Registers)>, Error> {
    let mut rules: Vec<(String, Vec<u8>)> = Vec::new();
    for r in records {
        match r.split_first() {
            Some((b'R', rest)) => {
                let mut at = 0;
                let name = get_str_be(rest, &mut at).ok_or(Reason::RuleRecordCutShort)?;
                rules.push((name, rest[at..].to_vec()));
            }
            Some((b'C', rest)) => rules
                .last_mut()
                .ok_or(Reason::PieceBeforeRule)?
                .1
                .extend_from_slice(rest),
            _ => return Err(Reason::NotARuleRecord.into()),
        }
    }
    let mut out = Vec::new();
    for (name, bytes) in rules {
        let mut r = &bytes[..];
        if let Some(regs) = load_rule(&name, &mut r, spec_of)? {
            if !r.is_empty() {
                return Err(Reason::RuleTrailing(name).into());
            }
            out.push((name, regs));
        }
    }
    Ok(out)
}

fn put_str_be(out: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend((s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn get_str_be(b: &[u8], at: &mut usize) -> Option<String> {
    let n = u16::from_be_bytes(b.get(*at..*at + 2)?.try_into().ok()?) as usize;
    let v = std::str::from_utf8(b.get(*at + 2..*at + 2 + n)?)
        .ok()?
        .to_string();
    *at += 2 + n;
    Some(v)
}

/// A change of the registers' log: one message fed (see the top), appended to
/// `out` from borrowed fields (the rule path logs every message it feeds).
pub fn fed(out: &mut Vec<u8>, f: &Fed) {
    put_str_be(out, f.module);
    put_str_be(out, f.key);
    out.push(u8::from(f.num.is_some()) | (u8::from(f.text.is_some()) << 1));
    out.extend(f.num.unwrap_or(0.0).to_bits().to_be_bytes());
    put_str_be(out, f.text.unwrap_or(""));
    out.extend(f.t_ms.to_be_bytes());
    out.extend(f.seq.to_be_bytes());
}

/// A message fed, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct Fed<'a> {
    pub module: &'a str,
    pub key: &'a str,
    pub num: Option<f64>,
    pub text: Option<&'a str>,
    pub t_ms: u64,
    pub seq: u64,
}

/// The message fed a change says (`fed`); `None` if it is not one.
pub fn parse_fed(b: &[u8]) -> Option<Entry> {
    let mut at = 0;
    let module = get_str_be(b, &mut at)?;
    let key = get_str_be(b, &mut at)?;
    let flags = *b.get(at)?;
    let num = f64::from_bits(u64::from_be_bytes(b.get(at + 1..at + 9)?.try_into().ok()?));
    at += 9;
    let text = get_str_be(b, &mut at)?;
    let t_ms = u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?);
    let seq = u64::from_be_bytes(b.get(at + 8..at + 16)?.try_into().ok()?);
    (b.len() == at + 16).then_some(Entry {
        module,
        key,
        num: (flags & 1 != 0).then_some(num),
        text: (flags & 2 != 0).then_some(text),
        t_ms,
        seq,
    })
}

/// One message fed to a rule, as logged.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub module: String,
    pub key: String,
    pub num: Option<f64>,
    pub text: Option<String>,
    pub t_ms: u64,
    pub seq: u64,
}

/// Appends `e` to `out` as a log entry (the round-trip test's writer; the
/// rule path calls `put_fed` with borrowed fields).
#[cfg(test)]
fn put_entry(out: &mut Vec<u8>, e: &Entry) {
    put_fed(
        out,
        &e.module,
        &e.key,
        e.num,
        e.text.as_deref(),
        e.t_ms,
        e.seq,
    );
}

/// Appends one feed as a legacy log entry (tests make old files with it).
#[cfg(test)]
pub fn put_fed(
    out: &mut Vec<u8>,
    module: &str,
    key: &str,
    num: Option<f64>,
    text: Option<&str>,
    t_ms: u64,
    seq: u64,
) {
    let at = out.len();
    out.extend([0, 0]);
    put_str(out, module);
    put_str(out, key);
    out.push(u8::from(num.is_some()) | (u8::from(text.is_some()) << 1));
    out.extend(num.unwrap_or(0.0).to_le_bytes());
    put_str(out, text.unwrap_or(""));
    out.extend(t_ms.to_le_bytes());
    out.extend(seq.to_le_bytes());
    let len = (out.len() - at - 2) as u16;
    let [lo, hi] = len.to_le_bytes();
    out[at] = lo;
    out[at + 1] = hi;
    let crc = crc32c_extend(0, &out[at + 2..]);
    out.extend(crc.to_le_bytes());
}

/// The entries of a legacy log, and how many bytes of it are whole (a torn or
/// damaged tail ends it).
pub fn read_log(bytes: &[u8]) -> (Vec<Entry>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(e) = entry_at(bytes, &mut at) {
        out.push(e);
    }
    (out, at)
}

fn entry_at(bytes: &[u8], at: &mut usize) -> Option<Entry> {
    let rest = &bytes[*at..];
    let len = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?) as usize;
    let body = rest.get(2..2 + len)?;
    let crc = u32::from_le_bytes(rest.get(2 + len..6 + len)?.try_into().ok()?);
    if crc32c_extend(0, body) != crc {
        return None;
    }
    let mut r = body;
    let mut s = || -> Option<String> {
        let n = u16::from_le_bytes(r.get(..2)?.try_into().ok()?) as usize;
        let v = std::str::from_utf8(r.get(2..2 + n)?).ok()?.to_string();
        r = &r[2 + n..];
        Some(v)
    };
    let module = s()?;
    let key = s()?;
    let (flags, num, text, t_ms, seq);
    {
        let b = r;
        flags = *b.first()?;
        num = f64::from_le_bytes(b.get(1..9)?.try_into().ok()?);
        r = &b[9..];
    }
    {
        let n = u16::from_le_bytes(r.get(..2)?.try_into().ok()?) as usize;
        text = std::str::from_utf8(r.get(2..2 + n)?).ok()?.to_string();
        r = &r[2 + n..];
        t_ms = u64::from_le_bytes(r.get(..8)?.try_into().ok()?);
        seq = u64::from_le_bytes(r.get(8..16)?.try_into().ok()?);
    }
    *at += 6 + len;
    Some(Entry {
        module,
        key,
        num: (flags & 1 != 0).then_some(num),
        text: (flags & 2 != 0).then_some(text),
        t_ms,
        seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::RegisterKind;

    fn spec(kind: RegisterKind) -> Spec {
        Spec {
            kind,
            width_ms: 1000,
            keys: 100,
            condition: Condition::Above(1.0),
        }
    }

    #[test]
    fn a_snapshot_round_trips_and_damage_is_refused() {
        let mut a = Registers::new(spec(RegisterKind::Avg));
        let mut b = Registers::new(spec(RegisterKind::Max));
        for t in 0..50u64 {
            a.feed(&format!("n{}", t % 7), Some(t as f64), None, t * 100);
            b.feed("x", Some(t as f64), None, t * 100);
        }
        let mut bytes = Vec::new();
        write_snapshot(&mut bytes, 42, [("A", &a), ("B", &b)].into_iter()).unwrap();
        let spec_of = |n: &str| match n {
            "A" => Some(spec(RegisterKind::Avg)),
            "B" => Some(spec(RegisterKind::Max)),
            _ => None,
        };
        let (through, got) = read_snapshot(&mut &bytes[..], &spec_of).unwrap();
        assert_eq!(through, 42);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1.list(5000), a.list(5000));
        assert_eq!(got[1].1.list(5000), b.list(5000));
        // A module that is gone, or changed kind, is read through and dropped.
        let only_b = |n: &str| (n == "B").then(|| spec(RegisterKind::Max));
        let (_, got) = read_snapshot(&mut &bytes[..], &only_b).unwrap();
        assert_eq!(got.len(), 1);
        // Every single flipped byte and every cut is an error, never a panic.
        for i in 0..bytes.len() {
            let mut d = bytes.clone();
            d[i] ^= 0x20;
            assert!(read_snapshot(&mut &d[..], &spec_of).is_err(), "flip at {i}");
            assert!(
                read_snapshot(&mut &bytes[..i], &spec_of).is_err(),
                "cut at {i}"
            );
        }
    }

    #[test]
    fn the_log_reads_back_and_stops_at_a_torn_tail() {
        let entries = [
            Entry {
                module: "Lb".into(),
                key: "n1".into(),
                num: Some(21.5),
                text: None,
                t_ms: 7,
                seq: 3,
            },
            Entry {
                module: "Wan".into(),
                key: "r1".into(),
                num: None,
                text: Some("down".into()),
                t_ms: 8,
                seq: 4,
            },
        ];
        let mut bytes = Vec::new();
        for e in &entries {
            put_entry(&mut bytes, e);
        }
        let whole = bytes.len();
        assert_eq!(read_log(&bytes), (entries.to_vec(), whole));
        for cut in 0..whole {
            let (got, good) = read_log(&bytes[..cut]);
            assert!(good <= cut && got.len() < 2, "cut at {cut}");
        }
        let mut d = bytes.clone();
        d[whole - 3] ^= 1;
        assert_eq!(read_log(&d).0.len(), 1);
    }
}
