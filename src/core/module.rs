//! What a module is, as a value: its name, directory, executables and settings, and
//! which of its executables a run is. Discovery (reading `modules_dir`) is
//! `host::modules`; this file touches no file.

use crate::core::config::ModuleSettings;
use std::path::PathBuf;

/// A module: `<modules_dir>/<name>/` with an executable `check`, an optional
/// `response`, and its merged settings. A scheduled module always has a `check`;
/// a subscribed one (`settings.subscribe`) may have none: every message is a hit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub dir: PathBuf,
    pub check: Option<PathBuf>,
    pub response: Option<PathBuf>,
    pub settings: ModuleSettings,
}

impl Module {
    /// Runs on messages (`subscribe`) rather than on a schedule.
    pub fn subscribed(&self) -> bool {
        !self.settings.subscribe.is_empty()
    }

    /// Due on a schedule: enabled and not subscribed.
    pub fn scheduled(&self) -> bool {
        self.settings.enabled && !self.subscribed()
    }
}

/// Which executable of a module a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Check,
    Response,
    /// A support module (`crd -x`), an install script, or a tool `crd --install` runs.
    Support,
}

impl Role {
    /// The name `crd status` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Check => "check",
            Role::Response => "response",
            Role::Support => "support",
        }
    }
}
