//! A careful tar extractor for `crd --install`: ustar, GNU long names (`L`, `K`) and
//! pax path headers (`x`; `g` is skipped), regular files, directories and symlinks.
//! Everything an archive from a stranger can do wrong is refused with the entry's
//! name: absolute paths, `..`, hard links, devices and fifos, setuid/setgid/sticky
//! bits, a symlink that leads out of the tree (or one that a later entry writes
//! through), more than `MAX_ENTRIES` entries, paths deeper than `MAX_DEPTH`, files
//! adding up to more than the caller's byte limit. Symlinks are created only after
//! every file, so no entry can be written through one. Decompression is not done
//! here: `gzip -dc` (busybox has it) writes the plain tar this reads.

use crate::install::error::{Error, Reason, Why};
use crate::install::safety;
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// Most entries one archive may hold (files, directories, symlinks, headers).
pub const MAX_ENTRIES: usize = 4096;
/// Deepest path inside an archive, in components.
pub const MAX_DEPTH: usize = 16;
/// Longest path or link target, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Largest pax or GNU long-name header data, in bytes.
const MAX_META_BYTES: u64 = 64 * 1024;

const BLOCK: usize = 512;

#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// Headers that describe the next entry: GNU long name/link, pax.
    LongName,
    LongLink,
    Pax,
    PaxGlobal,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub mode: u32,
    pub size: u64,
    pub kind: Kind,
    pub link: String,
}

/// What an extraction produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub files: usize,
    pub bytes: u64,
}

fn octal(field: &[u8], what: &'static str) -> Result<u64, Error> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        return Err(Reason::Base256(what).into());
    }
    let s: Vec<u8> = field
        .iter()
        .copied()
        .take_while(|&b| b != 0)
        .filter(|&b| b != b' ')
        .collect();
    if s.is_empty() {
        return Ok(0);
    }
    let s = std::str::from_utf8(&s).map_err(|_| Reason::BadField(what, None))?;
    u64::from_str_radix(s, 8).map_err(|_| Reason::BadField(what, Some(s.to_string())).into())
}

fn text(field: &[u8]) -> Result<String, Error> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8(field[..end].to_vec()).map_err(|_| Reason::NotUtf8.into())
}

/// Parses one 512-byte header block; `Ok(None)` for the all-zero end block.
pub fn parse_header(b: &[u8; BLOCK]) -> Result<Option<Header>, Error> {
    if b.iter().all(|&x| x == 0) {
        return Ok(None);
    }
    let want = octal(&b[148..156], "checksum")?;
    let sum: u64 = b
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(x)
            }
        })
        .sum();
    if sum != want {
        return Err(Reason::Checksum.into());
    }
    let mut name = text(&b[0..100])?;
    if &b[257..262] == b"ustar" {
        let prefix = text(&b[345..500])?;
        if !prefix.is_empty() {
            name = format!("{prefix}/{name}");
        }
    }
    let kind = match b[156] {
        b'0' | 0 | b'7' => Kind::File,
        b'5' => Kind::Dir,
        b'2' => Kind::Symlink,
        b'L' => Kind::LongName,
        b'K' => Kind::LongLink,
        b'x' => Kind::Pax,
        b'g' => Kind::PaxGlobal,
        // Hard links, devices, fifos, anything else.
        t => return Err(Error::at(&name, Why::EntryType(t))),
    };
    Ok(Some(Header {
        mode: octal(&b[100..108], "mode")? as u32,
        size: octal(&b[124..136], "size")?,
        link: text(&b[157..257])?,
        name,
        kind,
    }))
}

/// The components of a relative path inside the tree, or why it is refused.
pub fn safe_path(p: &str) -> Result<Vec<String>, Error> {
    if p.len() > MAX_PATH_BYTES {
        return Err(Reason::PathTooLong(MAX_PATH_BYTES).into());
    }
    if p.starts_with('/') {
        return Err(Error::at(p, Why::Absolute));
    }
    let mut out = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => return Err(Error::at(p, Why::DotDot)),
            _ => return Err(Error::at(p, Why::Absolute)),
        }
    }
    if out.len() > MAX_DEPTH {
        return Err(Error::at(p, Why::TooDeep(MAX_DEPTH)));
    }
    Ok(out)
}

