//! Calendar dates from unix time, in UTC, with no clock and no time-zone data:
//! what `crd --list` shows for an install and the fleet page for its own time.

/// A UTC date and time of day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// The UTC date and time of `secs` after the epoch (Howard Hinnant's
/// `civil_from_days`).
pub fn civil(secs: u64) -> Civil {
    let days = (secs / 86_400) as i64;
    let rem = (secs % 86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    Civil {
        year: yoe + era * 400 + i64::from(month <= 2),
        month,
        day,
        hour: rem / 3600,
        minute: rem / 60 % 60,
        second: rem % 60,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times() {
        let c = |s| {
            let c = civil(s);
            (c.year, c.month, c.day, c.hour, c.minute, c.second)
        };
        assert_eq!(c(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(c(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(c(951_868_799), (2000, 2, 29, 23, 59, 59));
        assert_eq!(c(1_796_335_362), (2026, 12, 3, 22, 2, 42));
    }
}
