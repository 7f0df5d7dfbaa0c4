//! Link (interface) queries and changes.

use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
    nsid::{NsidAttribute, NsidMessage},
};

/// `RTM_NEWLINK`: a link's description, in dumps and GET answers.
const RTM_NEWLINK: u16 = 16;
/// `RTM_NEWNSID`: the answer to `RTM_GETNSID`.
const RTM_NEWNSID: u16 = 88;
/// `sizeof(struct ifinfomsg)`: family, pad, type, index, flags, change.
const IFINFOMSG_LEN: usize = 16;
/// `IFF_UP` in `ifinfomsg.ifi_flags`.
const IFF_UP: u32 = 1;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_TXQLEN: u16 = 13;
const IFLA_LINKINFO: u16 = 18;
const IFLA_STATS64: u16 = 23;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_MIN_MTU: u16 = 50;
const IFLA_MAX_MTU: u16 = 51;
/// `IFLA_INFO_KIND`, nested in `IFLA_LINKINFO`.
const IFLA_INFO_KIND: u16 = 1;
/// `struct rtgenmsg` (one byte, the family), padded to 4, before an nsid
/// message's attributes.
const RTGENMSG_LEN: usize = 4;
/// `NETNSA_NSID`: the id (i32, -1 when none is assigned).
const NETNSA_NSID: u16 = 1;

use crate::{Netlink, NlError, Result};

/// `IFLA_IFALIAS`, emitted raw so an empty value (which clears the alias)
/// carries no terminating NUL, exactly like iproute2 sends it.
const IFLA_IFALIAS: u16 = 20;
/// Kernel limit for interface names including the NUL (`IFNAMSIZ`).
const IFNAMSIZ: usize = 16;
/// txqueuelen of the ifbs we create (the kernel default for an ifb is 32).
pub const IFB_TXQUEUELEN: u32 = 1000;

/// A snapshot of one interface, with the fields the plugins decide on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Link {
    /// Interface index, the stable handle for all further requests.
    pub index: u32,
    /// Interface name (`IFLA_IFNAME`).
    pub name: String,
    /// Driver kind (`IFLA_INFO_KIND`: "veth", "ifb", ..), to recognise our own devices.
    pub kind: Option<String>,
    /// Current MTU, which shaping devices must mirror.
    pub mtu: u32,
    /// Largest MTU the driver accepts; `None` when unreported or unlimited (0).
    pub max_mtu: Option<u32>,
    /// Smallest MTU the driver accepts; `None` when unreported or 0.
    pub min_mtu: Option<u32>,
    /// Transmit queue length (`IFLA_TXQLEN`).
    pub txqlen: u32,
    /// Free-form alias (`IFLA_IFALIAS`), used to tag devices we own.
    pub alias: Option<String>,
    /// `IFLA_LINK`: for a veth, the peer's ifindex (in the peer's netns).
    pub peer_index: Option<u32>,
    /// `IFLA_LINK_NETNSID`: set when the peer lives in another netns.
    pub link_netnsid: Option<i32>,
    /// Whether `IFF_UP` is set (administratively up).
    pub up: bool,
    /// Hardware address when it is an Ethernet-style 6-byte MAC.
    pub mac: Option<[u8; 6]>,
}

/// What [`crate::Netlink::change_link`] changes; `None` leaves it as is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkChange<'a> {
    /// A new name (the link must already be down).
    pub name: Option<&'a str>,
    /// A new alias.
    pub alias: Option<&'a str>,
    /// A new MTU.
    pub mtu: Option<u32>,
    /// Up (`true`) or down (`false`), applied after everything else.
    pub up: Option<bool>,
}

/// One interface's traffic counters (`IFLA_STATS64`), for the operator's
/// view. On a pod's host veth, tx is what went into the pod and rx what
/// came out of it; a GSO super-packet counts once, with one set of headers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkCounters {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Bytes received (for a host veth: out of the pod).
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes sent (for a host veth: into the pod).
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
}

