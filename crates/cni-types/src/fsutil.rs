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

/// Checks that an opened file is a regular file; returns its size.
fn ensure_regular(path: &Path, file: &File) -> io::Result<u64> {
    let meta = file.metadata()?;
    if meta.file_type().is_file() {
        Ok(meta.len())
    } else {
        Err(not_regular(path, file))
    }
}

/// Opens with `opts` plus `O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC` and requires
/// a regular file (on which `O_NONBLOCK` has no effect, so reads and writes
/// behave as usual).
pub fn open_regular_nofollow(path: &Path, opts: &mut OpenOptions) -> io::Result<File> {
    open_regular_sized(path, opts).map(|(f, _)| f)
}

/// [`open_regular_nofollow`], also returning the size the file had.
fn open_regular_sized(path: &Path, opts: &mut OpenOptions) -> io::Result<(File, u64)> {
    let file = opts
        .custom_flags(BASE_FLAGS | nix::libc::O_NOFOLLOW)
        .open(path)?;
    let len = ensure_regular(path, &file)?;
    Ok((file, len))
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
    let (file, len) = match open_regular_sized(path, OpenOptions::new().read(true)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    read_opened(path, file, len, max).map(Some)
}

/// [`read_bounded`] of the entry `name` of an open directory, with the
/// same guarantees; `path` (the directory's path joined with `name`) only
/// names it in errors. A survey of a directory reads thousands of files:
/// `openat` walks one component instead of the whole path, and musl's
/// `openat` does not follow itself with an `fcntl(FD_CLOEXEC)` as its
/// `open` does.
pub fn read_bounded_at(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::CStr,
    path: &Path,
    max: u64,
) -> io::Result<Option<Vec<u8>>> {
    use nix::fcntl::OFlag;
    // The same flags every open here has (BASE_FLAGS) and O_NOFOLLOW.
    let flags = OFlag::from_bits_retain(BASE_FLAGS | nix::libc::O_NOFOLLOW) | OFlag::O_RDONLY;
    let file = match nix::fcntl::openat(dir, name, flags, nix::sys::stat::Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let len = ensure_regular(path, &file)?;
    read_opened(path, file, len, max).map(Some)
}

/// Reads an opened regular file of `len` bytes (by fstat), at most `max`.
fn read_opened(path: &Path, file: File, len: u64, max: u64) -> io::Result<Vec<u8>> {
    // Sized from fstat, the whole file comes in one read: a regular file
    // returns less than asked only at its end. One that grew meanwhile
    // (the read filled the byte to spare) is read on, up to the bound.
    // procfs files report size 0 and an integer sysctl answers only a read
    // at offset 0, so their first read has room for a page; a regular
    // file's buffer is its size (a state survey reads thousands).
    const PROCFS_FIRST_READ: u64 = 4096;
    let first = if len == 0 { PROCFS_FIRST_READ } else { len }.min(max);
    let mut buf = vec![0u8; first as usize + 1];
    let mut file = file;
    let n = loop {
        match file.read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    buf.truncate(n);
    if n as u64 > first {
        file.take(max + 1 - n as u64).read_to_end(&mut buf)?;
    }
    if buf.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is larger than {max} bytes", path.display()),
        ));
    }
    Ok(buf)
}

/// How far a write must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A killed process leaves the old or the new file (rename is atomic);
    /// enough for records of kernel objects, which a reboot removes too.
    ProcessCrash,
    /// Also a power loss: the data is fsynced before the rename (caches
    /// that outlive a reboot).
    PowerLoss,
}

/// The temp file a writer of `file` renames into place: `<file>.tmp.<pid>`
/// in the same directory, so a killed writer's leftover can be recognised
/// (and swept) by exactly this name.
pub fn temp_name(file: &str, pid: u32) -> String {
    format!("{file}.tmp.{pid}")
}

