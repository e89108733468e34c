//! Unpacking one layer blob, as it streams in, into its own directory: decompress, verify the
//! blob's digest, and turn OCI whiteouts into overlayfs ones so the directory can be a
//! `lowerdir` as it is (containerd's `archive.OverlayConvertWhiteout`).
//!
//! OCI image-spec `layer.md`: `.wh.NAME` deletes NAME from the layers below (overlayfs: a 0/0
//! character device NAME), `.wh..wh..opq` hides everything below in its directory (overlayfs: the
//! `trusted.overlay.opaque=y` xattr on the directory).
//!
//! Entries are written through the `tar` crate's `unpack_in`, which refuses `..` and any parent
//! that resolves (through symlinks written earlier in the layer) outside the layer directory,
//! and checks hard-link targets the same way. This module refuses `..` loudly rather than
//! skipping it, and does the same checks for the entries it writes itself (whiteouts, devices).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

use bytes::{Buf as _, Bytes};
use rustix::fs::{FileType, Mode, Timespec, Timestamps};

#[cfg(test)]
use crate::digest::Hasher;
use crate::manifest::Compression;

/// overlayfs's opaque-directory marker.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// What went through the unpacker.
#[derive(Debug, Clone)]
pub(crate) struct Unpacked {
    /// Sum of the regular files' sizes (what the layer takes on disk, roughly).
    pub unpacked_bytes: u64,
    pub entries: u64,
}

/// A `Read` over chunks arriving on a channel from the async download (which hashes them).
pub(crate) struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    done: bool,
}

impl ChannelReader {
    pub(crate) fn new(rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>) -> ChannelReader {
        ChannelReader { rx, current: Bytes::new(), done: false }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// A `Read` over any reader that hashes what passes (for unpacking from files and tests).
#[cfg(test)]
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

#[cfg(test)]
impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Hasher::new() }
    }

    pub(crate) fn digest(&self) -> String {
        self.hasher.clone().finish()
    }
}

#[cfg(test)]
impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Decoded bytes handed from the decoder thread to the tar writer at a time.
const DECODED_CHUNK: usize = 1 << 20;
/// Decoded chunks in flight between the two threads (bounds memory at 8 MiB per layer).
const DECODED_IN_FLIGHT: usize = 8;

/// Unpacks a layer blob read from `src` into the existing, empty directory `dest`, reading the
/// blob to its end so that a hash the caller computes over `src` covers all of it. The caller
/// compares the digest and discards `dest` when it does not match.
///
/// A compressed layer is decoded on a thread of its own, which hands 1 MiB chunks to this one
/// writing the files: decompression and file system writes of one layer use two cores.
///
/// # Errors
/// Corrupt compression or tar data, entries escaping `dest`, or file system errors.
pub(crate) fn unpack_layer<R: Read + Send>(
    mut src: R,
    compression: Compression,
    dest: &Path,
) -> io::Result<Unpacked> {
    let (unpacked_bytes, entries) = match compression {
        Compression::None => {
            let stats = unpack_tar(&mut src, dest)?;
            io::copy(&mut src, &mut io::sink())?;
            stats
        }
        Compression::Gzip | Compression::Zstd => std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::sync_channel(DECODED_IN_FLIGHT);
            let decoder = std::thread::Builder::new()
                .name("layer-decode".to_owned())
                .spawn_scoped(s, move || decode_into(&mut src, compression, &tx))?;
            let mut pipe = PipeReader { rx, current: Vec::new(), pos: 0 };
            // Past the tar end-of-archive blocks come the compression trailer (CRC check) and
            // padding: read them too.
            let stats = unpack_tar(&mut pipe, dest)
                .and_then(|stats| io::copy(&mut pipe, &mut io::sink()).map(|_| stats));
            // Closing our end stops a decoder that is still going (the tar side failed).
            drop(pipe);
            let decoded =
                decoder.join().map_err(|_| io::Error::other("the layer decoder panicked"))?;
            // Corrupt compressed data explains a tar error, not the other way round.
            decoded?;
            stats
        })?,
    };
    Ok(Unpacked { unpacked_bytes, entries })
}

