//! The pod's host-side veth, found one way for every plugin.
//!
//! Policy (both plugins): the host side is the container interface's veth
//! peer, matched by ifindex *and* by the namespace it pairs with (an index
//! alone can name another pod's veth); and when a `prevResult` lists
//! host-side interfaces, the peer must be one of them (the main plugin says
//! which host interface is this pod's). Anything else is code 102, before
//! any change. A container interface that has no host side (not a veth, or
//! its peer in its own namespace) is reported as such: the caller decides
//! whether it can work without one.

use crate::{Link, Netlink};
use cni_types::error::{CniError, Code, ResultExt};
use cni_types::result::CniResult;
use std::os::fd::AsFd;
use std::path::Path;

/// What the container interface pairs with on the node.
#[derive(Debug)]
pub enum HostSide {
    /// The pod's host veth.
    Veth(Link),
    /// The container interface is not a veth (its kind, if known).
    NotAVeth(Option<String>),
    /// A veth whose peer is in the pod's own namespace.
    PeerInPod,
}

impl HostSide {
    /// Why there is no host side, for logs and errors.
    pub fn why_none(&self, ifname: &str) -> String {
        match self {
            HostSide::Veth(l) => format!("{ifname} pairs with {}", l.name),
            HostSide::NotAVeth(kind) => format!(
                "{ifname} is a {} interface, not a veth",
                kind.as_deref().unwrap_or("unknown")
            ),
            HostSide::PeerInPod => {
                format!("the veth peer of {ifname} is in the pod's own namespace")
            }
        }
    }
}

/// The host side of `cont`, read inside the pod netns at `pod_netns`; `nl`
/// is a socket in the node's namespace.
pub fn host_side(
    nl: &mut Netlink,
    cont: &Link,
    pod_netns: &Path,
    prev: Option<&CniResult>,
) -> anyhow::Result<HostSide> {
    if cont.kind.as_deref() != Some("veth") {
        return Ok(HostSide::NotAVeth(cont.kind.clone()));
    }
    if cont.link_netnsid.is_none() {
        return Ok(HostSide::PeerInPod);
    }
    let pod_fd = cni_types::fsutil::open_nonblocking(pod_netns)
        .cni_with(Code::InvalidEnv, || {
            format!("cannot open {}", pod_netns.display())
        })?;
    let host = nl
        .veth_peer_in(cont, pod_fd.as_fd())
        .cni(Code::Kernel, "cannot look up the host veth")?
        .ok_or_else(|| {
            CniError::new(
                Code::InterfaceNotFound,
                format!("host side of {} not found", cont.name),
            )
            .with_details(format!(
                "no veth in the host netns pairs with {} (peer ifindex {:?}) in {}",
                cont.name,
                cont.peer_index,
                pod_netns.display()
            ))
        })?;
    if let Some(prev) = prev {
        let listed: Vec<&str> = prev
            .interfaces()
            .iter()
            .filter(|i| i.is_host_side() && !i.name.is_empty())
            .map(|i| i.name.as_str())
            .collect();
        if !listed.is_empty() && !listed.contains(&host.name.as_str()) {
            return Err(CniError::new(
                Code::InterfaceNotFound,
                format!("host veth {} is not in prevResult", host.name),
            )
            .with_details(format!(
                "the peer of {} is {}, prevResult lists host interfaces [{}]",
                cont.name,
                host.name,
                listed.join(", ")
            ))
            .into());
        }
    }
    Ok(HostSide::Veth(host))
}
