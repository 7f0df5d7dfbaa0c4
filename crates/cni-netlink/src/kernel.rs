//! The seam between the plugins' decisions and the kernel: every operation
//! the bandwidth plugin's reconcile, CHECK and teardown need (links,
//! qdiscs, classes, filters, the priority-reset program, the backstop's
//! nf_tables table, and a handle inside a pod's namespace) behind one
//! trait. [`System`] is the real one (rtnetlink and nf_tables sockets);
//! [`crate::fake::FakeKernel`] is an in-memory node for unit tests that
//! run without root, with failures injected at any step.

use std::path::Path;

use crate::backstop::{Backstop, Observed, Table};
use crate::htb::{ClassifierSpec, Fifo, HtbClass, HtbClassSpec};
use crate::nft::Nft;
use crate::tc::{Filter, Qdisc, TbfSpec};
use crate::{Link, LinkChange, Netlink, Result};

/// What the plugins ask of the kernel. Object-safe: plugins hold a
/// `&mut dyn Kernel`.
pub trait Kernel {
    /// Every link of the namespace.
    fn links(&mut self) -> Result<Vec<Link>>;
    /// The link named `name`, if any.
    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>>;
    /// The link with index `index`, if any.
    fn link_by_index(&mut self, index: u32) -> Result<Option<Link>>;
    /// Creates an ifb (down, with `mtu` and `alias`).
    fn create_ifb(&mut self, name: &str, mtu: u32, alias: Option<&str>) -> Result<Link>;
    /// Turns IPv6 off on the link `name` (its `disable_ipv6`): an ifb never
    /// speaks it, and a link without it goes up without IPv6's work, a walk
    /// of the node's whole IPv6 routing table (0.5 ms with 1000 pods).
    fn disable_ipv6(&mut self, name: &str) -> Result<()>;
    /// Deletes a link; `false` when it was not there.
    fn delete_link(&mut self, index: u32) -> Result<bool>;
    /// Brings a link up.
    fn set_up(&mut self, index: u32) -> Result<()>;
    /// Sets a link's alias.
    fn set_alias(&mut self, index: u32, alias: &str) -> Result<()>;
    /// Sets a link's MTU.
    fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()>;
    /// Changes several of a link's properties in one request, atomic to
    /// other netlink users (see [`LinkChange`]).
    fn change_link(&mut self, index: u32, change: &LinkChange<'_>) -> Result<()>;
    /// The root and ingress-hook qdiscs of a link.
    fn top_qdiscs(&mut self, index: u32) -> Result<Vec<Qdisc>>;
    /// Puts a tbf at root `1:` (replacing what is there).
    fn replace_root_tbf(&mut self, index: u32, spec: &TbfSpec) -> Result<()>;
    /// Adds an `ingress` qdisc.
    fn add_ingress_qdisc(&mut self, index: u32) -> Result<()>;
    /// Adds a `clsact` qdisc.
    fn add_clsact_qdisc(&mut self, index: u32) -> Result<()>;
    /// Deletes the qdisc at (`parent`, `handle`); `false` when not there.
    fn delete_qdisc(&mut self, index: u32, parent: u32, handle: u32) -> Result<bool>;
    /// The filters under `parent`.
    fn filters(&mut self, index: u32, parent: u32) -> Result<Vec<Filter>>;
    /// A u32 match-all filter redirecting to `target` (mirred egress).
    fn add_u32_redirect_all(
        &mut self,
        index: u32,
        parent: u32,
        prio: u16,
        target: u32,
    ) -> Result<()>;
    /// Deletes the filters at `prio`; `false` when none.
    fn delete_filter(&mut self, index: u32, parent: u32, prio: u16, protocol: u16) -> Result<bool>;
    /// Adds a root htb `handle` with a default class.
    fn add_root_htb(&mut self, index: u32, handle: u32, default_minor: u32) -> Result<()>;
    /// Adds an htb class.
    fn add_htb_class(&mut self, index: u32, spec: &HtbClassSpec) -> Result<()>;
    /// Adds a bfifo leaf under a class.
    fn add_leaf_bfifo(&mut self, index: u32, parent: u32, handle: u32, limit: u32) -> Result<()>;
    /// Adds a u32 classifier on root `1:`.
    fn add_u32_classifier(&mut self, index: u32, parent: u32, spec: &ClassifierSpec) -> Result<()>;
    /// The htb classes of a link.
    fn htb_classes(&mut self, index: u32) -> Result<Vec<HtbClass>>;
    /// The fifo under a class, if any.
    fn fifo_under(&mut self, index: u32, parent: u32) -> Result<Option<Fifo>>;
    /// Attaches the priority-reset program on the clsact egress hook.
    fn add_priority_reset(&mut self, index: u32) -> Result<()>;
    /// A handle acting inside the network namespace at `ns`.
    fn in_netns(&mut self, ns: &Path) -> anyhow::Result<Box<dyn Kernel>>;
    /// Our backstop tables.
    fn backstop_tables(&mut self) -> Result<Vec<Table>>;
    /// Our tables whose base chain hooks `device`.
    fn tables_hooking(&mut self, device: &str) -> Result<Vec<String>>;
    /// What table `name` holds.
    fn observe_backstop(&mut self, name: &str) -> Result<Observed>;
    /// Creates a backstop, replacing the table with handle `replacing`.
    fn install_backstop(&mut self, b: &Backstop, replacing: Option<u64>) -> Result<()>;
    /// Deletes a table by handle.
    fn delete_table(&mut self, t: &Table) -> Result<()>;
}

/// A node (or an emulator: qemu-user) without nf_tables has no tables of
/// ours: listing them is empty there, so DEL and GC need nothing from it.
fn without_nf_tables_none<T>(r: Result<Vec<T>>) -> Result<Vec<T>> {
    match r {
        Err(e)
            if matches!(
                e.errno(),
                Some(nix::libc::EPROTONOSUPPORT | nix::libc::EAFNOSUPPORT | nix::libc::EOPNOTSUPP)
            ) =>
        {
            Ok(Vec::new())
        }
        other => other,
    }
}

/// The real kernel: an rtnetlink socket, and an nf_tables socket opened
/// when first needed.
pub struct System {
    rt: Netlink,
    nft: Option<Nft>,
    /// The sockets are in the calling thread's namespace, so procfs (which
    /// reads the opener's) names the same links: not so for a pod's System.
    thread_netns: bool,
}

impl System {
    /// Sockets in the calling thread's namespace.
    pub fn new() -> Result<System> {
        Ok(System {
            rt: Netlink::new()?,
            nft: None,
            thread_netns: true,
        })
    }

