//! What a module is, as a value: its name, directory, executables and settings, and
//! which of its executables a run is. Discovery (reading `modules_dir`) is
//! `host::modules`; this file touches no file.

use crate::core::config::ModuleSettings;
use std::path::PathBuf;

/// A scheduled module: `<modules_dir>/<name>/` with an executable `check`, an
/// optional `response`, and its merged settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub dir: PathBuf,
    pub check: PathBuf,
    pub response: Option<PathBuf>,
    pub settings: ModuleSettings,
}

/// Which executable of a module a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Check,
    Response,
    /// A support module (`crd -x`), an install script, or a tool `crd --install` runs.
    Support,
}
