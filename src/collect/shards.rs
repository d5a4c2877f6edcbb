//! A map from 64-bit keys split into `SHARDS` hash maps by the key's top bits,
//! for the collector's tables of up to 10,000 entries (the events done per
//! stream, the decision states per origin). A single map doubles its whole table
//! when it grows, holding the old and the new one at once: at 10,000 entries of
//! 40 bytes, 336 KiB freed right after 672 KiB allocated, and both tables grew
//! at the same message (a check firing for 10,000 nodes: VmHWM 4,112-4,216 KiB
//! over a VmRSS of 3,828-3,868). Split, a part grows at a time. Why 3: a map
//! holds 7/8 of its buckets, a power of two, so 10,000 entries in 4 maps of
//! 2,500 took 4 x 4,096 buckets (61 % full, 672 KiB a table), in 3 maps of about
//! 3,333 (3,584 fit) they take 3 x 4,096 (504 KiB): 168 KiB less per table, 336
//! KiB in the firing-check row (VmHWM 4,232-4,352 -> 3,988-4,024 KiB on the
//! host build, whose code is 300 KiB larger at opt-level 2). A part's table at
//! 10,000 entries (168 KiB) is above musl malloc's mmap threshold (128 KiB), so
//! it is mapped on its own and given back whole when it grows; 16 maps of 42 KiB
//! stayed in malloc's groups (VmRSS 3,924-3,952). No IO.
//!
//! The keys come from the bus (stream ids an edge picked), so they are hashed
//! with a key per process (`KeyHash`, seeded from std's `RandomState`) rather
//! than a fixed function; but not with SipHash over 8 bytes, which was about 150
//! instructions a lookup and 5 lookups a message on the journal path: a 64-bit
//! key is one multiply of it, masked by the seed, folded (foldhash's mix). The
//! tables are bounded besides (the seen table's `MAX_STREAMS`), so a collision
//! flood, which would need the seed, costs time and never memory.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};

/// The product of `a` and `b`, its high half folded onto its low half.
fn fold(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

/// The hash of the collector's 64-bit keys: two seeds per process.
#[derive(Clone, Debug)]
pub struct KeyHash {
    seed: [u64; 2],
}

impl Default for KeyHash {
    fn default() -> Self {
        let r = RandomState::new();
        // The multiplier is odd, so no key collapses onto another.
        KeyHash {
            seed: [r.hash_one(0x243F_6A88_u64), r.hash_one(0x85A3_08D3_u64) | 1],
        }
    }
}

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher {
            seed: self.seed,
            h: self.seed[0],
        }
    }
}

/// `KeyHash`'s hasher: a `u64` key (the only kind the tables hold) is one fold;
/// other bytes fold 8 at a time.
pub struct KeyHasher {
    seed: [u64; 2],
    h: u64,
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
    }

    fn write_u64(&mut self, k: u64) {
        self.h = fold(self.h ^ k, self.seed[1]);
    }

    fn finish(&self) -> u64 {
        self.h
    }
}

/// A map from bus-chosen 64-bit keys, hashed with `KeyHash`.
pub type KeyMap<V> = HashMap<u64, V, KeyHash>;

/// Maps the table is split into.
const SHARDS: usize = 3;

#[derive(Debug)]
pub struct Shards<V> {
    maps: [KeyMap<V>; SHARDS],
}

impl<V> Default for Shards<V> {
    fn default() -> Self {
        Shards {
            maps: std::array::from_fn(|_| KeyMap::default()),
        }
    }
}

/// The map of `key`: the top 32 bits of a multiplicative (Fibonacci) hash, so
/// consecutive keys (stream ids 1, 2, 3...) spread over all of them, scaled to
/// `0..SHARDS`.
fn shard(key: u64) -> usize {
    let top = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    ((top * SHARDS as u64) >> 32) as usize
}

impl<V> Shards<V> {
    pub fn get(&self, key: u64) -> Option<&V> {
        self.maps[shard(key)].get(&key)
    }

