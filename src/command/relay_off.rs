//! The relay of a build without the collector (routers): a type with no values,
//! so every method is unreachable and compiles to nothing; `open` says why if it
//! is ever asked. A router's `crd send` publishes straight to the broker.

use crate::command::error::{Error, Reason};
use crate::core::status::Status;
use crate::mqtt::forward::Forwarder;
use std::time::Instant;

/// No relay: never made.
pub enum Relay {}

impl Relay {
    pub fn open(_: &std::path::Path, _: &str, _: Instant) -> Result<Relay, Error> {
        Err(Reason::NoCollector.into())
    }

    pub fn filter(&self) -> String {
        match *self {}
    }

    pub fn is_reply(&self, _: &str) -> bool {
        match *self {}
    }

    pub fn queue(&mut self, _: &str, _: &[u8], _: Instant) -> Result<String, Error> {
        match *self {}
    }

    pub fn pump(&mut self, _: &mut Forwarder, _: Instant, _: u64) {
        match *self {}
    }

    pub fn observe(&mut self, _: &[u8]) {
        match *self {}
    }

    pub fn after_input(&mut self) {
        match *self {}
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match *self {}
    }

    pub fn replies(&self, _: Option<&str>) -> Result<String, Error> {
        match *self {}
    }

    pub fn status(&self, _: &mut Status) {
        match *self {}
    }
}