impl LinkCounters {
    /// From an RTM_NEWLINK payload, unparsed but for the two attributes it
    /// needs (a dump of a big node is mostly other attributes).
    fn from_raw(payload: &[u8]) -> Option<LinkCounters> {
        let mut c = LinkCounters {
            index: crate::read_u32(payload, 4)?,
            ..Default::default()
        };
        for (ty, p) in crate::raw_attrs(payload.get(IFINFOMSG_LEN..)?) {
            match ty {
                IFLA_IFNAME => c.name = crate::c_string(p),
                // struct rtnl_link_stats64: rx_packets, tx_packets,
                // rx_bytes, tx_bytes, ...
                IFLA_STATS64 => {
                    c.rx_packets = crate::read_u64(p, 0)?;
                    c.tx_packets = crate::read_u64(p, 8)?;
                    c.rx_bytes = crate::read_u64(p, 16)?;
                    c.tx_bytes = crate::read_u64(p, 24)?;
                }
                _ => {}
            }
        }
        Some(c)
    }
}

impl Link {
    /// From an RTM_NEWLINK payload (`ifinfomsg` and its attributes), by
    /// hand: only the attributes a [`Link`] holds are decoded. `None` when
    /// the message is cut short or one of those attributes is malformed.
    pub(crate) fn from_raw(payload: &[u8]) -> Option<Link> {
        let mut link = Link {
            index: crate::read_u32(payload, 4)?,
            up: crate::read_u32(payload, 8)? & IFF_UP != 0,
            ..Default::default()
        };
        for (ty, p) in crate::attrs(payload.get(IFINFOMSG_LEN..)?)? {
            match ty {
                IFLA_IFNAME => link.name = crate::c_string(p),
                IFLA_MTU => link.mtu = crate::read_u32(p, 0)?,
                // 0 is the kernel's "no limit" (e.g. ifb).
                IFLA_MAX_MTU => link.max_mtu = Some(crate::read_u32(p, 0)?).filter(|m| *m != 0),
                IFLA_MIN_MTU => link.min_mtu = Some(crate::read_u32(p, 0)?).filter(|m| *m != 0),
                IFLA_TXQLEN => link.txqlen = crate::read_u32(p, 0)?,
                IFLA_IFALIAS => link.alias = Some(crate::c_string(p)).filter(|a| !a.is_empty()),
                IFLA_LINK => link.peer_index = Some(crate::read_u32(p, 0)?),
                IFLA_LINK_NETNSID => link.link_netnsid = Some(crate::read_i32(p, 0)?),
                // Only a 6-byte address is an Ethernet-style MAC; others
                // (a tunnel's IP address) leave it unset.
                IFLA_ADDRESS => link.mac = <[u8; 6]>::try_from(p).ok(),
                IFLA_LINKINFO => {
                    if let Some(kind) = info_kind(p)? {
                        link.kind = Some(kind);
                    }
                }
                _ => {}
            }
        }
        Some(link)
    }
}

/// `IFLA_INFO_KIND` among an `IFLA_LINKINFO`'s nested attributes:
/// `Some(None)` when it has none, `None` when they are malformed.
fn info_kind(linkinfo: &[u8]) -> Option<Option<String>> {
    Some(
        crate::attrs(linkinfo)?
            .find(|(ty, _)| *ty == IFLA_INFO_KIND)
            .map(|(_, p)| crate::c_string(p)),
    )
}

/// The id in an RTM_NEWNSID payload (`rtgenmsg`, then `NETNSA_*`):
/// `Some(None)` when it carries none, `None` when it is malformed.
pub(crate) fn nsid_from_raw(payload: &[u8]) -> Option<Option<i32>> {
    for (ty, p) in crate::attrs(payload.get(RTGENMSG_LEN..)?)? {
        if ty == NETNSA_NSID {
            return Some(Some(crate::read_i32(p, 0)?));
        }
    }
    Some(None)
}

fn link_msg(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg
}

