//! `CNI_*` environment: parsing and the spec's per-verb requirements.

use crate::error::{CniError, Code};
use anyhow::{Context as _, bail};
use nix::libc;
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }

    /// Verbs acting on one attachment need its container id and ifname.
    fn needs_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }

    /// DEL must work without a netns: containerd's second DEL has none.
    fn needs_netns(self) -> bool {
        matches!(self, Command::Add | Command::Check)
    }
}

/// `CNI_ARGS`: `K=V;K=V`. Keys are kept in order; the pod identity keys
/// that Kubernetes runtimes send are exposed directly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pairs: Vec<(String, String)>,
}

/// Keys we understand; any other key needs `IgnoreUnknown=1/true`.
const KNOWN_ARGS: &[&str] = &[
    "IgnoreUnknown",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_UID",
    "K8S_POD_INFRA_CONTAINER_ID",
];

/// Which Kubernetes pod an attachment belongs to, as the runtime named it in
/// `CNI_ARGS`: recorded in state files for operators (`cni-rs pods`), never
/// used to decide what to touch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl CniArgs {
    /// The pod, when the runtime sent both its namespace and its name.
    pub fn pod(&self) -> Option<PodRef> {
        Some(PodRef {
            namespace: self.pod_namespace()?.to_string(),
            name: self.pod_name()?.to_string(),
        })
    }

    pub fn parse(s: &str) -> Result<CniArgs, CniError> {
        let mut pairs = Vec::new();
        for item in s.split(';').filter(|p| !p.is_empty()) {
            let Some((k, v)) = item.split_once('=') else {
                return Err(CniError::new(Code::InvalidEnv, "invalid CNI_ARGS")
                    .with_details(format!("pair {item:?} is not KEY=VALUE")));
            };
            if k.is_empty() {
                return Err(CniError::new(Code::InvalidEnv, "invalid CNI_ARGS")
                    .with_details(format!("pair {item:?} has an empty key")));
            }
            pairs.push((k.to_string(), v.to_string()));
        }
        let args = CniArgs { pairs };
        let ignore_unknown = args
            .get("IgnoreUnknown")
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true"));
        if !ignore_unknown
            && let Some((k, _)) = args
                .pairs
                .iter()
                .find(|(k, _)| !KNOWN_ARGS.contains(&k.as_str()))
        {
            return Err(
                CniError::new(Code::InvalidEnv, "unknown key in CNI_ARGS").with_details(format!(
                    "{k:?} is not understood and IgnoreUnknown is not set"
                )),
            );
        }
        Ok(args)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn pod_namespace(&self) -> Option<&str> {
        self.get("K8S_POD_NAMESPACE").filter(|s| !s.is_empty())
    }

    pub fn pod_name(&self) -> Option<&str> {
        self.get("K8S_POD_NAME").filter(|s| !s.is_empty())
    }

    pub fn pod_uid(&self) -> Option<&str> {
        self.get("K8S_POD_UID").filter(|s| !s.is_empty())
    }
}

