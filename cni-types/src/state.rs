//! Per-attachment state files: what a plugin set up, so DEL, CHECK and GC
//! know what is theirs without guessing from names.
//!
//! One JSON file per (network, container id, ifname) under the plugin's
//! state directory, written 0600 through a temp file and a rename (a crash
//! leaves the old or the new file, never half of one), opened without
//! following symlinks, bounded in size when read. The identity is stored in
//! the file and checked on load, so sanitised file names cannot collide.
//! A per-directory `flock` serialises ADD/DEL/GC of one plugin on a node,
//! so GC never judges an attachment while an ADD is half-way.

use anyhow::{Context as _, Result, bail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A state file is a few hundred bytes; anything larger is not ours.
const MAX_STATE_BYTES: u64 = 64 * 1024;

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    network: String,
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
    data: T,
}

/// One attachment's saved state, as listed by [`StateStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved<T> {
    pub container_id: String,
    pub ifname: String,
    pub data: T,
}

/// What [`StateStore::list`] found: readable states, and files it could not read.
#[derive(Debug)]
pub struct Listing<T> {
    pub found: Vec<Saved<T>>,
    pub broken: Vec<PathBuf>,
}

/// The state files of one plugin for one network.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
    network: String,
}

/// Holds the store's lock until dropped.
pub struct StoreLock {
    _lock: nix::fcntl::Flock<File>,
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl StateStore {
    pub fn new(dir: impl Into<PathBuf>, network: &str) -> StateStore {
        StateStore {
            dir: dir.into(),
            network: network.to_string(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn prefix(&self) -> String {
        format!("{}+", sanitize(&self.network))
    }

    fn path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!(
            "{}{}+{}.json",
            self.prefix(),
            sanitize(container_id),
            sanitize(ifname)
        ))
    }

    fn ensure_dir(&self) -> Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("creating state dir {}", self.dir.display()))
    }