/// Parses pax records (`LEN key=value\n`) for `path` and `linkpath`.
fn pax(data: &[u8], path: &mut Option<String>, link: &mut Option<String>) -> Result<(), Error> {
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&b| b == b' ').ok_or(Reason::BadPax)?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&l| l > sp + 1 && l <= rest.len())
            .ok_or(Reason::BadPax)?;
        let rec = &rest[sp + 1..len - 1];
        if let Some(eq) = rec.iter().position(|&b| b == b'=') {
            let v = String::from_utf8(rec[eq + 1..].to_vec()).map_err(|_| Reason::BadPax)?;
            match &rec[..eq] {
                b"path" => *path = Some(v),
                b"linkpath" => *link = Some(v),
                _ => {}
            }
        }
        rest = &rest[len..];
    }
    Ok(())
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8]) -> Result<(), Error> {
    r.read_exact(buf).map_err(|e| {
        Error::from(match e.kind() {
            io::ErrorKind::UnexpectedEof => Reason::Truncated,
            _ => Reason::Read(e),
        })
    })
}

/// Moves `n` bytes of `r` into `to` (or drops them). A plain loop, not `io::copy`:
/// its Linux fast paths (copy_file_range, splice, sendfile) cost binary size for
/// nothing here.
fn pass(r: &mut impl Read, n: u64, mut to: Option<&mut fs::File>) -> Result<(), Error> {
    let mut buf = [0u8; 4096];
    let mut left = n;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let got = match r.read(&mut buf[..want]) {
            Ok(0) => return Err(Reason::Truncated.into()),
            Ok(g) => g,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Reason::Read(e).into()),
        };
        if let Some(f) = to.as_deref_mut() {
            use std::io::Write;
            f.write_all(&buf[..got]).map_err(Reason::Write)?;
        }
        left -= got as u64;
    }
    Ok(())
}

fn skip(r: &mut impl Read, n: u64) -> Result<(), Error> {
    pass(r, n, None)
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// Extracts the plain tar `r` into the existing, empty directory `dest`, refusing
/// anything unsafe (see the file comment). Files get mode 0644 or 0755 (by the
/// owner's exec bit), directories 0755. `max_bytes`: the most file content, bytes.
pub fn extract(r: &mut impl Read, dest: &Path, max_bytes: u64) -> Result<Summary, Error> {
    let mut x = Extraction {
        dest,
        max_bytes,
        sum: Summary::default(),
        links: Vec::new(),
        long_name: None,
        long_link: None,
    };
    let mut block = [0u8; BLOCK];
    for _ in 0..MAX_ENTRIES {
        read_exact_or(r, &mut block)?;
        match parse_header(&block)? {
            Some(h) => x.entry(r, h)?,
            None => return x.finish(),
        }
    }
    Err(Reason::TooManyEntries(MAX_ENTRIES).into())
}

/// What `extract` keeps from one entry to the next.
struct Extraction<'a> {
    dest: &'a Path,
    max_bytes: u64,
    sum: Summary,
    /// The archive's symlinks (path, target), created after every file.
    links: Vec<(Vec<String>, String)>,
    /// The name and link target a GNU or pax header gave the next entry.
    long_name: Option<String>,
    long_link: Option<String>,
}

