//! The one file that holds `unsafe`: thin wrappers over the system calls std does not
//! offer (rlimits in the child, process-group kills, reaping any child).
//!
//! Every block carries a `// SAFETY:` line. Nothing here allocates between fork and
//! exec: `install_limits` copies the limits into the closure before the fork and the
//! closure only calls `setrlimit`, which is async-signal-safe.

#![allow(unsafe_code)]

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Resource limits applied to a child between fork and exec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `RLIMIT_AS`, bytes.
    pub address_space: u64,
    /// `RLIMIT_CPU`, seconds.
    pub cpu_seconds: u32,
    /// `RLIMIT_NOFILE`, descriptors.
    pub open_files: u32,
    /// `RLIMIT_FSIZE`, bytes.
    pub file_size: u64,
    /// `RLIMIT_NPROC`, processes of the user; 0 leaves it as inherited.
    pub processes: u32,
}

/// Makes `cmd` set `limits` (and no core files) in the child before exec.
pub fn install_limits(cmd: &mut Command, limits: Limits) {
    let set = move || -> io::Result<()> {
        setrlimit(libc::RLIMIT_AS, limits.address_space)?;
        setrlimit(libc::RLIMIT_CPU, u64::from(limits.cpu_seconds))?;
        setrlimit(libc::RLIMIT_NOFILE, u64::from(limits.open_files))?;
        setrlimit(libc::RLIMIT_FSIZE, limits.file_size)?;
        setrlimit(libc::RLIMIT_CORE, 0)?;
        if limits.processes > 0 {
            setrlimit(libc::RLIMIT_NPROC, u64::from(limits.processes))?;
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec; it only calls
    // setrlimit (async-signal-safe), touches no locks and allocates nothing.
    unsafe {
        cmd.pre_exec(set);
    }
}

// The resource constant's type differs between libc flavours (glibc: u32, musl: i32).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
type Resource = libc::c_int;

fn setrlimit(resource: Resource, value: u64) -> io::Result<()> {
    // rlim_t is 32 bits on some 32-bit targets: clamp rather than wrap.
    let v = libc::rlim_t::try_from(value).unwrap_or(libc::RLIM_INFINITY);
    // Never raise the hard limit (that needs privileges and would fail the exec);
    // lower both soft and hard to the smaller of the two.
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `cur` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(resource, &mut cur) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let v = if cur.rlim_max == libc::RLIM_INFINITY {
        v
    } else {
        v.min(cur.rlim_max)
    };
    let lim = libc::rlimit {
        rlim_cur: v,
        rlim_max: v,
    };
    // SAFETY: `lim` is a valid rlimit; setrlimit only reads it.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `sig` to every process in group `pgid`. A group that is already gone is not
/// an error.
pub fn kill_group(pgid: u32, sig: libc::c_int) -> io::Result<()> {
    let pgid =
        libc::pid_t::try_from(pgid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if pgid <= 1 {
        // killpg(0 or 1) would hit our own group or everything: never.
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: killpg has no memory-safety preconditions; pgid > 1 was checked.
    if unsafe { libc::killpg(pgid, sig) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
    }
    Ok(())
}

/// Sends `sig` to one process.
pub fn kill_pid(pid: u32, sig: libc::c_int) -> io::Result<()> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if pid <= 1 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: kill has no memory-safety preconditions; pid > 1 was checked.
    if unsafe { libc::kill(pid, sig) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
    }
    Ok(())
}

/// How a reaped child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStatus {
    Exited(i32),
    Signaled(i32),
}

/// Reaps one exited child of this process without blocking: `None` when no child has
/// exited (or there are no children). Call in a loop after SIGCHLD: one signal can
/// stand for many exits.
pub fn reap_any() -> Option<(u32, WaitStatus)> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid, writable int; WNOHANG never blocks.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            let ws = if libc::WIFEXITED(status) {
                WaitStatus::Exited(libc::WEXITSTATUS(status))
            } else if libc::WIFSIGNALED(status) {
                WaitStatus::Signaled(libc::WTERMSIG(status))
            } else {
                // Stopped/continued are not reported without WUNTRACED: not reached.
                continue;
            };
            return Some((pid as u32, ws));
        }
        if pid == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return None;
    }
}

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and has no preconditions.
    unsafe { libc::geteuid() }
}

/// Whether standard input is a terminal.
pub fn stdin_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor number.
    unsafe { libc::isatty(0) == 1 }
}

/// This process's peak resident set size, in KiB, from `getrusage`.
pub fn max_rss_kib() -> u64 {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    ru.ru_maxrss.max(0) as u64
}

/// This process's own user + system CPU time, in microseconds (children excluded).
pub fn self_cpu_us() -> u64 {
    // SAFETY: as above.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    let us = |tv: libc::timeval| tv.tv_sec.max(0) as u64 * 1_000_000 + tv.tv_usec.max(0) as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// Removes a file mode's group/other bits from the process umask for sockets we create.
pub fn restrictive_umask() -> u32 {
    // SAFETY: umask cannot fail; it returns the previous mask.
    unsafe { libc::umask(0o077) as u32 }
}

/// Restores a umask returned by `restrictive_umask`.
pub fn set_umask(mask: u32) {
    // SAFETY: as above.
    unsafe {
        libc::umask(mask as libc::mode_t);
    }
}