impl Netlink {
    /// Lists every interface of the socket's netns.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        self.dump_parsed(
            "dump links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            RTM_NEWLINK,
            Link::from_raw,
        )
    }

    /// Every interface's counters, in one dump.
    pub fn link_counters(&mut self) -> Result<Vec<LinkCounters>> {
        let mut out = Vec::new();
        self.dump_each(
            "dump link counters",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            &mut |msg| match msg {
                Some((RTM_NEWLINK, p)) => out.extend(LinkCounters::from_raw(p)),
                Some(_) => {}
                None => out.clear(),
            },
        )?;
        Ok(out)
    }

    /// Looks an interface up by name; `None` lets callers treat absence as a
    /// normal state rather than an error.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        // No interface can carry such a name; the kernel would say EINVAL.
        if name.is_empty() || name.len() >= IFNAMSIZ {
            return Ok(None);
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(&format!("get link {name}"), msg)
    }

    /// Looks an interface up by index; `None` when it is gone.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        if index == 0 {
            return Ok(None);
        }
        self.get_link(&format!("get link #{index}"), link_msg(index))
    }

    /// The veth peer, in this socket's netns, of `cont` (a veth read in
    /// another netns). The peer must point back at `cont`: an ifindex alone
    /// could name an unrelated link when the peer lives elsewhere.
    pub fn veth_peer_of(&mut self, cont: &Link) -> Result<Option<Link>> {
        if cont.kind.as_deref() != Some("veth") {
            return Ok(None);
        }
        let Some(peer) = cont.peer_index else {
            return Ok(None);
        };
        Ok(self
            .link_by_index(peer)?
            .filter(|l| l.kind.as_deref() == Some("veth") && l.peer_index == Some(cont.index)))
    }

    /// The veth peer, in this socket's netns, of `cont` read inside the pod
    /// netns open at `pod_netns`. An ifindex is only unique per namespace,
    /// so the candidate must be a veth, point back at `cont`'s index, and
    /// have its peer in exactly that namespace (its link-netnsid is the id
    /// this namespace gives the pod's). Anything else is not the pod's peer.
    pub fn veth_peer_in(&mut self, cont: &Link, pod_netns: BorrowedFd<'_>) -> Result<Option<Link>> {
        let Some(candidate) = self.veth_peer_of(cont)? else {
            return Ok(None);
        };
        let pod_nsid = self.nsid_of(pod_netns)?;
        Ok((pod_nsid.is_some() && candidate.link_netnsid == pod_nsid).then_some(candidate))
    }

    /// The id this socket's netns has assigned to the namespace open at
    /// `fd` (`RTM_GETNSID`); `None` when it has none.
    pub fn nsid_of(&mut self, fd: BorrowedFd<'_>) -> Result<Option<i32>> {
        let mut msg = NsidMessage::default();
        msg.attributes
            .push(NsidAttribute::Fd(fd.as_raw_fd() as u32));
        let ids = self.request_parsed(
            "get nsid",
            RouteNetlinkMessage::GetNsId(msg),
            0,
            RTM_NEWNSID,
            nsid_from_raw,
        )?;
        // NETNSA_NSID_NOT_ASSIGNED (-1): the namespace has no id here.
        Ok(ids.into_iter().flatten().find(|id| *id >= 0))
    }

    fn get_link(&mut self, op: &str, msg: LinkMessage) -> Result<Option<Link>> {
        let asked = self.request_parsed(
            op,
            RouteNetlinkMessage::GetLink(msg),
            0,
            RTM_NEWLINK,
            Link::from_raw,
        );
        match asked {
            Ok(links) => Ok(links.into_iter().next()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates an ifb device (exclusively, so a name clash is reported as
    /// `EEXIST`), marks it and returns it, down. A half-configured device
    /// is removed again on failure.
    pub fn create_ifb(&mut self, name: &str, mtu: u32, alias: Option<&str>) -> Result<Link> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        // The kernel gives an ifb 32; a qdisc whose queue defaults to the
        // txqueuelen (pfifo under an htb class, htb's direct queue) would
        // drop at 32 packets. Our qdiscs set their limits explicitly; this
        // keeps anything else someone adds sane.
        msg.attributes
            .push(LinkAttribute::TxQueueLen(IFB_TXQUEUELEN));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Ifb)]));
        let op = format!("create ifb {name}");
        self.request(
            &op,
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        let err = match self.finish_ifb(&op, name, alias) {
            Ok(link) => return Ok(link),
            Err(e) => e,
        };
        // The name is ours (created with EXCL): remove the half-set-up device.
        if let Ok(Some(link)) = self.link_by_name(name) {
            let _ = self.delete_link(link.index);
        }
        Err(err)
    }

    /// Marks the new ifb and leaves it down: its root qdisc is set before
    /// it carries traffic, without the grace period a root change on a
    /// running device waits for.
    fn finish_ifb(&mut self, op: &str, name: &str, alias: Option<&str>) -> Result<Link> {
        let link = self
            .link_by_name(name)?
            .ok_or_else(|| NlError::protocol(op, "created link not found"))?;
        if let Some(alias) = alias {
            self.set_alias(link.index, alias)?;
        }
        Ok(Link {
            alias: alias.map(str::to_string),
            ..link
        })
    }

    /// Creates a veth pair with both ends in the current netns, for tests
    /// and simulators that need a realistic pod interface.
    #[cfg(any(test, feature = "testing"))]
    pub fn create_veth(&mut self, name: &str, peer: &str) -> Result<()> {
        use netlink_packet_route::link::{InfoData, InfoVeth};
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer.to_string()));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.request(
            &format!("create veth {name}/{peer}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    /// Moves an interface into the netns referred to by `fd` (e.g. one end of
    /// a veth into a pod).
    #[cfg(any(test, feature = "testing"))]
    pub fn move_link_to_netns_fd(&mut self, index: u32, fd: BorrowedFd<'_>) -> Result<()> {
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::NetNsFd(fd.as_raw_fd()));
        self.set_link(&format!("move link #{index} to netns"), msg)
    }

    /// Deletes an interface; `Ok(false)` when it was already gone, so CNI DEL
    /// stays idempotent.
    pub fn delete_link(&mut self, index: u32) -> Result<bool> {
        self.request_delete(
            &format!("delete link #{index}"),
            RouteNetlinkMessage::DelLink(link_msg(index)),
            0,
        )
    }

    /// Raises an interface (sets `IFF_UP` only, other flags untouched).
    pub fn set_up(&mut self, index: u32) -> Result<()> {
        let up = LinkChange {
            up: Some(true),
            ..Default::default()
        };
        self.apply_change(&format!("set link #{index} up"), index, &up)
    }

    /// Sets the alias used to tag devices; an empty string clears it.
    pub fn set_alias(&mut self, index: u32, alias: &str) -> Result<()> {
        let alias = LinkChange {
            alias: Some(alias),
            ..Default::default()
        };
        self.apply_change(&format!("set alias of link #{index}"), index, &alias)
    }

    /// Sets the MTU (e.g. to mirror the shaped interface on its ifb).
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        let change = LinkChange {
            mtu: Some(mtu),
            ..Default::default()
        };
        self.apply_change(&format!("set mtu {mtu} on link #{index}"), index, &change)
    }

    /// Changes a link's name, alias, MTU and up/down state in one
    /// RTM_SETLINK. The kernel applies them in that order, all under the
    /// rtnl lock, so no other netlink user sees a half-changed link. A
    /// rename needs the link down when the request starts (EBUSY
    /// otherwise): bring it down with a change of its own first.
    pub fn change_link(&mut self, index: u32, change: &LinkChange<'_>) -> Result<()> {
        self.apply_change(&format!("change link #{index} ({change:?})"), index, change)
    }

    /// The one RTM_SETLINK every change above sends, `op` naming it in errors.
    fn apply_change(&mut self, op: &str, index: u32, change: &LinkChange<'_>) -> Result<()> {
        let mut msg = link_msg(index);
        if let Some(name) = change.name {
            msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        }
        if let Some(alias) = change.alias {
            msg.attributes.push(LinkAttribute::Other(DefaultNla::new(
                IFLA_IFALIAS,
                alias.as_bytes().to_vec(),
            )));
        }
        if let Some(mtu) = change.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(up) = change.up {
            msg.header.flags = if up {
                LinkFlags::Up
            } else {
                LinkFlags::empty()
            };
            msg.header.change_mask = LinkFlags::Up;
        }
        self.set_link(op, msg)
    }

    /// Sets the transmit queue length.
    pub fn set_txqlen(&mut self, index: u32, qlen: u32) -> Result<()> {
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::TxQueueLen(qlen));
        self.set_link(&format!("set txqlen {qlen} on link #{index}"), msg)
    }

    /// Renames an interface (the kernel requires it to be down).
    #[cfg(any(test, feature = "testing"))]
    pub fn set_name(&mut self, index: u32, name: &str) -> Result<()> {
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.set_link(&format!("rename link #{index} to {name}"), msg)
    }

    /// Returns the interface's MAC, for callers that need only that.
    #[cfg(any(test, feature = "testing"))]
    pub fn link_mac(&mut self, index: u32) -> Result<Option<[u8; 6]>> {
        Ok(self.link_by_index(index)?.and_then(|l| l.mac))
    }

    fn set_link(&mut self, op: &str, msg: LinkMessage) -> Result<()> {
        self.request(op, RouteNetlinkMessage::SetLink(msg), 0)?;
        Ok(())
    }
}