    /// Takes the store's exclusive lock (blocking), creating the directory.
    pub fn lock(&self) -> Result<StoreLock> {
        self.ensure_dir()?;
        let path = self.dir.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&path)
            .with_context(|| format!("opening lock {}", path.display()))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(StoreLock { _lock: lock })
    }

    pub fn save<T: Serialize>(&self, container_id: &str, ifname: &str, data: &T) -> Result<()> {
        self.ensure_dir()?;
        let env = Envelope {
            network: self.network.clone(),
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
            data,
        };
        let bytes = serde_json::to_vec_pretty(&env).context("encoding state")?;
        let path = self.path(container_id, ifname);
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        // No fsync: a state file describes kernel objects (qdiscs, ifbs)
        // that do not survive a reboot either; rename is atomic against a
        // crashed process, which is the failure that matters here.
        f.write_all(&bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
        Ok(())
    }

    fn read_envelope<T: DeserializeOwned>(path: &Path) -> Result<Option<Envelope<T>>> {
        let mut f = match OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        let mut buf = Vec::new();
        Read::by_ref(&mut f)
            .take(MAX_STATE_BYTES + 1)
            .read_to_end(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if buf.len() as u64 > MAX_STATE_BYTES {
            bail!("{} is larger than {MAX_STATE_BYTES} bytes", path.display());
        }
        let env =
            serde_json::from_slice(&buf).with_context(|| format!("decoding {}", path.display()))?;
        Ok(Some(env))
    }

    /// The saved state, `None` when there is none (or it belongs to another identity).
    pub fn load<T: DeserializeOwned>(&self, container_id: &str, ifname: &str) -> Result<Option<T>> {
        let env = Self::read_envelope::<T>(&self.path(container_id, ifname))?;
        Ok(env
            .filter(|e| {
                e.network == self.network && e.container_id == container_id && e.ifname == ifname
            })
            .map(|e| e.data))
    }

    /// Removes the state; succeeds when it is already gone.
    pub fn remove(&self, container_id: &str, ifname: &str) -> Result<()> {
        let path = self.path(container_id, ifname);
        // A writer killed between create and rename leaves its temp file.
        let tmp_prefix = format!("{}.tmp.", path.with_extension("").display());
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.path().display().to_string().starts_with(&tmp_prefix) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }

    /// Removes temp files of this network whose writer process is gone
    /// (killed between create and rename); a live writer's are kept.
    fn remove_orphan_temps(&self, name: &str, path: &Path) {
        let Some((_, pid)) = name.rsplit_once(".tmp.") else {
            return;
        };
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = fs::remove_file(path);
        }
    }

    /// Every attachment of this network with saved state, with its data.
    /// Unreadable files are skipped (reported in the second list).
    pub fn list<T: DeserializeOwned>(&self) -> Result<Listing<T>> {
        let mut found = Vec::new();
        let mut broken = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Listing { found, broken });
            }
            Err(e) => return Err(e).with_context(|| format!("listing {}", self.dir.display())),
        };
        let prefix = self.prefix();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&prefix) {
                continue;
            }
            if !name.ends_with(".json") {
                self.remove_orphan_temps(&name, &entry.path());
                continue;
            }
            match Self::read_envelope::<T>(&entry.path()) {
                Ok(Some(e)) if e.network == self.network => found.push(Saved {
                    container_id: e.container_id,
                    ifname: e.ifname,
                    data: e.data,
                }),
                Ok(_) => {}
                Err(_) => broken.push(entry.path()),
            }
        }
        Ok(Listing { found, broken })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmpdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "cni-state-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn save_load_list_remove() {
        let dir = tmpdir();
        let s = StateStore::new(&dir, "net/1");
        let other = StateStore::new(&dir, "net-2");
        s.save("c1", "eth0", &42u32).unwrap();
        other.save("c1", "eth0", &7u32).unwrap();
        assert_eq!(s.load::<u32>("c1", "eth0").unwrap(), Some(42));
        assert_eq!(s.load::<u32>("c2", "eth0").unwrap(), None);
        let meta = fs::metadata(s.path("c1", "eth0")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let listing = s.list::<u32>().unwrap();
        assert_eq!(
            listing.found,
            vec![Saved {
                container_id: "c1".into(),
                ifname: "eth0".into(),
                data: 42
            }]
        );
        assert!(listing.broken.is_empty());
        s.remove("c1", "eth0").unwrap();
        s.remove("c1", "eth0").unwrap();
        assert_eq!(s.load::<u32>("c1", "eth0").unwrap(), None);
        assert_eq!(other.load::<u32>("c1", "eth0").unwrap(), Some(7));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn temp_files_of_killed_writers_are_cleaned() {
        let dir = tmpdir();
        let s = StateStore::new(&dir, "n");
        s.save("c", "eth0", &1u32).unwrap();
        s.save("d", "eth0", &1u32).unwrap();
        let stale = dir.join("n+c+eth0.tmp.999999999");
        fs::write(&stale, b"{").unwrap();
        let orphan = dir.join("n+d+eth0.tmp.999999998");
        fs::write(&orphan, b"{").unwrap();
        let live = dir.join(format!("n+d+eth0.tmp.{}", std::process::id()));
        fs::write(&live, b"{").unwrap();
        s.remove("c", "eth0").unwrap();
        assert!(!stale.exists());
        assert_eq!(s.list::<u32>().unwrap().found.len(), 1);
        assert!(
            !orphan.exists(),
            "a dead writer's temp file is removed by listing"
        );
        assert!(live.exists(), "a live writer's temp file is kept");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn symlinks_are_not_followed() {
        let dir = tmpdir();
        let s = StateStore::new(&dir, "n");
        s.save("c", "eth0", &1u32).unwrap();
        let p = s.path("c", "eth0");
        fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &p).unwrap();
        assert!(s.load::<u32>("c", "eth0").is_err());
        let _ = fs::remove_dir_all(&dir);
    }
}
