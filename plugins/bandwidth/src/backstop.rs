//! The host-side backstop of a pod whose egress is shaped inside the pod
//! (`egressMode: pod`, and counting with node caps): what its nf_tables
//! table holds ([`spec`], pure), and making, comparing and removing it.
//! The wire work is [`cni_netlink::backstop`]; why it exists is there too.
//!
//! The in-pod tbf/htb stays the shaper: TCP sees queueing there, not
//! drops. The backstop's buckets equal the shaper's (rate and burst), and
//! nf_tables adds a second of rate to each, so traffic that went through
//! the shaper never trips it; what bypassed the shaper is dropped over the
//! limit.

use crate::config::EgressMode;
use crate::htb_plan::{Direction, class_cap};
use crate::plan::AddRequest;
use crate::record::Attachment;
use cni_netlink::Link;
use cni_netlink::backstop::{Backstop, Class, Limit, Prefix, TABLE_PREFIX, Table};
use cni_netlink::kernel::Kernel;
use cni_types::error::{CniError, Code, ResultExt};
use cni_types::{log_info, log_warn};
use sha2::{Digest, Sha512};

/// The longest owner mark an nf_tables comment keeps.
const MAX_OWNER_BYTES: usize = 253;

/// The table of one attachment: the prefix and 16 hex digits of a digest
/// of its whole identity (length-prefixed, so distinct identities never
/// concatenate to the same input).
pub fn table_name(who: &Attachment<'_>) -> String {
    let mut h = Sha512::new();
    for part in [who.network, who.container_id, who.ifname] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let hex: String = h
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{TABLE_PREFIX}{hex}")
}

/// The host-side backstop of `req`, when its egress is shaped inside the
/// pod (also when only counted: the pod's own counters miss what it sends
/// past its qdiscs; the backstop's count what reached the host).
pub fn for_request(
    req: &AddRequest<'_>,
    host: &Link,
    mode: EgressMode,
    egress_shaped: bool,
) -> anyhow::Result<Option<Backstop>> {
    if !(egress_shaped && mode == EgressMode::Pod) {
        return Ok(None);
    }
    let b = spec(req, host);
    refuse_long_owner(&b)?;
    Ok(Some(b))
}

/// The backstop for egress shaped inside the pod on `host`: the pod's
/// limit, and the classes with their caps (peer = destination). Pure.
pub fn spec(req: &AddRequest<'_>, host: &Link) -> Backstop {
    let who = req.attachment();
    let pod = req.egress.as_ref();
    let classes = req
        .classes
        .map(|pc| {
            pc.classes
                .iter()
                .map(|c| Class {
                    name: c.name.as_str().to_string(),
                    prefixes: c
                        .cidrs
                        .iter()
                        .map(|n| Prefix {
                            addr: n.network(),
                            len: n.prefix(),
                        })
                        .collect(),
                    cap: class_cap(c, pod, Direction::OutOfPod, host.mtu, req.latency_ms)
                        .and_then(|s| limit(s.rate_bytes_per_sec, s.burst_bytes)),
                    in_total: c.shaped && pod.is_some(),
                })
                .collect()
        })
        .unwrap_or_default();
    Backstop {
        table: table_name(&who),
        owner: who.alias(),
        device: host.name.clone(),
        total: pod.and_then(|s| limit(s.rate_bytes_per_sec, s.burst_bytes)),
        classes,
    }
}

/// A bucket, or none where the kernel cannot hold it: nf_tables keeps a
/// limit's bucket as `1e9 * (rate + burst) / rate` nanoseconds in a u64,
/// which overflows above ~144 Gbit/s (refused with EOVERFLOW, or wrapped
/// to a tiny bucket on kernels without the check). No veth carries that
/// much, so such a limit holds nothing back and is left out.
fn limit(bytes_per_sec: u64, burst_bytes: u32) -> Option<Limit> {
    let l = Limit {
        bytes_per_sec,
        burst_bytes,
    };
    l.fits_the_kernel().then_some(l)
}

/// Refuses an attachment whose owner mark would not fit (code 7), before
/// anything changes.
pub fn refuse_long_owner(b: &Backstop) -> anyhow::Result<()> {
    if b.owner.len() <= MAX_OWNER_BYTES {
        return Ok(());
    }
    Err(CniError::new(
        Code::InvalidConfig,
        "network name and container id are too long to mark a backstop table as ours",
    )
    .with_details(format!(
        "the mark would be {} bytes; nf_tables comments keep {MAX_OWNER_BYTES}",
        b.owner.len()
    ))
    .into())
}

/// Our table named `name`, if any.
fn find_table(k: &mut dyn Kernel, name: &str) -> anyhow::Result<Option<Table>> {
    Ok(k.backstop_tables()
        .cni_with(Code::Kernel, || format!("looking up nft table {name}"))?
        .into_iter()
        .find(|t| t.name == name))
}

