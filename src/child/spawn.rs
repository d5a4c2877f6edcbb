//! The one place that builds child processes.
//!
//! Each child gets: its own process group (so a timeout kills grandchildren too),
//! stdin `/dev/null`, a cleared environment plus `PATH` and the `CRD_*` variables the
//! caller passes, cwd = its module directory, and rlimits set between clone and exec.
//! stdout and stderr share one pipe whose read end is non-blocking and goes into the
//! poll loop; the child sets its write end back to blocking, as a program expects.
//! After spawn the caller keeps the `Child` (pid, and the memory it runs on until
//! exec) and the pipe; crd reaps with `waitpid` itself and hands the `Child` back to
//! `Spawner::release`, which reports a failed exec and recycles the memory.
//!
//! Why not `std::process::Command`: with rlimits to set before exec it must `fork`,
//! which copies crd's page tables, takes copy-on-write faults afterwards and waits on
//! an error socket: measured at about 3x the daemon's CPU per check run of the
//! `clone(CLONE_VM)` path in `sys::spawn` (ARCHITECTURE.md, Measured). Everything
//! the child needs is prepared here, in the parent, because the child may not
//! allocate.

use crate::child::recipe::Recipe;
use crate::child::sys::{self, Child, ChildMem, ExecPlan, Reaped};
use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;

// Named here too, where `crd --install` imports it from.
pub use crate::child::recipe::Streams;

/// PATH for children when crd itself has none.
pub const DEFAULT_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

pub struct Spawned {
    /// The running child; give it back to `Spawner::release` once it is reaped.
    pub child: Child,
    /// The read end of the shared stdout/stderr pipe (non-blocking), with `Capture`.
    pub output: Option<mio::unix::pipe::Receiver>,
}

/// A file holding `bytes`, positioned at its start, for a child's stdin or its
/// descriptor 3: a memfd, or where the kernel has none (before 3.17) an unlinked
/// file in the temp directory. A file, not a pipe: the child reads it at its own pace and crd never
/// waits for a slow reader; its size is the recipe's input, at most `output_limit`.
fn input_file(bytes: &[u8]) -> io::Result<File> {
    let mut f = match sys::memfd() {
        Ok(fd) => File::from(fd),
        Err(_) => {
            let p = std::env::temp_dir().join(format!(
                ".crd-input-{}-{:x}",
                std::process::id(),
                bytes.as_ptr() as usize
            ));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(&p)?;
            let _ = std::fs::remove_file(&p);
            f
        }
    };
    f.write_all(bytes)?;
    f.seek(io::SeekFrom::Start(0))?;
    Ok(f)
}

/// Child memory kept for reuse; more runs at once allocate more, freed on return.
const SPARE_CHILD_MEMS: usize = 8;

/// What every spawn reuses: `/dev/null`, crd's PATH, and the memory children run on.
pub struct Spawner {
    devnull: File,
    path_var: Vec<u8>,
    // Boxed: a child is handed its memory by address, which must not move.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<ChildMem>>,
}

impl Spawner {
    pub fn new() -> io::Result<Spawner> {
        let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
        Ok(Spawner {
            devnull: File::open("/dev/null")?,
            path_var: path.as_bytes().to_vec(),
            spare: Vec::new(),
        })
    }

    /// Starts the child and returns without waiting for its exec: a failure between
    /// clone and exec (no such file, not executable, a limit refused) comes back from
    /// `release` once the child is reaped; it exits with 127.
    pub fn spawn(&mut self, spec: &Recipe) -> io::Result<Spawned> {
        let args: Vec<&[u8]> = spec.args.iter().map(|a| a.as_bytes()).collect();
        let env: Vec<(&[u8], &[u8])> = spec
            .env
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_os_str().as_bytes()))
            .collect();
        // stdin: the recipe's input as a file of its own, else /dev/null. Kept open
        // until the clone took its copy of the descriptor table.
        let input = match &spec.input {
            Some(bytes) if spec.streams != Streams::Inherit => Some(input_file(bytes)?),
            _ => None,
        };
        let stdin = input
            .as_ref()
            .map_or(self.devnull.as_raw_fd(), |f| f.as_raw_fd());
        // Descriptor 3 (a response's check output), likewise a file of its own.
        let fd3 = match &spec.fd3 {
            Some(bytes) if spec.streams != Streams::Inherit => Some(input_file(bytes)?),
            _ => None,
        };
        let fd3_raw = fd3.as_ref().map_or(-1, |f| f.as_raw_fd());
        let (stdio, pipe) = match spec.streams {
            Streams::Inherit => ([-1, -1, -1, -1], None),
            Streams::StdoutTo(fd) => {
                let (rx, tx) = sys::pipe()?;
                ([stdin, fd, tx.as_raw_fd(), fd3_raw], Some((tx, rx)))
            }
            Streams::Capture => {
                // Both ends close-on-exec and non-blocking (the child's copies are
                // dup'ed onto 1 and 2, and set back to blocking there).
                let (rx, tx) = sys::pipe()?;
                (
                    [stdin, tx.as_raw_fd(), tx.as_raw_fd(), fd3_raw],
                    Some((tx, rx)),
                )
            }
        };
        let plan = ExecPlan {
            path: spec.program.as_os_str().as_bytes(),
            args: &args,
            path_var: &self.path_var,
            env: &env,
            dir: spec.dir.as_os_str().as_bytes(),
            stdio,
            blocking: pipe.as_ref().map_or(-1, |(tx, _)| tx.as_raw_fd()),
            own_group: spec.own_group,
            limits: spec.limits,
        };
        let mem = self.spare.pop().unwrap_or_else(ChildMem::new);
        let child = match sys::spawn(&plan, mem) {
            Ok(c) => c,
            Err((e, mem)) => {
                self.spare.push(mem);
                return Err(e);
            }
        };
        // Dropping our copy of the write end lets EOF come once the child and its
        // descendants close theirs.
        let output = pipe.map(|(tx, rx)| {
            drop(tx);
            mio::unix::pipe::Receiver::from(rx)
        });
        Ok(Spawned { child, output })
    }

    /// Takes back the memory of a reaped child; returns why it did not exec, if so
    /// ("cannot start PROGRAM: ERROR", as for a spawn that fails at once).
    pub fn release(&mut self, child: Child, reaped: &Reaped) -> Option<String> {
        let (err, mem) = child.release(reaped);
        let msg = err.map(|e| format!("cannot start {}: {e}", mem.program()));
        if self.spare.len() < SPARE_CHILD_MEMS {
            self.spare.push(mem);
        }
        msg
    }
}