/// Turns IPv6 off on the link `name` of the calling thread's network
/// namespace (`/proc/sys/net/ipv6/conf/<name>/disable_ipv6`, which reads
/// and writes the opener's namespace).
pub(crate) fn disable_ipv6(name: &str) -> Result<()> {
    use std::io::Write as _;
    // A link name is an interface name: the path cannot leave conf/.
    if cni_types::env::validate_ifname(name).is_err() {
        return Err(NlError::invalid_input(format!(
            "{name:?} is not a link name"
        )));
    }
    let path = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(b"1"))
        .map_err(NlError::Io)
}

#[cfg(test)]
mod tests {
    use crate::testutil::private_netns;

    #[test]
    fn ifb_create_read_back_delete_twice() {
        let Some(mut nl) = private_netns() else {
            return;
        };
        let link = nl
            .create_ifb("ifbtest0", 1400, Some("owned-by-test"))
            .unwrap();
        assert_eq!(link.name, "ifbtest0");
        assert_eq!(link.kind.as_deref(), Some("ifb"));
        assert_eq!(link.mtu, 1400);
        assert_eq!(link.alias.as_deref(), Some("owned-by-test"));
        assert!(
            !link.up,
            "made down: its root is set before it carries traffic"
        );
        assert!(link.mac.is_some());
        assert_eq!(link.max_mtu, None);

        let again = nl.create_ifb("ifbtest0", 1400, None).unwrap_err();
        assert!(again.is_exists(), "{again}");

        let by_name = nl.link_by_name("ifbtest0").unwrap().unwrap();
        assert_eq!(by_name, link);
        assert!(nl.links().unwrap().iter().any(|l| l.index == link.index));

        nl.set_alias(link.index, "").unwrap();
        nl.set_mtu(link.index, 1300).unwrap();
        nl.set_txqlen(link.index, 77).unwrap();
        let l = nl.link_by_index(link.index).unwrap().unwrap();
        assert_eq!(l.alias, None);
        assert_eq!(l.mtu, 1300);
        assert_eq!(l.txqlen, 77);

        assert!(nl.delete_link(link.index).unwrap());
        assert!(!nl.delete_link(link.index).unwrap());
        assert_eq!(nl.link_by_name("ifbtest0").unwrap(), None);
        assert_eq!(nl.link_by_index(link.index).unwrap(), None);
        assert_eq!(
            nl.link_by_name("a-name-that-is-far-too-long").unwrap(),
            None
        );
    }