/// Makes the table what `want` says: kept when it already is, replaced in
/// one transaction when it differs, created when missing. Another's table
/// of that name is refused. Tables of other attachments still hooking this
/// device are stale (the device is this attachment's now) and removed.
/// True when the table was created now (the caller's undo).
pub fn ensure(k: &mut dyn Kernel, want: &Backstop) -> anyhow::Result<bool> {
    let existing = find_table(k, &want.table)?;
    let replacing = match &existing {
        None => None,
        Some(t) if t.owner.as_deref() != Some(want.owner.as_str()) => {
            return Err(CniError::new(
                Code::Kernel,
                format!("nft table {} belongs to someone else", t.name),
            )
            .with_details(format!("its comment is {:?}", t.owner))
            .into());
        }
        Some(t) => {
            let now = k
                .observe_backstop(&t.name)
                .cni_with(Code::Kernel, || format!("reading nft table {}", t.name))?;
            match now.difference(want) {
                None => return Ok(false),
                Some(d) => {
                    log_info!("replacing the backstop: {d}");
                    Some(t.handle)
                }
            }
        }
    };
    k.install_backstop(want, replacing)
        .cni_with(Code::Kernel, || {
            format!("installing the backstop on {}", want.device)
        })?;
    log_info!(
        "backstop: nft table netdev {} on {}",
        want.table,
        want.device
    );
    Ok(existing.is_none())
}

/// Tables of other attachments whose base chain hooks `device` are stale:
/// the device is this attachment's now (newer kernels keep a device's base
/// chain after it goes and re-attach it to a new device of the same name;
/// the VPC CNI names host veths after the pod). Run on every ADD, with or
/// without a backstop of its own. Tables not marked as an attachment's are
/// never touched.
pub fn sweep_stale_on_device(k: &mut dyn Kernel, device: &str, ours: &str) -> anyhow::Result<()> {
    let hooking = k
        .tables_hooking(device)
        .cni_with(Code::Kernel, || format!("listing nft chains on {device}"))?;
    for name in hooking.into_iter().filter(|n| n != ours) {
        let table = find_table(k, &name)?;
        // Only a table marked as a bandwidth attachment's is ours to judge.
        if let Some(t) = table.filter(|t| {
            t.owner
                .as_deref()
                .and_then(crate::devices::parse_ifb_alias)
                .is_some()
        }) {
            log_warn!(
                "removing stale backstop {} of {:?}: {} is this attachment's now",
                t.name,
                t.owner,
                device
            );
            k.delete_table(&t)
                .cni_with(Code::Kernel, || format!("deleting nft table {}", t.name))?;
        }
    }
    Ok(())
}

/// CHECK: the table is there, ours, hooked on the host veth, and holds
/// exactly the wanted rules, limits and counters.
pub fn verify(k: &mut dyn Kernel, want: &Backstop) -> anyhow::Result<Option<String>> {
    let Some(t) = find_table(k, &want.table)? else {
        return Ok(Some(format!(
            "the backstop (nft table netdev {}) is missing",
            want.table
        )));
    };
    if t.owner.as_deref() != Some(want.owner.as_str()) {
        return Ok(Some(format!(
            "nft table {} is not this attachment's ({:?})",
            t.name, t.owner
        )));
    }
    let now = k
        .observe_backstop(&t.name)
        .cni_with(Code::Kernel, || format!("reading nft table {}", t.name))?;
    Ok(now.difference(want))
}

/// Deletes the table `name` if it is `who`'s; another's is left alone.
/// Fine when it is gone (or nf_tables is not there at all).
pub fn remove(k: &mut dyn Kernel, name: &str, who: &Attachment<'_>) -> anyhow::Result<()> {
    match find_table(k, name)? {
        Some(t) => remove_if_owned(k, &t, who),
        None => Ok(()),
    }
}

fn remove_if_owned(k: &mut dyn Kernel, t: &Table, who: &Attachment<'_>) -> anyhow::Result<()> {
    if t.owner.as_deref() != Some(who.alias().as_str()) {
        log_info!(
            "leaving nft table {}: it is not this attachment's ({:?})",
            t.name,
            t.owner
        );
        return Ok(());
    }
    k.delete_table(t)
        .cni_with(Code::Kernel, || format!("deleting nft table {}", t.name))?;
    log_info!("deleted nft table {}", t.name);
    Ok(())
}

/// GC: our tables for `network` whose attachment is not in `valid`.
pub fn stale_tables(
    k: &mut dyn Kernel,
    network: &str,
    valid: &dyn Fn(&str, &str) -> bool,
) -> anyhow::Result<Vec<(Table, String, String)>> {
    let tables = k
        .backstop_tables()
        .cni(Code::Kernel, "listing nft tables")?;
    Ok(tables
        .into_iter()
        .filter_map(|t| {
            let (net, cid, ifname) = t
                .owner
                .as_deref()
                .and_then(crate::devices::parse_ifb_alias)?;
            (net == network && !valid(cid, ifname))
                .then(|| (t.clone(), cid.to_string(), ifname.to_string()))
        })
        .collect())
}

/// GC's removal of one stale table (judged by [`stale_tables`]).
pub fn remove_stale(k: &mut dyn Kernel, t: &Table, who: &Attachment<'_>) -> anyhow::Result<()> {
    remove_if_owned(k, t, who)
}
