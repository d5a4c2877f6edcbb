//! The MQTT side: the sans-IO session, the broker connection in the loop, and the
//! transport (plain TCP or TLS).

pub mod forward;
pub mod session;
pub mod transport;
