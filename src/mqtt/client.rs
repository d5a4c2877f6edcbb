//! A short-lived broker connection for a foreground command (`crd send`): the same
//! sans-IO session and the same transport (plain or TLS, login from
//! `password_file`) as the daemon's forwarder, driven by a small poll loop of its
//! own that waits for one thing at a time (CONNACK, SUBACK, a PUBACK, a message)
//! until a deadline. A clean session under its own client id: it never touches the
//! daemon's session, status topic or will.

use crate::core::config::MqttSettings;
use crate::mqtt::error::{Error, Reason};
use crate::mqtt::forward::{CONNECT_TIMEOUT, login, resolve};
use crate::mqtt::session::{Inbound, Session, SessionConfig, Up};
use crate::mqtt::transport::{self, Transport};
use mio::{Events, Interest, Poll, Token};
use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

const SOCK: Token = Token(0);
/// Bytes read per system call.
const READ_CHUNK: usize = 16 * 1024;

pub struct Client {
    poll: Poll,
    events: Events,
    sock: Transport,
    session: Session,
    input: Vec<u8>,
    ups: VecDeque<Up>,
}

impl Client {
    /// Resolves and connects to the first of `m.brokers()` that takes the
    /// connection, and waits for CONNACK, all before `until`.
    pub fn connect(m: &MqttSettings, client_id: String, until: Instant) -> Result<Client, Error> {
        if m.broker.is_empty() {
            return Err(Reason::NoBroker.into());
        }
        // The brokers of the list in order, each address of each: the first
        // that takes the connection.
        let mut last = None;
        let mut found = None;
        'brokers: for broker in m.brokers() {
            let addrs = match resolve(broker) {
                Ok(a) => a,
                Err(e) => {
                    last = Some(Reason::CannotResolve(broker.to_string(), e));
                    continue;
                }
            };
            for a in &addrs {
                let left = until.saturating_duration_since(Instant::now());
                match std::net::TcpStream::connect_timeout(a, left.min(CONNECT_TIMEOUT)) {
                    Ok(s) => {
                        found = Some((s, broker));
                        break 'brokers;
                    }
                    Err(e) => last = Some(Reason::ConnectTo(*a, e)),
                }
            }
        }
        let (s, broker) = found.ok_or_else(|| last.unwrap_or(Reason::NoBroker))?;
        s.set_nonblocking(true).map_err(Reason::Io)?;
        let _ = s.set_nodelay(true);
        let mut s = mio::net::TcpStream::from_std(s);
        let poll = Poll::new().map_err(Reason::Io)?;
        poll.registry()
            .register(&mut s, SOCK, Interest::READABLE | Interest::WRITABLE)
            .map_err(Reason::Io)?;
        let sock = transport::wrap(m, broker, s)?;
        let now = Instant::now();
        let mut session = Session::new(
            SessionConfig {
                client_id,
                keepalive: m.keepalive,
                max_inflight: 16,
                login: login(m)?,
                will: None,
                max_packet: 2 << 20,
                max_incoming: crate::mqtt::session::MAX_INCOMING_PACKET,
                clean_session: true,
            },
            now,
        );
        session.start(now)?;
        let mut c = Client {
            poll,
            events: Events::with_capacity(4),
            sock,
            session,
            input: Vec::new(),
            ups: VecDeque::new(),
        };
        match c.wait(until, |u| matches!(u, Up::Connected { .. })) {
            Ok(Some(_)) => Ok(c),
            Ok(None) => Err(Reason::At(broker.to_string(), Reason::NoConnAck.into()).into()),
            Err(e) => Err(Reason::At(broker.to_string(), e).into()),
        }
    }

    /// Writes what the session queued, as far as the socket takes it.
    fn write_out(&mut self) -> io::Result<()> {
        while !self.session.output().is_empty() {
            match self.sock.write(self.session.output().pending()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.session.output().consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        self.sock.flush().or_else(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                Ok(())
            } else {
                Err(e)
            }
        })
    }

    /// One turn: write, wait for the socket (at most until `until` or a session
    /// timer), read what is there into `ups`.
    fn turn(&mut self, until: Instant) -> Result<(), Error> {
        self.write_out().map_err(Reason::Write)?;
        let now = Instant::now();
        let mut t = until;
        if let Some(s) = self.session.poll_timeout() {
            t = t.min(s);
        }
        let timeout = t
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        self.poll
            .poll(&mut self.events, Some(timeout))
            .map_err(Reason::Io)?;
        let mut buf = [0u8; READ_CHUNK];
        loop {
            match self.sock.read(&mut buf) {
                Ok(0) => return Err(Reason::ClosedByBroker.into()),
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Reason::Read(e).into()),
            }
        }
        let now = Instant::now();
        let mut ups = Vec::new();
        self.session.handle_input(&mut self.input, now, &mut ups)?;
        self.session.handle_timer(now)?;
        self.ups.extend(ups);
        Ok(())
    }

    /// Turns until an `Up` that `want` accepts arrives (messages that arrive
    /// meanwhile are kept for `next_message`); `None` at `until`.
    fn wait(&mut self, until: Instant, want: impl Fn(&Up) -> bool) -> Result<Option<Up>, Error> {
        loop {
            if let Some(i) = self.ups.iter().position(&want) {
                return Ok(self.ups.remove(i));
            }
            if Instant::now() >= until {
                return Ok(None);
            }
            self.turn(until)?;
        }
    }

    /// Subscribes to `filter` at QoS 1 and waits for the SUBACK.
    pub fn subscribe(&mut self, filter: &str, until: Instant) -> Result<(), Error> {
        self.session
            .subscribe(&[filter.to_string()], Instant::now())?;
        match self.wait(until, |u| matches!(u, Up::Subscribed { .. }))? {
            Some(Up::Subscribed { refused }) if refused.is_empty() => Ok(()),
            Some(_) => Err(Reason::SubscriptionRefused(filter.into()).into()),
            None => Err(Reason::NoSubAck(filter.into()).into()),
        }
    }

    /// Publishes at QoS 1 and waits for the broker's PUBACK.
    pub fn publish(&mut self, topic: &str, payload: &[u8], until: Instant) -> Result<(), Error> {
        self.session
            .publish(topic, payload, false, false, Some(1), Instant::now())?;
        match self.wait(until, |u| matches!(u, Up::Acked(Some(1))))? {
            Some(_) => Ok(()),
            None => Err(Reason::NoPubAck(topic.into()).into()),
        }
    }

    /// The next message from the broker (acknowledged), or `None` at `until`.
    pub fn next_message(&mut self, until: Instant) -> Result<Option<Inbound>, Error> {
        match self.wait(until, |u| matches!(u, Up::Message(_)))? {
            Some(Up::Message(m)) => {
                if let Some(p) = m.pkid {
                    let _ = self.session.puback(p, Instant::now());
                }
                Ok(Some(m))
            }
            _ => Ok(None),
        }
    }

    /// DISCONNECT, written as far as the socket takes it.
    pub fn close(mut self) {
        self.session.disconnect(Instant::now());
        let _ = self.write_out();
    }
}
