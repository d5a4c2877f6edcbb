//! Store and forward: one non-blocking TCP connection to the MQTT broker, fed from
//! the spool's watermark forward in seq order, acking spool records only on PUBACK.
//!
//! This file owns the socket, reconnect with capped exponential backoff and jitter,
//! and the retained status (`online` after CONNACK, `offline` as the will and on
//! clean shutdown); what goes on the wire is rendered by `wire`, the MQTT protocol
//! itself is `session::Session`. A broker name is not resolved here: the forwarder
//! asks for it (`poll_resolve`) and the daemon runs `crd resolve` in a child and
//! answers (`handle_resolved`), so a resolver that does not answer never holds the
//! loop. Everything runs in the daemon's poll loop: the socket is edge-triggered for
//! both directions and every wait is a deadline in `poll_timeout`, so a dead or slow
//! broker never makes crd spin. With `broker_tls` the bytes go through
//! `transport::Transport`'s TLS stream.

use crate::core::config::MqttSettings;
use crate::core::status::{Status, Value};
use crate::core::{event, json, topic};
use crate::host::outbox::LastError;
use crate::mqtt::diag::Diag;
use crate::mqtt::error::{Error, Reason};
use crate::mqtt::session::{Session, SessionConfig, SessionError, Up};
use crate::mqtt::transport::Transport;
use crate::mqtt::wire::{self, HaEntity};
use crate::spool::Spool;
use crate::spool::storage::Storage;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// First wait after a failed connection; doubles up to `BACKOFF_MAX`, +-25% jitter.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A connection the broker closes within this long of its CONNACK counts as a
/// quick close: what a broker does to the older of two clients with one
/// client_id (MQTT 3.1.1, 3.1.4-2), each time the other connects.
pub const TAKEOVER_WINDOW: Duration = Duration::from_secs(10);
/// Quick closes in a row after which crd says another client probably has its
/// client_id (the log and `mqtt_last_error`).
pub const TAKEOVER_CLOSES: u32 = 3;
/// Longest the resolution of the broker's name may take (the daemon kills the
/// resolving child then); past it and a grace period the attempt counts as failed
/// here too.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
const RESOLVE_WAIT_LIMIT: Duration = Duration::from_secs(15);
/// Longest a TCP connect may take before it counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Encoded publishes waiting for the socket, at most (bytes); reading from the
/// spool pauses above it.
pub const OUT_LIMIT_BYTES: usize = 256 * 1024;
/// Bytes read from the broker per loop turn; the rest on the next turn, so a flood
/// of messages cannot hold the loop. A collector holds a read's messages twice
/// until its group commit (the inbound list and the journal's unsynced bytes):
/// 64 KiB rather than 256 KiB took 150-400 KiB off its peak RSS with 10,000
/// nodes, and left its throughput within the run-to-run noise.
pub const READ_BUDGET_BYTES: usize = 64 * 1024;
/// Entries of the inbound list whose allocation is kept between reads (about
/// 80 bytes each).
pub const INBOUND_KEPT: usize = 512;
/// Largest password file read, bytes.
const PASSWORD_FILE_MAX: u64 = 4096;
const DEFAULT_PORT: u16 = 1883;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No broker configured.
    Off,
    Backoff {
        until: Instant,
    },
    /// Waiting for the daemon to resolve the broker's name (in a child).
    Resolving {
        since: Instant,
    },
    Connecting {
        since: Instant,
    },
    /// TCP is up; the session does CONNECT/CONNACK and the rest.
    Up,
}

pub struct Forwarder {
    cfg: MqttSettings,
    node: String,
    stream_hex: String,
    boot_ms: u64,
    session: Session,
    sock: Option<Transport>,
    token: Token,
    phase: Phase,
    rbuf: Vec<u8>,
    backoff: Duration,
    rng: u64,
    addr_next: usize,
    /// The broker of `cfg.brokers()` tried now: the first at start, the next
    /// after each failed connect or lost connection.
    current: usize,
    /// Moves to the next broker of the list.
    failovers: u64,
    /// Highest seq ever published in this run: a lower or equal one is a resend (DUP).
    max_sent_seq: u64,
    /// The spool's watermark when the status was last made: every record up
    /// to it the broker acknowledged (or the spool dropped, which it said in
    /// a notice); the status's `"seq"`.
    acked_seq: u64,
    stopping: bool,
    /// A resolution is to be asked of the daemon (`poll_resolve`).
    resolve_wanted: bool,
    published: u64,
    acked: u64,
    connects: u64,
    last_connect: Option<Instant>,
    /// The client_id sent in CONNECT, and the broker's closes in a row within
    /// `TAKEOVER_WINDOW` of a CONNACK.
    client_id: String,
    quick_closes: u32,
    last_error: String,
    /// Filters subscribed at each connect (empty: crd only publishes).
    filters: Vec<String>,
    /// The collector groups this crd is a member of: its status names them once
    /// the broker acknowledged the subscription (`collect::group`).
    groups: Vec<String>,
    /// The status says `"joining":true` (`collect::group`).
    joining: bool,
    /// Filters the broker's last SUBACK refused, and those that SUBSCRIBE carried.
    refused_filters: Vec<String>,
    sub_sent: Vec<String>,
    /// Inbound messages for the collector, with their connection number.
    inbound: Vec<(u64, Up)>,
    /// Each module's retained state (`<prefix>/<node>/state/<module>`), published
    /// when it changes and again after every connect; at most one per module,
    /// sorted by module (a sorted `Vec`: a `BTreeMap`, the only one in a
    /// router build, costs it about 7 KB of code for a few dozen entries).
    states: Vec<(String, Vec<u8>)>,
    /// The scheduled modules, sorted, with their `device_class`: their
    /// discovery configs are announced (with `homeassistant`), any other
    /// under this node's id is cleared.
    modules: Vec<(String, &'static str)>,
    /// The node's diagnostics topic (with `homeassistant`): its values and
    /// its rate bound.
    diag: Diag,
    /// The filter of this node's discovery configs
    /// (`wire::ha_own_configs`), subscribed to at each connect.
    own_configs: String,
    /// The configs of the name this node had before (`renamed_from`): all
    /// emptied at each connect.
    old_configs: Option<String>,
    /// Bytes left unread past `READ_BUDGET_BYTES`.
    pending_input: bool,
    /// Not reading the socket (`set_paused`).
    paused: bool,
    /// Reused per record: the topic and the JSON payload being sent.
    topic_buf: String,
    json_buf: Vec<u8>,
}

/// `host:port`, `[v6]:port` or `v6` as addresses, without the resolver; `None`
/// for a name (which must be resolved, out of the loop: `poll_resolve`).
pub fn literal(broker: &str) -> Option<Vec<SocketAddr>> {
    if let Ok(a) = broker.parse::<SocketAddr>() {
        return Some(vec![a]);
    }
    if let Ok(ip) = broker.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        return Some(vec![SocketAddr::new(ip, DEFAULT_PORT)]);
    }
    None
}

/// `host:port`, `[v6]:port`, `v6` or `host` (port 1883) resolved to addresses.
/// Literal addresses never touch the resolver; names block for as long as the
/// resolver takes: the daemon calls this only in a child (`crd resolve`), never
/// in its loop. The routers (`crd_zig_libc`) use crd's own resolver
/// (`resolv.rs`: /etc/hosts, then DNS over UDP); the other builds the system's
/// (getaddrinfo: nsswitch, systemd-resolved).
pub fn resolve(broker: &str) -> io::Result<Vec<SocketAddr>> {
    if let Some(a) = literal(broker) {
        return Ok(a);
    }
    let (host, port) = match broker.rsplit_once(':').map(|(h, p)| (h, p.parse())) {
        Some((h, Ok(p))) => (h, p),
        _ => (broker, DEFAULT_PORT),
    };
    #[cfg(crd_zig_libc)]
    let v: Vec<SocketAddr> = crate::mqtt::resolv::system(host)?
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    #[cfg(not(crd_zig_libc))]
    let v: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?.collect();
    if v.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no address"));
    }
    Ok(v)
}

