//! An in-memory node behind [`Kernel`], for unit tests without root: the
//! host namespace and pod namespaces (by path), each with links, qdiscs,
//! htb classes, leaf fifos and filters, and the host's backstop tables.
//! It keeps the kernel's rules that the plugins rely on (deleting a root
//! takes its tree, deleting a hook qdisc takes its filters, deleting a
//! link takes everything on it, names and hooks are exclusive), and fails
//! the N-th change on request, so rollback can be tested at every step.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::backstop::{Backstop, Observed, Table};
use crate::bpf::{CLSACT_EGRESS, PRIORITY_RESET_PRIO};
use crate::htb::{ClassifierSpec, Fifo, HtbClass, HtbClassSpec};
use crate::kernel::Kernel;
use crate::tc::{
    ETH_P_ALL, Filter, INGRESS_HANDLE, Mirred, Qdisc, TC_H_INGRESS, TC_H_ROOT, TCA_EGRESS_REDIR,
    TbfParams, TbfSpec, burst_to_ticks,
};
use crate::{Link, LinkChange, NlError, Result};

/// One namespace's objects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Space {
    /// Links.
    pub links: Vec<Link>,
    /// Root and ingress-hook qdiscs.
    pub qdiscs: Vec<Qdisc>,
    /// htb classes.
    pub classes: Vec<HtbClass>,
    /// Leaf fifos, by link index.
    pub fifos: Vec<(u32, Fifo)>,
    /// tc filters.
    pub filters: Vec<Filter>,
    /// nf_tables backstop tables (the host's).
    pub tables: Vec<(Table, Backstop)>,
}

/// The whole node: namespaces by path (the host is `""`), and the
/// failure to inject.
#[derive(Debug, Default)]
pub struct FakeNode {
    /// Namespaces by path; the host's is the empty path.
    pub spaces: BTreeMap<PathBuf, Space>,
    next_index: u32,
    next_handle: u64,
    /// Changes made so far (reads do not count).
    pub changes: usize,
    /// Fail the change with this number (1-based), with `EIO`.
    pub fail_at: Option<usize>,
    /// Every change, as a line, in order.
    pub log: Vec<String>,
}

/// A handle on one namespace of a [`FakeNode`].
#[derive(Debug, Clone)]
pub struct FakeKernel {
    /// The node all handles share.
    pub node: Rc<RefCell<FakeNode>>,
    ns: PathBuf,
}

fn err(op: &str, errno: i32) -> NlError {
    NlError::Kernel {
        op: op.to_string(),
        errno: io::Error::from_raw_os_error(errno),
    }
}

impl FakeKernel {
    /// A node with an empty host namespace.
    pub fn new() -> FakeKernel {
        let mut node = FakeNode {
            next_index: 10,
            next_handle: 1,
            ..Default::default()
        };
        node.spaces.insert(PathBuf::new(), Space::default());
        FakeKernel {
            node: Rc::new(RefCell::new(node)),
            ns: PathBuf::new(),
        }
    }

    /// Adds a veth pair: `host` here, `peer` (named `ifname`) in the pod
    /// namespace `pod_ns` (created if new). Returns the host end.
    pub fn add_veth(&self, host: &str, pod_ns: &Path, ifname: &str, mtu: u32) -> Link {
        let mut n = self.node.borrow_mut();
        let (hi, pi) = (n.next_index, n.next_index + 1);
        n.next_index += 2;
        let mk = |index, name: &str, peer| Link {
            index,
            name: name.to_string(),
            kind: Some("veth".into()),
            mtu,
            up: true,
            peer_index: Some(peer),
            ..Default::default()
        };
        let h = mk(hi, host, pi);
        n.spaces
            .entry(self.ns.clone())
            .or_default()
            .links
            .push(h.clone());
        n.spaces
            .entry(pod_ns.to_path_buf())
            .or_default()
            .links
            .push(mk(pi, ifname, hi));
        h
    }

    /// A snapshot of one namespace (`""`: the host).
    pub fn space(&self, ns: &str) -> Space {
        self.node
            .borrow()
            .spaces
            .get(Path::new(ns))
            .cloned()
            .unwrap_or_default()
    }

