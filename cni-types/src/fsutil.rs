//! Opening files a plugin does not fully control (state, caches, labels,
//! logs, namespace paths) without being hung or redirected by them.
//!
//! Every open here is `O_NONBLOCK` (a FIFO would otherwise block `open()`
//! until a writer appears, and a hung CNI call hangs pod creation),
//! `O_NOFOLLOW` at the last component where a symlink could redirect a
//! root process, and `O_CLOEXEC`. The opened fd is then checked to be what
//! we expect (a regular file) before a byte is read or written.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

const BASE_FLAGS: i32 = nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC;

fn not_regular(path: &Path, file: &File) -> io::Error {
    let what = match file.metadata().map(|m| m.file_type()) {
        Ok(t) if t.is_fifo() => "a FIFO",
        Ok(t) if t.is_socket() => "a socket",
        Ok(t) if t.is_char_device() || t.is_block_device() => "a device",
        Ok(t) if t.is_dir() => "a directory",
        _ => "not a regular file",
    };
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{} is {what}, not a regular file", path.display()),
    )
}

/// Checks that an opened file is a regular file.
pub fn ensure_regular(path: &Path, file: &File) -> io::Result<()> {
    if file.metadata()?.file_type().is_file() {
        Ok(())
    } else {
        Err(not_regular(path, file))
    }
}

/// Opens with `opts` plus `O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC` and requires
/// a regular file (on which `O_NONBLOCK` has no effect, so reads and writes
/// behave as usual).
pub fn open_regular_nofollow(path: &Path, opts: &mut OpenOptions) -> io::Result<File> {
    let file = opts
        .custom_flags(BASE_FLAGS | nix::libc::O_NOFOLLOW)
        .open(path)?;
    ensure_regular(path, &file)?;
    Ok(file)
}

/// Opens any file read-only without blocking (for namespace files, which
/// are not regular files and may legitimately be reached through a link
/// such as `/proc/<pid>/ns/net`).
pub fn open_nonblocking(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(BASE_FLAGS)
        .open(path)
}

/// Reads a regular file of at most `max` bytes, not through a symlink and
/// never blocking on a FIFO. `Ok(None)` when the file does not exist.
pub fn read_bounded(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    let file = match open_regular_nofollow(path, OpenOptions::new().read(true)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = Vec::new();
    file.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is larger than {max} bytes", path.display()),
        ));
    }
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("cni-fsutil-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn fifo_symlink_and_size_are_refused_without_blocking() {
        let d = tmpdir("refuse");
        let fifo = d.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = read_bounded(&fifo, 10).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        // Opening a FIFO for writing without a reader fails at once (ENXIO).
        assert!(open_regular_nofollow(&fifo, OpenOptions::new().write(true)).is_err());
        let file = d.join("file");
        std::fs::write(&file, b"0123456789ab").unwrap();
        assert!(read_bounded(&file, 10).is_err());
        assert_eq!(read_bounded(&file, 12).unwrap().unwrap(), b"0123456789ab");
        let link = d.join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(read_bounded(&link, 100).is_err());
        assert_eq!(read_bounded(&d.join("absent"), 10).unwrap(), None);
        assert!(read_bounded(&d, 10).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
