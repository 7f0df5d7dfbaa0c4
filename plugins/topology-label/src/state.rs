//! Saved previous values, one JSON file per attachment in `stateDir` (the
//! shared [`cni_types::state::StateStore`]: 0600, temp file + rename, no
//! symlinks followed, identity checked on load, a directory lock), so DEL can
//! restore them and CHECK and GC know what ADD did. Also the atomic writer
//! the IMDS cache uses.

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

const STATE_VERSION: u32 = 1;

/// Link values; `None` means "not touched" (in `set`) or "unknown" (in `prev`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkValues {
    /// The alias; `Some("")` means "no alias".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txqlen: Option<u32>,
}

/// One interface we changed: where it is, what it had, what we set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    pub prev: LinkValues,
    pub set: LinkValues,
}

/// One sysctl we changed inside the pod netns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlState {
    /// Components of the key after `{ifname}` substitution.
    pub key: Vec<String>,
    pub prev: String,
    pub set: String,
}

/// Everything ADD changed for one attachment (the store keeps the identity).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// The pod netns's identity at ADD: DEL and CHECK act inside a
    /// namespace only when it is this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_id: Option<cni_types::env::NetnsId>,
    pub container: LinkState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<LinkState>,
    #[serde(default)]
    pub sysctls: Vec<SysctlState>,
    /// Sysctls an earlier ADD of this attachment changed that the current
    /// configuration no longer sets: not applied, only restored by DEL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_sysctls: Vec<SysctlState>,
}

impl State {
    pub fn new(container: LinkState) -> State {
        State {
            version: STATE_VERSION,
            netns: None,
            netns_id: None,
            container,
            host: None,
            sysctls: Vec::new(),
            kept_sysctls: Vec::new(),
        }
    }
}

/// Writes `bytes` to `path` atomically: 0600 temp file in the same
/// directory (created exclusively, never through a symlink), fsync, rename.
/// The directory is created 0700 when missing.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .context("path has no directory")?;
    let base = path
        .file_name()
        .context("path has no file name")?
        .to_string_lossy()
        .into_owned();
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".{base}.{}.{nanos}.tmp", std::process::id()));
    let res = (|| -> anyhow::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))?;
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn state_without_kept_sysctls_still_loads() {
        let old = r#"{"version":1,"container":{"index":2,"name":"eth0","prev":{"mtu":1500},"set":{"mtu":1400}},
            "sysctls":[{"key":["net","ipv4","tcp_keepalive_time"],"prev":"7200","set":"600"}]}"#;
        let st: State = serde_json::from_str(old).unwrap();
        assert!(st.kept_sysctls.is_empty());
        assert_eq!(st.sysctls.len(), 1);
        // And nothing new is written while there is nothing kept.
        assert!(!serde_json::to_string(&st).unwrap().contains("kept"));
    }

    #[test]
    fn atomic_write_replaces_symlink_and_is_0600() {
        let dir = std::env::temp_dir().join(format!("tl-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let p = dir.join("cache.json");
        write_atomic(&p, b"one").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_file(&p).unwrap();
        let target = dir.join("target");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, &p).unwrap();
        write_atomic(&p, b"two").unwrap();
        assert!(
            !std::fs::symlink_metadata(&p)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