    /// Runs `f` on this handle's namespace for a change: counted, and
    /// failed when it is the one to fail.
    fn change<T>(
        &self,
        op: &str,
        f: impl FnOnce(&mut Space, &mut FakeNode) -> Result<T>,
    ) -> Result<T> {
        let mut n = self.node.borrow_mut();
        n.changes += 1;
        if n.fail_at == Some(n.changes) {
            return Err(err(&format!("{op} (injected)"), libc_eio()));
        }
        n.log.push(format!("{} {op}", self.ns.display()));
        let mut space = n.spaces.remove(&self.ns).unwrap_or_default();
        let r = f(&mut space, &mut n);
        n.spaces.insert(self.ns.clone(), space);
        r
    }

    fn read<T>(&self, f: impl FnOnce(&Space) -> T) -> T {
        let n = self.node.borrow();
        f(n.spaces.get(&self.ns).unwrap_or(&Space::default()))
    }
}

impl Default for FakeKernel {
    fn default() -> Self {
        Self::new()
    }
}

fn libc_eio() -> i32 {
    nix::libc::EIO
}

fn enoent(op: &str) -> NlError {
    err(op, nix::libc::ENOENT)
}

impl Space {
    fn link_mut(&mut self, index: u32, op: &str) -> Result<&mut Link> {
        self.links
            .iter_mut()
            .find(|l| l.index == index)
            .ok_or_else(|| err(op, nix::libc::ENODEV))
    }

    fn has_link(&self, index: u32) -> bool {
        self.links.iter().any(|l| l.index == index)
    }

    /// Removes the root qdisc of `index` with its classes, leaves and filters.
    fn drop_root(&mut self, index: u32) -> bool {
        let before = self.qdiscs.len();
        self.qdiscs.retain(|q| !(q.ifindex == index && q.is_root()));
        self.classes.retain(|c| c.ifindex != index);
        self.fifos.retain(|(i, _)| *i != index);
        self.filters.retain(|f| {
            !(f.ifindex == index && f.parent != INGRESS_HANDLE && f.parent != CLSACT_EGRESS)
        });
        self.qdiscs.len() != before
    }

    /// Removes the ingress-hook qdisc of `index` with its filters.
    fn drop_hook(&mut self, index: u32) -> bool {
        let before = self.qdiscs.len();
        self.qdiscs
            .retain(|q| !(q.ifindex == index && q.on_ingress_hook()));
        self.filters.retain(|f| {
            !(f.ifindex == index && (f.parent == INGRESS_HANDLE || f.parent == CLSACT_EGRESS))
        });
        self.qdiscs.len() != before
    }

    fn hook(&self, index: u32) -> Option<&Qdisc> {
        self.qdiscs
            .iter()
            .find(|q| q.ifindex == index && q.on_ingress_hook())
    }

    fn root(&self, index: u32) -> Option<&Qdisc> {
        self.qdiscs
            .iter()
            .find(|q| q.ifindex == index && q.is_root())
    }
}

fn qdisc(index: u32, parent: u32, handle: u32, kind: &str) -> Qdisc {
    Qdisc {
        ifindex: index,
        handle,
        parent,
        kind: kind.to_string(),
        tbf: None,
        htb_default: None,
    }
}

