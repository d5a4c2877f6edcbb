//! The one file that holds `unsafe`: thin wrappers over the system calls std does not
//! offer: spawning a child with `clone(CLONE_VM)` (rlimits, process group, stdio and
//! cwd set between clone and exec), process-group kills, reaping any child, and a few
//! process queries.
//!
//! Every block carries a `// SAFETY:` line. The spawned child shares crd's memory
//! until it execs and, unlike `vfork`, crd does not wait for that exec: it goes on
//! while the child sets itself up. What makes that sound: the child reads only its
//! own `ChildMem` (strings, pointer arrays, limits, stack), which crd leaves alone
//! until the child has been reaped (`Child::release` needs the `Reaped` from
//! `reap_any`); it writes only that stack and one atomic; and it makes its system
//! calls with the bare instruction (`mod raw`), never through libc, whose wrappers
//! would write errno into crd's thread-local memory while crd runs. No allocation,
//! no locks, no panics in the child. Measured against `CLONE_VFORK`, not waiting
//! for the exec cut the daemon's CPU per check run by about a fifth (ARCHITECTURE.md).

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_long, c_void};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

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

/// What to run, as the parent sees it; `spawn` copies it into the child's `ChildMem`.
pub struct ExecPlan<'a> {
    pub path: &'a [u8],
    pub args: &'a [&'a [u8]],
    /// Complete `NAME=value` entries are built from these pairs; `PATH` comes first.
    pub path_var: &'a [u8],
    pub env: &'a [(&'a [u8], &'a [u8])],
    pub dir: &'a [u8],
    /// Descriptors for stdin, stdout, stderr and 3, in that order; -1 inherits
    /// crd's (for 3: none, crd's descriptors are close-on-exec). Each source is
    /// 3 or above (crd's 0-2 stay open), so none is replaced before it is copied.
    pub stdio: [RawFd; 4],
    /// A descriptor whose open file gets `O_NONBLOCK` cleared in the child (the write
    /// end of a pipe made non-blocking for crd's read end); -1 for none.
    pub blocking: RawFd,
    pub own_group: bool,
    pub limits: Limits,
}

/// Bytes of the stack a child runs on until it execs. `child_main` and the raw
/// system calls need 192 bytes in a release build (tests/spawn.rs bounds it).
pub const CHILD_STACK_BYTES: usize = 16 * 1024;
/// Bytes left unused at the top of the child's stack (the MIPS o32 kernel entry
/// reads four words above the stack pointer on every system call).
const STACK_TOP_GAP: usize = 64;
const STACK_MARK: u8 = 0xa5;

/// Everything a child reads until it execs, and the stack it runs on: owned by crd
/// and not touched by crd from `spawn` until the child is reaped (`Child::release`),
/// because the child shares crd's memory (`CLONE_VM`) and runs at the same time.
/// Reused from run to run (the buffers keep their capacity).
pub struct ChildMem {
    /// Every C string the child needs, NUL-terminated, back to back.
    strings: Vec<u8>,
    /// Start offsets in `strings`: path, dir, args..., env...
    starts: Vec<usize>,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    path: *const c_char,
    dir: *const c_char,
    stdio: [RawFd; 4],
    blocking: RawFd,
    own_group: bool,
    limits: Limits,
    /// crd's pid: the child checks, once its parent-death signal is set, that its
    /// parent is still this process (see `child_steps`).
    parent: c_int,
    /// errno of the step that failed, written by the child before it exits with 127;
    /// 0 if it exec'd.
    err: AtomicI32,
    stack: Box<[MaybeUninit<u8>]>,
    /// `mark_stack` ran (tests only): every byte of `stack` is initialized.
    stack_marked: bool,
}

impl ChildMem {
    pub fn new() -> Box<ChildMem> {
        Box::new(ChildMem {
            strings: Vec::new(),
            starts: Vec::new(),
            argv: Vec::new(),
            envp: Vec::new(),
            path: std::ptr::null(),
            dir: std::ptr::null(),
            stdio: [-1; 4],
            blocking: -1,
            own_group: false,
            // Taken once here, not at each start (a system call a run): crd
            // never forks, so the process that made this memory is the one
            // whose children use it.
            parent: std::process::id() as c_int,
            limits: Limits {
                address_space: 0,
                cpu_seconds: 0,
                open_files: 0,
                file_size: 0,
                processes: 0,
            },
            err: AtomicI32::new(0),
            stack: Box::new_uninit_slice(CHILD_STACK_BYTES),
            stack_marked: false,
        })
    }

    /// Appends a C string made of `parts`; NUL bytes inside are dropped (a check may
    /// print one, and its output becomes `CRD_CHECK_OUTPUT`).
    fn push(&mut self, parts: &[&[u8]]) {
        self.starts.push(self.strings.len());
        for p in parts {
            if p.contains(&0) {
                self.strings.extend(p.iter().copied().filter(|&b| b != 0));
            } else {
                self.strings.extend_from_slice(p);
            }
        }
        self.strings.push(0);
    }

    /// Copies `plan` in and points `argv`/`envp` at the copies.
    fn fill(&mut self, plan: &ExecPlan<'_>) {
        self.strings.clear();
        self.starts.clear();
        self.push(&[plan.path]);
        self.push(&[plan.dir]);
        for a in plan.args {
            self.push(&[a]);
        }
        self.push(&[b"PATH=", plan.path_var]);
        for (k, v) in plan.env {
            self.push(&[k, b"=", v]);
        }
        // `strings` no longer grows: pointers into it stay valid.
        let base = self.strings.as_ptr().cast::<c_char>();
        let at = |i: usize| base.wrapping_add(i);
        let nargs = plan.args.len();
        self.path = at(self.starts[0]);
        self.dir = at(self.starts[1]);
        self.argv.clear();
        self.argv.push(self.path);
        self.argv
            .extend(self.starts[2..2 + nargs].iter().map(|&i| at(i)));
        self.argv.push(std::ptr::null());
        self.envp.clear();
        self.envp
            .extend(self.starts[2 + nargs..].iter().map(|&i| at(i)));
        self.envp.push(std::ptr::null());
        self.stdio = plan.stdio;
        self.blocking = plan.blocking;
        self.own_group = plan.own_group;
        self.limits = plan.limits;
        self.err.store(0, Ordering::Relaxed);
    }

