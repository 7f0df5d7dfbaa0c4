//! The pool of parked ifbs: DEL parks its ifb instead of deleting it, and
//! the next ADD takes a parked one instead of creating one.
//!
//! Why: deleting an ifb returns only after the kernel's unregister work
//! has waited for RCU grace periods (15-25 ms, most of a DEL), while
//! parking one (its root qdisc removed, down, renamed, marked) takes a
//! fraction of a millisecond, and taking it back costs what creating one
//! does. The pool is bounded (`ifbPool`, 16 by default, 0 = delete as the
//! reference plugin does) and GC empties it when the network has no pods.
//!
//! Layout and ownership:
//! - a parked ifb sits under a slot name, `ifb-parked0` .. `ifb-parked<cap-1>`,
//!   marked by its alias `cni-bandwidth parked pool=<state dir>`. The alias
//!   names no attachment, so no attachment's ADD, DEL or GC ever takes it
//!   for its own, and a pool of another state dir is never touched;
//! - an ifb is parked only after its redirect filter is gone (a parked ifb
//!   handed to another pod must not receive this pod's traffic), and only
//!   when it is the attachment's own;
//! - taking and parking run under one lock file in the state dir
//!   (`.ifb-pool`), held for a few requests only: taking is a rename by
//!   index, which the kernel does not make conditional, so two ADDs must
//!   not pick the same parked ifb. Under the lock the occupied slots stay
//!   a prefix (parking fills the lowest free slot, taking empties the
//!   highest), so an empty pool costs an ADD one lookup;
//! - GC's trimming renames a surplus ifb out of its slot (`ifb-gc<index>`,
//!   still marked) under the lock and deletes it after: a GC killed in
//!   between leaves a marked ifb under no slot name, which the next GC
//!   deletes.

use anyhow::Context as _;
use cni_netlink::kernel::Kernel;
use cni_netlink::tc::{TBF_HANDLE, TC_H_ROOT};
use cni_netlink::{Link, LinkChange};
use cni_types::error::{Code, Failures, ResultExt};
use cni_types::log_info;
use cni_types::state::{StateStore, StoreLock};

/// The most slots a pool may have (`ifbPool`'s maximum).
pub const MAX_SLOTS: u32 = 256;
/// `ifbPool` when the config does not say.
pub const DEFAULT_SLOTS: u32 = 16;
const SLOT_PREFIX: &str = "ifb-parked";
const RETIRING_PREFIX: &str = "ifb-gc";
const PARKED_TAG: &str = "cni-bandwidth parked pool=";
/// The lock file, in the state dir (hidden: never taken for a state file).
const LOCK_NAME: &str = ".ifb-pool";

/// Whether `l` is an ifb parked by any pool (any state dir): what an
/// uninstall removes with the plugin.
pub fn parked_by_any_pool(l: &Link) -> bool {
    l.kind.as_deref() == Some("ifb")
        && l.alias
            .as_deref()
            .is_some_and(|a| a.starts_with(PARKED_TAG))
}

/// The name of slot `i`.
pub fn slot_name(i: u32) -> String {
    format!("{SLOT_PREFIX}{i}")
}

fn is_slot_name(name: &str) -> bool {
    name.strip_prefix(SLOT_PREFIX)
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n < MAX_SLOTS && slot_name(n) == name)
}

/// What [`IfbPool::take`] got.
#[derive(Debug)]
pub enum Taken {
    /// A parked ifb, now under the attachment's name and alias, up.
    Ifb(Link),
    /// Nothing parked (or the pool is off): create one.
    Empty,
    /// The attachment's name was made meanwhile (by a parallel ADD of
    /// another attachment); the parked ifb stays parked.
    NameTaken,
}

/// The pool of one state dir, with room for `slots` parked ifbs.
pub struct IfbPool<'a> {
    store: &'a StateStore,
    slots: u32,
    alias: String,
}

