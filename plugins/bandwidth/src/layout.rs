//! The desired root of one shaped device (host veth, ifb or the pod's
//! interface) as data, and the three things done with it: install
//! (reconcile against what is there), compare (CHECK, object by object)
//! and the description logged.
//!
//! Without classes the root is one tbf `1:`, exactly the layout of earlier
//! versions and of the reference plugin; with classes it is an htb `1:`
//! tree ([`crate::htb_plan::plan`]). Both are removed by deleting the root
//! `1:`, which takes its classes, leaf queues and filters with it.

use crate::htb_plan::{HtbPlan, ROOT_HANDLE};
use crate::tbf::Shape;
use cni_netlink::Link;
use cni_netlink::htb::HtbClass;
use cni_netlink::kernel::Kernel;
use cni_netlink::tc::{Filter, Qdisc, TC_H_ROOT, TbfSpec, burst_to_ticks};
use cni_types::error::{Code, ResultExt};

/// What goes at the root `1:` of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootLayout {
    Tbf(Shape),
    Htb(HtbPlan),
}

pub fn tbf_spec(s: &Shape) -> TbfSpec {
    TbfSpec {
        rate_bytes_per_sec: s.rate_bytes_per_sec,
        burst_bytes: s.burst_bytes,
        limit_bytes: s.limit_bytes,
    }
}

impl RootLayout {
    /// For logs: what was installed.
    pub fn describe(&self) -> String {
        match self {
            RootLayout::Tbf(s) => format!(
                "tbf rate {}B/s burst {}B limit {}B",
                s.rate_bytes_per_sec, s.burst_bytes, s.limit_bytes
            ),
            RootLayout::Htb(p) => format!(
                "htb with {} classes ({}) and {} filters",
                p.classes.len(),
                p.names
                    .iter()
                    .map(|(n, m)| format!("{}=1:{m:x}", n.as_str()))
                    .collect::<Vec<_>>()
                    .join(" "),
                p.filters.len()
            ),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            RootLayout::Tbf(_) => "tbf",
            RootLayout::Htb(_) => "htb",
        }
    }
}

/// Makes `link`'s root `1:` what `want` says. `live` is the root qdisc
/// there now, already judged free (the kernel's default) or ours by the
/// caller. A tbf is replaced in place; an htb tree that already matches
/// is kept (a retried ADD changes nothing), and any other root of ours is
/// removed first (the kernel cannot change a qdisc's kind, and rebuilding
/// a tree is simpler and safer than patching it).
pub fn install_root(
    nl: &mut dyn Kernel,
    link: &Link,
    want: &RootLayout,
    live: Option<&Qdisc>,
) -> anyhow::Result<()> {
    let ours = live.filter(|q| q.is_root_shaper());
    if let Some(q) = ours {
        let keep = match want {
            RootLayout::Tbf(_) => q.kind == "tbf",
            RootLayout::Htb(plan) => {
                q.kind == "htb" && htb_difference(nl, link, plan, q)?.is_none()
            }
        };
        if keep && matches!(want, RootLayout::Htb(_)) {
            return Ok(());
        }
        if !keep {
            nl.delete_qdisc(link.index, TC_H_ROOT, ROOT_HANDLE)
                .cni_with(Code::Kernel, || {
                    format!("removing the old {} from {}", q.kind, link.name)
                })?;
        }
    }
    match want {
        RootLayout::Tbf(s) => nl
            .replace_root_tbf(link.index, &tbf_spec(s))
            .map_err(|e| qdisc_error(e, "tbf", format!("installing tbf on {}", link.name))),
        RootLayout::Htb(plan) => build_htb(nl, link, plan),
    }
}

/// A code-100 error for a failed qdisc creation. A qdisc the kernel has
/// no code for (not built in, and its module not found by the kernel's
/// own request_module) is refused with ENOENT, "Specified qdisc kind is
/// unknown": the message then names the missing kernel feature, so the
/// node's operator knows what to load or enable.
fn qdisc_error(e: cni_netlink::NlError, kind: &str, what: String) -> anyhow::Error {
    /// ENOENT, the same on every Linux architecture.
    const ENOENT: i32 = 2;
    let msg = if e.errno() == Some(ENOENT) {
        format!(
            "{what}: this kernel has no {kind} qdisc (module sch_{kind}, CONFIG_NET_SCH_{})",
            kind.to_uppercase()
        )
    } else {
        what
    };
    anyhow::Error::new(e).context(cni_types::error::CniError::new(Code::Kernel, msg))
}