impl Kernel for FakeKernel {
    fn links(&mut self) -> Result<Vec<Link>> {
        Ok(self.read(|s| s.links.clone()))
    }
    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        Ok(self.read(|s| s.links.iter().find(|l| l.name == name).cloned()))
    }
    fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        Ok(self.read(|s| s.links.iter().find(|l| l.index == index).cloned()))
    }
    fn create_ifb(&mut self, name: &str, mtu: u32, alias: Option<&str>) -> Result<Link> {
        self.change(&format!("create ifb {name}"), |s, n| {
            if s.links.iter().any(|l| l.name == name) {
                return Err(err("create ifb", nix::libc::EEXIST));
            }
            let l = Link {
                index: n.next_index,
                name: name.to_string(),
                kind: Some("ifb".into()),
                mtu,
                txqlen: crate::IFB_TXQUEUELEN,
                alias: alias.map(str::to_string),
                up: false,
                ..Default::default()
            };
            n.next_index += 1;
            s.links.push(l.clone());
            Ok(l)
        })
    }
    /// Logged, but not a step that `fail_at` counts: callers treat it as
    /// best effort, so a failure there fails nothing to roll back.
    fn disable_ipv6(&mut self, name: &str) -> Result<()> {
        if !self.read(|s| s.links.iter().any(|l| l.name == name)) {
            return Err(err("disable ipv6", nix::libc::ENOENT));
        }
        let mut n = self.node.borrow_mut();
        let entry = format!("{} disable ipv6 on {name}", self.ns.display());
        n.log.push(entry);
        Ok(())
    }
    fn delete_link(&mut self, index: u32) -> Result<bool> {
        self.change(&format!("delete link #{index}"), |s, _| {
            if !s.has_link(index) {
                return Ok(false);
            }
            s.drop_root(index);
            s.drop_hook(index);
            s.links.retain(|l| l.index != index);
            Ok(true)
        })
    }
    fn set_up(&mut self, index: u32) -> Result<()> {
        self.change(&format!("set #{index} up"), |s, _| {
            s.link_mut(index, "set up")?.up = true;
            Ok(())
        })
    }
    fn set_alias(&mut self, index: u32, alias: &str) -> Result<()> {
        self.change(&format!("set alias of #{index}"), |s, _| {
            s.link_mut(index, "set alias")?.alias = Some(alias.to_string());
            Ok(())
        })
    }
    fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        self.change(&format!("set mtu of #{index}"), |s, _| {
            s.link_mut(index, "set mtu")?.mtu = mtu;
            Ok(())
        })
    }
    fn change_link(&mut self, index: u32, change: &LinkChange<'_>) -> Result<()> {
        self.change(&format!("change #{index} {change:?}"), |s, _| {
            if let Some(name) = change.name
                && s.links.iter().any(|l| l.name == name && l.index != index)
            {
                return Err(err("rename", nix::libc::EEXIST));
            }
            let l = s.link_mut(index, "change link")?;
            // As the kernel: the rename comes first, and needs the link down.
            if let Some(name) = change.name {
                if l.up && l.name != name {
                    return Err(err("rename", nix::libc::EBUSY));
                }
                l.name = name.to_string();
            }
            if let Some(alias) = change.alias {
                l.alias = Some(alias.to_string());
            }
            if let Some(mtu) = change.mtu {
                l.mtu = mtu;
            }
            if let Some(up) = change.up {
                l.up = up;
            }
            Ok(())
        })
    }
    fn top_qdiscs(&mut self, index: u32) -> Result<Vec<Qdisc>> {
        Ok(self.read(|s| {
            s.qdiscs
                .iter()
                .filter(|q| q.ifindex == index && (q.is_root() || q.on_ingress_hook()))
                .cloned()
                .collect()
        }))
    }
    fn replace_root_tbf(&mut self, index: u32, spec: &TbfSpec) -> Result<()> {
        self.change(&format!("replace root tbf on #{index}"), |s, _| {
            s.link_mut(index, "replace tbf")?;
            if s.root(index).is_some_and(|q| q.kind != "tbf") {
                // The kernel cannot change a qdisc's kind in place.
                return Err(err("replace tbf", nix::libc::EINVAL));
            }
            s.drop_root(index);
            let mut q = qdisc(index, TC_H_ROOT, crate::tc::TBF_HANDLE, "tbf");
            q.tbf = Some(TbfParams {
                rate_bytes_per_sec: spec.rate_bytes_per_sec,
                limit_bytes: spec.limit_bytes,
                buffer_ticks: burst_to_ticks(spec.rate_bytes_per_sec, spec.burst_bytes),
            });
            s.qdiscs.push(q);
            Ok(())
        })
    }
    fn add_ingress_qdisc(&mut self, index: u32) -> Result<()> {
        self.add_hook(index, "ingress")
    }
    fn add_clsact_qdisc(&mut self, index: u32) -> Result<()> {
        self.add_hook(index, "clsact")
    }
    fn delete_qdisc(&mut self, index: u32, parent: u32, _handle: u32) -> Result<bool> {
        self.change(&format!("delete qdisc {parent:x} on #{index}"), |s, _| {
            Ok(match parent {
                TC_H_ROOT => s.drop_root(index),
                TC_H_INGRESS => s.drop_hook(index),
                _ => false,
            })
        })
    }
    fn filters(&mut self, index: u32, parent: u32) -> Result<Vec<Filter>> {
        Ok(self.read(|s| {
            s.filters
                .iter()
                .filter(|f| f.ifindex == index && f.parent == parent)
                .cloned()
                .collect()
        }))
    }
    fn add_u32_redirect_all(
        &mut self,
        index: u32,
        parent: u32,
        prio: u16,
        target: u32,
    ) -> Result<()> {
        self.change(&format!("add redirect on #{index} to #{target}"), |s, _| {
            if s.hook(index).is_none() {
                return Err(err("add filter", nix::libc::EINVAL));
            }
            s.filters.push(Filter {
                ifindex: index,
                parent,
                prio,
                protocol: ETH_P_ALL,
                kind: "u32".into(),
                handle: 0x800_0800,
                mirred: vec![Mirred {
                    action: TCA_EGRESS_REDIR,
                    ifindex: target,
                }],
                classid: None,
                keys: Vec::new(),
            });
            Ok(())
        })
    }
    fn delete_filter(
        &mut self,
        index: u32,
        parent: u32,
        prio: u16,
        _protocol: u16,
    ) -> Result<bool> {
        self.change(&format!("delete filter prio {prio} on #{index}"), |s, _| {
            let before = s.filters.len();
            s.filters
                .retain(|f| !(f.ifindex == index && f.parent == parent && f.prio == prio));
            Ok(s.filters.len() != before)
        })
    }
    fn add_root_htb(&mut self, index: u32, handle: u32, default_minor: u32) -> Result<()> {
        self.change(&format!("add root htb on #{index}"), |s, _| {
            s.link_mut(index, "add htb")?;
            if s.root(index).is_some() {
                return Err(err("add htb", nix::libc::EEXIST));
            }
            let mut q = qdisc(index, TC_H_ROOT, handle, "htb");
            q.htb_default = Some(default_minor);
            s.qdiscs.push(q);
            Ok(())
        })
    }
    fn add_htb_class(&mut self, index: u32, spec: &HtbClassSpec) -> Result<()> {
        self.change(
            &format!("add class {:x} on #{index}", spec.classid),
            |s, _| {
                if s.root(index).is_none_or(|q| q.kind != "htb") {
                    return Err(err("add class", nix::libc::EINVAL));
                }
                s.classes.push(HtbClass {
                    ifindex: index,
                    classid: spec.classid,
                    parent: spec.parent,
                    kind: "htb".into(),
                    rate: spec.rate,
                    ceil: spec.ceil,
                    buffer_ticks: burst_to_ticks(spec.rate, spec.burst),
                    cbuffer_ticks: burst_to_ticks(spec.ceil, spec.cburst),
                    quantum: spec.quantum,
                    ..Default::default()
                });
                Ok(())
            },
        )
    }
    fn add_leaf_bfifo(&mut self, index: u32, parent: u32, handle: u32, limit: u32) -> Result<()> {
        self.change(
            &format!("add bfifo under {parent:x} on #{index}"),
            |s, _| {
                if !s
                    .classes
                    .iter()
                    .any(|c| c.ifindex == index && c.classid == parent)
                {
                    return Err(err("add bfifo", nix::libc::ENOENT));
                }
                s.fifos.push((
                    index,
                    Fifo {
                        handle,
                        parent,
                        bytes_mode: true,
                        limit,
                    },
                ));
                Ok(())
            },
        )
    }
    fn add_u32_classifier(&mut self, index: u32, parent: u32, spec: &ClassifierSpec) -> Result<()> {
        self.change(
            &format!("add classifier to {:x} on #{index}", spec.classid),
            |s, _| {
                s.filters.push(Filter {
                    ifindex: index,
                    parent,
                    prio: spec.prio,
                    protocol: spec.protocol,
                    kind: "u32".into(),
                    handle: 0,
                    mirred: Vec::new(),
                    classid: Some(spec.classid),
                    keys: spec.keys.clone(),
                });
                // The kernel lists filters by prio, then in the order added.
                s.filters.sort_by_key(|f| (f.ifindex, f.parent, f.prio));
                Ok(())
            },
        )
    }
    fn htb_classes(&mut self, index: u32) -> Result<Vec<HtbClass>> {
        Ok(self.read(|s| {
            s.classes
                .iter()
                .filter(|c| c.ifindex == index)
                .cloned()
                .collect()
        }))
    }
    fn fifo_under(&mut self, index: u32, parent: u32) -> Result<Option<Fifo>> {
        Ok(self.read(|s| {
            s.fifos
                .iter()
                .find(|(i, f)| *i == index && f.parent == parent)
                .map(|(_, f)| *f)
        }))
    }
    fn add_priority_reset(&mut self, index: u32) -> Result<()> {
        self.change(&format!("add priority reset on #{index}"), |s, _| {
            if !s.hook(index).is_some_and(Qdisc::is_clsact) {
                return Err(err("add bpf filter", nix::libc::EINVAL));
            }
            s.filters.push(Filter {
                ifindex: index,
                parent: CLSACT_EGRESS,
                prio: PRIORITY_RESET_PRIO,
                protocol: ETH_P_ALL,
                kind: "bpf".into(),
                handle: 1,
                mirred: Vec::new(),
                classid: None,
                keys: Vec::new(),
            });
            Ok(())
        })
    }
    fn in_netns(&mut self, ns: &Path) -> anyhow::Result<Box<dyn Kernel>> {
        if !self.node.borrow().spaces.contains_key(ns) {
            anyhow::bail!("entering {}: no such namespace", ns.display());
        }
        Ok(Box::new(FakeKernel {
            node: self.node.clone(),
            ns: ns.to_path_buf(),
        }))
    }
    fn backstop_tables(&mut self) -> Result<Vec<Table>> {
        Ok(self.read(|s| s.tables.iter().map(|(t, _)| t.clone()).collect()))
    }
    fn tables_hooking(&mut self, device: &str) -> Result<Vec<String>> {
        Ok(self.read(|s| {
            s.tables
                .iter()
                .filter(|(_, b)| b.device == device)
                .map(|(t, _)| t.name.clone())
                .collect()
        }))
    }
    fn observe_backstop(&mut self, name: &str) -> Result<Observed> {
        self.read(|s| {
            let (_, b) = s
                .tables
                .iter()
                .find(|(t, _)| t.name == name)
                .ok_or_else(|| enoent("observe table"))?;
            let e = b.expected();
            Ok(Observed {
                dormant: false,
                hook: Some(crate::backstop::BASE_HOOK),
                hook_dev: Some(b.device.clone()),
                rules: e.rules,
                limits: e.limits.into_iter().map(|(n, l)| (n, l, true)).collect(),
                counters: e.counters.into_iter().map(|n| (n, 0, 0)).collect(),
            })
        })
    }
    fn install_backstop(&mut self, b: &Backstop, replacing: Option<u64>) -> Result<()> {
        self.change(&format!("install table {}", b.table), |s, n| {
            if let Some(h) = replacing {
                if !s.tables.iter().any(|(t, _)| t.handle == h) {
                    return Err(enoent("replace table"));
                }
                s.tables.retain(|(t, _)| t.handle != h);
            }
            if s.tables.iter().any(|(t, _)| t.name == b.table) {
                return Err(err("add table", nix::libc::EEXIST));
            }
            n.next_handle += 1;
            let t = Table {
                name: b.table.clone(),
                handle: n.next_handle,
                owner: Some(b.owner.clone()),
            };
            s.tables.push((t, b.clone()));
            Ok(())
        })
    }
    fn delete_table(&mut self, t: &Table) -> Result<()> {
        self.change(&format!("delete table {}", t.name), |s, _| {
            s.tables.retain(|(x, _)| x.handle != t.handle);
            Ok(())
        })
    }
}

impl FakeKernel {
    fn add_hook(&mut self, index: u32, kind: &str) -> Result<()> {
        self.change(&format!("add {kind} on #{index}"), |s, _| {
            s.link_mut(index, "add hook")?;
            if s.hook(index).is_some() {
                return Err(err("add hook", nix::libc::EEXIST));
            }
            s.qdiscs
                .push(qdisc(index, TC_H_INGRESS, INGRESS_HANDLE, kind));
            Ok(())
        })
    }

    /// A foreign table (another tool's, or another attachment's) in the host.
    pub fn add_table(&self, b: &Backstop, owner: Option<&str>) -> Table {
        let mut n = self.node.borrow_mut();
        n.next_handle += 1;
        let t = Table {
            name: b.table.clone(),
            handle: n.next_handle,
            owner: owner.map(str::to_string),
        };
        let space = n.spaces.entry(self.ns.clone()).or_default();
        space.tables.push((t.clone(), b.clone()));
        t
    }
}
