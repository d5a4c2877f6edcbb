//! The one rule for files that come from a stranger, shared by the tar reader and
//! the staging copy of `crd --install`, so the two cannot drift apart: only the nine
//! permission bits (a setuid, setgid or sticky bit is refused, whatever the file's
//! kind; installed modes are normalized to 0755/0644 anyway, so these bits could
//! only ever be a surprise), and symlinks that stay inside the module.

use crate::install::error::{Error, Why};
use std::path::{Component, Path};

/// `Err` naming `shown` when `mode` carries a setuid, setgid or sticky bit.
pub fn mode_allowed(shown: &str, mode: u32) -> Result<(), Error> {
    if mode & 0o7000 != 0 {
        return Err(Error::at(shown, Why::Mode(mode & 0o7777)));
    }
    Ok(())
}

/// Whether symlink `link` (components) pointing at `target` stays inside the tree.
pub fn link_stays_inside(link: &[String], target: &str) -> bool {
    if target.starts_with('/') || target.is_empty() {
        return false;
    }
    let mut at: Vec<&str> = link[..link.len().saturating_sub(1)]
        .iter()
        .map(String::as_str)
        .collect();
    for c in Path::new(target).components() {
        match c {
            Component::Normal(s) => at.push(s.to_str().unwrap_or("\0")),
            Component::CurDir => {}
            Component::ParentDir => {
                if at.pop().is_none() {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_permission_bits_are_allowed() {
        assert!(mode_allowed("m", 0o755).is_ok());
        assert!(mode_allowed("m", 0o777).is_ok());
        for bad in [0o4755, 0o2755, 0o1755, 0o6777] {
            let e = mode_allowed("sub/m", bad).unwrap_err().to_string();
            assert!(e.starts_with("sub/m: setuid, setgid or sticky bit"), "{e}");
        }
    }

    #[test]
    fn link_targets_are_resolved_lexically() {
        let c = |s: &str| s.split('/').map(String::from).collect::<Vec<_>>();
        assert!(link_stays_inside(&c("a/b/l"), "../x"));
        assert!(link_stays_inside(&c("a/l"), "../x"));
        assert!(!link_stays_inside(&c("a/l"), "../../x"));
        assert!(!link_stays_inside(&c("l"), "/bin/sh"));
    }
}
