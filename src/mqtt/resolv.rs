//! The routers' resolver: a broker's name to its addresses without the C
//! library's getaddrinfo (about 20 KB of musl on MIPS). `forward::resolve` uses it
//! in the builds Zig links (`cfg crd_zig_libc`), and the daemon runs that only in
//! the `crd resolve` child, so its blocking socket calls never hold the loop. It
//! compiles and is tested in every build; the others keep getaddrinfo (nsswitch,
//! systemd-resolved).
//!
//! It reads what musl reads, and keeps what a router needs: /etc/hosts first
//! (every line that names the name, in any letter case), then /etc/resolv.conf's
//! IPv4 `nameserver` lines (the first 3; none: 127.0.0.1, where OpenWrt's dnsmasq
//! listens), `search` or `domain` (the last such line) and `options` `ndots:`,
//! `timeout:` and `attempts:` (at most 15, 60 and 10; the last two at least 1). A
//! name with fewer dots than ndots and no final dot is asked with each search
//! domain appended, then alone; NXDOMAIN moves on to the next, any other outcome
//! ends the search. A and AAAA go over UDP to every nameserver at once, again
//! every timeout/attempts while one is unanswered, for at most `timeout` per name
//! and `LOOKUP_LIMIT` in all; the first answer to each that `dns::answer` takes
//! counts, and only from a nameserver's address. It does not do TCP (a truncated
//! answer is a failure), EDNS0, DNSSEC, IPv6 nameservers (OpenWrt's resolv.conf
//! names 127.0.0.1 beside ::1), other `options`, RFC 6724's sorting (the hosts
//! file's order; from DNS, IPv4 addresses first), nsswitch or a cache.

use crate::mqtt::dns::{self, Answer, Bad, MAX_ADDRESSES, TYPE_A, TYPE_AAAA};
use std::io::{self, ErrorKind, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest a whole lookup may take; under `forward::RESOLVE_TIMEOUT`, so the
/// child says why it failed before the daemon kills it.
pub const LOOKUP_LIMIT: Duration = Duration::from_secs(8);
/// Nameservers used, at most (musl's and glibc's MAXNS).
pub const MAX_NAMESERVERS: usize = 3;
/// Search domains used, at most (glibc's MAXDNSRCH).
const MAX_SEARCH: usize = 6;
/// Bytes read of /etc/hosts and of /etc/resolv.conf; a longer file is read up
/// to its last whole line within them.
const HOSTS_MAX_BYTES: u64 = 64 * 1024;
const RESOLV_CONF_MAX_BYTES: u64 = 4 * 1024;

/// /etc/resolv.conf, as far as this resolver reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conf {
    /// IPv4 only: OpenWrt's resolv.conf names 127.0.0.1 beside ::1.
    pub nameservers: Vec<SocketAddrV4>,
    pub search: Vec<String>,
    pub ndots: usize,
    /// Per name asked, over all attempts.
    pub timeout: Duration,
    pub attempts: u32,
}

/// Why a name has no addresses here.
#[derive(Debug)]
pub enum Error {
    /// Empty, an empty label or one over 63 bytes, over 253 bytes.
    NotAHostName,
    /// NXDOMAIN for the name and each of its search domains.
    NoSuchName,
    /// The name exists, without an A or AAAA record.
    NoAddress,
    /// No nameserver answered within the name's timeout or the deadline.
    NoAnswer,
    /// SERVFAIL, REFUSED or another rcode.
    ServerFailure(u8),
    /// The answer needs TCP.
    Truncated,
    /// `dns::answer` refused the answer.
    Malformed(Bad),
    /// The socket.
    Io(io::Error),
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let (kind, why) = match e {
            Error::Io(e) => return e,
            Error::NotAHostName => (ErrorKind::InvalidInput, "not a host name"),
            Error::NoSuchName => (ErrorKind::NotFound, "no such name"),
            Error::NoAddress => (ErrorKind::NotFound, "no address for the name"),
            Error::NoAnswer => (ErrorKind::TimedOut, "no answer from the nameservers"),
            Error::ServerFailure(_) => (ErrorKind::Other, "the nameserver failed or refused"),
            Error::Truncated => (ErrorKind::Other, "answer truncated (no TCP)"),
            Error::Malformed(_) => (ErrorKind::InvalidData, "malformed answer"),
        };
        io::Error::new(kind, why)
    }
}

