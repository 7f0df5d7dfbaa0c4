//! `vpc-cni-sim`: NOT FOR PRODUCTION. A main plugin for tests and the demo
//! that wires a pod exactly as the AWS VPC CNI (`aws-cni`) does, without
//! ENIs: a veth named `eni` + 11 hex of sha1("<namespace>.<pod>"), a /32
//! from a local pool, `169.254.1.1` as the pod's link-local gateway with a
//! permanent neighbour entry, a host route per pod, and a 0.4.0 result
//! shaped like aws-cni's (`mac` "254", a `dummy…` interface with "0"s).

use anyhow::Context as _;
use cni_netlink::{Netlink, netns};
use cni_types::error::{CniError, Code, ResultExt};
use cni_types::result::{Dns, Interface, IpConfig};
use cni_types::skel::{Context, Plugin};
use cni_types::state::StateStore;
use cni_types::{CniResult, Env, log_info};
use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha1::{Digest, Sha1};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;

const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
const DEFAULT_STATE_DIR: &str = "/var/lib/cni/vpc-cni-sim";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SimConf {
    /// aws-cni writes the MTU as a string.
    #[serde(default)]
    mtu: Option<String>,
    #[serde(default = "default_prefix")]
    veth_prefix: String,
    #[serde(rename = "podCIDR")]
    pod_cidr: String,
    #[serde(default)]
    state_dir: Option<String>,
}

fn default_prefix() -> String {
    "eni".into()
}

/// One pod's allocation, kept until DEL.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Allocation {
    ip: Ipv4Addr,
    host_veth: String,
}

struct Parsed {
    mtu: u32,
    prefix: String,
    pool: Ipv4Network,
    store: StateStore,
}

fn parse(ctx_conf: &cni_types::NetConf) -> anyhow::Result<Parsed> {
    let c: SimConf = ctx_conf.plugin_config()?;
    let mtu = match c.mtu.as_deref() {
        None | Some("") => 9001,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|m| (68..=65535).contains(m))
            .ok_or_else(|| CniError::new(Code::InvalidConfig, format!("invalid mtu {s:?}")))?,
    };
    let pool: Ipv4Network = c.pod_cidr.parse().map_err(|e| {
        CniError::new(Code::InvalidConfig, "invalid podCIDR").with_details(format!("{e}"))
    })?;
    if pool.prefix() > 30 {
        return Err(CniError::new(Code::InvalidConfig, "podCIDR too small").into());
    }
    let dir = c.state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into());
    Ok(Parsed {
        mtu,
        prefix: c.veth_prefix,
        pool,
        store: StateStore::new(dir, "vpc-cni-sim", &ctx_conf.name),
    })
}

/// aws-cni's name: prefix + first 11 hex of sha1("<namespace>.<pod>").
fn host_veth_name(prefix: &str, env: &Env) -> String {
    let key = match (env.args.pod_namespace(), env.args.pod_name()) {
        (Some(ns), Some(pod)) => format!("{ns}.{pod}"),
        _ => env.container_id.clone(),
    };
    let hex: String = Sha1::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut name = format!("{prefix}{}", &hex[..11]);
    name.truncate(15);
    name
}

fn kernel<T>(r: cni_netlink::Result<T>, what: &str) -> anyhow::Result<T> {
    r.with_context(|| what.to_string())
        .cni(Code::Kernel, "netlink request failed")
}

/// The first address of the pool not held by another allocation (the
/// network and broadcast addresses excluded). Runs under the store lock.
fn allocate(p: &Parsed, env: &Env) -> anyhow::Result<Ipv4Addr> {
    if let Some(a) = p.store.load::<Allocation>(&env.container_id, &env.ifname)? {
        return Ok(a.ip);
    }
    let taken = p.store.list::<Allocation>()?;
    let used: std::collections::HashSet<Ipv4Addr> = taken.found.iter().map(|s| s.data.ip).collect();
    p.pool
        .iter()
        .skip(1)
        .take(p.pool.size().saturating_sub(2) as usize)
        .find(|ip| !used.contains(ip))
        .ok_or_else(|| CniError::new(Code::TryAgainLater, "pod address pool exhausted").into())
}

struct Sim;

impl Plugin for Sim {
    const NAME: &'static str = "vpc-cni-sim";