    /// Fills the stack with a pattern, so that `stack_used` can tell how deep a child
    /// went (tests/spawn.rs bounds it).
    #[doc(hidden)]
    pub fn mark_stack(&mut self) {
        for b in self.stack.iter_mut() {
            b.write(STACK_MARK);
        }
        self.stack_marked = true;
    }

    /// Bytes of the stack below the top gap that no longer hold `mark_stack`'s
    /// pattern; `None` if it was never marked.
    #[doc(hidden)]
    pub fn stack_used(&self) -> Option<usize> {
        if !self.stack_marked {
            return None;
        }
        let untouched = self
            .stack
            .iter()
            // SAFETY: `mark_stack` initialized every byte (one a child wrote since is
            // initialized too).
            .take_while(|b| unsafe { b.assume_init() } == STACK_MARK)
            .count();
        Some((CHILD_STACK_BYTES - STACK_TOP_GAP).saturating_sub(untouched))
    }

    /// The program as the child was given it, for messages.
    pub fn program(&self) -> String {
        let end = self.strings.iter().position(|&b| b == 0).unwrap_or(0);
        String::from_utf8_lossy(&self.strings[..end]).into_owned()
    }
}

/// A child that may still be running on its `ChildMem`. Dropping it without
/// `release` leaks the memory on purpose: the child may still be reading it.
#[derive(Debug)]
pub struct Child {
    pub pid: u32,
    mem: NonNull<ChildMem>,
}

impl Child {
    /// Takes the memory back once `reaped` shows this child is gone, with the error
    /// of the step before exec that failed, if one did.
    pub fn release(self, reaped: &Reaped) -> (Option<io::Error>, Box<ChildMem>) {
        // Freeing this child's memory on another child's exit could pull the stack
        // from under a child that has not exec'd yet: stop rather than risk it.
        assert_eq!(
            reaped.pid, self.pid,
            "invariant: Child::release takes the Reaped of that same child (run.rs maps pids to runs)"
        );
        // SAFETY: the pointer came from Box::into_raw in `spawn`, and the child that
        // used the memory has exited and been reaped, so nothing else refers to it.
        let mem = unsafe { Box::from_raw(self.mem.as_ptr()) };
        let err = mem.err.load(Ordering::Acquire);
        let err = (err != 0).then(|| io::Error::from_raw_os_error(err));
        (err, mem)
    }
}

/// Set once `clone` refused `CLONE_VM` without `CLONE_VFORK` (qemu's user-mode
/// emulation does); from then on the parent waits for each exec as `vfork` does.
static VFORK_ONLY: AtomicBool = AtomicBool::new(false);

/// Starts the child described by `plan` on `mem` and returns at once, without waiting
/// for its exec: a failure before exec shows up when the child is reaped
/// (`Child::release`). Only a failed `clone` is an error here, and gives `mem` back.
pub fn spawn(
    plan: &ExecPlan<'_>,
    mut mem: Box<ChildMem>,
) -> Result<Child, (io::Error, Box<ChildMem>)> {
    mem.fill(plan);
    // Stacks grow down on every Linux target crd supports; align the top to 16.
    let top = (mem.stack.as_mut_ptr() as usize + CHILD_STACK_BYTES - STACK_TOP_GAP) & !15;
    let mem = Box::into_raw(mem);
    // SAFETY: sigset_t is plain data; sigfillset/pthread_sigmask only write to it.
    let (mut all, mut old): (libc::sigset_t, libc::sigset_t) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: valid pointers to sigset_t values on this stack.
    unsafe {
        libc::sigfillset(&mut all);
        // The child starts with every signal blocked, so no handler of crd's runs in
        // it before it has reset them (it unblocks right before exec).
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let mut pid = -1;
    let mut err = io::Error::from_raw_os_error(libc::EINVAL);
    for vfork in [false, true] {
        if !vfork && VFORK_ONLY.load(Ordering::Relaxed) {
            continue;
        }
        let flags = if vfork {
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD
        } else {
            libc::CLONE_VM | libc::SIGCHLD
        };
        // SAFETY: `child_main` reads only `*mem`, which stays allocated and untouched
        // by crd until the child is reaped (`Child`), writes only its atomic `err`,
        // makes raw system calls (no errno, no locks, no allocation) and runs on the
        // stack inside `*mem`.
        pid = unsafe { libc::clone(child_main, top as *mut c_void, flags, mem.cast::<c_void>()) };
        if pid >= 0 {
            break;
        }
        err = io::Error::last_os_error();
        if vfork || err.raw_os_error() != Some(libc::EINVAL) {
            break;
        }
        VFORK_ONLY.store(true, Ordering::Relaxed);
    }
    // SAFETY: restores the mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    if pid < 0 {
        // SAFETY: no child was created; the memory is ours alone again.
        return Err((err, unsafe { Box::from_raw(mem) }));
    }
    Ok(Child {
        pid: pid as u32,
        // SAFETY: from Box::into_raw, never null.
        mem: unsafe { NonNull::new_unchecked(mem) },
    })
}

extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `ChildMem` the parent passed; only shared reads of it,
    // and the atomic store to `err` below.
    let m = unsafe { &*arg.cast::<ChildMem>() };
    // SAFETY: raw system calls on descriptors and C strings the parent prepared.
    let e = unsafe { child_steps(m) };
    m.err
        .store(if e == 0 { libc::EINVAL } else { e }, Ordering::Release);
    // SAFETY: leaves without running any of crd's exit code.
    unsafe {
        raw::syscall(libc::SYS_exit_group as c_long, 127, 0, 0, 0);
    }
    127
}

/// Kernel `struct sigaction` all zero: SIG_DFL, no flags, empty mask (large enough
/// for every architecture's layout).
static SIG_DFL_ACTION: [u64; 8] = [0; 8];
/// An empty kernel signal set.
static EMPTY_SIGSET: [u64; 2] = [0; 2];
/// The kernel's signal set size: 128 signals on MIPS, 64 elsewhere.
const SIGSET_BYTES: usize = if cfg!(target_arch = "mips") { 16 } else { 8 };

/// The child's steps from clone to exec, as raw system calls (the libc wrappers
/// would write errno, which lives in crd's thread-local memory, shared here).
/// Returns the errno of the step that failed; does not return when exec succeeds.
///
/// Each step is a function of its own, `unsafe` because it only makes sense in
/// the child (in crd it would rewire crd itself), and `#[inline(always)]` so
/// that the child still runs in one stack frame (`CHILD_STACK_BYTES`). A step
/// returns `Err(errno)`, and `?` stops at the first that fails. Nothing here
/// allocates, locks or panics.
unsafe fn child_steps(m: &ChildMem) -> c_int {
    // SAFETY (this block): every pointer passed is to memory in `m` or a static, valid
    // for the call; the descriptors are the child's own copies.
    unsafe {
        if let Err(e) = prepare_exec(m) {
            return e;
        }
        let r = raw::syscall(
            libc::SYS_execve as c_long,
            m.path as usize,
            m.argv.as_ptr() as usize,
            m.envp.as_ptr() as usize,
            0,
        );
        raw::check(r).err().unwrap_or(libc::EINVAL)
    }
}

/// Everything before the exec, in this order: die with crd, default signal
/// handlers, process group, stdio, directory, limits, an empty signal mask.
#[inline(always)]
unsafe fn prepare_exec(m: &ChildMem) -> Result<(), c_int> {
    use raw::check;
    // SAFETY (this block): as in `child_steps`.
    unsafe {
        die_with_parent(m)?;
        default_signal_handlers()?;
        if m.own_group {
            check(raw::syscall(libc::SYS_setpgid as c_long, 0, 0, 0, 0))?;
        }
        wire_stdio(m)?;
        check(raw::syscall(
            libc::SYS_chdir as c_long,
            m.dir as usize,
            0,
            0,
            0,
        ))?;
        set_limits(&m.limits)?;
        let set = EMPTY_SIGSET.as_ptr() as usize;
        check(raw::syscall(
            libc::SYS_rt_sigprocmask as c_long,
            libc::SIG_SETMASK as usize,
            set,
            0,
            SIGSET_BYTES,
        ))?;
    }
    Ok(())
}

/// Sets SIGKILL as the parent-death signal, then checks that crd is still the
/// parent (`ESRCH` if not).
#[inline(always)]
unsafe fn die_with_parent(m: &ChildMem) -> Result<(), c_int> {
    // SAFETY (this block): system calls with plain numbers, no pointers.
    unsafe {
        // The child dies with crd: a crd killed with SIGKILL (or by the OOM
        // killer) leaves no check running on without its timeout. It reaches
        // only this process, and the exec keeps it (unless the program is
        // set-user-ID); grandchildren are left to the record of process groups
        // (`groups.rs`). If crd died before the signal was set, the child has
        // been reparented already: stop here.
        raw::check(raw::syscall(
            libc::SYS_prctl as c_long,
            libc::PR_SET_PDEATHSIG as usize,
            libc::SIGKILL as usize,
            0,
            0,
        ))?;
        if raw::syscall(libc::SYS_getppid as c_long, 0, 0, 0, 0) != m.parent as isize {
            return Err(libc::ESRCH);
        }
    }
    Ok(())
}

/// Puts back the default disposition of the signals crd handles or ignores.
#[inline(always)]
unsafe fn default_signal_handlers() -> Result<(), c_int> {
    // SAFETY (this block): the only pointer passed is to a static kernel
    // `struct sigaction`.
    unsafe {
        // Handlers and the ignored SIGPIPE are crd's, not the child's.
        for sig in [
            libc::SIGPIPE,
            libc::SIGCHLD,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
        ] {
            let a = SIG_DFL_ACTION.as_ptr() as usize;
            raw::check(raw::syscall(
                libc::SYS_rt_sigaction as c_long,
                sig as usize,
                a,
                0,
                SIGSET_BYTES,
            ))?;
        }
    }
    Ok(())
}

/// Sets the pipe's write end back to blocking, then puts each of `m.stdio` on
/// descriptors 0 to 3.
#[inline(always)]
unsafe fn wire_stdio(m: &ChildMem) -> Result<(), c_int> {
    use raw::check;
    // SAFETY (this block): system calls on the child's own descriptors.
    unsafe {
        if m.blocking >= 0 {
            check(raw::syscall(
                libc::SYS_fcntl as c_long,
                m.blocking as usize,
                libc::F_SETFL as usize,
                0,
                0,
            ))?;
        }
        for (target, &fd) in m.stdio.iter().enumerate() {
            let r = if fd < 0 {
                continue;
            } else if fd as usize == target {
                // dup3 onto itself is refused: clear FD_CLOEXEC instead.
                raw::syscall(
                    libc::SYS_fcntl as c_long,
                    fd as usize,
                    libc::F_SETFD as usize,
                    0,
                    0,
                )
            } else {
                raw::syscall(libc::SYS_dup3 as c_long, fd as usize, target, 0, 0)
            };
            check(r)?;
        }
    }
    Ok(())
}

