//! Durations as whole milliseconds, microseconds or nanoseconds in a `u64`,
//! saturating. `Duration::as_millis` and its kin return `u128`, whose division
//! and formatting would cost a 32-bit router's build about 3 KB; no
//! duration crd measures comes near the 584 years a `u64` of nanoseconds holds.

use std::time::Duration;

pub fn ms(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(d.subsec_millis()))
}

pub fn us(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(d.subsec_micros()))
}

pub fn ns(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_std_and_saturate() {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1_999_999),
            Duration::from_millis(86_400_123),
            Duration::new(1 << 33, 999_999_999),
        ] {
            assert_eq!(u128::from(ms(d)), d.as_millis());
            assert_eq!(u128::from(us(d)), d.as_micros());
            assert_eq!(u128::from(ns(d)), d.as_nanos());
        }
        assert_eq!(ns(Duration::MAX), u64::MAX);
        assert_eq!(ms(Duration::MAX), u64::MAX);
    }
}
