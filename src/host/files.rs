//! Small reads and writes of the host's files that several subsystems share: a
//! whole text file within a byte bound, a file's mode, the config file, the node
//! name, a file replaced whole.

use crate::core::config::{self, Config, ConfigError, ConfigErrors, Shape};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Puts `bytes` at `path` whole: written beside it (`path.tmp`), given `mode`,
/// renamed over it; not synced (for views rewritten within seconds, as the
/// fleet page). On an error the temporary file is removed.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let r = fs::write(&tmp, bytes)
        .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)))
        .and_then(|()| fs::rename(&tmp, path));
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}

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

/// The mode of the file at `path` (`st_mode`: type and permission bits),
/// following symlinks; for secrets that must not be readable by others.
pub fn mode(path: &Path) -> io::Result<u32> {
    Ok(fs::metadata(path)?.mode())
}

/// Reads and parses a config file; a missing file means all defaults. A file
/// that cannot be read is one error of the whole file (line 0: `path: why`).
pub fn load_config(path: &Path) -> Result<Config, ConfigErrors> {
    match read_bounded(path, config::MAX_CONFIG_BYTES) {
        Ok(text) => config::parse_config(&text, path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Config::defaults(path)),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            key: None,
            msg: Shape::Read(e).into(),
        }])),
    }
}

/// Bytes of the kernel's hostname read at most (it holds 64).
const HOSTNAME_MAX_BYTES: u64 = 4096;

/// The node name: `node` from the config, else the kernel's hostname.
pub fn node_name(cfg: &Config) -> String {
    if !cfg.node.is_empty() {
        return cfg.node.clone();
    }
    read_bounded(Path::new("/proc/sys/kernel/hostname"), HOSTNAME_MAX_BYTES)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The node name Home Assistant knew this crd by before, when it is not
/// `node` (a node renamed: its old entities are to be emptied); `node` is kept
/// in `spool_dir` for the next start (once, when it changed). A file that
/// cannot be read or written costs only that sweep (logged).
pub fn ha_node(spool_dir: &Path, node: &str) -> Option<String> {
    let path = spool_dir.join(crate::spool::HA_NODE_FILE);
    let old = read_bounded(&path, 256).ok();
    let old = old.as_deref().map(str::trim_end).filter(|o| !o.is_empty());
    if old == Some(node) {
        return None;
    }
    if let Err(e) = replace(&path, format!("{node}\n").as_bytes(), 0o644) {
        log::warn!("{}: {e}", path.display());
    }
    old.map(str::to_string)
}