/// The decoder thread: decodes `src` into chunks sent to `tx`, then reads `src` to its end.
fn decode_into<R: Read>(
    src: &mut R,
    compression: Compression,
    tx: &std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>,
) -> io::Result<()> {
    let result = (|| {
        let mut d: Box<dyn Read + '_> = match compression {
            // Multi-member gzip (pigz, concatenated members) is valid gzip.
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut *src)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(&mut *src)?),
            Compression::None => Box::new(&mut *src),
        };
        loop {
            let mut buf = vec![0u8; DECODED_CHUNK];
            let mut n = 0;
            while n < buf.len() {
                match d.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if n == 0 {
                break;
            }
            buf.truncate(n);
            if tx.send(Ok(buf)).is_err() {
                // The tar side stopped; its error is the one to report.
                return Ok(());
            }
        }
        drop(d);
        io::copy(src, &mut io::sink()).map(|_| ())
    })();
    if let Err(e) = &result {
        let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
    }
    result
}

/// A `Read` over the decoder thread's chunks.
struct PipeReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.current.len() {
            match self.rx.recv() {
                Ok(Ok(b)) => {
                    self.current = b;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The decoder finished (or failed and said so first).
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn unpack_tar<R: Read>(src: R, dest: &Path) -> io::Result<(u64, u64)> {
    let mut archive = tar::Archive::new(src);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let mut w = Writer { dest, known: HashSet::new(), buf: vec![0; WRITE_BUF] };
    let mut dirs: Vec<(PathBuf, u64)> = Vec::new();
    let (mut bytes, mut count) = (0u64, 0u64);
    for entry in archive.entries()? {
        let mut entry = entry?;
        count += 1;
        let raw = entry.path()?.into_owned();
        let rel = relative(&raw)?;
        let Some(name) = rel.file_name() else {
            // The layer root itself ("./"): its attributes stay those of the layer directory.
            continue;
        };
        let header = entry.header().clone();
        let kind = header.entry_type();
        if let Some(target) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            let parent = w.parent(&rel)?;
            if name == OPAQUE_WHITEOUT {
                rustix::fs::lsetxattr(&parent, OPAQUE_XATTR, b"y", rustix::fs::XattrFlags::empty())
                    .map_err(|e| annotate(e.into(), "marking opaque", &parent))?;
            } else if target.is_empty() || target == b"." || target == b".." {
                return Err(invalid(format!("invalid whiteout entry {}", raw.display())));
            } else {
                let wrel = rel.with_file_name(OsStr::from_bytes(target));
                let path = parent.join(OsStr::from_bytes(target));
                w.remove(&wrel, &path)?;
                make_node(&path, FileType::CharacterDevice, 0)?;
                chown_entry(&path, &header)?;
            }
            continue;
        }
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            let parent = w.parent(&rel)?;
            let path = parent.join(name);
            w.remove(&rel, &path)?;
            let (ft, dev) = if kind.is_fifo() {
                (FileType::Fifo, 0)
            } else {
                let major = header.device_major()?.unwrap_or(0);
                let minor = header.device_minor()?.unwrap_or(0);
                let ft = if kind.is_character_special() {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                (ft, rustix::fs::makedev(major, minor))
            };
            make_node(&path, ft, dev)?;
            chown_entry(&path, &header)?;
            let mode = header.mode()? & 0o7777;
            rustix::fs::chmod(&path, Mode::from_raw_mode(mode))
                .map_err(|e| annotate(e.into(), "chmod", &path))?;
            continue;
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                bytes += entry.size();
                w.file(&mut entry, &rel, &header)?;
            }
            tar::EntryType::Directory => {
                w.dir(&mut entry, &rel, &header)?;
                dirs.push((rel.clone(), header.mtime().unwrap_or(0)));
            }
            tar::EntryType::Symlink => w.symlink(&entry, &rel, &header)?,
            tar::EntryType::Link => w.hardlink(&entry, &rel)?,
            _ => {
                // Rare kinds (GNU sparse files): the tar crate's own checked unpacking.
                if kind.is_gnu_sparse() {
                    bytes += entry.size();
                }
                if !entry.unpack_in(dest)? {
                    return Err(invalid(format!("entry {} escapes the layer", raw.display())));
                }
            }
        }
    }
    // Writing into a directory changed its mtime after its entry set it; restore the layer's
    // values, deepest first, as tar does.
    for (rel, mtime) in dirs.iter().rev() {
        let path = dest.join(rel);
        let t = Timespec { tv_sec: i64::try_from(*mtime).unwrap_or(0), tv_nsec: 0 };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            &path,
            &Timestamps { last_access: t, last_modification: t },
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| annotate(e.into(), "setting mtime", &path))?;
    }
    Ok((bytes, count))
}