impl Conf {
    /// The text of a resolv.conf; lines it does not know are skipped.
    pub fn parse(text: &str) -> Conf {
        let mut c = Conf {
            nameservers: Vec::new(),
            search: Vec::new(),
            ndots: 1,
            timeout: Duration::from_secs(5),
            attempts: 2,
        };
        for line in text.lines() {
            let mut words = line.split_ascii_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(Ok(ip)) = words.next().map(str::parse)
                        && c.nameservers.len() < MAX_NAMESERVERS
                    {
                        c.nameservers.push(SocketAddrV4::new(ip, 53));
                    }
                }
                Some("domain" | "search") => {
                    c.search = words.take(MAX_SEARCH).map(str::to_string).collect();
                }
                Some("options") => words.for_each(|o| c.option(o)),
                _ => {}
            }
        }
        if c.nameservers.is_empty() {
            c.nameservers
                .push(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 53));
        }
        c
    }

    fn option(&mut self, o: &str) {
        let Some((key, value)) = o.split_once(':') else {
            return;
        };
        // As musl's strtoul: the leading digits; without any, no value.
        let digits = value.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return;
        }
        let n = value[..digits].parse::<u64>().unwrap_or(u64::MAX);
        match key {
            "ndots" => self.ndots = n.min(15) as usize,
            "timeout" => self.timeout = Duration::from_secs(n.clamp(1, 60)),
            "attempts" => self.attempts = n.clamp(1, 10) as u32,
            _ => {}
        }
    }
}

/// The addresses a hosts file gives `name`: every line (up to a `#`) whose
/// address is followed by the name among its names, in file order, at most
/// `MAX_ADDRESSES`.
pub fn hosts(text: &str, name: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_ascii_whitespace();
        let Some(addr) = words.next() else {
            continue;
        };
        if words.any(|w| w.eq_ignore_ascii_case(name)) {
            out.extend(addr.parse::<IpAddr>().ok());
        }
        if out.len() == MAX_ADDRESSES {
            break;
        }
    }
    out
}

/// The names to ask for `name`, in order (musl's rule): with fewer dots than
/// `ndots` and no final dot, the name with each search domain, then alone.
fn candidates(name: &str, conf: &Conf) -> Vec<String> {
    let mut out = Vec::new();
    if !name.ends_with('.') && name.matches('.').count() < conf.ndots {
        for d in &conf.search {
            let mut full = String::with_capacity(name.len() + 1 + d.len());
            full.push_str(name);
            full.push('.');
            full.push_str(d);
            out.push(full);
        }
    }
    out.push(name.to_string());
    out
}

/// `name`'s addresses from this host's /etc/hosts and /etc/resolv.conf, within
/// `LOOKUP_LIMIT`.
pub fn system(name: &str) -> Result<Vec<IpAddr>, Error> {
    let deadline = Instant::now() + LOOKUP_LIMIT;
    let hosts = read_prefix(Path::new("/etc/hosts"), HOSTS_MAX_BYTES);
    let conf = Conf::parse(&read_prefix(
        Path::new("/etc/resolv.conf"),
        RESOLV_CONF_MAX_BYTES,
    ));
    lookup(name, &hosts, &conf, deadline)
}

/// At most `max` bytes of the text file at `path`, cut after the last whole
/// line if there were more (bytes that are not UTF-8 replaced); nothing if it
/// cannot be read (musl, too, goes on without).
fn read_prefix(path: &Path, max: u64) -> String {
    let mut b = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(max).read_to_end(&mut b));
    if read.is_err() {
        return String::new();
    }
    if b.len() as u64 == max {
        b.truncate(b.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1));
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// `name`'s addresses: from `hosts_text` (a hosts file) in its order if it names
/// it, else from the nameservers of `conf` by `deadline`, IPv4 first (an IPv4
/// uplink is what a router always has; the forwarder takes the next address
/// at each attempt).
pub fn lookup(
    name: &str,
    hosts_text: &str,
    conf: &Conf,
    deadline: Instant,
) -> Result<Vec<IpAddr>, Error> {
    if dns::query(0, name, TYPE_A).is_err() {
        return Err(Error::NotAHostName);
    }
    let found = hosts(hosts_text, name);
    if !found.is_empty() {
        return Ok(found);
    }
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(Error::Io)?;
    let mut id = first_id();
    for candidate in candidates(name, conf) {
        // A search domain can make the name too long: that one is skipped.
        let (Ok(a), Ok(aaaa)) = (
            dns::query(id, &candidate, TYPE_A),
            dns::query(id.wrapping_add(1), &candidate, TYPE_AAAA),
        ) else {
            continue;
        };
        id = id.wrapping_add(2);
        let end = deadline.min(Instant::now() + conf.timeout);
        let queries = [a, aaaa];
        if let Some(addresses) = exchange(&sock, &conf.nameservers, queries, conf.attempts, end)? {
            return Ok(addresses);
        }
    }
    Err(Error::NoSuchName)
}

