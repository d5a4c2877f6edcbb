//! MQTT topic names and filters, as MQTT 3.1.1 section 4.7 defines them: which
//! filters are valid, and whether a filter matches a topic. Pure.
//!
//! - Levels are separated by `/`; an empty level is allowed (`a//b`, `/a`).
//! - `+` matches exactly one level and must fill its level alone (4.7.1.3).
//! - `#` matches the parent level and any number of levels below it, must fill its
//!   level alone and be the last level (4.7.1.2): `a/#` matches `a` and `a/b/c`.
//! - A filter starting with a wildcard does not match a topic starting with `$`
//!   (4.7.2): `#` does not see `$SYS/...`.
//! - Topics and filters are at least one byte, at most 65,535 bytes of UTF-8, with
//!   no NUL (4.7.3, 1.5.3); a topic name holds no wildcard.

/// Longest topic or filter, bytes (a UTF-8 string's 16-bit length, 1.5.3).
pub const MAX_TOPIC_BYTES: usize = 65_535;

/// Why `filter` is not a valid MQTT 3.1.1 topic filter; `Ok` when it is.
pub fn valid_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("an empty topic filter");
    }
    if filter.len() > MAX_TOPIC_BYTES {
        return Err("a topic filter over 65535 bytes");
    }
    if filter.contains('\0') {
        return Err("a NUL byte in a topic filter");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err("`#` must be a whole level, and the last one (MQTT 4.7.1.2)");
        }
        if level.contains('+') && *level != "+" {
            return Err("`+` must be a whole level (MQTT 4.7.1.3)");
        }
    }
    Ok(())
}

/// Why `topic` is not a valid topic name to publish to; `Ok` when it is.
pub fn valid_topic(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() {
        return Err("an empty topic");
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err("a topic over 65535 bytes");
    }
    if topic.contains(['\0', '+', '#']) {
        return Err("a NUL byte or a wildcard in a topic name");
    }
    Ok(())
}

/// Whether `filter` (valid) matches `topic` (a topic name). One pass over the
/// bytes of both (the collector asks this of every message and module).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let (f, t) = (filter.as_bytes(), topic.as_bytes());
    let (mut i, mut j) = (0, 0);
    loop {
        // At the start of a level in both.
        match f.get(i) {
            // A valid filter has `#` only as its whole last level.
            Some(b'#') => return true,
            Some(b'+') => {
                i += 1;
                while j < t.len() && t[j] != b'/' {
                    j += 1;
                }
            }
            _ => {
                while i < f.len() && f[i] != b'/' {
                    if t.get(j) != Some(&f[i]) {
                        return false;
                    }
                    i += 1;
                    j += 1;
                }
                if j < t.len() && t[j] != b'/' {
                    return false;
                }
            }
        }
        // Both at a `/` or at their end.
        match (i == f.len(), j == t.len()) {
            (true, true) => return true,
            (false, false) => {
                i += 1;
                j += 1;
            }
            // `a/#` matches `a` (the parent level).
            (false, true) => return &f[i..] == b"/#",
            (true, false) => return false,
        }
    }
}

/// Why `group` cannot name a collector group (`subscribe_group`); `Ok` when it
/// can.
pub fn valid_group(group: &str) -> Result<(), &'static str> {
    if group.is_empty() || group.len() > 64 {
        return Err("a group name of 1..64 bytes");
    }
    if group.contains(['/', '+', '#', '\0']) || group.contains(char::is_whitespace) {
        return Err("a group name without `/`, `+`, `#` or spaces");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked_as_section_4_7_says() {
        for ok in [
            "#",
            "+",
            "a",
            "a/b",
            "a/+/c",
            "a/#",
            "+/+",
            "/",
            "a//b",
            "$SYS/#",
            "crd/+/event/#",
        ] {
            assert_eq!(valid_filter(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "#/a", "a+", "a/b+/c", "a/+b", "a\0b"] {
            assert!(valid_filter(bad).is_err(), "{bad}");
        }
        assert!(valid_filter(&"a".repeat(65_536)).is_err());
    }

    /// The definition `matches` implements, level by level.
    fn by_levels(filter: &str, topic: &str) -> bool {
        if topic.starts_with('$') && filter.starts_with(['+', '#']) {
            return false;
        }
        let mut f = filter.split('/');
        let mut t = topic.split('/');
        loop {
            match (f.next(), t.next()) {
                (Some("#"), _) => return true,
                (Some("+"), Some(_)) => {}
                (Some(a), Some(b)) if a == b => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    #[test]
    fn matching_agrees_with_the_level_by_level_definition() {
        let levels = ["", "a", "ab", "b", "$x"];
        let mut rng = 0x9e37_79b9u32;
        let mut next = move |n: u32| {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            rng % n
        };
        let (mut hits, mut total) = (0, 0);
        for _ in 0..50_000 {
            let mut topic: Vec<&str> = Vec::new();
            for _ in 0..=next(4) {
                topic.push(levels[next(5) as usize]);
            }
            let mut filter: Vec<&str> = Vec::new();
            for k in 0..=next(4) {
                filter.push(match next(6) {
                    0 => "+",
                    1 => topic.get(k as usize).copied().unwrap_or("a"),
                    2 => topic.get(k as usize).copied().unwrap_or(""),
                    _ => levels[next(4) as usize],
                });
            }
            if next(3) == 0 {
                filter.push("#");
            }
            let (f, t) = (filter.join("/"), topic.join("/"));
            if valid_filter(&f).is_err() || valid_topic(&t).is_err() {
                continue;
            }
            let want = by_levels(&f, &t);
            assert_eq!(matches(&f, &t), want, "filter {f:?} topic {t:?}");
            total += 1;
            hits += usize::from(want);
        }
        assert!(hits > total / 10 && hits < total, "{hits} of {total}");
    }

    #[test]
    fn matching_follows_the_standards_examples() {
        // 4.7.1.2
        for t in [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
        ] {
            assert!(matches("sport/tennis/player1/#", t), "{t}");
        }
        assert!(
            matches("sport/#", "sport"),
            "# matches the parent level too"
        );
        // 4.7.1.3
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        // 4.7.2: wildcards at the start do not see $ topics.
        assert!(!matches("#", "$SYS/broker/uptime"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/broker/uptime"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        // Exact levels.
        assert!(matches("crd/+/event/#", "crd/r1/event/Disk"));
        assert!(!matches("crd/+/event/#", "crd/r1/status"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
    }

    #[test]
    fn topic_names_hold_no_wildcard_and_groups_no_slash() {
        assert!(valid_topic("crd/r1/event/Disk").is_ok());
        assert!(valid_topic("a/+").is_err());
        assert!(valid_topic("").is_err());
        assert!(valid_group("collectors").is_ok());
        for bad in ["", "a/b", "a+", "a b"] {
            assert!(valid_group(bad).is_err(), "{bad}");
        }
    }
}