/// Buffer for copying file contents (the tar crate's own copy uses 8 KiB writes).
const WRITE_BUF: usize = 256 << 10;

/// Writes entries into a layer directory with few system calls: the directories it created or
/// checked are remembered, so a path's parents are checked once per layer rather than resolved
/// again for every entry (the tar crate canonicalizes two paths per entry), and files get their
/// owner, mode, times and xattrs through the open descriptor.
///
/// The layer directory starts empty and only this writer changes it, so a directory it made or
/// saw (not a symlink) stays one until an entry replaces it, when it is forgotten with
/// everything below it.
struct Writer<'a> {
    dest: &'a Path,
    /// Directories, relative to `dest`, known to be real directories.
    known: HashSet<PathBuf>,
    buf: Vec<u8>,
}

impl Writer<'_> {
    /// The directory that will hold `rel`, created as needed, every component a real directory
    /// inside the layer (no symlink may lead out of it).
    fn parent(&mut self, rel: &Path) -> io::Result<PathBuf> {
        let Some(parent) = rel.parent() else { return Ok(self.dest.to_path_buf()) };
        if parent.as_os_str().is_empty() || self.known.contains(parent) {
            return Ok(self.dest.join(parent));
        }
        let mut sub = PathBuf::new();
        for c in parent.components() {
            sub.push(c);
            if self.known.contains(&sub) {
                continue;
            }
            let dir = self.dest.join(&sub);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(invalid(format!(
                        "entry {} goes through the symlink {}",
                        rel.display(),
                        dir.display()
                    )));
                }
                Ok(_) => {
                    return Err(invalid(format!(
                        "entry {}: {} is not a directory",
                        rel.display(),
                        dir.display()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    std::fs::create_dir(&dir).map_err(|e| annotate(e, "mkdir", &dir))?;
                }
                Err(e) => return Err(annotate(e, "stat", &dir)),
            }
            self.known.insert(sub.clone());
        }
        Ok(self.dest.join(parent))
    }

    /// Removes whatever is at `path` (`rel` in the layer) and forgets directories under it.
    fn remove(&mut self, rel: &Path, path: &Path) -> io::Result<()> {
        remove_any(path)?;
        if self.known.iter().any(|k| k.starts_with(rel)) {
            self.known.retain(|k| !k.starts_with(rel));
        }
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &Path,
        header: &tar::Header,
    ) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.parent(rel)?.join(rel.file_name().unwrap_or_default());
        let open = || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc_o_nofollow())
                .mode(0o600)
                .open(&path)
        };
        let mut f = match open() {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A later entry for the same path replaces the earlier one, as tar does.
                self.remove(rel, &path)?;
                open().map_err(|e| annotate(e, "creating", &path))?
            }
            Err(e) => return Err(annotate(e, "creating", &path)),
        };
        let xattrs = pax_xattrs(entry)?;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            io::Write::write_all(&mut f, &self.buf[..n])
                .map_err(|e| annotate(e, "writing", &path))?;
        }
        let (uid, gid) = owner(header)?;
        rustix::fs::fchown(&f, Some(uid), Some(gid))
            .map_err(|e| annotate(e.into(), "chown", &path))?;
        // After chown, which clears setuid and setgid bits.
        let mode = header.mode()? & 0o7777;
        rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))
            .map_err(|e| annotate(e.into(), "chmod", &path))?;
        for (k, v) in &xattrs {
            rustix::fs::fsetxattr(&f, k.as_str(), v, rustix::fs::XattrFlags::empty())
                .map_err(|e| annotate(e.into(), "setting an xattr on", &path))?;
        }
        let t = timestamp(header);
        rustix::fs::futimens(&f, &Timestamps { last_access: t, last_modification: t })
            .map_err(|e| annotate(e.into(), "setting mtime", &path))?;
        Ok(())
    }

    fn dir<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &Path,
        header: &tar::Header,
    ) -> io::Result<()> {
        let path = self.parent(rel)?.join(rel.file_name().unwrap_or_default());
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                    self.remove(rel, &path)?;
                    std::fs::create_dir(&path).map_err(|e| annotate(e, "mkdir", &path))?;
                }
            }
            Err(e) => return Err(annotate(e, "mkdir", &path)),
        }
        self.known.insert(rel.to_path_buf());
        chown_entry(&path, header)?;
        let mode = header.mode()? & 0o7777;
        rustix::fs::chmod(&path, Mode::from_raw_mode(mode))
            .map_err(|e| annotate(e.into(), "chmod", &path))?;
        for (k, v) in pax_xattrs(entry)? {
            rustix::fs::lsetxattr(&path, k.as_str(), &v, rustix::fs::XattrFlags::empty())
                .map_err(|e| annotate(e.into(), "setting an xattr on", &path))?;
        }
        Ok(())
    }

    fn symlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        rel: &Path,
        header: &tar::Header,
    ) -> io::Result<()> {
        let target = entry
            .link_name()?
            .ok_or_else(|| invalid(format!("symlink {} has no target", rel.display())))?
            .into_owned();
        let path = self.parent(rel)?.join(rel.file_name().unwrap_or_default());
        if let Err(e) = std::os::unix::fs::symlink(&target, &path) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(annotate(e, "symlink", &path));
            }
            self.remove(rel, &path)?;
            std::os::unix::fs::symlink(&target, &path)
                .map_err(|e| annotate(e, "symlink", &path))?;
        }
        chown_entry(&path, header)?;
        let t = timestamp(header);
        rustix::fs::utimensat(
            rustix::fs::CWD,
            &path,
            &Timestamps { last_access: t, last_modification: t },
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| annotate(e.into(), "setting mtime", &path))
    }

    /// A hard link to an earlier entry of this layer; its target must be inside the layer and
    /// not reached through a symlink.
    fn hardlink<R: Read>(&mut self, entry: &tar::Entry<'_, R>, rel: &Path) -> io::Result<()> {
        let raw = entry
            .link_name()?
            .ok_or_else(|| invalid(format!("hard link {} has no target", rel.display())))?
            .into_owned();
        let trel = relative(&raw)?;
        if trel.file_name().is_none() {
            return Err(invalid(format!("hard link {} to the layer root", rel.display())));
        }
        let target = self.parent(&trel)?.join(trel.file_name().unwrap_or_default());
        let path = self.parent(rel)?.join(rel.file_name().unwrap_or_default());
        if let Err(e) = std::fs::hard_link(&target, &path) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(annotate(e, "hard link", &path));
            }
            self.remove(rel, &path)?;
            std::fs::hard_link(&target, &path).map_err(|e| annotate(e, "hard link", &path))?;
        }
        Ok(())
    }
}

