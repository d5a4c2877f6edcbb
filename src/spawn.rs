//! The one place that builds child processes.
//!
//! Each child gets: its own process group (so a timeout kills grandchildren too),
//! stdin `/dev/null`, a cleared environment plus `PATH` and the `CRD_*` variables the
//! caller passes, cwd = its module directory, and rlimits set between clone and exec.
//! stdout and stderr share one pipe whose read end is non-blocking and goes into the
//! poll loop; the write end stays blocking, as a child expects. After spawn only
//! `(pid, pipe)` is kept: crd reaps with `waitpid` itself.
//!
//! Why not `std::process::Command`: with rlimits to set before exec it must `fork`,
//! which copies crd's page tables, takes copy-on-write faults afterwards and waits on
//! an error socket: measured at about 3x the daemon's CPU per check run of the
//! `clone(CLONE_VM | CLONE_VFORK)` path in `sys::spawn` (ARCHITECTURE.md, Measured).
//! Everything the child needs is prepared here, in the parent, because the child may
//! not allocate.

use crate::sys::{self, ExecPlan, Limits};
use std::ffi::{CString, OsStr, OsString, c_char};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// PATH for children when crd itself has none.
pub const DEFAULT_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// Open descriptors a child may hold (`RLIMIT_NOFILE`).
pub const CHILD_OPEN_FILES: u32 = 1024;

/// How the child's standard streams are wired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Streams {
    /// stdin `/dev/null`; stdout and stderr into one pipe read by the poll loop.
    Capture,
    /// All three inherited from crd (`crd -x`).
    Inherit,
    /// stdin `/dev/null`, stdout into this open file (crd keeps owning it), stderr
    /// into the pipe read by the loop (`gzip -dc` for `crd --install`).
    StdoutTo(std::os::fd::RawFd),
}

pub struct Spec<'a> {
    pub program: &'a Path,
    pub args: &'a [OsString],
    pub dir: &'a Path,
    /// Variables besides `PATH`; the rest of crd's environment is not passed on.
    pub env: &'a [(&'a str, &'a OsStr)],
    pub limits: Limits,
    pub streams: Streams,
    /// Put the child in a process group of its own (always, except `crd -x` on a
    /// terminal, where the child must stay in the terminal's foreground group).
    pub own_group: bool,
}

pub struct Spawned {
    pub pid: u32,
    /// The read end of the shared stdout/stderr pipe (non-blocking), with `Capture`.
    pub output: Option<mio::unix::pipe::Receiver>,
}

/// What every spawn reuses: `/dev/null`, crd's PATH, and the child's stack.
pub struct Spawner {
    devnull: File,
    path_var: CString,
    stack: Box<[u8]>,
}

/// A C string from bytes; a NUL inside (a check may print one, and its output
/// becomes `CRD_CHECK_OUTPUT`) is dropped rather than failing the spawn.
fn cstring(bytes: &[u8]) -> CString {
    match CString::new(bytes) {
        Ok(c) => c,
        Err(_) => CString::new(
            bytes
                .iter()
                .copied()
                .filter(|&b| b != 0)
                .collect::<Vec<u8>>(),
        )
        .expect("NUL bytes were removed"),
    }
}

impl Spawner {
    pub fn new() -> io::Result<Spawner> {
        let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
        let mut var = b"PATH=".to_vec();
        var.extend_from_slice(path.as_bytes());
        Ok(Spawner {
            devnull: File::open("/dev/null")?,
            path_var: cstring(&var),
            stack: vec![0u8; sys::CHILD_STACK_BYTES].into_boxed_slice(),
        })
    }

    pub fn spawn(&mut self, spec: &Spec<'_>) -> io::Result<Spawned> {
        let path = cstring(spec.program.as_os_str().as_bytes());
        let dir = cstring(spec.dir.as_os_str().as_bytes());
        let args: Vec<CString> = spec.args.iter().map(|a| cstring(a.as_bytes())).collect();
        let env: Vec<CString> = spec
            .env
            .iter()
            .map(|(k, v)| {
                let mut kv = Vec::with_capacity(k.len() + 1 + v.len());
                kv.extend_from_slice(k.as_bytes());
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                cstring(&kv)
            })
            .collect();
        let mut argv: Vec<*const c_char> = Vec::with_capacity(args.len() + 2);
        argv.push(path.as_ptr());
        argv.extend(args.iter().map(|a| a.as_ptr()));
        argv.push(std::ptr::null());
        let mut envp: Vec<*const c_char> = Vec::with_capacity(env.len() + 2);
        envp.push(self.path_var.as_ptr());
        envp.extend(env.iter().map(|e| e.as_ptr()));
        envp.push(std::ptr::null());

        let (stdio, pipe) = match spec.streams {
            Streams::Inherit => ([-1, -1, -1], None),
            Streams::StdoutTo(fd) => {
                let (rx, tx) = sys::pipe()?;
                let rx = mio::unix::pipe::Receiver::from(rx);
                rx.set_nonblocking(true)?;
                let null = self.devnull.as_raw_fd();
                ([null, fd, tx.as_raw_fd()], Some((tx, rx)))
            }
            Streams::Capture => {
                // Both ends close-on-exec (the child's copies are dup2'ed onto 1 and
                // 2); only crd's read end is non-blocking: the child's must block.
                let (rx, tx) = sys::pipe()?;
                let rx = mio::unix::pipe::Receiver::from(rx);
                rx.set_nonblocking(true)?;
                let null = self.devnull.as_raw_fd();
                ([null, tx.as_raw_fd(), tx.as_raw_fd()], Some((tx, rx)))
            }
        };
        let plan = ExecPlan {
            path: &path,
            argv: &argv,
            envp: &envp,
            dir: &dir,
            stdio,
            own_group: spec.own_group,
            limits: spec.limits,
        };
        let pid = sys::spawn(&plan, &mut self.stack)?;
        // Dropping our copy of the write end lets EOF come once the child and its
        // descendants close theirs.
        let output = pipe.map(|(tx, rx)| {
            drop(tx);
            rx
        });
        Ok(Spawned { pid, output })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_bytes_are_dropped_not_fatal() {
        assert_eq!(cstring(b"a\0b").as_bytes(), b"ab");
        assert_eq!(cstring(b"plain").as_bytes(), b"plain");
    }
}