impl Extraction<'_> {
    /// Takes one entry whose header is `h`, and its data from `r`.
    fn entry(&mut self, r: &mut impl Read, h: Header) -> Result<(), Error> {
        if matches!(
            h.kind,
            Kind::LongName | Kind::LongLink | Kind::Pax | Kind::PaxGlobal
        ) {
            return self.meta(r, &h);
        }
        let name = self.long_name.take().unwrap_or(h.name);
        let link = self.long_link.take().unwrap_or(h.link);
        let comps = safe_path(&name)?;
        safety::mode_allowed(&name, h.mode)?;
        if self
            .links
            .iter()
            .any(|(l, _)| comps.len() > l.len() && comps[..l.len()] == l[..])
        {
            return Err(Error::at(&name, Why::ThroughSymlink));
        }
        if comps.is_empty() {
            return skip(r, h.size + padding(h.size)); // `./` itself
        }
        let path = self.dest.join(comps.iter().collect::<PathBuf>());
        match h.kind {
            Kind::Dir => {
                fs::create_dir_all(&path).map_err(|e| Error::at(&name, Why::Io(e)))?;
                skip(r, h.size + padding(h.size))
            }
            Kind::Symlink => {
                if !safety::link_stays_inside(&comps, &link) {
                    return Err(Error::at(&name, Why::LinkOutside(link)));
                }
                self.links.push((comps, link));
                skip(r, h.size + padding(h.size))
            }
            _ => self.file(r, &name, &path, h.size, h.mode),
        }
    }

    /// Reads a header that describes the next entry: a GNU long name or link, or
    /// pax records (a global one is read and dropped).
    fn meta(&mut self, r: &mut impl Read, h: &Header) -> Result<(), Error> {
        if h.size > MAX_META_BYTES {
            return Err(Error::at(&h.name, Why::MetaTooLarge));
        }
        let mut data = vec![0u8; h.size as usize];
        read_exact_or(r, &mut data)?;
        skip(r, padding(h.size))?;
        match h.kind {
            Kind::LongName => self.long_name = Some(text(&data)?),
            Kind::LongLink => self.long_link = Some(text(&data)?),
            Kind::Pax => pax(&data, &mut self.long_name, &mut self.long_link)?,
            _ => {}
        }
        Ok(())
    }

    /// Writes a regular file of `size` bytes from `r` to `path`, counted against
    /// `max_bytes`, with mode 0755 or 0644 by the owner's exec bit in `mode`.
    fn file(
        &mut self,
        r: &mut impl Read,
        name: &str,
        path: &Path,
        size: u64,
        mode: u32,
    ) -> Result<(), Error> {
        self.sum.bytes += size;
        self.sum.files += 1;
        if self.sum.bytes > self.max_bytes {
            return Err(Reason::ArchiveTooLarge(self.max_bytes).into());
        }
        let io = |e| Error::at(name, Why::Io(e));
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io)?;
        }
        let mut f = fs::File::create(path).map_err(io)?;
        pass(r, size, Some(&mut f)).map_err(|e| Error::at(name, Why::In(e)))?;
        let mode = if mode & 0o100 != 0 { 0o755 } else { 0o644 };
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io)?;
        skip(r, padding(size))
    }

    /// Creates the symlinks, now that no entry is left to write through them: the
    /// summary.
    fn finish(self) -> Result<Summary, Error> {
        for (comps, target) in &self.links {
            let at = comps.iter().collect::<PathBuf>();
            std::os::unix::fs::symlink(target, self.dest.join(&at))
                .map_err(|e| Error::at(&at.to_string_lossy(), Why::Io(e)))?;
        }
        Ok(self.sum)
    }
}