/// The validated environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    /// Empty for VERSION, STATUS and GC.
    pub container_id: String,
    /// `None` when unset or empty (allowed for DEL), and on DEL when it is
    /// gone, not a network namespace, or the plugin's own.
    pub netns: Option<PathBuf>,
    /// The identity of `netns`, set by the dispatcher once it validated it.
    pub netns_id: Option<NetnsId>,
    /// Empty for VERSION, STATUS and GC.
    pub ifname: String,
    pub args: CniArgs,
    pub path: Vec<PathBuf>,
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`: the spec's rule for container ids
/// and, the same, for network names.
pub(crate) fn matches_id_rule(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The spec's container id rule: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    if matches_id_rule(id) {
        Ok(())
    } else {
        Err(CniError::new(Code::InvalidEnv, "invalid CNI_CONTAINERID")
            .with_details(format!("{id:?} must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$")))
    }
}

/// The spec's interface name rule: 1..15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let why = if name.is_empty() {
        Some("is empty")
    } else if name.len() > 15 {
        Some("is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is . or ..")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("contains '/', ':' or whitespace")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(CniError::new(Code::InvalidEnv, "invalid CNI_IFNAME")
            .with_details(format!("{name:?} {why}"))),
    }
}

/// `NS_GET_NSTYPE` = `_IO(0xb7, 0x3)`: asks nsfs which kind of namespace an fd is.
const NS_GET_NSTYPE: libc::c_ulong = (0xb7 << 8) | 0x3;

/// Checks that an open file is a network namespace: on nsfs, and of type
/// CLONE_NEWNET (a mount or pid namespace file is on nsfs too).
pub fn check_netns_fd(f: &File) -> anyhow::Result<()> {
    let st = fstatfs(f).context("fstatfs")?;
    if st.filesystem_type() != NSFS_MAGIC {
        bail!("not a namespace file (not on nsfs)");
    }
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd.
    let res = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE as _) };
    if res == -1 {
        let err = std::io::Error::last_os_error();
        // Kernels before 4.11 lack the ioctl (ENOTTY), and qemu-user does
        // not translate it (ENOSYS): ask setns(CLONE_NEWNET) instead, which
        // refuses any other namespace type with EINVAL.
        if matches!(err.raw_os_error(), Some(libc::ENOTTY) | Some(libc::ENOSYS)) {
            return probe_netns_with_setns(f);
        }
        return Err(err).context("NS_GET_NSTYPE");
    }
    if res != libc::CLONE_NEWNET {
        bail!("namespace is not a network namespace");
    }
    Ok(())
}

/// The namespace cookie of `f`, read by a socket a throwaway thread opens
/// inside it; `None` when the kernel (before 5.14) or an emulator cannot
/// answer, or without the right to enter.
fn netns_cookie(f: &File) -> Option<u64> {
    use nix::sched::{CloneFlags, setns};
    use std::os::fd::AsFd;
    if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        return None;
    }
    std::thread::scope(|scope| {
        // A thread that cannot be made (a pids limit) is no cookie, not a panic.
        std::thread::Builder::new()
            .spawn_scoped(scope, || {
                setns(f.as_fd(), CloneFlags::CLONE_NEWNET).ok()?;
                // SAFETY: plain socket(2); the fd is closed below.
                let fd = unsafe {
                    libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
                };
                if fd < 0 {
                    return None;
                }
                let mut cookie: u64 = 0;
                let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
                // SAFETY: the kernel writes at most `len` bytes into `cookie`.
                let r = unsafe {
                    libc::getsockopt(
                        fd,
                        libc::SOL_SOCKET,
                        SO_NETNS_COOKIE,
                        (&mut cookie as *mut u64).cast(),
                        &mut len,
                    )
                };
                // SAFETY: fd is ours and open.
                unsafe { libc::close(fd) };
                (r == 0 && len as usize == std::mem::size_of::<u64>()).then_some(cookie)
            })
            .ok()?
            .join()
            .ok()
            .flatten()
    })
}

/// The type check without NS_GET_NSTYPE: a throwaway thread enters the
/// namespace. setns(CLONE_NEWNET) answers EINVAL for a namespace of another
/// type, so the refusal stays early and clear (code 4) where the ioctl is
/// missing. The calling thread never moves: whatever happens in the probe
/// (even a failed return), node-side work cannot land in a pod's netns.
fn probe_netns_with_setns(f: &File) -> anyhow::Result<()> {
    use nix::sched::{CloneFlags, setns};
    use std::os::fd::AsFd;
    let answer = std::thread::scope(|scope| {
        scope
            .spawn(|| setns(f.as_fd(), CloneFlags::CLONE_NEWNET))
            .join()
    });
    match answer {
        Ok(Ok(())) => Ok(()),
        Ok(Err(nix::errno::Errno::EINVAL)) => bail!("namespace is not a network namespace"),
        // Without CAP_SYS_ADMIN the probe cannot answer; the later setns of
        // the real work fails the same way and is reported there.
        Ok(Err(nix::errno::Errno::EPERM)) => Ok(()),
        Ok(Err(e)) => Err(e).context("setns probe"),
        Err(_) => bail!("the setns probe thread panicked"),
    }
}

/// The identity of a network namespace: device and inode of its nsfs file,
/// and its cookie. Recorded at ADD so DEL and CHECK act inside a namespace
/// only when it is the one ADD worked in.
///
/// The kernel reuses nsfs inode numbers: a pod's new namespace often gets
/// the inode of one just deleted, so `{dev, ino}` alone let a runtime's
/// late DEL for a gone pod act inside its successor. The cookie
/// (`SO_NETNS_COOKIE`, Linux 5.14+) is never reused while the node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
    /// `None` where the kernel (or an emulator) cannot tell, and in
    /// records of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<u64>,
}

/// `SO_NETNS_COOKIE` in asm-generic, which amd64 and arm64 (the two
/// architectures we ship) use; others get no cookie (see `netns_cookie`).
const SO_NETNS_COOKIE: libc::c_int = 71;

impl NetnsId {
    /// Device and inode of an nsfs file (no cookie: see [`Self::of_netns`]).
    pub fn of_file(f: &File) -> anyhow::Result<NetnsId> {
        use std::os::unix::fs::MetadataExt;
        let m = f.metadata().context("fstat")?;
        Ok(NetnsId {
            dev: m.dev(),
            ino: m.ino(),
            cookie: None,
        })
    }

    /// The full identity of the network namespace `f` names: its file's
    /// device and inode, and its cookie, asked by a socket opened inside
    /// it on a throwaway thread (the caller never changes namespace).
    pub fn of_netns(f: &File) -> anyhow::Result<NetnsId> {
        let mut id = Self::of_file(f)?;
        id.cookie = netns_cookie(f);
        Ok(id)
    }

    /// The same file (device and inode), whatever the cookies say.
    pub fn same_file(&self, other: &NetnsId) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }

    /// True when `now` is the namespace an ADD `recorded`; a record of an
    /// earlier version holds none and matches any pod namespace. With a
    /// recorded cookie, `now` must carry the same one: a namespace whose
    /// cookie cannot be read is not proven to be the recorded one. DEL and
    /// CHECK act inside a namespace only when this holds.
    pub fn matches_record(recorded: Option<NetnsId>, now: Option<NetnsId>) -> bool {
        let Some(r) = recorded else { return true };
        let Some(n) = now else { return false };
        r.same_file(&n) && (r.cookie.is_none() || r.cookie == n.cookie)
    }

    /// The calling thread's own network namespace (the node's, for a plugin).
    pub fn own() -> anyhow::Result<NetnsId> {
        // Our own namespace needs no type check, only its identity.
        let f = crate::fsutil::open_nonblocking(Path::new("/proc/thread-self/ns/net"))
            .or_else(|_| crate::fsutil::open_nonblocking(Path::new("/proc/self/ns/net")))
            .context("opening the plugin's own network namespace")?;
        Self::of_file(&f)
    }
}

/// A `CNI_NETNS` path must open (without blocking), be a network namespace
/// and not be the plugin's own: work meant for a pod (sysctls, the
/// container interface's qdiscs) must never land on the node. Refused with
/// code 4 before anything changes.
pub fn validate_netns(path: &Path) -> Result<NetnsId, CniError> {
    let f = crate::fsutil::open_nonblocking(path).map_err(|e| {
        CniError::new(Code::InvalidEnv, "CNI_NETNS cannot be opened")
            .with_details(format!("{}: {e}", path.display()))
    })?;
    check_netns_fd(&f).map_err(|e| {
        CniError::new(Code::InvalidEnv, "CNI_NETNS is not a network namespace")
            .with_details(format!("{}: {e:#}", path.display()))
    })?;
    let id = NetnsId::of_netns(&f).map_err(|e| {
        CniError::new(Code::InvalidEnv, "CNI_NETNS cannot be identified")
            .with_details(format!("{}: {e:#}", path.display()))
    })?;
    if NetnsId::own().is_ok_and(|own| own.same_file(&id)) {
        return Err(CniError::new(
            Code::InvalidEnv,
            "CNI_NETNS is the plugin's own network namespace, not a pod's",
        )
        .with_details(format!(
            "{} is the node's namespace; refusing to act on the node as if it were a pod",
            path.display()
        )));
    }
    Ok(id)
}

impl Env {
    /// Reads and validates the environment through `get` (injectable for tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let cmd = get("CNI_COMMAND").unwrap_or_default();
        if cmd.is_empty() {
            return Err(CniError::new(Code::InvalidEnv, "CNI_COMMAND is not set"));
        }
        let command = Command::parse(&cmd).ok_or_else(|| {
            CniError::new(Code::InvalidEnv, "unknown CNI_COMMAND").with_details(format!(
                "{cmd:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"
            ))
        })?;
        Self::for_command(command, get)
    }

    fn for_command(
        command: Command,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Env, CniError> {
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        let require = |k: &str| {
            nonempty(k).ok_or_else(|| {
                CniError::new(Code::InvalidEnv, format!("{k} is not set"))
                    .with_details(format!("{} requires {k}", command.as_str()))
            })
        };
        let (container_id, ifname) = if command.needs_attachment() {
            let id = require("CNI_CONTAINERID")?;
            validate_container_id(&id)?;
            let ifname = require("CNI_IFNAME")?;
            validate_ifname(&ifname)?;
            (id, ifname)
        } else {
            (String::new(), String::new())
        };
        let netns = if command.needs_netns() {
            Some(PathBuf::from(require("CNI_NETNS")?))
        } else {
            nonempty("CNI_NETNS").map(PathBuf::from)
        };
        let args = match nonempty("CNI_ARGS") {
            Some(s) if command.needs_attachment() => CniArgs::parse(&s)?,
            _ => CniArgs::default(),
        };
        let path = nonempty("CNI_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Env {
            command,
            container_id,
            netns,
            netns_id: None,
            ifname,
            args,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The type check used where NS_GET_NSTYPE is missing (qemu-user, old
    /// kernels): a mount namespace is refused, a network namespace passes,
    /// and the thread ends where it started.
    #[test]
    fn setns_probe_tells_network_namespaces_apart() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: setns needs root");
            return;
        }
        use std::os::unix::fs::MetadataExt;
        let here = || std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
        let before = here();
        let net = File::open("/proc/self/ns/net").unwrap();
        probe_netns_with_setns(&net).unwrap();
        let mnt = File::open("/proc/self/ns/mnt").unwrap();
        let err = probe_netns_with_setns(&mnt).unwrap_err();
        assert!(err.to_string().contains("not a network namespace"), "{err}");
        assert_eq!(here(), before);
    }

    fn env(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_lookup(|k| m.get(k).cloned())
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/var/run/netns/cni-1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
    ];

    #[test]
    fn add_env_parses() {
        let e = env(ADD).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.container_id, "abc123");
        assert_eq!(e.path.len(), 2);
    }

    #[test]
    fn missing_and_unknown_command() {
        assert_eq!(env(&[]).unwrap_err().code, Code::InvalidEnv);
        assert_eq!(
            env(&[("CNI_COMMAND", "FROB")]).unwrap_err().code,
            Code::InvalidEnv
        );
    }

    #[test]
    fn del_needs_no_netns_but_add_does() {
        let del = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "x"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert_eq!(del.netns, None);
        let add = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "x"),
            ("CNI_IFNAME", "eth0"),
        ]);
        assert!(add.unwrap_err().msg.contains("CNI_NETNS"));
    }

    #[test]
    fn version_needs_nothing() {
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
        assert!(env(&[("CNI_COMMAND", "GC")]).is_ok());
    }

    #[test]
    fn container_id_rule() {
        for ok in ["a", "0abc", "a_b.c-d", "f3b9c0e8d1"] {
            assert!(validate_container_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "_a", ".a", "a/b", "a b", "a;b", "ä"] {
            assert!(validate_container_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ifname_rule() {
        for ok in ["eth0", "a", "net1.100", "x23456789012345"] {
            assert!(validate_ifname(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a:b",
            "a b",
            "a\tb",
            "x234567890123456",
        ] {
            assert!(validate_ifname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cni_args() {
        let a = CniArgs::parse(
            "K8S_POD_UID=u1;IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=c;Other=x",
        )
        .unwrap();
        assert_eq!(a.pod_namespace(), Some("ns"));
        assert_eq!(a.pod_name(), Some("p"));
        assert_eq!(a.pod_uid(), Some("u1"));
        assert_eq!(a.get("Other"), Some("x"));
        assert!(CniArgs::parse("Other=x").is_err());
        assert!(CniArgs::parse("K8S_POD_NAME").is_err());
        assert!(CniArgs::parse("=v;IgnoreUnknown=1").is_err());
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        assert!(CniArgs::parse("IgnoreUnknown=true;Foo=bar;").is_ok());
    }
}
