//! The storage under the spool: a small trait over a directory of files, a real
//! implementation on files (pwrite/pread, fdatasync, no mmap: JFFS2/UBIFS), and a
//! memory implementation that injects faults and power cuts deterministically.
//!
//! The spool talks only to `Storage`; it never sees a path or a descriptor. The
//! memory store models what a power cut may leave: every write or truncate since the
//! file's last sync is applied whole, not at all, or torn (a prefix), independently
//! and in any combination; a file created since the last directory sync may vanish.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub trait Storage {
    /// Names of the files in the directory.
    fn list(&mut self) -> io::Result<Vec<String>>;
    /// Length of `name`; `None` if it does not exist.
    fn len(&mut self, name: &str) -> io::Result<Option<u64>>;
    /// Reads up to `buf.len()` bytes at `off`; fewer only at the end of the file.
    fn read_at(&mut self, name: &str, off: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes all of `data` at `off`, creating the file if needed.
    fn write_at(&mut self, name: &str, off: u64, data: &[u8]) -> io::Result<()>;
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()>;
    /// Makes the file's data durable (fdatasync).
    fn sync(&mut self, name: &str) -> io::Result<()>;
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// Makes creations and removals in the directory durable.
    fn sync_dir(&mut self) -> io::Result<()>;
    /// Drops any open handle of `name`: after a failed sync the old descriptor's
    /// error state cannot be trusted (ARCHITECTURE.md, Reliability: reopen, re-verify, rewrite).
    fn reopen(&mut self, name: &str);
    /// The directory itself is gone (deleted, or replaced by another one) while
    /// the spool was open: files still open can be read, no new file can be made.
    fn vanished(&mut self) -> bool;
    /// Makes the directory again (empty) and takes its lock again, after
    /// `vanished`. Open handles are dropped only by `reopen`/`remove`: the spool
    /// reads what it can still reach through them first.
    fn recreate(&mut self) -> io::Result<()>;
    /// Drops every open handle.
    fn forget_all(&mut self);
}

/// Open file handles kept at most; older ones are closed and reopened on demand.
const MAX_OPEN_FILES: usize = 8;

/// A directory of real files.
pub struct FileStorage {
    dir: PathBuf,
    open: Vec<(String, File)>,
    /// Held for the life of the spool: a second crd on this directory fails to lock.
    _lock: File,
    /// (device, inode) of the directory when it was opened: another directory at
    /// the same path is not ours.
    id: (u64, u64),
}

fn dir_id(dir: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(dir)?;
    Ok((m.dev(), m.ino()))
}

