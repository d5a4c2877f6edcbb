//! Fuzz target: the config parsers never panic on any bytes, and every error they
//! report points at a line that exists.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let lines = text.lines().count() as u32;
    if let Err(e) = crd::core::config::parse_config(text, Path::new("crd.conf")) {
        for e in &e.0 {
            assert!(e.line >= 1 && e.line <= lines.max(1), "{e}");
        }
    }
    let _ = crd::core::config::parse_module_conf(text, Path::new("module.conf"));
    let _ = crd::core::config::parse_duration(text);
    let _ = crd::core::config::parse_size(text);
});
