//! ADD results in every supported version.
//!
//! One in-memory shape ([`CniResult`]) reads any version and writes any
//! version. Fields a version does not define are dropped when writing it;
//! fields nobody here owns (a runtime's or another plugin's extensions) are
//! kept in `extra` and passed through untouched. Nothing is validated
//! beyond types: real prevResults carry `"mac": "254"` and `"sandbox": "0"`.

use crate::version::Version;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

type Extra = Map<String, Value>;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// 1.1.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// 1.1.0 only.
    #[serde(
        default,
        rename = "socketPath",
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    /// 1.1.0 only.
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Interface {
    /// An interface on the host side has no sandbox (empty counts as none).
    pub fn is_host_side(&self) -> bool {
        self.sandbox.as_deref().is_none_or(str::is_empty)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct IpConfig {
    /// Only in 0.x results; derived from the address when writing them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<i64>,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl IpConfig {
    fn family(&self) -> &'static str {
        if self.address.contains(':') { "6" } else { "4" }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nameservers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A result of any supported version.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(
        default,
        rename = "cniVersion",
        skip_serializing_if = "Option::is_none"
    )]
    pub cni_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<Interface>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ips: Option<Vec<IpConfig>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<Route>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl CniResult {
    pub fn from_value(v: &Value) -> Result<CniResult, serde_json::Error> {
        CniResult::deserialize(v)
    }

    pub fn interfaces(&self) -> &[Interface] {
        self.interfaces.as_deref().unwrap_or_default()
    }

    /// Appends an interface and returns its index in the list.
    pub fn push_interface(&mut self, iface: Interface) -> usize {
        let list = self.interfaces.get_or_insert_with(Vec::new);
        list.push(iface);
        list.len() - 1
    }

    /// The result written in `version`: `cniVersion` set, 0.x-only and
    /// 1.1-only fields added or dropped as that version defines them.
    pub fn to_version(&self, version: Version) -> CniResult {
        let mut out = self.clone();
        out.cni_version = Some(version.as_str().to_string());
        if let Some(ips) = out.ips.as_mut() {
            for ip in ips {
                ip.version = if version.is_legacy() {
                    Some(
                        ip.version
                            .clone()
                            .unwrap_or_else(|| ip.family().to_string()),
                    )
                } else {
                    None
                };
            }
        }
        if version < Version::V1_1_0 {
            if let Some(ifaces) = out.interfaces.as_mut() {
                for i in ifaces {
                    i.mtu = None;
                    i.socket_path = None;
                    i.pci_id = None;
                }
            }
            if let Some(routes) = out.routes.as_mut() {
                for r in routes {
                    r.mtu = None;
                    r.advmss = None;
                    r.priority = None;
                    r.table = None;
                    r.scope = None;
                }
            }
        }
        out
    }

    pub fn to_value(&self, version: Version) -> Value {
        serde_json::to_value(self.to_version(version)).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn aws() -> Value {
        json!({
          "cniVersion": "0.4.0",
          "interfaces": [
            {"name": "eni3f2a9c41b07"},
            {"name": "eth0", "mac": "254", "sandbox": "/var/run/netns/cni-5f0c2b7e"},
            {"name": "dummy3f2a9c41b07", "mac": "0", "sandbox": "0"}
          ],
          "ips": [{"version": "4", "interface": 1, "address": "192.168.12.34/32"}],
          "dns": {}
        })
    }

    #[test]
    fn aws_result_round_trips_in_040() {
        let r = CniResult::from_value(&aws()).unwrap();
        assert_eq!(r.to_value(Version::V0_4_0), aws());
    }

    #[test]
    fn aws_result_converts_to_100_and_back() {
        let r = CniResult::from_value(&aws()).unwrap();
        let v1 = r.to_value(Version::V1_0_0);
        let mut expect = aws();
        expect["cniVersion"] = json!("1.0.0");
        expect["ips"][0].as_object_mut().unwrap().remove("version");
        assert_eq!(v1, expect);
        let back = CniResult::from_value(&v1)
            .unwrap()
            .to_value(Version::V0_4_0);
        assert_eq!(back, aws());
    }

    #[test]
    fn legacy_version_derived_from_address() {
        let r = CniResult::from_value(&json!({
            "cniVersion":"1.0.0",
            "ips":[{"address":"fd00::5/128"},{"address":"10.0.0.5/32","gateway":"10.0.0.1"}]
        }))
        .unwrap();
        let v = r.to_value(Version::V0_3_1);
        assert_eq!(v["ips"][0]["version"], "6");
        assert_eq!(v["ips"][1]["version"], "4");
        assert_eq!(v["ips"][1]["gateway"], "10.0.0.1");
    }

    #[test]
    fn v11_fields_dropped_for_older_and_kept_for_11() {
        let input = json!({
            "cniVersion":"1.1.0",
            "interfaces":[{"name":"eth0","mtu":9001,"socketPath":"/s","pciID":"0000:00:01.0"}],
            "routes":[{"dst":"0.0.0.0/0","mtu":1500,"advmss":1460,"priority":5,"table":254,"scope":0}]
        });
        let r = CniResult::from_value(&input).unwrap();
        assert_eq!(r.to_value(Version::V1_1_0), input);
        let old = r.to_value(Version::V1_0_0);
        assert_eq!(old["interfaces"][0], json!({"name":"eth0"}));
        assert_eq!(old["routes"][0], json!({"dst":"0.0.0.0/0"}));
    }

    #[test]
    fn unknown_fields_pass_through() {
        let input = json!({
            "cniVersion":"1.0.0",
            "interfaces":[{"name":"eth0","vendor":{"x":1}}],
            "ips":[{"address":"10.1.1.1/24","interface":0,"note":"kept"}],
            "custom":[1,2,3]
        });
        let r = CniResult::from_value(&input).unwrap();
        assert_eq!(r.to_value(Version::V1_0_0), input);
    }
}
