//! `crd --install`, `--remove`, `--list`: support modules fetched from a repository,
//! a git location, a directory or a `.tar.gz`, installed as a transaction.
//!
//! Everything happens inside `modules_dir`, under an `flock` on
//! `modules_dir/.install.lock`, in hidden directories the daemon never schedules:
//! `.fetch-NAME` (clone, download, unpacked archive), `.staging-NAME` (the validated
//! copy with normalized modes), `.old-NAME` (the previous version during the swap),
//! `.removing-NAME`. Same filesystem, so the final step is `rename(2)`. Order: fetch,
//! validate while copying into staging (`safety`: no symlink out of the tree, no
//! setuid, setgid or sticky bit; no devices, at most `install_max_size` bytes),
//! check the layout and `module.conf`, run `install` in staging with the module limits and timeout, then
//! `NAME -> .old-NAME`, `.staging-NAME -> NAME`, remove `.old-NAME`. A failure after
//! validation runs `rollback` (same bounds); any failure removes the hidden dirs and
//! leaves the installed version as it was. A crash leaves hidden dirs that `recover`
//! (next install, remove, or daemon start) cleans: `.old-NAME` without `NAME` is put
//! back, everything else is deleted. What was installed, from where, at which commit
//! or checksum, is recorded in `NAME/.crd-install`.
//!
//! Child processes (git, wget/uclient-fetch/curl, gzip, the module's scripts) go
//! through `child::poller::run_once` with a `child::recipe::Recipe`, so they get the same spawn, limits, timeout and reaping
//! as checks. Nothing here runs inside the daemon's loop.

pub mod error;
pub mod safety;
pub mod tar;

use crate::child::poller::run_once;
use crate::child::recipe::{Host, Recipe, Tool};
use crate::child::run::Finished;
use crate::child::spawn::Streams;
use crate::core::config::{self, Config};
use crate::core::decide::Outcome;
use crate::core::sha256::Sha256;
use crate::core::status::json_str;
use crate::host::files::node_name;
use crate::install::error::{Error, Reason, Why};
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Time allowed for one fetch step (git clone, download, gunzip).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(300);
/// Most files (and directories, and symlinks) in one installed module.
pub const MAX_FILES: usize = 1024;
/// Longest `@REF`, bytes.
pub const MAX_REF_BYTES: usize = 128;
/// The record of an install inside the module's directory.
pub const RECORD: &str = ".crd-install";
const LOCK: &str = ".install.lock";
const HIDDEN_PREFIXES: [&str; 4] = [".fetch-", ".staging-", ".old-", ".removing-"];

/// Why an install, remove or list failed. The command line maps `Usage` (a bad
/// name, ref or location; no repository) to exit 2 and `Failed` to exit 1.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    Usage(String),
    Failed(String),
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Failure::Usage(m) | Failure::Failed(m) => m,
        }
    }
}

fn failed(m: impl Into<String>) -> Failure {
    Failure::Failed(m.into())
}

/// Splits `NAME[@REF]` and checks both.
pub fn parse_spec(spec: &str) -> Result<(&str, Option<&str>), Failure> {
    let (name, rf) = match spec.split_once('@') {
        Some((n, r)) => (n, Some(r)),
        None => (spec, None),
    };
    config::valid_name(name)
        .map_err(|why| Failure::Usage(format!("bad module name `{name}`: {why}")))?;
    if let Some(r) = rf {
        let ok = !r.is_empty()
            && r.len() <= MAX_REF_BYTES
            && !r.starts_with('-')
            && !r.contains("..")
            && r.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"._/-+".contains(&c));
        if !ok {
            return Err(Failure::Usage(format!(
                "bad ref `{r}` (a tag, branch or commit: letters, digits, `.`, `_`, `/`, `-`, `+`; at most {MAX_REF_BYTES} bytes)"
            )));
        }
    }
    Ok((name, rf))
}

/// What a location names.
#[derive(Debug, PartialEq, Eq)]
pub enum Location {
    Git(String),
    Dir(PathBuf),
    TarPath(PathBuf),
    TarUrl(String),
}

fn is_tarball(loc: &str) -> bool {
    loc.ends_with(".tar.gz") || loc.ends_with(".tgz")
}

fn is_web(loc: &str) -> bool {
    ["http://", "https://", "ftp://"]
        .iter()
        .any(|p| loc.starts_with(p))
}

/// Classifies `loc`. For a repository (`from_repo`), an URL ending in `/` is a
/// directory of `NAME.tar.gz` files. `git_ref`: a local git work tree with a ref
/// is cloned (to check the ref out) rather than copied.
pub fn classify(
    loc: &str,
    name: &str,
    from_repo: bool,
    git_ref: bool,
) -> Result<Location, Failure> {
    if loc.is_empty() || loc.starts_with('-') {
        return Err(Failure::Usage(format!("bad location `{loc}`")));
    }
    if from_repo && is_web(loc) && loc.ends_with('/') {
        return Ok(Location::TarUrl(format!("{loc}{name}.tar.gz")));
    }
    if is_tarball(loc) {
        return Ok(match loc.strip_prefix("file://") {
            Some(p) => Location::TarPath(p.into()),
            None if loc.contains("://") => Location::TarUrl(loc.into()),
            None => Location::TarPath(loc.into()),
        });
    }
    let p = Path::new(loc);
    if !loc.contains("://") && p.is_dir() {
        if git_ref && p.join(".git").exists() {
            return Ok(Location::Git(loc.into()));
        }
        return Ok(Location::Dir(p.into()));
    }
    let scp_like = loc.contains('@') && loc.contains(':') && !loc.contains("://");
    if loc.contains("://") || scp_like || loc.ends_with(".git") {
        return Ok(Location::Git(loc.into()));
    }
    Err(failed(format!(
        "location `{loc}` is not a directory, a .tar.gz, or a git URL"
    )))
}

