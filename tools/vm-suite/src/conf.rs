//! The configs the cases hand the plugins, and the limits they check.
//! Software emulation pushes only ~15-60 Mbit/s of TCP, so every limit is
//! well below that.

use serde_json::{Value, json};

use crate::plugin::merged;
use crate::world::Pod;

/// The network's name, as the VPC CNI's conflist names it.
pub const NET: &str = "aws-cni";
pub const BW_STATE: &str = "/run/vmtest/bandwidth";
pub const TOPO_STATE: &str = "/run/vmtest/topology-label";

/// A pod's limit in the single-tbf layouts, each direction.
pub const RATE: u64 = 6_000_000;
/// A pod's limit under traffic classes, and the cross-zone cap inside it.
pub const POD_LIMIT: u64 = 8_000_000;
pub const CROSS_CAP: u64 = 4_000_000;
/// The namespace policy's default and max.
pub const POLICY_DEFAULT: u64 = 5_000_000;
pub const POLICY_MAX: u64 = 10_000_000;
/// containerd's burst: u32::MAX bits, its "unlimited".
pub const CONTAINERD_BURST: u64 = 4_294_967_295;

/// A bandwidth config chained after aws-cni for `pod`, plus `extra`.
pub fn bandwidth(pod: &Pod, version: &str, extra: Value) -> Value {
    merged(
        json!({
            "cniVersion": version, "name": NET, "type": "bandwidth",
            "capabilities": {"bandwidth": true},
            "stateDir": BW_STATE,
            "prevResult": pod.prev_result(version),
        }),
        extra,
    )
}

/// The pod's annotations as containerd passes them (PascalCase keys, its
/// u32::MAX burst); `None` leaves a direction out.
pub fn annotations(ingress: Option<u64>, egress: Option<u64>) -> Value {
    let mut b = json!({});
    if let Some(r) = ingress {
        b["IngressRate"] = r.into();
        b["IngressBurst"] = CONTAINERD_BURST.into();
    }
    if let Some(r) = egress {
        b["EgressRate"] = r.into();
        b["EgressBurst"] = CONTAINERD_BURST.into();
    }
    json!({"bandwidth": b})
}

/// The node's zones: same zone 10.1/16, cross zone 10.2/16, the rest
/// outside; `cross` is the cross-zone class (a cap, or `{}`).
pub fn classes(cross: Value) -> Value {
    json!({
        "zone": "us-west-2a",
        "zoneCidrs": {"us-west-2a": ["10.1.0.0/16"], "us-west-2b": ["10.2.0.0/16"]},
        "sameZone": {"shaped": false},
        "crossZone": cross,
        "outside": {}
    })
}

/// A cross-zone cap both ways.
pub fn cross_cap() -> Value {
    json!({"ingressRate": CROSS_CAP, "egressRate": CROSS_CAP})
}
