//! The control socket: a Unix stream socket (mode 0600) through which `crd status`,
//! `crd emit` and `crd --install` (its reload request) talk to the running daemon.
//!
//! Protocol: the client sends one request line (`status\n`), the daemon answers with
//! text and closes. `emit SUFFIX [sync]\n` is followed by the message body up to the
//! client's end of stream (shutdown of its write side); the answer is `ok SEQ\n` or
//! `error: ...\n`; `send NODE\n` likewise, its body a command's JSON for the
//! relay (answer `ok ID\n`). Both ends speak through the types here: `Request`
//! (`encode` on the client, `parse_request` on the daemon) and `Response` (`encode`
//! on the daemon, `parse` on the client). Server side, inside the poll loop: at most `MAX_CLIENTS` at once,
//! each bounded to `MAX_REQUEST_BYTES` of request line plus `max_body` bytes of body
//! and `CLIENT_TIMEOUT` in time, so a stuck or hostile client costs a bounded amount
//! and nothing else. This file owns the socket and its bytes; what a reply says is
//! the daemon's business.

use crate::core::event::Cause;
use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Clients served at once; more wait in the kernel's backlog.
pub const MAX_CLIENTS: usize = 8;
/// Longest request line, in bytes.
pub const MAX_REQUEST_BYTES: usize = 1024;
/// Time a client has to send its request and take its reply.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest reply the client reads, in bytes.
pub const MAX_REPLY_BYTES: u64 = 4 << 20;
/// Bytes read from one client per loop turn; the rest waits for the next turn, so
/// a client streaming bytes cannot hold the loop.
pub const READ_BUDGET_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `crd status`, as lines and a table or (`json`) one JSON object.
    Status {
        json: bool,
    },
    /// Re-read the config and the modules, as on SIGHUP (`crd --install`).
    Reload,
    /// The collector's view of the fleet (`crd fleet [--json]`).
    Fleet {
        json: bool,
    },
    /// A rule module's register: every key, or one (`crd register MODULE [KEY]`;
    /// the key is the rest of the line, so it may hold spaces).
    Register {
        module: String,
        key: Option<String>,
    },
    /// `crd emit SUFFIX`: `cause` from the environment a collector's run
    /// gives (`CRD_HOP`, `CRD_CAUSE`), sent as the word `cause=HOP,OF`.
    Emit {
        suffix: String,
        sync: bool,
        cause: Option<Cause>,
        body: Vec<u8>,
    },
    /// `crd send` handing a command (its JSON, the body) for `node` to the relay.
    Send {
        node: String,
        body: Vec<u8>,
    },
    /// The relay's commands, or the replies kept for one (`crd replies [ID]`).
    Replies {
        id: Option<String>,
    },
    /// A body over the limit; it was not kept.
    TooLarge(usize),
    Unknown(String),
}

impl Request {
    /// The bytes a client sends: the request line, a newline and, for `emit` and
    /// `send`, the body. The inverse of `parse_request` for the values it gives:
    /// a word (module, suffix, node, id) holds no whitespace, and a register key
    /// none at either end and no newline (the CLI checks them). `TooLarge` is the
    /// daemon's verdict, never sent: it encodes as an empty line.
    pub fn encode(&self) -> Vec<u8> {
        // A verb and up to two words, pushed rather than format!ted: 160 bytes
        // less on aarch64, and every router carries this client.
        let json = |on: bool| on.then_some("json");
        let none: &[u8] = &[];
        let mut caused = String::new();
        let (verb, words, body) = match self {
            Request::Status { json: j } => ("status", [json(*j), None, None], none),
            Request::Reload => ("reload", [None, None, None], none),
            Request::Fleet { json: j } => ("fleet", [json(*j), None, None], none),
            Request::Register { module, key } => (
                "register",
                [Some(module.as_str()), key.as_deref(), None],
                none,
            ),
            Request::Emit {
                suffix,
                sync,
                cause,
                body,
            } => {
                if let Some(c) = cause {
                    caused = format!("cause={},{}", c.hop, c.of);
                }
                let cause = cause.as_ref().map(|_| caused.as_str());
                (
                    "emit",
                    [Some(suffix.as_str()), sync.then_some("sync"), cause],
                    &body[..],
                )
            }
            Request::Send { node, body } => ("send", [Some(node.as_str()), None, None], &body[..]),
            Request::Replies { id } => ("replies", [id.as_deref(), None, None], none),
            Request::TooLarge(_) => ("", [None, None, None], none),
            Request::Unknown(line) => (line.as_str(), [None, None, None], none),
        };
        let mut b = verb.as_bytes().to_vec();
        for w in words.into_iter().flatten() {
            b.push(b' ');
            b.extend_from_slice(w.as_bytes());
        }
        b.push(b'\n');
        b.extend_from_slice(body);
        b
    }

