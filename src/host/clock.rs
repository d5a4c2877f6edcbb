//! The wall clock, read in one place: the daemon reads it once per loop turn and
//! hands it on (the outbox and the installer read it too). Only event timestamps,
//! install records and the collector's receive times use
//! it: a router may be at 1970 until NTP, so nothing orders or times by it (the
//! monotonic `Instant` does that).

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds; 0 when the clock is before 1970.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(crate::core::dur::ms)
        .unwrap_or(0)
}