/// A query id hard to guess from outside the host: the clock's nanoseconds and
/// the process id (the resolving child is a new process each time).
fn first_id() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (t ^ (t >> 16) ^ std::process::id()) as u16
}

/// Sends `queries` (A, AAAA) to every server, again every `attempts`-th of the
/// time to `end` while one is unanswered; then the addresses of both answers,
/// IPv4 first, if there are any; `None` for NXDOMAIN (the next candidate name);
/// else why not.
fn exchange(
    sock: &UdpSocket,
    servers: &[SocketAddrV4],
    queries: [Vec<u8>; 2],
    attempts: u32,
    end: Instant,
) -> Result<Option<Vec<IpAddr>>, Error> {
    let mut open = [true, true];
    let mut found: [Vec<IpAddr>; 2] = [Vec::new(), Vec::new()];
    let mut no_name = false;
    let mut why = None;
    let retry = end.saturating_duration_since(Instant::now()) / attempts;
    let mut resend = Instant::now();
    let mut buf = [0u8; dns::MESSAGE_MAX_BYTES];
    while open != [false, false] {
        let now = Instant::now();
        if now >= end {
            why = Some(Error::NoAnswer);
            break;
        }
        if now >= resend {
            for (q, _) in queries.iter().zip(open).filter(|(_, o)| *o) {
                for s in servers {
                    // A server this host cannot reach leaves the others.
                    let _ = sock.send_to(q, s);
                }
            }
            resend = now + retry;
        }
        let wait = (resend.min(end) - now).max(Duration::from_millis(1));
        sock.set_read_timeout(Some(wait)).map_err(Error::Io)?;
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok((n, SocketAddr::V4(from))) => (n, from),
            Ok(_) => continue,
            Err(e) => match e.kind() {
                ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted => continue,
                _ => return Err(Error::Io(e)),
            },
        };
        if !servers.contains(&from) {
            continue;
        }
        for i in 0..2 {
            let r = match dns::answer(&queries[i], &buf[..n]) {
                Err(Bad::Id | Bad::Question) => continue,
                // A second server's answer to an answered query.
                _ if !open[i] => continue,
                r => r,
            };
            open[i] = false;
            match r {
                Ok(Answer::Addresses(v)) => found[i] = v,
                Ok(Answer::NoName) => no_name = true,
                Ok(Answer::Failed(rcode)) => why = Some(Error::ServerFailure(rcode)),
                Err(Bad::Truncated) => why = Some(Error::Truncated),
                Err(bad) => why = Some(Error::Malformed(bad)),
            }
        }
    }
    let addresses = found.concat();
    match why {
        _ if !addresses.is_empty() => Ok(Some(addresses)),
        Some(e) => Err(e),
        None if no_name => Ok(None),
        None => Err(Error::NoAddress),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::dns::tests::{reply, rr, wire};
    use std::sync::{Arc, Mutex};

    #[test]
    fn resolv_conf_as_musl_reads_it() {
        let c = Conf::parse(
            "# OpenWrt\nsearch lan\nnameserver 127.0.0.1\nnameserver ::1\n\
             nameserver fe80::1%lan\nnameserver bogus\nnameserver 10.0.0.1\n\
             nameserver 10.0.0.2\nnameserver 10.0.0.3\ndomain home.arpa\noptions ndots:2 timeout:3x attempts:3 rotate\n",
        );
        let want: Vec<SocketAddrV4> = ["127.0.0.1:53", "10.0.0.1:53", "10.0.0.2:53"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(c.nameservers, want, "the first 3 IPv4 ones");
        assert_eq!(c.search, ["home.arpa"], "the last search or domain line");
        assert_eq!(
            (c.ndots, c.timeout, c.attempts),
            (2, Duration::from_secs(3), 3)
        );
        let capped = Conf::parse("options ndots:99 timeout:600 attempts:0 ndots: timeout:x\n");
        assert_eq!(
            (capped.ndots, capped.timeout, capped.attempts),
            (15, Duration::from_secs(60), 1)
        );
        let empty = Conf::parse("");
        assert_eq!(empty.nameservers, ["127.0.0.1:53".parse().unwrap()]);
        assert_eq!(
            (empty.ndots, empty.timeout, empty.attempts),
            (1, Duration::from_secs(5), 2)
        );
        let many = Conf::parse("search a b c d e f g h\n");
        assert_eq!(many.search.len(), MAX_SEARCH);
    }

    #[test]
    fn hosts_lines_naming_the_name_in_any_case() {
        let text = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n\
                     10.0.0.5\tBroker.lan broker # the broker\n\
                     # 10.0.0.6 broker\nnot-an-ip broker\n10.0.0.7 brokers\n\
                     broker 10.0.0.8\n10.0.0.9 mqtt BROKER\n";
        let want: Vec<IpAddr> = vec![[10, 0, 0, 5].into(), [10, 0, 0, 9].into()];
        assert_eq!(hosts(text, "broker"), want);
        assert_eq!(
            hosts(text, "LOCALHOST"),
            [
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(
            hosts(text, "10.0.0.5"),
            Vec::<IpAddr>::new(),
            "an address is not a name"
        );
        let many = "10.1.1.1 x\n".repeat(40);
        assert_eq!(hosts(&many, "x").len(), MAX_ADDRESSES);
    }

    #[test]
    fn search_domains_only_below_ndots_and_without_a_final_dot() {
        let mut c = Conf::parse("search lan home.arpa\n");
        assert_eq!(
            candidates("broker", &c),
            ["broker.lan", "broker.home.arpa", "broker"]
        );
        assert_eq!(candidates("broker.x", &c), ["broker.x"]);
        assert_eq!(candidates("broker.", &c), ["broker."]);
        c.ndots = 2;
        assert_eq!(
            candidates("broker.x", &c),
            ["broker.x.lan", "broker.x.home.arpa", "broker.x"]
        );
    }

    /// How the test server answers a name it has records for.
    #[derive(Clone, Copy, PartialEq)]
    enum Serve {
        Records,
        /// First the records of 6.6.6.6 under another id, then the real ones.
        Spoofed,
        Truncated,
        Silent,
    }

    type Zone = fn(&str, u16) -> Option<Vec<Vec<u8>>>;

    /// A DNS server on a free loopback port: the records `zone` gives a
    /// question's (name, type), or NXDOMAIN for `None`. Returns its address and
    /// the questions asked of it (`name/type`, in lower case).
    fn server(zone: Zone, how: Serve) -> (SocketAddrV4, Arc<Mutex<Vec<String>>>) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(addr) = s.local_addr().unwrap() else {
            panic!("not IPv4")
        };
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                let q = &buf[..n];
                let (name, qtype) = question(q);
                log.lock().unwrap().push(format!("{name}/{qtype}"));
                let m = match (zone(&name, qtype), how) {
                    (_, Serve::Silent) => continue,
                    (None, _) => reply(q, [0x81, 0x83], 0, &[]),
                    (Some(_), Serve::Truncated) => reply(q, [0x83, 0x80], 0, &[]),
                    (Some(rrs), _) => reply(q, [0x81, 0x80], rrs.len() as u16, &rrs.concat()),
                };
                if how == Serve::Spoofed && qtype == TYPE_A {
                    let mut fake = reply(q, [0x81, 0x80], 1, &rr(&[0xc0, 12], TYPE_A, &[6; 4]));
                    fake[0] ^= 0x55;
                    s.send_to(&fake, from).unwrap();
                }
                s.send_to(&m, from).unwrap();
            }
        });
        (addr, asked)
    }

    fn question(q: &[u8]) -> (String, u16) {
        let mut at = 12;
        let mut labels = Vec::new();
        while q[at] != 0 {
            let l = usize::from(q[at]);
            labels.push(String::from_utf8_lossy(&q[at + 1..at + 1 + l]).to_lowercase());
            at += 1 + l;
        }
        (labels.join("."), u16::from_be_bytes([q[at + 1], q[at + 2]]))
    }

    /// broker.lan: a CNAME to mqtt.lan, with its A and AAAA; bare.example: an A;
    /// empty.lan: no address; every other name: NXDOMAIN.
    fn zone(name: &str, qtype: u16) -> Option<Vec<Vec<u8>>> {
        let data: &[u8] = if qtype == TYPE_A {
            &[192, 168, 1, 10]
        } else {
            &[0xfd; 16]
        };
        match name {
            "broker.lan" => Some(vec![
                rr(&[0xc0, 12], 5, &wire("mqtt.lan")),
                rr(&wire("mqtt.lan"), qtype, data),
            ]),
            "bare.example" if qtype == TYPE_A => {
                Some(vec![rr(&[0xc0, 12], TYPE_A, &[10, 9, 9, 9])])
            }
            "bare.example" | "empty.lan" => Some(vec![]),
            _ => None,
        }
    }

    fn conf(server: SocketAddrV4, search: &str, timeout: Duration) -> Conf {
        let mut c = Conf::parse(&format!("search {search}\n"));
        c.nameservers = vec![server];
        c.timeout = timeout;
        c
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn the_hosts_file_answers_first_and_no_nameserver_is_asked() {
        let (addr, asked) = server(zone, Serve::Records);
        let c = conf(addr, "lan", Duration::from_secs(2));
        let got = lookup("BROKER", "10.0.0.5 broker.lan broker\n", &c, soon());
        assert_eq!(got.unwrap(), ips(&["10.0.0.5"]));
        assert!(asked.lock().unwrap().is_empty());
    }

    #[test]
    fn a_search_domain_a_cname_and_both_families() {
        let (addr, asked) = server(zone, Serve::Records);
        let c = conf(addr, "lan", Duration::from_secs(2));
        let got = lookup("broker", "", &c, soon()).unwrap();
        let six = "fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd";
        assert_eq!(got, ips(&["192.168.1.10", six]), "IPv4 first");
        let mut asked = asked.lock().unwrap().clone();
        asked.sort();
        assert_eq!(
            asked,
            ["broker.lan/1", "broker.lan/28"],
            "found with the first domain"
        );
    }

    #[test]
    fn nxdomain_moves_to_the_next_name_and_no_address_ends_the_search() {
        let (addr, asked) = server(zone, Serve::Records);
        let c = conf(addr, "lan", Duration::from_secs(2));
        let got = lookup("bare.example.", "", &c, soon()).unwrap();
        assert_eq!(got, ips(&["10.9.9.9"]), "only A: the AAAA answer is empty");
        let mut c2 = c.clone();
        c2.ndots = 2;
        let got = lookup("bare.example", "", &c2, soon()).unwrap();
        assert_eq!(got, ips(&["10.9.9.9"]));
        let e = lookup("empty", "", &c, soon()).unwrap_err();
        assert!(matches!(e, Error::NoAddress), "{e:?}");
        let e = lookup("nowhere", "", &c, soon()).unwrap_err();
        assert!(matches!(e, Error::NoSuchName), "{e:?}");
        assert_eq!(io::Error::from(e).to_string(), "no such name");
        let asked = asked.lock().unwrap();
        let names: Vec<&str> = asked.iter().map(|q| q.split('/').next().unwrap()).collect();
        for want in ["bare.example.lan", "empty.lan", "nowhere.lan", "nowhere"] {
            assert!(names.contains(&want), "{want} asked: {asked:?}");
        }
        assert!(
            !names.contains(&"empty"),
            "the search ended at empty.lan: {asked:?}"
        );
    }

    #[test]
    fn an_answer_under_another_id_is_ignored() {
        let (addr, _) = server(zone, Serve::Spoofed);
        let c = conf(addr, "lan", Duration::from_secs(2));
        let got = lookup("broker", "", &c, soon()).unwrap();
        assert!(!got.contains(&IpAddr::from([6, 6, 6, 6])), "{got:?}");
        assert!(got.contains(&IpAddr::from([192, 168, 1, 10])), "{got:?}");
    }

    #[test]
    fn a_truncated_answer_is_a_failure() {
        let (addr, _) = server(zone, Serve::Truncated);
        let c = conf(addr, "lan", Duration::from_secs(2));
        let e = lookup("broker", "", &c, soon()).unwrap_err();
        assert!(matches!(e, Error::Truncated), "{e:?}");
    }

    /// A silent server costs the name's `timeout`, and the deadline bounds the
    /// whole lookup whatever the timeout.
    #[test]
    fn a_silent_server_fails_within_the_timeout_and_the_deadline() {
        let (addr, asked) = server(zone, Serve::Silent);
        let c = conf(addr, "lan", Duration::from_millis(400));
        let t0 = Instant::now();
        let e = lookup("broker.lan", "", &c, soon()).unwrap_err();
        assert_eq!(io::Error::from(e).kind(), ErrorKind::TimedOut);
        assert!(
            t0.elapsed() >= Duration::from_millis(400),
            "{:?}",
            t0.elapsed()
        );
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        assert!(!asked.lock().unwrap().is_empty());
        let slow = conf(addr, "lan", Duration::from_secs(60));
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_millis(300);
        let e = lookup("broker", "", &slow, deadline).unwrap_err();
        assert!(matches!(e, Error::NoAnswer), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    }

    #[test]
    fn a_name_that_cannot_be_asked_is_refused_before_any_file() {
        let c = Conf::parse("");
        for bad in ["", "a..b", &"x".repeat(254)] {
            let e = lookup(bad, "", &c, soon()).unwrap_err();
            assert!(matches!(e, Error::NotAHostName), "{bad:?}: {e:?}");
        }
    }
}
