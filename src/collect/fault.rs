//! The journal's fault state: what the collector does while the disk refuses
//! its writes (ENOSPC, EIO, a read-only remount). Pure: time comes in as `now`,
//! the error and the free space as arguments.
//!
//! While a fault stands the collector reads nothing more from the broker (the
//! broker keeps what is not acknowledged), sends no PUBACK for what is not on
//! disk, and tries the journal's write and sync again after `RETRY_FIRST`,
//! doubling to `RETRY_MAX`. The first failure is logged once, with the path and
//! the free space, and becomes an `error` event; the recovery is logged once.
//! `crd status` shows the standing fault as `collect_journal_error`.

use std::io;
use std::time::{Duration, Instant};

/// The first retry of a failed journal write or sync comes this long after it.
pub const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Retries back off, doubling, to at most one every this long.
pub const RETRY_MAX: Duration = Duration::from_secs(5);

/// A standing journal fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub since: Instant,
    /// What `crd status` shows: the errno's name and number, the error, the
    /// path and the free space when it began.
    pub text: String,
    pub retry_at: Instant,
    wait: Duration,
}

/// The fault, if one stands, and how many began since the start.
#[derive(Debug, Default)]
pub struct Faults {
    pub now: Option<Fault>,
    pub count: u64,
    /// When the last fault cleared, and the wait it had reached: a failure
    /// within `RETRY_MAX` of that is the same fault coming back (a sync with
    /// nothing to write succeeds on a full disk), not a new one to tell.
    cleared: Option<(Instant, Duration)>,
}

/// The symbolic name of the errnos a full or failing disk gives.
fn errno_name(code: i32) -> &'static str {
    match code {
        libc::ENOSPC => "ENOSPC",
        libc::EIO => "EIO",
        libc::EDQUOT => "EDQUOT",
        libc::EROFS => "EROFS",
        libc::ENOMEM => "ENOMEM",
        _ => "errno",
    }
}

/// `ENOSPC (28): No space left on device (os error 28)`; an error without an
/// errno (an injected one) says so.
pub fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => format!("{} ({code}): {e}", errno_name(code)),
        None => format!("no errno: {e}"),
    }
}

impl Faults {
    /// A journal write or sync failed. Returns the text to log and send as an
    /// event when this begins a fault (once per fault, not per failure).
    pub fn failed(
        &mut self,
        e: &io::Error,
        path: &std::path::Path,
        free: Option<u64>,
        now: Instant,
    ) -> Option<String> {
        if let Some(f) = self.now.as_mut() {
            if now >= f.retry_at {
                f.wait = (f.wait * 2).min(RETRY_MAX);
                f.retry_at = now + f.wait;
            }
            return None;
        }
        let free = free.map_or_else(
            || "free space unknown".to_string(),
            |b| format!("{b} bytes free"),
        );
        let text = format!("{} in {} ({free})", describe(e), path.display());
        let back = self
            .cleared
            .filter(|&(at, _)| now < at + RETRY_MAX)
            .map(|(_, wait)| (wait * 2).min(RETRY_MAX));
        let wait = back.unwrap_or(RETRY_FIRST);
        self.now = Some(Fault {
            since: now,
            text: text.clone(),
            retry_at: now + wait,
            wait,
        });
        if back.is_some() {
            return None;
        }
        self.count += 1;
        Some(text)
    }

    /// Whether a retry is due now.
    pub fn retry_due(&self, now: Instant) -> bool {
        self.now.as_ref().is_some_and(|f| now >= f.retry_at)
    }

    /// The journal wrote and synced again: how long the fault stood, if one did.
    pub fn cleared(&mut self, now: Instant) -> Option<Duration> {
        let f = self.now.take()?;
        self.cleared = Some((now, f.wait));
        Some(now.saturating_duration_since(f.since))
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.now.as_ref().map(|f| f.retry_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn enospc() -> io::Error {
        io::Error::from_raw_os_error(libc::ENOSPC)
    }

    #[test]
    fn a_fault_is_told_once_backs_off_and_clears() {
        let t0 = Instant::now();
        let mut f = Faults::default();
        let p = Path::new("/spool/collect/journal");
        let text = f
            .failed(&enospc(), p, Some(409_600), t0)
            .expect("told once");
        assert!(text.starts_with("ENOSPC (28): "), "{text}");
        assert!(text.contains("/spool/collect/journal"), "{text}");
        assert!(text.contains("409600 bytes free"), "{text}");
        assert_eq!(f.failed(&enospc(), p, None, t0), None, "not twice");
        assert!(!f.retry_due(t0));
        assert_eq!(f.poll_timeout(), Some(t0 + RETRY_FIRST));
        // Each failed retry doubles the wait, to RETRY_MAX.
        let mut now = t0 + RETRY_FIRST;
        let mut waits = Vec::new();
        for _ in 0..10 {
            assert!(f.retry_due(now));
            assert_eq!(f.failed(&enospc(), p, None, now), None);
            let next = f.poll_timeout().unwrap();
            waits.push(next - now);
            now = next;
        }
        assert_eq!(waits[0], RETRY_FIRST * 2);
        assert_eq!(waits[1], RETRY_FIRST * 4);
        assert_eq!(*waits.last().unwrap(), RETRY_MAX);
        // A failure before the retry is due does not push it out.
        assert_eq!(
            f.failed(&enospc(), p, None, now - Duration::from_millis(1)),
            None
        );
        assert_eq!(f.poll_timeout(), Some(now));
        assert_eq!(f.cleared(now), Some(now - t0));
        assert_eq!(f.poll_timeout(), None);
        assert_eq!(f.count, 1);
        // Failing again right after it cleared: the same fault, backed off, not
        // told again.
        assert_eq!(f.failed(&enospc(), p, None, now), None);
        assert_eq!(f.poll_timeout(), Some(now + RETRY_MAX));
        assert_eq!(f.count, 1);
        let later = now + RETRY_MAX;
        assert!(f.cleared(later).is_some());
        let much_later = later + RETRY_MAX;
        assert!(
            f.failed(&enospc(), p, None, much_later).is_some(),
            "a new fault is told"
        );
        assert_eq!(f.poll_timeout(), Some(much_later + RETRY_FIRST));
        assert_eq!(f.count, 2);
    }

    #[test]
    fn errors_are_named_by_errno() {
        assert!(describe(&io::Error::from_raw_os_error(libc::EIO)).starts_with("EIO (5): "));
        assert!(describe(&io::Error::other("injected")).starts_with("no errno: "));
    }
}
