//! The one file that holds `unsafe`: thin wrappers over the system calls std does not
//! offer: spawning a child with `clone(CLONE_VM | CLONE_VFORK)` (rlimits, process
//! group, stdio and cwd set between clone and exec), process-group kills, reaping any
//! child, and a few process queries.
//!
//! Every block carries a `// SAFETY:` line. The spawned child shares crd's memory
//! until it execs, so `child_main` only makes system calls on data the parent
//! prepared (no allocation, no locks, no panics), as musl's and glibc's `posix_spawn`
//! do. The parent is suspended by the kernel meanwhile (`CLONE_VFORK`), which is what
//! makes sharing the memory sound.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Resource limits applied to a child between clone and exec.
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

fn set_limits(limits: &Limits) -> io::Result<()> {
    setrlimit(libc::RLIMIT_AS, limits.address_space)?;
    setrlimit(libc::RLIMIT_CPU, u64::from(limits.cpu_seconds))?;
    setrlimit(libc::RLIMIT_NOFILE, u64::from(limits.open_files))?;
    setrlimit(libc::RLIMIT_FSIZE, limits.file_size)?;
    setrlimit(libc::RLIMIT_CORE, 0)?;
    if limits.processes > 0 {
        setrlimit(libc::RLIMIT_NPROC, u64::from(limits.processes))?;
    }
    Ok(())
}

/// Everything a child needs, prepared by the parent: the child may not allocate.
pub struct ExecPlan<'a> {
    pub path: &'a CStr,
    /// Null-terminated.
    pub argv: &'a [*const c_char],
    /// Null-terminated.
    pub envp: &'a [*const c_char],
    pub dir: &'a CStr,
    /// Descriptors for stdin, stdout, stderr; -1 inherits crd's.
    pub stdio: [RawFd; 3],
    pub own_group: bool,
    pub limits: Limits,
}

/// Bytes of the stack the child runs on until it execs.
pub const CHILD_STACK_BYTES: usize = 64 * 1024;

struct ChildArgs<'a> {
    plan: &'a ExecPlan<'a>,
    /// The signal mask to restore right before exec.
    mask: libc::sigset_t,
    /// errno of the step that failed, written by the child; 0 if it exec'd.
    err: c_int,
}

/// Starts `plan` and returns the child's pid once it has exec'd. If any step before
/// exec fails, the child is reaped and its errno returned. `stack` is the child's
/// stack until exec; it is free again when this returns.
pub fn spawn(plan: &ExecPlan<'_>, stack: &mut [u8]) -> io::Result<u32> {
    assert!(
        plan.argv.last() == Some(&std::ptr::null()),
        "argv is null-terminated"
    );
    assert!(
        plan.envp.last() == Some(&std::ptr::null()),
        "envp is null-terminated"
    );
    // SAFETY: sigset_t is plain data; sigfillset/pthread_sigmask only write to it.
    let (mut all, mut old): (libc::sigset_t, libc::sigset_t) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: valid pointers to sigset_t values on this stack.
    unsafe {
        libc::sigfillset(&mut all);
        // Block every signal so no handler of crd's runs in the child before exec.
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let mut args = ChildArgs {
        plan,
        mask: old,
        err: 0,
    };
    // Stacks grow down on every Linux target crd supports; align the top to 16.
    let top = ((stack.as_mut_ptr() as usize + stack.len()) & !15) as *mut c_void;
    // SAFETY: `child_main` only reads `args` and the plan (alive on this frame, and
    // the parent is suspended until the child execs or exits: CLONE_VFORK), writes
    // `args.err`, and runs on `stack`, which outlives the call.
    let pid = unsafe {
        libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw mut args).cast::<c_void>(),
        )
    };
    let clone_err = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    if pid < 0 {
        return Err(clone_err);
    }
    // SAFETY: the child wrote `err` before exec or _exit; the kernel resumed us after.
    let err = unsafe { std::ptr::read_volatile(&raw const args.err) };
    if err != 0 {
        let mut status = 0;
        // SAFETY: the child has exited (_exit after the failure); this reaps it.
        unsafe {
            libc::waitpid(pid, &mut status, 0);
        }
        return Err(io::Error::from_raw_os_error(err));
    }
    Ok(pid as u32)
}

extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `ChildArgs` the parent passed; the parent is suspended.
    let a = unsafe { &mut *arg.cast::<ChildArgs<'_>>() };
    let p = a.plan;
    let fail = |a: &mut ChildArgs<'_>| -> c_int {
        let e = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL);
        // SAFETY: shared memory the parent reads after we exit; then leave without
        // running any of crd's exit code.
        unsafe {
            std::ptr::write_volatile(&raw mut a.err, if e == 0 { libc::EINVAL } else { e });
            libc::_exit(127)
        }
    };
    // SAFETY (this block): system calls on descriptors and C strings the parent
    // prepared; none allocates.
    unsafe {
        // Handlers and the ignored SIGPIPE are crd's, not the child's.
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in [
            libc::SIGPIPE,
            libc::SIGCHLD,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
        ] {
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
        }
        if p.own_group && libc::setpgid(0, 0) != 0 {
            return fail(a);
        }
        for (target, &fd) in p.stdio.iter().enumerate() {
            let target = target as c_int;
            if fd < 0 {
                continue;
            }
            if fd == target {
                // dup2 onto itself keeps FD_CLOEXEC: clear it instead.
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return fail(a);
                }
            } else if libc::dup2(fd, target) < 0 {
                return fail(a);
            }
        }
        if libc::chdir(p.dir.as_ptr()) != 0 {
            return fail(a);
        }
        if set_limits(&p.limits).is_err() {
            return fail(a);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &a.mask, std::ptr::null_mut());
        libc::execve(p.path.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
    }
    fail(a)
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

/// A close-on-exec pipe: (read end, write end), both blocking.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
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

/// Takes an exclusive `flock` on `fd` without waiting: `Ok(false)` when another
/// process holds it. The lock lives as long as the open file description.
pub fn try_lock_exclusive(fd: RawFd) -> io::Result<bool> {
    // SAFETY: flock only reads the integer fd; an invalid fd is reported as EBADF.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}
