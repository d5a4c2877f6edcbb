//! The MQTT side: the sans-IO session and its packet codec, what goes on the wire
//! (topics and JSON), the broker connection in the loop, the transport (plain TCP
//! or TLS), the routers' resolver of the broker's name (DNS over UDP), and
//! (collector builds) a short foreground connection for `crd send`.

#[cfg(feature = "collector")]
pub mod client;
pub mod codec;
pub mod diag;
pub mod dns;
pub mod error;
pub mod forward;
pub mod resolv;
pub mod session;
pub mod transport;
pub mod wire;
