//! `sys::spawn` against real children: what a child gets (arguments, environment,
//! directory, limits, signal state, process group), a failed exec reported at reap,
//! many children started before any is reaped, and how much of its stack a child
//! uses. One test function: `reap_any` reaps any child of this process, so the cases
//! run one after the other in a test binary of their own (in the library's unit
//! tests, a child holding copies of other tests' descriptors between clone and exec
//! made a spool lock test fail).

use crd::child::sys::{self, ChildMem, ExecPlan, Limits, Reaped, WaitStatus};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Waits (bounded: 10 s) for the one child this test has running.
fn reap(pid: u32) -> Reaped {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(r) = sys::reap_any() {
            assert_eq!(r.pid, pid, "only one child at a time here");
            return r;
        }
        assert!(Instant::now() < end, "child {pid} did not exit");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn limits() -> Limits {
    Limits {
        address_space: 1 << 30,
        cpu_seconds: 10,
        open_files: 77,
        file_size: 1 << 20,
        processes: 0,
    }
}

/// A plan writing stdout and stderr into `out`, in `/`, own group, `limits()`.
fn plan<'a>(path: &'a [u8], args: &'a [&'a [u8]], out: &OwnedFd) -> ExecPlan<'a> {
    ExecPlan {
        path,
        args,
        path_var: b"/bin",
        env: &[],
        dir: b"/",
        stdio: [-1, out.as_raw_fd(), out.as_raw_fd(), -1],
        blocking: out.as_raw_fd(),
        own_group: true,
        limits: limits(),
    }
}

fn start(plan: &ExecPlan<'_>, mem: Box<ChildMem>) -> sys::Child {
    sys::spawn(plan, mem).map_err(|(e, _)| e).unwrap()
}

