//! Fuzz target: the tar reader of `crd --install` never panics on any bytes, and
//! whatever it accepts stays inside the destination: every entry it leaves is a
//! directory, a regular file without setuid/setgid bits, or a symlink that resolves
//! inside the tree. Each input is extracted into a fresh directory, removed after.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn check(root: &Path, dir: &Path, rel: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let md = std::fs::symlink_metadata(e.path()).unwrap();
        rel.push(name);
        if md.file_type().is_symlink() {
            let t = std::fs::read_link(e.path()).unwrap();
            assert!(
                crd::install::safety::link_stays_inside(rel, &t.to_string_lossy()),
                "{rel:?} -> {t:?} leaves the tree"
            );
        } else if md.is_dir() {
            check(root, &e.path(), rel);
        } else {
            assert!(md.is_file(), "{rel:?} is not a file");
            assert_eq!(md.permissions().mode() & 0o7000, 0, "{rel:?} has setuid");
        }
        rel.pop();
    }
}

fuzz_target!(|data: &[u8]| {
    let base = std::env::temp_dir().join(format!("crd-fuzz-tar-{}", std::process::id()));
    let dest = base.join("x");
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(&dest).unwrap();
    let _ = crd::install::tar::extract(&mut &data[..], &dest, 1 << 20);
    check(&dest, &dest, &mut Vec::new());
    // Nothing beside the destination either.
    assert_eq!(std::fs::read_dir(&base).unwrap().count(), 1, "wrote outside");
    std::fs::remove_dir_all(&dest).unwrap();
});
