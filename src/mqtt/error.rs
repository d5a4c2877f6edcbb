//! Why the broker connection failed or was refused: the forwarder's (`forward.rs`,
//! the line it logs and `mqtt_last_error`), the transport's (`transport.rs`: TLS
//! without a TLS build, the certificates) and `crd send`'s client (`client.rs`),
//! each a variant carrying what its one-line message names. `Display` writes the
//! message. The bounds a message names travel in the variant, so this file
//! imports none of the files that use it.

use crate::mqtt::session::SessionError;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A `Reason`, boxed: a `Result` carrying it is one word wide, so `?` moves a
/// pointer, not the widest variant.
#[derive(Debug)]
pub struct Error(Box<Reason>);

impl Error {
    pub fn reason(&self) -> &Reason {
        &self.0
    }
}

impl From<Reason> for Error {
    fn from(r: Reason) -> Error {
        Error(Box::new(r))
    }
}

impl From<SessionError> for Error {
    fn from(e: SessionError) -> Error {
        Reason::Session(e).into()
    }
}

/// For callers whose errors are still `String`s (`command/send.rs`): the message.
impl From<Error> for String {
    fn from(e: Error) -> String {
        e.to_string()
    }
}

#[derive(Debug)]
pub enum Reason {
    /// `password_file` could not be read: its path, why.
    PasswordFile(PathBuf, io::Error),
    /// Reading the socket failed.
    Read(io::Error),
    /// Writing the socket failed.
    Write(io::Error),
    /// The socket took no byte (the forwarder's write).
    WriteClosed,
    /// What the session refused (protocol, CONNACK, keepalive).
    Session(SessionError),
    /// The forwarder's connection closed by the broker.
    Closed,
    /// Closed by the broker this many times in a row, each within this many
    /// seconds of connecting: another client with this client_id.
    TakenOver(u32, u64, String),
    /// The broker's name did not resolve: why (the daemon's resolver says).
    Resolve(String),
    /// Registering the socket with the poll failed.
    Register(io::Error),
    /// Connecting to this address failed.
    ConnectTo(SocketAddr, io::Error),
    /// The non-blocking connect failed.
    Connect(io::Error),
    /// The resolver gave no address within its bound.
    NoAddressInTime,
    /// No TCP connection within this many seconds.
    ConnectTimeout(u64),
    /// Nothing from the broker within 1.5 x the keepalive, in seconds.
    Silent(u64),
    /// `broker_tls` in a build without TLS.
    NoTls,
    /// Client: no `broker` in the config.
    #[cfg(feature = "collector")]
    NoBroker,
    /// Client: the broker's name did not resolve: the name, why.
    #[cfg(feature = "collector")]
    CannotResolve(String, io::Error),
    /// Client: a socket or poll call failed.
    #[cfg(feature = "collector")]
    Io(io::Error),
    /// Client: what went wrong while connecting to the broker named.
    #[cfg(feature = "collector")]
    At(String, Error),
    /// Client: no CONNACK before the deadline (inside `At`).
    #[cfg(feature = "collector")]
    NoConnAck,
    /// Client: the connection closed by the broker.
    #[cfg(feature = "collector")]
    ClosedByBroker,
    /// Client: the broker refused the subscription to this filter.
    #[cfg(feature = "collector")]
    SubscriptionRefused(String),
    /// Client: no SUBACK for this filter before the deadline.
    #[cfg(feature = "collector")]
    NoSubAck(String),
    /// Client: no PUBACK for this topic before the deadline.
    #[cfg(feature = "collector")]
    NoPubAck(String),
    /// TLS: a PEM file (`ca_file`, `cert_file`, `key_file`) could not be read.
    #[cfg(feature = "tls")]
    PemRead(&'static str, PathBuf, io::Error),
    /// TLS: a PEM file's contents refused (by the PEM reader or rustls).
    #[cfg(feature = "tls")]
    Pem(&'static str, PathBuf, String),
    /// TLS: a `ca_file` without a certificate.
    #[cfg(feature = "tls")]
    NoCa(PathBuf),
    /// TLS: rustls refused the client certificate and its key.
    #[cfg(feature = "tls")]
    ClientAuth(rustls::Error),
    /// TLS: the broker's host is not a name a certificate can carry.
    #[cfg(feature = "tls")]
    TlsName(String, rustls::pki_types::InvalidDnsNameError),
    /// TLS: rustls refused the configuration or the connection.
    #[cfg(feature = "tls")]
    Tls(rustls::Error),
}

/// Fixed texts are written as they are, `write!` only where a value goes in, its
/// arguments dereferenced (a `&&T` would add a formatting function of its own).
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            Reason::PasswordFile(p, e) => write!(f, "password_file {}: {}", p.display(), *e),
            Reason::Read(e) => write!(f, "read: {}", *e),
            Reason::Write(e) => write!(f, "write: {}", *e),
            Reason::WriteClosed => f.write_str("write: connection closed"),
            Reason::Session(e) => fmt::Display::fmt(e, f),
            Reason::Closed => f.write_str("broker closed the connection"),
            Reason::TakenOver(closes, window, id) => write!(
                f,
                "broker closed the connection {} times in a row within {} s of connecting: \
                 another client with client_id `{}` is probably connected (the broker keeps \
                 one connection per client_id; give each crd its own `node` or `client_id`)",
                *closes, *window, *id
            ),
            Reason::Resolve(why) => write!(f, "cannot resolve: {}", *why),
            Reason::Register(e) => write!(f, "register: {}", *e),
            Reason::ConnectTo(a, e) => write!(f, "connect {}: {}", *a, *e),
            Reason::Connect(e) => write!(f, "connect: {}", *e),
            Reason::NoAddressInTime => f.write_str("no address in time"),
            Reason::ConnectTimeout(s) => write!(f, "TCP connect timed out after {} s", *s),
            Reason::Silent(s) => write!(
                f,
                "no answer from the broker within 1.5 x keepalive ({} s)",
                *s
            ),
            Reason::NoTls => f.write_str("broker_tls needs a crd built with the `tls` feature"),
            #[cfg(feature = "collector")]
            Reason::NoBroker => f.write_str("no broker in the config"),
            #[cfg(feature = "collector")]
            Reason::CannotResolve(b, e) => write!(f, "cannot resolve {}: {}", *b, *e),
            #[cfg(feature = "collector")]
            Reason::Io(e) => fmt::Display::fmt(e, f),
            #[cfg(feature = "collector")]
            Reason::At(b, e) => write!(f, "{}: {}", *b, *e),
            #[cfg(feature = "collector")]
            Reason::NoConnAck => f.write_str("no CONNACK in time"),
            #[cfg(feature = "collector")]
            Reason::ClosedByBroker => f.write_str("the broker closed the connection"),
            #[cfg(feature = "collector")]
            Reason::SubscriptionRefused(t) => {
                write!(f, "the broker refused the subscription to {} (an ACL?)", *t)
            }
            #[cfg(feature = "collector")]
            Reason::NoSubAck(t) => write!(f, "no SUBACK for {} in time", *t),
            #[cfg(feature = "collector")]
            Reason::NoPubAck(t) => write!(f, "no PUBACK for {} in time", *t),
            #[cfg(feature = "tls")]
            Reason::PemRead(what, p, e) => write!(f, "{} {}: {}", *what, p.display(), *e),
            #[cfg(feature = "tls")]
            Reason::Pem(what, p, e) => write!(f, "{} {}: {}", *what, p.display(), *e),
            #[cfg(feature = "tls")]
            Reason::NoCa(p) => write!(f, "ca_file {}: no certificate in it", p.display()),
            #[cfg(feature = "tls")]
            Reason::ClientAuth(e) => write!(f, "cert_file/key_file: {}", *e),
            #[cfg(feature = "tls")]
            Reason::TlsName(h, e) => write!(f, "broker host `{}` as a TLS name: {}", *h, *e),
            #[cfg(feature = "tls")]
            Reason::Tls(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts users saw when these were `format!`ed strings, byte for byte.
    #[test]
    fn messages_are_the_ones_users_know() {
        let io = || io::Error::from(io::ErrorKind::NotFound);
        let addr: SocketAddr = "127.0.0.1:1883".parse().unwrap();
        let cases: Vec<(Error, &str)> = vec![
            (
                Reason::PasswordFile("/pw".into(), io()).into(),
                "password_file /pw: entity not found",
            ),
            (Reason::Read(io()).into(), "read: entity not found"),
            (Reason::Write(io()).into(), "write: entity not found"),
            (Reason::WriteClosed.into(), "write: connection closed"),
            (
                SessionError::Silent.into(),
                "broker silent past the keepalive deadline",
            ),
            (Reason::Closed.into(), "broker closed the connection"),
            (
                Reason::TakenOver(3, 10, "crd-r1".into()).into(),
                "broker closed the connection 3 times in a row within 10 s of connecting: \
                 another client with client_id `crd-r1` is probably connected (the broker keeps \
                 one connection per client_id; give each crd its own `node` or `client_id`)",
            ),
            (
                Reason::Resolve("no address".into()).into(),
                "cannot resolve: no address",
            ),
            (Reason::Register(io()).into(), "register: entity not found"),
            (
                Reason::ConnectTo(addr, io()).into(),
                "connect 127.0.0.1:1883: entity not found",
            ),
            (Reason::Connect(io()).into(), "connect: entity not found"),
            (Reason::NoAddressInTime.into(), "no address in time"),
            (
                Reason::ConnectTimeout(10).into(),
                "TCP connect timed out after 10 s",
            ),
            (
                Reason::Silent(60).into(),
                "no answer from the broker within 1.5 x keepalive (60 s)",
            ),
            (
                Reason::NoTls.into(),
                "broker_tls needs a crd built with the `tls` feature",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }

    /// The same for `crd send`'s client.
    #[cfg(feature = "collector")]
    #[test]
    fn client_messages_are_the_ones_users_know() {
        let io = || io::Error::from(io::ErrorKind::NotFound);
        let cases: Vec<(Error, &str)> = vec![
            (Reason::NoBroker.into(), "no broker in the config"),
            (
                Reason::CannotResolve("b:1883".into(), io()).into(),
                "cannot resolve b:1883: entity not found",
            ),
            (Reason::Io(io()).into(), "entity not found"),
            (
                Reason::At("b:1883".into(), Reason::NoConnAck.into()).into(),
                "b:1883: no CONNACK in time",
            ),
            (
                Reason::At("b:1883".into(), Reason::ClosedByBroker.into()).into(),
                "b:1883: the broker closed the connection",
            ),
            (
                Reason::SubscriptionRefused("a/#".into()).into(),
                "the broker refused the subscription to a/# (an ACL?)",
            ),
            (
                Reason::NoSubAck("a/#".into()).into(),
                "no SUBACK for a/# in time",
            ),
            (
                Reason::NoPubAck("a/b".into()).into(),
                "no PUBACK for a/b in time",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }

    /// The same for the TLS transport's.
    #[cfg(feature = "tls")]
    #[test]
    fn tls_messages_are_the_ones_users_know() {
        let io = || io::Error::from(io::ErrorKind::NotFound);
        let cases: Vec<(Error, &str)> = vec![
            (
                Reason::PemRead("ca_file", "/ca".into(), io()).into(),
                "ca_file /ca: entity not found",
            ),
            (
                Reason::Pem("key_file", "/k".into(), "why".into()).into(),
                "key_file /k: why",
            ),
            (
                Reason::NoCa("/ca".into()).into(),
                "ca_file /ca: no certificate in it",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }
}
