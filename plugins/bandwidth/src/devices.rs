//! Finding the pod's host-side veth, and naming and recognising our ifbs.

use anyhow::Context as _;
use cni_netlink::host_veth::{self, HostSide};
use cni_netlink::{Link, Netlink, netns};
use cni_types::error::{CniError, Code};
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

/// How many alternative names an attachment tries when the reference name
/// is taken by another attachment (a second interface of the same pod on
/// the same network, or a `network + id` concatenation that collides).
pub const IFB_ALTERNATIVES: u32 = 8;

/// The ifb names one attachment may use, in order: the reference name
/// first (drop-in layout, and adoption after an upgrade), then names
/// derived from the whole identity with separators, so they are distinct
/// for distinct attachments and the same on every retry.
pub fn ifb_candidates(network: &str, container_id: &str, ifname: &str) -> Vec<String> {
    let mut names = vec![ifb_name(network, container_id)];
    for n in 1..=IFB_ALTERNATIVES {
        let mut h = Sha512::new();
        for part in [network, container_id, ifname] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        h.update(n.to_be_bytes());
        let hex: String = h
            .finalize()
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect();
        names.push(format!("bwp{hex}"));
    }
    names
}

const ALIAS_TAG: &str = "cni-bandwidth";
/// The kernel keeps at most 255 bytes of an interface alias (IFALIASZ - 1).
pub const MAX_ALIAS_BYTES: usize = 255;

/// Ownership mark written as the ifb's alias: ADD adopts, DEL deletes and
/// GC collects only ifbs whose alias names the attachment, never by
/// guessing from the device name.
pub fn ifb_alias(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{ALIAS_TAG} net={network} id={container_id} if={ifname}")
}

/// Who an existing ifb (or other link) of a candidate name belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfbOwner {
    /// Its alias names this attachment.
    ThisAttachment,
    /// An ifb without an alias: made by the reference plugin (or by a
    /// process killed between creating and marking it).
    Unmarked,
    /// Another attachment's, another program's, or not an ifb at all.
    Foreign,
}

pub fn ifb_owner(link: &Link, network: &str, container_id: &str, ifname: &str) -> IfbOwner {
    if link.kind.as_deref() != Some("ifb") {
        return IfbOwner::Foreign;
    }
    match link.alias.as_deref() {
        None | Some("") => IfbOwner::Unmarked,
        Some(a) if a == ifb_alias(network, container_id, ifname) => IfbOwner::ThisAttachment,
        Some(_) => IfbOwner::Foreign,
    }
}

/// (network, container id, ifname) of an ifb we own, from its alias.
pub fn parse_ifb_alias(alias: &str) -> Option<(&str, &str, &str)> {
    let rest = alias.strip_prefix(ALIAS_TAG)?.strip_prefix(" net=")?;
    let (net, rest) = rest.rsplit_once(" id=")?;
    let (id, ifname) = rest.split_once(" if=")?;
    Some((net, id, ifname))
}

/// The host veth of the pod: the container interface's veth peer, found by
/// the one policy both plugins share ([`host_veth::host_side`]). Shaping
/// needs it: a container interface without one is code 102.
pub fn find_host_veth(
    nl: &mut Netlink,
    netns_path: &Path,
    ifname: &str,
    prev: &CniResult,
) -> anyhow::Result<Link> {
    let container = netns::rtnl_in(netns_path)?
        .link_by_name(ifname)
        .with_context(|| format!("looking up {ifname} in {}", netns_path.display()))?
        .ok_or_else(|| {
            CniError::new(
                Code::InterfaceNotFound,
                format!("container interface {ifname} not found"),
            )
            .with_details(format!("no link {ifname} in {}", netns_path.display()))
        })?;
    match host_veth::host_side(nl, &container, netns_path, Some(prev))? {
        HostSide::Veth(host) => Ok(host),
        none => {
            let msg = match none {
                HostSide::NotAVeth(_) => format!("container interface {ifname} is not a veth"),
                _ => format!("container interface {ifname} has no host veth"),
            };
            Err(CniError::new(Code::InterfaceNotFound, msg)
                .with_details(format!(
                    "{}; the host side can only be found through a veth peer",
                    none.why_none(ifname)
                ))
                .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifb_name_matches_reference() {
        // `printf %s aws-cniabc | sha512sum | cut -c1-12`, by coreutils.
        assert_eq!(ifb_name("aws-cni", "abc"), "bwpbace7da15479");
    }

    #[test]
    fn candidates_are_distinct_per_attachment_and_stable() {
        let a = ifb_candidates("advnetA", "bc1", "eth0");
        let b = ifb_candidates("advnet", "Abc1", "eth0");
        // The reference name collides by construction (no separator) ...
        assert_eq!(a[0], b[0]);
        // ... the alternatives do not, nor for a second interface.
        let c = ifb_candidates("advnetA", "bc1", "net1");
        for alt in &a[1..] {
            assert!(!b.contains(alt) && !c[1..].contains(alt), "{alt}");
            assert_eq!(alt.len(), 15);
        }
        assert_eq!(a, ifb_candidates("advnetA", "bc1", "eth0"));
        assert_eq!(a.len() as u32, IFB_ALTERNATIVES + 1);
    }

    #[test]
    fn ownership_from_alias() {
        let mut l = Link {
            kind: Some("ifb".into()),
            ..Default::default()
        };
        assert_eq!(ifb_owner(&l, "n", "c", "eth0"), IfbOwner::Unmarked);
        l.alias = Some(ifb_alias("n", "c", "eth0"));
        assert_eq!(ifb_owner(&l, "n", "c", "eth0"), IfbOwner::ThisAttachment);
        assert_eq!(ifb_owner(&l, "n", "c", "net1"), IfbOwner::Foreign);
        l.kind = Some("veth".into());
        assert_eq!(ifb_owner(&l, "n", "c", "eth0"), IfbOwner::Foreign);
    }

    #[test]
    fn alias_round_trip() {
        let a = ifb_alias("my net", "c0ffee", "eth0");
        assert_eq!(parse_ifb_alias(&a), Some(("my net", "c0ffee", "eth0")));
        assert_eq!(parse_ifb_alias("something else"), None);
    }
}
