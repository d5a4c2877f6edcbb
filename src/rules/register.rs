//! A rule module's register: per key (a node, a topic, a module, or one for
//! all), an aggregate of the values its messages fed over a sliding `period`,
//! and the condition on it (`above`, `below`, `equals`). Pure: times are the
//! messages' receive times (unix ms, journaled with them), so a replay after a
//! restart computes the same values.
//!
//! The window is `BUCKETS` fixed buckets of `period / BUCKETS`, on a grid of
//! whole multiples of that width: at time `t` it holds the bucket of `t` and the
//! nine before it, so it spans between 9/10 of `period` and all of it, never
//! more (the error bound: a value leaves the window up to one bucket early).
//! `rate` divides the increase by exactly the time the window spans.
//!
//! Memory: per key its name, 32 bytes of slot (name pointer, bucket number, two
//! list links) and the kind's cells: `count` 10 x u32, `sum`/`min`/`max`
//! 10 x f64, `avg` both, `rate` 11 x f64, `last` one f64 (and its text for
//! `equals`); plus the index: open addressing over slot numbers (4 bytes a
//! bucket, a power of two of them, at most 3/4 full: 16,384 buckets, 6.6 bytes a
//! key at 10,000 keys), probed from a keyed hash of the key and compared on the
//! key itself, so two keys never share a slot.
//! At most `keys` keys; past it the least recently fed one is evicted (a list in
//! the slots, O(1)) and counted.

use crate::core::config::{DEFAULT_REGISTER_KEYS, MAX_EQUALS_BYTES, RegisterKind, RuleSettings};
use std::hash::{BuildHasher, RandomState};
use std::io::{self, Read, Write};

/// Buckets per period.
pub const BUCKETS: u64 = 10;
const B: usize = BUCKETS as usize;
const NIL: u32 = u32::MAX;

/// When a key's condition holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// No condition: the register is kept to be read (`crd register`).
    None,
    Above(f64),
    Below(f64),
    Equals(String),
}

/// A register's settings, checked (`RuleSettings::problem` found nothing).
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub kind: RegisterKind,
    /// Bucket width, ms (0 for `last`).
    pub width_ms: u64,
    pub keys: u32,
    pub condition: Condition,
}

impl Spec {
    /// The spec of a rule module's settings; `None` without `register`.
    pub fn of(r: &RuleSettings) -> Option<Spec> {
        let kind = r.register?;
        let period_ms = r.period.map_or(0, crate::core::dur::ms);
        let condition = match (r.above, r.below, &r.equals) {
            (Some(n), _, _) => Condition::Above(n.0),
            (_, Some(n), _) => Condition::Below(n.0),
            (_, _, Some(t)) => Condition::Equals(t.clone()),
            _ => Condition::None,
        };
        Some(Spec {
            kind,
            width_ms: (period_ms / BUCKETS).max(u64::from(kind != RegisterKind::Last)),
            keys: r.register_keys.unwrap_or(DEFAULT_REGISTER_KEYS).max(1),
            condition,
        })
    }

    /// (f64 cells, u32 cells) per key.
    fn strides(&self) -> (usize, usize) {
        match self.kind {
            RegisterKind::Count => (0, B),
            RegisterKind::Sum | RegisterKind::Min | RegisterKind::Max => (B, 0),
            RegisterKind::Avg => (B, B),
            RegisterKind::Rate => (B + 1, 0),
            RegisterKind::Last => (1, 0),
        }
    }

    /// What an empty f64 cell holds.
    fn empty(&self) -> f64 {
        match self.kind {
            RegisterKind::Min => f64::INFINITY,
            RegisterKind::Max => f64::NEG_INFINITY,
            RegisterKind::Last => f64::NAN,
            _ => 0.0,
        }
    }
}

/// What feeding a key gave: the register's value for that key now (`None`
/// while the window holds nothing to compute it from) and whether the condition
/// holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    pub value: Option<f64>,
    pub holds: bool,
}

#[derive(Debug)]
struct Slot {
    key: Box<str>,
    /// The bucket number (time / width) of the newest bucket.
    head: u64,
    /// Toward the more / less recently fed key.
    newer: u32,
    older: u32,
}

