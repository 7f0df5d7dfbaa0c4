//! The node and its pods, built from nothing but netlink: the VM's own
//! network namespace is the node (the plugins run there, as a runtime runs
//! them on a node), each pod and each peer is a named namespace
//! (`/run/netns/<name>`, a bind mount of the namespace as `ip netns add`
//! makes) joined to the node by a veth.

use anyhow::{Context as _, Result, bail};
use cni_netlink::{Netlink, netns};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd as _;
use std::path::PathBuf;

const NETNS_DIR: &str = "/run/netns";

/// A named network namespace, unmounted and removed on drop.
pub struct Ns {
    pub name: String,
    pub path: PathBuf,
}

impl Ns {
    /// A fresh namespace with `lo` up. It is made on a thread of its own:
    /// `unshare` moves the calling thread, and the main thread must stay
    /// in the node's namespace.
    pub fn new(name: &str) -> Result<Ns> {
        std::fs::create_dir_all(NETNS_DIR).context("creating /run/netns")?;
        let path = PathBuf::from(NETNS_DIR).join(name);
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let target = path.clone();
        std::thread::spawn(move || -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .context("bind-mounting the namespace")
        })
        .join()
        .map_err(|_| anyhow::anyhow!("namespace thread panicked"))??;
        let ns = Ns {
            name: name.to_string(),
            path,
        };
        ns.run(|| {
            let mut nl = Netlink::new()?;
            let lo = nl.link_by_name("lo")?.context("no lo")?;
            nl.set_up(lo.index)?;
            Ok(())
        })?;
        Ok(ns)
    }

    /// Runs `f` on this thread inside the namespace, and comes back.
    pub fn run<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        netns::run_in(&self.path, f)
    }

    /// A netlink socket bound to this namespace (usable from the node).
    pub fn netlink(&self) -> Result<Netlink> {
        self.run(|| Ok(Netlink::new()?))
    }

    pub fn path_str(&self) -> String {
        self.path.display().to_string()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A namespace joined to the node by a veth: `host` in the node with
/// `<net>.1/24`, `eth0` inside with `<net>.2/24` and a default route via
/// the node (a pod, or a peer standing for another zone or the internet).
pub struct Wired {
    pub ns: Ns,
    pub host: String,
    pub ip: Ipv4Addr,
    pub host_ip: Ipv4Addr,
}

impl Wired {
    /// `net` is the first three octets, e.g. `[10, 200, 1]`.
    pub fn new(name: &str, host: &str, net: [u8; 3]) -> Result<Wired> {
        let ns = Ns::new(name)?;
        let [a, b, c] = net;
        let (ip, host_ip) = (Ipv4Addr::new(a, b, c, 2), Ipv4Addr::new(a, b, c, 1));
        let tmp = format!("t{host}");
        let mut node = Netlink::new()?;
        node.create_veth(host, &tmp)
            .with_context(|| format!("veth {host}"))?;
        let h = node.link_by_name(host)?.context("host veth vanished")?;
        let peer = node.link_by_name(&tmp)?.context("peer vanished")?;
        let fd = std::fs::File::open(&ns.path)?;
        node.move_link_to_netns_fd(peer.index, fd.as_fd())?;
        node.add_address(h.index, IpAddr::V4(host_ip), 24)?;
        node.set_up(h.index)?;
        ns.run(|| {
            let mut nl = Netlink::new()?;
            let l = nl
                .link_by_name(&tmp)?
                .context("peer not in the namespace")?;
            nl.set_name(l.index, "eth0")?;
            nl.add_address(l.index, IpAddr::V4(ip), 24)?;
            nl.set_up(l.index)?;
            nl.add_route(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                0,
                Some(IpAddr::V4(host_ip)),
                Some(l.index),
                false,
            )?;
            Ok(())
        })?;
        Ok(Wired {
            ns,
            host: host.to_string(),
            ip,
            host_ip,
        })
    }

    /// The node-side veth's index.
    pub fn host_index(&self) -> Result<u32> {
        let mut nl = Netlink::new()?;
        Ok(nl
            .link_by_name(&self.host)?
            .with_context(|| format!("{} is gone", self.host))?
            .index)
    }
}

impl Drop for Wired {
    fn drop(&mut self) {
        // Deleting one end of a veth deletes both.
        if let Ok(mut nl) = Netlink::new()
            && let Ok(Some(l)) = nl.link_by_name(&self.host)
        {
            let _ = nl.delete_link(l.index);
        }
    }
}

/// A pod: a wired namespace plus its identity as a runtime passes it.
pub struct Pod {
    pub w: Wired,
    pub id: String,
    pub name: String,
    pub namespace: String,
}

impl Pod {
    /// Pod `n` (1..=250): `10.200.<n>.2/24` behind host veth `eni<n>`, in
    /// Kubernetes namespace `k8s_ns`.
    pub fn new(n: u8, k8s_ns: &str) -> Result<Pod> {
        if n == 0 || n > 250 {
            bail!("pod number {n} out of range");
        }
        let name = format!("pod{n}");
        Ok(Pod {
            w: Wired::new(&name, &format!("eni{n:03}vmtest"), [10, 200, n])?,
            id: format!("ctr{n:04}vmtest"),
            name,
            namespace: k8s_ns.to_string(),
        })
    }

    /// What the VPC CNI's `aws-cni` hands the next plugin (its 0.4.0
    /// shape: the host veth without sandbox, the pod's interface with
    /// `mac` "254" and the netns, a `dummy…` with "0"s), in `version`.
    pub fn prev_result(&self, version: &str) -> Value {
        let mut ip = json!({"interface": 1, "address": format!("{}/32", self.w.ip)});
        if version.starts_with("0.") {
            ip["version"] = "4".into();
        }
        json!({
            "cniVersion": version,
            "interfaces": [
                {"name": self.w.host},
                {"name": "eth0", "mac": "254", "sandbox": self.w.ns.path_str()},
                {"name": format!("dummy{}", &self.w.host[3..]), "mac": "0", "sandbox": "0"}
            ],
            "ips": [ip],
            "dns": {}
        })
    }

    /// The environment a runtime gives a plugin for this pod.
    pub fn env(&self, verb: &str) -> Vec<(String, String)> {
        vec![
            ("CNI_COMMAND".into(), verb.into()),
            ("CNI_CONTAINERID".into(), self.id.clone()),
            ("CNI_NETNS".into(), self.w.ns.path_str()),
            ("CNI_IFNAME".into(), "eth0".into()),
            ("CNI_PATH".into(), "/opt/cni/bin".into()),
            (
                "CNI_ARGS".into(),
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID=uid-{}",
                    self.namespace, self.name, self.id, self.name
                ),
            ),
        ]
    }
}

/// The peers traffic classes tell apart: same zone, cross zone, outside.
pub struct Peers {
    pub same: Wired,
    pub cross: Wired,
    pub outside: Wired,
}

impl Peers {
    pub fn new() -> Result<Peers> {
        Ok(Peers {
            same: Wired::new("peersame", "peersame", [10, 1, 0])?,
            cross: Wired::new("peercross", "peercross", [10, 2, 0])?,
            outside: Wired::new("peerout", "peerout", [203, 0, 113])?,
        })
    }
}

/// The node routes between pods and peers.
pub fn enable_forwarding() -> Result<()> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("ip_forward")
}