    /// Whether a body follows the line: the client then ends its stream, which
    /// tells the daemon the body is whole.
    fn has_body(&self) -> bool {
        matches!(self, Request::Emit { .. } | Request::Send { .. })
    }
}

/// The error a `send` gets from a daemon without the relay; `crd send` then
/// publishes the command itself.
pub const NO_RELAY: &str = "no relay here (a crd with the collector relays commands)";

/// The daemon's answer to a request, written by `encode` and read by `parse`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// `ok[ VALUE]\n`: an action done; the value is an `emit`'s record seq or a
    /// `send`'s command id, empty for `reload`.
    Done(String),
    /// What a query asked for, as is: `status`, `fleet`, `register`, `replies`.
    Text(String),
    /// `error: WHY\n`: refused or failed, one line.
    Error(String),
}

impl Response {
    pub fn encode(&self) -> String {
        match self {
            Response::Done(v) if v.is_empty() => "ok\n".to_string(),
            Response::Done(v) => format!("ok {v}\n"),
            Response::Text(t) => t.clone(),
            Response::Error(why) => format!("error: {why}\n"),
        }
    }

    /// The answer in `text`, as the daemon's `encode` wrote it. A query's text
    /// that reads as `ok VALUE` or `error: ...` is taken for one: the protocol has
    /// no escape (`encode` gives the same text back, so printing it is exact).
    pub fn parse(text: String) -> Response {
        if let Some(why) = text.strip_prefix("error: ") {
            return Response::Error(why.strip_suffix('\n').unwrap_or(why).to_string());
        }
        if text == "ok\n" {
            return Response::Done(String::new());
        }
        match text.strip_prefix("ok ").and_then(|v| v.strip_suffix('\n')) {
            Some(v) if !v.is_empty() && !v.contains('\n') => Response::Done(v.to_string()),
            _ => Response::Text(text),
        }
    }

    /// What an answer other than the one expected says: its error, or the
    /// unexpected text.
    pub fn why(&self) -> String {
        match self {
            Response::Error(why) => why.clone(),
            r => format!("unexpected answer `{}`", r.encode().trim_end()),
        }
    }
}

/// Parses a complete request: its first line and, for `emit`, the body after it.
/// `over`: more bytes came than `max_body` (they were discarded). Public for the
/// fuzz target; the daemon only reaches it through `Control`.
pub fn parse_request(inbuf: &[u8], over: bool, max_body: usize) -> Request {
    let nl = inbuf.iter().position(|&b| b == b'\n');
    let line = &inbuf[..nl.unwrap_or(inbuf.len())];
    let line = String::from_utf8_lossy(line).trim().to_string();
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some("emit"), Some(suffix), a, b) if words.next().is_none() => {
            let Some((sync, cause)) = emit_flags(a, b) else {
                return Request::Unknown(line);
            };
            if over {
                return Request::TooLarge(max_body);
            }
            let body = nl.map_or(&[][..], |i| &inbuf[i + 1..]).to_vec();
            Request::Emit {
                suffix: suffix.to_string(),
                sync,
                cause,
                body,
            }
        }
        (Some("status"), None, ..) => Request::Status { json: false },
        (Some("status"), Some("json"), None, ..) => Request::Status { json: true },
        (Some("reload"), None, ..) => Request::Reload,
        (Some("fleet"), None, ..) => Request::Fleet { json: false },
        (Some("fleet"), Some("json"), None, ..) => Request::Fleet { json: true },
        (Some("register"), Some(module), ..) => {
            let rest = line["register".len()..].trim_start()[module.len()..].trim();
            Request::Register {
                module: module.to_string(),
                key: (!rest.is_empty()).then(|| rest.to_string()),
            }
        }
        (Some("replies"), id, None, ..) => Request::Replies {
            id: id.map(str::to_string),
        },
        (Some("send"), Some(node), None, ..) => {
            if over {
                return Request::TooLarge(max_body);
            }
            Request::Send {
                node: node.to_string(),
                body: nl.map_or(&[][..], |i| &inbuf[i + 1..]).to_vec(),
            }
        }
        _ => Request::Unknown(line),
    }
}