/// One rule module's register, all its keys.
#[derive(Debug)]
pub struct Registers {
    spec: Spec,
    /// Slot numbers by key (`NIL` empty), linear probing; empty or a power of
    /// two long, every slot in it once.
    index: Vec<u32>,
    /// Keyed (a network peer names the keys: no chosen collisions).
    hasher: RandomState,
    slots: Vec<Slot>,
    f: Vec<f64>,
    n: Vec<u32>,
    /// `last` with `equals`: the latest text of each key (at most
    /// `MAX_EQUALS_BYTES`; a longer one is kept empty: it equals nothing).
    text: Vec<Box<str>>,
    newest: u32,
    oldest: u32,
    /// Keys evicted to make room.
    pub evicted: u64,
}

impl Registers {
    pub fn new(spec: Spec) -> Registers {
        Registers {
            spec,
            index: Vec::new(),
            hasher: RandomState::new(),
            slots: Vec::new(),
            f: Vec::new(),
            n: Vec::new(),
            text: Vec::new(),
            newest: NIL,
            oldest: NIL,
            evicted: 0,
        }
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Whether a register of `spec` keeps the same data as this one (kind,
    /// bucket width and bound; the condition may differ).
    pub fn same_data(&self, spec: &Spec) -> bool {
        (self.spec.kind, self.spec.width_ms, self.spec.keys)
            == (spec.kind, spec.width_ms, spec.keys)
    }

    /// A new condition on the same data (a reload changed `above`, say).
    pub fn set_condition(&mut self, c: Condition) {
        self.spec.condition = c;
    }

    /// Keys kept.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn bucket(&self, t_ms: u64) -> u64 {
        t_ms / self.spec.width_ms.max(1)
    }

    fn cells(&mut self, i: u32) -> (&mut [f64], &mut [u32]) {
        let (fs, ns) = self.spec.strides();
        let i = i as usize;
        (
            &mut self.f[i * fs..(i + 1) * fs],
            &mut self.n[i * ns..(i + 1) * ns],
        )
    }

    fn unlink(&mut self, i: u32) {
        let (newer, older) = (self.slots[i as usize].newer, self.slots[i as usize].older);
        match newer {
            NIL => self.newest = older,
            j => self.slots[j as usize].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            j => self.slots[j as usize].newer = newer,
        }
    }

    fn push_newest(&mut self, i: u32) {
        self.slots[i as usize].newer = NIL;
        self.slots[i as usize].older = self.newest;
        match self.newest {
            NIL => self.oldest = i,
            j => self.slots[j as usize].newer = i,
        }
        self.newest = i;
    }

    /// Where `key` is in the index (`Ok`), or the empty bucket where it would go.
    fn probe(&self, key: &str, h: u64) -> Result<usize, usize> {
        let mask = self.index.len().wrapping_sub(1);
        let mut p = (h as usize) & mask;
        loop {
            match self.index.get(p) {
                None => return Err(usize::MAX), // no index yet
                Some(&NIL) => return Err(p),
                Some(&i) if *self.slots[i as usize].key == *key => return Ok(p),
                Some(_) => p = (p + 1) & mask,
            }
        }
    }

    fn find(&self, key: &str) -> Option<u32> {
        let p = self.probe(key, self.hasher.hash_one(key)).ok()?;
        Some(self.index[p])
    }

    /// Indexes slot `i` (its key not indexed yet); `n` slots are indexed after.
    fn index_insert(&mut self, i: u32, h: u64, n: usize) {
        if n * 4 > self.index.len() * 3 {
            // Grow, and place every other slot again (at most the bound's
            // table: the slots are never more than `keys`).
            let len = (self.index.len() * 2).max(16);
            self.index.clear();
            self.index.shrink_to(0);
            self.index.reserve_exact(len);
            self.index.resize(len, NIL);
            for j in 0..self.slots.len() as u32 {
                if j != i {
                    let hj = self.hasher.hash_one(&*self.slots[j as usize].key);
                    let p = self.probe_empty(hj);
                    self.index[p] = j;
                }
            }
        }
        let p = self.probe_empty(h);
        self.index[p] = i;
    }

    fn probe_empty(&self, h: u64) -> usize {
        let mask = self.index.len() - 1;
        let mut p = (h as usize) & mask;
        while self.index[p] != NIL {
            p = (p + 1) & mask;
        }
        p
    }

    /// Takes bucket `p` out of the index, moving later ones of its run back so
    /// that every lookup still finds them (no tombstones).
    fn index_remove(&mut self, mut p: usize) {
        let mask = self.index.len() - 1;
        let mut q = p;
        loop {
            q = (q + 1) & mask;
            let j = self.index[q];
            if j == NIL {
                break;
            }
            let home = (self.hasher.hash_one(&*self.slots[j as usize].key) as usize) & mask;
            // Movable to p when p lies on its way from home to q.
            if (q.wrapping_sub(p) & mask) <= (q.wrapping_sub(home) & mask) {
                self.index[p] = j;
                p = q;
            }
        }
        self.index[p] = NIL;
    }

    /// The slot of `key`, made (evicting the least recently fed key at the bound)
    /// when it has none.
    fn slot(&mut self, key: &str, t_ms: u64) -> u32 {
        let h = self.hasher.hash_one(key);
        if let Ok(p) = self.probe(key, h) {
            let i = self.index[p];
            self.unlink(i);
            self.push_newest(i);
            return i;
        }
        let head = self.bucket(t_ms);
        let i = if self.slots.len() >= self.spec.keys as usize && self.oldest != NIL {
            let i = self.oldest;
            self.unlink(i);
            let old = &*self.slots[i as usize].key;
            if let Ok(p) = self.probe(old, self.hasher.hash_one(old)) {
                self.index_remove(p);
            }
            self.evicted += 1;
            self.slots[i as usize].key = key.into();
            self.slots[i as usize].head = head;
            i
        } else {
            let (fs, ns) = self.spec.strides();
            if self.slots.len() == self.slots.capacity() {
                // Doubling, but never past the bound: at `keys` keys the
                // vectors hold no slack (doubling alone left up to half again).
                let room = (self.spec.keys as usize).saturating_sub(self.slots.len());
                let more = self.slots.len().clamp(16, 1 << 20).min(room.max(1));
                self.slots.reserve_exact(more);
                self.f.reserve_exact(more * fs);
                self.n.reserve_exact(more * ns);
                if self.spec.kind == RegisterKind::Last {
                    self.text.reserve_exact(more);
                }
            }
            let i = self.slots.len() as u32;
            self.slots.push(Slot {
                key: key.into(),
                head,
                newer: NIL,
                older: NIL,
            });
            self.f.resize(self.f.len() + fs, 0.0);
            self.n.resize(self.n.len() + ns, 0);
            if self.spec.kind == RegisterKind::Last {
                self.text.push("".into());
            }
            i
        };
        let empty = self.spec.empty();
        let kind = self.spec.kind;
        let (f, n) = self.cells(i);
        f.fill(empty);
        n.fill(0);
        if kind == RegisterKind::Rate {
            f[B] = f64::NAN; // no earlier value yet
        }
        if let Some(t) = self.text.get_mut(i as usize) {
            *t = "".into();
        }
        self.index_insert(i, h, self.slots.len());
        self.push_newest(i);
        i
    }

    /// Moves key `i`'s window to bucket `b`, emptying the buckets it passes.
    fn advance(&mut self, i: u32, b: u64) {
        let head = self.slots[i as usize].head;
        if self.spec.kind == RegisterKind::Last || b <= head {
            // A clock that went back counts into the newest bucket.
            return;
        }
        let empty = self.spec.empty();
        let (f, n) = self.cells(i);
        for k in 1..=(b - head).min(BUCKETS) {
            let p = ((head + k) % BUCKETS) as usize;
            if let Some(c) = f.get_mut(p) {
                *c = empty;
            }
            if let Some(c) = n.get_mut(p) {
                *c = 0;
            }
        }
        self.slots[i as usize].head = b;
    }

    /// Feeds `key` one message at `t_ms`: `num` its number (ignored by `count`),
    /// `text` its text (only `last` with `equals` keeps it). Returns the value
    /// and whether the condition holds.
    pub fn feed(&mut self, key: &str, num: Option<f64>, text: Option<&str>, t_ms: u64) -> Reading {
        let i = self.slot(key, t_ms);
        let b = self.bucket(t_ms);
        self.advance(i, b);
        let p = (self.slots[i as usize].head % BUCKETS) as usize;
        let kind = self.spec.kind;
        let (f, n) = self.cells(i);
        let x = num.unwrap_or(0.0);
        match kind {
            RegisterKind::Count => n[p] = n[p].saturating_add(1),
            RegisterKind::Sum => f[p] += x,
            RegisterKind::Avg => {
                f[p] += x;
                n[p] = n[p].saturating_add(1);
            }
            RegisterKind::Min => f[p] = f[p].min(x),
            RegisterKind::Max => f[p] = f[p].max(x),
            RegisterKind::Last => f[0] = num.unwrap_or(f64::NAN),
            RegisterKind::Rate => {
                let last = f[B];
                if !last.is_nan() {
                    // A counter that went down was reset: it counted up from 0.
                    f[p] += if x >= last { x - last } else { x };
                }
                f[B] = x;
            }
        }
        if let (Some(slot), Some(t)) = (self.text.get_mut(i as usize), text) {
            *slot = if t.len() <= MAX_EQUALS_BYTES {
                t.into()
            } else {
                "".into()
            };
        }
        self.reading(i, t_ms)
    }

    /// Key `i`'s value at `t_ms` and whether the condition holds on it.
    fn reading(&self, i: u32, t_ms: u64) -> Reading {
        let value = self.value_of(i, t_ms);
        let holds = match &self.spec.condition {
            Condition::None => false,
            Condition::Above(a) => value.is_some_and(|v| v > *a),
            Condition::Below(a) => value.is_some_and(|v| v < *a),
            Condition::Equals(s) => self.text.get(i as usize).is_some_and(|t| **t == **s),
        };
        Reading { value, holds }
    }

    /// Key `i`'s value at `t_ms` (without moving its window).
    fn value_of(&self, i: u32, t_ms: u64) -> Option<f64> {
        let (fs, ns) = self.spec.strides();
        let i = i as usize;
        let f = &self.f[i * fs..(i + 1) * fs];
        let n = &self.n[i * ns..(i + 1) * ns];
        if self.spec.kind == RegisterKind::Last {
            return Some(f[0]).filter(|v| !v.is_nan());
        }
        let head = self.slots[i].head;
        let now = self.bucket(t_ms).max(head);
        let age = now - head;
        // Ring positions whose bucket is still in the window at `now`.
        let live = (0..B).filter(|&p| {
            let d = (head % BUCKETS + BUCKETS - p as u64) % BUCKETS;
            d + age < BUCKETS
        });
        match self.spec.kind {
            RegisterKind::Count => Some(live.map(|p| f64::from(n[p])).sum()),
            RegisterKind::Sum => Some(live.map(|p| f[p]).sum()),
            RegisterKind::Avg => {
                let (s, c) = live.fold((0.0, 0u64), |(s, c), p| (s + f[p], c + u64::from(n[p])));
                (c > 0).then(|| s / c as f64)
            }
            RegisterKind::Min => {
                Some(live.map(|p| f[p]).fold(f64::INFINITY, f64::min)).filter(|v| v.is_finite())
            }
            RegisterKind::Max => {
                Some(live.map(|p| f[p]).fold(f64::NEG_INFINITY, f64::max)).filter(|v| v.is_finite())
            }
            RegisterKind::Rate => {
                let w = self.spec.width_ms;
                let start = now.saturating_sub(BUCKETS - 1) * w;
                let span_ms = t_ms.max(start + 1) - start;
                let inc: f64 = live.map(|p| f[p]).sum();
                Some(inc * 1000.0 / span_ms as f64)
            }
            RegisterKind::Last => None,
        }
    }

    /// The value of `key` at `t_ms`, if it is kept.
    pub fn get(&self, key: &str, t_ms: u64) -> Option<Option<f64>> {
        let i = self.find(key)?;
        Some(self.value_of(i, t_ms))
    }

    /// The text `last` keeps for `key` (with `equals`).
    pub fn text(&self, key: &str) -> Option<&str> {
        let i = self.find(key)?;
        self.text.get(i as usize).map(|t| &**t)
    }

    /// Key `key`'s value and condition at `t_ms` without feeding it (a message
    /// that fed it before a restart, replayed from the journal).
    pub fn evaluate(&self, key: &str, t_ms: u64) -> Option<Reading> {
        let i = self.find(key)?;
        Some(self.reading(i, t_ms))
    }

    /// Writes every key, least recently fed first: the kind and bucket width,
    /// the key count, then per key its name, newest bucket number, cells (and
    /// text); integers and floats little-endian, so a snapshot moves between
    /// machines of either byte order.
    pub fn save(&self, w: &mut dyn Write) -> io::Result<()> {
        w.write_all(&[self.spec.kind as u8])?;
        w.write_all(&self.spec.width_ms.to_le_bytes())?;
        w.write_all(&(self.slots.len() as u32).to_le_bytes())?;
        let (fs, ns) = self.spec.strides();
        let mut i = self.oldest;
        while i != NIL {
            let s = &self.slots[i as usize];
            put_str(w, &s.key)?;
            w.write_all(&s.head.to_le_bytes())?;
            let k = i as usize;
            for x in &self.f[k * fs..(k + 1) * fs] {
                w.write_all(&x.to_le_bytes())?;
            }
            for x in &self.n[k * ns..(k + 1) * ns] {
                w.write_all(&x.to_le_bytes())?;
            }
            put_str(w, self.text.get(k).map_or("", |t| t))?;
            i = s.newer;
        }
        Ok(())
    }

    /// Reads what `save` wrote into an empty register of `spec`. A snapshot of
    /// another kind or bucket width is read and dropped (the settings changed
    /// while crd was down): `Ok(false)`. Past `spec.keys` the oldest go.
    pub fn load(&mut self, r: &mut dyn Read) -> io::Result<bool> {
        let kind = get::<1>(r)?[0];
        let width = u64::from_le_bytes(get::<8>(r)?);
        let count = u32::from_le_bytes(get::<4>(r)?);
        let fits = kind == self.spec.kind as u8 && width == self.spec.width_ms;
        let (fs, ns) = strides_of(kind);
        for _ in 0..count {
            let key = get_str(r)?;
            let head = u64::from_le_bytes(get::<8>(r)?);
            let mut f = Vec::with_capacity(fs);
            for _ in 0..fs {
                f.push(f64::from_le_bytes(get::<8>(r)?));
            }
            let mut n = Vec::with_capacity(ns);
            for _ in 0..ns {
                n.push(u32::from_le_bytes(get::<4>(r)?));
            }
            let text = get_str(r)?;
            if fits {
                let i = self.slot(&key, 0);
                self.slots[i as usize].head = head;
                let (cf, cn) = self.cells(i);
                cf.copy_from_slice(&f);
                cn.copy_from_slice(&n);
                if let Some(t) = self.text.get_mut(i as usize) {
                    *t = text.into();
                }
            }
        }
        Ok(fits)
    }

    /// Every key and its value at `t_ms`, sorted by key.
    pub fn list(&self, t_ms: u64) -> Vec<(&str, Option<f64>)> {
        let mut v: Vec<(&str, Option<f64>)> = (0..self.slots.len() as u32)
            .map(|i| (&*self.slots[i as usize].key, self.value_of(i, t_ms)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }
}

/// (f64 cells, u32 cells) per key of a kind by its number in a snapshot.
fn strides_of(kind: u8) -> (usize, usize) {
    use RegisterKind::*;
    let k = [Count, Sum, Avg, Min, Max, Last, Rate]
        .into_iter()
        .find(|k| *k as u8 == kind);
    match k {
        Some(k) => Spec {
            kind: k,
            width_ms: 1,
            keys: 1,
            condition: Condition::None,
        }
        .strides(),
        None => (0, 0),
    }
}

fn put_str(w: &mut dyn Write, s: &str) -> io::Result<()> {
    let len = u16::try_from(s.len()).map_err(|_| io::Error::other("string over 64 KiB"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn get<const N: usize>(r: &mut dyn Read) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn get_str(r: &mut dyn Read) -> io::Result<String> {
    let len = u16::from_le_bytes(get::<2>(r)?) as usize;
    let mut b = vec![0u8; len];
    r.read_exact(&mut b)?;
    String::from_utf8(b).map_err(|_| io::Error::other("a key that is not UTF-8"))
}

/// A value as `crd register` and `CRD_REGISTER_VALUE` print it: a whole number
/// without decimals, else at most six decimals, trailing zeros dropped; `-` for
/// none.
pub fn format_value(v: Option<f64>) -> String {
    let Some(v) = v else {
        return "-".into();
    };
    if v == v.trunc() && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let s = format!("{v:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::Num;
    use std::time::Duration;

    fn spec(kind: RegisterKind, period_s: u64, keys: u32, cond: Condition) -> Spec {
        let r = RuleSettings {
            register: Some(kind),
            period: (kind != RegisterKind::Last).then(|| Duration::from_secs(period_s)),
            register_keys: Some(keys),
            ..RuleSettings::default()
        };
        Spec {
            condition: cond,
            ..Spec::of(&r).unwrap()
        }
    }

    /// A small deterministic generator (xorshift), so failures repeat.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// The slow way: every sample kept, the window taken from the bucket grid.
    fn reference(kind: RegisterKind, w: u64, samples: &[(u64, f64)], t: u64) -> Option<f64> {
        let now_b = t / w;
        let start = now_b.saturating_sub(BUCKETS - 1) * w;
        let inside: Vec<f64> = samples
            .iter()
            .filter(|(ts, _)| *ts >= start && *ts <= t)
            .map(|s| s.1)
            .collect();
        match kind {
            RegisterKind::Count => Some(inside.len() as f64),
            RegisterKind::Sum => Some(inside.iter().sum()),
            RegisterKind::Avg => {
                (!inside.is_empty()).then(|| inside.iter().sum::<f64>() / inside.len() as f64)
            }
            RegisterKind::Min => inside.iter().copied().reduce(f64::min),
            RegisterKind::Max => inside.iter().copied().reduce(f64::max),
            RegisterKind::Last => samples.last().map(|s| s.1),
            RegisterKind::Rate => {
                // Increases between consecutive samples, each counted in the
                // bucket of the later one; a decrease is a reset from 0.
                let mut inc = 0.0;
                for pair in samples.windows(2) {
                    let (a, b) = (pair[0].1, pair[1]);
                    if b.0 >= start && b.0 <= t {
                        inc += if b.1 >= a { b.1 - a } else { b.1 };
                    }
                }
                Some(inc * 1000.0 / (t.max(start + 1) - start) as f64)
            }
        }
    }

    fn close(a: Option<f64>, b: Option<f64>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
            (None, None) => true,
            _ => false,
        }
    }

    #[test]
    fn every_kind_matches_the_slow_way_on_random_streams() {
        use RegisterKind::*;
        for kind in [Count, Sum, Avg, Min, Max, Last, Rate] {
            for seed in 1..=20u64 {
                let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let mut r = Registers::new(spec(kind, 10, 100, Condition::None));
                let w = r.spec().width_ms.max(1);
                let mut t = 1_700_000_000_000 + rng.next() % 10_000;
                let mut samples: Vec<(u64, f64)> = Vec::new();
                let mut counter = 0.0;
                for step in 0..400 {
                    // Mostly small steps, now and then a gap past the period.
                    t += match rng.next() % 20 {
                        0 => 5_000 + rng.next() % 20_000,
                        _ => rng.next() % 700,
                    };
                    let x = if kind == Rate {
                        counter = if rng.next().is_multiple_of(50) {
                            (rng.next() % 100) as f64
                        } else {
                            counter + (rng.next() % 1000) as f64
                        };
                        counter
                    } else {
                        (rng.next() % 20_001) as f64 / 10.0 - 1000.0
                    };
                    samples.push((t, x));
                    let got = r.feed("k", Some(x), None, t).value;
                    let want = reference(kind, w, &samples, t);
                    assert!(
                        close(got, want),
                        "{kind:?} seed {seed} step {step}: {got:?} != {want:?}"
                    );
                    // Read later, without feeding: the window moves on alone.
                    let later = t + rng.next() % 12_000;
                    let got = r.get("k", later).unwrap();
                    let want = reference(kind, w, &samples, later);
                    assert!(
                        close(got, want),
                        "{kind:?} read at +{}: {got:?} != {want:?}",
                        later - t
                    );
                }
            }
        }
    }

    #[test]
    fn the_window_spans_nine_tenths_to_all_of_the_period() {
        // One message every 100 ms for 30 s, period 10 s: count is 91..=100.
        let mut r = Registers::new(spec(RegisterKind::Count, 10, 10, Condition::None));
        let mut seen = Vec::new();
        for k in 0..300u64 {
            let t = 1_000_000 + k * 100 + 37;
            seen.push(r.feed("k", None, None, t).value.unwrap());
        }
        let steady = &seen[100..];
        assert!(
            steady.iter().all(|c| (91.0..=100.0).contains(c)),
            "{steady:?}"
        );
        // Silent for a period: nothing left.
        assert_eq!(
            r.get("k", 1_000_000 + 300 * 100 + 10_000).unwrap(),
            Some(0.0)
        );
    }

    #[test]
    fn conditions_hold_where_they_should() {
        let mut r = Registers::new(spec(RegisterKind::Avg, 10, 10, Condition::Above(20.0)));
        assert!(!r.feed("n1", Some(20.0), None, 1000).holds);
        assert!(r.feed("n1", Some(30.0), None, 1100).holds); // mean 25
        assert!(!r.feed("n2", Some(5.0), None, 1100).holds);
        let mut r = Registers::new(spec(RegisterKind::Min, 10, 10, Condition::Below(1.0)));
        assert!(r.feed("a", Some(0.5), None, 0).holds);
        assert!(r.feed("a", Some(9.0), None, 5000).holds);
        assert!(!r.feed("a", Some(9.0), None, 12_000).holds); // 0.5 left the window
        let mut r = Registers::new(spec(
            RegisterKind::Last,
            0,
            10,
            Condition::Equals("down".into()),
        ));
        assert!(r.feed("wan", None, Some("down"), 1).holds);
        assert!(!r.feed("wan", None, Some("up"), 2).holds);
        assert_eq!(r.text("wan"), Some("up"));
        let long = "x".repeat(MAX_EQUALS_BYTES + 1);
        assert!(!r.feed("wan", None, Some(&long), 3).holds);
        let mut r = Registers::new(spec(RegisterKind::Count, 600, 10, Condition::None));
        assert!(!r.feed("a", None, None, 0).holds);
    }

    #[test]
    fn keys_are_bounded_and_the_least_recently_fed_goes() {
        let mut r = Registers::new(spec(RegisterKind::Sum, 10, 3, Condition::None));
        for (k, t) in [("a", 1), ("b", 2), ("c", 3), ("a", 4), ("d", 5)] {
            r.feed(k, Some(1.0), None, t);
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.evicted, 1);
        assert!(r.get("b", 6).is_none(), "b was the least recently fed");
        assert_eq!(r.get("a", 6), Some(Some(2.0)));
        // A returning key starts afresh.
        r.feed("b", Some(5.0), None, 7);
        assert_eq!(r.get("b", 8), Some(Some(5.0)));
        assert!(r.get("c", 8).is_none());
        let keys: Vec<&str> = r.list(8).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b", "d"]);
        // Many keys through a small table: the list stays consistent.
        let mut r = Registers::new(spec(RegisterKind::Count, 10, 100, Condition::None));
        for k in 0..100_000u64 {
            r.feed(&format!("n{}", k % 1000), None, None, k);
        }
        assert_eq!(r.len(), 100);
        assert_eq!(r.evicted, 100_000 - 100);
        assert!(r.get("n999", 100_000).is_some() && r.get("n0", 100_000).is_none());
    }

    #[test]
    fn the_index_finds_every_kept_key_and_no_other_under_random_eviction() {
        // A model: the kept keys, least recently fed first, with their counts.
        for bound in [1u32, 2, 7, 12, 13, 100, 300] {
            let mut r = Registers::new(spec(RegisterKind::Count, 1 << 40, bound, Condition::None));
            let mut model: Vec<(String, f64)> = Vec::new();
            let mut rng = Rng(u64::from(bound) * 7919 + 1);
            for t in 0..6_000u64 {
                let k = format!("k{}", rng.next() % (u64::from(bound) * 3 / 2 + 2));
                r.feed(&k, None, None, t);
                match model.iter().position(|(m, _)| *m == k) {
                    Some(p) => {
                        let (m, c) = model.remove(p);
                        model.push((m, c + 1.0));
                    }
                    None => {
                        if model.len() == bound as usize {
                            model.remove(0);
                        }
                        model.push((k, 1.0));
                    }
                }
                if t % 97 == 0 || t > 5_950 {
                    for (m, c) in &model {
                        assert_eq!(r.get(m, t), Some(Some(*c)), "bound {bound} key {m} at {t}");
                    }
                    for x in 0..u64::from(bound) * 3 / 2 + 2 {
                        let k = format!("k{x}");
                        let kept = model.iter().any(|(m, _)| *m == k);
                        assert_eq!(r.get(&k, t).is_some(), kept, "bound {bound} key {k}");
                    }
                }
            }
            assert_eq!(r.len(), model.len());
            let filled = r.index.iter().filter(|&&i| i != NIL).count();
            assert_eq!(filled, r.len(), "each slot indexed once");
            assert!(r.index.len() * 3 >= r.len() * 4 && r.index.len().is_power_of_two());
        }
    }

    #[test]
    fn a_clock_that_goes_back_counts_into_the_newest_bucket() {
        let mut r = Registers::new(spec(RegisterKind::Count, 10, 10, Condition::None));
        r.feed("k", None, None, 50_000);
        assert_eq!(r.feed("k", None, None, 10_000).value, Some(2.0));
        assert_eq!(r.feed("k", None, None, 50_500).value, Some(3.0));
    }

    #[test]
    fn spec_from_settings() {
        let r = RuleSettings {
            register: Some(RegisterKind::Avg),
            value: Some("load".into()),
            period: Some(Duration::from_secs(10)),
            above: Some(Num(20.0)),
            ..RuleSettings::default()
        };
        let s = Spec::of(&r).unwrap();
        assert_eq!(
            (s.width_ms, s.keys, s.condition),
            (1000, DEFAULT_REGISTER_KEYS, Condition::Above(20.0))
        );
        assert!(Spec::of(&RuleSettings::default()).is_none());
    }

    #[test]
    fn a_new_condition_keeps_the_data_a_new_kind_or_period_does_not() {
        let mut r = Registers::new(spec(RegisterKind::Avg, 10, 10, Condition::Above(20.0)));
        assert!(r.feed("n1", Some(30.0), None, 0).holds);
        let tighter = spec(RegisterKind::Avg, 10, 10, Condition::Above(40.0));
        assert!(r.same_data(&tighter));
        r.set_condition(tighter.condition);
        let after = r.feed("n1", Some(30.0), None, 100);
        assert_eq!((after.value, after.holds), (Some(30.0), false));
        assert!(!r.same_data(&spec(RegisterKind::Sum, 10, 10, Condition::None)));
        assert!(!r.same_data(&spec(RegisterKind::Avg, 20, 10, Condition::None)));
        assert!(!r.same_data(&spec(RegisterKind::Avg, 10, 11, Condition::None)));
    }

    #[test]
    fn a_saved_register_loads_the_same_and_goes_on_the_same() {
        use RegisterKind::*;
        for kind in [Count, Sum, Avg, Min, Max, Last, Rate] {
            let mut a = Registers::new(spec(kind, 10, 50, Condition::Above(3.0)));
            let mut rng = Rng(7);
            let mut t = 1_000_000;
            for _ in 0..500 {
                t += rng.next() % 300;
                let k = format!("n{}", rng.next() % 80);
                a.feed(&k, Some((rng.next() % 100) as f64), Some("up"), t);
            }
            let mut bytes = Vec::new();
            a.save(&mut bytes).unwrap();
            let mut b = Registers::new(spec(kind, 10, 50, Condition::Above(3.0)));
            assert!(b.load(&mut &bytes[..]).unwrap(), "{kind:?}");
            assert_eq!(a.list(t), b.list(t), "{kind:?}");
            // The same eviction order and the same values as more come.
            for _ in 0..200 {
                t += rng.next() % 300;
                let k = format!("n{}", rng.next() % 120);
                let x = Some((rng.next() % 100) as f64);
                assert_eq!(a.feed(&k, x, None, t), b.feed(&k, x, None, t), "{kind:?}");
            }
            assert_eq!(a.list(t), b.list(t), "{kind:?}");
            // Another kind or width: read through, dropped.
            let mut c = Registers::new(spec(
                if kind == Sum { Max } else { Sum },
                10,
                50,
                Condition::None,
            ));
            assert!(!c.load(&mut &bytes[..]).unwrap());
            assert!(c.is_empty());
            // Cut short: an error, never a panic.
            assert!(
                Registers::new(spec(kind, 10, 50, Condition::None))
                    .load(&mut &bytes[..bytes.len() / 2])
                    .is_err()
            );
        }
        // A smaller bound keeps the most recently fed.
        let mut a = Registers::new(spec(Count, 10, 10, Condition::None));
        for k in 0..10 {
            a.feed(&format!("k{k}"), None, None, k);
        }
        let mut bytes = Vec::new();
        a.save(&mut bytes).unwrap();
        let mut b = Registers::new(spec(Count, 10, 3, Condition::None));
        b.load(&mut &bytes[..]).unwrap();
        let keys: Vec<&str> = b.list(20).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["k7", "k8", "k9"]);
    }

    #[test]
    fn values_print_plainly() {
        assert_eq!(format_value(Some(25.0)), "25");
        assert_eq!(format_value(Some(-3.0)), "-3");
        assert_eq!(format_value(Some(23.333_333_333)), "23.333333");
        assert_eq!(format_value(Some(0.5)), "0.5");
        assert_eq!(format_value(None), "-");
    }
}