// The resolving child gives up, and says why, before the daemon kills it.
const _: () = assert!(crate::mqtt::resolv::LOOKUP_LIMIT.as_secs() < RESOLVE_TIMEOUT.as_secs());

/// The login of the next CONNECT: `username` and the password read from
/// `password_file` now (so it can be rotated without a restart).
pub fn login(cfg: &MqttSettings) -> Result<Option<(String, String)>, Error> {
    Ok(match (&cfg.username, &cfg.password_file) {
        (u, None) if u.is_empty() => None,
        (u, None) => Some((u.clone(), String::new())),
        (u, Some(p)) => Some((u.clone(), read_password(p)?)),
    })
}

fn read_password(p: &Path) -> Result<String, Error> {
    let mut s = String::new();
    std::fs::File::open(p)
        .and_then(|f| f.take(PASSWORD_FILE_MAX).read_to_string(&mut s))
        .map_err(|e| Reason::PasswordFile(p.to_path_buf(), e))?;
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

impl Forwarder {
    pub fn new(
        cfg: MqttSettings,
        node: &str,
        stream: u64,
        token: Token,
        now: Instant,
    ) -> Forwarder {
        let stream_hex = format!("{stream:016x}");
        let boot_ms = crate::host::clock::unix_ms();
        let client_id = if cfg.client_id.is_empty() {
            let id = format!("crd-{node}");
            id.chars().take(64).collect()
        } else {
            cfg.client_id.clone()
        };
        let will = wire::status_json("offline", node, &stream_hex, boot_ms, &[], false);
        let session = Session::new(
            SessionConfig {
                client_id: client_id.clone(),
                keepalive: cfg.keepalive,
                max_inflight: cfg.max_inflight,
                login: None,
                will: Some((wire::status_topic(&cfg.topic_prefix, node), will)),
                max_packet: 2 << 20,
                max_incoming: crate::mqtt::session::MAX_INCOMING_PACKET,
                clean_session: true,
            },
            now,
        );
        let phase = if cfg.broker.is_empty() {
            Phase::Off
        } else {
            Phase::Backoff { until: now }
        };
        Forwarder {
            node: node.to_string(),
            stream_hex,
            boot_ms,
            session,
            sock: None,
            token,
            phase,
            rbuf: Vec::new(),
            backoff: BACKOFF_MIN,
            rng: u64::from(std::process::id()) ^ boot_ms ^ stream,
            addr_next: 0,
            current: 0,
            failovers: 0,
            max_sent_seq: 0,
            acked_seq: 0,
            stopping: false,
            resolve_wanted: false,
            published: 0,
            acked: 0,
            connects: 0,
            last_connect: None,
            client_id,
            quick_closes: 0,
            last_error: String::new(),
            topic_buf: String::new(),
            json_buf: Vec::new(),
            filters: Vec::new(),
            groups: Vec::new(),
            joining: false,
            refused_filters: Vec::new(),
            sub_sent: Vec::new(),
            inbound: Vec::new(),
            states: Vec::new(),
            modules: Vec::new(),
            diag: Diag::default(),
            own_configs: wire::ha_own_configs(&cfg.homeassistant_prefix, node),
            old_configs: None,
            pending_input: false,
            paused: false,
            cfg,
        }
    }

    pub fn owns(&self, t: Token) -> bool {
        t == self.token
    }

    fn status_payload(&self, state: &str) -> Vec<u8> {
        self.status_of(state, &[])
    }

    /// The status (`wire::status_json`) naming `groups`, with `"seq"` last
    /// (`acked_seq`), so a collector sees a tail of the stream it never
    /// received.
    fn status_of(&self, state: &str, groups: &[String]) -> Vec<u8> {
        let (node, hex, boot) = (&self.node, &self.stream_hex, self.boot_ms);
        let mut p = wire::status_json(state, node, hex, boot, groups, self.joining);
        json::Obj::reopen(&mut p).uint("seq", self.acked_seq).end();
        p
    }

    /// The broker tried now (`current` of `cfg.brokers()`).
    fn broker(&self) -> &str {
        let b = self.cfg.brokers().nth(self.current);
        b.unwrap_or(&self.cfg.broker)
    }

    fn status_topic(&self) -> String {
        wire::status_topic(&self.cfg.topic_prefix, &self.node)
    }

    /// Backoff with +-25% jitter, then doubled for next time.
    fn next_backoff(&mut self) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let base = crate::core::dur::ms(self.backoff);
        let jitter = self.rng % (base / 2 + 1);
        let d = Duration::from_millis(base - base / 4 + jitter);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        d
    }

    fn fail<S: Storage>(
        &mut self,
        registry: &Registry,
        spool: &mut Spool<S>,
        why: Error,
        now: Instant,
    ) {
        self.drop_connection(registry, spool);
        let wait = self.next_backoff();
        let failed = self.broker().to_string();
        let count = self.cfg.brokers().count();
        if count > 1 {
            // The next of the list, after the backoff (a cluster's nodes, or
            // brokers that bridge: any of them takes the events).
            self.current = (self.current + 1) % count;
            self.failovers += 1;
            self.addr_next = 0;
        }
        log::warn!(
            "mqtt {failed}: {why}; trying {} in {} ms",
            self.broker(),
            crate::core::dur::ms(wait)
        );
        self.last_error = why.to_string();
        self.phase = Phase::Backoff { until: now + wait };
    }

    /// A connection attempt: at once to a literal address; for a name, first a
    /// resolution, which the daemon runs in a child (`poll_resolve`,
    /// `handle_resolved`), so a resolver that does not answer never holds the loop.
    fn connect<S: Storage>(&mut self, registry: &Registry, spool: &mut Spool<S>, now: Instant) {
        match literal(self.broker()) {
            Some(addrs) => self.connect_to(&addrs, registry, spool, now),
            None => {
                self.phase = Phase::Resolving { since: now };
                self.resolve_wanted = true;
            }
        }
    }

    /// The broker name to resolve, once per attempt; the daemon answers with
    /// `handle_resolved`.
    pub fn poll_resolve(&mut self) -> Option<&str> {
        if !std::mem::take(&mut self.resolve_wanted) {
            return None;
        }
        Some(self.broker())
    }

    /// The outcome of a resolution `poll_resolve` asked for.
    pub fn handle_resolved<S: Storage>(
        &mut self,
        registry: &Registry,
        spool: &mut Spool<S>,
        result: Result<Vec<SocketAddr>, String>,
        now: Instant,
    ) {
        if !matches!(self.phase, Phase::Resolving { .. }) {
            return;
        }
        match result {
            Ok(addrs) if !addrs.is_empty() => self.connect_to(&addrs, registry, spool, now),
            Ok(_) => {
                let why = Reason::Resolve("no address".into()).into();
                self.fail(registry, spool, why, now)
            }
            Err(e) => self.fail(registry, spool, Reason::Resolve(e).into(), now),
        }
    }

    fn connect_to<S: Storage>(
        &mut self,
        addrs: &[SocketAddr],
        registry: &Registry,
        spool: &mut Spool<S>,
        now: Instant,
    ) {
        // Each attempt takes the next address, so an unreachable first address (an
        // IPv6 one on an IPv4-only uplink) does not block the others.
        let addr = addrs[self.addr_next % addrs.len()];
        self.addr_next = self.addr_next.wrapping_add(1);
        let login = match login(&self.cfg) {
            Ok(l) => l,
            Err(e) => return self.fail(registry, spool, e, now),
        };
        self.session.set_login(login);
        match TcpStream::connect(addr) {
            Ok(mut s) => {
                if let Err(e) =
                    registry.register(&mut s, self.token, Interest::READABLE | Interest::WRITABLE)
                {
                    return self.fail(registry, spool, Reason::Register(e).into(), now);
                }
                // Publishes and PUBACKs are small: no Nagle delay on them.
                let _ = s.set_nodelay(true);
                log::debug!("mqtt: connecting to {addr}");
                let t = match crate::mqtt::transport::wrap(&self.cfg, self.broker(), s) {
                    Ok(t) => t,
                    Err(e) => return self.fail(registry, spool, e, now),
                };
                self.sock = Some(t);
                self.phase = Phase::Connecting { since: now };
            }
            Err(e) => self.fail(registry, spool, Reason::ConnectTo(addr, e).into(), now),
        }
    }

    /// Socket readiness.
    pub fn handle_event<S: Storage>(
        &mut self,
        registry: &Registry,
        spool: &mut Spool<S>,
        readable: bool,
        now: Instant,
    ) {
        if let Phase::Connecting { .. } = self.phase {
            let Some(s) = self.sock.as_mut().map(Transport::tcp) else {
                return;
            };
            match s.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    return self.fail(registry, spool, Reason::Connect(e).into(), now);
                }
            }
            match s.peer_addr() {
                Ok(_) => {
                    self.phase = Phase::Up;
                    if let Err(e) = self.session.start(now) {
                        return self.fail(registry, spool, e.into(), now);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.fail(registry, spool, Reason::Connect(e).into(), now),
            }
        }
        if self.phase == Phase::Up
            && readable
            && let Err(why) = self.read_input(spool, now)
        {
            return self.fail(registry, spool, why, now);
        }
        self.pump(registry, spool, now);
    }

    /// Reads what the broker sent, at most `READ_BUDGET_BYTES` per call (the rest
    /// on the next turn, see `has_pending_input`), handing each chunk to the
    /// session at once: a partial packet is the most `rbuf` ever holds, and a
    /// PUBLISH over the limit is skipped as it arrives, never buffered.
    fn read_input<S: Storage>(&mut self, spool: &mut Spool<S>, now: Instant) -> Result<(), Error> {
        if self.paused {
            // The collector is backlogged: the broker keeps the rest; reading
            // goes on when it is unpaused.
            return Ok(());
        }
        let mut buf = [0u8; 4096];
        let mut budget = READ_BUDGET_BYTES;
        self.pending_input = false;
        let mut ups = Vec::new();
        loop {
            let Some(s) = self.sock.as_mut() else {
                return Ok(());
            };
            if budget == 0 {
                self.pending_input = true;
                return Ok(());
            }
            match s.read(&mut buf[..budget.min(4096)]) {
                Ok(0) => return Err(self.closed_by_broker(now)),
                Ok(n) => {
                    budget -= n;
                    self.rbuf.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Reason::Read(e).into()),
            }
            let r = self.session.handle_input(&mut self.rbuf, now, &mut ups);
            for up in ups.drain(..) {
                self.handle_up(up, spool, now)?;
            }
            r?;
        }
    }

    /// Why the connection ended when the broker closed it: after
    /// `TAKEOVER_CLOSES` closes in a row each within `TAKEOVER_WINDOW` of
    /// connecting, that another client with this client_id is probably
    /// connected (two crds with one `node`, or one `client_id`, take the
    /// session from each other in turn, and neither gets its messages).
    fn closed_by_broker(&mut self, now: Instant) -> Error {
        let quick = self.last_connect.is_some_and(|t| now < t + TAKEOVER_WINDOW);
        self.quick_closes = if quick { self.quick_closes + 1 } else { 0 };
        if self.quick_closes >= TAKEOVER_CLOSES {
            Reason::TakenOver(
                self.quick_closes,
                TAKEOVER_WINDOW.as_secs(),
                self.client_id.clone(),
            )
            .into()
        } else {
            Reason::Closed.into()
        }
    }

    fn handle_up<S: Storage>(
        &mut self,
        up: Up,
        spool: &mut Spool<S>,
        now: Instant,
    ) -> Result<(), Error> {
        match up {
            Up::Connected { session_present } => {
                self.acked_seq = spool.acked();
                self.diag.handle_backlog(spool.depth());
                self.connected(session_present, now)?;
            }
            Up::Acked(Some(seq)) => {
                self.acked += 1;
                if let Err(e) = spool.ack(seq, now) {
                    log::warn!("spool: ack of {seq}: {e}");
                }
            }
            Up::Acked(None) => {}
            Up::Subscribed { refused } => {
                // Without `homeassistant` the sweep of this node's configs is
                // a courtesy: a broker that refuses it says nothing worth an
                // error.
                let quiet = |f: &String| {
                    (!self.cfg.homeassistant && *f == self.own_configs)
                        || self.old_configs.as_ref() == Some(f)
                };
                self.refused_filters = refused
                    .iter()
                    .filter_map(|&i| self.sub_sent.get(i).filter(|f| !quiet(f)).cloned())
                    .collect();
                self.join_groups(now)?;
                if self.refused_filters.is_empty() {
                    if !self.filters.is_empty() {
                        log::info!("mqtt: subscribed to {}", self.filters.join(" "));
                    }
                } else {
                    // Not a reason to drop the connection (events still go out),
                    // but nothing arrives on these: say so loudly.
                    log::error!(
                        "mqtt: the broker refused the subscription to {} (an ACL?); \
                         modules on it receive nothing",
                        self.refused_filters.join(" ")
                    );
                }
            }
            Up::Message(m)
                if self.cfg.homeassistant && m.topic == self.cfg.homeassistant_status_topic =>
            {
                // Home Assistant (re)started: it asks for discovery again.
                if let Some(p) = m.pkid {
                    self.session.puback(p, now)?;
                }
                if &m.payload[..] == b"online" {
                    log::info!("mqtt: Home Assistant is online: announcing the modules again");
                    self.announce(now)?;
                }
                self.write_out()?;
            }
            Up::Message(m) if self.swept(&m.topic) => {
                if let Some(p) = m.pkid {
                    self.session.puback(p, now)?;
                }
                self.sweep(&m.topic, &m.payload, now)?;
                self.write_out()?;
            }
            up @ (Up::Message(_) | Up::Oversized { .. }) => {
                self.inbound.push((self.connects, up));
            }
        }
        Ok(())
    }

    /// CONNACK: the status, the retained states, the subscription; `kept`:
    /// the broker kept the session.
    fn connected(&mut self, kept: bool, now: Instant) -> Result<(), Error> {
        self.connects += 1;
        self.last_connect = Some(now);
        self.backoff = BACKOFF_MIN;
        self.last_error.clear();
        log::info!("mqtt: connected to {}", self.broker());
        if kept && !self.groups.is_empty() {
            // The broker kept the subscriptions: what it routes now reaches
            // this crd already, so it is a member from here (a status without
            // groups would be a leave and a join in every member's order, for
            // nothing).
            self.join_groups(now)?;
        } else {
            let topic = self.status_topic();
            let p = self.status_payload("online");
            self.session.publish(&topic, &p, true, false, None, now)?;
        }
        if !self.groups.is_empty() {
            // The collector's groups read statuses by it (`group.rs`).
            let up = Up::Connected {
                session_present: kept,
            };
            self.inbound.push((self.connects, up));
        }
        // The present, for whoever subscribes late.
        self.announce(now)?;
        let mut filters = self.filters.clone();
        if self.cfg.homeassistant {
            // HA's birth.
            filters.push(self.cfg.homeassistant_status_topic.clone());
        }
        // This node's own discovery configs, with `homeassistant` or not:
        // what is retained there is compared with what crd announces
        // (`sweep`), nothing once discovery is off.
        filters.push(self.own_configs.clone());
        filters.extend(self.old_configs.clone());
        self.session.subscribe(&filters, now)?;
        self.sub_sent = filters;
        Ok(())
    }

    /// Subscribed: what the broker routes from here on reaches this crd, so
    /// its status names its collector groups now (`collect::group`), not at
    /// the connect.
    fn join_groups(&mut self, now: Instant) -> Result<(), Error> {
        if self.groups.is_empty() {
            return Ok(());
        }
        let p = self.status_of("online", &self.groups);
        self.session
            .publish(&self.status_topic(), &p, true, false, None, now)?;
        Ok(())
    }

    /// Publishes the node's and every module's discovery configs (with
    /// `homeassistant`), then every state and the diagnostics, retained.
    fn announce(&mut self, now: Instant) -> Result<(), Error> {
        let ha = self.cfg.homeassistant;
        if ha {
            let (prefix, node) = (&self.cfg.topic_prefix, &self.node);
            let (hp, url) = (
                &self.cfg.homeassistant_prefix,
                self.cfg.homeassistant_support_url.as_deref(),
            );
            for &e in &wire::HA_NODE_ENTITIES {
                let c = match e {
                    HaEntity::Connectivity => wire::ha_connectivity_json(prefix, node, url),
                    e => wire::ha_diag_json(prefix, node, e, url),
                };
                let t = wire::ha_config_topic(hp, node, e);
                self.session.publish(&t, &c, true, false, None, now)?;
            }
            let modules = std::mem::take(&mut self.modules);
            let r = modules
                .iter()
                .try_for_each(|(m, c)| self.publish_config(m, c, now));
            self.modules = modules;
            r?;
        }
        let (prefix, node) = (&self.cfg.topic_prefix, &self.node);
        for (module, p) in &self.states {
            let topic = wire::state_topic(prefix, node, module);
            self.session.publish(&topic, p, true, false, None, now)?;
        }
        if ha {
            // At each connect and HA's birth, whatever the rate bound.
            self.diag.handle_connected();
            self.publish_diag(now)?;
        }
        Ok(())
    }

    /// The diagnostics topic, retained, if `Diag` says it is due.
    fn publish_diag(&mut self, now: Instant) -> Result<(), Error> {
        if !self.diag.poll_publish(now) {
            return Ok(());
        }
        let topic = wire::diag_topic(&self.cfg.topic_prefix, &self.node);
        let p = self.diag.payload();
        Ok(self.session.publish(&topic, &p, true, false, None, now)?)
    }

    /// The spool's backlog and the last error spooled now (with
    /// `homeassistant`): the diagnostics topic says them at each connect,
    /// then when they changed, at most once per `diag::DIAG_INTERVAL`. Not
    /// spooled: only the present matters, and a connect publishes it again.
    pub fn set_diag(&mut self, backlog: u64, last: &LastError, now: Instant) {
        if !self.cfg.homeassistant {
            return;
        }
        self.diag.handle_backlog(backlog);
        if last.count > 0 {
            self.diag.handle_error(last.count, &last.text, last.ms);
        }
        if self.phase != Phase::Up || self.stopping || !self.session.is_connected() {
            return;
        }
        match self.publish_diag(now).and_then(|()| self.write_out()) {
            Ok(()) => {}
            Err(e) => log::debug!("mqtt: publishing the diagnostics: {e}"),
        }
    }

    /// Module `module`'s state is now `payload` (`wire::state_json`): retained on
    /// the broker now if connected, and after every connect. Not spooled: only
    /// the latest state matters, and a connect publishes it again.
    pub fn set_state(&mut self, module: &str, payload: Vec<u8>, now: Instant) {
        if self.session.is_connected() {
            let topic = wire::state_topic(&self.cfg.topic_prefix, &self.node, module);
            match self
                .session
                .publish(&topic, &payload, true, false, None, now)
            {
                Ok(()) => {
                    if let Err(e) = self.write_out() {
                        log::debug!("mqtt: writing a state: {e}");
                    }
                }
                Err(e) => log::warn!("mqtt: state of {module}: {e}"),
            }
        }
        match self.state_index(module) {
            Ok(i) => self.states[i].1 = payload,
            Err(i) => self.states.insert(i, (module.to_string(), payload)),
        }
    }

    /// Where `module` is in `states`, or where it would go.
    fn state_index(&self, module: &str) -> Result<usize, usize> {
        self.states
            .binary_search_by(|(m, _)| m.as_str().cmp(module))
    }

    /// Publishes `payload` on `topic` at QoS 1 now, outside the spool (a relayed
    /// command: its sender retries until answered); `false` when not connected
    /// or the session refused it.
    pub fn publish_now(&mut self, topic: &str, payload: &[u8], now: Instant) -> bool {
        // `Phase::Up` includes waiting for the CONNACK: nothing goes out
        // before it (a broker that refuses the connection would lose it).
        if self.phase != Phase::Up || self.stopping || !self.session.is_connected() {
            return false;
        }
        if let Err(e) = self
            .session
            .publish(topic, payload, false, false, None, now)
        {
            log::warn!("mqtt: publishing to {topic}: {e}");
            return false;
        }
        if let Err(e) = self.write_out() {
            log::debug!("mqtt: writing to {topic}: {e}");
        }
        true
    }

    pub fn has_state(&self, module: &str) -> bool {
        self.state_index(module).is_ok()
    }

    /// The scheduled modules (sorted), with their `device_class`, that crd
    /// announces from now on. One gone from the list loses its state and, if
    /// connected, is cleared from the broker (empty retained messages): its
    /// discovery config first (with `homeassistant`), so HA removes the
    /// entity before the state topic it reads goes empty, then its state. A
    /// new one's config is published, and one whose class changed.
    pub fn set_modules(&mut self, modules: &[(&str, &'static str)], now: Instant) {
        let known = |m: &String| modules.binary_search_by(|(n, _)| (*n).cmp(m)).is_ok();
        self.states.retain(|(m, _)| known(m));
        let (ha, up) = (self.cfg.homeassistant, self.session.is_connected());
        for (module, _) in self.modules.iter().filter(|(m, _)| !known(m)) {
            let mut topics = Vec::with_capacity(3);
            if ha {
                let p = &self.cfg.homeassistant_prefix;
                for e in [HaEntity::State(module), HaEntity::Events(module)] {
                    topics.push(wire::ha_config_topic(p, &self.node, e));
                }
            }
            topics.push(wire::state_topic(
                &self.cfg.topic_prefix,
                &self.node,
                module,
            ));
            for topic in topics.iter().filter(|_| up) {
                if let Err(e) = self.session.publish(topic, b"", true, false, None, now) {
                    log::warn!("mqtt: clearing {topic}: {e}");
                }
            }
        }
        let old = std::mem::replace(
            &mut self.modules,
            modules.iter().map(|&(m, c)| (m.to_string(), c)).collect(),
        );
        for &(module, class) in modules
            .iter()
            .filter(|(m, c)| ha && up && !old.iter().any(|(o, oc)| o == m && oc == c))
        {
            if let Err(e) = self.publish_config(module, class, now) {
                log::warn!("mqtt: discovery config of {module}: {e}");
            }
        }
        if let Err(e) = self.write_out() {
            log::debug!("mqtt: writing a state: {e}");
        }
    }

    /// Module `module`'s discovery configs (its state and its events),
    /// retained.
    fn publish_config(&mut self, module: &str, class: &str, now: Instant) -> Result<(), Error> {
        let (prefix, node, ha) = (
            &self.cfg.topic_prefix,
            &self.node,
            &self.cfg.homeassistant_prefix,
        );
        let url = self.cfg.homeassistant_support_url.as_deref();
        let t = wire::ha_config_topic(ha, node, HaEntity::State(module));
        let c = wire::ha_config_json(prefix, node, module, class, url);
        self.session.publish(&t, &c, true, false, None, now)?;
        let t = wire::ha_config_topic(ha, node, HaEntity::Events(module));
        let c = wire::ha_events_json(prefix, node, module, url);
        Ok(self.session.publish(&t, &c, true, false, None, now)?)
    }

    /// Whether `topic` is a discovery config this crd announces now (none
    /// without `homeassistant`).
    fn announces(&self, topic: &str) -> bool {
        let (p, node) = (&self.cfg.homeassistant_prefix, &self.node);
        self.cfg.homeassistant
            && (self.node_entity(topic).is_some()
                || self.modules.iter().any(|(m, _)| {
                    [HaEntity::State(m), HaEntity::Events(m)]
                        .into_iter()
                        .any(|e| wire::ha_config_topic(p, node, e) == topic)
                }))
    }

    /// Whether `topic` is a discovery config of this node's, under its name
    /// or the one it had before.
    fn swept(&self, t: &str) -> bool {
        topic::matches(&self.own_configs, t)
            || self
                .old_configs
                .as_ref()
                .is_some_and(|f| topic::matches(f, t))
    }

    /// This node was called `old` before (Home Assistant's entities of that
    /// name are its own): every discovery config under `old`'s node id is
    /// emptied at each connect, as crd announces none there.
    pub fn renamed_from(&mut self, old: &str) {
        if old != self.node {
            self.old_configs = Some(wire::ha_own_configs(&self.cfg.homeassistant_prefix, old));
        }
    }

    /// The node's own entity (not a module's) whose discovery config is at
    /// `topic`, if any.
    fn node_entity(&self, topic: &str) -> Option<HaEntity<'static>> {
        let (p, node) = (&self.cfg.homeassistant_prefix, &self.node);
        wire::HA_NODE_ENTITIES
            .iter()
            .copied()
            .find(|&e| wire::ha_config_topic(p, node, e) == topic)
    }

    /// A discovery config found under this node's id (retained from before
    /// the connect, or published since by another client): one crd does not
    /// announce (a module removed or renamed while crd is down, every one
    /// once `homeassistant` is off) is emptied, so HA removes the entity and
    /// the broker forgets it. A diagnostic sensor's config emptied, the
    /// diagnostics topic it read is emptied after it.
    fn sweep(&mut self, topic: &str, payload: &[u8], now: Instant) -> Result<(), Error> {
        if payload.is_empty() || self.announces(topic) {
            return Ok(());
        }
        log::info!("mqtt: clearing {topic}: this crd does not announce it");
        self.session.publish(topic, b"", true, false, None, now)?;
        if matches!(
            self.node_entity(topic),
            Some(HaEntity::Backlog | HaEntity::LastError)
        ) {
            let diag = wire::diag_topic(&self.cfg.topic_prefix, &self.node);
            self.session.publish(&diag, b"", true, false, None, now)?;
        }
        Ok(())
    }

    /// Sets the filters to subscribe to at each connect (at QoS 1, with a
    /// persistent session so the broker queues messages while crd is away), and
    /// the largest message payload taken whole.
    /// While connected, new filters are subscribed to at once.
    pub fn subscribe_to(&mut self, filters: Vec<String>, max_message: u32, now: Instant) {
        self.session
            .set_subscriber(max_message as usize + crate::mqtt::session::TOPIC_ALLOWANCE);
        let new: Vec<String> = filters
            .iter()
            .filter(|f| !self.filters.contains(f))
            .cloned()
            .collect();
        self.filters = filters;
        if !new.is_empty() && self.session.is_connected() {
            if let Err(e) = self.session.subscribe(&new, now) {
                log::error!("mqtt: cannot subscribe to {}: {e}", new.join(" "));
                return;
            }
            self.sub_sent = new;
            if let Err(e) = self.write_out() {
                log::debug!("mqtt: writing SUBSCRIBE: {e}");
            }
        }
    }

    /// The collector groups this crd is a member of (`subscribe_group`): named
    /// in its status after each subscription (none: the status names none),
    /// with `"joining":true` while it is `joining` them.
    pub fn set_groups(&mut self, groups: Vec<String>, joining: bool) {
        self.groups = groups;
        self.joining = joining;
    }

    /// This collector stopped joining its groups: its status says so now.
    pub fn settled(&mut self, now: Instant) {
        self.joining = false;
        if self.phase != Phase::Up || self.stopping || !self.session.is_connected() {
            return; // The next connect's (or subscription's) status says it.
        }
        if let Err(e) = self.join_groups(now).and_then(|()| self.write_out()) {
            log::warn!("mqtt: publishing the status: {e}");
        }
    }

    /// Messages (and oversized ones) received since the last call, each with the
    /// connection it came on (`puback` needs it).
    pub fn take_inbound(&mut self) -> Vec<(u64, Up)> {
        std::mem::take(&mut self.inbound)
    }

    /// Gives back the (emptied) list `take_inbound` gave: its allocation is
    /// reused for the next read's messages, not grown again from nothing (up to
    /// `INBOUND_KEPT` entries; a larger one, after a burst of small messages,
    /// is freed).
    pub fn give_back_inbound(&mut self, mut list: Vec<(u64, Up)>) {
        if self.inbound.is_empty() && list.capacity() <= INBOUND_KEPT {
            list.clear();
            self.inbound = list;
        }
    }

    /// Queues the PUBACK of inbound PUBLISH `pkid` of connection `conn`; nothing
    /// if that connection is gone (the broker sends the message again on the next
    /// one). `flush_acks` writes them: one write for a whole read's PUBACKs.
    pub fn puback(&mut self, conn: u64, pkid: u16, now: Instant) {
        if conn != self.connects || !self.session.is_connected() {
            return;
        }
        let _ = self.session.puback(pkid, now);
    }

    /// Writes the PUBACKs `puback` queued.
    pub fn flush_acks(&mut self) {
        if self.sock.is_some()
            && let Err(e) = self.write_out()
        {
            log::debug!("mqtt: writing PUBACK: {e}");
        }
    }

    /// Bytes from the broker were left unread past the read budget: the loop must
    /// turn again without sleeping.
    pub fn has_pending_input(&self) -> bool {
        self.pending_input && !self.paused
    }

    /// Stops (or resumes) reading the socket: backpressure from the collector.
    /// Keepalive still flows (the broker's PINGRESP waits in the socket, so a
    /// long pause ends in a reconnect, which loses nothing).
    pub fn set_paused(&mut self, paused: bool) {
        if self.paused && !paused {
            // Edge-triggered: what came meanwhile raises no new event.
            self.pending_input = true;
        }
        self.paused = paused;
    }

    /// Ends the connection cleanly (DISCONNECT: the broker keeps the session and
    /// publishes no will) and connects again at once, so the broker sends again
    /// what it delivered and was never acknowledged: the collector's journal
    /// refused it (`Collector::wants_redelivery`). What this crd had in flight is
    /// sent again from the spool, as after any reconnect.
    pub fn redeliver<S: Storage>(
        &mut self,
        registry: &Registry,
        spool: &mut Spool<S>,
        now: Instant,
    ) {
        if self.phase != Phase::Up || self.stopping {
            return;
        }
        if self.session.is_connected() {
            self.session.disconnect(now);
            let _ = self.write_out();
        }
        self.drop_connection(registry, spool);
        log::info!("mqtt: reconnecting so the broker sends again what the journal refused");
        self.connect(registry, spool, now);
    }

    /// Closes the socket and forgets the connection's state; what was in flight
    /// is sent again from the spool on the next one.
    fn drop_connection<S: Storage>(&mut self, registry: &Registry, spool: &mut Spool<S>) {
        if let Some(mut s) = self.sock.take() {
            let _ = registry.deregister(s.tcp());
        }
        self.session.reset();
        self.rbuf.clear();
        spool.rewind();
    }

    /// Moves records from the spool into the window, then writes what is queued.
    fn pump<S: Storage>(&mut self, registry: &Registry, spool: &mut Spool<S>, now: Instant) {
        if self.phase != Phase::Up {
            return;
        }
        while !self.stopping
            && self.session.window_open()
            && self.session.output().len() < OUT_LIMIT_BYTES
        {
            // The record before a new one: the last one sent, or at the first
            // of this run the watermark. A new record further on follows a
            // jump the spool made (records dropped, a lease after an unclean
            // stop, a corrupt one skipped): it says so (`"prev"`), and a
            // collector takes the seqs between as never sent, not as lost.
            let before = match self.max_sent_seq {
                0 => spool.acked(),
                s => s,
            };
            let seq = match spool.read_next() {
                Ok(Some((seq, payload))) => match event::decode_ref(payload) {
                    Ok(ev) => {
                        wire::render_into(
                            &self.cfg.topic_prefix,
                            &self.node,
                            &self.stream_hex,
                            (seq, (seq > before + 1).then_some(before)),
                            &ev,
                            &mut self.topic_buf,
                            &mut self.json_buf,
                        );
                        seq
                    }
                    Err(e) => {
                        // Not an event this crd can read: never deliverable.
                        log::warn!("spool record {seq}: {e}; not forwarded");
                        let _ = spool.ack(seq, now);
                        continue;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    log::warn!("spool: {e}");
                    break;
                }
            };
            let dup = seq <= self.max_sent_seq;
            let r =
                self.session
                    .publish(&self.topic_buf, &self.json_buf, false, dup, Some(seq), now);
            if let Err(e) = r {
                // A record the broker cannot take: never deliverable, skip it.
                log::warn!("spool record {seq}: {e}; not forwarded");
                let _ = spool.ack(seq, now);
                continue;
            }
            self.max_sent_seq = self.max_sent_seq.max(seq);
            self.published += 1;
        }
        if let Err(why) = self.write_out() {
            self.fail(registry, spool, why, now);
        }
    }

    fn write_out(&mut self) -> Result<(), Error> {
        let Some(s) = self.sock.as_mut() else {
            return Ok(());
        };
        s.flush().map_err(Reason::Write)?;
        let out = self.session.output();
        while !out.is_empty() {
            match s.write(out.pending()) {
                Ok(0) => return Err(Reason::WriteClosed.into()),
                Ok(n) => out.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Reason::Write(e).into()),
            }
        }
        Ok(())
    }

    /// Deadlines: reconnect, connect timeout, keepalive; then publishes what the
    /// spool has (records become readable when they are synced).
    pub fn handle_timer<S: Storage>(
        &mut self,
        registry: &Registry,
        spool: &mut Spool<S>,
        now: Instant,
    ) {
        match self.phase {
            Phase::Off => return,
            Phase::Backoff { until } if now >= until && !self.stopping => {
                self.connect(registry, spool, now)
            }
            Phase::Resolving { since } if now >= since + RESOLVE_WAIT_LIMIT => {
                return self.fail(registry, spool, Reason::NoAddressInTime.into(), now);
            }
            Phase::Connecting { since } if now >= since + CONNECT_TIMEOUT => {
                let why = Reason::ConnectTimeout(CONNECT_TIMEOUT.as_secs()).into();
                return self.fail(registry, spool, why, now);
            }
            Phase::Up => {
                if let Err(e) = self.session.handle_timer(now) {
                    let why = match e {
                        SessionError::Silent => Reason::Silent(self.cfg.keepalive.as_secs()).into(),
                        e => e.into(),
                    };
                    return self.fail(registry, spool, why, now);
                }
            }
            _ => {}
        }
        self.pump(registry, spool, now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Off => None,
            Phase::Backoff { until } => (!self.stopping).then_some(until),
            Phase::Resolving { since } => Some(since + RESOLVE_WAIT_LIMIT),
            Phase::Connecting { since } => Some(since + CONNECT_TIMEOUT),
            Phase::Up => {
                let t = self.session.poll_timeout();
                let diag = self.cfg.homeassistant && !self.stopping && self.session.is_connected();
                match self.diag.poll_timeout().filter(|_| diag) {
                    Some(d) => Some(t.map_or(d, |t| t.min(d))),
                    None => t,
                }
            }
        }
    }

    /// Clean shutdown, first step: stop reading the spool, publish `offline`.
    pub fn begin_stop<S: Storage>(
        &mut self,
        registry: &Registry,
        spool: &mut Spool<S>,
        now: Instant,
    ) {
        self.stopping = true;
        if self.session.is_connected() {
            self.acked_seq = spool.acked();
            let topic = self.status_topic();
            let p = self.status_payload("offline");
            if self
                .session
                .publish(&topic, &p, true, false, None, now)
                .is_ok()
            {
                self.pump(registry, spool, now);
            }
        }
    }

    /// Clean shutdown, last step: true once nothing is in flight (then DISCONNECT
    /// is sent and the socket closed) or there is no session.
    pub fn try_finish(&mut self, registry: &Registry) -> bool {
        if self.phase == Phase::Up && self.session.is_connected() {
            if self.session.inflight() > 0 {
                return false;
            }
            self.session.disconnect(Instant::now());
            let _ = self.write_out();
            log::info!("mqtt: disconnected");
        }
        if let Some(mut s) = self.sock.take() {
            let _ = registry.deregister(s.tcp());
        }
        self.phase = Phase::Off;
        true
    }

    pub fn inflight(&self) -> usize {
        self.session.inflight()
    }

    /// The `mqtt_*` figures of `crd status`.
    pub fn status(&self, s: &mut Status, now: Instant) {
        let state = match self.phase {
            Phase::Off if self.cfg.broker.is_empty() => "off (no broker configured)",
            Phase::Off => "stopped",
            Phase::Backoff { .. } => "waiting to reconnect",
            Phase::Resolving { .. } => "resolving",
            Phase::Connecting { .. } => "connecting",
            Phase::Up if self.session.is_connected() => "connected",
            Phase::Up => "awaiting CONNACK",
        };
        s.text("mqtt_broker", self.broker());
        s.num("mqtt_brokers", self.cfg.brokers().count() as u64);
        s.count("mqtt_failovers", self.failovers);
        s.text("mqtt_state", state);
        s.put(
            "mqtt_last_connect",
            Value::Ago(
                self.last_connect
                    .map(|t| now.saturating_duration_since(t).as_secs()),
            ),
        );
        s.count("mqtt_connects", self.connects);
        s.num("mqtt_inflight", self.session.inflight() as u64);
        s.count("mqtt_published", self.published);
        s.count("mqtt_acked", self.acked);
        let some = |t: String| Value::Opt((!t.is_empty()).then_some(t));
        s.put("mqtt_last_error", some(self.last_error.clone()));
        s.put("mqtt_subscribed", some(self.filters.join(" ")));
        s.put(
            "mqtt_subscribe_refused",
            some(self.refused_filters.join(" ")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::diag::DIAG_INTERVAL;

    #[test]
    fn broker_addresses() {
        assert_eq!(
            resolve("127.0.0.1:1884").unwrap(),
            vec!["127.0.0.1:1884".parse().unwrap()]
        );
        assert_eq!(
            resolve("127.0.0.1").unwrap(),
            vec!["127.0.0.1:1883".parse().unwrap()]
        );
        assert_eq!(
            resolve("[::1]:1884").unwrap(),
            vec!["[::1]:1884".parse().unwrap()]
        );
        assert_eq!(resolve("::1").unwrap(), vec!["[::1]:1883".parse().unwrap()]);
        assert!(
            resolve("localhost:1885")
                .unwrap()
                .iter()
                .all(|a| a.port() == 1885)
        );
    }

    use crate::spool::storage::MemStorage;

    /// An empty spool in memory, for the forwarder to read from.
    fn mem_spool() -> Spool<MemStorage> {
        let storage = MemStorage::new();
        let cfg = crate::spool::SpoolConfig::default();
        Spool::open(storage, cfg, || 1, false).unwrap().0
    }

    /// A broker name is resolved by the daemon (in a child, so a resolver that
    /// does not answer never holds the loop), not here: the forwarder asks once per attempt and waits without blocking.
    #[test]
    fn a_broker_name_is_asked_of_the_daemon_not_resolved_in_the_loop() {
        let poll = mio::Poll::new().unwrap();
        let now = Instant::now();
        let mut spool = mem_spool();
        let cfg = MqttSettings {
            broker: "broker.example:1883".into(),
            ..MqttSettings::default()
        };
        let mut f = Forwarder::new(cfg, "r1", 1, Token(9), now);
        f.handle_timer(poll.registry(), &mut spool, now);
        assert!(matches!(f.phase, Phase::Resolving { .. }));
        assert_eq!(f.poll_resolve(), Some("broker.example:1883"));
        assert_eq!(f.poll_resolve(), None, "asked once per attempt");
        assert_eq!(f.poll_timeout(), Some(now + RESOLVE_WAIT_LIMIT));
        f.handle_resolved(poll.registry(), &mut spool, Err("no answer".into()), now);
        assert!(matches!(f.phase, Phase::Backoff { .. }));
        assert_eq!(f.last_error, "cannot resolve: no answer");
        // A literal address never asks.
        let cfg = MqttSettings {
            broker: "127.0.0.1:1".into(),
            ..MqttSettings::default()
        };
        let mut f = Forwarder::new(cfg, "r1", 1, Token(9), now);
        f.handle_timer(poll.registry(), &mut spool, now);
        assert_eq!(f.poll_resolve(), None);
        assert!(!matches!(f.phase, Phase::Resolving { .. }));
    }

    /// Connected by TCP but no CONNACK yet: a collector's progress or status
    /// is not published (it would go out before the broker accepted the
    /// connection; a debug build asserted).
    #[test]
    fn nothing_is_published_before_the_connack() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let poll = mio::Poll::new().unwrap();
        let now = Instant::now();
        let mut spool = mem_spool();
        let cfg = MqttSettings {
            broker: listener.local_addr().unwrap().to_string(),
            ..MqttSettings::default()
        };
        let mut f = Forwarder::new(cfg, "r1", 1, Token(9), now);
        f.set_groups(vec!["g".into()], false);
        f.handle_timer(poll.registry(), &mut spool, now);
        let mut poll = poll;
        let mut events = mio::Events::with_capacity(4);
        for _ in 0..50 {
            if matches!(f.phase, Phase::Up) {
                break;
            }
            poll.poll(&mut events, Some(Duration::from_millis(20)))
                .unwrap();
            f.handle_event(poll.registry(), &mut spool, false, now);
        }
        assert!(matches!(f.phase, Phase::Up), "{:?}", f.phase);
        assert!(!f.session.is_connected());
        assert!(!f.publish_now("crd/r1/progress", b"{}", now));
        f.settled(now);
        assert!(!f.session.is_connected());
    }

    /// A forwarder whose session took the broker's CONNACK, with no socket:
    /// what it would write stays in the session's output (`written`), empty
    /// at first.
    fn connected(cfg: MqttSettings, spool: &mut Spool<MemStorage>, now: Instant) -> Forwarder {
        let cfg = MqttSettings {
            broker: "127.0.0.1:1".into(),
            ..cfg
        };
        let mut f = Forwarder::new(cfg, "r1", 1, Token(9), now);
        f.phase = Phase::Up;
        f.session.start(now).unwrap();
        broker_says(&mut f, spool, &[0x20, 2, 0, 0], now);
        written(&mut f);
        f
    }

    /// `connected` with Home Assistant discovery on, its default prefix.
    fn ha_connected(spool: &mut Spool<MemStorage>, now: Instant) -> Forwarder {
        let cfg = MqttSettings {
            homeassistant: true,
            ..MqttSettings::default()
        };
        connected(cfg, spool, now)
    }

    /// The broker's bytes, through the session to the forwarder.
    fn broker_says(f: &mut Forwarder, spool: &mut Spool<MemStorage>, bytes: &[u8], now: Instant) {
        let (mut buf, mut ups) = (bytes.to_vec(), Vec::new());
        f.session.handle_input(&mut buf, now, &mut ups).unwrap();
        for up in ups {
            f.handle_up(up, spool, now).unwrap();
        }
    }

    /// The PUBLISHes (topic, payload) the forwarder wrote since the last call.
    fn written(f: &mut Forwarder) -> Vec<(String, Vec<u8>)> {
        let out = f.session.output();
        let bytes = out.pending().to_vec();
        out.consume(bytes.len());
        let (mut v, mut at) = (Vec::new(), 0);
        while at < bytes.len() {
            let (p, n) = crate::mqtt::codec::decode(&bytes[at..], usize::MAX)
                .unwrap()
                .expect("whole packets");
            at += n;
            if let crate::mqtt::codec::Packet::Publish { topic, payload, .. } = p {
                v.push((topic, payload));
            }
        }
        v
    }

    /// A PUBLISH from the broker at QoS 0 (3.3), retained or not.
    fn publish_packet(topic: &str, payload: &[u8], retain: bool) -> Vec<u8> {
        let mut len = [0u8; 4];
        let k = crate::mqtt::codec::remaining_length(2 + topic.len() + payload.len(), &mut len);
        let mut p = vec![0x30 | u8::from(retain)];
        p.extend_from_slice(&len[..k]);
        p.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        p.extend_from_slice(topic.as_bytes());
        p.extend_from_slice(payload);
        p
    }

    /// HA's birth message goes to `homeassistant_status_topic`
    /// (`homeassistant/status`), not under a custom discovery prefix: crd
    /// subscribes there and announces again on `online` there only.
    #[test]
    fn home_assistants_birth_is_heard_on_its_status_topic_whatever_the_prefix() {
        let now = Instant::now();
        let mut spool = mem_spool();
        let cfg = MqttSettings {
            homeassistant: true,
            homeassistant_prefix: "ha/x".into(),
            ..MqttSettings::default()
        };
        let mut f = connected(cfg, &mut spool, now);
        assert!(f.sub_sent.contains(&"homeassistant/status".to_string()));
        f.set_modules(&[("Disk", "problem")], now);
        f.set_state("Disk", wire::state_json(false, 1, None, None, ""), now);
        written(&mut f);
        broker_says(
            &mut f,
            &mut spool,
            &publish_packet("ha/x/status", b"online", false),
            now,
        );
        assert_eq!(written(&mut f), vec![], "not HA's birth");
        let birth = publish_packet("homeassistant/status", b"online", false);
        broker_says(&mut f, &mut spool, &birth, now);
        let w = written(&mut f);
        assert!(
            w.iter()
                .any(|(t, _)| t == "ha/x/binary_sensor/crd-r1/Disk/config"),
            "{w:?}"
        );
    }

    /// At each connect crd subscribes to its own node's discovery configs:
    /// one it does not announce (retained from before it started) is emptied;
    /// its own, and one already empty, are left as they are.
    #[test]
    fn configs_under_this_nodes_id_that_it_does_not_announce_are_cleared() {
        let now = Instant::now();
        let mut spool = mem_spool();
        let mut f = ha_connected(&mut spool, now);
        let own = "homeassistant/+/crd-r1/+/config".to_string();
        assert!(f.sub_sent.contains(&own), "{:?}", f.sub_sent);
        f.set_modules(&[("Disk", "problem")], now);
        written(&mut f);
        let gone = "homeassistant/binary_sensor/crd-r1/Gone/config";
        for (t, p) in [
            (gone, &b"{}"[..]),
            ("homeassistant/binary_sensor/crd-r1/Disk/config", b"{}"),
            ("homeassistant/sensor/crd-r1/crd-backlog/config", b"{}"),
            ("homeassistant/sensor/crd-r1/crd-last-error/config", b"{}"),
            ("homeassistant/binary_sensor/crd-r1/Old/config", b""),
        ] {
            broker_says(&mut f, &mut spool, &publish_packet(t, p, true), now);
        }
        assert_eq!(written(&mut f), vec![(gone.into(), vec![])]);
        assert!(f.inbound.is_empty(), "none for the collector");
    }

    /// A module's `device_class` changed (a reload): its config is published
    /// again with the new class; the others are not.
    #[test]
    fn a_changed_device_class_is_announced_again() {
        let now = Instant::now();
        let mut spool = mem_spool();
        let mut f = ha_connected(&mut spool, now);
        f.set_modules(&[("Disk", "problem"), ("Wan", "problem")], now);
        assert_eq!(
            written(&mut f).len(),
            4,
            "a state and an events entity each"
        );
        f.set_modules(&[("Disk", "problem"), ("Wan", "connectivity")], now);
        let w = written(&mut f);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].0, "homeassistant/binary_sensor/crd-r1/Wan/config");
        let c: serde_json::Value = serde_json::from_slice(&w[0].1).unwrap();
        assert_eq!(c["device_class"], "connectivity");
    }

    /// A module removed: its discovery config is emptied before its state, so
    /// HA removes the entity before the state topic it reads goes empty.
    #[test]
    fn a_removed_modules_config_is_cleared_before_its_state() {
        let now = Instant::now();
        let mut spool = mem_spool();
        let mut f = ha_connected(&mut spool, now);
        f.set_modules(&[("Disk", "problem"), ("Wan.Down", "connectivity")], now);
        for m in ["Disk", "Wan.Down"] {
            f.set_state(m, wire::state_json(true, 1, Some(0), Some(1), ""), now);
        }
        written(&mut f);
        f.set_modules(&[("Disk", "problem")], now);
        assert_eq!(
            written(&mut f),
            vec![
                (
                    "homeassistant/binary_sensor/crd-r1/Wan_2eDown/config".into(),
                    vec![]
                ),
                (
                    "homeassistant/event/crd-r1/Wan_2eDown/config".into(),
                    vec![]
                ),
                ("crd/r1/state/Wan.Down".into(), vec![]),
            ]
        );
    }

    /// An error event as the outbox keeps it: the `n`th, at unix ms `n`.
    fn nth_error(n: u64) -> LastError {
        LastError {
            text: format!("Disk: error {n}"),
            ms: n,
            count: n,
        }
    }

    /// With discovery on, the connect publishes the diagnostic sensors'
    /// configs, then the diagnostics (the spool's backlog then, the last
    /// error known), retained. Then, on a virtual clock, a backlog growing
    /// each second and a burst of a hundred errors go out once a minute at
    /// most, with the values of that moment; nothing while nothing changes.
    #[test]
    fn the_diagnostics_go_out_at_the_connect_then_at_most_once_a_minute() {
        let t0 = Instant::now();
        let mut spool = mem_spool();
        for _ in 0..3 {
            spool.append(b"x", t0).unwrap();
        }
        let cfg = MqttSettings {
            broker: "127.0.0.1:1".into(),
            homeassistant: true,
            ..MqttSettings::default()
        };
        let mut f = Forwarder::new(cfg, "r1", 1, Token(9), t0);
        f.set_diag(1, &nth_error(1), t0);
        assert!(written(&mut f).is_empty(), "not connected");
        f.phase = Phase::Up;
        f.session.start(t0).unwrap();
        broker_says(&mut f, &mut spool, &[0x20, 2, 0, 0], t0);
        let w = written(&mut f);
        let at = |t: &str| w.iter().position(|(x, _)| x == t);
        let diag = at("crd/r1/diag").expect("the diagnostics at the connect");
        for c in ["crd-backlog", "crd-last-error"] {
            let t = format!("homeassistant/sensor/crd-r1/{c}/config");
            assert!(at(&t).expect("its config") < diag, "{c}: config first");
        }
        let j: serde_json::Value = serde_json::from_slice(&w[diag].1).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"backlog":3,"last_error":"Disk: error 1","last_error_ms":1})
        );
        let mut sent = Vec::new();
        for s in 1..=150u64 {
            let now = t0 + Duration::from_secs(s);
            f.set_diag(3 + s, &nth_error(1 + s.min(100)), now);
            for (t, p) in written(&mut f) {
                assert_eq!(t, "crd/r1/diag");
                let j: serde_json::Value = serde_json::from_slice(&p).unwrap();
                assert_eq!(j["backlog"], 3 + s, "the backlog of that moment");
                sent.push((s, j["last_error"].as_str().unwrap().to_string()));
            }
            if let Some(due) = f.diag.poll_timeout() {
                assert!(due > now && due <= now + DIAG_INTERVAL);
                assert!(
                    f.poll_timeout().is_some_and(|t| t <= due),
                    "a wake-up for it"
                );
            }
        }
        assert_eq!(
            sent,
            vec![
                (60, "Disk: error 61".to_string()),
                (120, "Disk: error 101".to_string())
            ]
        );
        let later = t0 + Duration::from_secs(300);
        f.set_diag(153, &nth_error(101), later);
        assert_eq!(written(&mut f).len(), 1, "the last change, once");
        f.set_diag(153, &nth_error(101), later + DIAG_INTERVAL);
        assert!(written(&mut f).is_empty(), "nothing changed");
        assert_eq!(f.diag.poll_timeout(), None);
    }

    /// With discovery off, crd still subscribes to its own node's configs and
    /// empties every one it finds (left by a run with discovery on): a
    /// diagnostic sensor's config first, then the diagnostics topic it read.
    /// It publishes no diagnostics.
    #[test]
    fn with_discovery_off_every_config_of_this_node_is_cleared() {
        let now = Instant::now();
        let mut spool = mem_spool();
        let mut f = connected(MqttSettings::default(), &mut spool, now);
        let own = "homeassistant/+/crd-r1/+/config".to_string();
        assert_eq!(f.sub_sent, vec![own], "only this node's configs");
        f.set_modules(&[("Disk", "problem")], now);
        f.set_diag(5, &nth_error(1), now);
        assert!(written(&mut f).is_empty(), "no configs, no diagnostics");
        let configs = [
            "homeassistant/binary_sensor/crd-r1/Disk/config",
            "homeassistant/event/crd-r1/Disk/config",
            "homeassistant/binary_sensor/crd-r1/crd-status/config",
            "homeassistant/sensor/crd-r1/crd-backlog/config",
        ];
        for t in configs {
            broker_says(&mut f, &mut spool, &publish_packet(t, b"{}", true), now);
        }
        let mut want: Vec<(String, Vec<u8>)> =
            configs.iter().map(|t| (t.to_string(), vec![])).collect();
        want.push(("crd/r1/diag".into(), vec![]));
        assert_eq!(written(&mut f), want);
        assert!(f.inbound.is_empty(), "none for the collector");
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_bounded_jitter() {
        let now = Instant::now();
        let cfg = MqttSettings {
            broker: "127.0.0.1:1".into(),
            ..MqttSettings::default()
        };
        let mut f = Forwarder::new(cfg, "r1", 1, Token(9), now);
        let mut base = BACKOFF_MIN;
        for _ in 0..10 {
            let d = f.next_backoff();
            assert!(
                d >= base * 3 / 4 && d <= base * 5 / 4,
                "{d:?} around {base:?}"
            );
            base = (base * 2).min(BACKOFF_MAX);
        }
        assert_eq!(f.backoff, BACKOFF_MAX);
    }
}