/// `O_NOFOLLOW`: a file entry never writes through a symlink at its own name.
fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Extended attributes from the entry's PAX header (`SCHILY.xattr.NAME`, as GNU tar, the tar
/// crate and the Go archive/tar writer record them).
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Ok(key) = ext.key()
                && let Some(name) = key.strip_prefix("SCHILY.xattr.")
            {
                out.push((name.to_owned(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

fn owner(header: &tar::Header) -> io::Result<(rustix::fs::Uid, rustix::fs::Gid)> {
    let uid = u32::try_from(header.uid()?).map_err(|_| invalid("uid out of range".into()))?;
    let gid = u32::try_from(header.gid()?).map_err(|_| invalid("gid out of range".into()))?;
    Ok((rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid)))
}

fn timestamp(header: &tar::Header) -> Timespec {
    Timespec { tv_sec: i64::try_from(header.mtime().unwrap_or(0)).unwrap_or(0), tv_nsec: 0 }
}

/// The entry path with `.`/`/` dropped, refusing `..`.
fn relative(raw: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(invalid(format!(
                    "entry {} escapes the layer directory (..)",
                    raw.display()
                )));
            }
        }
    }
    Ok(out)
}

fn remove_any(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
    .map_err(|e| annotate(e, "removing", path))
}

