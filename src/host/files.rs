//! Small reads from the host's files that several subsystems share: a whole text
//! file within a byte bound, the config file, and the node name.

use crate::core::config::{self, Config};
use std::fs;
use std::io::{self, Read};
use std::path::Path;

/// Reads a whole text file of at most `max` bytes; a larger file is an error, not a
/// truncation.
pub fn read_bounded(path: &Path, max: u64) -> io::Result<String> {
    let f = fs::File::open(path)?;
    let mut s = String::new();
    f.take(max + 1).read_to_string(&mut s)?;
    if s.len() as u64 > max {
        return Err(io::Error::other(format!("larger than {max} bytes")));
    }
    Ok(s)
}

/// Reads and parses a config file; a missing file means all defaults.
pub fn load_config(path: &Path) -> Result<Config, String> {
    match read_bounded(path, config::MAX_CONFIG_BYTES) {
        Ok(text) => config::parse_config(&text, path).map_err(|e| e.to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Config::defaults(path)),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The node name: `node` from the config, else the kernel's hostname.
pub fn node_name(cfg: &Config) -> String {
    if !cfg.node.is_empty() {
        return cfg.node.clone();
    }
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
