//! The collector of a build without it (cargo feature `collector` off, as on
//! routers): a type with no values, so every method is unreachable and compiles to
//! nothing; the config refuses `subscribe` in such a build, and `open` says why if
//! it is ever asked.

use crate::child::recipe::{Host, Recipe};
use crate::child::run::Finished;
use crate::collect::Action;
use crate::collect::error::{Error, Reason};
use crate::core::config::Config;
use crate::core::module::Module;
use crate::mqtt::session::Up;
use std::path::Path;
use std::time::Instant;

/// No collector: never made.
pub enum Collector {}

impl Collector {
    pub fn open(_: &Config, _: &str, _: Instant) -> Result<Collector, Error> {
        Err(Reason::NoCollector.into())
    }

    pub fn filters(_: &[Module], _: &str, _: bool) -> Vec<String> {
        Vec::new()
    }

    pub fn wants(_: &[Module], _: &str) -> bool {
        false
    }

    pub fn groups(_: &[Module]) -> Vec<String> {
        Vec::new()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        match *self {}
    }

    pub fn joining(&self) -> bool {
        match *self {}
    }

    pub fn handle_inbound(&mut self, _: u64, _: Up, _: &[Module], _: Instant, _: u64) {
        match *self {}
    }

    pub fn after_input(&mut self, _: Instant) {
        match *self {}
    }

    pub fn paused(&self) -> bool {
        match *self {}
    }

    pub fn wants_redelivery(&mut self, _: Instant) -> bool {
        match *self {}
    }

    pub fn busy(&self) -> bool {
        match *self {}
    }

    pub fn pump(&mut self, _: &[Module], _: Instant, _: u64) {
        match *self {}
    }

    pub fn poll_start(&mut self, _: Host<'_>, _: &[Module], _: Instant) -> Option<Recipe> {
        match *self {}
    }

    pub fn handle_finished(&mut self, _: Finished, _: &[Module], _: Instant, _: u64) {
        match *self {}
    }

    pub fn page_written(&mut self, _: &Path, _: std::io::Result<()>, _: Instant) {
        match *self {}
    }

    pub fn handle_timer(&mut self, _: Instant, _: u64) {
        match *self {}
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match *self {}
    }

    pub fn close(&mut self, _: Instant) {
        match *self {}
    }

    pub fn register(&self, _: &str, _: Option<&str>, _: u64) -> Result<String, Error> {
        match *self {}
    }

    pub fn configure(&mut self, _: &[Module]) {
        match *self {}
    }

    pub fn set_page(&mut self, _: Option<&Path>) {
        match *self {}
    }

    pub fn fleet(&self, _: bool, _: u64) -> String {
        match *self {}
    }

    pub fn status(&self, _: &mut crate::core::status::Status) {
        match *self {}
    }
}