/// `emit`'s words after the suffix: `sync`, then `cause=HOP,OF`, each
/// optional; `None` for anything else.
fn emit_flags(a: Option<&str>, b: Option<&str>) -> Option<(bool, Option<Cause>)> {
    let (sync, c) = match a {
        Some("sync") => (true, b),
        _ if b.is_some() => return None,
        c => (false, c),
    };
    let cause = match c {
        None => None,
        Some(w) => Some(Cause::parse(w.strip_prefix("cause=")?)?),
    };
    Some((sync, cause))
}

struct Client {
    stream: UnixStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    written: usize,
    deadline: Instant,
    answered: bool,
    /// More bytes came than a request may hold; the rest was not read.
    over: bool,
    /// The client closed its socket entirely (not just its sending side).
    hung_up: bool,
}

pub struct Control {
    listener: UnixListener,
    path: PathBuf,
    listen_token: Token,
    token_base: usize,
    clients: Vec<Option<Client>>,
    /// Largest `emit` body kept, bytes (the spool's record limit).
    max_body: usize,
    /// Clients whose read budget ran out with bytes left (see `has_pending_reads`).
    pending: Vec<usize>,
}

/// Why the socket could not be opened.
#[derive(Debug)]
pub enum BindError {
    InUse(PathBuf),
    Io(PathBuf, io::Error),
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindError::InUse(p) => write!(
                f,
                "control socket {} is in use: is another crd running?",
                p.display()
            ),
            BindError::Io(p, e) => write!(f, "control socket {}: {e}", p.display()),
        }
    }
}

impl Control {
    /// Binds `path` (replacing a stale socket file) and registers it. Client tokens
    /// are `token_base .. token_base + MAX_CLIENTS`.
    pub fn bind(
        path: &Path,
        registry: &Registry,
        listen_token: Token,
        token_base: usize,
    ) -> Result<Control, BindError> {
        let err = |e| BindError::Io(path.to_path_buf(), e);
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(BindError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(err)?;
        }
        // Mode 0600 from the start: no window in which another user could connect.
        let old = crate::child::sys::restrictive_umask();
        let bound = UnixListener::bind(path);
        crate::child::sys::set_umask(old);
        let mut listener = bound.map_err(err)?;
        registry
            .register(&mut listener, listen_token, Interest::READABLE)
            .map_err(err)?;
        Ok(Control {
            listener,
            path: path.to_path_buf(),
            listen_token,
            token_base,
            clients: (0..MAX_CLIENTS).map(|_| None).collect(),
            max_body: 0,
            pending: Vec::new(),
        })
    }

    /// Sets the largest `emit` body accepted, in bytes.
    pub fn set_max_body(&mut self, bytes: usize) {
        self.max_body = bytes;
    }

    pub fn owns(&self, t: Token) -> bool {
        t == self.listen_token || (t.0 >= self.token_base && t.0 < self.token_base + MAX_CLIENTS)
    }

    /// Handles readiness of the listener or a client (`hung_up`: the client has
    /// closed its socket entirely, not just its sending side). Returns requests to
    /// answer with `reply`.
    pub fn handle_event(
        &mut self,
        registry: &Registry,
        t: Token,
        hung_up: bool,
        now: Instant,
    ) -> Vec<(usize, Request)> {
        let mut out = Vec::new();
        if t == self.listen_token {
            // New clients are read on their own first event, which says whether
            // they are still there.
            self.accept(registry, now);
        } else if let Some(r) = self.service(registry, t.0 - self.token_base, hung_up, now) {
            out.push((t.0 - self.token_base, r));
        }
        out
    }