/// A ustar header block for `name` (type flag `kind`), for tests here and in
/// `tests/install.rs` that build archives byte by byte; unused by crd itself, so
/// it is not in the binary.
#[doc(hidden)]
pub fn ustar_header(name: &str, kind: u8, mode: u32, size: u64, link: &str) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[..name.len()].copy_from_slice(name.as_bytes());
    b[100..107].copy_from_slice(format!("{mode:07o}").as_bytes());
    b[108..115].copy_from_slice(b"0000000");
    b[116..123].copy_from_slice(b"0000000");
    b[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    b[136..147].copy_from_slice(b"00000000000");
    b[156] = kind;
    b[157..157 + link.len()].copy_from_slice(link.as_bytes());
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    b[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, u8, u32, &[u8], &str)]) -> Vec<u8> {
        let mut v = Vec::new();
        for (name, kind, mode, data, link) in entries {
            v.extend_from_slice(&ustar_header(name, *kind, *mode, data.len() as u64, link));
            v.extend_from_slice(data);
            v.resize(v.len() + padding(data.len() as u64) as usize, 0);
        }
        v.resize(v.len() + 2 * BLOCK, 0);
        v
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("crd-tar-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn extracts_files_dirs_and_inner_symlinks() {
        let d = tmp("ok");
        let a = archive(&[
            ("m/", b'5', 0o755, b"", ""),
            ("m/m", b'0', 0o775, b"#!/bin/sh\n", ""),
            ("m/data.txt", b'0', 0o666, b"x", ""),
            ("m/alias", b'2', 0o777, b"", "m"),
        ]);
        let s = extract(&mut &a[..], &d, 1 << 20).unwrap();
        assert_eq!(
            s,
            Summary {
                files: 2,
                bytes: 11
            }
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| fs::metadata(d.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("m/m"), 0o755);
        assert_eq!(mode("m/data.txt"), 0o644);
        assert_eq!(fs::read_link(d.join("m/alias")).unwrap(), Path::new("m"));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn refuses_what_a_hostile_archive_tries() {
        let d = tmp("bad");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (archive(&[("../evil", b'0', 0o644, b"x", "")]), "`..`"),
            (archive(&[("a/../../evil", b'0', 0o644, b"x", "")]), "`..`"),
            (archive(&[("/etc/evil", b'0', 0o644, b"x", "")]), "absolute"),
            (archive(&[("s", b'0', 0o4755, b"x", "")]), "setuid"),
            (
                archive(&[("l", b'2', 0o777, b"", "/etc/passwd")]),
                "outside",
            ),
            (archive(&[("l", b'2', 0o777, b"", "../../x")]), "outside"),
            (
                archive(&[("l", b'2', 0o777, b"", "."), ("l/x", b'0', 0o644, b"x", "")]),
                "through a symlink",
            ),
            (archive(&[("h", b'1', 0o644, b"", "x")]), "hard links"),
            (archive(&[("c", b'3', 0o644, b"", "")]), "device"),
            (
                archive(&[("big", b'0', 0o644, &[7u8; 2000], "")]),
                "more than",
            ),
        ];
        for (a, want) in cases {
            let e = extract(&mut &a[..], &d, 1000).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should mention {want}");
        }
        assert!(!d.parent().unwrap().join("evil").exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn long_names_and_pax_paths() {
        let d = tmp("long");
        let long = format!("{}/f", "d".repeat(150));
        let pax_rec = {
            let body = format!("path={long}\n");
            let mut n = body.len() + 3;
            if format!("{n} {body}").len() != n {
                n += 1;
            }
            format!("{n} {body}")
        };
        let a = archive(&[
            ("pax_global_header", b'g', 0o644, b"9 c=xyz\n", ""),
            ("././@LongLink", b'L', 0o644, long.as_bytes(), ""),
            ("truncated", b'0', 0o644, b"one", ""),
            ("PaxHeader/x", b'x', 0o644, pax_rec.as_bytes(), ""),
            ("truncated2", b'0', 0o644, b"two", ""),
        ]);
        extract(&mut &a[..], &d, 1 << 20).unwrap();
        assert_eq!(fs::read(d.join(&long)).unwrap(), b"two");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn truncated_and_corrupt_archives_are_errors() {
        let d = tmp("trunc");
        let a = archive(&[("f", b'0', 0o644, &[1u8; 700], "")]);
        assert!(
            extract(&mut &a[..600], &d, 1 << 20)
                .unwrap_err()
                .to_string()
                .contains("ends")
        );
        let mut bad = a.clone();
        bad[0] ^= 1;
        assert!(
            extract(&mut &bad[..], &d, 1 << 20)
                .unwrap_err()
                .to_string()
                .contains("checksum")
        );
        fs::remove_dir_all(&d).unwrap();
    }
}