impl<'a> IfbPool<'a> {
    /// The pool of `store`'s directory. A directory whose marker would not
    /// fit an alias gets no pool (every ifb is deleted, as with 0 slots).
    pub fn new(store: &'a StateStore, slots: u32) -> IfbPool<'a> {
        let alias = format!("{PARKED_TAG}{}", store.dir().display());
        let fits = alias.len() <= crate::devices::MAX_ALIAS_BYTES;
        IfbPool {
            store,
            slots: if fits { slots.min(MAX_SLOTS) } else { 0 },
            alias,
        }
    }

    /// Whether DEL parks at all (the caller then removes the redirect
    /// first: see the module's notes).
    pub fn is_on(&self) -> bool {
        self.slots > 0
    }

    /// Whether `l` is an ifb parked in this pool (under any name).
    pub fn holds(&self, l: &Link) -> bool {
        l.kind.as_deref() == Some("ifb") && l.alias.as_deref() == Some(self.alias.as_str())
    }

    fn lock(&self) -> anyhow::Result<StoreLock> {
        self.store
            .lock_shared_resource(LOCK_NAME)
            .cni(Code::Io, "cannot lock the ifb pool")
    }

    /// Our parked ifbs in the run of occupied slots from slot 0, in slot
    /// order (under the lock, that run holds all of them).
    fn parked(&self, nl: &mut dyn Kernel) -> anyhow::Result<Vec<Link>> {
        let mut found = Vec::new();
        for i in 0..MAX_SLOTS {
            let name = slot_name(i);
            match nl
                .link_by_name(&name)
                .cni_with(Code::Kernel, || format!("looking up {name}"))?
            {
                None => break,
                Some(l) if self.holds(&l) => found.push(l),
                Some(_) => {}
            }
        }
        Ok(found)
    }

    /// Takes a parked ifb for an attachment: renamed to `name`, marked with
    /// `alias`, given `mtu` and brought up, in one request.
    pub fn take(
        &self,
        nl: &mut dyn Kernel,
        name: &str,
        alias: &str,
        mtu: u32,
    ) -> anyhow::Result<Taken> {
        if !self.is_on() {
            return Ok(Taken::Empty);
        }
        let _lock = self.lock()?;
        let Some(l) = self.parked(nl)?.pop() else {
            return Ok(Taken::Empty);
        };
        // Left down: the ADD sets its root before bringing it up (a root
        // change on a running device waits for an RCU grace period).
        let change = LinkChange {
            name: Some(name),
            alias: Some(alias),
            mtu: Some(mtu),
            up: None,
        };
        match nl.change_link(l.index, &change) {
            Ok(()) => {}
            // The rename comes first in the kernel: refused, nothing changed.
            Err(e) if e.is_exists() => return Ok(Taken::NameTaken),
            Err(e) => {
                return Err(e).cni_with(Code::Kernel, || format!("taking parked {}", l.name));
            }
        }
        log_info!("took parked {} as {name}", l.name);
        Ok(Taken::Ifb(Link {
            name: name.to_string(),
            alias: Some(alias.to_string()),
            mtu,
            up: false,
            ..l
        }))
    }

    /// Parks `ifb` (the attachment's own, its redirect already removed):
    /// down, root qdisc removed, then renamed into the lowest free slot
    /// and marked. False: the pool is off or full, the caller deletes it.
    pub fn park(&self, nl: &mut dyn Kernel, ifb: &Link) -> anyhow::Result<bool> {
        if !self.is_on() {
            return Ok(false);
        }
        // Down first: the kernel renames only a link that is down when the
        // request starts, and removes the root of a stopped device without
        // waiting for a grace period. Killed after this, the ifb is still
        // the attachment's (its name and alias): a retried DEL parks it.
        let down = LinkChange {
            up: Some(false),
            ..Default::default()
        };
        nl.change_link(ifb.index, &down)
            .cni_with(Code::Kernel, || format!("bringing {} down", ifb.name))?;
        nl.delete_qdisc(ifb.index, TC_H_ROOT, TBF_HANDLE)
            .cni_with(Code::Kernel, || {
                format!("removing the root of {}", ifb.name)
            })?;
        let _lock = self.lock()?;
        for i in 0..self.slots {
            let slot = slot_name(i);
            let change = LinkChange {
                name: Some(&slot),
                alias: Some(&self.alias),
                ..Default::default()
            };
            match nl.change_link(ifb.index, &change) {
                Ok(()) => {
                    log_info!("parked {} as {slot}", ifb.name);
                    return Ok(true);
                }
                Err(e) if e.is_exists() => continue,
                Err(e) => {
                    return Err(e).cni_with(Code::Kernel, || format!("parking {}", ifb.name));
                }
            }
        }
        Ok(false)
    }

    /// GC: keeps at most `keep` parked ifbs and deletes the rest, and any
    /// ifb of this pool left under no slot name (a trim killed half-way).
    pub fn trim(&self, nl: &mut dyn Kernel, keep: u32, failures: &mut Failures) {
        failures.record("trimming the ifb pool", self.retire_surplus(nl, keep));
        let Some(links) = failures.record(
            "listing links",
            nl.links().cni(Code::Kernel, "netlink request failed"),
        ) else {
            return;
        };
        for l in links
            .iter()
            .filter(|l| self.holds(l) && !is_slot_name(&l.name))
        {
            log_info!("gc: deleting parked ifb {}", l.name);
            failures.record(
                format!("parked ifb {}", l.name),
                nl.delete_link(l.index)
                    .cni_with(Code::Kernel, || format!("deleting {}", l.name)),
            );
        }
    }

    /// Under the lock, renames the parked ifbs beyond the first `keep` out
    /// of their slots (highest first, so the rest stay a prefix).
    fn retire_surplus(&self, nl: &mut dyn Kernel, keep: u32) -> anyhow::Result<()> {
        let _lock = self.lock()?;
        let parked = self.parked(nl)?;
        for l in parked.iter().skip(keep as usize).rev() {
            let name = format!("{RETIRING_PREFIX}{:08x}", l.index);
            let change = LinkChange {
                name: Some(&name),
                ..Default::default()
            };
            nl.change_link(l.index, &change)
                .with_context(|| format!("retiring {}", l.name))
                .cni(Code::Kernel, "cannot trim the ifb pool")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "ifb_pool_tests.rs"]
mod tests;