fn read_all(rx: OwnedFd) -> String {
    // The read end is non-blocking (sys::pipe): poll it until EOF, bounded.
    let mut f = std::fs::File::from(rx);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match f.read(&mut buf) {
            Ok(0) => return String::from_utf8(out).unwrap(),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < end, "no EOF");
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// `sh -c script zero one` with stdout/stderr into a pipe: (how it ended, output,
/// why it did not exec, the memory back).
fn sh(script: &str, mem: Box<ChildMem>) -> (Reaped, String, Option<std::io::Error>, Box<ChildMem>) {
    let (rx, tx) = sys::pipe().unwrap();
    let args: &[&[u8]] = &[b"-c", script.as_bytes(), b"zero", b"one"];
    let plan = ExecPlan {
        path_var: b"/usr/bin:/bin",
        env: &[(b"CRD_X", b"x\0y")],
        dir: b"/tmp",
        ..plan(b"/bin/sh", args, &tx)
    };
    let child = start(&plan, mem);
    drop(tx);
    let out = read_all(rx);
    let r = reap(child.pid);
    let (err, mem) = child.release(&r);
    (r, out, err, mem)
}

#[test]
fn spawn_cases() {
    what_a_child_gets();
    a_failed_exec_is_reported_at_reap_and_the_memory_is_reused();
    many_children_at_once_each_read_their_own_memory();
    child_stack_use_is_small();
}

fn what_a_child_gets() {
    let script = "echo \"$0 $1 $CRD_X $PATH $(pwd) $(ulimit -n) $(ulimit -c)\"; \
                  grep -E '^Sig(Blk|Ign)' /proc/self/status; \
                  echo pgid=$(cut -d' ' -f5 /proc/self/stat) pid=$$; \
                  grep flags /proc/self/fdinfo/1";
    let (r, out, err, _) = sh(script, ChildMem::new());
    assert!(err.is_none(), "{err:?}");
    assert_eq!(r.status, WaitStatus::Exited(0), "{out}");
    let mut lines = out.lines();
    // The NUL inside CRD_X's value is dropped, not fatal.
    assert_eq!(lines.next().unwrap(), "zero one xy /usr/bin:/bin /tmp 77 0");
    // Nothing blocked (crd blocks every signal around clone, and SIGCHLD for good).
    let blk = lines.next().unwrap();
    assert_eq!(
        blk.split_whitespace().nth(1),
        Some("0000000000000000"),
        "{out}"
    );
    // SigIgn may show what the test runner's own parent ignored; crd's ignored
    // SIGPIPE must not reach the child.
    let ign = lines.next().unwrap().strip_prefix("SigIgn:").unwrap();
    let ign = u64::from_str_radix(ign.trim(), 16).unwrap();
    assert_eq!(
        ign & (1 << (libc::SIGPIPE - 1)),
        0,
        "SIGPIPE is not ignored: {out}"
    );
    let (pgid, pid) = lines.next().unwrap().split_once(' ').unwrap();
    assert_eq!(
        pgid.strip_prefix("pgid="),
        pid.strip_prefix("pid="),
        "own process group"
    );
    // stdout is the pipe's write end, back to blocking (octal flags, O_NONBLOCK clear).
    let flags = lines.next().unwrap().split_whitespace().nth(1).unwrap();
    let flags = u32::from_str_radix(flags, 8).unwrap();
    assert_eq!(flags & libc::O_NONBLOCK as u32, 0, "{out}");
}

fn a_failed_exec_is_reported_at_reap_and_the_memory_is_reused() {
    let (_rx, tx) = sys::pipe().unwrap();
    let plan = plan(b"/nonexistent/program", &[], &tx);
    let child = start(&plan, ChildMem::new());
    let r = reap(child.pid);
    assert_eq!(r.status, WaitStatus::Exited(127));
    let (err, mem) = child.release(&r);
    assert_eq!(err.unwrap().raw_os_error(), Some(libc::ENOENT));
    assert_eq!(mem.program(), "/nonexistent/program");
    // A missing directory fails at chdir, with its own errno.
    let plan = ExecPlan {
        path: b"/bin/true",
        dir: b"/nonexistent/dir",
        ..plan
    };
    let child = start(&plan, mem);
    let r = reap(child.pid);
    let (err, mem) = child.release(&r);
    assert_eq!(err.unwrap().raw_os_error(), Some(libc::ENOENT));
    // The same memory runs a good child afterwards, its error cleared.
    let (r, out, err, _) = sh("echo ok", mem);
    assert!(err.is_none());
    assert_eq!((r.status, out.as_str()), (WaitStatus::Exited(0), "ok\n"));
}

fn many_children_at_once_each_read_their_own_memory() {
    // 32 children started back to back, none reaped before all are started: each
    // must run with its own arguments.
    let mut running = Vec::new();
    for i in 0..32 {
        let (rx, tx) = sys::pipe().unwrap();
        let script = format!("echo {i}");
        let args: &[&[u8]] = &[b"-c", script.as_bytes()];
        let plan = ExecPlan {
            own_group: false,
            ..plan(b"/bin/sh", args, &tx)
        };
        let child = start(&plan, ChildMem::new());
        running.push((i, child, rx));
    }
    let mut children = std::collections::HashMap::new();
    for (i, child, rx) in running {
        assert_eq!(read_all(rx), format!("{i}\n"));
        children.insert(child.pid, child);
    }
    let end = Instant::now() + Duration::from_secs(10);
    while !children.is_empty() {
        match sys::reap_any() {
            Some(r) => {
                let child = children.remove(&r.pid).expect("one of ours");
                let (err, _) = child.release(&r);
                assert!(err.is_none());
                assert_eq!(r.status, WaitStatus::Exited(0));
            }
            None => {
                assert!(
                    Instant::now() < end,
                    "{} children not reaped",
                    children.len()
                );
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

fn child_stack_use_is_small() {
    let mut mem = ChildMem::new();
    mem.mark_stack();
    let (_, _, err, mem) = sh("exit 0", mem);
    assert!(err.is_none());
    let used = mem.stack_used().unwrap();
    eprintln!("child stack use: {used} bytes");
    // Measured: 192 bytes in a release build, about 1.7 KiB in a debug build; a
    // quarter of the stack is the bound.
    assert!(
        used > 0 && used < sys::CHILD_STACK_BYTES / 4,
        "the child used {used} of {} bytes of stack",
        sys::CHILD_STACK_BYTES
    );
}
