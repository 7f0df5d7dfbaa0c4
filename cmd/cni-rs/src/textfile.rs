//! Writing the metrics textfile that node_exporter's textfile collector
//! reads.
//!
//! node_exporter (kube-prometheus-stack's DaemonSet) runs as uid 65534, not
//! as root, so the file must be world-readable and every directory leading
//! to it searchable. The file is 0644 and each directory created for it
//! 0755, set explicitly (`fchmod` on the temp file, `chmod` on a directory
//! just made), so a restrictive umask cannot take the permission away. It
//! holds counters and the pod names `kubectl get pods` shows, no secrets.
//! Directories that already exist keep their mode: they are the operator's.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// The textfile's mode: readable by node_exporter's uid.
pub const FILE_MODE: u32 = 0o644;
/// The mode of each directory created on the way to the textfile.
pub const DIR_MODE: u32 = 0o755;

/// Writes `bytes` to `path` atomically: a temp file in the same directory
/// (`<name>.tmp.<pid>`, created exclusively, so never through a symlink,
/// and not ending in `.prom`, so the collector skips it), set to 0644,
/// then renamed over `path`. The collector never reads half a file. On an
/// error the temp file is removed.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?
        .to_string_lossy()
        .into_owned();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = dir.join(cni_types::fsutil::temp_name(&name, std::process::id()));
    // One open in the common case: directories are made only when missing,
    // and a temp file is swept only when one with our pid's name is in the
    // way (left by a killed writer whose pid we got).
    let mut f = match open_tmp(&tmp) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_dirs(dir)?;
            open_tmp(&tmp)?
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp)?;
            open_tmp(&tmp)?
        }
        other => other?,
    };
    let res = (|| {
        // The open's mode was filtered by the umask: set it on the fd.
        f.set_permissions(Permissions::from_mode(FILE_MODE))?;
        f.write_all(bytes)?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Creates the temp file exclusively (`O_CREAT | O_EXCL` never follows a
/// symlink; std adds `O_CLOEXEC`).
fn open_tmp(tmp: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(tmp)
}

/// Creates `dir` and its missing parents, each set to 0755 whatever the
/// umask. A directory that exists already (or appears meanwhile) is left
/// as it is.
fn create_dirs(dir: &Path) -> io::Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .ok_or(e)?;
            create_dirs(parent)?;
            match std::fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    }
    std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("cni-rs-textfile-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn nested_dirs_are_0755_and_the_file_0644() {
        let s = scratch("nested");
        let file = s.0.join("a/b/cni-rs.prom");
        write(&file, b"x 1\n").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"x 1\n");
        assert_eq!(mode(&file), 0o644);
        assert_eq!(mode(&s.0.join("a")), 0o755);
        assert_eq!(mode(&s.0.join("a/b")), 0o755);
        let left: Vec<_> = std::fs::read_dir(s.0.join("a/b")).unwrap().collect();
        assert_eq!(left.len(), 1, "no temp file left");
    }

    #[test]
    fn an_existing_dir_keeps_its_mode_and_a_0600_file_is_replaced() {
        let s = scratch("replace");
        std::fs::set_permissions(&s.0, Permissions::from_mode(0o700)).unwrap();
        let file = s.0.join("cni-rs.prom");
        std::fs::write(&file, b"old").unwrap();
        std::fs::set_permissions(&file, Permissions::from_mode(0o600)).unwrap();
        // A killed writer's temp file with our pid's name is swept.
        let stale = s.0.join(cni_types::fsutil::temp_name(
            "cni-rs.prom",
            std::process::id(),
        ));
        std::fs::write(&stale, b"stale").unwrap();
        write(&file, b"new").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
        assert_eq!(mode(&file), 0o644);
        assert_eq!(mode(&s.0), 0o700, "not ours: left as it was");
        assert!(!stale.exists());
    }

    #[test]
    fn a_file_in_the_way_of_a_directory_is_an_error() {
        let s = scratch("blocked");
        std::fs::write(s.0.join("a"), b"").unwrap();
        assert!(write(&s.0.join("a/b/cni-rs.prom"), b"x").is_err());
    }
}
