//! `cni-rs uninstall`: removes our entries from the conflist (putting back
//! the reference `bandwidth` entry ours replaced), then our binaries and
//! the backup install kept, and last the bandwidth plugin's parked ifbs
//! (its `ifbPool`). The conflist first: once no entry names our plugins,
//! removing them is safe. Stop the DaemonSet first, or its
//! watcher puts everything back.

use crate::apply::parent;
use crate::conflist;
use crate::diff;
use crate::install_opts::UninstallOpts;
use crate::node_files::{self, Attrs};
use std::path::PathBuf;

const TRIES: usize = 5;

pub fn run(o: &UninstallOpts, log: &mut dyn FnMut(String)) -> Result<(), String> {
    let p = &o.paths;
    let conf = p.conflist.display().to_string();
    let mut edit = None;
    if std::fs::symlink_metadata(&p.conflist).is_ok() {
        let old = conflist::load(&p.conflist)?;
        let new = conflist::unpatch(&old.json);
        if !old.json.same_as(&new) {
            edit = Some((old, new));
        }
    } else {
        log(format!("{conf} does not exist: no entries to remove"));
    }
    let remove: Vec<PathBuf> = ["bandwidth-rs", "topology-label"]
        .iter()
        .map(|n| p.cni_bin_dir.join(n))
        .chain([p.backup.clone()])
        .filter(|f| std::fs::symlink_metadata(f).is_ok())
        .collect();
    let parked = parked_ifbs();
    let changes = edit.is_some() || !remove.is_empty() || !parked.is_empty();
    if o.dry_run {
        if let Some((old, new)) = &edit {
            log(format!("would restore the chain in {conf}:"));
            // As install's dry run: shown if it can be, nothing changes.
            let _ = crate::emit(&diff::unified(
                &conf,
                &String::from_utf8_lossy(&old.bytes),
                &new.to_pretty(),
            ));
        }
        for f in &remove {
            log(format!("would remove {}", f.display()));
        }
        for l in &parked {
            log(format!("would delete the parked ifb {}", l.name));
        }
        return Ok(());
    }
    if edit.is_some() {
        node_files::probe_writable(parent(&p.conflist))
            .map_err(|e| format!("cannot patch {conf}: {e}; nothing was changed"))?;
    }
    for dir in remove.iter().map(|f| parent(f)) {
        node_files::probe_writable(dir)
            .map_err(|e| format!("cannot remove our files: {e}; nothing was changed"))?;
    }
    if let Some((old, new)) = edit.take() {
        restore(&p.conflist, old, new, log)?;
    }
    for f in &remove {
        std::fs::remove_file(f).map_err(|e| format!("cannot remove {}: {e}", f.display()))?;
        log(format!("removed {}", f.display()));
    }
    // Last: with our entries gone, no DEL parks another one.
    delete_parked(&parked, log)?;
    if !changes {
        log("nothing to do: nothing of ours on this node".into());
    }
    Ok(())
}

/// The bandwidth plugin's parked ifbs in this network namespace (its
/// `ifbPool`): they outlive pods by design, not the plugin. None when
/// netlink cannot be read (reported when deleting).
fn parked_ifbs() -> Vec<cni_netlink::Link> {
    cni_netlink::Netlink::new()
        .and_then(|mut nl| nl.links())
        .map(|links| {
            links
                .into_iter()
                .filter(bandwidth_plugin::ifb_pool::parked_by_any_pool)
                .collect()
        })
        .unwrap_or_default()
}

fn delete_parked(parked: &[cni_netlink::Link], log: &mut dyn FnMut(String)) -> Result<(), String> {
    if parked.is_empty() {
        return Ok(());
    }
    let mut nl = cni_netlink::Netlink::new().map_err(|e| format!("netlink: {e}"))?;
    for l in parked {
        nl.delete_link(l.index)
            .map_err(|e| format!("cannot delete the parked ifb {}: {e}", l.name))?;
        log(format!("deleted the parked ifb {}", l.name));
    }
    Ok(())
}

/// Writes the chain without our entries, if the file is still what was
/// read (else reads and computes it again, a few times).
fn restore(
    path: &std::path::Path,
    mut old: conflist::Loaded,
    mut new: crate::ordered_json::Json,
    log: &mut dyn FnMut(String),
) -> Result<(), String> {
    let conf = path.display();
    for attempt in 1..=TRIES {
        let meta = std::fs::metadata(path).map_err(|e| format!("{conf}: {e}"))?;
        let now = node_files::read_regular(path, 1 << 20).ok();
        if now.as_deref() == Some(old.bytes.as_slice()) {
            node_files::write_atomic(path, new.to_pretty().as_bytes(), Attrs::of(&meta))
                .map_err(|e| format!("cannot write {conf}: {e}"))?;
            log(format!("removed our entries from {conf}"));
            return Ok(());
        }
        log(format!(
            "{conf} changed while editing it; again ({attempt})"
        ));
        old = conflist::load(path)?;
        new = conflist::unpatch(&old.json);
        if old.json.same_as(&new) {
            return Ok(());
        }
    }
    Err(format!("{conf} keeps changing under us; try again"))
}
