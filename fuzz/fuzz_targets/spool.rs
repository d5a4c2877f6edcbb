//! Fuzz target: spool recovery over arbitrary directory contents never panics,
//! stays within the memory cap (`-malloc_limit_mb`), returns records in strictly
//! increasing seq order, and a record appended after recovery survives a reopen
//! with a seq above everything recovered.
//!
//! Input: a flags byte, then files as (u16 big-endian length, bytes). Flags bit 0:
//! the bytes are whole files (headers included) rather than bodies behind a valid
//! segment header; bit 1: the first file is a valid checkpoint built from its first
//! 24 bytes (epoch, acked, next_seq) instead of raw checkpoint bytes.

#![no_main]

use crd::spool::format::{self, Checkpoint, SegmentHeader};
use crd::spool::storage::{MemStorage, Storage};
use crd::spool::{Spool, SpoolConfig, CHECKPOINT_FILE};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

const STREAM: u64 = 7;

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let mut files: Vec<&[u8]> = Vec::new();
    while rest.len() >= 2 && files.len() < 6 {
        let n = (u16::from_be_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        files.push(&rest[2..2 + n]);
        rest = &rest[2 + n..];
    }
    let Some((ckpt, segs)) = files.split_first() else { return };
    let mut st = MemStorage::new();
    if flags & 2 != 0 {
        let c = Checkpoint { epoch: be64(ckpt), acked: be64(ckpt.get(8..).unwrap_or(&[])), next_seq: be64(ckpt.get(16..).unwrap_or(&[])), stream: STREAM };
        st.put(CHECKPOINT_FILE, &c.encode());
    } else if !ckpt.is_empty() {
        st.put(CHECKPOINT_FILE, ckpt);
    }
    for (i, body) in segs.iter().enumerate() {
        let first = 1 + 50 * i as u64;
        let mut file = Vec::new();
        if flags & 1 == 0 {
            file.extend_from_slice(&SegmentHeader { stream: STREAM, first_seq: first, prev_last: first - 1 }.encode());
        }
        file.extend_from_slice(body);
        st.put(&format::segment_name(first), &file);
    }
    let cfg = SpoolConfig { size: 64 << 10, segment: 4096, sync_bytes: 1024, sync_interval: Duration::from_secs(1), sync_always: false, max_record: 512 };
    let now = Instant::now();
    let Ok((mut sp, _)) = Spool::open(st, cfg, || STREAM, false) else { return };
    let mut last = 0;
    let mut n = 0;
    while let Ok(Some((seq, _))) = sp.read_next() {
        assert!(seq > last, "seq {seq} after {last}");
        last = seq;
        n += 1;
        if n > 100_000 {
            break;
        }
    }
    let Ok(seq) = sp.append(b"after recovery", now) else { return };
    assert!(seq > last, "new seq {seq} not above recovered {last}");
    if sp.close(now).is_err() {
        return;
    }
    let st = std::mem::take(sp.storage());
    let (mut sp, _) = Spool::open(st, cfg, || STREAM, false).expect("reopening what crd itself wrote");
    let mut found = false;
    while let Ok(Some((s, p))) = sp.read_next() {
        if s == seq {
            assert_eq!(p, b"after recovery");
            found = true;
        }
    }
    assert!(found, "the record appended after recovery is gone");
    let _ = sp.storage().list();
});
