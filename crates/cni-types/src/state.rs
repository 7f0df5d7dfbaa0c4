//! Per-attachment state files: what a plugin set up, so DEL, CHECK and GC
//! know what is theirs without guessing from names.
//!
//! One JSON file per (network, container id, ifname) under the plugin's
//! state directory, written 0600 through a temp file and a rename (a crash
//! leaves the old or the new file, never half of one), opened without
//! following symlinks or blocking on a FIFO, bounded in size when read.
//!
//! The file name is an injective encoding of the owner (the plugin) and
//! the identity (each part percent-escaped, `+` between them), so two
//! attachments never share a file, and neither do two plugins pointed at
//! one `stateDir`; names that would pass the 255-byte limit use a hash
//! instead. Owner and identity are also stored in the file and checked on
//! load. Files written by earlier versions (no owner, parts sanitised to
//! `_`) are still found, and removed only when their stored identity
//! matches.
//! A per-directory `flock` serialises ADD/DEL/GC of one plugin on a node,
//! so GC never judges an attachment while an ADD is half-way.

use anyhow::{Context as _, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The state directory named by a raw config's `stateDir` when it is an
/// absolute path, else `default`. DEL uses it when the rest of the config
/// no longer validates, so it can still clean up.
pub fn state_dir_in(raw: &serde_json::Value, default: &str) -> PathBuf {
    raw.get("stateDir")
        .and_then(serde_json::Value::as_str)
        .filter(|s| s.starts_with('/'))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

/// A state file is a few hundred bytes; anything larger is not ours.
const MAX_STATE_BYTES: u64 = 64 * 1024;

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    /// The plugin that wrote the file (absent in earlier versions' files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
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
    owner: String,
    network: String,
}

/// Holds the store's lock until dropped.
pub struct StoreLock {
    _lock: nix::fcntl::Flock<File>,
}

/// Held by one attachment's verb (ADD, DEL, CHECK): the store's lock
/// *shared*, so verbs for different attachments run in parallel while GC
/// (which takes the store's lock exclusive) waits for them and they for
/// it; and the attachment's own lock exclusive, so calls for the same
/// attachment stay one at a time.
pub struct AttachmentLock {
    _store: nix::fcntl::Flock<File>,
    _mine: nix::fcntl::Flock<File>,
    path: PathBuf,
}

impl AttachmentLock {
    /// Removes the attachment's lock file while it is held (after DEL, or
    /// a first ADD that failed): nothing of a gone attachment stays in the
    /// directory. A process that was waiting on it sees its file gone and
    /// locks a fresh one ([`StateStore::lock_attachment`]).
    pub fn remove_file(&self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The prefix of attachment lock files: hidden, and never a state file.
const ATTACHMENT_LOCK_PREFIX: &str = ".lock.";

/// File names longer than this use the hashed form (NAME_MAX is 255).
const MAX_NAME_BYTES: usize = 240;

/// Percent-escapes everything but `[A-Za-z0-9_.-]`: injective, and the
/// identity of the usual names (ids, `eth0`, `aws-cni`) unchanged.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The file name of one attachment's state, for one owner.
fn file_name(owner: &str, network: &str, container_id: &str, ifname: &str) -> String {
    let name = format!(
        "{}+{}+{}+{}.json",
        escape(owner),
        escape(network),
        escape(container_id),
        escape(ifname)
    );
    if name.len() <= MAX_NAME_BYTES {
        return name;
    }
    use sha2::{Digest, Sha256};
    // Length-prefixed parts: no two identities hash the same input.
    let mut h = Sha256::new();
    for part in [network, container_id, ifname] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("{}+~{hex}.json", escape(owner))
}

use crate::fsutil::temp_name;

/// The writer pid of a temp file name, for any state file.
fn temp_writer(name: &str) -> Option<u32> {
    let (_, pid) = name.rsplit_once(".tmp.")?;
    pid.parse().ok()
}

/// The name earlier versions used (lossy: kept only to find their files).
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

/// One state file as an operator's tool reads it: whose it is, and its data.
#[derive(Debug, Clone, PartialEq)]
pub struct Surveyed<T> {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub data: T,
}

/// What [`survey`] found in one directory.
#[derive(Debug)]
pub struct Survey<T> {
    pub found: Vec<Surveyed<T>>,
    /// This owner's files (by name) that could not be read or decoded, with why.
    pub broken: Vec<(PathBuf, String)>,
}

impl<T> Default for Survey<T> {
    fn default() -> Self {
        Survey {
            found: Vec::new(),
            broken: Vec::new(),
        }
    }
}

/// Every attachment `owner` (a plugin's name) keeps state for in `dir`,
/// whatever the network, decoded as `T`, read-only: nothing is removed or
/// rewritten, so an operator's tool can run at any time next to the
/// plugins. A missing directory is an empty survey; one that cannot be
/// listed is an error. Files of another owner sharing the directory are
/// skipped.
pub fn survey<T: DeserializeOwned>(dir: &Path, owner: &str) -> Result<Survey<T>> {
    use nix::fcntl::OFlag;
    use std::os::fd::AsFd as _;
    use std::os::unix::ffi::OsStrExt as _;
    let mut out = Survey::default();
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut listing = match nix::dir::Dir::open(dir, flags, nix::sys::stat::Mode::empty()) {
        Ok(d) => d,
        Err(nix::errno::Errno::ENOENT) => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let own_prefix = format!("{}+", escape(owner));
    let mut names: Vec<std::ffi::CString> = listing
        .iter()
        .flatten()
        .map(|e| e.file_name().to_owned())
        .filter(|n| {
            let n = n.as_bytes();
            !n.starts_with(b".") && n.ends_with(b".json")
        })
        .collect();
    names.sort();
    out.found.reserve(names.len());
    for name in names {
        let path = dir.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
        let mine_by_name = name.as_bytes().starts_with(own_prefix.as_bytes());
        let read = crate::fsutil::read_bounded_at(listing.as_fd(), &name, &path, MAX_STATE_BYTES)
            .with_context(|| format!("reading {}", path.display()));
        match read.and_then(|buf| StateStore::decode_envelope::<T>(buf, &path)) {
            Ok(Some(e)) if e.owner.as_ref().is_none_or(|o| o == owner) => {
                out.found.push(Surveyed {
                    network: e.network,
                    container_id: e.container_id,
                    ifname: e.ifname,
                    data: e.data,
                });
            }
            Ok(Some(_)) => {}
            Ok(None) if mine_by_name => out.broken.push((path, "not a regular file".into())),
            Ok(None) => {}
            Err(err) if mine_by_name => out.broken.push((path, format!("{err:#}"))),
            Err(_) => {}
        }
    }
    Ok(out)
}

/// Opens (creating, mode 0600, never through a symlink or a FIFO) and
/// flocks `path`.
fn flock(path: &Path, how: nix::fcntl::FlockArg) -> Result<nix::fcntl::Flock<File>> {
    let file = crate::fsutil::open_regular_nofollow(
        path,
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600),
    )
    .with_context(|| format!("opening lock {}", path.display()))?;
    nix::fcntl::Flock::lock(file, how)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {}", path.display()))
}

/// `f` is the file `path` names now.
fn same_file(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl StateStore {
    /// The states `owner` (the plugin's name) keeps for `network` in `dir`.
    pub fn new(dir: impl Into<PathBuf>, owner: &str, network: &str) -> StateStore {
        StateStore {
            dir: dir.into(),
            owner: owner.to_string(),
            network: network.to_string(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file_name(&self, container_id: &str, ifname: &str) -> String {
        file_name(&self.owner, &self.network, container_id, ifname)
    }

    fn path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(self.file_name(container_id, ifname))
    }

    fn legacy_path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!(
            "{}+{}+{}.json",
            sanitize(&self.network),
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

    /// Takes the store's exclusive lock (blocking), creating the
    /// directory: GC's, which judges every attachment at once. It waits for
    /// the verbs in flight and holds new ones back.
    pub fn lock(&self) -> Result<StoreLock> {
        self.ensure_dir()?;
        let lock = flock(&self.dir.join(".lock"), nix::fcntl::FlockArg::LockExclusive)?;
        Ok(StoreLock { _lock: lock })
    }

    /// Takes the exclusive lock named `name` in the store's directory
    /// (blocking), for a resource all attachments share (the bandwidth
    /// plugin's pool of parked ifbs). Unrelated to the store's own lock:
    /// held only for a few netlink requests, never across a verb.
    pub fn lock_shared_resource(&self, name: &str) -> Result<StoreLock> {
        self.ensure_dir()?;
        let lock = flock(&self.dir.join(name), nix::fcntl::FlockArg::LockExclusive)?;
        Ok(StoreLock { _lock: lock })
    }

    /// The lock one attachment's verb holds (see [`AttachmentLock`]). The
    /// kernel work of different attachments then runs in parallel: a DEL
    /// waiting for an ifb's RCU grace period holds up no other pod.
    pub fn lock_attachment(&self, container_id: &str, ifname: &str) -> Result<AttachmentLock> {
        self.ensure_dir()?;
        let store = flock(&self.dir.join(".lock"), nix::fcntl::FlockArg::LockShared)?;
        let name = format!(
            "{ATTACHMENT_LOCK_PREFIX}{}",
            self.file_name(container_id, ifname)
        );
        let path = self.dir.join(name);
        loop {
            let mine = flock(&path, nix::fcntl::FlockArg::LockExclusive)?;
            // The holder we waited for may have removed the file (its DEL):
            // a lock on an unlinked inode would exclude nobody. Retry on
            // the file the path names now.
            if same_file(&mine, &path) {
                return Ok(AttachmentLock {
                    _store: store,
                    _mine: mine,
                    path,
                });
            }
        }
    }

    /// GC, under the exclusive lock (no verb holds an attachment lock
    /// then): removes lock files of attachments that have no state.
    pub fn sweep_attachment_locks(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(state) = name.strip_prefix(ATTACHMENT_LOCK_PREFIX) else {
                continue;
            };
            if !state.is_empty() && !self.dir.join(state).exists() {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    pub fn save<T: Serialize>(&self, container_id: &str, ifname: &str, data: &T) -> Result<()> {
        // write_atomic creates the directory if it is missing.
        let env = Envelope {
            owner: Some(self.owner.clone()),
            network: self.network.clone(),
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
            data,
        };
        let bytes = serde_json::to_vec_pretty(&env).context("encoding state")?;
        let file = self.file_name(container_id, ifname);
        let path = self.dir.join(&file);
        // No fsync: a state file describes kernel objects (qdiscs, ifbs)
        // that do not survive a reboot either; rename is atomic against a
        // crashed process, which is the failure that matters here.
        crate::fsutil::write_atomic(&path, &bytes, crate::fsutil::Durability::ProcessCrash)
            .with_context(|| format!("writing {}", path.display()))
    }

    fn read_envelope<T: DeserializeOwned>(path: &Path) -> Result<Option<Envelope<T>>> {
        let buf = crate::fsutil::read_bounded(path, MAX_STATE_BYTES)
            .with_context(|| format!("reading {}", path.display()))?;
        Self::decode_envelope(buf, path)
    }

    /// A file's bytes (`None`: there was no file) as a record.
    fn decode_envelope<T: DeserializeOwned>(
        buf: Option<Vec<u8>>,
        path: &Path,
    ) -> Result<Option<Envelope<T>>> {
        let Some(buf) = buf else { return Ok(None) };
        let env =
            serde_json::from_slice(&buf).with_context(|| format!("decoding {}", path.display()))?;
        Ok(Some(env))
    }

    /// Written by this owner (or by an earlier version, which wrote no
    /// owner) for this network.
    fn is_ours<T>(&self, e: &Envelope<T>) -> bool {
        e.network == self.network && e.owner.as_ref().is_none_or(|o| *o == self.owner)
    }

    fn is_identity<T>(&self, e: &Envelope<T>, container_id: &str, ifname: &str) -> bool {
        self.is_ours(e) && e.container_id == container_id && e.ifname == ifname
    }

    /// The saved state, `None` when there is none (or it belongs to another identity).
    pub fn load<T: DeserializeOwned>(&self, container_id: &str, ifname: &str) -> Result<Option<T>> {
        if let Some(e) = Self::read_envelope::<T>(&self.path(container_id, ifname))? {
            return Ok(self.is_identity(&e, container_id, ifname).then_some(e.data));
        }
        let legacy = self.legacy_path(container_id, ifname);
        if legacy == self.path(container_id, ifname) {
            return Ok(None);
        }
        // Written by an earlier version under the lossy name: ours only if
        // the identity inside says so.
        Ok(Self::read_envelope::<T>(&legacy)
            .ok()
            .flatten()
            .filter(|e| self.is_identity(e, container_id, ifname))
            .map(|e| e.data))
    }

    /// The saved state for ADD, DEL and GC, which must not be blocked by a
    /// record they cannot read (it is reported and treated as absent: ADD
    /// rewrites it, DEL removes it). CHECK uses [`StateStore::load`] and
    /// fails instead.
    pub fn load_lenient<T: DeserializeOwned>(&self, container_id: &str, ifname: &str) -> Option<T> {
        self.load(container_id, ifname).unwrap_or_else(|e| {
            crate::log_warn!("ignoring unreadable state: {e:#}");
            None
        })
    }

    /// Removes the state; succeeds when it is already gone. Touches only
    /// this attachment's files: its state, its own writers' temp files, and
    /// a file of an earlier version whose stored identity is this one.
    pub fn remove(&self, container_id: &str, ifname: &str) -> Result<()> {
        let file = self.file_name(container_id, ifname);
        let path = self.dir.join(&file);
        // A writer killed between create and rename leaves its temp file:
        // exactly `<file>.tmp.<pid>`, never a prefix match (`eth0` must not
        // sweep `eth0.tmp.1`'s state).
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if temp_writer(&name).is_some_and(|pid| name == temp_name(&file, pid)) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let legacy = self.legacy_path(container_id, ifname);
        if legacy != path
            && Self::read_envelope::<serde::de::IgnoredAny>(&legacy)
                .ok()
                .flatten()
                .is_some_and(|e| self.is_identity(&e, container_id, ifname))
        {
            let _ = fs::remove_file(&legacy);
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            // A name the file system cannot hold was never written.
            Err(e) if e.raw_os_error() == Some(nix::libc::ENAMETOOLONG) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }

    /// Removes a temp file whose writer process is gone (killed between
    /// create and rename); a live writer's is kept.
    fn remove_orphan_temp(name: &str, path: &Path) {
        let Some(pid) = temp_writer(name) else {
            return;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
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
        // Every state file is read and judged by the owner and identity
        // inside (a hashed name does not say which network it is for).
        // Files of another plugin sharing the directory are skipped, never
        // reported or touched.
        let own_prefix = format!("{}+", escape(&self.owner));
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let mine_by_name = name.starts_with(&own_prefix);
            if !name.ends_with(".json") {
                // Ours, or an earlier version's (`<name>.tmp.<pid>`).
                if mine_by_name || !name.contains(".json.tmp.") {
                    Self::remove_orphan_temp(&name, &entry.path());
                }
                continue;
            }
            let envelope = match Self::read_envelope::<serde_json::Value>(&entry.path()) {
                Ok(Some(e)) => e,
                Ok(None) => continue,
                Err(_) => {
                    if mine_by_name {
                        broken.push(entry.path());
                    }
                    continue;
                }
            };
            if !self.is_ours(&envelope) {
                continue;
            }
            match serde_json::from_value::<T>(envelope.data) {
                Ok(data) => found.push(Saved {
                    container_id: envelope.container_id,
                    ifname: envelope.ifname,
                    data,
                }),
                Err(_) if mine_by_name => broken.push(entry.path()),
                Err(_) => {}
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
        let s = StateStore::new(&dir, "p", "net/1");
        let other = StateStore::new(&dir, "p", "net-2");
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
        let s = StateStore::new(&dir, "p", "n");
        s.save("c", "eth0", &1u32).unwrap();
        s.save("d", "eth0", &1u32).unwrap();
        let stale = dir.join("p+n+c+eth0.json.tmp.999999999");
        fs::write(&stale, b"{").unwrap();
        let orphan = dir.join("p+n+d+eth0.json.tmp.999999998");
        fs::write(&orphan, b"{").unwrap();
        let live = dir.join(format!("p+n+d+eth0.json.tmp.{}", std::process::id()));
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
    fn names_are_injective_and_removal_touches_only_this_attachment() {
        let dir = tmpdir();
        let s = StateStore::new(&dir, "p", "n");
        // Sanitising mapped these to one file: the second overwrote the first.
        s.save("c", "n+1", &1u32).unwrap();
        s.save("c", "n,1", &2u32).unwrap();
        s.save("c", "n_1", &3u32).unwrap();
        assert_eq!(s.load::<u32>("c", "n+1").unwrap(), Some(1));
        assert_eq!(s.load::<u32>("c", "n,1").unwrap(), Some(2));
        assert_eq!(s.load::<u32>("c", "n_1").unwrap(), Some(3));
        // The sweep of killed writers' temp files was a prefix match.
        s.save("c", "eth0", &4u32).unwrap();
        s.save("c", "eth0.tmp.1", &5u32).unwrap();
        s.remove("c", "eth0").unwrap();
        assert_eq!(s.load::<u32>("c", "eth0.tmp.1").unwrap(), Some(5));
        s.remove("c", "n,1").unwrap();
        assert_eq!(s.load::<u32>("c", "n+1").unwrap(), Some(1));
        assert_eq!(s.load::<u32>("c", "n_1").unwrap(), Some(3));
        assert_eq!(s.list::<u32>().unwrap().found.len(), 3);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn two_plugins_in_one_directory_keep_their_own_files() {
        let dir = tmpdir();
        let a = StateStore::new(&dir, "bandwidth", "n");
        let b = StateStore::new(&dir, "topology-label", "n");
        a.save("c", "eth0", &1u32).unwrap();
        b.save("c", "eth0", &"two".to_string()).unwrap();
        assert_eq!(a.load::<u32>("c", "eth0").unwrap(), Some(1));
        assert_eq!(b.load::<String>("c", "eth0").unwrap(), Some("two".into()));
        let listing = a.list::<u32>().unwrap();
        assert_eq!(listing.found.len(), 1);
        assert!(
            listing.broken.is_empty(),
            "the other plugin's file is not broken"
        );
        b.remove("c", "eth0").unwrap();
        assert_eq!(a.load::<u32>("c", "eth0").unwrap(), Some(1));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn long_identities_fit_a_file_name() {
        let dir = tmpdir();
        let net = "n".repeat(300);
        let s = StateStore::new(&dir, "p", &net);
        let id = "c".repeat(250);
        s.save(&id, "eth0", &1u32).unwrap();
        s.save(&id, "eth1", &2u32).unwrap();
        assert_eq!(s.load::<u32>(&id, "eth0").unwrap(), Some(1));
        assert_eq!(s.list::<u32>().unwrap().found.len(), 2);
        s.remove(&id, "eth0").unwrap();
        s.remove(&id, "eth0").unwrap();
        assert_eq!(s.load::<u32>(&id, "eth1").unwrap(), Some(2));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn files_of_earlier_versions_are_found_by_identity() {
        let dir = tmpdir();
        fs::create_dir_all(&dir).unwrap();
        let s = StateStore::new(&dir, "p", "n");
        let write_legacy = |ifname: &str, data: u32| {
            let env = Envelope {
                owner: None,
                network: "n".to_string(),
                container_id: "c".to_string(),
                ifname: ifname.to_string(),
                data,
            };
            fs::write(
                s.legacy_path("c", ifname),
                serde_json::to_vec(&env).unwrap(),
            )
            .unwrap();
        };
        write_legacy("a+b", 7);
        assert_eq!(s.load::<u32>("c", "a+b").unwrap(), Some(7));
        // Same lossy name, other identity: neither read nor removed.
        assert_eq!(s.load::<u32>("c", "a,b").unwrap(), None);
        s.remove("c", "a,b").unwrap();
        assert_eq!(s.load::<u32>("c", "a+b").unwrap(), Some(7));
        s.remove("c", "a+b").unwrap();
        assert_eq!(s.load::<u32>("c", "a+b").unwrap(), None);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn fifos_do_not_block() {
        let dir = tmpdir();
        fs::create_dir_all(&dir).unwrap();
        let s = StateStore::new(&dir, "p", "n");
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
        nix::unistd::mkfifo(&s.path("c", "eth0"), mode).unwrap();
        assert!(s.load::<u32>("c", "eth0").is_err());
        nix::unistd::mkfifo(&dir.join(".lock"), mode).unwrap();
        assert!(s.lock().is_err());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn symlinks_are_not_followed() {
        let dir = tmpdir();
        let s = StateStore::new(&dir, "p", "n");
        s.save("c", "eth0", &1u32).unwrap();
        let p = s.path("c", "eth0");
        fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &p).unwrap();
        assert!(s.load::<u32>("c", "eth0").is_err());
        let _ = fs::remove_dir_all(&dir);
    }
}