/// Lowers the child's rlimits to `l` (and the core size to 0).
#[inline(always)]
unsafe fn set_limits(l: &Limits) -> Result<(), c_int> {
    use raw::check;
    let mut limits = [
        (libc::RLIMIT_AS as usize, l.address_space),
        (libc::RLIMIT_CPU as usize, u64::from(l.cpu_seconds)),
        (libc::RLIMIT_NOFILE as usize, u64::from(l.open_files)),
        (libc::RLIMIT_FSIZE as usize, l.file_size),
        (libc::RLIMIT_CORE as usize, 0),
        (libc::RLIMIT_NPROC as usize, u64::from(l.processes)),
    ];
    if l.processes == 0 {
        // 0 leaves RLIMIT_NPROC as inherited.
        limits[5] = limits[4];
    }
    // SAFETY (this block): the pointers passed are to two u64 on this stack.
    unsafe {
        for (resource, value) in limits {
            // Never raise the hard limit (that needs privileges and would fail the
            // exec); lower both soft and hard to the smaller of the two. prlimit64's
            // struct is two u64 on every architecture, infinity all ones.
            let mut cur = [0u64; 2];
            let p = cur.as_mut_ptr() as usize;
            check(raw::syscall(
                libc::SYS_prlimit64 as c_long,
                0,
                resource,
                0,
                p,
            ))?;
            let v = value.min(cur[1]);
            let new = [v, v];
            let p = new.as_ptr() as usize;
            check(raw::syscall(
                libc::SYS_prlimit64 as c_long,
                0,
                resource,
                p,
                0,
            ))?;
        }
    }
    Ok(())
}

/// System calls without libc: no errno (the child must not write crd's), nothing but
/// the instruction. Returns the kernel's result: a negative errno on failure.
mod raw {
    use std::arch::asm;
    use std::ffi::{c_int, c_long};

    /// `Err(errno)` for a failed call.
    pub fn check(r: isize) -> Result<isize, c_int> {
        if (-4095..0).contains(&r) {
            Err(-r as c_int)
        } else {
            Ok(r)
        }
    }

    #[cfg(target_arch = "x86_64")]
    pub unsafe fn syscall(nr: c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
        let r: isize;
        // SAFETY: the caller passes arguments valid for system call `nr`.
        unsafe {
            asm!("syscall", inlateout("rax") nr as isize => r, in("rdi") a, in("rsi") b,
                in("rdx") c, in("r10") d, lateout("rcx") _, lateout("r11") _,
                options(nostack, preserves_flags));
        }
        r
    }

    #[cfg(target_arch = "aarch64")]
    pub unsafe fn syscall(nr: c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
        let r: isize;
        // SAFETY: as above.
        unsafe {
            asm!("svc 0", in("x8") nr, inlateout("x0") a => r, in("x1") b, in("x2") c,
                in("x3") d, options(nostack, preserves_flags));
        }
        r
    }

    #[cfg(all(target_arch = "arm", not(target_feature = "thumb-mode")))]
    pub unsafe fn syscall(nr: c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
        let r: isize;
        // SAFETY: as above.
        unsafe {
            asm!("svc 0", in("r7") nr, inlateout("r0") a => r, in("r1") b, in("r2") c,
                in("r3") d, options(nostack, preserves_flags));
        }
        r
    }

    /// Thumb-2 (the ipq40xx build): r7 is the frame pointer there and cannot be
    /// an operand, so the number goes through a scratch register and r7 is put
    /// back after the call.
    #[cfg(all(target_arch = "arm", target_feature = "thumb-mode"))]
    pub unsafe fn syscall(nr: c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
        let r: isize;
        // SAFETY: as above; r7 is saved in `keep` and restored before the asm
        // block ends, and no stack is touched.
        unsafe {
            asm!("mov {keep}, r7", "mov r7, {nr}", "svc 0", "mov r7, {keep}",
                nr = in(reg) nr, keep = out(reg) _,
                inlateout("r0") a => r, in("r1") b, in("r2") c, in("r3") d,
                options(nostack, preserves_flags));
        }
        r
    }

    /// o32: number in $v0, arguments in $a0-$a3, result in $v0 with $a3 set on error
    /// (then $v0 is the positive errno).
    #[cfg(target_arch = "mips")]
    pub unsafe fn syscall(nr: c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
        let r: isize;
        let failed: usize;
        // SAFETY: as above.
        unsafe {
            asm!("syscall", inlateout("$2") nr as isize => r, in("$4") a, in("$5") b,
                in("$6") c, inlateout("$7") d => failed, lateout("$3") _, lateout("$8") _,
                lateout("$9") _, lateout("$10") _, lateout("$11") _, lateout("$12") _,
                lateout("$13") _, lateout("$14") _, lateout("$15") _, lateout("$24") _,
                lateout("$25") _, options(nostack, preserves_flags));
        }
        if failed != 0 { -r } else { r }
    }

    #[cfg(not(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "mips"
    )))]
    compile_error!(
        "crd spawns children with raw system calls for x86_64, aarch64, arm and mips only (src/sys.rs, mod raw)"
    );
}