fn make_node(path: &Path, ft: FileType, dev: u64) -> io::Result<()> {
    rustix::fs::mknodat(rustix::fs::CWD, path, ft, Mode::empty(), dev)
        .map_err(|e| annotate(e.into(), "mknod", path))
}

fn chown_entry(path: &Path, header: &tar::Header) -> io::Result<()> {
    let uid = u32::try_from(header.uid()?).map_err(|_| invalid("uid out of range".into()))?;
    let gid = u32::try_from(header.gid()?).map_err(|_| invalid("gid out of range".into()))?;
    rustix::fs::chownat(
        rustix::fs::CWD,
        path,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| annotate(e.into(), "chown", path))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn annotate(e: io::Error, op: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{op} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};

    use super::*;

    fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000);
        h
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    }

    fn unpack(tar: &[u8]) -> (tempfile::TempDir, io::Result<Unpacked>) {
        let dir = tempfile::tempdir().unwrap();
        let mut src = HashingReader::new(tar);
        let r = unpack_layer(&mut src, Compression::None, dir.path());
        if r.is_ok() {
            assert_eq!(src.digest(), crate::digest::sha256(tar));
        }
        (dir, r)
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        let tar = tar_of(|b| {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            b.append_data(&mut h, "etc/", io::empty()).unwrap();
            file(b, "etc/.wh.gone", b"");
            file(b, "var/lib/.wh..wh..opq", b"");
            file(b, "etc/kept", b"x");
        });
        let (dir, r) = unpack(&tar);
        let u = r.unwrap();
        assert_eq!(u.entries, 4);
        let m = std::fs::symlink_metadata(dir.path().join("etc/gone")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), 0);
        let mut buf = [0u8; 4];
        let n = rustix::fs::lgetxattr(dir.path().join("var/lib"), OPAQUE_XATTR, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"y");
        assert!(!dir.path().join("var/lib/.wh..wh..opq").exists());
        // The directory's own mtime survives files being written into it afterwards.
        let m = std::fs::metadata(dir.path().join("etc")).unwrap();
        assert_eq!(m.mtime(), 1_000_000);
        assert_eq!(m.permissions().mode() & 0o7777, 0o755);
    }

    #[test]
    fn refuses_parent_dir_entries() {
        // The tar crate's builder refuses "..", so write the name into the header by hand.
        let mut h = header(tar::EntryType::Regular, 0o644, 1);
        h.as_gnu_mut().unwrap().name[..10].copy_from_slice(b"../escaped");
        h.set_cksum();
        let mut tar = h.as_bytes().to_vec();
        tar.extend_from_slice(&[b'x'; 512]);
        tar.extend_from_slice(&[0; 1024]);
        let (dir, r) = unpack(&tar);
        let e = r.unwrap_err();
        assert!(e.to_string().contains("escapes"), "{e}");
        assert!(!dir.path().parent().unwrap().join("escaped").exists());
    }

    #[test]
    fn refuses_writing_through_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap().to_owned();
        let tar = tar_of(|b| {
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, "evil", &target).unwrap();
            file(b, "evil/pwned", b"x");
        });
        let (_dir, r) = unpack(&tar);
        assert!(r.is_err());
        assert!(!outside.path().join("pwned").exists());
        // Whiteouts go through the same check.
        let tar = tar_of(|b| {
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, "evil", &target).unwrap();
            file(b, "evil/.wh.x", b"");
        });
        let (_dir, r) = unpack(&tar);
        assert!(r.unwrap_err().to_string().contains("symlink"));
        assert!(!outside.path().join("x").exists());
    }

    #[test]
    fn a_directory_replaced_by_a_symlink_is_not_written_through() {
        // The writer remembers directories it made; an entry that replaces one with a symlink
        // must make it forget, or the next entry would follow the link out of the layer.
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap().to_owned();
        let tar = tar_of(|b| {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            b.append_data(&mut h, "d/sub/", io::empty()).unwrap();
            file(b, "d/sub/x", b"1");
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, "d", &target).unwrap();
            file(b, "d/sub/pwned", b"x");
        });
        let (_dir, r) = unpack(&tar);
        assert!(r.unwrap_err().to_string().contains("symlink"));
        assert!(!outside.path().join("sub/pwned").exists());
    }

    #[test]
    fn pax_xattrs_and_a_repeated_path_keep_the_last_entry() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("SCHILY.xattr.user.kinetic", &b"v1"[..])]).unwrap();
        file(&mut b, "f", b"first");
        file(&mut b, "f", b"second");
        let tar = b.into_inner().unwrap();
        let (dir, r) = unpack(&tar);
        r.unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"second");
        // The first entry's xattr went with the file it was on.
        let mut buf = [0u8; 8];
        assert!(rustix::fs::lgetxattr(dir.path().join("f"), "user.kinetic", &mut buf).is_err());
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("SCHILY.xattr.user.kinetic", &b"v1"[..])]).unwrap();
        file(&mut b, "g", b"g");
        let (dir, r) = unpack(&b.into_inner().unwrap());
        r.unwrap();
        let n = rustix::fs::lgetxattr(dir.path().join("g"), "user.kinetic", &mut buf).unwrap();
        assert_eq!(&buf[..n], b"v1");
    }

    #[test]
    fn hard_links_symlinks_and_modes() {
        let tar = tar_of(|b| {
            let mut h = header(tar::EntryType::Regular, 0o4755, 3);
            h.set_uid(1234);
            h.set_gid(5678);
            b.append_data(&mut h, "bin/tool", &b"abc"[..]).unwrap();
            let mut h = header(tar::EntryType::Link, 0o644, 0);
            b.append_link(&mut h, "bin/tool2", "bin/tool").unwrap();
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, "bin/sh", "/bin/tool").unwrap();
            let mut h = header(tar::EntryType::Fifo, 0o600, 0);
            b.append_data(&mut h, "run/fifo", io::empty()).unwrap();
        });
        let (dir, r) = unpack(&tar);
        r.unwrap();
        let a = std::fs::metadata(dir.path().join("bin/tool")).unwrap();
        let b = std::fs::metadata(dir.path().join("bin/tool2")).unwrap();
        assert_eq!(a.ino(), b.ino());
        assert_eq!(a.nlink(), 2);
        assert_eq!(a.permissions().mode() & 0o7777, 0o4755);
        assert_eq!((a.uid(), a.gid()), (1234, 5678));
        assert_eq!(a.mtime(), 1_000_000);
        assert_eq!(std::fs::read(dir.path().join("bin/tool2")).unwrap(), b"abc");
        assert_eq!(std::fs::read_link(dir.path().join("bin/sh")).unwrap(), Path::new("/bin/tool"));
        let f = std::fs::symlink_metadata(dir.path().join("run/fifo")).unwrap();
        assert!(f.file_type().is_fifo());
        assert_eq!(f.permissions().mode() & 0o7777, 0o600);
    }

    /// Contents of the `i`th file of a test layer: distinct per file, `len` bytes.
    fn contents(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
    }

    #[test]
    fn many_files_keep_contents_and_metadata() {
        // Files of many sizes (one larger than the copy buffer) over directories whose mtimes
        // must survive the files written into them; written to pin what a parallel writer (see
        // docs/benchmarks.md, "a pool of file writers") would have to keep.
        let sizes = |i: usize| match i % 50 {
            0 => WRITE_BUF * 3 + 1,
            r => r * 101,
        };
        let n = 200;
        let tar = tar_of(|b| {
            for d in 0..4 {
                let mut h = header(tar::EntryType::Directory, 0o750, 0);
                h.set_mtime(2_000_000 + d);
                b.append_data(&mut h, format!("d{d}/"), io::empty()).unwrap();
            }
            for i in 0..n {
                let data = contents(i, sizes(i));
                let mut h = header(tar::EntryType::Regular, 0o600 + (i as u32 % 0o100), 0);
                h.set_size(data.len() as u64);
                h.set_uid(1000 + i as u64);
                h.set_gid(2000 + i as u64);
                h.set_mtime(3_000_000 + i as u64);
                b.append_data(&mut h, format!("d{}/f{i}", i % 4), &data[..]).unwrap();
            }
        });
        let (dir, r) = unpack(&tar);
        let u = r.unwrap();
        assert_eq!(u.entries, 4 + n as u64);
        assert_eq!(u.unpacked_bytes, (0..n).map(|i| sizes(i) as u64).sum::<u64>());
        for i in 0..n {
            let path = dir.path().join(format!("d{}/f{i}", i % 4));
            assert_eq!(std::fs::read(&path).unwrap(), contents(i, sizes(i)), "{}", path.display());
            let m = std::fs::metadata(&path).unwrap();
            assert_eq!(m.permissions().mode() & 0o7777, 0o600 + (i as u32 % 0o100));
            assert_eq!((m.uid(), m.gid()), (1000 + i as u32, 2000 + i as u32));
            assert_eq!(m.mtime(), 3_000_000 + i as i64);
        }
        for d in 0..4 {
            let m = std::fs::metadata(dir.path().join(format!("d{d}"))).unwrap();
            assert_eq!(m.mtime(), 2_000_000 + d);
            assert_eq!(m.permissions().mode() & 0o7777, 0o750);
        }
    }

    #[test]
    fn later_entries_replace_earlier_files() {
        // A whiteout of a file, a file at the same path, a directory at its path, and a hard
        // link to it, each right after the file.
        let tar = tar_of(|b| {
            file(b, "gone", b"old");
            file(b, ".wh.gone", b"");
            file(b, "twice", b"first");
            file(b, "twice", b"second");
            file(b, "becomes-dir", b"x");
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            b.append_data(&mut h, "becomes-dir/", io::empty()).unwrap();
            file(b, "becomes-dir/inner", b"in");
            file(b, "target", b"linked");
            let mut h = header(tar::EntryType::Link, 0o644, 0);
            b.append_link(&mut h, "link", "target").unwrap();
        });
        let (dir, r) = unpack(&tar);
        r.unwrap();
        let m = std::fs::symlink_metadata(dir.path().join("gone")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(std::fs::read(dir.path().join("twice")).unwrap(), b"second");
        assert_eq!(std::fs::read(dir.path().join("becomes-dir/inner")).unwrap(), b"in");
        assert_eq!(std::fs::read(dir.path().join("link")).unwrap(), b"linked");
        let m = std::fs::metadata(dir.path().join("target")).unwrap();
        assert_eq!((m.nlink(), m.mtime()), (2, 1_000_000));
    }

    #[test]
    fn an_xattr_the_file_system_refuses_fails_the_layer() {
        // No file system takes xattrs outside the known namespaces (EOPNOTSUPP).
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("SCHILY.xattr.bogus.kinetic", &b"v"[..])]).unwrap();
        file(&mut b, "bad", b"x");
        file(&mut b, "after", b"y");
        let (_dir, r) = unpack(&b.into_inner().unwrap());
        let e = r.unwrap_err();
        assert!(e.to_string().contains("xattr"), "{e}");
    }

    #[test]
    fn gzip_and_zstd_digest_covers_the_compressed_blob() {
        use std::io::Write as _;
        let tar = tar_of(|b| file(b, "a", b"hello"));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let zs = zstd::encode_all(&tar[..], 1).unwrap();
        for (blob, c) in [(gz, Compression::Gzip), (zs, Compression::Zstd)] {
            let dir = tempfile::tempdir().unwrap();
            let mut src = HashingReader::new(&blob[..]);
            let u = unpack_layer(&mut src, c, dir.path()).unwrap();
            assert_eq!(u.unpacked_bytes, 5);
            assert_eq!(src.digest(), crate::digest::sha256(&blob));
            assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"hello");
        }
    }
}