    fn add(&self, ctx: &Context) -> anyhow::Result<CniResult> {
        let p = parse(&ctx.conf)?;
        let env = &ctx.env;
        let netns_path = env.netns.clone().unwrap_or_default();
        let host_name = host_veth_name(&p.prefix, env);
        let _lock = p.store.lock()?;
        let ip = allocate(&p, env)?;
        p.store.save(
            &env.container_id,
            &env.ifname,
            &Allocation {
                ip,
                host_veth: host_name.clone(),
            },
        )?;

        let mut nl = Netlink::new()?;
        // A retried ADD starts from scratch: the old pair goes with its host end.
        if let Some(old) = kernel(nl.link_by_name(&host_name), "looking up host veth")? {
            kernel(nl.delete_link(old.index), "removing old host veth")?;
        }
        let tmp_peer = format!("tmp{}", &host_name[host_name.len().saturating_sub(11)..]);
        kernel(nl.create_veth(&host_name, &tmp_peer), "creating veth")?;
        let host = kernel(nl.link_by_name(&host_name), "reading host veth")?
            .ok_or_else(|| anyhow::anyhow!("host veth vanished"))?;
        let peer = kernel(nl.link_by_name(&tmp_peer), "reading peer")?
            .ok_or_else(|| anyhow::anyhow!("peer vanished"))?;
        let ns_file = std::fs::File::open(&netns_path).context("opening netns")?;
        kernel(
            nl.move_link_to_netns_fd(peer.index, ns_file.as_fd()),
            "moving peer into the pod",
        )?;
        kernel(nl.set_mtu(host.index, p.mtu), "setting host mtu")?;
        kernel(nl.set_up(host.index), "bringing host veth up")?;
        let host_mac = host.mac.unwrap_or_default();
        let ifname = env.ifname.clone();
        let mtu = p.mtu;
        netns::run_in(&netns_path, || {
            let mut pn = Netlink::new()?;
            let l = kernel(pn.link_by_name(&tmp_peer), "finding peer in pod")?
                .ok_or_else(|| anyhow::anyhow!("peer not in pod"))?;
            kernel(pn.set_name(l.index, &ifname), "renaming peer")?;
            kernel(pn.set_mtu(l.index, mtu), "setting pod mtu")?;
            kernel(pn.set_up(l.index), "bringing pod side up")?;
            if let Some(lo) = kernel(pn.link_by_name("lo"), "finding lo")? {
                kernel(pn.set_up(lo.index), "bringing lo up")?;
            }
            kernel(
                pn.add_address(l.index, IpAddr::V4(ip), 32),
                "adding pod address",
            )?;
            kernel(
                pn.add_route(IpAddr::V4(GATEWAY), 32, None, Some(l.index), true),
                "gateway route",
            )?;
            kernel(
                pn.add_route(
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    0,
                    Some(IpAddr::V4(GATEWAY)),
                    Some(l.index),
                    false,
                ),
                "default route",
            )?;
            kernel(
                pn.add_permanent_neighbour(l.index, IpAddr::V4(GATEWAY), host_mac),
                "gateway neighbour",
            )?;
            Ok(())
        })?;
        kernel(
            nl.add_route(IpAddr::V4(ip), 32, None, Some(host.index), true),
            "host route to pod",
        )?;
        log_info!("pod {ip} behind {host_name}");

        let netns_str = netns_path.display().to_string();
        let dummy = format!("dummy{}", &host_name[host_name.len().saturating_sub(11)..]);
        Ok(CniResult {
            interfaces: Some(vec![
                Interface {
                    name: host_name,
                    ..Default::default()
                },
                Interface {
                    name: env.ifname.clone(),
                    mac: Some("254".into()),
                    sandbox: Some(netns_str),
                    ..Default::default()
                },
                Interface {
                    name: dummy,
                    mac: Some("0".into()),
                    sandbox: Some("0".into()),
                    ..Default::default()
                },
            ]),
            ips: Some(vec![IpConfig {
                version: Some("4".into()),
                interface: Some(1),
                address: format!("{ip}/32"),
                ..Default::default()
            }]),
            dns: Some(Dns::default()),
            ..Default::default()
        })
    }

    fn del(&self, ctx: &Context) -> anyhow::Result<()> {
        // DEL cleans up even when the config no longer parses: only the
        // prefix and the state dir matter here.
        let (prefix, store) = match parse(&ctx.conf) {
            Ok(p) => (p.prefix, p.store),
            Err(_) => {
                let raw = &ctx.conf.raw;
                let get = |k: &str| raw.get(k).and_then(Value::as_str).map(str::to_string);
                let dir = get("stateDir").unwrap_or_else(|| DEFAULT_STATE_DIR.into());
                (
                    get("vethPrefix").unwrap_or_else(default_prefix),
                    StateStore::new(dir, "vpc-cni-sim", &ctx.conf.name),
                )
            }
        };
        let env = &ctx.env;
        let _lock = store.lock()?;
        let alloc: Option<Allocation> = store.load(&env.container_id, &env.ifname).unwrap_or(None);
        let name = alloc
            .map(|a| a.host_veth)
            .unwrap_or_else(|| host_veth_name(&prefix, env));
        let mut nl = Netlink::new()?;
        if let Some(l) = kernel(nl.link_by_name(&name), "looking up host veth")?
            && l.kind.as_deref() == Some("veth")
        {
            kernel(nl.delete_link(l.index), "deleting host veth")?;
        }
        store.remove(&env.container_id, &env.ifname)?;
        Ok(())
    }

    fn check(&self, ctx: &Context) -> anyhow::Result<()> {
        let p = parse(&ctx.conf)?;
        let env = &ctx.env;
        let alloc: Allocation = p
            .store
            .load(&env.container_id, &env.ifname)?
            .ok_or_else(|| {
                CniError::new(Code::CheckMismatch, "no allocation for this attachment")
            })?;
        let mut nl = Netlink::new()?;
        if kernel(nl.link_by_name(&alloc.host_veth), "looking up host veth")?.is_none() {
            return Err(CniError::new(
                Code::CheckMismatch,
                format!("{} is missing", alloc.host_veth),
            )
            .into());
        }
        Ok(())
    }

    fn del_best_effort(&self, _env: &Env, _raw: Option<&Value>) -> anyhow::Result<()> {
        Ok(())
    }
}

fn main() {
    cni_types::skel::run(Sim)
}