/// A close-on-exec pipe: (read end, write end), both non-blocking (a child gets its
/// end back to blocking through `ExecPlan::blocking`).
/// An anonymous in-memory file (`memfd_create`, close-on-exec), for a child's
/// stdin: crd writes it whole and the child reads it at its own pace, so crd never
/// waits on a pipe for a slow reader. `ENOSYS` on kernels before 3.17.
pub fn memfd() -> io::Result<OwnedFd> {
    // SAFETY: the name is a NUL-terminated static string; memfd_create only reads it.
    let fd = unsafe { libc::memfd_create(c"crd-input".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create succeeded, so `fd` is open and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
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

/// A child that exited and was reaped: only `reap_any` makes one, which is what lets
/// `Child::release` hand back the memory the child ran on.
#[derive(Debug)]
// Not #[non_exhaustive]: that would still let the rest of the crate build one.
#[allow(clippy::manual_non_exhaustive)]
pub struct Reaped {
    pub pid: u32,
    pub status: WaitStatus,
    _only_from_waitpid: (),
}

/// Reaps one exited child of this process without blocking: `None` when no child has
/// exited (or there are no children). Call in a loop after SIGCHLD: one signal can
/// stand for many exits.
pub fn reap_any() -> Option<Reaped> {
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
            return Some(Reaped {
                pid: pid as u32,
                status: ws,
                _only_from_waitpid: (),
            });
        }
        if pid == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return None;
    }
}

/// Signals as a descriptor for the poll loop: blocks SIGCHLD and `signals` in crd
/// and returns a non-blocking signalfd that is readable while one is pending
/// (`read_signals` takes them). Cheaper than handlers: an exit no longer
/// interrupts crd with a signal frame, a handler and a write to a socket, and no
/// signal library is linked in. A child starts with an empty mask (see
/// `child_steps`). SIGCHLD stays blocked for good; `unblock` gives the others back
/// their default action.
pub fn signal_fd(signals: &[c_int]) -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data, written by sigemptyset/sigaddset below.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to a sigset_t on this stack; crd has one thread.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        for &sig in signals {
            libc::sigaddset(&mut set, sig);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: `set` is a valid signal set; the result is checked.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: signalfd returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Unblocks `signals` blocked by `signal_fd`: one still pending then takes its
/// default action (SIGTERM ends crd), as it would have without the loop.
pub fn unblock(signals: &[c_int]) {
    // SAFETY: as in `signal_fd`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &sig in signals {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// Bytes of one `struct signalfd_siginfo`; `ssi_signo` (u32) is its first field.
const SIGINFO_BYTES: usize = 128;

/// Takes every pending signal from a `signal_fd` into `out`, each once (standard
/// signals are not queued: one pending SIGCHLD can stand for many exits).
pub fn read_signals(fd: RawFd, out: &mut Vec<c_int>) {
    let mut buf = [0u8; 8 * SIGINFO_BYTES];
    loop {
        // SAFETY: `buf` is writable for its length, a whole number of records.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast::<c_void>(), buf.len()) };
        if n <= 0 {
            return; // EAGAIN: all taken
        }
        for rec in buf[..n as usize].chunks_exact(SIGINFO_BYTES) {
            let sig = u32::from_ne_bytes([rec[0], rec[1], rec[2], rec[3]]) as c_int;
            if !out.contains(&sig) {
                out.push(sig);
            }
        }
    }
}

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and has no preconditions.
    unsafe { libc::geteuid() }
}

/// The session this process is in (`getsid(0)`). Not from `/proc/self/stat`:
/// qemu's user-mode emulation (the cross-built tests) shows 0 there.
pub fn session_id() -> u32 {
    // SAFETY: getsid(0) has no preconditions and cannot fail for this process.
    unsafe { libc::getsid(0) }.max(0) as u32
}

/// Whether standard input is a terminal.
pub fn stdin_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor number.
    unsafe { libc::isatty(0) == 1 }
}

/// This process's peak resident set size, in KiB: `VmHWM` from `/proc/self/status`.
/// Not `getrusage`: its `ru_maxrss` keeps the peak of the process image before
/// crd's exec (the forked init or shell, often larger than crd itself).
pub fn max_rss_kib() -> u64 {
    use std::io::Read;
    let mut s = String::new();
    // Through the same bounded read as every other small file crd reads (one
    // copy of the reading code in a router build, not two).
    std::fs::File::open("/proc/self/status")
        .and_then(|f| f.take(PROC_STATUS_MAX_BYTES).read_to_string(&mut s))
        .ok()
        .and_then(|_| vm_hwm_kib(&s))
        .unwrap_or(0)
}

/// Bytes of `/proc/self/status` read: `VmHWM` is in its first kilobyte or two.
const PROC_STATUS_MAX_BYTES: u64 = 64 * 1024;

/// `VmHWM:   920 kB` -> 920.
fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
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

/// Signals that end crd with a bug: a router build's panic traps (it is built with
/// `-Cpanic=immediate-abort`: no panic hook, so no message of its own), a host
/// build's panic aborts, a bad access faults.
const FATAL_SIGNALS: [c_int; 6] = [
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGABRT,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGSEGV,
];

/// Makes each fatal signal write one line to stderr before it ends crd, so the
/// service log (procd's `logread`, journald) says why the daemon died and
/// respawned: `crd: fatal signal 5 (SIGTRAP) ...`. The action is reset to the
/// default on entry (`SA_RESETHAND`) and the handler raises the signal again, so
/// crd dies of it exactly as without the handler (core dump, exit status).
pub fn report_fatal_signals() {
    for sig in FATAL_SIGNALS {
        // SAFETY: sigaction is plain data, zeroed then filled; the handler below
        // makes only async-signal-safe calls (write, raise).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_fatal_signal as extern "C" fn(c_int) as usize;
            sa.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

extern "C" fn on_fatal_signal(sig: c_int) {
    let (line, len) = fatal_line(sig);
    // SAFETY: write and raise are async-signal-safe; `line` lives on this stack.
    // The action is already the default: the raised signal ends crd once this
    // handler returns (a fault re-executes its instruction and faults again).
    unsafe {
        libc::write(2, line.as_ptr().cast::<c_void>(), len);
        libc::raise(sig);
    }
}

/// The line `on_fatal_signal` writes, built without allocating.
fn fatal_line(sig: c_int) -> ([u8; 96], usize) {
    let name: &[u8] = match sig {
        libc::SIGILL => b"SIGILL",
        libc::SIGTRAP => b"SIGTRAP",
        libc::SIGABRT => b"SIGABRT",
        libc::SIGBUS => b"SIGBUS",
        libc::SIGFPE => b"SIGFPE",
        _ => b"SIGSEGV",
    };
    let n = sig.clamp(0, 99) as u8;
    let mut out = [0u8; 96];
    let mut w = 0;
    for part in [
        &b"crd: fatal signal "[..],
        &[b'0' + n / 10, b'0' + n % 10][(n < 10) as usize..],
        b" (",
        name,
        b"): a bug in crd, please report it\n",
    ] {
        out[w..w + part.len()].copy_from_slice(part);
        w += part.len();
    }
    (out, w)
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

/// Bytes free for an unprivileged writer on the filesystem that holds `path`
/// (`statvfs`: `f_bavail` blocks of `f_frsize` bytes), for a message that says
/// why a write failed.
#[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
pub fn free_bytes(path: &std::path::Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path that outlives the call; `st` has room
    // for the struct statvfs writes, and is read only after it succeeded.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    // The field types differ between targets (u32 on some 32-bit ones).
    Ok(u64::from(st.f_bavail as u64).saturating_mul(u64::from(st.f_frsize as u64)))
}

/// crd's `malloc` family, for the builds that link Zig's libc (`crd_zig_libc`,
/// set by cross/build.sh for the routers). Zig's own exports are weak and wrap its
/// multi-threaded `SmpAllocator` (about 8 KB of MIPS code, half of it counting
/// CPUs); these strong ones replace all of them at once, so every pointer that
/// `free` sees comes from here. The same shape as Zig's: blocks of a power of
/// two from 16 (32-bit) or 32 bytes to 64 KiB, each carved from a 64 KiB slab of
/// its size and put on that size's free list when freed (slabs are kept, as Zig
/// keeps its); bigger blocks and over-aligned ones are a mapping of their own,
/// unmapped when freed. A header of two words before each block: where it
/// starts, and its size class or its mapping's length. crd has one thread; a
/// spin lock keeps the lists whole if another ever allocates. No allocation,
/// lock or panic happens in a spawned child before its exec (see the top of this
/// file), so the child never finds the lock held.
pub mod heap {
    use super::*;
    use std::cell::UnsafeCell;

    const WORD: usize = size_of::<usize>();
    /// The alignment of every pointer handed out (musl's `max_align_t`: 8 bytes
    /// on 32-bit targets, 16 on 64-bit ones), and the header's size.
    pub const ALIGN: usize = 2 * WORD;
    /// The smallest block: a header and one `ALIGN` of data.
    const MIN_SHIFT: u32 = (2 * ALIGN).trailing_zeros();
    const SLAB_SHIFT: u32 = 16;
    /// Size classes, blocks of `1 << (MIN_SHIFT + class)` bytes up to a slab.
    const CLASSES: usize = (SLAB_SHIFT - MIN_SHIFT + 1) as usize;

    struct Lists {
        /// A freed block of each class (its first word: the next one), or 0.
        free: [usize; CLASSES],
        /// The unused rest of each class's newest slab.
        next: [usize; CLASSES],
        end: [usize; CLASSES],
    }
    struct Heap(UnsafeCell<Lists>);
    // SAFETY: the lists are only touched between `lock` and `unlock`.
    unsafe impl Sync for Heap {}
    static HEAP: Heap = Heap(UnsafeCell::new(Lists {
        free: [0; CLASSES],
        next: [0; CLASSES],
        end: [0; CLASSES],
    }));
    static LOCKED: AtomicBool = AtomicBool::new(false);

    fn nomem() -> *mut c_void {
        // SAFETY: errno is this thread's own int.
        unsafe { *libc::__errno_location() = libc::ENOMEM };
        std::ptr::null_mut()
    }

    /// `len` bytes of fresh zeroed memory, or 0.
    fn map(len: usize) -> usize {
        let (prot, flags) = (
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        );
        // SAFETY: a new private anonymous mapping touches no existing memory.
        let m = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
        if m == libc::MAP_FAILED { 0 } else { m as usize }
    }

    /// Writes the header of the block at `user` and returns it.
    ///
    /// # Safety
    ///
    /// The `ALIGN` bytes before `user` belong to the block.
    unsafe fn mark(user: usize, start: usize, tag: usize) -> *mut c_void {
        let h = (user - ALIGN) as *mut usize;
        // SAFETY: the caller's contract; `user` is ALIGN-aligned, so are the words.
        unsafe {
            h.write(start);
            h.add(1).write(tag)
        };
        user as *mut c_void
    }

    /// The header of a block handed out here: its start and its class or length.
    ///
    /// # Safety
    ///
    /// `p` came from this allocator and is not freed.
    unsafe fn header(p: *mut c_void) -> (usize, usize) {
        let h = (p as usize - ALIGN) as *const usize;
        // SAFETY: the caller's contract: `mark` wrote these two words.
        unsafe { (h.read(), h.add(1).read()) }
    }

    /// A block of class `c` from its free list or its slab, or 0.
    fn take(c: usize) -> usize {
        let size = 1usize << (MIN_SHIFT as usize + c);
        while LOCKED
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        // SAFETY: the lock is held, so nothing else touches the lists.
        let l = unsafe { &mut *HEAP.0.get() };
        let mut b = l.free[c];
        if b != 0 {
            // SAFETY: a free block's first word is the next free one (`give`).
            l.free[c] = unsafe { *(b as *const usize) };
        } else {
            if l.end[c] - l.next[c] < size {
                let slab = map(1 << SLAB_SHIFT);
                if slab != 0 {
                    (l.next[c], l.end[c]) = (slab, slab + (1 << SLAB_SHIFT));
                }
            }
            if l.end[c] - l.next[c] >= size {
                b = l.next[c];
                l.next[c] += size;
            }
        }
        LOCKED.store(false, Ordering::Release);
        b
    }

    /// `size` bytes aligned to `align` (a power of two), in a mapping of their own.
    fn mapped(size: usize, align: usize) -> *mut c_void {
        let Some(len) = size.checked_add(align + ALIGN) else {
            return nomem();
        };
        match map(len) {
            0 => nomem(),
            // SAFETY: `user` is at least ALIGN past `m` and `size` before its end.
            m => unsafe { mark((m + ALIGN).next_multiple_of(align), m, len) },
        }
    }

    /// C's `malloc`: `size` bytes aligned to `ALIGN`, or null and ENOMEM.
    #[cfg_attr(crd_zig_libc, unsafe(no_mangle))]
    pub extern "C" fn malloc(size: usize) -> *mut c_void {
        let need = size.saturating_add(ALIGN).max(1 << MIN_SHIFT);
        if need > 1 << SLAB_SHIFT {
            return mapped(size, ALIGN);
        }
        let c = (need.next_power_of_two().trailing_zeros() - MIN_SHIFT) as usize;
        match take(c) {
            0 => nomem(),
            // SAFETY: the block is `1 << (MIN_SHIFT + c)` >= need bytes from `b`.
            b => unsafe { mark(b + ALIGN, b, c) },
        }
    }

    /// C's `free`.
    ///
    /// # Safety
    ///
    /// `p` is null or came from this allocator and is not freed yet.
    #[cfg_attr(crd_zig_libc, unsafe(no_mangle))]
    pub unsafe extern "C" fn free(p: *mut c_void) {
        if p.is_null() {
            return;
        }
        // SAFETY: the caller's contract.
        let (start, tag) = unsafe { header(p) };
        if tag >= CLASSES {
            // SAFETY: `start` and `tag` are the mapping `mapped` made for `p`.
            unsafe { libc::munmap(start as *mut c_void, tag) };
            return;
        }
        while LOCKED
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        // SAFETY: the lock is held; the block is the caller's no more, so its
        // first word may hold the list's link.
        unsafe {
            let l = &mut *HEAP.0.get();
            *(start as *mut usize) = l.free[tag];
            l.free[tag] = start;
        }
        LOCKED.store(false, Ordering::Release);
    }

    /// C's `malloc_usable_size`: the bytes at `p` the caller may use.
    ///
    /// # Safety
    ///
    /// As `free`'s.
    #[cfg_attr(crd_zig_libc, unsafe(no_mangle))]
    pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
        if p.is_null() {
            return 0;
        }
        // SAFETY: the caller's contract.
        let (start, tag) = unsafe { header(p) };
        let end = if tag < CLASSES {
            start + (1 << (MIN_SHIFT as usize + tag))
        } else {
            start + tag
        };
        end - p as usize
    }

    /// C's `realloc`: in place while the block holds `size` bytes, else moved.
    ///
    /// # Safety
    ///
    /// As `free`'s.
    #[cfg_attr(crd_zig_libc, unsafe(no_mangle))]
    pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
        if p.is_null() {
            return malloc(size);
        }
        // SAFETY: the caller's contract.
        let have = unsafe { malloc_usable_size(p) };
        if size <= have {
            return p;
        }
        let q = malloc(size);
        if !q.is_null() {
            // SAFETY: `have` < `size` bytes are readable at `p` and writable at
            // `q`, two different blocks; then `p` is the caller's no more.
            unsafe {
                std::ptr::copy_nonoverlapping(p.cast::<u8>(), q.cast::<u8>(), have);
                free(p);
            }
        }
        q
    }

    /// C's `calloc`.
    #[cfg_attr(crd_zig_libc, unsafe(no_mangle))]
    pub extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
        let Some(n) = count.checked_mul(size) else {
            return nomem();
        };
        let p = malloc(n);
        if !p.is_null() {
            // SAFETY: `malloc` handed out at least `n` bytes at `p`.
            unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0, n) };
        }
        p
    }

    /// C's `reallocarray`.
    ///
    /// # Safety
    ///
    /// As `free`'s.
    #[cfg_attr(crd_zig_libc, unsafe(no_mangle))]
    pub unsafe extern "C" fn reallocarray(
        p: *mut c_void,
        count: usize,
        size: usize,
    ) -> *mut c_void {
        match count.checked_mul(size) {
            // SAFETY: the caller's contract.
            Some(n) => unsafe { realloc(p, n) },
            None => nomem(),
        }
    }

    /// C's `aligned_alloc` and `memalign`: `align` a power of two.
    #[cfg_attr(crd_zig_libc, unsafe(no_mangle))]
    pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
        if !align.is_power_of_two() {
            // SAFETY: errno is this thread's own int.
            unsafe { *libc::__errno_location() = libc::EINVAL };
            return std::ptr::null_mut();
        }
        if align <= ALIGN {
            malloc(size)
        } else {
            mapped(size, align)
        }
    }

    #[cfg_attr(crd_zig_libc, unsafe(no_mangle))]
    pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
        aligned_alloc(align, size)
    }

    #[cfg_attr(crd_zig_libc, unsafe(no_mangle))]
    pub extern "C" fn valloc(size: usize) -> *mut c_void {
        // SAFETY: sysconf only reads.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        aligned_alloc(page, size)
    }

    /// C's `posix_memalign`.
    ///
    /// # Safety
    ///
    /// `out` is writable.
    #[cfg_attr(crd_zig_libc, unsafe(no_mangle))]
    pub unsafe extern "C" fn posix_memalign(
        out: *mut *mut c_void,
        align: usize,
        size: usize,
    ) -> c_int {
        if !align.is_power_of_two() || !align.is_multiple_of(WORD) {
            return libc::EINVAL;
        }
        let p = aligned_alloc(align, size);
        if p.is_null() {
            return libc::ENOMEM;
        }
        // SAFETY: the caller's contract.
        unsafe { *out = p };
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The heap tests share the one heap: one at a time, so a freed block is
    /// the next of its size that `malloc` hands out.
    static HEAP_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn heap_blocks_are_aligned_big_enough_and_reused_once_freed() {
        use heap::*;
        let _one = HEAP_TESTS.lock();
        for size in [0, 1, 7, 8, 9, 24, 100, 4000, 32_760, 65_536, 200_000] {
            let p = malloc(size);
            assert!(!p.is_null() && (p as usize).is_multiple_of(ALIGN), "{size}");
            // SAFETY: `p` is a live block of this heap.
            let usable = unsafe { malloc_usable_size(p) };
            assert!(usable >= size, "{size}: {usable}");
            // SAFETY: `usable` bytes are the caller's at `p`; then freed once.
            unsafe {
                std::ptr::write_bytes(p.cast::<u8>(), 0xa5, usable);
                free(p);
            }
        }
        // A freed block of a class is the next one that class hands out, and
        // calloc zeroes it although it held 0xff.
        let p = malloc(40);
        // SAFETY: 40 bytes are the caller's at `p`; then freed once.
        unsafe {
            std::ptr::write_bytes(p.cast::<u8>(), 0xff, 40);
            free(p);
        }
        let q = calloc(4, 10);
        assert_eq!(q, p);
        // SAFETY: `q` holds 40 bytes; then freed once.
        unsafe {
            assert!(
                std::slice::from_raw_parts(q.cast::<u8>(), 40)
                    .iter()
                    .all(|&b| b == 0)
            );
            free(q);
        }
        assert!(calloc(usize::MAX, 2).is_null());
    }

    #[test]
    fn heap_realloc_keeps_the_bytes_and_alignment_is_kept() {
        use heap::*;
        let _one = HEAP_TESTS.lock();
        let mut p = malloc(3);
        let mut len = 3usize;
        // SAFETY: `p` holds `len` bytes throughout; realloc hands back a block
        // that holds the new length and the old bytes; freed once at the end.
        unsafe {
            for i in 0..len {
                *p.cast::<u8>().add(i) = i as u8;
            }
            for new_len in [5, 17, 300, 70_000, 150_000, 10] {
                p = realloc(p, new_len);
                assert!(!p.is_null());
                let kept = len.min(new_len);
                for i in 0..kept {
                    assert_eq!(*p.cast::<u8>().add(i), i as u8, "{new_len}");
                }
                for i in kept..new_len {
                    *p.cast::<u8>().add(i) = i as u8;
                }
                len = new_len;
            }
            free(p);
        }
        for align in [8, 16, 64, 4096, 1 << 16] {
            let p = aligned_alloc(align, 100);
            assert!(
                !p.is_null() && (p as usize).is_multiple_of(align),
                "{align}"
            );
            // SAFETY: a live block, freed once.
            unsafe {
                assert!(malloc_usable_size(p) >= 100);
                free(p);
            }
        }
        let mut out = std::ptr::null_mut();
        // SAFETY: `out` is writable.
        unsafe {
            assert_eq!(posix_memalign(&mut out, 24, 8), libc::EINVAL);
            assert_eq!(posix_memalign(&mut out, 256, 8), 0);
            assert!((out as usize).is_multiple_of(256));
            free(out);
        }
    }

    #[test]
    fn heap_blocks_in_use_never_overlap() {
        use heap::*;
        let _one = HEAP_TESTS.lock();
        // 4,000 allocations and frees of pseudo-random sizes, up to 48 live:
        // each block is filled with its own byte and checked before its free.
        let mut live: Vec<(*mut c_void, usize, u8)> = Vec::new();
        let mut x: u32 = 12345;
        for n in 0..4000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let size = match x >> 28 {
                0 => (x >> 8) as usize % 100_000,
                _ => (x >> 8) as usize % 600,
            };
            if live.len() == 48 || (x & 3 == 0 && !live.is_empty()) {
                let (p, len, fill) = live.swap_remove((x >> 4) as usize % live.len());
                // SAFETY: `p` is live and holds `len` bytes; freed once.
                unsafe {
                    let b = std::slice::from_raw_parts(p.cast::<u8>(), len);
                    assert!(b.iter().all(|&v| v == fill));
                    free(p);
                }
            } else {
                let p = malloc(size);
                assert!(!p.is_null());
                // SAFETY: `size` bytes are the caller's at `p`.
                unsafe { std::ptr::write_bytes(p.cast::<u8>(), n as u8, size) };
                live.push((p, size, n as u8));
            }
        }
        for (p, _, _) in live {
            // SAFETY: each is live; freed once.
            unsafe { free(p) };
        }
    }

    #[test]
    fn a_fatal_signal_is_named_in_one_line() {
        let (line, len) = fatal_line(libc::SIGTRAP);
        let want = format!(
            "crd: fatal signal {} (SIGTRAP): a bug in crd, please report it\n",
            libc::SIGTRAP
        );
        assert_eq!(std::str::from_utf8(&line[..len]).unwrap(), want);
        let (line, len) = fatal_line(libc::SIGSEGV);
        assert!(line[..len].starts_with(b"crd: fatal signal 11 (SIGSEGV)"));
    }

    #[test]
    fn peak_rss_is_read_from_vmhwm() {
        assert_eq!(
            vm_hwm_kib("Name:\tcrd\nVmPeak:\t  9000 kB\nVmHWM:\t     920 kB\n"),
            Some(920)
        );
        assert_eq!(vm_hwm_kib("Name:\tcrd\n"), None);
        // Ours, now: more than nothing, less than a GiB.
        let k = max_rss_kib();
        assert!(k > 0 && k < 1 << 20, "{k}");
    }
}
