//! The spool's tests: the reliability list of docs/spool.md, numbered as there. Most run on the
//! fault-injecting memory store with seeded randomness; the truncation sweep and the
//! lock run on real files too.

use super::format::{self, CHECKPOINT_SLOT_BYTES, SEGMENT_HEADER_BYTES};
use super::storage::{FileStorage, MemStorage, Op, Storage};
use super::*;
use std::path::PathBuf;

fn t0() -> Instant {
    Instant::now()
}

fn small() -> SpoolConfig {
    SpoolConfig {
        size: 16 * 1024,
        segment: 4096,
        sync_bytes: 1024,
        sync_interval: Duration::from_secs(1),
        sync_always: false,
        max_record: 512,
    }
}

fn open<S: Storage>(st: S, cfg: SpoolConfig) -> (Spool<S>, Recovery) {
    Spool::open(st, cfg, || 0x5eed_5eed, false).expect("open")
}

/// Deterministic payload of varying length for record `n`.
fn payload(n: u64) -> Vec<u8> {
    let len = 20 + (n * 37 % 180) as usize;
    (0..len).map(|i| (n as usize * 31 + i) as u8).collect()
}

fn read_all<S: Storage>(sp: &mut Spool<S>) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some((seq, p)) = sp.read_next().expect("read") {
        out.push((seq, p.to_vec()));
    }
    out
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Reopens a memory spool from its storage (as after a restart).
fn reopen(sp: Spool<MemStorage>, cfg: SpoolConfig) -> (Spool<MemStorage>, Recovery) {
    open(sp.st, cfg)
}

#[test]
fn append_sync_read_ack_round_trip() {
    let now = t0();
    let (mut sp, rec) = open(MemStorage::new(), small());
    assert!(rec.new_stream);
    assert_eq!(sp.append(b"one", now).unwrap(), 1);
    assert_eq!(sp.append(b"two", now).unwrap(), 2);
    assert_eq!(sp.read_next().unwrap(), None, "not durable yet");
    sp.sync(now).unwrap();
    assert_eq!(
        read_all(&mut sp),
        vec![(1, b"one".to_vec()), (2, b"two".to_vec())]
    );
    sp.ack(2, now).unwrap();
    assert_eq!(sp.acked(), 0, "only contiguous acks move the watermark");
    sp.ack(1, now).unwrap();
    assert_eq!(sp.acked(), 2);
    assert_eq!(sp.depth(), 0);
}

#[test]
fn group_commit_syncs_by_bytes_and_by_age() {
    let now = t0();
    let (mut sp, _) = open(MemStorage::new(), small());
    let before = sp.stats().fsyncs;
    sp.append(&[1; 100], now).unwrap();
    sp.flush(now).unwrap();
    assert_eq!(sp.stats().fsyncs, before, "100 bytes, 0 s: no sync yet");
    assert_eq!(sp.poll_timeout(), Some(now + Duration::from_secs(1)));
    sp.handle_timer(now + Duration::from_millis(999)).unwrap();
    assert_eq!(sp.stats().fsyncs, before);
    sp.handle_timer(now + Duration::from_secs(1)).unwrap();
    assert_eq!(sp.stats().fsyncs, before + 1, "synced by age");
    assert_eq!(sp.durable_seq(), 1);
    for _ in 0..20 {
        sp.append(&[2; 100], now).unwrap();
        sp.flush(now).unwrap();
    }
    assert!(sp.stats().fsyncs >= before + 2, "synced by bytes (1024)");
}

// 1. Model test.
#[test]
fn model_test_random_operations_against_a_queue() {
    let mut dropped_total = 0;
    for seed in 1..=40u64 {
        let mut rng = Rng(seed * 0x9E37_79B9);
        let cfg = small();
        let now = t0();
        let (mut sp, _) = open(MemStorage::new(), cfg);
        // The model: every appended record not yet acknowledged, in order.
        let mut model: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
        let mut read: Vec<u64> = Vec::new();
        let mut hist: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut last_seq = 0;
        let mut n = 0;
        for _ in 0..400 {
            match rng.below(10) {
                0..=4 => {
                    n += 1;
                    let p = payload(n);
                    let seq = sp.append(&p, now).unwrap();
                    assert!(seq > last_seq, "seq strictly increases");
                    last_seq = seq;
                    hist.push((seq, p.clone()));
                    model.push_back((seq, p));
                    // A full spool drops its oldest segment: the watermark jumps.
                    while model.front().is_some_and(|m| m.0 <= sp.acked()) {
                        model.pop_front();
                    }
                }
                5 => sp.sync(now).unwrap(),
                6 | 7 => {
                    if let Some((seq, p)) = sp.read_next().unwrap() {
                        let m = model
                            .iter()
                            .find(|(s, _)| *s == seq)
                            .expect("read a record the model holds");
                        assert_eq!(p, &m.1[..]);
                        assert!(read.last().is_none_or(|&l| l < seq), "in order");
                        read.push(seq);
                    }
                }
                8 => {
                    // Ack the oldest read record (the forwarder acks what it sent).
                    if let Some(&seq) = read.first() {
                        read.remove(0);
                        sp.ack(seq, now).unwrap();
                        if model.front().map(|m| m.0) == Some(seq) {
                            model.pop_front();
                        }
                    }
                }
                9 if rng.below(2) == 0 => {
                    // Power cut: unsynced writes are lost. Everything durable and
                    // above the checkpointed watermark comes back (acks since the
                    // checkpoint return as duplicates); new seqs stay above all old.
                    let durable = sp.durable_seq();
                    let mut st = sp.st;
                    st.power_cut(|_, _| None, rng.below(2) == 0);
                    let (s, _) = open(st, cfg);
                    sp = s;
                    read.clear();
                    hist.retain(|(s, _)| *s <= durable); // unsynced ones are gone for good
                    model = hist
                        .iter()
                        .filter(|(s, _)| *s > sp.acked())
                        .cloned()
                        .collect();
                    let all = read_all(&mut sp);
                    let want: Vec<(u64, Vec<u8>)> = model.iter().cloned().collect();
                    let seqs = |v: &[(u64, Vec<u8>)]| v.iter().map(|r| r.0).collect::<Vec<_>>();
                    assert_eq!(
                        seqs(&all),
                        seqs(&want),
                        "seed {seed}: after a power cut every durable unacked record, in order"
                    );
                    assert!(all == want, "seed {seed}: payloads intact");
                    sp.rewind();
                }
                _ => {
                    // Clean restart: close, reopen; the reader starts over from the
                    // watermark, so every unacked record comes again, acked ones never.
                    sp.close(now).unwrap();
                    let (s, _) = reopen(sp, cfg);
                    sp = s;
                    read.clear();
                    // Acks not yet contiguous are forgotten: those records return.
                    while model.front().is_some_and(|m| m.0 <= sp.acked()) {
                        model.pop_front();
                    }
                    let all = read_all(&mut sp);
                    let want: Vec<(u64, Vec<u8>)> = model.iter().cloned().collect();
                    let seqs = |v: &[(u64, Vec<u8>)]| v.iter().map(|r| r.0).collect::<Vec<_>>();
                    assert_eq!(
                        seqs(&all),
                        seqs(&want),
                        "seed {seed}: after a clean reopen exactly the unacked records, in order"
                    );
                    assert!(all == want, "seed {seed}: payloads intact");
                    sp.rewind();
                }
            }
            assert_eq!(
                sp.depth(),
                model.len() as u64,
                "seed {seed}: depth counts records, not seqs"
            );
        }
        dropped_total += sp.stats().dropped;
    }
    assert!(
        dropped_total > 0,
        "some seeds overfill the spool, so the model covers drops too"
    );
}

