//! The installer's file operations on the node: bounded reads that never
//! block (a FIFO where a file should be is refused, not opened for a
//! blocking read), write probes, and atomic writes.
//!
//! Every write goes to a temp file in the destination's own directory,
//! then rename(2) over the target, so a runtime reading the directory sees
//! the old file or the new one, never half of one, and a running plugin
//! keeps its old inode. Temp names start with "." and end in ".tmp.<pid>",
//! so containerd and CRI-O (which load *.conf, *.conflist, *.json) never
//! load one.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Why a file could not be read as a regular file.
#[derive(Debug)]
pub enum ReadError {
    /// Nothing at the path (not even a dangling link).
    Missing,
    /// A FIFO, a directory, a device or a socket.
    NotRegular,
    /// Bigger than the caller's bound.
    TooBig(u64),
    Io(io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Missing => f.write_str("does not exist"),
            ReadError::NotRegular => f.write_str("is not a regular file"),
            ReadError::TooBig(max) => write!(f, "is over {max} bytes"),
            ReadError::Io(e) => write!(f, "cannot be read ({e})"),
        }
    }
}

/// Reads a regular file (through symlinks), at most `max` bytes. The open
/// is non-blocking so that a FIFO is seen by `fstat` and refused instead
/// of hanging the installer until a writer appears.
pub fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound && std::fs::symlink_metadata(path).is_err() =>
        {
            return Err(ReadError::Missing);
        }
        Err(e) => return Err(ReadError::Io(e)),
    };
    let meta = f.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular);
    }
    let mut bytes = Vec::with_capacity(meta.len().min(max) as usize);
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooBig(max));
    }
    Ok(bytes)
}

/// The temp name for `dest` in its directory.
fn temp_path(dest: &Path, tag: &str) -> (PathBuf, PathBuf) {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{base}{tag}.tmp.{}", std::process::id()));
    (dir, tmp)
}

/// A new file at `tmp`, exclusively (never through a symlink); a leftover
/// of an earlier process that had our pid is replaced.
fn create_new(tmp: &Path) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(tmp)?;
            open()
        }
        other => other,
    }
}

/// Fails unless a file can be created in `dir`: the same exclusive create
/// the real write uses, so a read-only mount, a read-only bind or a full
/// disk shows up here, before anything changed.
pub fn probe_writable(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a directory", dir.display())),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    }
    let (_, tmp) = temp_path(&dir.join("cni-rs-probe"), "");
    match create_new(&tmp) {
        Ok(_) => {
            let _ = std::fs::remove_file(&tmp);
            Ok(())
        }
        Err(e) => Err(format!("cannot create a file in {} ({e})", dir.display())),
    }
}

/// Mode and owner a written file gets.
#[derive(Debug, Clone, Copy)]
pub struct Attrs {
    pub mode: u32,
    pub owner: Option<(u32, u32)>,
}

impl Attrs {
    /// Those of an existing file (a rewritten conflist keeps aws-node's).
    pub fn of(meta: &Metadata) -> Attrs {
        Attrs {
            mode: meta.permissions().mode() & 0o7777,
            owner: Some((meta.uid(), meta.gid())),
        }
    }
}

/// `dest` gets `bytes` through a temp file in its directory, synced, then
/// renamed over it. A `dest` that is a symlink is replaced by a file. On
/// an error the temp file is removed and `dest` is as it was.
pub fn write_atomic(dest: &Path, bytes: &[u8], attrs: Attrs) -> io::Result<()> {
    let (_, tmp) = temp_path(dest, "");
    let mut f = create_new(&tmp)?;
    let res = (|| {
        f.write_all(bytes)?;
        // The open's mode was filtered by the umask: set it on the fd.
        f.set_permissions(std::fs::Permissions::from_mode(attrs.mode))?;
        if let Some((uid, gid)) = attrs.owner {
            // Best effort, as `chown --reference` was: a non-root dry
            // copy keeps its own owner.
            let _ = std::os::unix::fs::fchown(&f, Some(uid), Some(gid));
            f.set_permissions(std::fs::Permissions::from_mode(attrs.mode))?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, dest)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Whether `dest` is already a regular file (not a link) holding `bytes`
/// with `mode`: then there is nothing to copy.
pub fn same_file(dest: &Path, bytes: &[u8], mode: u32) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(dest) else {
        return false;
    };
    if !meta.is_file()
        || meta.len() != bytes.len() as u64
        || meta.permissions().mode() & 0o7777 != mode
    {
        return false;
    }
    read_regular(dest, bytes.len() as u64).is_ok_and(|b| b == bytes)
}

/// Why `bytes` cannot run on this machine, if they cannot: a plugin is
/// checked for an ELF executable of this architecture before it is
/// installed (a truncated copy or the other architecture's release would
/// fail every pod on the node). The installer never runs it.
pub fn not_runnable_here(bytes: &[u8]) -> Option<String> {
    let want: u16 = match std::env::consts::ARCH {
        "x86_64" => 62,
        "aarch64" => 183,
        _ => return None,
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Some("not an ELF executable".into());
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Some("not a 64-bit little-endian ELF".into());
    }
    let e_type = u16::from_le_bytes([bytes[16], bytes[17]]);
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    if machine != want {
        return Some(format!(
            "built for ELF machine {machine}, this machine is {} ({want})",
            std::env::consts::ARCH
        ));
    }
    if e_type != 2 && e_type != 3 {
        return Some(format!("ELF type {e_type} is not an executable"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cni-rs-nf-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reads_refuse_fifos_dirs_and_big_files() {
        let d = tmpdir("read");
        let fifo = d.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(
            read_regular(&fifo, 10),
            Err(ReadError::NotRegular)
        ));
        assert!(matches!(read_regular(&d, 10), Err(ReadError::NotRegular)));
        assert!(matches!(
            read_regular(&d.join("no"), 10),
            Err(ReadError::Missing)
        ));
        std::os::unix::fs::symlink("/nonexistent/x", d.join("dangling")).unwrap();
        assert!(matches!(
            read_regular(&d.join("dangling"), 10),
            Err(ReadError::Io(_))
        ));
        std::fs::write(d.join("f"), b"12345").unwrap();
        assert_eq!(read_regular(&d.join("f"), 5).unwrap(), b"12345");
        assert!(matches!(
            read_regular(&d.join("f"), 4),
            Err(ReadError::TooBig(4))
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn atomic_writes_set_the_mode_and_leave_no_temp() {
        let d = tmpdir("write");
        let f = d.join("plugin");
        write_atomic(
            &f,
            b"abc",
            Attrs {
                mode: 0o755,
                owner: None,
            },
        )
        .unwrap();
        assert!(same_file(&f, b"abc", 0o755));
        assert!(!same_file(&f, b"abc", 0o644));
        assert!(!same_file(&f, b"abd", 0o755));
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        assert!(probe_writable(&d).is_ok());
        assert!(probe_writable(&f).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn elf_check() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(not_runnable_here(&me), None);
        assert!(not_runnable_here(b"#!/bin/sh\necho hi\n").is_some());
        assert!(not_runnable_here(b"\x7fELF garbage").is_some());
        let mut other = me[..64].to_vec();
        other[18] = if other[18] == 62 { 183 } else { 62 };
        assert!(not_runnable_here(&other).unwrap().contains("ELF machine"));
    }
}
