//! Addresses, routes and neighbours: just enough for a test "main" plugin to
//! wire up a pod interface.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage, AddressScope},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    },
};

use crate::{Netlink, NlError, Result};

fn family(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn check_prefix(ip: &IpAddr, prefix_len: u8) -> Result<()> {
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix_len > max {
        return Err(NlError::invalid_input(format!(
            "prefix length {prefix_len} too long for {ip}"
        )));
    }
    Ok(())
}

impl Netlink {
    /// Assigns an address to an interface; replacing makes a retried ADD
    /// succeed.
    pub fn add_address(&mut self, index: u32, addr: IpAddr, prefix_len: u8) -> Result<()> {
        check_prefix(&addr, prefix_len)?;
        let mut msg = AddressMessage::default();
        msg.header.family = family(&addr);
        msg.header.prefix_len = prefix_len;
        msg.header.index = index;
        msg.header.scope = AddressScope::Universe;
        msg.attributes.push(AddressAttribute::Local(addr));
        msg.attributes.push(AddressAttribute::Address(addr));
        self.request(
            &format!("add address {addr}/{prefix_len} to link #{index}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )?;
        Ok(())
    }

    /// Adds (or replaces, so it is idempotent) a route in the main table.
    pub fn add_route(
        &mut self,
        dst: IpAddr,
        prefix_len: u8,
        gateway: Option<IpAddr>,
        oif: Option<u32>,
        scope_link: bool,
    ) -> Result<()> {
        check_prefix(&dst, prefix_len)?;
        if let Some(gw) = gateway.filter(|gw| gw.is_ipv4() != dst.is_ipv4()) {
            return Err(NlError::invalid_input(format!(
                "gateway {gw} and destination {dst} differ in family"
            )));
        }
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(&dst);
        msg.header.destination_prefix_length = prefix_len;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = if scope_link {
            RouteScope::Link
        } else {
            RouteScope::Universe
        };
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        if let Some(gw) = gateway {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        if let Some(oif) = oif {
            msg.attributes.push(RouteAttribute::Oif(oif));
        }
        self.request(
            &format!("add route {dst}/{prefix_len}"),
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )?;
        Ok(())
    }

    /// Adds (or replaces) a permanent neighbour entry, so a simulated pod can
    /// reach its gateway without ARP/ND.
    pub fn add_permanent_neighbour(&mut self, index: u32, ip: IpAddr, mac: [u8; 6]) -> Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family(&ip);
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Permanent;
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::from(ip)));
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        self.request(
            &format!("add neighbour {ip} on link #{index}"),
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use crate::testutil::private_netns;

    #[test]
    fn address_route_neighbour() {
        let Some(mut nl) = private_netns() else {
            return;
        };
        nl.create_veth("atest0", "atest1").unwrap();
        let a = nl.link_by_name("atest0").unwrap().unwrap();
        let b = nl.link_by_name("atest1").unwrap().unwrap();
        nl.set_up(a.index).unwrap();
        nl.set_up(b.index).unwrap();
        let ip: IpAddr = Ipv4Addr::new(10, 9, 0, 2).into();
        let gw: IpAddr = Ipv4Addr::new(10, 9, 0, 1).into();
        nl.add_address(a.index, ip, 24).unwrap();
        nl.add_address(a.index, ip, 24).unwrap();
        nl.add_address(a.index, "fd00::2".parse().unwrap(), 64)
            .unwrap();
        nl.add_route(gw, 32, None, Some(a.index), true).unwrap();
        nl.add_route(
            Ipv4Addr::UNSPECIFIED.into(),
            0,
            Some(gw),
            Some(a.index),
            false,
        )
        .unwrap();
        nl.add_route(
            Ipv4Addr::UNSPECIFIED.into(),
            0,
            Some(gw),
            Some(a.index),
            false,
        )
        .unwrap();
        nl.add_permanent_neighbour(a.index, gw, [0x02, 0, 0, 0, 0, 1])
            .unwrap();
        nl.add_permanent_neighbour(a.index, gw, [0x02, 0, 0, 0, 0, 1])
            .unwrap();
        let err = nl
            .add_route(Ipv6Addr::UNSPECIFIED.into(), 0, Some(gw), None, false)
            .unwrap_err();
        assert!(err.to_string().contains("family"), "{err}");
        assert!(nl.add_address(a.index, ip, 33).is_err());
    }
}