    pub fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        self.maps[shard(key)].get_mut(&key)
    }

    pub fn contains_key(&self, key: u64) -> bool {
        self.maps[shard(key)].contains_key(&key)
    }

    pub fn insert(&mut self, key: u64, v: V) -> Option<V> {
        self.maps[shard(key)].insert(key, v)
    }

    pub fn remove(&mut self, key: u64) -> Option<V> {
        self.maps[shard(key)].remove(&key)
    }

    /// The value of `key`, `new()`'s if it had none.
    pub fn get_or_insert_with(&mut self, key: u64, new: impl FnOnce() -> V) -> &mut V {
        self.maps[shard(key)].entry(key).or_insert_with(new)
    }

    pub fn len(&self) -> usize {
        self.maps.iter().map(KeyMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.maps.iter().all(KeyMap::is_empty)
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &V)> {
        self.maps
            .iter()
            .flat_map(|m| m.iter().map(|(k, v)| (*k, v)))
    }

    /// The key whose `rank` is least (the least recently used, to evict).
    pub fn min_key_by<R: Ord>(&self, rank: impl Fn(&V) -> R) -> Option<u64> {
        self.iter().min_by_key(|(_, v)| rank(v)).map(|(k, _)| k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_a_single_map_holds() {
        let mut s = Shards::default();
        let mut m = HashMap::new();
        let mut x = 0x1234_5678_u64;
        for i in 0..5_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = if i % 3 == 0 { i } else { x % 4_000 };
            match i % 5 {
                0 => assert_eq!(s.remove(k), m.remove(&k)),
                1 => *s.get_or_insert_with(k, || 0) += 1,
                _ => assert_eq!(s.insert(k, i), m.insert(k, i)),
            }
            if i % 5 == 1 {
                *m.entry(k).or_insert(0) += 1;
            }
            assert_eq!(s.get(k), m.get(&k));
            assert_eq!(s.contains_key(k), m.contains_key(&k));
        }
        assert_eq!(s.len(), m.len());
        let mut all: Vec<(u64, u64)> = s.iter().map(|(k, v)| (k, *v)).collect();
        all.sort_unstable();
        let mut want: Vec<(u64, u64)> = m.into_iter().collect();
        want.sort_unstable();
        assert_eq!(all, want);
        let least = want.iter().min_by_key(|(_, v)| *v).unwrap().1;
        assert_eq!(s.get(s.min_key_by(|v| *v).unwrap()), Some(&least));
    }

    #[test]
    fn key_hashes_differ_by_process_seed_and_spread_consecutive_keys() {
        let (a, b) = (KeyHash::default(), KeyHash::default());
        // Two seeds (two processes) hash the same key differently.
        assert_ne!(a.hash_one(7u64), b.hash_one(7u64));
        // Consecutive keys: no two equal, and hashbrown's two parts of a hash
        // (the low bits pick a bucket, the top 7 a tag) both spread.
        let hs: Vec<u64> = (1..=4_096u64).map(|k| a.hash_one(k)).collect();
        let mut sorted = hs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), hs.len());
        let mut low = [0u32; 64];
        let mut top = [0u32; 128];
        for h in &hs {
            low[(h & 63) as usize] += 1;
            top[(h >> 57) as usize] += 1;
        }
        // 64 expected in each of 64 buckets, 32 in each of 128 tags.
        assert!(low.iter().all(|&n| (24..=110).contains(&n)), "{low:?}");
        assert!(top.iter().all(|&n| (8..=64).contains(&n)), "{top:?}");
        // Bytes fold 8 at a time, as a u64 does.
        let mut h = a.build_hasher();
        h.write(&9u64.to_le_bytes());
        assert_eq!(h.finish(), a.hash_one(9u64));
    }

    #[test]
    fn consecutive_keys_spread_over_every_map() {
        let mut s = Shards::default();
        for k in 1..=10_000u64 {
            s.insert(k, ());
        }
        for m in &s.maps {
            // 10,000 / 3 each, and below the 3,585th entry that would double a
            // map of 4,096 buckets (the memory the split is for).
            assert!((3_100..=3_560).contains(&m.len()), "{}", m.len());
            assert!(m.capacity() < 4_096, "{}", m.capacity());
        }
        assert!(!s.is_empty());
    }
}