    /// Takes connections waiting in the backlog while a slot is free. Called when
    /// the listener is readable and whenever a slot frees: the listener is
    /// edge-triggered, so connections that queued while every slot was taken
    /// raise no new event.
    fn accept(&mut self, registry: &Registry, now: Instant) {
        loop {
            let Some(i) = self.clients.iter().position(Option::is_none) else {
                // Full: leave the rest in the backlog until a client is done.
                return;
            };
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let tok = Token(self.token_base + i);
                    if registry
                        .register(&mut stream, tok, Interest::READABLE | Interest::WRITABLE)
                        .is_err()
                    {
                        continue;
                    }
                    self.clients[i] = Some(Client {
                        stream,
                        inbuf: Vec::new(),
                        out: Vec::new(),
                        written: 0,
                        deadline: now + CLIENT_TIMEOUT,
                        answered: false,
                        over: false,
                        hung_up: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("control socket accept: {e}");
                    return;
                }
            }
        }
    }

    /// Reads a request (at most `READ_BUDGET_BYTES` per call; the rest on the next
    /// turn, see `has_pending_reads`) or writes a pending reply. Returns a complete
    /// request once. A request whose client hung up before it was complete is not
    /// returned: nobody would learn its outcome, and a client that gave up may
    /// retry (an `emit` would be spooled twice).
    fn service(
        &mut self,
        registry: &Registry,
        i: usize,
        hung_up: bool,
        now: Instant,
    ) -> Option<Request> {
        let c = self.clients.get_mut(i)?.as_mut()?;
        c.hung_up |= hung_up;
        if c.answered {
            self.flush(registry, i, now);
            return None;
        }
        let limit = MAX_REQUEST_BYTES + self.max_body;
        let mut buf = [0u8; 4096];
        let mut budget = READ_BUDGET_BYTES;
        loop {
            if budget == 0 {
                if !self.pending.contains(&i) {
                    self.pending.push(i);
                }
                return None;
            }
            match c.stream.read(&mut buf[..budget.min(4096)]) {
                // End of stream: whatever came is the request.
                Ok(0) => break,
                Ok(n) => {
                    budget -= n;
                    let room = limit.saturating_sub(c.inbuf.len());
                    c.inbuf.extend_from_slice(&buf[..n.min(room)]);
                    if n > room {
                        // Over the limit: answered now, the rest is not read.
                        c.over = true;
                        break;
                    }
                    // A request line without a body is complete at its newline;
                    // an `emit` waits for the end of stream (its body may hold
                    // newlines).
                    if let Some(nl) = c.inbuf.iter().position(|&b| b == b'\n') {
                        let line = &c.inbuf[..nl];
                        if !line.starts_with(b"emit ") && !line.starts_with(b"send ") {
                            break;
                        }
                    } else if c.inbuf.len() >= MAX_REQUEST_BYTES {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(registry, i, now);
                    return None;
                }
            }
        }
        self.pending.retain(|&p| p != i);
        if c.hung_up && !c.over {
            log::debug!("control: a client hung up before its request was read; dropped");
            self.close(registry, i, now);
            return None;
        }
        c.answered = true;
        let req = parse_request(&c.inbuf, c.over, self.max_body);
        c.inbuf = Vec::new();
        Some(req)
    }

    /// Clients with request bytes left past their read budget.
    pub fn has_pending_reads(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Reads on for clients that had more than their budget; returns complete
    /// requests as `handle_event` does.
    pub fn handle_pending_reads(
        &mut self,
        registry: &Registry,
        now: Instant,
    ) -> Vec<(usize, Request)> {
        let mut out = Vec::new();
        for i in std::mem::take(&mut self.pending) {
            if let Some(r) = self.service(registry, i, false, now) {
                out.push((i, r));
            }
        }
        out
    }

    /// Queues `r` as client `i`'s reply and starts sending it.
    pub fn reply(&mut self, registry: &Registry, i: usize, r: &Response, now: Instant) {
        if let Some(Some(c)) = self.clients.get_mut(i) {
            c.out = r.encode().into_bytes();
            self.flush(registry, i, now);
        }
    }

    /// Writes what the socket takes of a reply; a finished reply, or one that
    /// cannot be written (the client is gone), frees the slot at once.
    fn flush(&mut self, registry: &Registry, i: usize, now: Instant) {
        let Some(Some(c)) = self.clients.get_mut(i) else {
            return;
        };
        while c.written < c.out.len() {
            match c.stream.write(&c.out[c.written..]) {
                Ok(n) => c.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(registry, i, now);
                    return;
                }
            }
        }
        if c.answered && c.written >= c.out.len() && !c.out.is_empty() {
            self.close(registry, i, now);
        }
    }

    /// Drops client `i` and takes the next waiting connection into its slot.
    fn close(&mut self, registry: &Registry, i: usize, now: Instant) {
        if let Some(mut c) = self.clients[i].take() {
            let _ = registry.deregister(&mut c.stream);
        }
        self.pending.retain(|&p| p != i);
        self.accept(registry, now);
    }

    /// Drops clients past their deadline.
    pub fn handle_timer(&mut self, registry: &Registry, now: Instant) {
        for i in 0..MAX_CLIENTS {
            if self.clients[i].as_ref().is_some_and(|c| now >= c.deadline) {
                self.close(registry, i, now);
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.clients.iter().flatten().map(|c| c.deadline).min()
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Why a request got no reply.
#[derive(Debug)]
pub enum CallError {
    /// No daemon took the connection: the request was not seen.
    Unreachable(io::Error),
    /// Connected, but no complete reply within `CLIENT_TIMEOUT` (or the daemon
    /// closed without one): the request may or may not have been carried out.
    NoAnswer(io::Error),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(e) | CallError::NoAnswer(e) => write!(f, "{e}"),
        }
    }
}

/// Client side: sends `req` (and, after a body, the end of stream) and returns
/// the daemon's answer.
pub fn call(path: &Path, req: &Request) -> Result<Response, CallError> {
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(CallError::Unreachable)?;
    let exchange = |s: &mut std::os::unix::net::UnixStream| -> io::Result<String> {
        s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        s.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        s.write_all(&req.encode())?;
        if req.has_body() {
            s.shutdown(std::net::Shutdown::Write)?;
        }
        let mut out = String::new();
        s.take(MAX_REPLY_BYTES).read_to_string(&mut out)?;
        if out.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection without a reply",
            ));
        }
        Ok(out)
    };
    exchange(&mut s)
        .map(Response::parse)
        .map_err(CallError::NoAnswer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(
            parse_request(b"status\n", false, 10),
            Request::Status { json: false }
        );
        assert_eq!(
            parse_request(b"status json\n", false, 10),
            Request::Status { json: true }
        );
        assert_eq!(parse_request(b"reload\n", false, 10), Request::Reload);
        assert_eq!(
            parse_request(b"register Lb\n", false, 10),
            Request::Register {
                module: "Lb".into(),
                key: None
            }
        );
        assert_eq!(
            parse_request(b"register  Lb  plant/1 temp \n", false, 10),
            Request::Register {
                module: "Lb".into(),
                key: Some("plant/1 temp".into())
            },
            "the key is the rest of the line, spaces inside kept"
        );
        assert_eq!(
            parse_request(b"send r1\n{\"id\":1}", false, 100),
            Request::Send {
                node: "r1".into(),
                body: b"{\"id\":1}".to_vec()
            }
        );
        assert_eq!(
            parse_request(b"send r1\n{}", true, 100),
            Request::TooLarge(100)
        );
        assert_eq!(
            parse_request(b"replies\n", false, 100),
            Request::Replies { id: None }
        );
        assert_eq!(
            parse_request(b"replies ab12\n", false, 100),
            Request::Replies {
                id: Some("ab12".into())
            }
        );
        assert_eq!(
            parse_request(b"emit a/b sync\nline 1\nline 2", false, 100),
            Request::Emit {
                suffix: "a/b".into(),
                sync: true,
                body: b"line 1\nline 2".to_vec(),
                cause: None,
            }
        );
        assert_eq!(
            parse_request(b"emit x", false, 100),
            Request::Emit {
                suffix: "x".into(),
                sync: false,
                body: vec![],
                cause: None,
            }
        );
        assert_eq!(
            parse_request(b"emit x\nbig", true, 100),
            Request::TooLarge(100)
        );
        assert_eq!(
            parse_request(b"emit x later\n", false, 100),
            Request::Unknown("emit x later".into())
        );
        for bad in [
            "emit x cause=0,a",
            "emit x cause=1,",
            "emit x cause=a,b",
            "emit x cause=1",
            "emit x sync cause=1,a extra",
            "emit x cause=1,a sync",
        ] {
            let r = parse_request(bad.as_bytes(), false, 100);
            assert_eq!(r, Request::Unknown(bad.into()), "{bad}");
        }
        assert_eq!(
            parse_request(b"", false, 100),
            Request::Unknown(String::new())
        );
    }