// 2. Crash storage: power cuts at random points.
#[test]
fn power_cuts_keep_every_synced_record_and_invent_none() {
    for seed in 1..=200u64 {
        let mut rng = Rng(seed.wrapping_mul(0xD6E8_FEB8_6659_FD93) | 1);
        let cfg = small();
        let now = t0();
        let (mut sp, _) = open(MemStorage::new(), cfg);
        let mut appended: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut n = 0;
        for round in 0..3 {
            let mut durable = sp.durable_seq();
            for _ in 0..rng.below(60) + 1 {
                n += 1;
                let p = payload(n);
                let seq = sp.append(&p, now).unwrap();
                appended.push((seq, p));
                if rng.below(4) == 0 {
                    sp.sync(now).unwrap();
                    durable = sp.durable_seq();
                }
                if rng.below(3) == 0 {
                    sp.flush(now).unwrap();
                }
            }
            // Records below the watermark went with a full spool's oldest segment.
            let floor = sp.acked();
            // Power cut: each unsynced write kept, lost or torn at random.
            let mut st = sp.st;
            let mut r2 = Rng(rng.next() | 1);
            st.power_cut(
                |_, len| match r2.below(3) {
                    0 => None,
                    1 => Some(len),
                    _ => Some(r2.below(len as u64 + 1) as usize),
                },
                rng.below(2) == 0,
            );
            let (s, _) = open(st, cfg);
            sp = s;
            let got = read_all(&mut sp);
            for (seq, p) in &got {
                let a = appended.iter().find(|(s, _)| s == seq);
                assert_eq!(
                    a.map(|a| &a.1),
                    Some(p),
                    "seed {seed} round {round}: phantom or altered record {seq}"
                );
            }
            for (seq, _) in appended.iter().filter(|(s, _)| *s <= durable && *s > floor) {
                assert!(
                    got.iter().any(|(s, _)| s == seq),
                    "seed {seed} round {round}: synced record {seq} lost"
                );
            }
            assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "in order");
            // Everything read is still unacked; forget what was lost for good.
            appended.retain(|(s, _)| got.iter().any(|(g, _)| g == s));
            sp.rewind();
        }
    }
}

