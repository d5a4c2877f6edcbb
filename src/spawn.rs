//! The one place that builds child processes.
//!
//! Each child gets: its own process group (so a timeout kills grandchildren too),
//! stdin `/dev/null`, a cleared environment plus `PATH` and the `CRD_*` variables the
//! caller passes, cwd = its module directory, and rlimits set between fork and exec
//! (`sys::install_limits`). stdout and stderr share one pipe whose read end is
//! non-blocking and goes into the poll loop; the write end stays blocking, as a child
//! expects. After spawn only `(pid, pipe)` is kept: crd reaps with `waitpid` itself
//! and never calls `Child::wait`.

use crate::sys::{self, Limits};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

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

pub fn spawn(spec: &Spec<'_>) -> io::Result<Spawned> {
    let mut cmd = Command::new(spec.program);
    cmd.args(spec.args).current_dir(spec.dir).env_clear();
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    cmd.env("PATH", path);
    for (k, v) in spec.env {
        cmd.env(k, v);
    }
    if spec.own_group {
        cmd.process_group(0);
    }
    sys::install_limits(&mut cmd, spec.limits);
    let mut output = None;
    if spec.streams == Streams::Capture {
        let (tx, rx) = mio::unix::pipe::new()?;
        // mio makes both ends non-blocking; the child's end must block like any stdout.
        tx.set_nonblocking(false)?;
        let tx = OwnedFd::from(tx);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(tx.try_clone()?))
            .stderr(Stdio::from(tx));
        output = Some(rx);
    }
    let child = cmd.spawn()?;
    // `cmd` (holding the pipe's write end) is dropped on return, so EOF is seen once
    // the child and its descendants close it. `child` is dropped without waiting.
    Ok(Spawned {
        pid: child.id(),
        output,
    })
}
