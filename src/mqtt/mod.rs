//! The MQTT side: the sans-IO session, what goes on the wire (topics and JSON), the
//! broker connection in the loop, the transport (plain TCP or TLS), and a short
//! foreground connection for `crd send`.

pub mod client;
pub mod forward;
pub mod session;
pub mod transport;
pub mod wire;
