//! Zone facts as typed CIDRs, and the rules a CIDR must meet to be one:
//! how wide it may be, and how many a node's zone facts may hold. Shared by
//! [`crate::imds`] (checked before an answer is cached) and `bandwidth`'s
//! zone classes (checked on `zoneCidrs` and `zoneCidrsFile`).

use crate::Invalid;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Most CIDRs one attachment may classify peers by, over all its classes:
/// each is a u32 filter per direction, tried in order for every packet, so
/// the list stays short enough to cost nothing measurable (BENCHMARKS.md).
/// `bandwidth` enforces it on every list; IMDS's zone facts are held to it
/// before they are cached, so an answer the plugin could never use is a
/// failed fetch, not a cached fact.
pub const MAX_PEER_CIDRS: usize = 64;

/// The shortest prefix a zone fact may have, per family. A zone is at most
/// one private network, and the widest private ranges are /8s: 10.0.0.0/8
/// in IPv4, and in IPv6 the ULA range fd00::/8 that sites carve their /48s
/// from. A wider prefix necessarily takes in public address space, at the
/// extreme the whole internet (0.0.0.0/0, ::/0), which as `sameZone` would
/// make every peer "same zone": exempt or uncounted, whatever the operator
/// meant. Real answers are far narrower (AWS VPC blocks are /16../28 and
/// /44../60, subnets at most that), so /8 refuses nothing real.
pub const MIN_ZONE_PREFIX_V4: u8 = 8;
pub const MIN_ZONE_PREFIX_V6: u8 = 8;

/// One CIDR: an address and a prefix length that fits its family. Parsed
/// from, and written as, `addr/len` (both parts required).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Cidr, Invalid> {
        let bad = |why: &str| {
            Invalid(format!(
                "{} is not a CIDR ({why})",
                cni_types::error::excerpt(s)
            ))
        };
        let (addr, len) = s.split_once('/').ok_or_else(|| bad("no /prefix"))?;
        let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the prefix is not a number"));
        }
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = len
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| bad(&format!("the prefix is over {max}")))?;
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: Invalid| serde::de::Error::custom(e.0))
    }
}

/// Refuses a prefix too wide to be a zone fact (see [`MIN_ZONE_PREFIX_V4`]).
pub fn check_zone_prefix(addr: IpAddr, prefix: u8) -> Result<(), Invalid> {
    let min = if addr.is_ipv4() {
        MIN_ZONE_PREFIX_V4
    } else {
        MIN_ZONE_PREFIX_V6
    };
    if prefix < min {
        return Err(Invalid(format!(
            "{addr}/{prefix} is too wide for a zone (the shortest prefix a zone may have is /{min}): it would put a large part of the internet, or all of it, in one zone"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Result<Cidr, Invalid> {
        s.parse()
    }

    #[test]
    fn cidrs_parse_strictly() {
        for good in [
            "10.1.0.0/16",
            "0.0.0.0/0",
            "fd0a::/32",
            "::/0",
            "10.0.0.1/32",
        ] {
            let c = cidr(good).unwrap();
            assert_eq!(c.to_string(), good);
        }
        for bad in [
            "10.1.0.0/33",
            "fd00::/129",
            "10.1.0.0",
            "10.1.0.0/",
            "10.1.0.0/-1",
            "10.1.0.0/+8",
            "10.1.0.0/0016",
            "10.1.0.0/1a",
            "10.1.0/16",
            "10.1.0.0.0/16",
            "10.1.0.256/16",
            "fd00:::1/64",
            "/16",
            "",
            "10.1.0.0/16/8",
        ] {
            assert!(cidr(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn serde_round_trip_and_refusal() {
        let c = cidr("fd0a::/32").unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, "\"fd0a::/32\"");
        assert_eq!(serde_json::from_str::<Cidr>(&json).unwrap(), c);
        assert!(serde_json::from_str::<Cidr>("\"10.1.0.0/33\"").is_err());
        assert!(serde_json::from_str::<Cidr>("16").is_err());
    }

    #[test]
    fn over_wide_zone_prefixes_are_refused() {
        for wide in [
            "0.0.0.0/0",
            "::/0",
            "0.0.0.0/1",
            "8.0.0.0/7",
            "fc00::/7",
            "2000::/3",
        ] {
            let c = cidr(wide).unwrap();
            let e = check_zone_prefix(c.addr, c.prefix).unwrap_err();
            assert!(e.0.contains("too wide"), "{wide}: {e}");
        }
        for fine in [
            "10.0.0.0/8",
            "fd00::/8",
            "10.1.0.0/16",
            "fd0a::/32",
            "10.1.2.3/32",
        ] {
            let c = cidr(fine).unwrap();
            assert_eq!(check_zone_prefix(c.addr, c.prefix), Ok(()), "{fine}");
        }
    }
}
