//! Test harness: a sandbox directory with modules and a config, and the real `crd`
//! binary started in it.
//!
//! The binary is `CRD_BIN` if set (a cross-built one), else cargo's; `CRD_RUNNER`
//! (e.g. `qemu-mipsel-static`) is put in front of it, so the same tests run a
//! cross-built binary under emulation. Waiting is done by polling a condition until a
//! generous bound: the bounds catch hangs, they do not measure speed.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Sandbox {
    pub dir: PathBuf,
}

impl Sandbox {
    pub fn new(tag: &str) -> Sandbox {
        let dir = std::env::temp_dir().join(format!("crd-it-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("modules")).unwrap();
        for d in [&dir, &dir.join("modules")] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let sb = Sandbox { dir };
        sb.config("");
        sb
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Writes an executable `#!/bin/sh` script.
    pub fn script(&self, rel: &str, body: &str) {
        let p = self.dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::set_permissions(p.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A module with a check and, optionally, a response.
    pub fn module(&self, name: &str, check: &str, response: Option<&str>) {
        self.script(&format!("modules/{name}/check"), check);
        if let Some(r) = response {
            self.script(&format!("modules/{name}/response"), r);
        }
    }

    /// Writes `crd.conf`: the sandbox paths, then `extra`.
    pub fn config(&self, extra: &str) {
        let text = format!(
            "node = testnode\nmodules_dir = {}\ncontrol_socket = {}\nspool_dir = {}\n{extra}\n",
            self.dir.join("modules").display(),
            self.dir.join("crd.sock").display(),
            self.dir.join("spool").display(),
        );
        fs::write(self.dir.join("crd.conf"), text).unwrap();
    }

    /// Writes `crd.conf` as `config` does, with node `node` instead of `testnode`.
    pub fn config_node(&self, node: &str, extra: &str) {
        self.config(extra);
        let text = self
            .read("crd.conf")
            .replace("node = testnode\n", &format!("node = {node}\n"));
        fs::write(self.conf(), text).unwrap();
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.join("crd.conf")
    }

    /// `crd -c <sandbox>/crd.conf ARGS`, through the runner if one is set.
    pub fn crd(&self, args: &[&str]) -> Command {
        crd_command(&self.conf(), args)
    }

    /// Runs `crd ARGS` to completion: (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        run_to_end(self.crd(args))
    }

    /// Starts the daemon with its log in `<sandbox>/crd.log`.
    pub fn start(&self) -> Daemon {
        self.start_with(&[])
    }

    /// Starts the daemon with extra arguments (`-v`).
    pub fn start_with(&self, args: &[&str]) -> Daemon {
        let log = self.dir.join("crd.log");
        let f = fs::File::create(&log).unwrap();
        let child = self
            .crd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .unwrap();
        let d = Daemon {
            child,
            log,
            conf: self.conf(),
        };
        assert!(
            wait_for(Duration::from_secs(20), || d.log().contains("started")),
            "crd did not start:\n{}",
            d.log()
        );
        d
    }

    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.dir.join(rel)).unwrap_or_default()
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.dir.join(rel).exists()
    }

    /// Writes `text` to `rel` (mode 0644), making its directory (mode 0755): a
    /// module's `module.conf`, say, which crd refuses if others may write it.
    pub fn write(&self, rel: &str, text: &str) {
        let dir = self.path(rel).parent().unwrap().to_path_buf();
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(self.path(rel), text).unwrap();
        fs::set_permissions(self.path(rel), fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// A broker in this sandbox that queues enough for the collector tests
    /// (mosquitto's default limit is 1000 messages).
    pub fn queueing_broker(&self) -> Broker {
        Broker::start(
            &self.path("broker"),
            "allow_anonymous true\nmax_queued_messages 100000\nmax_inflight_messages 100\n",
        )
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
    conf: PathBuf,
}

impl Daemon {
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `sig` (e.g. `libc::SIGHUP`) to the daemon (or to its runner).
    pub fn signal(&self, sig: i32) {
        crd::child::sys::kill_pid(self.child.id(), sig).unwrap();
    }

    /// `crd status` of this daemon.
    pub fn status(&self) -> String {
        let (code, out, err) = run_to_end(crd_command(&self.conf, &["status"]));
        assert_eq!(code, 0, "crd status failed: {err}");
        out
    }

    /// A `key: value` number from `crd status`.
    pub fn stat(&self, key: &str) -> u64 {
        stat_of(&self.status(), key)
    }

    /// Stops the daemon with SIGTERM and asserts a clean exit within `limit`.
    pub fn stop(mut self, limit: Duration) {
        self.signal(libc::SIGTERM);
        let st = self.wait_exit(limit).expect("crd stops on SIGTERM");
        assert!(st.success(), "{st:?}\n{}", self.log());
    }

    /// Waits for the daemon to exit; `None` if it did not within `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `crd -c CONF ARGS` with `CRD_BIN` and `CRD_RUNNER` honoured.
pub fn crd_command(conf: &Path, args: &[&str]) -> Command {
    let bin = std::env::var_os("CRD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_crd")));
    let mut cmd = match std::env::var_os("CRD_RUNNER").filter(|r| !r.is_empty()) {
        Some(r) => {
            let mut c = Command::new(r);
            c.arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.arg("-c").arg(conf).args(args);
    if let Some(dir) = conf.parent() {
        cmd.current_dir(dir);
    }
    cmd
}

/// Runs a command to completion: (exit code, stdout, stderr).
pub fn run_to_end(mut cmd: Command) -> (i32, String, String) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn stat_of(status: &str, key: &str) -> u64 {
    let prefix = format!("{key}: ");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{key}` in status:\n{status}"))
}

/// The row of `module` in `crd status`: [state, runs, fired, resp, errors, overruns].
pub fn module_row(status: &str, module: &str) -> Vec<String> {
    let line = status
        .lines()
        .find(|l| l.split_whitespace().next() == Some(module))
        .unwrap_or_else(|| panic!("no module {module} in status:\n{status}"));
    line.split_whitespace()
        .skip(1)
        .take(6)
        .map(str::to_string)
        .collect()
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` is alive (a zombie counts as dead).
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// Pids of live processes whose command line contains `needle`.
pub fn pids_with(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// Lines of a file of one number per line (e.g. run counters written by checks).
pub fn count_lines(p: &Path) -> usize {
    fs::read_to_string(p)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// A free TCP port on 127.0.0.1 (bound, then released for the test to use).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real mosquitto on 127.0.0.1, with its own config and persistence in `dir`;
/// stopped (SIGTERM, which saves its state) on drop or by `stop`.
pub struct Broker {
    pub port: u16,
    dir: PathBuf,
    extra: String,
    child: Option<Child>,
}

impl Broker {
    pub fn start(dir: &Path, extra: &str) -> Broker {
        Broker::start_on(dir, extra, free_port())
    }

    pub fn start_on(dir: &Path, extra: &str, port: u16) -> Broker {
        let mut b = Broker {
            port,
            dir: dir.to_path_buf(),
            extra: extra.to_string(),
            child: None,
        };
        b.restart();
        b
    }

    /// Starts (again) on the same port, with the persisted state.
    pub fn restart(&mut self) {
        self.stop();
        fs::create_dir_all(&self.dir).unwrap();
        // Started as root, mosquitto runs as its own user: let it write its state.
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o777)).unwrap();
        let conf = self.dir.join("mosquitto.conf");
        fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\npersistence true\npersistence_location {}/\n\
                 max_queued_messages 0\n{}\n",
                self.port,
                self.dir.display(),
                if self.extra.is_empty() {
                    "allow_anonymous true"
                } else {
                    &self.extra
                }
            ),
        )
        .unwrap();
        let log = fs::File::create(self.dir.join("mosquitto.log")).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("mosquitto (Debian package `mosquitto`) must be installed");
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_for(Duration::from_secs(10), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "mosquitto did not listen on {port}"
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = crd::child::sys::kill_pid(c.id(), libc::SIGTERM);
            let _ = c.wait();
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the broker dies without closing its connections cleanly.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = crd::child::sys::kill_pid(c.id(), libc::SIGKILL);
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `mosquitto_sub -v` on `topic` at QoS 1 with a persistent session (`id`), its
/// lines appended to a file; restarts itself if it exits (broker restarts).
pub struct Subscriber {
    child: Option<Child>,
    args: Vec<String>,
    port: u16,
    pub out: PathBuf,
}

impl Subscriber {
    pub fn start(port: u16, topic: &str, id: &str, out: &Path) -> Subscriber {
        let args = vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-t".into(),
            topic.into(),
            "-q".into(),
            "1".into(),
            "-c".into(),
            "-i".into(),
            id.into(),
            "-v".into(),
        ];
        let mut s = Subscriber {
            child: None,
            args,
            port,
            out: out.to_path_buf(),
        };
        s.spawn();
        s
    }

    /// Starts mosquitto_sub once its listener accepts connections (a broker's
    /// second listener may open after the first), and again if it exited at
    /// once (refused): a loaded machine must not make it miss what follows.
    fn spawn(&mut self) {
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err()
            && Instant::now() < end
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        loop {
            let f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.out)
                .unwrap();
            let mut c = Command::new("mosquitto_sub")
                .args(&self.args)
                .stdin(Stdio::null())
                .stdout(f)
                .stderr(Stdio::null())
                .spawn()
                .expect("mosquitto_sub (Debian package `mosquitto-clients`) must be installed");
            // Give it time to subscribe before anything is published.
            std::thread::sleep(Duration::from_millis(300));
            let exited = c.try_wait().unwrap().is_some();
            self.child = Some(c);
            if !exited || Instant::now() >= end {
                return;
            }
        }
    }

    /// Restarts the client if it exited (it does when its broker goes away).
    pub fn keep_alive(&mut self) {
        if let Some(c) = self.child.as_mut()
            && c.try_wait().unwrap().is_some()
        {
            self.spawn();
        }
    }

    pub fn lines(&self) -> Vec<String> {
        fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
