//! The broker connection's byte stream: plain TCP, or TLS over the same
//! non-blocking `mio` socket (cargo feature `tls`: rustls with the ring provider).
//!
//! `Transport` reads and writes like a non-blocking socket (`WouldBlock` when it
//! cannot), so the forwarder's loop is the same for both. With TLS, a write hands
//! plaintext to rustls (at most its 64 KiB buffer) and pushes out what rustls has
//! encrypted; `flush` pushes the rest when the socket becomes writable again (the
//! socket is edge-triggered). The client config (CA file, optional client cert and
//! key) is read at every connect, so certificates can be rotated without a restart.
//! The server name checked is the host part of `broker`: a DNS name or an IP address
//! (which the certificate must then carry as an IP SAN).

use crate::mqtt::error::{Error, Reason};
use mio::net::TcpStream;
use std::io;

pub enum Transport {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<tls::Stream>),
}

impl Transport {
    /// The socket under the stream (register, take_error, peer_addr, shutdown).
    pub fn tcp(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(s) => s,
            #[cfg(feature = "tls")]
            Transport::Tls(t) => &mut t.sock,
        }
    }

    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::io::Read;
        match self {
            Transport::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.read(buf),
        }
    }

    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use std::io::Write;
        match self {
            Transport::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.write(buf),
        }
    }

    /// Pushes out bytes the stream holds (TLS records); a no-op for plain TCP.
    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.flush(),
        }
    }
}

/// The stream over a connected socket to `broker` (one of `c.brokers()`):
/// TLS when `broker_tls` is set, checking `broker`'s host.
pub fn wrap(
    c: &crate::core::config::MqttSettings,
    broker: &str,
    s: TcpStream,
) -> Result<Transport, Error> {
    if !c.tls {
        return Ok(Transport::Plain(s));
    }
    #[cfg(feature = "tls")]
    {
        let cfg = tls::client_config(&c.ca_file, c.cert_file.as_deref(), c.key_file.as_deref())?;
        tls::Stream::new(s, cfg, host_of(broker)).map(|t| Transport::Tls(Box::new(t)))
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = broker;
        drop(s);
        Err(Reason::NoTls.into())
    }
}

/// The host part of `broker` (`host:port`, `[v6]:port`, `v6`, `host`): the name a
/// TLS certificate must carry.
pub fn host_of(broker: &str) -> &str {
    if let Some(rest) = broker.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    if broker.matches(':').count() > 1 {
        return broker; // a bare IPv6 address
    }
    match broker.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => broker,
    }
}

#[cfg(feature = "tls")]
pub mod tls {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::io::{Read, Write};
    use std::path::Path;
    use std::sync::Arc;

    /// A CA file larger than this is refused (a full system bundle is ~200 KiB).
    pub const MAX_PEM_BYTES: u64 = 1 << 20;

    fn read_pem(what: &'static str, p: &Path) -> Result<Vec<u8>, Error> {
        crate::host::files::read_bounded(p, MAX_PEM_BYTES)
            .map(String::into_bytes)
            .map_err(|e| Reason::PemRead(what, p.to_path_buf(), e).into())
    }

    /// `what p: e`, for a PEM file's contents refused.
    fn pem(what: &'static str, p: &Path, e: impl std::fmt::Display) -> Error {
        Reason::Pem(what, p.to_path_buf(), e.to_string()).into()
    }

    /// Builds the client config from PEM files.
    pub fn client_config(
        ca_file: &Path,
        cert_file: Option<&Path>,
        key_file: Option<&Path>,
    ) -> Result<Arc<rustls::ClientConfig>, Error> {
        let ca = read_pem("ca_file", ca_file)?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca) {
            let c = c.map_err(|e| pem("ca_file", ca_file, e))?;
            roots.add(c).map_err(|e| pem("ca_file", ca_file, e))?;
        }
        if roots.is_empty() {
            return Err(Reason::NoCa(ca_file.to_path_buf()).into());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(Reason::Tls)?
            .with_root_certificates(roots);
        let cfg = match (cert_file, key_file) {
            (Some(c), Some(k)) => {
                let cp = read_pem("cert_file", c)?;
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cp)
                    .collect::<Result<_, _>>()
                    .map_err(|e| pem("cert_file", c, e))?;
                let kp = read_pem("key_file", k)?;
                let key = PrivateKeyDer::from_pem_slice(&kp).map_err(|e| pem("key_file", k, e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(Reason::ClientAuth)?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Arc::new(cfg))
    }

    pub struct Stream {
        pub sock: TcpStream,
        conn: rustls::ClientConnection,
    }

    impl Stream {
        pub fn new(
            sock: TcpStream,
            cfg: Arc<rustls::ClientConfig>,
            host: &str,
        ) -> Result<Stream, Error> {
            let name = ServerName::try_from(host.to_string())
                .map_err(|e| Reason::TlsName(host.to_string(), e))?;
            let conn = rustls::ClientConnection::new(cfg, name).map_err(Reason::Tls)?;
            Ok(Stream { sock, conn })
        }

        pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            loop {
                match self.conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                match self.conn.read_tls(&mut self.sock) {
                    Ok(0) => return Ok(0),
                    Ok(_) => {
                        self.conn
                            .process_new_packets()
                            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                        // Handshake answers, alerts.
                        self.flush()?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }

        pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = self.conn.writer().write(buf)?;
            self.flush()?;
            if n == 0 && !buf.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        }

        pub fn flush(&mut self) -> io::Result<()> {
            while self.conn.wants_write() {
                match self.conn.write_tls(&mut self.sock) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_broker() {
        assert_eq!(host_of("mqtt.example.org:8883"), "mqtt.example.org");
        assert_eq!(host_of("mqtt.example.org"), "mqtt.example.org");
        assert_eq!(host_of("127.0.0.1:8883"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8883"), "::1");
        assert_eq!(host_of("::1"), "::1");
    }
}
