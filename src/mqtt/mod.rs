//! The MQTT side: the sans-IO session, what goes on the wire (topics and JSON), the
//! broker connection in the loop, and the transport (plain TCP or TLS).

pub mod forward;
pub mod session;
pub mod transport;
pub mod wire;