/// Compares dotted numeric versions (`0.10` > `0.9`); non-numeric parts count as 0.
pub fn version_at_least(have: &str, want: &str) -> bool {
    let parts = |v: &str| -> Vec<u64> {
        v.trim_start_matches('v')
            .split('.')
            .map(|p| {
                p.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .unwrap_or(0)
            })
            .collect()
    };
    let (h, w) = (parts(have), parts(want));
    for i in 0..h.len().max(w.len()) {
        let (a, b) = (
            h.get(i).copied().unwrap_or(0),
            w.get(i).copied().unwrap_or(0),
        );
        if a != b {
            return a > b;
        }
    }
    true
}

/// `PATH` lookup of an executable, as a shell would.
pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| crate::child::spawn::DEFAULT_PATH.into());
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// The install lock, held for the life of the value.
struct Lock(#[allow(dead_code)] fs::File);

impl Lock {
    /// `Ok(None)`: another install or remove holds it.
    fn try_take(dir: &Path) -> io::Result<Option<Lock>> {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))?;
        match f.try_lock() {
            Ok(()) => Ok(Some(Lock(f))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn take(dir: &Path) -> Result<Lock, Failure> {
        let denied = |e: io::Error| {
            failed(format!(
                "cannot write to modules_dir {}: {e}; --install and --remove need write access (run as root?)",
                dir.display()
            ))
        };
        fs::create_dir_all(dir).map_err(denied)?;
        Lock::try_take(dir).map_err(denied)?.ok_or_else(|| {
            failed(format!(
                "another crd --install or --remove is running in {}",
                dir.display()
            ))
        })
    }
}

fn remove_tree(p: &Path) -> io::Result<()> {
    match fs::remove_dir_all(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// The names of the entries of `dir` (only its directories, followed through
/// symlinks, with `dirs_only`) in byte order; an entry that cannot be read is
/// left out, a name that is not UTF-8 is shown with U+FFFD.
fn names_in(dir: &Path, dirs_only: bool) -> io::Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(dir)?
        .flatten()
        .filter(|e| !dirs_only || e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Cleans what an interrupted install or remove left in `dir` (the lock must be
/// held). Returns one line per action.
fn recover_locked(dir: &Path) -> Vec<String> {
    let mut done = Vec::new();
    let Ok(mut names) = names_in(dir, false) else {
        return done;
    };
    names.retain(|n| HIDDEN_PREFIXES.iter().any(|p| n.starts_with(p)));
    for n in names {
        let p = dir.join(&n);
        if let Some(module) = n.strip_prefix(".old-")
            && !dir.join(module).exists()
        {
            match fs::rename(&p, dir.join(module)) {
                Ok(()) => done.push(format!("restored the previous {module} from {n}")),
                Err(e) => done.push(format!("restoring {module} from {n}: {e}")),
            }
            continue;
        }
        match remove_tree(&p) {
            Ok(()) => done.push(format!("removed {n}, left by an interrupted install")),
            Err(e) => done.push(format!("removing {n}: {e}")),
        }
    }
    done
}

/// Cleans leftovers of an interrupted install (daemon start). Does nothing while
/// an install runs or when `dir` is not writable.
pub fn recover(dir: &Path) -> Vec<String> {
    if !dir.is_dir() {
        return Vec::new();
    }
    match Lock::try_take(dir) {
        Ok(Some(_lock)) => recover_locked(dir),
        _ => Vec::new(),
    }
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// What a fetch found out about the source.
#[derive(Default)]
struct Provenance {
    commit: Option<String>,
    archive_sha256: Option<String>,
}

struct Fetch<'a> {
    cfg: &'a Config,
    name: &'a str,
    work: PathBuf,
    out: &'a mut dyn Write,
}

impl Fetch<'_> {
    /// Runs a fetch tool to its end, each written file bounded by `file_limit` bytes.
    fn run(
        &self,
        program: &Path,
        args: Vec<OsString>,
        file_limit: u64,
        streams: Streams,
    ) -> io::Result<Finished> {
        let settings = self.cfg.module_settings(self.name, &[]);
        let tool = Tool {
            program,
            args,
            dir: &self.work,
            file_limit,
            timeout: FETCH_TIMEOUT,
            streams,
        };
        run_once(&Recipe::tool(self.name, &settings, tool))
    }

    /// Runs a fetch tool; `Err` with its output when it does not exit 0.
    fn tool(&self, what: &str, program: &Path, args: Vec<OsString>) -> Result<String, Failure> {
        let limit = self.cfg.install_max_size.saturating_mul(4);
        let f = self
            .run(program, args, limit, Streams::Capture)
            .map_err(|e| failed(format!("{what}: {}: {e}", program.display())))?;
        match f.outcome {
            Outcome::Exited(0) => Ok(f.output),
            o => Err(failed(format!(
                "{what} failed ({}): {}",
                o.describe(),
                f.output.trim()
            ))),
        }
    }

    fn git(&mut self, url: &str, rf: Option<&str>) -> Result<(PathBuf, Provenance), Failure> {
        let git = which("git").ok_or_else(|| {
            failed(format!(
                "`{url}` is a git location, but git is not installed (not in PATH); \
                 use a directory or a .tar.gz location, or install git"
            ))
        })?;
        let src = self.work.join("src");
        let _ = writeln!(
            self.out,
            "cloning {url}{}",
            rf.map(|r| format!(" at {r}")).unwrap_or_default()
        );
        let mut args = os(&["clone", "--quiet", "--depth", "1"]);
        if let Some(r) = rf {
            args.extend(os(&["--branch", r]));
        }
        args.extend([OsString::from("--"), url.into(), src.clone().into()]);
        if let Err(first) = self.tool("git clone", &git, args) {
            let Some(r) = rf else {
                return Err(first);
            };
            // Not a branch or tag: maybe a commit. A full clone, then check it out.
            let _ = remove_tree(&src);
            let args = vec![
                "clone".into(),
                "--quiet".into(),
                "--no-checkout".into(),
                "--".into(),
                url.into(),
                src.clone().into_os_string(),
            ];
            self.tool("git clone", &git, args)?;
            let c = OsString::from(&src);
            let args = vec![
                "-C".into(),
                c,
                "checkout".into(),
                "--quiet".into(),
                "--detach".into(),
                format!("{r}^{{commit}}").into(),
            ];
            self.tool("git checkout", &git, args)
                .map_err(|_| failed(format!("`{r}` is no branch, tag or commit of {url}")))?;
        }
        let args = vec![
            "-C".into(),
            src.clone().into_os_string(),
            "rev-parse".into(),
            "HEAD".into(),
        ];
        let commit = self.tool("git rev-parse", &git, args)?.trim().to_string();
        Ok((
            src,
            Provenance {
                commit: Some(commit),
                ..Provenance::default()
            },
        ))
    }

    fn download(&mut self, url: &str) -> Result<PathBuf, Failure> {
        let dest = self.work.join("archive.tar.gz");
        let d = dest.clone().into_os_string();
        let (prog, args) = if let Some(p) = which("uclient-fetch") {
            (p, vec!["-q".into(), "-O".into(), d, url.into()])
        } else if let Some(p) = which("wget") {
            (p, vec!["-q".into(), "-O".into(), d, url.into()])
        } else if let Some(p) = which("curl") {
            (p, vec!["-fsSL".into(), "-o".into(), d, url.into()])
        } else {
            return Err(failed(format!(
                "cannot fetch {url}: none of uclient-fetch, wget, curl is in PATH"
            )));
        };
        let _ = writeln!(self.out, "fetching {url}");
        let limit = self.cfg.install_max_size;
        let f = self
            .run(&prog, args, limit, Streams::Capture)
            .map_err(|e| failed(format!("{}: {e}", prog.display())))?;
        match f.outcome {
            Outcome::Exited(0) => Ok(dest),
            Outcome::Signaled(s) if s == libc::SIGXFSZ => Err(failed(format!(
                "{url} is larger than install_max_size ({limit} bytes)"
            ))),
            o => Err(failed(format!(
                "fetching {url} failed ({}): {}",
                o.describe(),
                f.output.trim()
            ))),
        }
    }

    fn tarball(&mut self, archive: &Path) -> Result<(PathBuf, Provenance), Failure> {
        let max = self.cfg.install_max_size;
        let md =
            fs::metadata(archive).map_err(|e| failed(format!("{}: {e}", archive.display())))?;
        if md.len() > max {
            return Err(failed(format!(
                "{} is {} bytes, over install_max_size ({max} bytes)",
                archive.display(),
                md.len()
            )));
        }
        let mut digest = Sha256::default();
        let mut f =
            fs::File::open(archive).map_err(|e| failed(format!("{}: {e}", archive.display())))?;
        let mut buf = vec![0u8; 16 << 10];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => digest.update(&buf[..n]),
                Err(e) => return Err(failed(format!("{}: {e}", archive.display()))),
            }
        }
        let gzip = which("gzip")
            .ok_or_else(|| failed("gzip is not in PATH; it is needed to unpack a .tar.gz"))?;
        let tar_path = self.work.join("archive.tar");
        let tar = fs::File::create(&tar_path).map_err(|e| failed(format!("{e}")))?;
        // The plain tar may be up to install_max_size of files plus headers.
        let tar_limit = max + (crate::install::tar::MAX_ENTRIES as u64 + 2) * 1024;
        let args = vec!["-dc".into(), "--".into(), archive.as_os_str().to_owned()];
        let r = self
            .run(&gzip, args, tar_limit, Streams::StdoutTo(tar.as_raw_fd()))
            .map_err(|e| failed(format!("gzip: {e}")))?;
        drop(tar);
        match r.outcome {
            Outcome::Exited(0) => {}
            Outcome::Signaled(s) if s == libc::SIGXFSZ => {
                return Err(failed(format!(
                    "{} unpacks to more than install_max_size ({max} bytes)",
                    archive.display()
                )));
            }
            o => {
                return Err(failed(format!(
                    "{} is not a readable .tar.gz (gzip: {}): {}",
                    archive.display(),
                    o.describe(),
                    r.output.trim()
                )));
            }
        }
        let src = self.work.join("src");
        fs::create_dir(&src).map_err(|e| failed(format!("{e}")))?;
        let mut t =
            io::BufReader::new(fs::File::open(&tar_path).map_err(|e| failed(format!("{e}")))?);
        crate::install::tar::extract(&mut t, &src, max)
            .map_err(|e| failed(format!("{}: {e}", archive.display())))?;
        let _ = fs::remove_file(&tar_path);
        Ok((
            src,
            Provenance {
                archive_sha256: Some(digest.hex()),
                ..Provenance::default()
            },
        ))
    }
}

/// Where in the fetched tree `src` module `name` is: a folder of its name, else
/// (not for a repository) the top, else the one folder at the top.
fn module_root(src: &Path, name: &str, from_repo: bool, loc: &str) -> Result<PathBuf, Failure> {
    let sub = src.join(name);
    if fs::symlink_metadata(&sub).is_ok_and(|m| m.is_dir()) {
        return Ok(sub);
    }
    if from_repo {
        return Err(failed(format!(
            "the repository {loc} has no module `{name}` (no folder `{name}` at its top)"
        )));
    }
    let is_module = |d: &Path| d.join(name).is_file() || d.join("check").is_file();
    if is_module(src) {
        return Ok(src.to_path_buf());
    }
    let entries: Vec<PathBuf> = fs::read_dir(src)
        .map_err(|e| failed(format!("{e}")))?
        .flatten()
        .filter(|e| e.file_name() != ".git")
        .map(|e| e.path())
        .collect();
    if let [only] = &entries[..]
        && fs::symlink_metadata(only).is_ok_and(|m| m.is_dir())
        && is_module(only)
    {
        return Ok(only.clone());
    }
    Err(failed(format!(
        "{loc} holds no module `{name}`: want `{name}` (support) or `check` at its top, or a folder `{name}`"
    )))
}

/// Copies the module at `src` into the new directory `dst`, refusing what is unsafe
/// and normalizing modes (0755 or 0644 by the owner's exec bit; directories 0755).
/// `.git` is left out. Returns the SHA-256 of the tree (paths, kinds, modes,
/// contents, in name order).
fn stage(src: &Path, dst: &Path, max_bytes: u64) -> Result<String, Failure> {
    fs::create_dir(dst).map_err(|e| failed(format!("{}: {e}", dst.display())))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(0o755))
        .map_err(|e| failed(format!("{e}")))?;
    let mut w = Walk {
        digest: Sha256::default(),
        bytes: 0,
        files: 0,
        max: max_bytes,
    };
    w.dir(src, &[], dst)
        .map_err(|e| failed(format!("refused: {e}")))?;
    Ok(w.digest.hex())
}

/// `stage`'s walk over the module's tree: the digest so far, and the files and
/// bytes counted against their bounds.
struct Walk {
    digest: Sha256,
    bytes: u64,
    files: usize,
    max: u64,
}

impl Walk {
    /// Copies the directory `rel` of `root` into the same place under `dst`,
    /// entry by entry in name order.
    fn dir(&mut self, root: &Path, rel: &[String], dst: &Path) -> Result<(), Error> {
        if rel.len() > crate::install::tar::MAX_DEPTH {
            return Err(Reason::TreeTooDeep(crate::install::tar::MAX_DEPTH).into());
        }
        let here = root.join(rel.iter().collect::<PathBuf>());
        let mut names =
            names_in(&here, false).map_err(|e| Error::at(&here.to_string_lossy(), Why::Io(e)))?;
        names.retain(|n| n != ".git" && n != RECORD);
        for n in names {
            let mut r = rel.to_vec();
            r.push(n);
            self.entry(root, &r, dst)?;
        }
        Ok(())
    }

    /// Copies the entry `r` (a directory with all it holds), or refuses it: a
    /// device, a fifo, a forbidden mode, one file too many.
    fn entry(&mut self, root: &Path, r: &[String], dst: &Path) -> Result<(), Error> {
        let shown = r.join("/");
        let from = root.join(r.iter().collect::<PathBuf>());
        let to = dst.join(r.iter().collect::<PathBuf>());
        let md = fs::symlink_metadata(&from).map_err(|e| Error::at(&shown, Why::Io(e)))?;
        self.files += 1;
        if self.files > MAX_FILES {
            return Err(Reason::TooManyFiles(MAX_FILES).into());
        }
        let ft = md.file_type();
        let mode = md.permissions().mode();
        if !ft.is_symlink() {
            safety::mode_allowed(&shown, mode)?;
        }
        self.digest.update(shown.as_bytes());
        self.digest.update(&[0]);
        if ft.is_dir() {
            self.digest.update(b"d");
            fs::create_dir(&to).map_err(|e| Error::at(&shown, Why::Io(e)))?;
            self.dir(root, r, dst)
        } else if ft.is_symlink() {
            self.symlink(r, &shown, &from, &to)
        } else if ft.is_file() {
            self.file(&shown, &from, &to, md.len(), mode)
        } else {
            Err(Error::at(&shown, Why::NotAFile))
        }
    }

    /// Recreates the symlink `r` at `to`, if it points inside the module.
    fn symlink(&mut self, r: &[String], shown: &str, from: &Path, to: &Path) -> Result<(), Error> {
        let io = |e| Error::at(shown, Why::Io(e));
        let target = fs::read_link(from).map_err(io)?;
        let t = target.to_string_lossy();
        if !safety::link_stays_inside(r, &t) {
            return Err(Error::at(shown, Why::LinkOutside(t.into_owned())));
        }
        self.digest.update(b"l");
        self.digest.update(t.as_bytes());
        std::os::unix::fs::symlink(&target, to).map_err(io)
    }

    /// Copies the `len` bytes of the file `from` to `to`, with mode 0755 or 0644
    /// by the owner's exec bit in `mode`.
    fn file(
        &mut self,
        shown: &str,
        from: &Path,
        to: &Path,
        len: u64,
        mode: u32,
    ) -> Result<(), Error> {
        self.bytes += len;
        if self.bytes > self.max {
            return Err(Reason::TreeTooLarge(self.max).into());
        }
        let io = |e| Error::at(shown, Why::Io(e));
        let exec = mode & 0o100 != 0;
        self.digest.update(if exec { b"x" } else { b"f" });
        let mut input = fs::File::open(from).map_err(io)?;
        let mut output = fs::File::create(to).map_err(io)?;
        let mut buf = [0u8; 8192];
        loop {
            let n = input.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            self.digest.update(&buf[..n]);
            output.write_all(&buf[..n]).map_err(io)?;
        }
        let m = if exec { 0o755 } else { 0o644 };
        fs::set_permissions(to, fs::Permissions::from_mode(m)).map_err(io)
    }
}

/// The installed record (`NAME/.crd-install`), as `key = value` lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub source: String,
    pub reference: String,
    pub commit: String,
    pub archive_sha256: String,
    pub tree_sha256: String,
    pub installed_at: u64,
}

impl Record {
    fn render(&self) -> String {
        let mut s = String::new();
        for (k, v) in [
            ("source", self.source.as_str()),
            ("ref", &self.reference),
            ("commit", &self.commit),
            ("archive_sha256", &self.archive_sha256),
            ("tree_sha256", &self.tree_sha256),
        ] {
            if !v.is_empty() {
                s.push_str(&format!("{k} = {v}\n"));
            }
        }
        s.push_str(&format!("installed_at = {}\n", self.installed_at));
        s
    }

    pub fn parse(text: &str) -> Record {
        let mut r = Record::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once(" = ") else {
                continue;
            };
            let v = v.to_string();
            match k {
                "source" => r.source = v,
                "ref" => r.reference = v,
                "commit" => r.commit = v,
                "archive_sha256" => r.archive_sha256 = v,
                "tree_sha256" => r.tree_sha256 = v,
                "installed_at" => r.installed_at = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        r
    }

    /// The short revision `--list` shows.
    pub fn revision(&self) -> String {
        let short = |s: &str| s.chars().take(12).collect::<String>();
        if !self.commit.is_empty() {
            short(&self.commit)
        } else if !self.archive_sha256.is_empty() {
            format!("sha256:{}", short(&self.archive_sha256))
        } else if !self.tree_sha256.is_empty() {
            format!("tree:{}", short(&self.tree_sha256))
        } else {
            "-".into()
        }
    }
}

/// Checks the staged module: its executable, scripts and `module.conf`.
fn check_layout(
    staged: &Path,
    name: &str,
    rf: Option<&str>,
    git: bool,
) -> Result<config::ModuleMeta, Failure> {
    let exe = |f: &str| {
        fs::symlink_metadata(staged.join(f))
            .map(|m| m.is_file() && m.permissions().mode() & 0o100 != 0)
            .unwrap_or(false)
    };
    if !exe(name) && !exe("check") {
        return Err(failed(format!(
            "module `{name}` has neither an executable `{name}` (support) nor an executable `check`"
        )));
    }
    for f in ["install", "rollback", "response"] {
        if staged.join(f).exists() && !exe(f) {
            return Err(failed(format!(
                "module `{name}`: `{f}` is not an executable file"
            )));
        }
    }
    let conf = staged.join("module.conf");
    let meta = if conf.exists() {
        let text = crate::host::files::read_bounded(&conf, config::MAX_CONFIG_BYTES)
            .map_err(|e| failed(format!("{name}/module.conf: {e}")))?;
        config::parse_module_conf(&text, Path::new(&format!("{name}/module.conf")))
            .map_err(|e| failed(format!("module `{name}`: {e}")))?;
        config::module_meta(&text)
    } else {
        config::ModuleMeta::default()
    };
    let ours = env!("CARGO_PKG_VERSION");
    if !meta.min_crd_version.is_empty() && !version_at_least(ours, &meta.min_crd_version) {
        return Err(failed(format!(
            "module `{name}` needs crd {} or newer; this is crd {ours}",
            meta.min_crd_version
        )));
    }
    if let (Some(r), false) = (rf, git)
        && meta.version.trim_start_matches('v') != r.trim_start_matches('v')
    {
        return Err(failed(format!(
            "asked for {name}@{r}, but the module's version is `{}`",
            if meta.version.is_empty() {
                "(none)"
            } else {
                &meta.version
            }
        )));
    }
    Ok(meta)
}

/// Runs the staged module's `install` or `rollback`, if it has one, with the limits
/// and timeout of a check (crd.conf's, not the module's own). `Ok(None)`: absent.
fn run_script(
    cfg: &Config,
    name: &str,
    staged: &Path,
    final_dir: &Path,
    step: &str,
    out: &mut dyn Write,
) -> Result<Option<Outcome>, Failure> {
    let program = staged.join(step);
    if !program.exists() {
        return Ok(None);
    }
    let settings = cfg.module_settings(name, &[]);
    let node = node_name(cfg);
    let host = Host {
        config: &cfg.path,
        node: &node,
    };
    let recipe = Recipe::install_step(host, name, staged, final_dir, step, &settings);
    let f = run_once(&recipe).map_err(|e| failed(format!("{step}: {e}")))?;
    let _ = writeln!(out, "{step}: {}", f.outcome.describe());
    for line in f.output.lines() {
        let _ = writeln!(out, "  | {line}");
    }
    Ok(Some(f.outcome))
}

/// Moves `.staging-NAME` into place as `NAME`, the previous version out of the way
/// first and removed last.
fn swap_in(dir: &Path, name: &str) -> io::Result<()> {
    let target = dir.join(name);
    let old = dir.join(format!(".old-{name}"));
    let staging = dir.join(format!(".staging-{name}"));
    let had_old = fs::symlink_metadata(&target).is_ok();
    if had_old {
        fs::rename(&target, &old)?;
    }
    if let Err(e) = fs::rename(&staging, &target) {
        if had_old {
            let _ = fs::rename(&old, &target);
        }
        return Err(e);
    }
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    if had_old {
        remove_tree(&old)?;
    }
    Ok(())
}

/// Tells a running daemon to re-scan its modules; a line for the operator.
fn tell_daemon(cfg: &Config) -> String {
    use crate::host::control::{Request, Response, call};
    match call(&cfg.control_socket, &Request::Reload) {
        Ok(Response::Done(_)) => "the running daemon reloaded its modules".into(),
        Ok(r) => format!("the daemon answered: {}", r.encode().trim()),
        Err(_) => format!(
            "no daemon reachable at {}; it picks the change up when it starts (or on SIGHUP)",
            cfg.control_socket.display()
        ),
    }
}

/// `crd --install SPEC [-l LOCATION]`: prints progress to `out`; `Ok` with the
/// summary line.
pub fn install(
    cfg: &Config,
    spec: &str,
    location: Option<&str>,
    out: &mut dyn Write,
) -> Result<String, Failure> {
    let (name, rf) = parse_spec(spec)?;
    let from_repo = location.is_none();
    let loc = match location {
        Some(l) => l,
        None if cfg.repository.is_empty() => {
            return Err(Failure::Usage(format!(
                "no repository configured in {}: set `repository = LOCATION`, or give the module's location with -l",
                cfg.path.display()
            )));
        }
        None => cfg.repository.as_str(),
    };
    let kind = classify(loc, name, from_repo, rf.is_some())?;
    let dir = &cfg.modules_dir;
    let _lock = Lock::take(dir)?;
    for line in recover_locked(dir) {
        let _ = writeln!(out, "{line}");
    }
    let work = dir.join(format!(".fetch-{name}"));
    let staging = dir.join(format!(".staging-{name}"));
    fs::create_dir(&work).map_err(|e| failed(format!("{}: {e}", work.display())))?;
    let job = Job {
        cfg,
        name,
        rf,
        loc,
        kind,
        from_repo,
        work: &work,
        staging: &staging,
    };
    let result = transact(&job, out);
    let _ = remove_tree(&work);
    let _ = remove_tree(&staging);
    let summary = result?;
    Ok(format!("{summary}; {}", tell_daemon(cfg)))
}

/// One `crd --install`: the module, where it comes from, and the hidden
/// directories it is fetched into and staged in.
struct Job<'a> {
    cfg: &'a Config,
    name: &'a str,
    rf: Option<&'a str>,
    loc: &'a str,
    kind: Location,
    from_repo: bool,
    work: &'a Path,
    staging: &'a Path,
}

/// Fetches, stages and checks the module, runs its `install` and swaps it in:
/// the summary line. The caller removes the hidden directories either way.
fn transact(job: &Job<'_>, out: &mut dyn Write) -> Result<String, Failure> {
    let (cfg, name, loc, staging) = (job.cfg, job.name, job.loc, job.staging);
    let (src, prov) = fetch(job, out)?;
    let root = module_root(&src, name, job.from_repo, loc)?;
    let tree = stage(&root, staging, cfg.install_max_size)?;
    let git = matches!(job.kind, Location::Git(_));
    let meta = check_layout(staging, name, job.rf, git)?;
    let record = Record {
        source: loc.to_string(),
        reference: job.rf.unwrap_or_default().to_string(),
        commit: prov.commit.unwrap_or_default(),
        archive_sha256: prov.archive_sha256.unwrap_or_default(),
        tree_sha256: tree,
        installed_at: crate::host::clock::unix_ms() / 1000,
    };
    fs::write(staging.join(RECORD), record.render())
        .map_err(|e| failed(format!("{RECORD}: {e}")))?;
    let final_dir = cfg.modules_dir.join(name);
    run_install(job, &final_dir, out)?;
    if let Err(e) = swap_in(&cfg.modules_dir, name) {
        let why = format!("moving {name} into place: {e}");
        return Err(rollback(job, &final_dir, out, why));
    }
    let version = if meta.version.is_empty() {
        "(no version)".to_string()
    } else {
        meta.version
    };
    Ok(format!(
        "installed {name} {version} from {loc} ({}) in {}",
        record.revision(),
        final_dir.display()
    ))
}

/// Brings the module's source into `job.work` (a directory is used where it is):
/// where it is now, and what the fetch learnt of its revision.
fn fetch(job: &Job<'_>, out: &mut dyn Write) -> Result<(PathBuf, Provenance), Failure> {
    let mut fetch = Fetch {
        cfg: job.cfg,
        name: job.name,
        work: job.work.to_path_buf(),
        out,
    };
    match &job.kind {
        Location::Git(url) => fetch.git(url, job.rf),
        Location::Dir(p) => Ok((p.clone(), Provenance::default())),
        Location::TarPath(p) => fetch.tarball(p),
        Location::TarUrl(u) => {
            let a = fetch.download(u)?;
            fetch.tarball(&a)
        }
    }
}

/// Runs the staged module's `install`, if it has one; when it fails, `rollback`.
fn run_install(job: &Job<'_>, final_dir: &Path, out: &mut dyn Write) -> Result<(), Failure> {
    let (cfg, name) = (job.cfg, job.name);
    match run_script(cfg, name, job.staging, final_dir, "install", out) {
        Ok(None) | Ok(Some(Outcome::Exited(0))) => Ok(()),
        Ok(Some(o)) => {
            let why = match o {
                Outcome::TimedOut => format!(
                    "`install` of {name} timed out after {} ms",
                    crate::core::dur::ms(cfg.module_settings(name, &[]).timeout)
                ),
                o => format!("`install` of {name} failed ({})", o.describe()),
            };
            Err(rollback(job, final_dir, out, why))
        }
        Err(e) => Err(rollback(job, final_dir, out, e.message().to_string())),
    }
}

/// Runs the staged module's `rollback`, if it has one, after `why` stopped the
/// install: the failure to report, `rollback`'s own failure added.
fn rollback(job: &Job<'_>, final_dir: &Path, out: &mut dyn Write, why: String) -> Failure {
    match run_script(job.cfg, job.name, job.staging, final_dir, "rollback", out) {
        Ok(Some(Outcome::Exited(0))) | Ok(None) => failed(why),
        Ok(Some(o)) => failed(format!("{why}; rollback also failed ({})", o.describe())),
        Err(e) => failed(format!("{why}; rollback: {}", e.message())),
    }
}

/// `crd --remove NAME`.
pub fn remove(cfg: &Config, name: &str) -> Result<String, Failure> {
    config::valid_name(name)
        .map_err(|why| Failure::Usage(format!("bad module name `{name}`: {why}")))?;
    let dir = &cfg.modules_dir;
    let _lock = Lock::take(dir)?;
    recover_locked(dir);
    let target = dir.join(name);
    if !fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
        return Err(failed(format!("no module `{name}` in {}", dir.display())));
    }
    let gone = dir.join(format!(".removing-{name}"));
    fs::rename(&target, &gone).map_err(|e| failed(format!("{}: {e}", target.display())))?;
    remove_tree(&gone).map_err(|e| failed(format!("{}: {e}", gone.display())))?;
    Ok(format!(
        "removed {name} from {}; {}",
        dir.display(),
        tell_daemon(cfg)
    ))
}

