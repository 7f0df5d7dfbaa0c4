//! One install pass: what `cni-rs install` does once, and `--watch` again
//! whenever the node changes. Binaries first (the conflist never names a
//! plugin that is not there), then the conflist, each written atomically
//! and only when it differs; every check that can refuse runs before the
//! first write, so a refusal leaves the node as it was.

use crate::conflist::{self, Loaded};
use crate::diff;
use crate::entries::Entries;
use crate::install_opts::Paths;
use crate::node_files::{self, Attrs, ReadError};
use crate::ordered_json::Json;
use crate::release;
use cni_types::Version;
use std::path::{Path, PathBuf};

/// A plugin binary is a few MB (a debug build tens of MB).
const MAX_BINARY_BYTES: u64 = 256 << 20;
/// How often a conflist that keeps changing under us is read again.
const TRIES: usize = 5;

/// Where the plugins come from.
pub enum Source {
    /// A directory holding `bandwidth` and `topology-label`.
    Dir(PathBuf),
    /// The `bin/` of a release tarball, checked and read into memory.
    Release(PathBuf, Vec<(String, Vec<u8>)>),
}

impl Source {
    /// `--from`, or the directory of this executable (a release's and the
    /// image's `bin/`, or a checkout's target dir) when there is none.
    pub fn resolve(from: Option<&Path>, log: &mut dyn FnMut(String)) -> Result<Source, String> {
        let dir = match from {
            Some(p) if release::is_tarball(p) => {
                let files = release::unpack(p, log)?;
                return Ok(Source::Release(p.to_path_buf(), files));
            }
            Some(p) => p.to_path_buf(),
            None => std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(Path::to_path_buf))
                .ok_or("cannot find the directory of this executable: pass --from")?,
        };
        // An unpacked release holds the plugins in bin/.
        if !dir.join("bandwidth").exists() && dir.join("bin").is_dir() {
            return Ok(Source::Dir(dir.join("bin")));
        }
        Ok(Source::Dir(dir))
    }

    /// The bytes of plugin `built`, checked to run on this machine.
    pub fn read(&self, built: &str) -> Result<Vec<u8>, String> {
        let (bytes, shown) = match self {
            Source::Dir(d) => {
                let p = d.join(built);
                let bytes = node_files::read_regular(&p, MAX_BINARY_BYTES).map_err(|e| match e {
                    ReadError::Missing | ReadError::NotRegular => format!(
                        "{} is missing or not a regular file (pass --from DIR or TARBALL with the built plugins)",
                        p.display()
                    ),
                    other => format!("{} {other}", p.display()),
                })?;
                (bytes, p.display().to_string())
            }
            Source::Release(tgz, files) => {
                let shown = format!("{}: bin/{built}", tgz.display());
                let bytes = files
                    .iter()
                    .find(|(n, _)| n == built)
                    .map(|(_, b)| b.clone())
                    .ok_or_else(|| format!("{shown} is missing"))?;
                (bytes, shown)
            }
        };
        if let Some(why) = node_files::not_runnable_here(&bytes) {
            return Err(format!("{shown} does not run on this machine: {why}"));
        }
        Ok(bytes)
    }
}

/// Installed name <- built name.
fn binaries(entries: &Entries) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![("bandwidth-rs", "bandwidth")];
    if entries.topology.is_some() {
        v.push(("topology-label", "topology-label"));
    }
    v
}

/// What a pass would change.
struct Plan {
    copies: Vec<(PathBuf, Vec<u8>)>,
    old: Loaded,
    new: Json,
}

impl Plan {
    fn conf_changes(&self) -> bool {
        !self.old.json.same_as(&self.new)
    }
}

fn plan(paths: &Paths, source: &Source, entries: &Entries) -> Result<Plan, String> {
    let old = conflist::load(&paths.conflist)?;
    if !paths.cni_bin_dir.is_dir() {
        return Err(format!(
            "CNI bin dir {} does not exist (pass --cni-bin-dir)",
            paths.cni_bin_dir.display()
        ));
    }
    // Our plugins must speak the list's version, or every pod on the node
    // would fail to start.
    let version = old
        .json
        .get("cniVersion")
        .and_then(Json::as_str)
        .unwrap_or("");
    if Version::parse(version).is_none() {
        let ours: Vec<&str> = Version::ALL.iter().map(|v| v.as_str()).collect();
        return Err(format!(
            "{} has cniVersion '{version}'; our plugins support {}",
            paths.conflist.display(),
            ours.join(" ")
        ));
    }
    let mut copies = Vec::new();
    for (installed, built) in binaries(entries) {
        let bytes = source.read(built)?;
        let dst = paths.cni_bin_dir.join(installed);
        if !node_files::same_file(&dst, &bytes, 0o755) {
            copies.push((dst, bytes));
        }
    }
    let new = conflist::patch(&old.json, &entries.bandwidth, entries.topology.as_ref());
    Ok(Plan { copies, old, new })
}