/// Root, classes (parents first), leaf queues, then filters: traffic is
/// classified only once every class it can reach exists.
fn build_htb(nl: &mut dyn Kernel, link: &Link, plan: &HtbPlan) -> anyhow::Result<()> {
    let ctx = |what: String| format!("{what} on {}", link.name);
    nl.add_root_htb(link.index, ROOT_HANDLE, plan.default_minor)
        .map_err(|e| qdisc_error(e, "htb", ctx("adding root htb".into())))?;
    for c in &plan.classes {
        nl.add_htb_class(link.index, c).cni_with(Code::Kernel, || {
            ctx(format!("adding class {:x}", c.classid))
        })?;
    }
    for (class, handle, limit) in &plan.leaves {
        nl.add_leaf_bfifo(link.index, *class, *handle, *limit)
            .cni_with(Code::Kernel, || {
                ctx(format!("adding the queue of {class:x}"))
            })?;
    }
    for f in &plan.filters {
        nl.add_u32_classifier(link.index, ROOT_HANDLE, f)
            .cni_with(Code::Kernel, || {
                ctx(format!("adding a filter to {:x}", f.classid))
            })?;
    }
    Ok(())
}

fn top_as_qdisc(parent: u32) -> u32 {
    if parent == TC_H_ROOT {
        ROOT_HANDLE
    } else {
        parent
    }
}

fn class_name(plan: &HtbPlan, classid: u32) -> String {
    plan.names
        .iter()
        .find(|(_, m)| ROOT_HANDLE | m == classid)
        .map(|(n, _)| format!("{} ", n.as_str()))
        .unwrap_or_default()
}

/// The first difference between `plan` and the htb tree on `link`:
/// classes (rate, ceiling, parent, quantum), leaf queues, and the filters
/// with their matches and target classes, in the order they are tried.
pub fn htb_difference(
    nl: &mut dyn Kernel,
    link: &Link,
    plan: &HtbPlan,
    root: &Qdisc,
) -> anyhow::Result<Option<String>> {
    let dev = &link.name;
    if root.htb_default != Some(plan.default_minor) {
        return Ok(Some(format!(
            "{dev}: htb sends unclassified traffic to {:x?}, expected 1:{:x}",
            root.htb_default, plan.default_minor
        )));
    }
    let live = nl
        .htb_classes(link.index)
        .cni_with(Code::Kernel, || format!("listing classes of {dev}"))?;
    if let Some(d) = class_difference(dev, plan, &live) {
        return Ok(Some(d));
    }
    if let Some(d) = leaf_difference(nl, link, plan)? {
        return Ok(Some(d));
    }
    let filters = nl
        .filters(link.index, ROOT_HANDLE)
        .cni_with(Code::Kernel, || format!("listing filters of {dev}"))?;
    Ok(filter_difference(dev, plan, &filters))
}

/// Every planned class as the kernel has it (rate, ceiling, parent,
/// quantum, both buckets), and no class beyond the plan. Pure.
fn class_difference(dev: &str, plan: &HtbPlan, live: &[HtbClass]) -> Option<String> {
    for want in &plan.classes {
        let name = class_name(plan, want.classid);
        let Some(have) = live.iter().find(|c| c.classid == want.classid) else {
            return Some(format!("{dev}: {name}class {:x} is missing", want.classid));
        };
        for (what, h, w) in [
            ("rate (B/s)", have.rate, want.rate),
            ("ceil (B/s)", have.ceil, want.ceil),
            // A class at the top of the tree is dumped with the root as
            // parent; it was added under the qdisc `1:`.
            (
                "parent",
                u64::from(top_as_qdisc(have.parent)),
                u64::from(want.parent),
            ),
            ("quantum", u64::from(have.quantum), u64::from(want.quantum)),
            // Buckets as the kernel keeps them (ticks round-trip exactly).
            (
                "burst (ticks)",
                u64::from(have.buffer_ticks),
                u64::from(burst_to_ticks(want.rate, want.burst)),
            ),
            (
                "cburst (ticks)",
                u64::from(have.cbuffer_ticks),
                u64::from(burst_to_ticks(want.ceil, want.cburst)),
            ),
        ] {
            if h != w {
                return Some(format!(
                    "{dev}: {name}class {:x} {what} is {h}, expected {w}",
                    want.classid
                ));
            }
        }
    }
    live.iter()
        .find(|c| !plan.classes.iter().any(|w| w.classid == c.classid))
        .map(|extra| {
            format!(
                "{dev}: class {:x} is not in the configured layout",
                extra.classid
            )
        })
}

/// Every leaf's bfifo, in bytes, of the planned size.
fn leaf_difference(
    nl: &mut dyn Kernel,
    link: &Link,
    plan: &HtbPlan,
) -> anyhow::Result<Option<String>> {
    let dev = &link.name;
    for (class, _, limit) in &plan.leaves {
        let fifo = nl
            .fifo_under(link.index, *class)
            .cni_with(Code::Kernel, || {
                format!("reading the queue of {class:x} on {dev}")
            })?;
        let name = class_name(plan, *class);
        match fifo {
            Some(f) if f.bytes_mode && f.limit == *limit => {}
            Some(f) => {
                return Ok(Some(format!(
                    "{dev}: the queue of {name}class {class:x} holds {} {}, expected {limit} bytes",
                    f.limit,
                    if f.bytes_mode { "bytes" } else { "packets" }
                )));
            }
            None => {
                return Ok(Some(format!(
                    "{dev}: the queue of {name}class {class:x} is missing"
                )));
            }
        }
    }
    Ok(None)
}