    /// The rtnetlink socket, for what the seam does not cover.
    pub fn netlink(&mut self) -> &mut Netlink {
        &mut self.rt
    }

    fn nft(&mut self) -> Result<&mut Nft> {
        match self.nft {
            Some(ref mut n) => Ok(n),
            None => Ok(self.nft.insert(Nft::new()?)),
        }
    }
}

impl Drop for System {
    /// The nf_tables socket is left to the process's exit: releasing a
    /// `NETLINK_NETFILTER` socket waits for nf_tables' destroy work (an RCU
    /// grace period, ~9 ms here) whenever anything was deleted recently.
    /// At exit that wait comes after the plugin's lock is released, so it
    /// holds up only this process.
    fn drop(&mut self) {
        if let Some(n) = self.nft.take() {
            std::mem::forget(n);
        }
    }
}

impl Kernel for System {
    fn links(&mut self) -> Result<Vec<Link>> {
        self.rt.links()
    }
    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        self.rt.link_by_name(name)
    }
    fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        self.rt.link_by_index(index)
    }
    fn create_ifb(&mut self, name: &str, mtu: u32, alias: Option<&str>) -> Result<Link> {
        self.rt.create_ifb(name, mtu, alias)
    }
    fn disable_ipv6(&mut self, name: &str) -> Result<()> {
        if !self.thread_netns {
            return Err(crate::NlError::invalid_input(
                "procfs would name the thread's links, not this namespace's",
            ));
        }
        crate::link::disable_ipv6(name)
    }
    fn delete_link(&mut self, index: u32) -> Result<bool> {
        self.rt.delete_link(index)
    }
    fn set_up(&mut self, index: u32) -> Result<()> {
        self.rt.set_up(index)
    }
    fn set_alias(&mut self, index: u32, alias: &str) -> Result<()> {
        self.rt.set_alias(index, alias)
    }
    fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        self.rt.set_mtu(index, mtu)
    }
    fn change_link(&mut self, index: u32, change: &LinkChange<'_>) -> Result<()> {
        self.rt.change_link(index, change)
    }
    fn top_qdiscs(&mut self, index: u32) -> Result<Vec<Qdisc>> {
        self.rt.top_qdiscs(index)
    }
    fn replace_root_tbf(&mut self, index: u32, spec: &TbfSpec) -> Result<()> {
        self.rt.replace_root_tbf(index, spec)
    }
    fn add_ingress_qdisc(&mut self, index: u32) -> Result<()> {
        self.rt.add_ingress_qdisc(index)
    }
    fn add_clsact_qdisc(&mut self, index: u32) -> Result<()> {
        self.rt.add_clsact_qdisc(index)
    }
    fn delete_qdisc(&mut self, index: u32, parent: u32, handle: u32) -> Result<bool> {
        self.rt.delete_qdisc(index, parent, handle)
    }
    fn filters(&mut self, index: u32, parent: u32) -> Result<Vec<Filter>> {
        self.rt.filters(index, parent)
    }
    fn add_u32_redirect_all(
        &mut self,
        index: u32,
        parent: u32,
        prio: u16,
        target: u32,
    ) -> Result<()> {
        self.rt.add_u32_redirect_all(index, parent, prio, target)
    }
    fn delete_filter(&mut self, index: u32, parent: u32, prio: u16, protocol: u16) -> Result<bool> {
        self.rt.delete_filter(index, parent, prio, protocol)
    }
    fn add_root_htb(&mut self, index: u32, handle: u32, default_minor: u32) -> Result<()> {
        self.rt.add_root_htb(index, handle, default_minor)
    }
    fn add_htb_class(&mut self, index: u32, spec: &HtbClassSpec) -> Result<()> {
        self.rt.add_htb_class(index, spec)
    }
    fn add_leaf_bfifo(&mut self, index: u32, parent: u32, handle: u32, limit: u32) -> Result<()> {
        self.rt.add_leaf_bfifo(index, parent, handle, limit)
    }
    fn add_u32_classifier(&mut self, index: u32, parent: u32, spec: &ClassifierSpec) -> Result<()> {
        self.rt.add_u32_classifier(index, parent, spec)
    }
    fn htb_classes(&mut self, index: u32) -> Result<Vec<HtbClass>> {
        self.rt.htb_classes(index)
    }
    fn fifo_under(&mut self, index: u32, parent: u32) -> Result<Option<Fifo>> {
        self.rt.fifo_under(index, parent)
    }
    fn add_priority_reset(&mut self, index: u32) -> Result<()> {
        self.rt.add_priority_reset(index)
    }
    fn in_netns(&mut self, ns: &Path) -> anyhow::Result<Box<dyn Kernel>> {
        // A socket stays in the namespace it was made in.
        let inner = crate::netns::rtnl_in(ns)?;
        Ok(Box::new(System {
            rt: inner,
            nft: None,
            thread_netns: false,
        }))
    }
    fn backstop_tables(&mut self) -> Result<Vec<Table>> {
        without_nf_tables_none(self.nft().and_then(|n| n.backstop_tables()))
    }
    fn tables_hooking(&mut self, device: &str) -> Result<Vec<String>> {
        without_nf_tables_none(self.nft().and_then(|n| n.tables_hooking(device)))
    }
    fn observe_backstop(&mut self, name: &str) -> Result<Observed> {
        self.nft()?.observe(name)
    }
    fn install_backstop(&mut self, b: &Backstop, replacing: Option<u64>) -> Result<()> {
        self.nft()?.install_backstop(b, replacing)
    }
    fn delete_table(&mut self, t: &Table) -> Result<()> {
        self.nft()?.delete_table(t)
    }
}
