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

use std::collections::HashMap;

/// Maps the table is split into.
const SHARDS: usize = 3;

#[derive(Debug)]
pub struct Shards<V> {
    maps: [HashMap<u64, V>; SHARDS],
}

impl<V> Default for Shards<V> {
    fn default() -> Self {
        Shards {
            maps: std::array::from_fn(|_| HashMap::new()),
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
        self.maps.iter().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.maps.iter().all(HashMap::is_empty)
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