/// Writes `bytes` to `path` atomically: a 0600 temp file next to it
/// (created exclusively, never through a symlink), then a rename over
/// `path` (which replaces a symlink or FIFO there rather than following
/// it). The directory is created 0700 when missing. On an error the temp
/// file is removed; a killed writer leaves it for its owner to sweep.
pub fn write_atomic(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::DirBuilderExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no directory"))?;
    let file = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(temp_name(&file, std::process::id()));
    let open_tmp = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&tmp)
    };
    // The common case costs one open: the directory is created only when
    // it is missing, and a temp file is swept only when one with this
    // pid's name is in the way (left by a killed process whose pid we got).
    let mut f = match open_tmp() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            open_tmp()?
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp)?;
            open_tmp()?
        }
        other => other?,
    };
    let res = (|| {
        f.write_all(bytes)?;
        if durability == Durability::PowerLoss {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
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
        // The same refusals by name in an open directory.
        let dir = File::open(&d).unwrap();
        let at = |name: &str, max| {
            let c = std::ffi::CString::new(name).unwrap();
            read_bounded_at(std::os::fd::AsFd::as_fd(&dir), &c, &d.join(name), max)
        };
        assert!(at("fifo", 10).unwrap_err().to_string().contains("FIFO"));
        assert!(at("file", 10).is_err());
        assert_eq!(at("file", 12).unwrap().unwrap(), b"0123456789ab");
        assert!(at("link", 100).is_err(), "not through a symlink");
        assert_eq!(at("absent", 10).unwrap(), None);
        assert!(at(".", 10).is_err(), "a directory");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Sizes around the bound: empty, exactly the bound, one byte over.
    #[test]
    fn bounded_reads_take_the_whole_file_and_refuse_one_byte_more() {
        let d = tmpdir("bounds");
        let p = d.join("f");
        for (size, ok) in [(0usize, true), (100, true), (101, false)] {
            std::fs::write(&p, vec![b'x'; size]).unwrap();
            match read_bounded(&p, 100) {
                Ok(Some(b)) => assert!(ok && b.len() == size, "{size}"),
                Err(e) => assert!(!ok, "{size}: {e}"),
                Ok(None) => panic!("{size}: missing"),
            }
        }
        std::fs::remove_dir_all(&d).unwrap();
        // procfs says size 0, and an integer sysctl answers only a read at
        // offset 0: the value must come whole.
        let proc = Path::new("/proc/sys/net/ipv4/tcp_keepalive_time");
        if let Ok(want) = std::fs::read(proc) {
            assert_eq!(read_bounded(proc, 4096).unwrap(), Some(want));
        }
    }

    /// A killed writer's temp file under this pid's name (pid reuse) is
    /// swept, and a missing directory is created 0700.
    #[test]
    fn atomic_write_sweeps_a_stale_temp_and_creates_the_dir() {
        let d = tmpdir("stale");
        let sub = d.join("new-dir");
        let path = sub.join("state.json");
        write_atomic(&path, b"{}", Durability::ProcessCrash).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&sub).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let stale = sub.join(temp_name("state.json", std::process::id()));
        std::fs::write(&stale, b"half").unwrap();
        write_atomic(&path, b"{\"a\":1}", Durability::ProcessCrash).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}");
        assert!(!stale.exists(), "the stale temp was replaced and renamed");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn atomic_write_replaces_symlink_and_fifo_and_is_0600() {
        use std::os::unix::fs::PermissionsExt;
        let d = tmpdir("atomic");
        let p = d.join("sub").join("cache.json");
        write_atomic(&p, b"one", Durability::PowerLoss).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_file(&p).unwrap();
        let target = d.join("target");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, &p).unwrap();
        write_atomic(&p, b"two", Durability::ProcessCrash).unwrap();
        assert!(
            !std::fs::symlink_metadata(&p)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        std::fs::remove_file(&p).unwrap();
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        write_atomic(&p, b"three", Durability::ProcessCrash).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"three");
        assert_eq!(
            std::fs::read_dir(p.parent().unwrap()).unwrap().count(),
            1,
            "no temp left"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