/// One pass; `dry_run` only says what it would do (the diff on stdout).
pub fn once(
    paths: &Paths,
    source: &Source,
    entries: &Entries,
    dry_run: bool,
    log: &mut dyn FnMut(String),
) -> Result<(), String> {
    let plan = plan(paths, source, entries)?;
    let conf = paths.conflist.display().to_string();
    if dry_run {
        for (dst, _) in &plan.copies {
            log(format!("would install {}", dst.display()));
        }
        if plan.conf_changes() {
            log(format!(
                "would patch {conf} (backup: {}):",
                paths.backup.display()
            ));
            let old = String::from_utf8_lossy(&plan.old.bytes);
            // A dry run changes nothing: a diff that cannot be shown is
            // reported by emit, and the run goes on to list the rest.
            let _ = crate::emit(&diff::unified(&conf, &old, &plan.new.to_pretty()));
        } else if plan.copies.is_empty() {
            log(format!(
                "nothing to do: {conf} and {} are up to date",
                paths.cni_bin_dir.display()
            ));
        }
        return Ok(());
    }
    if plan.copies.is_empty() && !plan.conf_changes() {
        return Ok(());
    }
    probe(paths, &plan)?;
    for (dst, bytes) in &plan.copies {
        node_files::write_atomic(
            dst,
            bytes,
            Attrs {
                mode: 0o755,
                owner: None,
            },
        )
        .map_err(|e| format!("cannot install {}: {e}", dst.display()))?;
        log(format!("installed {}", dst.display()));
    }
    if plan.conf_changes() {
        write_conflist(paths, plan.old, plan.new, entries, log)?;
    }
    Ok(())
}

/// Refuses before changing anything if a write would fail.
fn probe(paths: &Paths, plan: &Plan) -> Result<(), String> {
    if !plan.copies.is_empty() {
        node_files::probe_writable(&paths.cni_bin_dir)
            .map_err(|e| format!("cannot install the plugins: {e}; nothing was changed"))?;
    }
    if plan.conf_changes() {
        let conf = paths.conflist.display();
        node_files::probe_writable(parent(&paths.conflist))
            .map_err(|e| format!("cannot patch {conf}: {e}; nothing was changed"))?;
        node_files::probe_writable(parent(&paths.backup))
            .map_err(|e| format!("cannot keep a backup of {conf}: {e}; nothing was changed"))?;
    }
    Ok(())
}

pub fn parent(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Writes the backup, then the patched conflist, if the file is still
/// what was read: aws-node may rename a fresh render in while we compute,
/// and then it is read and patched again (a few times).
fn write_conflist(
    paths: &Paths,
    mut old: Loaded,
    mut new: Json,
    entries: &Entries,
    log: &mut dyn FnMut(String),
) -> Result<(), String> {
    let conf = paths.conflist.display().to_string();
    for attempt in 1..=TRIES {
        let meta = std::fs::metadata(&paths.conflist).map_err(|e| format!("{conf}: {e}"))?;
        let attrs = Attrs::of(&meta);
        node_files::write_atomic(&paths.backup, &old.bytes, attrs)
            .map_err(|e| format!("cannot write the backup {}: {e}", paths.backup.display()))?;
        let now = node_files::read_regular(&paths.conflist, 1 << 20).ok();
        if now.as_deref() == Some(old.bytes.as_slice()) {
            node_files::write_atomic(&paths.conflist, new.to_pretty().as_bytes(), attrs)
                .map_err(|e| format!("cannot write {conf}: {e}"))?;
            log(format!(
                "patched {conf} (previous version in {})",
                paths.backup.display()
            ));
            return Ok(());
        }
        log(format!(
            "{conf} changed while patching it; again ({attempt})"
        ));
        old = conflist::load(&paths.conflist)?;
        new = conflist::patch(&old.json, &entries.bandwidth, entries.topology.as_ref());
        if old.json.same_as(&new) {
            return Ok(());
        }
    }
    Err(format!("{conf} keeps changing under us; try again"))
}