/// The planned u32 filters, in the order they are tried, and no other
/// filter on the root. Pure.
fn filter_difference(dev: &str, plan: &HtbPlan, filters: &[Filter]) -> Option<String> {
    // u32 also dumps each instance and its hash table (no selector): every
    // other entry classifies, and any filter of another kind is not ours.
    let live: Vec<_> = filters
        .iter()
        .filter(|f| !(f.kind == "u32" && f.keys.is_empty() && f.classid.is_none()))
        .collect();
    for (i, want) in plan.filters.iter().enumerate() {
        let Some(have) = live.get(i) else {
            return Some(format!(
                "{dev}: filter {} of {} (to {}class {:x}) is missing",
                i + 1,
                plan.filters.len(),
                class_name(plan, want.classid),
                want.classid
            ));
        };
        let same = have.kind == "u32"
            && have.prio == want.prio
            && have.protocol == want.protocol
            && have.classid == Some(want.classid)
            && have.keys == want.keys;
        if !same {
            return Some(format!(
                "{dev}: filter {} differs: {} prio {} to {:x?} matching {:?}, expected u32 prio {} to {:x} matching {:?}",
                i + 1,
                have.kind,
                have.prio,
                have.classid,
                have.keys,
                want.prio,
                want.classid,
                want.keys
            ));
        }
    }
    live.get(plan.filters.len()).map(|extra| {
        format!(
            "{dev}: a {} filter at prio {} (to {:x?}) is not in the configured layout",
            extra.kind, extra.prio, extra.classid
        )
    })
}

/// The first difference between `want` and `link`'s root, for CHECK.
pub fn root_difference(
    nl: &mut dyn Kernel,
    link: &Link,
    want: &RootLayout,
) -> anyhow::Result<Option<String>> {
    let qs = nl
        .top_qdiscs(link.index)
        .cni_with(Code::Kernel, || format!("listing qdiscs of {}", link.name))?;
    let root = qs
        .iter()
        .find(|q| q.is_root_shaper() && q.kind == want.kind());
    let Some(root) = root else {
        return Ok(Some(format!(
            "{}: root {} 1: is missing",
            link.name,
            want.kind()
        )));
    };
    match want {
        RootLayout::Tbf(s) => Ok(tbf_difference(&link.name, Some(root), s)),
        RootLayout::Htb(plan) => htb_difference(nl, link, plan, root),
    }
}

/// The tbf parameters as dumped against the shape asked for: the first
/// difference, if any (pure, for CHECK).
pub fn tbf_difference(
    device: &str,
    q: Option<&cni_netlink::tc::Qdisc>,
    s: &Shape,
) -> Option<String> {
    let Some(q) = q else {
        return Some(format!("{device}: root tbf 1: is missing"));
    };
    let Some(p) = q.tbf else {
        return Some(format!("{device}: tbf options unreadable"));
    };
    let want = crate::layout::tbf_spec(s);
    if p.rate_bytes_per_sec != want.rate_bytes_per_sec {
        return Some(format!(
            "{device}: tbf rate is {} B/s, expected {}",
            p.rate_bytes_per_sec, want.rate_bytes_per_sec
        ));
    }
    if p.limit_bytes != want.limit_bytes {
        return Some(format!(
            "{device}: tbf limit is {} B, expected {}",
            p.limit_bytes, want.limit_bytes
        ));
    }
    if !p.matches(&want) {
        return Some(format!(
            "{device}: tbf burst differs from {} B",
            want.burst_bytes
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::qdisc_error;
    use cni_netlink::NlError;
    use cni_types::error::CniError;

    fn kernel_error(errno: i32) -> NlError {
        NlError::Kernel {
            op: "add root htb on link #3 (Specified qdisc kind is unknown)".into(),
            errno: std::io::Error::from_raw_os_error(errno),
        }
    }

    /// Measured on Debian's 6.1 with sch_htb withheld (the VM tier's
    /// nohtb boot): ENOENT, which alone never said what was missing.
    #[test]
    fn an_unknown_qdisc_kind_names_the_missing_feature() {
        let e = qdisc_error(kernel_error(2), "htb", "adding root htb on eni1".into());
        let c = e.downcast_ref::<CniError>().expect("a CNI error");
        assert_eq!(c.code, cni_types::error::Code::Kernel);
        assert_eq!(
            c.msg,
            "adding root htb on eni1: this kernel has no htb qdisc (module sch_htb, CONFIG_NET_SCH_HTB)"
        );
        let e = qdisc_error(kernel_error(22), "tbf", "installing tbf on eni1".into());
        let c = e.downcast_ref::<CniError>().expect("a CNI error");
        assert_eq!(
            c.msg, "installing tbf on eni1",
            "other errors keep their message"
        );
    }
}