    /// Every request a client makes reads back as itself, the key's inner spaces,
    /// a body's newlines and `sync` kept.
    #[test]
    fn every_request_round_trips() {
        let all = [
            Request::Status { json: false },
            Request::Status { json: true },
            Request::Reload,
            Request::Fleet { json: false },
            Request::Fleet { json: true },
            Request::Register {
                module: "Lb".into(),
                key: None,
            },
            Request::Register {
                module: "Lb".into(),
                key: Some("plant/1  temp x".into()),
            },
            Request::Emit {
                suffix: "a/b".into(),
                sync: true,
                body: b"line 1\nline 2\n".to_vec(),
                cause: None,
            },
            Request::Emit {
                suffix: "x".into(),
                sync: false,
                body: vec![],
                cause: None,
            },
            Request::Emit {
                suffix: "alerts/wan".into(),
                sync: false,
                cause: Cause::new(2, "n0/00000000000000ab/7"),
                body: b"down".to_vec(),
            },
            Request::Emit {
                suffix: "x".into(),
                sync: true,
                cause: Cause::new(1, "m-0123456789abcdef"),
                body: vec![],
            },
            Request::Send {
                node: "r1".into(),
                body: b"{\"id\":1}".to_vec(),
            },
            Request::Replies { id: None },
            Request::Replies {
                id: Some("0123456789abcdef0123456789abcdef".into()),
            },
            Request::Unknown("frobnicate now".into()),
        ];
        for r in all {
            assert_eq!(parse_request(&r.encode(), false, 100), r, "{r:?}");
        }
        assert_eq!(Request::Reload.encode(), b"reload\n");
        assert_eq!(
            Request::Emit {
                suffix: "x".into(),
                sync: true,
                body: b"hi".to_vec(),
                cause: None,
            }
            .encode(),
            b"emit x sync\nhi"
        );
    }

    /// Every answer the daemon writes reads back as itself, and a text that reads
    /// as another kind still prints as it came.
    #[test]
    fn every_response_round_trips() {
        for r in [
            Response::Done(String::new()),
            Response::Done("42".into()),
            Response::Text("# ID NODE\nab r1\n".into()),
            Response::Text("{\"nodes\":[]}\n".into()),
            Response::Text("ok\nmore\n".into()),
            Response::Error(NO_RELAY.into()),
        ] {
            assert_eq!(Response::parse(r.encode()), r, "{r:?}");
        }
        assert_eq!(Response::Done("7".into()).encode(), "ok 7\n");
        assert_eq!(Response::Error("x y".into()).encode(), "error: x y\n");
        for text in ["ok 5\n", "error: gone\n", "ok \n", "ok", "temp 21\n"] {
            assert_eq!(Response::parse(text.into()).encode(), text, "{text:?}");
        }
        assert_eq!(Response::Error("x".into()).why(), "x");
        assert_eq!(Response::Text("t\n".into()).why(), "unexpected answer `t`");
    }
}