fn tmpdir(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("crd-spool-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

// 3. Truncation sweep, on real files.
#[test]
fn truncation_sweep_recovers_exactly_the_complete_prefix() {
    let base = tmpdir("trunc-base");
    let cfg = SpoolConfig {
        segment: 1024,
        size: 8192,
        ..small()
    };
    let now = t0();
    let mut ends: Vec<(u64, u64)> = Vec::new(); // (seq, end offset in the newest segment)
    let newest;
    {
        let (mut sp, _) = open(FileStorage::open(&base).unwrap(), cfg);
        for n in 1..=12u64 {
            let seq = sp.append(&payload(n), now).unwrap();
            sp.sync(now).unwrap();
            let a = sp.segs.back().unwrap();
            ends.push((seq, a.bytes));
        }
        assert_eq!(sp.read_next().unwrap().unwrap().0, 1);
        sp.ack(1, now).unwrap();
        sp.close(now).unwrap();
        newest = sp.segs.back().unwrap().clone();
    }
    let older: Vec<u64> = ends
        .iter()
        .filter(|(s, _)| *s < newest.first_seq)
        .map(|e| e.0)
        .collect();
    assert!(!older.is_empty(), "the sweep spans a sealed segment too");
    let work = tmpdir("trunc-work");
    for cut in 0..=newest.bytes {
        copy_dir(&base, &work);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(work.join(&*newest.name))
            .unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        let (mut sp, _) = open(FileStorage::open(&work).unwrap(), cfg);
        let got: Vec<u64> = read_all(&mut sp).into_iter().map(|r| r.0).collect();
        let mut want: Vec<u64> = older.iter().copied().filter(|&s| s > 1).collect();
        want.extend(
            ends.iter()
                .filter(|(s, e)| *s >= newest.first_seq && *e <= cut)
                .map(|e| e.0),
        );
        assert_eq!(got, want, "cut at {cut}");
        // Appends after recovery survive a second crash (a real reopen).
        let s1 = sp.append(b"after", now).unwrap();
        sp.sync(now).unwrap();
        assert!(s1 > *want.last().unwrap_or(&0));
        drop(sp);
        let (mut sp, _) = open(FileStorage::open(&work).unwrap(), cfg);
        let again: Vec<u64> = read_all(&mut sp).into_iter().map(|r| r.0).collect();
        assert_eq!(again.last(), Some(&s1), "cut at {cut}");
    }
    // The checkpoint cut at every offset: never worse than duplicates.
    for cut in 0..=(2 * CHECKPOINT_SLOT_BYTES as u64) {
        copy_dir(&base, &work);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(work.join(CHECKPOINT_FILE))
            .unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        let (mut sp, _) = open(FileStorage::open(&work).unwrap(), cfg);
        let got: Vec<u64> = read_all(&mut sp).into_iter().map(|r| r.0).collect();
        assert!(
            got.len() >= ends.len() - 1,
            "checkpoint cut at {cut}: nothing unacked lost"
        );
        assert_eq!(got.last(), Some(&12));
    }
    let _ = std::fs::remove_dir_all(&base);
    let _ = std::fs::remove_dir_all(&work);
}

/// A spool with three segments of synced records; returns the storage and the
/// appended records.
fn three_segments(cfg: SpoolConfig) -> (MemStorage, Vec<(u64, Vec<u8>)>) {
    let now = t0();
    let (mut sp, _) = open(MemStorage::new(), cfg);
    let mut out = Vec::new();
    let mut n = 0;
    while sp.segments() < 3 || sp.segs.back().unwrap().bytes < 300 {
        n += 1;
        let p = payload(n);
        out.push((sp.append(&p, now).unwrap(), p));
        sp.flush(now).unwrap();
    }
    sp.close(now).unwrap();
    (sp.st, out)
}

// 4. Bit flips in a sealed segment.
#[test]
fn bit_flip_sweep_over_a_sealed_segment() {
    let cfg = SpoolConfig {
        segment: 1024,
        size: 16384,
        ..small()
    };
    let (st, all) = three_segments(cfg);
    let first = st
        .clone()
        .list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("seg-"))
        .min()
        .unwrap();
    let seg_len = st.clone().len(&first).unwrap().unwrap() as usize;
    for off in 0..seg_len {
        for bit in [0u8, 3, 7] {
            let mut st2 = st.clone();
            st2.bytes_mut(&first).unwrap()[off] ^= 1 << bit;
            let (mut sp, rec) = open(st2, cfg);
            let got = read_all(&mut sp);
            for (seq, p) in &got {
                assert_eq!(
                    Some(p),
                    all.iter().find(|a| a.0 == *seq).map(|a| &a.1),
                    "flip at {off}: altered record"
                );
            }
            let missing = all.len() - got.len();
            assert!(
                missing <= 1,
                "flip at {off} bit {bit}: {missing} records lost"
            );
            if missing == 1 {
                assert!(sp.stats().corrupt >= 1, "a skipped record is counted");
            }
            if off < SEGMENT_HEADER_BYTES {
                assert_eq!(missing, 0, "a damaged header loses no record");
                assert_eq!(rec.corrupt, 1);
            }
        }
    }
}

// 5. Garbage, zero and 0xFF tails; empty and foreign files.
#[test]
fn garbage_tails_and_foreign_files_are_ends_not_records() {
    let cfg = small();
    let now = t0();
    for tail in [
        vec![0u8; 3000],
        vec![0xFF; 3000],
        (0..3000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<u8>>(),
        vec![0xC5, 0xD1, 0, 0],
    ] {
        let (mut sp, _) = open(MemStorage::new(), cfg);
        for n in 1..=5 {
            sp.append(&payload(n), now).unwrap();
        }
        sp.close(now).unwrap();
        let name = sp.segs.back().unwrap().name.clone();
        let mut st = sp.st;
        st.bytes_mut(&name).unwrap().extend_from_slice(&tail);
        st.put("seg-00000000000000ff.q", b""); // empty newer segment
        st.put("notes.txt", b"an operator's file");
        st.put("seg-xyz.q", b"not ours");
        let (mut sp, rec) = open(st, cfg);
        assert_eq!(rec.truncated_bytes, tail.len() as u64);
        assert_eq!(
            rec.ignored_files,
            vec!["notes.txt".to_string(), "seg-xyz.q".to_string()]
        );
        let got: Vec<u64> = read_all(&mut sp).into_iter().map(|r| r.0).collect();
        assert_eq!(got, vec![1, 2, 3, 4, 5]);
        // The empty newer segment's name reserves its seqs: they are never reused.
        assert_eq!(sp.append(b"x", now).unwrap(), 255);
        assert!(
            sp.storage().len("notes.txt").unwrap().is_some(),
            "foreign files are left alone"
        );
    }
}

// 6. Checkpoint slots.
#[test]
fn checkpoint_damage_costs_duplicates_at_worst() {
    let cfg = small();
    let now = t0();
    let mut sp = read_in_flight(10, now);
    for seq in 1..=4 {
        sp.ack(seq, now).unwrap();
    }
    sp.write_checkpoint().unwrap(); // epoch 2 (open wrote 1), slot 0: acked 4
    for seq in 5..=6 {
        sp.ack(seq, now).unwrap();
    }
    sp.write_checkpoint().unwrap(); // epoch 3, slot 1: acked 6
    let st = sp.st;
    let cases: [(&[usize], u64); 4] = [
        (&[], 7),
        (&[5], 7),
        (&[CHECKPOINT_SLOT_BYTES + 5], 5),
        (&[5, CHECKPOINT_SLOT_BYTES + 5], 1),
    ];
    for (flips, first) in cases {
        let mut st2 = st.clone();
        for &f in flips {
            st2.bytes_mut(CHECKPOINT_FILE).unwrap()[f] ^= 0x10;
        }
        let (mut sp, _) = open(st2, cfg);
        let got: Vec<u64> = read_all(&mut sp).into_iter().map(|r| r.0).collect();
        assert_eq!(got, (first..=10).collect::<Vec<u64>>(), "flips {flips:?}");
    }
}

// 8. ENOSPC and EIO on write, sync and read.
#[test]
fn eio_on_write_keeps_the_record_for_the_next_flush() {
    let now = t0();
    let (mut sp, _) = open(MemStorage::new(), small());
    sp.storage().fail(Op::Write, 0, io::ErrorKind::Other);
    sp.append(b"kept", now).unwrap();
    assert!(sp.flush(now).is_err());
    sp.sync(now).unwrap();
    assert_eq!(read_all(&mut sp), vec![(1, b"kept".to_vec())]);
    assert_eq!(sp.stats().io_errors, 1);
}

#[test]
fn a_failed_fsync_is_never_trusted_the_data_is_rewritten_from_memory() {
    let now = t0();
    let cfg = small();
    let (mut sp, _) = open(MemStorage::new(), cfg);
    sp.append(b"a", now).unwrap();
    sp.sync(now).unwrap();
    sp.append(b"b", now).unwrap();
    sp.flush(now).unwrap();
    let name = sp.segs.back().unwrap().name.clone();
    // The kernel dropped the dirty page on the failed writeback: the file now holds
    // garbage where "b" was, and the sync fails once.
    let len = sp.storage().bytes_mut(&name).unwrap().len();
    sp.storage().bytes_mut(&name).unwrap()[len - 1] ^= 0xFF;
    sp.storage().fail(Op::Sync, 0, io::ErrorKind::Other);
    sp.sync(now).unwrap();
    let mut st = sp.st;
    st.power_cut(|_, _| None, false);
    let (mut sp, _) = open(st, cfg);
    assert_eq!(
        read_all(&mut sp),
        vec![(1, b"a".to_vec()), (2, b"b".to_vec())]
    );
}

#[test]
fn read_errors_are_errors_not_panics_and_reading_resumes() {
    let now = t0();
    let (mut sp, _) = open(MemStorage::new(), small());
    sp.append(b"x", now).unwrap();
    sp.sync(now).unwrap();
    sp.storage().fail(Op::Read, 0, io::ErrorKind::Other);
    assert!(sp.read_next().is_err());
    assert_eq!(read_all(&mut sp), vec![(1, b"x".to_vec())]);
}

#[test]
fn enospc_applies_the_full_policy_and_forwarding_resumes_when_space_returns() {
    let now = t0();
    let cfg = small();
    let (mut sp, _) = open(MemStorage::new(), cfg);
    for n in 1..=60 {
        sp.append(&payload(n), now).unwrap();
    }
    sp.sync(now).unwrap();
    // The disk fills up (other files grew): ENOSPC drops the oldest segment, like
    // the size bound, and appends go on in the space that frees.
    let used: u64 = sp.segs.iter().map(|s| s.bytes).sum();
    sp.storage().capacity = Some(used + 100);
    for n in 61..=200 {
        sp.append(&payload(n), now).unwrap();
        sp.flush(now).unwrap();
    }
    sp.sync(now).unwrap();
    assert!(sp.stats().dropped > 0, "ENOSPC dropped the oldest segment");
    let got = read_all(&mut sp);
    let first = sp.stats().dropped_range.unwrap().1 + 1;
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        (first..=200).collect::<Vec<_>>(),
        "all but the counted drops"
    );

    // Now nothing can be written at all: records wait in RAM up to the bound,
    // then appends are refused, never a panic, never unbounded memory.
    sp.storage().capacity = Some(0);
    let mut refused = 0;
    let mut kept = Vec::new();
    for n in 201..=600 {
        match sp.append(&payload(n), now) {
            Ok(seq) => kept.push(seq),
            Err(AppendError::Backlog) | Err(AppendError::Io(_)) => refused += 1,
            Err(e) => panic!("{e}"),
        }
        let _ = sp.flush(now);
        assert!(
            (sp.buf.len() + sp.unsynced.len()) as u64 <= cfg.unsynced_limit() + 600,
            "RAM bounded"
        );
    }
    assert!(
        refused > 0,
        "appends were refused once the RAM bound was reached"
    );
    // Space returns: what was accepted reaches the disk and the reader.
    sp.storage().capacity = None;
    sp.sync(now).unwrap();
    let got: Vec<u64> = read_all(&mut sp).into_iter().map(|g| g.0).collect();
    assert_eq!(
        got, kept,
        "every accepted record is delivered after the disk recovers"
    );
    assert!(sp.append(b"later", now).is_ok());
}

// 9. Bounds.
#[test]
fn ten_times_the_capacity_stays_bounded_and_the_drop_count_is_exact() {
    let now = t0();
    let cfg = small();
    let (mut sp, _) = open(MemStorage::new(), cfg);
    let mut bytes = 0;
    let mut n = 0;
    while bytes < 10 * cfg.size {
        n += 1;
        let p = payload(n);
        bytes += format::record_bytes(p.len());
        sp.append(&p, now).unwrap();
        sp.flush(now).unwrap();
        let on_disk: u64 = sp
            .storage()
            .list()
            .unwrap()
            .iter()
            .filter(|f| f.starts_with("seg-"))
            .map(|f| sp.st.clone().len(f).unwrap().unwrap())
            .sum();
        assert!(on_disk <= cfg.size + cfg.segment, "{on_disk} bytes on disk");
    }
    sp.sync(now).unwrap();
    let left = read_all(&mut sp);
    assert_eq!(
        sp.stats().dropped + left.len() as u64,
        n,
        "every record is either there or counted"
    );
    assert_eq!(left.last().map(|r| r.0), Some(n));
    assert!(
        left.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "what is left is contiguous"
    );
    let (lo, hi) = sp.stats().dropped_range.unwrap();
    assert_eq!(hi + 1, left[0].0);
    assert!(lo <= hi);
    let notice = sp.take_drop_notice().unwrap();
    assert_eq!(notice.2, sp.stats().dropped);
    assert_eq!(sp.take_drop_notice(), None);
}

// 10. Hostile frames; an oversized event is refused alone.
#[test]
fn oversized_records_are_refused_alone_and_huge_lengths_allocate_nothing() {
    let now = t0();
    let cfg = small();
    let (mut sp, _) = open(MemStorage::new(), cfg);
    sp.append(b"before", now).unwrap();
    assert!(matches!(
        sp.append(&[0; 513], now),
        Err(AppendError::TooLarge { len: 513, max: 512 })
    ));
    sp.append(b"after", now).unwrap();
    sp.close(now).unwrap();
    assert_eq!(sp.stats().too_large, 1);
    // A record header claiming 4 GiB at the tail.
    let name = sp.segs.back().unwrap().name.clone();
    let mut st = sp.st;
    let mut hostile = vec![0xC5, 0xD1, 0xFF, 0xFF, 0xFF, 0xF0];
    hostile.extend_from_slice(&[0; 12]);
    st.bytes_mut(&name).unwrap().extend_from_slice(&hostile);
    let (mut sp, rec) = open(st, cfg);
    assert_eq!(rec.truncated_bytes, 18);
    assert_eq!(read_all(&mut sp).len(), 2);
    assert!(
        sp.read_buf.capacity() <= 512,
        "the read buffer never grew past max_record"
    );
}

// 11. Empty-ring restart.
#[test]
fn an_empty_ring_restart_resends_nothing_and_seq_continues() {
    let now = t0();
    let cfg = small();
    let (mut sp, _) = open(MemStorage::new(), cfg);
    for n in 1..=300 {
        sp.append(&payload(n), now).unwrap();
    }
    sp.sync(now).unwrap();
    while let Some((seq, _)) = sp.read_next().unwrap() {
        sp.ack(seq, now).unwrap();
    }
    sp.close(now).unwrap();
    let stream = sp.stream();
    let (mut sp, rec) = reopen(sp, cfg);
    assert!(!rec.new_stream);
    assert_eq!(sp.stream(), stream);
    assert_eq!(read_all(&mut sp), vec![]);
    assert_eq!(sp.append(b"next", now).unwrap(), 301);
    assert_eq!(sp.segments(), 1, "fully acked segments were deleted");
}

// 12. Version.
#[test]
fn an_unknown_format_version_is_refused_with_a_clear_message() {
    let mut st = MemStorage::new();
    let mut h = format::SegmentHeader {
        stream: 1,
        first_seq: 1,
        prev_last: 0,
    }
    .encode();
    h[5] = 9;
    let crc = format::crc32c(&h[0..32]);
    h[32..36].copy_from_slice(&crc.to_be_bytes());
    st.put("seg-0000000000000001.q", &h);
    let err = match Spool::open(st, small(), || 1, false) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("opened a version-9 spool"),
    };
    assert!(
        err.contains("seg-0000000000000001.q has format version 9, this crd reads version 1"),
        "{err}"
    );
}