    #[test]
    fn ifb_failed_setup_leaves_nothing_behind() {
        let Some(mut nl) = private_netns() else {
            return;
        };
        // The kernel caps aliases at 255 bytes: fails after the link exists.
        let alias = "x".repeat(300);
        let err = nl.create_ifb("ifbbad", 1500, Some(&alias)).unwrap_err();
        assert_eq!(err.errno(), Some(nix::libc::ERANGE), "{err}");
        assert!(err.to_string().contains("policy"), "{err}");
        assert_eq!(nl.link_by_name("ifbbad").unwrap(), None);
    }

    #[test]
    fn veth_peer_index_and_rename() {
        let Some(mut nl) = private_netns() else {
            return;
        };
        nl.create_veth("vtest0", "vtest1").unwrap();
        let a = nl.link_by_name("vtest0").unwrap().unwrap();
        let b = nl.link_by_name("vtest1").unwrap().unwrap();
        assert_eq!(a.kind.as_deref(), Some("veth"));
        assert_eq!(a.peer_index, Some(b.index));
        assert_eq!(b.peer_index, Some(a.index));
        assert_eq!(a.link_netnsid, None);
        assert_eq!(a.min_mtu, Some(68));
        assert!(a.max_mtu.is_some());
        assert!(!a.up);
        assert_eq!(nl.link_mac(a.index).unwrap(), a.mac);

        nl.set_name(b.index, "vtest9").unwrap();
        assert_eq!(nl.link_by_index(b.index).unwrap().unwrap().name, "vtest9");
        nl.set_up(a.index).unwrap();
        assert!(nl.link_by_index(a.index).unwrap().unwrap().up);
    }
}