/// `YYYY-MM-DD HH:MM` (UTC) of unix seconds.
pub fn utc(secs: u64) -> String {
    let c = crate::core::date::civil(secs);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute
    )
}

/// `crd --list`: one line per module directory.
/// `crd --list`: a table, or (`json`) one JSON array of objects with `name`,
/// `version`, `kind`, `revision`, `installed_unix_s`, `installed` (UTC) and
/// `source`, each `null` where the table says `-` (a module copied by hand has
/// no install record).
pub fn list(cfg: &Config, json: bool) -> Result<String, Failure> {
    let dir = &cfg.modules_dir;
    let mut names =
        names_in(dir, true).map_err(|e| failed(format!("modules_dir {}: {e}", dir.display())))?;
    names.retain(|n| !n.starts_with('.'));
    let mut s = format!(
        "{:<24} {:<10} {:<17} {:<15} {:<18} SOURCE\n",
        "NAME", "VERSION", "KIND", "REVISION", "INSTALLED"
    );
    let mut rows = Vec::new();
    for n in names {
        let d = dir.join(&n);
        let meta =
            crate::host::files::read_bounded(&d.join("module.conf"), config::MAX_CONFIG_BYTES)
                .map(|t| config::module_meta(&t))
                .unwrap_or_default();
        let rec = crate::host::files::read_bounded(&d.join(RECORD), 64 << 10)
            .map(|t| Record::parse(&t))
            .ok();
        let kind = match (d.join(&n).is_file(), d.join("check").is_file()) {
            (true, true) => "support+check",
            (true, false) => "support",
            (false, true) => "check",
            (false, false) => "?",
        };
        let (rev, at, source) = match &rec {
            Some(r) => (r.revision(), utc(r.installed_at), r.source.clone()),
            None => ("-".into(), "-".into(), "(copied by hand)".into()),
        };
        let version = if meta.version.is_empty() {
            "-"
        } else {
            &meta.version
        };
        if json {
            let opt = |v: Option<&str>| v.map_or_else(|| "null".to_string(), json_str);
            rows.push(format!(
                "{{\"name\":{},\"version\":{},\"kind\":{},\"revision\":{},\
                 \"installed_unix_s\":{},\"installed\":{},\"source\":{}}}",
                json_str(&n),
                opt((!meta.version.is_empty()).then_some(meta.version.as_str())),
                json_str(kind),
                opt(rec.as_ref().map(|_| rev.as_str())),
                rec.as_ref()
                    .map_or_else(|| "null".to_string(), |r| r.installed_at.to_string()),
                opt(rec.as_ref().map(|_| at.as_str())),
                opt(rec.as_ref().map(|r| r.source.as_str())),
            ));
            continue;
        }
        s.push_str(&format!(
            "{n:<24} {version:<10} {kind:<17} {rev:<15} {at:<18} {source}\n"
        ));
    }
    if json {
        return Ok(format!("[{}]\n", rows.join(",")));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_and_refs() {
        assert_eq!(parse_spec("notify").unwrap(), ("notify", None));
        assert_eq!(
            parse_spec("wan-failover@v1.2").unwrap(),
            ("wan-failover", Some("v1.2"))
        );
        for bad in [
            "a/b",
            "..",
            ".x",
            "",
            "x@",
            "x@-oops",
            "x@a..b",
            "x@a b",
            &"n".repeat(65),
        ] {
            assert!(
                matches!(parse_spec(bad).unwrap_err(), Failure::Usage(_)),
                "{bad}"
            );
        }
    }

    #[test]
    fn locations_are_classified() {
        let c = |l: &str, repo: bool| classify(l, "m", repo, false);
        assert_eq!(
            c("https://g.example/ops/m.git", false).unwrap(),
            Location::Git("https://g.example/ops/m.git".into())
        );
        assert_eq!(
            c("git@g.example:ops/m", false).unwrap(),
            Location::Git("git@g.example:ops/m".into())
        );
        assert_eq!(
            c("/mnt/usb/m.tar.gz", false).unwrap(),
            Location::TarPath("/mnt/usb/m.tar.gz".into())
        );
        assert_eq!(
            c("file:///x/m.tgz", false).unwrap(),
            Location::TarPath("/x/m.tgz".into())
        );
        assert_eq!(
            c("https://e.example/m.tar.gz", false).unwrap(),
            Location::TarUrl("https://e.example/m.tar.gz".into())
        );
        assert_eq!(
            c("https://e.example/mods/", true).unwrap(),
            Location::TarUrl("https://e.example/mods/m.tar.gz".into())
        );
        assert_eq!(c("/", false).unwrap(), Location::Dir("/".into()));
        assert!(c("/no/such/thing", false).is_err());
        assert!(matches!(c("-uoops", false).unwrap_err(), Failure::Usage(_)));
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_at_least("0.10.0", "0.9"));
        assert!(version_at_least("1.0", "1.0.0"));
        assert!(!version_at_least("0.1.0", "0.2"));
        assert!(version_at_least("v2", "1.9.9"));
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00Z");
        assert_eq!(utc(1_795_000_000), "2026-11-18 11:06Z");
    }

    #[test]
    fn records_round_trip() {
        let r = Record {
            source: "file:///r".into(),
            reference: "v1".into(),
            commit: "0123456789abcdef".into(),
            archive_sha256: String::new(),
            tree_sha256: "ff".into(),
            installed_at: 42,
        };
        assert_eq!(Record::parse(&r.render()), r);
        assert_eq!(r.revision(), "0123456789ab");
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("crd-inst-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn recovery_puts_back_an_interrupted_swap_and_cleans_the_rest() {
        let d = tmp("recover");
        // Crash between the two renames: only .old-a; a crash after them: both.
        fs::create_dir_all(d.join(".old-a")).unwrap();
        fs::write(d.join(".old-a/a"), "v1").unwrap();
        fs::create_dir_all(d.join(".old-b")).unwrap();
        fs::create_dir_all(d.join("b")).unwrap();
        fs::write(d.join("b/b"), "v2").unwrap();
        fs::create_dir_all(d.join(".staging-c/x")).unwrap();
        fs::create_dir_all(d.join(".fetch-c/src")).unwrap();
        fs::create_dir_all(d.join(".removing-d")).unwrap();
        let done = recover(&d);
        assert_eq!(done.len(), 5, "{done:?}");
        assert_eq!(fs::read_to_string(d.join("a/a")).unwrap(), "v1");
        assert_eq!(fs::read_to_string(d.join("b/b")).unwrap(), "v2");
        let left: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != LOCK)
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn staging_refuses_escaping_symlinks_and_setuid_files() {
        let d = tmp("stage");
        let src = d.join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("m"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(src.join("m"), fs::Permissions::from_mode(0o775)).unwrap();
        std::os::unix::fs::symlink("../m", src.join("sub/ok")).unwrap();
        let a = stage(&src, &d.join("s1"), 1 << 20).unwrap();
        let mode = fs::metadata(d.join("s1/m")).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755, "group write is dropped");
        let b = stage(&src, &d.join("s2"), 1 << 20).unwrap();
        assert_eq!(a, b, "the tree digest is deterministic");
        assert!(
            stage(&src, &d.join("s3"), 5)
                .unwrap_err()
                .message()
                .contains("install_max_size")
        );
        std::os::unix::fs::symlink("/etc/passwd", src.join("sub/bad")).unwrap();
        let e = stage(&src, &d.join("s4"), 1 << 20).unwrap_err();
        assert!(e.message().contains("points outside"), "{e:?}");
        fs::remove_file(src.join("sub/bad")).unwrap();
        fs::set_permissions(src.join("m"), fs::Permissions::from_mode(0o4755)).unwrap();
        let e = stage(&src, &d.join("s5"), 1 << 20).unwrap_err();
        assert!(e.message().contains("setuid"), "{e:?}");
        // The same rule as the tar reader: a sticky bit is refused too.
        fs::set_permissions(src.join("m"), fs::Permissions::from_mode(0o1755)).unwrap();
        let e = stage(&src, &d.join("s6"), 1 << 20).unwrap_err();
        assert!(e.message().contains("sticky"), "{e:?}");
        fs::remove_dir_all(&d).unwrap();
    }
}