// 13. The recovery parser on random bytes: no panic, bounded memory.
#[test]
fn recovery_never_panics_on_random_bytes() {
    let cfg = small();
    let mut rng = Rng(77);
    for _ in 0..500 {
        let mut st = MemStorage::new();
        let mut seg = format::SegmentHeader {
            stream: 3,
            first_seq: 1,
            prev_last: 0,
        }
        .encode()
        .to_vec();
        let len = rng.below(3000) as usize;
        for _ in 0..len {
            // Bias towards record magics so records get parsed, not just skipped.
            seg.push(match rng.below(10) {
                0 => 0xC5,
                1 => 0xD1,
                _ => rng.next() as u8,
            });
        }
        st.put("seg-0000000000000001.q", &seg);
        if rng.below(2) == 0 {
            let ck: Vec<u8> = (0..rng.below(100)).map(|_| rng.next() as u8).collect();
            st.put(CHECKPOINT_FILE, &ck);
        }
        if let Ok((mut sp, _)) = Spool::open(st, cfg, || 3, false) {
            let _ = read_all(&mut sp);
            assert!(sp.read_buf.capacity() <= cfg.max_record as usize);
        }
    }
}

// 14. One instance per spool.
#[test]
fn a_second_opener_cannot_lock_the_same_spool() {
    let dir = tmpdir("lock");
    let first = FileStorage::open(&dir).unwrap();
    let err = FileStorage::open(&dir)
        .err()
        .expect("second open must fail");
    assert!(
        err.to_string().contains("is locked by another crd"),
        "{err}"
    );
    drop(first);
    assert!(
        FileStorage::open(&dir).is_ok(),
        "the lock goes with its holder"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn acks_out_of_order_move_the_watermark_only_over_contiguous_runs() {
    let now = t0();
    let (mut sp, _) = open(MemStorage::new(), small());
    for n in 1..=6 {
        sp.append(&payload(n), now).unwrap();
    }
    sp.sync(now).unwrap();
    assert_eq!(read_all(&mut sp).len(), 6);
    for (ack, want) in [(3, 0), (2, 0), (6, 0), (1, 3), (5, 3), (4, 6)] {
        sp.ack(ack, now).unwrap();
        assert_eq!(sp.acked(), want, "after ack {ack}");
    }
    sp.ack(9, now).unwrap();
    assert_eq!(sp.acked(), 6, "acks of records never read are ignored");
}

#[test]
fn rewind_resends_from_the_watermark() {
    let now = t0();
    let (mut sp, _) = open(MemStorage::new(), small());
    for n in 1..=100 {
        sp.append(&payload(n), now).unwrap();
    }
    sp.sync(now).unwrap();
    let first = read_all(&mut sp);
    for seq in 1..=40 {
        sp.ack(seq, now).unwrap();
    }
    sp.rewind();
    let again = read_all(&mut sp);
    assert_eq!(again, first[40..].to_vec());
}

#[test]
fn sync_always_makes_every_append_durable_at_once() {
    let now = t0();
    let cfg = SpoolConfig {
        sync_always: true,
        ..small()
    };
    let (mut sp, _) = open(MemStorage::new(), cfg);
    sp.append(b"now", now).unwrap();
    assert_eq!(sp.durable_seq(), 1);
    let mut st = sp.st;
    st.power_cut(|_, _| None, false);
    let (mut sp, _) = open(st, cfg);
    assert_eq!(read_all(&mut sp), vec![(1, b"now".to_vec())]);
}

#[test]
fn a_read_only_open_changes_nothing() {
    let now = t0();
    let (mut sp, _) = open(MemStorage::new(), small());
    sp.append(b"a", now).unwrap();
    sp.close(now).unwrap();
    let name = sp.segs.back().unwrap().name.clone();
    let mut st = sp.st;
    st.bytes_mut(&name).unwrap().extend_from_slice(&[0; 100]);
    let before = st.clone().len(&name).unwrap();
    let (mut ro, rec) = Spool::open(st, small(), || 0, true).unwrap();
    assert_eq!(rec.truncated_bytes, 100);
    assert_eq!(read_all(&mut ro), vec![(1, b"a".to_vec())]);
    assert_eq!(
        ro.storage().len(&name).unwrap(),
        before,
        "the torn tail is left for the owner"
    );
    // An append here is refused like any failing append, never an assert: a
    // panic on a router would stop the daemon.
    assert!(matches!(ro.append(b"b", now), Err(AppendError::Io(_))));
    assert_eq!(ro.storage().len(&name).unwrap(), before);
}

// `seq` is never given twice, even to a record lost in a power cut.
#[test]
fn a_power_cut_never_gives_a_seq_twice_and_acks_cross_the_gap() {
    let now = t0();
    let (mut sp, _) = open(MemStorage::new(), small());
    sp.append(b"durable", now).unwrap();
    sp.sync(now).unwrap();
    let lost = sp.append(b"unsynced", now).unwrap();
    sp.flush(now).unwrap();
    let mut st = sp.st;
    st.power_cut(|_, _| None, true);
    let (mut sp, _) = open(st, small());
    let next = sp.append(b"after", now).unwrap();
    assert!(
        next > lost + SEQ_LEASE - 2,
        "numbering resumes above the reservation: {next}"
    );
    assert_eq!(
        sp.take_resume_notice(),
        Some((2, next - 1)),
        "the jump is said, the lost record's seq in it"
    );
    assert_eq!(sp.take_resume_notice(), None, "once");
    sp.sync(now).unwrap();
    let got: Vec<u64> = read_all(&mut sp).into_iter().map(|r| r.0).collect();
    assert_eq!(got, vec![1, next]);
    assert_eq!(sp.depth(), 2, "the gap holds no records");
    sp.close(now).unwrap();
    let (mut sp, _) = reopen(sp, small());
    assert_eq!(
        sp.depth(),
        2,
        "and after a reopen, from the segment headers"
    );
    assert_eq!(read_all(&mut sp).len(), 2);
    sp.ack(1, now).unwrap();
    sp.ack(next, now).unwrap();
    assert_eq!(sp.acked(), next, "the watermark crosses the gap");
    assert_eq!(sp.depth(), 0);
    sp.close(now).unwrap();
    // A clean shutdown leaves no gap, and says none.
    let (mut sp, _) = reopen(sp, small());
    assert_eq!(sp.take_resume_notice(), None);
    assert_eq!(sp.append(b"x", now).unwrap(), next + 1);
}

// A failing disk is retried once per RETRY_INTERVAL, never in a spin.
#[test]
fn a_failing_timed_sync_backs_off() {
    let now = t0();
    let (mut sp, _) = open(MemStorage::new(), small());
    sp.append(b"x", now).unwrap();
    sp.flush(now).unwrap();
    sp.storage().fail(Op::Sync, 0, io::ErrorKind::Other);
    sp.storage().fail(Op::Sync, 0, io::ErrorKind::Other); // the rewrite's sync fails too
    let due = now + Duration::from_secs(1);
    assert!(sp.handle_timer(due).is_err());
    assert_eq!(
        sp.poll_timeout(),
        Some(due + RETRY_INTERVAL),
        "next try a second later"
    );
    assert!(
        sp.handle_timer(due + Duration::from_millis(500)).is_ok(),
        "nothing before then"
    );
    assert_eq!(sp.durable_seq(), 0);
    sp.handle_timer(due + RETRY_INTERVAL).unwrap();
    assert_eq!(sp.durable_seq(), 1);
    assert_eq!(sp.poll_timeout(), None);
}

// 4, on real files: one bit flipped at every offset of a sealed segment.
#[test]
fn bit_flip_sweep_on_real_files() {
    let cfg = SpoolConfig {
        segment: 1024,
        size: 16384,
        ..small()
    };
    let base = tmpdir("flip-base");
    let now = t0();
    let mut all = Vec::new();
    {
        let (mut sp, _) = open(FileStorage::open(&base).unwrap(), cfg);
        let mut n = 0;
        while sp.segments() < 3 {
            n += 1;
            let p = payload(n);
            all.push((sp.append(&p, now).unwrap(), p));
            sp.flush(now).unwrap();
        }
        sp.close(now).unwrap();
    }
    let first = format::segment_name(1);
    let len = std::fs::metadata(base.join(&first)).unwrap().len() as usize;
    let work = tmpdir("flip-work");
    for off in 0..len {
        copy_dir(&base, &work);
        let mut b = std::fs::read(work.join(&first)).unwrap();
        b[off] ^= 0x04;
        std::fs::write(work.join(&first), &b).unwrap();
        let (mut sp, _) = open(FileStorage::open(&work).unwrap(), cfg);
        let got = read_all(&mut sp);
        for (seq, p) in &got {
            let want = all.iter().find(|a| a.0 == *seq).map(|a| &a.1);
            assert_eq!(Some(p), want, "flip at {off}: altered record");
        }
        let missing = all.len() - got.len();
        assert!(missing <= 1, "flip at {off}: {missing} records lost");
        assert!(
            missing == 0 || sp.stats().corrupt >= 1,
            "flip at {off}: a skipped record is counted"
        );
        assert_eq!(
            got.last().map(|g| g.0),
            all.last().map(|a| a.0),
            "later records are delivered"
        );
    }
    let _ = std::fs::remove_dir_all(&base);
    let _ = std::fs::remove_dir_all(&work);
}

/// The spool directory deleted under a running crd. Records of
/// the active segment (reachable through its open descriptor) and those in RAM are
/// kept; unacknowledged records of sealed segments are counted as lost, reported
/// once, and forwarding goes on above them; the spool reopens cleanly afterwards.
#[test]
fn a_vanished_directory_is_made_again_keeping_what_can_be_reached() {
    let now = t0();
    let cfg = small();
    let (mut sp, _) = open(MemStorage::new(), cfg);
    for n in 1..=100 {
        sp.append(&payload(n), now).unwrap();
    }
    sp.sync(now).unwrap();
    // Forward and ack the first ten.
    for (seq, _) in read_all(&mut sp).into_iter().take(10) {
        sp.ack(seq, now).unwrap();
    }
    assert_eq!(sp.acked(), 10);
    assert!(sp.segments() >= 3, "{}", sp.segments());
    let active = sp.segs.back().unwrap().clone();
    // Five more: written, not synced.
    for n in 101..=105 {
        sp.append(&payload(n), now).unwrap();
    }
    sp.flush(now).unwrap();
    sp.storage().vanish(&[&active.name]);
    // The next sync notices, makes the directory again, and carries the active
    // segment over; appends go on.
    sp.sync(now).unwrap();
    assert_eq!(sp.stats().dir_recreated, 1);
    let lost = active.first_seq - 1 - 10;
    assert_eq!(sp.stats().lost, lost);
    assert_eq!(
        sp.take_loss_notice(),
        Some((11, active.first_seq - 1, lost))
    );
    assert_eq!(sp.take_loss_notice(), None, "reported once");
    assert_eq!(
        sp.acked(),
        active.first_seq - 1,
        "forwarding goes on above the loss"
    );
    let seq = sp.append(&payload(106), now).unwrap();
    assert_eq!(seq, 106, "seq continues");
    sp.sync(now).unwrap();
    let got = read_all(&mut sp);
    let want: Vec<(u64, Vec<u8>)> = (active.first_seq..=106).map(|n| (n, payload(n))).collect();
    assert_eq!(got, want, "the active segment and RAM survive, in order");
    // A restart reads the same from the new directory.
    sp.close(now).unwrap();
    let (mut sp, rec) = reopen(sp, cfg);
    assert!(!rec.new_stream, "same stream");
    assert_eq!(rec.corrupt, 0);
    assert_eq!(read_all(&mut sp), want);
}

/// The same when the active segment cannot be read any more (its descriptor was
/// closed): the records in RAM are kept, the rest of the active segment is lost
/// and counted too.
#[test]
fn a_vanished_directory_without_the_active_file_keeps_the_records_in_ram() {
    let now = t0();
    let cfg = small();
    let (mut sp, _) = open(MemStorage::new(), cfg);
    for n in 1..=20 {
        sp.append(&payload(n), now).unwrap();
    }
    sp.sync(now).unwrap();
    for n in 21..=23 {
        sp.append(&payload(n), now).unwrap();
    }
    sp.flush(now).unwrap();
    sp.storage().vanish(&[]);
    sp.sync(now).unwrap();
    assert_eq!(sp.stats().lost, 20);
    assert_eq!(sp.take_loss_notice(), Some((1, 20, 20)));
    assert_eq!(
        read_all(&mut sp),
        (21..=23).map(|n| (n, payload(n))).collect::<Vec<_>>()
    );
}

// 7b. The watermark's durability: ack marks.

/// A memory spool (`small()`) holding records 1..=n, synced and read: each
/// waits for its ack.
fn read_in_flight(n: u64, now: Instant) -> Spool<MemStorage> {
    let (mut sp, _) = open(MemStorage::new(), small());
    for i in 1..=n {
        sp.append(&payload(i), now).unwrap();
    }
    sp.sync(now).unwrap();
    read_all(&mut sp);
    sp
}

/// A crash (power cut: unsynced writes lost) after `acks` records were
/// acknowledged, then reopened: the seq the reader starts at.
fn first_after_power_cut(mut sp: Spool<MemStorage>) -> u64 {
    let mut st = sp.st.clone();
    st.power_cut(|_, _| None, false);
    sp.st = st;
    let (mut again, _) = reopen(sp, small());
    read_all(&mut again).first().map_or(0, |r| r.0)
}

#[test]
fn acks_ride_in_the_next_group_commit_without_a_checkpoint_write() {
    let now = t0();
    let mut sp = read_in_flight(10, now);
    for seq in 1..=6 {
        sp.ack(seq, now).unwrap();
    }
    let ckpt = sp.st.bytes_mut(CHECKPOINT_FILE).unwrap().clone();
    let fsyncs = sp.stats().fsyncs;
    sp.append(&payload(11), now).unwrap();
    sp.sync(now).unwrap();
    assert_eq!(
        sp.stats().fsyncs,
        fsyncs + 1,
        "one fdatasync for record and mark"
    );
    assert_eq!(
        sp.st.bytes_mut(CHECKPOINT_FILE).unwrap(),
        &ckpt,
        "no checkpoint write"
    );
    assert_eq!(sp.poll_timeout(), None, "nothing left to make durable");
    // The reader skips the mark: record 11 comes next.
    assert_eq!(
        read_all(&mut sp).iter().map(|r| r.0).collect::<Vec<_>>(),
        [11]
    );
    assert_eq!(first_after_power_cut(sp), 7);
}

#[test]
fn acks_with_no_record_to_carry_them_are_synced_after_sync_interval() {
    let now = t0();
    let cfg = small();
    let mut sp = read_in_flight(10, now);
    for seq in 1..=4 {
        sp.ack(seq, now).unwrap();
    }
    assert_eq!(sp.poll_timeout(), Some(now + cfg.sync_interval));
    sp.handle_timer(now + cfg.sync_interval / 2).unwrap();
    assert_eq!(
        first_after_power_cut(reopen_clone(&sp)),
        1,
        "not durable yet"
    );
    let fsyncs = sp.stats().fsyncs;
    sp.handle_timer(now + cfg.sync_interval).unwrap();
    assert_eq!(sp.stats().fsyncs, fsyncs + 1);
    assert_eq!(
        sp.poll_timeout(),
        None,
        "no timer spins once the mark is durable"
    );
    assert_eq!(first_after_power_cut(sp), 5);
}

/// A spool on a copy of `sp`'s storage (the original goes on).
fn reopen_clone(sp: &Spool<MemStorage>) -> Spool<MemStorage> {
    open(sp.st.clone(), small()).0
}

#[test]
fn a_long_run_of_acks_is_marked_every_mark_every_acks() {
    let now = t0();
    let cfg = SpoolConfig {
        size: 1 << 20,
        segment: 256 * 1024,
        max_record: 512,
        ..small()
    };
    let (mut sp, _) = open(MemStorage::new(), cfg);
    let n = u64::from(MARK_EVERY_ACKS) + 100;
    for i in 1..=n {
        sp.append(&payload(i), now).unwrap();
    }
    sp.sync(now).unwrap();
    let fsyncs = sp.stats().fsyncs;
    let mut acked = 0;
    while acked < n {
        // The reader hands out at most MAX_IN_FLIGHT before acks come.
        for (seq, _) in read_all(&mut sp) {
            sp.ack(seq, now).unwrap();
            acked += 1;
        }
    }
    assert_eq!(sp.stats().fsyncs, fsyncs + 1, "one mark for {n} acks");
    let mut st = sp.st.clone();
    st.power_cut(|_, _| None, false);
    let (mut again, _) = open(st, cfg);
    assert_eq!(
        read_all(&mut again).first().map(|r| r.0),
        Some(u64::from(MARK_EVERY_ACKS) + 1)
    );
}

#[test]
fn a_new_segment_starts_with_the_watermark() {
    let now = t0();
    let cfg = small();
    let (mut sp, _) = open(MemStorage::new(), cfg);
    // Fill the first 4 KiB segment, ack part of it, then roll into the next.
    let mut n = 0;
    while sp.segs.len() == 1 {
        n += 1;
        sp.append(&payload(n), now).unwrap();
        if n == 5 {
            sp.sync(now).unwrap();
            read_all(&mut sp);
            for seq in 1..=5 {
                sp.ack(seq, now).unwrap();
            }
        }
    }
    assert!(n > 6, "rolled over after {n} records");
    // Only the rollover synced: the new segment's header write carries mark 5.
    let newest = sp.segs.back().unwrap().name.clone();
    let head = sp.st.bytes_mut(&newest).unwrap().clone();
    let mut want = Vec::new();
    format::encode_mark(5, &mut want);
    assert_eq!(
        &head[SEGMENT_HEADER_BYTES..SEGMENT_HEADER_BYTES + want.len()],
        &want[..]
    );
    sp.sync(now).unwrap();
    assert_eq!(first_after_power_cut(sp), 6);
}

#[test]
fn a_damaged_mark_costs_duplicates_at_worst() {
    let now = t0();
    let mut sp = read_in_flight(6, now);
    for seq in 1..=3 {
        sp.ack(seq, now).unwrap();
    }
    sp.append(&payload(7), now).unwrap();
    sp.sync(now).unwrap(); // records 1..=7, then mark 3
    let name = sp.segs.back().unwrap().name.clone();
    let bytes = sp.st.bytes_mut(&name).unwrap();
    let mut mark = Vec::new();
    format::encode_mark(3, &mut mark);
    let at = bytes
        .windows(mark.len())
        .position(|w| w == &mark[..])
        .expect("the mark is in the segment");
    bytes[at + 8] ^= 0x01; // inside the watermark: the CRC no longer matches
    let (mut again, rec) = reopen(sp, small());
    let got: Vec<u64> = read_all(&mut again).iter().map(|r| r.0).collect();
    assert_eq!(
        got,
        (1..=7).collect::<Vec<_>>(),
        "every record, from the checkpoint's 0"
    );
    assert!(rec.corrupt <= 1, "{rec:?}");
}

#[test]
fn a_crash_of_crd_resends_fewer_than_mark_write_acks_beyond_the_window() {
    let now = t0();
    let mut sp = read_in_flight(50, now);
    let fsyncs = sp.stats().fsyncs;
    for seq in 1..=40 {
        sp.ack(seq, now).unwrap();
    }
    assert_eq!(sp.stats().fsyncs, fsyncs, "written, not synced");
    // SIGKILL: what was written survives, synced or not.
    let (mut again, _) = open(sp.st.clone(), small());
    assert_eq!(
        read_all(&mut again).first().map(|r| r.0),
        Some(MARK_WRITE_ACKS + 1)
    );
    // Records written meanwhile carry the watermark at once.
    sp.append(&payload(51), now).unwrap();
    sp.flush(now).unwrap();
    let (mut again, _) = open(sp.st.clone(), small());
    assert_eq!(read_all(&mut again).first().map(|r| r.0), Some(41));
}

/// Found by the 10,000-emit backlog test: a mark written on its own right after a
/// start (no record appended yet) must not move the reader's end back to 0.
#[test]
fn a_mark_written_alone_after_a_restart_keeps_the_backlog_readable() {
    let now = t0();
    let (mut sp, _) = open(MemStorage::new(), small());
    for n in 1..=100 {
        sp.append(&payload(n), now).unwrap();
    }
    sp.sync(now).unwrap();
    let (mut sp, _) = reopen(sp, small());
    let mut got = Vec::new();
    while got.len() < 100 {
        // A forwarder's window at a time, as over a broker.
        let mut batch = Vec::new();
        while batch.len() < 40
            && let Some((seq, _)) = sp.read_next().unwrap()
        {
            batch.push(seq);
        }
        assert!(!batch.is_empty(), "the reader stalled after {}", got.len());
        for &seq in &batch {
            sp.ack(seq, now).unwrap();
        }
        got.extend(batch);
        sp.sync(now).unwrap();
    }
    assert_eq!(got, (1..=100).collect::<Vec<_>>());
}

/// The collector's journal: its watermark is durable only when it says, after
/// the registers' log and the events-done table (found by the rules' SIGKILL
/// test: marks written ahead of them lost register feeds).
#[test]
fn a_spool_with_the_watermark_in_the_checkpoint_only_writes_no_mark() {
    let now = t0();
    let (mut sp, _) = open(MemStorage::new(), small());
    sp.watermark_in_checkpoint_only();
    for n in 1..=50 {
        sp.append(&payload(n), now).unwrap();
    }
    sp.sync(now).unwrap();
    read_all(&mut sp);
    for seq in 1..=40 {
        sp.ack(seq, now).unwrap();
    }
    sp.append(&payload(51), now).unwrap();
    sp.sync(now).unwrap();
    assert_eq!(sp.poll_timeout(), None, "no timer of its own for the acks");
    let (mut again, _) = open(sp.st.clone(), small());
    assert_eq!(read_all(&mut again).first().map(|r| r.0), Some(1));
    sp.write_checkpoint().unwrap();
    let (mut again, _) = open(sp.st.clone(), small());
    assert_eq!(read_all(&mut again).first().map(|r| r.0), Some(41));
}

/// The collector's journal (`keep_unacknowledged`): full of records not yet
/// acknowledged, it refuses the next append instead of dropping any; once they
/// are acknowledged the room comes back.
#[test]
fn a_spool_that_keeps_unacknowledged_records_refuses_when_full_and_drops_none() {
    let now = t0();
    let (mut sp, _) = open(MemStorage::new(), small());
    sp.keep_unacknowledged();
    let mut appended = Vec::new();
    let full = loop {
        let n = appended.len() as u64;
        match sp.append(&payload(n), now) {
            Ok(seq) => appended.push((seq, payload(n))),
            Err(e) => break e,
        }
        sp.flush(now).unwrap();
        assert!(appended.len() < 1000, "never full");
    };
    assert!(matches!(full, AppendError::Full), "{full}");
    sp.sync(now).unwrap();
    assert_eq!(sp.stats().dropped, 0);
    assert_eq!(sp.stats().refused_full, 1);
    assert!(sp.bytes() <= small().size);
    let read = read_all(&mut sp);
    assert_eq!(read, appended, "every record kept, in order");
    let refused = payload(appended.len() as u64);
    assert!(matches!(sp.append(&refused, now), Err(AppendError::Full)));
    for (seq, _) in &read {
        sp.ack(*seq, now).unwrap();
    }
    sp.sync(now).unwrap();
    sp.append(&refused, now).expect("room once acknowledged");
    assert_eq!(sp.stats().dropped, 0);
}

/// Drives a spool on a failing disk: ENOSPC (the disk filled by others, not
/// the spool's own size) and EIO on writes and syncs, at random points, with
/// appends, syncs, and reads acknowledged as they come. Returns the spool, the
/// records it accepted, the records read (and acked), and the highest
/// `durable_seq` seen: what the collector would have sent PUBACKs for.
#[allow(clippy::type_complexity)]
fn failing_disk_run(
    seed: u64,
    keep: bool,
) -> (
    Spool<MemStorage>,
    Vec<(u64, Vec<u8>)>,
    Vec<(u64, Vec<u8>)>,
    u64,
) {
    let now = t0();
    let (mut sp, _) = open(MemStorage::new(), small());
    if keep {
        sp.keep_unacknowledged();
    }
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let (mut accepted, mut read, mut acknowledged) = (Vec::new(), Vec::new(), 0);
    for step in 0..600u64 {
        match rng.below(20) {
            0 => {
                let used: u64 = sp.segs.iter().map(|s| s.bytes).sum();
                sp.storage().capacity = Some(used + rng.below(600));
            }
            1 => sp.storage().capacity = None,
            2 => sp
                .storage()
                .fail(Op::Write, rng.below(3) as u32, io::ErrorKind::Other),
            3 => sp
                .storage()
                .fail(Op::Sync, rng.below(3) as u32, io::ErrorKind::Other),
            4 | 5 => {
                let _ = sp.sync(now);
            }
            6 => {
                let from = read.len();
                while let Ok(Some((seq, p))) = sp.read_next() {
                    read.push((seq, p.to_vec()));
                }
                for &(seq, _) in &read[from..] {
                    let _ = sp.ack(seq, now);
                }
            }
            _ => match sp.append(&payload(step), now) {
                Ok(seq) => accepted.push((seq, payload(step))),
                Err(AppendError::Full | AppendError::Backlog | AppendError::Io(_)) => {}
                Err(e) => panic!("{e}"),
            },
        }
        let _ = sp.flush(now);
        acknowledged = acknowledged.max(sp.durable_seq());
        if keep {
            assert_eq!(sp.stats().dropped, 0, "seed {seed} step {step}: a drop");
        }
    }
    // The disk is healthy again: what is left reaches the reader.
    sp.storage().heal();
    sp.sync(now).expect("a healthy disk syncs");
    read.extend(read_all(&mut sp));
    (sp, accepted, read, acknowledged)
}

/// The collector's journal (`keep_unacknowledged`) on a failing disk: nothing
/// is dropped; every record acknowledged (covered by `durable_seq`) and not yet
/// retired survives a power cut; every accepted record reaches the reader.
#[test]
fn a_keeping_spool_on_a_failing_disk_drops_nothing_it_acknowledged() {
    let seqs = |v: &[(u64, Vec<u8>)]| v.iter().map(|r| r.0).collect::<Vec<_>>();
    for seed in 1..=40u64 {
        // The same run, cut by a power failure just before the disk heals.
        let (sp, accepted, read, acknowledged) = failing_disk_run(seed, true);
        assert_eq!(sp.stats().dropped, 0);
        assert_eq!(
            seqs(&read),
            seqs(&accepted),
            "seed {seed}: every accepted record, in order; {:?}",
            sp.stats()
        );
        assert!(read == accepted, "seed {seed}: the payloads as appended");
        let mut st = sp.st.clone();
        st.power_cut(|_, _| None, false);
        let (mut after, _) = open(st, small());
        let got = read_all(&mut after);
        for (seq, p) in accepted.iter().filter(|a| a.0 <= acknowledged) {
            if *seq > after.acked() {
                assert!(
                    got.contains(&(*seq, p.clone())),
                    "seed {seed}: acknowledged record {seq} lost"
                );
            }
        }
    }
}

/// A forwarding spool (the edge's) on the same failing disk drops its oldest on
/// ENOSPC, and every drop is counted: what was accepted is read, or counted in
/// `dropped`, never silently gone (a failed rewrite after a failed sync once
/// left a hole where the unsynced records were, read as corrupt).
#[test]
fn a_forwarding_spool_on_a_failing_disk_counts_every_record_it_drops() {
    for seed in 1..=40u64 {
        let (sp, accepted, read, _) = failing_disk_run(seed, false);
        let st = sp.stats();
        assert_eq!(st.corrupt, 0, "seed {seed}: {st:?}");
        assert_eq!(
            read.len() as u64 + st.dropped,
            accepted.len() as u64,
            "seed {seed}: read + dropped = accepted; {st:?}"
        );
        assert!(
            read.iter().all(|r| accepted.contains(r)),
            "seed {seed}: only what was appended"
        );
        assert!(
            read.windows(2).all(|w| w[0].0 < w[1].0),
            "seed {seed}: order"
        );
    }
}