/// Opens and locks `dir/lock`; `WouldBlock` names the directory when another crd
/// holds it.
fn take_lock(dir: &Path) -> io::Result<File> {
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join("lock"))?;
    // flock(LOCK_EX | LOCK_NB): released by the kernel when crd dies, and by
    // every child crd was starting at that moment once it reaches its exec (the
    // lock's descriptor is close-on-exec, but a child between clone and exec holds
    // a copy): a crd restarted at once after a crash waits for that, briefly.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(lock),
            Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("spool {} is locked by another crd", dir.display()),
                ));
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// How long opening a directory waits for its lock before it says another crd
/// holds it (see `take_lock`).
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl FileStorage {
    /// Opens (creating, mode 0700 whatever the umask: records hold module output)
    /// `dir` and takes its lock file. An existing directory keeps its mode.
    pub fn open(dir: &Path) -> io::Result<FileStorage> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let lock = take_lock(dir)?;
        Ok(FileStorage {
            dir: dir.to_path_buf(),
            open: Vec::new(),
            _lock: lock,
            id: dir_id(dir)?,
        })
    }

    /// Opens `dir` to read only, without the lock (`crd dump` beside a running crd).
    pub fn open_read_only(dir: &Path) -> io::Result<FileStorage> {
        let lock = File::open(dir)?;
        Ok(FileStorage {
            dir: dir.to_path_buf(),
            open: Vec::new(),
            _lock: lock,
            id: dir_id(dir)?,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&mut self, name: &str, create: bool) -> io::Result<&File> {
        if let Some(i) = self.open.iter().position(|(n, _)| n == name) {
            return Ok(&self.open[i].1);
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .mode(0o600)
            .open(self.dir.join(name))?;
        if self.open.len() == MAX_OPEN_FILES {
            self.open.remove(0);
        }
        self.open.push((name.to_string(), f));
        Ok(&self.open.last().expect("just pushed").1)
    }
}

impl Storage for FileStorage {
    /// Files only: a directory beside them (the collector's `journal`) is never
    /// one of the spool's.
    fn list(&mut self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            out.push(e.file_name().to_string_lossy().into_owned());
        }
        Ok(out)
    }

    fn len(&mut self, name: &str) -> io::Result<Option<u64>> {
        match fs::metadata(self.dir.join(name)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read_at(&mut self, name: &str, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        let f = self.file(name, false)?;
        let mut n = 0;
        while n < buf.len() {
            match f.read_at(&mut buf[n..], off + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    fn write_at(&mut self, name: &str, off: u64, data: &[u8]) -> io::Result<()> {
        self.file(name, true)?.write_all_at(data, off)
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        self.file(name, false)?.set_len(len)
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.file(name, false)?.sync_data()
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.reopen(name);
        match fs::remove_file(self.dir.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn reopen(&mut self, name: &str) {
        self.open.retain(|(n, _)| n != name);
    }

    fn vanished(&mut self) -> bool {
        dir_id(&self.dir).map_or(true, |id| id != self.id)
    }

    fn recreate(&mut self) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        self._lock = take_lock(&self.dir)?;
        self.id = dir_id(&self.dir)?;
        Ok(())
    }

    fn forget_all(&mut self) {
        self.open.clear();
    }
}

/// Which operation a planned fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Write,
    Sync,
    Read,
}

#[derive(Clone, Debug, Default)]
struct MemFile {
    /// What survives a power cut for sure.
    durable: Vec<u8>,
    /// What reads see now.
    current: Vec<u8>,
    /// Writes and truncates since the last sync, in order.
    pending: Vec<Pending>,
    /// Created since the last directory sync: may vanish in a power cut.
    new: bool,
}

#[derive(Clone, Debug)]
enum Pending {
    Write(u64, Vec<u8>),
    Truncate(u64),
}

fn apply(file: &mut Vec<u8>, p: &Pending, keep: usize) {
    match p {
        Pending::Write(off, data) => {
            let off = *off as usize;
            let data = &data[..keep.min(data.len())];
            if file.len() < off + data.len() {
                file.resize(off + data.len(), 0);
            }
            file[off..off + data.len()].copy_from_slice(data);
        }
        Pending::Truncate(len) => file.resize(*len as usize, 0),
    }
}

/// An in-memory directory with planned faults and simulated power cuts.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    files: BTreeMap<String, MemFile>,
    /// Planned faults: (operation, how many more of it succeed first, error).
    faults: Vec<(Op, u32, io::ErrorKind)>,
    /// Total bytes the "disk" holds; writes past it fail with StorageFull (ENOSPC).
    pub capacity: Option<u64>,
    pub syncs: u32,
    /// The directory is gone (`vanish`): no file can be created until `recreate`.
    vanished: bool,
    /// Files of a vanished directory that were "open": still readable, as a real
    /// open descriptor of a deleted file is, until `reopen` or `forget_all`.
    ghosts: BTreeMap<String, MemFile>,
}

impl MemStorage {
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// The next `op` after `after` successful ones fails with `kind` (once).
    pub fn fail(&mut self, op: Op, after: u32, kind: io::ErrorKind) {
        self.faults.push((op, after, kind));
    }

    /// The disk is healthy again: no planned fault is left, no capacity bound.
    pub fn heal(&mut self) {
        self.faults.clear();
        self.capacity = None;
    }

    fn check(&mut self, op: Op) -> io::Result<()> {
        let mut hit = None;
        for (i, (o, after, kind)) in self.faults.iter_mut().enumerate() {
            if *o == op {
                if *after == 0 {
                    hit = Some((i, *kind));
                    break;
                }
                *after -= 1;
            }
        }
        if let Some((i, kind)) = hit {
            self.faults.remove(i);
            return Err(io::Error::new(kind, format!("injected {op:?} fault")));
        }
        Ok(())
    }

    fn used(&self) -> u64 {
        self.files.values().map(|f| f.current.len() as u64).sum()
    }

    /// Simulates a power cut: each unsynced write is kept whole, lost, or torn, as
    /// `choose(op_index, write_len)` says: `None` drops it, `Some(n)` keeps its first
    /// n bytes. Files created since the last directory sync vanish when
    /// `keep_new_files` is false.
    pub fn power_cut(
        &mut self,
        mut choose: impl FnMut(usize, usize) -> Option<usize>,
        keep_new_files: bool,
    ) {
        let mut k = 0;
        self.files.retain(|_, f| keep_new_files || !f.new);
        for f in self.files.values_mut() {
            let mut disk = f.durable.clone();
            for p in &f.pending {
                let len = match p {
                    Pending::Write(_, d) => d.len(),
                    Pending::Truncate(_) => 0,
                };
                if let Some(keep) = choose(k, len) {
                    apply(&mut disk, p, keep);
                }
                k += 1;
            }
            f.durable = disk.clone();
            f.current = disk;
            f.pending.clear();
            f.new = false;
        }
    }

    /// Simulates `rm -rf` of the directory under a running crd: every file is
    /// gone; those named in `open` stay readable (as through open descriptors); no
    /// file can be created until `recreate`.
    pub fn vanish(&mut self, open: &[&str]) {
        for (name, f) in std::mem::take(&mut self.files) {
            if open.contains(&name.as_str()) {
                self.ghosts.insert(name, f);
            }
        }
        self.vanished = true;
    }

    /// Raw access for tests that damage files.
    pub fn bytes_mut(&mut self, name: &str) -> Option<&mut Vec<u8>> {
        self.files.get_mut(name).map(|f| {
            f.durable = f.current.clone();
            f.pending.clear();
            &mut f.current
        })
    }

    pub fn put(&mut self, name: &str, data: &[u8]) {
        self.files.insert(
            name.to_string(),
            MemFile {
                durable: data.to_vec(),
                current: data.to_vec(),
                ..MemFile::default()
            },
        );
    }
}

impl Storage for MemStorage {
    fn list(&mut self) -> io::Result<Vec<String>> {
        Ok(self.files.keys().cloned().collect())
    }

    fn len(&mut self, name: &str) -> io::Result<Option<u64>> {
        Ok(self.files.get(name).map(|f| f.current.len() as u64))
    }

    fn read_at(&mut self, name: &str, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.check(Op::Read)?;
        let f = self
            .files
            .get(name)
            .or_else(|| self.ghosts.get(name))
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let off = (off as usize).min(f.current.len());
        let n = buf.len().min(f.current.len() - off);
        buf[..n].copy_from_slice(&f.current[off..off + n]);
        Ok(n)
    }

    fn write_at(&mut self, name: &str, off: u64, data: &[u8]) -> io::Result<()> {
        self.check(Op::Write)?;
        if let Some(g) = self.ghosts.get_mut(name) {
            // Through the open descriptor of a deleted file: it goes nowhere.
            let p = Pending::Write(off, data.to_vec());
            apply(&mut g.current, &p, data.len());
            return Ok(());
        }
        if self.vanished && !self.files.contains_key(name) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        let cur = self.files.get(name).map_or(0, |f| f.current.len() as u64);
        let grow = (off + data.len() as u64).saturating_sub(cur);
        if self.capacity.is_some_and(|c| self.used() + grow > c) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device",
            ));
        }
        let f = self
            .files
            .entry(name.to_string())
            .or_insert_with(|| MemFile {
                new: true,
                ..MemFile::default()
            });
        let p = Pending::Write(off, data.to_vec());
        apply(&mut f.current, &p, data.len());
        f.pending.push(p);
        Ok(())
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        let f = match self.files.get_mut(name) {
            Some(f) => f,
            None => self
                .ghosts
                .get_mut(name)
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?,
        };
        let p = Pending::Truncate(len);
        apply(&mut f.current, &p, 0);
        f.pending.push(p);
        Ok(())
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.check(Op::Sync)?;
        if self.ghosts.contains_key(name) {
            self.syncs += 1;
            return Ok(());
        }
        let f = self
            .files
            .get_mut(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        f.durable = f.current.clone();
        f.pending.clear();
        self.syncs += 1;
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.files.remove(name);
        Ok(())
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        if self.vanished {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        for f in self.files.values_mut() {
            f.new = false;
        }
        Ok(())
    }

    fn reopen(&mut self, name: &str) {
        self.ghosts.remove(name);
    }

    fn vanished(&mut self) -> bool {
        self.vanished
    }

    fn recreate(&mut self) -> io::Result<()> {
        self.check(Op::Write)?;
        self.vanished = false;
        Ok(())
    }

    fn forget_all(&mut self) {
        self.ghosts.clear();
    }
}
