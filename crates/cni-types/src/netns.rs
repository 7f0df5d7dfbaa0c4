//! A pod's network namespace as `CNI_NETNS` names it: the type check, its
//! identity (device, inode and cookie), and the one visit an invocation
//! pays to learn the cookie, whose rtnetlink socket the plugin then uses
//! for its pod-side work instead of entering the namespace again.

use crate::error::{CniError, Code};
use anyhow::{Context as _, bail};
use nix::libc;
use nix::sched::{CloneFlags, setns};
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};
use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;

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

/// The type check without NS_GET_NSTYPE: a throwaway thread enters the
/// namespace. setns(CLONE_NEWNET) answers EINVAL for a namespace of another
/// type (a mount namespace must not be entered by the calling thread), so
/// the refusal stays early and clear (code 4) where the ioctl is missing.
fn probe_netns_with_setns(f: &File) -> anyhow::Result<()> {
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
/// architectures we ship) use; others get no cookie.
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
    /// device and inode, and its cookie, asked of a socket the calling
    /// thread opens inside it (see [`visit`]; the thread comes back).
    pub fn of_netns(f: &File) -> anyhow::Result<NetnsId> {
        let mut id = Self::of_file(f)?;
        let home = own_netns_file()?;
        id.cookie = visit(f, &home).and_then(|s| cookie_of(&s));
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
        Self::of_file(&own_netns_file()?)
    }
}

/// The calling thread's network namespace, opened (no type check needed).
fn own_netns_file() -> anyhow::Result<File> {
    crate::fsutil::open_nonblocking(Path::new("/proc/thread-self/ns/net"))
        .or_else(|_| crate::fsutil::open_nonblocking(Path::new("/proc/self/ns/net")))
        .context("opening the plugin's own network namespace")
}

/// The calling thread enters `target`, opens an rtnetlink socket there and
/// returns to `home` (its own namespace, opened by the caller). A socket
/// stays in the namespace it was made in, so the socket is the pod's for
/// good; its cookie is the namespace's. `None` when the namespace cannot
/// be entered (no CAP_SYS_ADMIN): the thread has not moved. A thread that
/// cannot come back aborts the process, as `cni_netlink::netns` does:
/// carrying on would run node-side work inside the pod.
fn visit(target: &File, home: &File) -> Option<OwnedFd> {
    setns(target.as_fd(), CloneFlags::CLONE_NEWNET).ok()?;
    // SAFETY: plain socket(2); a valid fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if let Err(e) = setns(home.as_fd(), CloneFlags::CLONE_NEWNET) {
        let _ = writeln!(
            std::io::stderr(),
            "fatal: cannot return from a pod's network namespace: {e}"
        );
        std::process::abort();
    }
    // SAFETY: fd was just returned by socket(2) and nothing else owns it.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The cookie of the namespace a socket lives in.
fn cookie_of(sock: &OwnedFd) -> Option<u64> {
    if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        return None;
    }
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `cookie`.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    (r == 0 && len as usize == std::mem::size_of::<u64>()).then_some(cookie)
}

/// The rtnetlink socket [`validate_netns`] opened in the pod's namespace,
/// with that namespace's identity. The socket holds the namespace alive, so
/// no other namespace can take its nsfs inode while it is kept here.
/// An invocation validates one `CNI_NETNS`; a few are kept so that a
/// process validating several (GC, tests) cannot grow without bound.
static POD_RTNL: Mutex<Vec<(NetnsId, OwnedFd)>> = Mutex::new(Vec::new());
const KEPT_POD_SOCKETS: usize = 4;

/// A descriptor of the socket the validation of `CNI_NETNS` opened inside
/// it, when `ns` (the device and inode of a file opened now) is that
/// namespace. Every caller gets its own descriptor of the one socket, so
/// an invocation enters the pod once however often it works there; the
/// callers take turns (a plugin is one thread), and each request leaves
/// the socket with nothing unread (see `cni_netlink`).
pub fn pod_rtnl(ns: &NetnsId) -> Option<OwnedFd> {
    let kept = POD_RTNL.lock().ok()?;
    let (_, fd) = kept.iter().find(|(id, _)| id.same_file(ns))?;
    fd.try_clone().ok()
}

fn keep_pod_rtnl(id: NetnsId, sock: OwnedFd) {
    if let Ok(mut kept) = POD_RTNL.lock() {
        kept.retain(|(k, _)| !k.same_file(&id));
        if kept.len() >= KEPT_POD_SOCKETS {
            kept.remove(0);
        }
        kept.push((id, sock));
    }
}

/// A `CNI_NETNS` path must open (without blocking), be a network namespace
/// and not be the plugin's own: work meant for a pod (sysctls, the
/// container interface's qdiscs) must never land on the node. Refused with
/// code 4 before anything changes. The visit that reads the cookie leaves
/// its socket for [`pod_rtnl`].
pub fn validate_netns(path: &Path) -> Result<NetnsId, CniError> {
    let invalid = |msg: &str, e: &dyn std::fmt::Display| {
        CniError::new(Code::InvalidEnv, msg).with_details(format!("{}: {e:#}", path.display()))
    };
    let f = crate::fsutil::open_nonblocking(path)
        .map_err(|e| invalid("CNI_NETNS cannot be opened", &e))?;
    check_netns_fd(&f).map_err(|e| invalid("CNI_NETNS is not a network namespace", &e))?;
    let mut id = NetnsId::of_file(&f).map_err(|e| invalid("CNI_NETNS cannot be identified", &e))?;
    let home = own_netns_file().map_err(|e| invalid("CNI_NETNS cannot be identified", &e))?;
    if NetnsId::of_file(&home).is_ok_and(|own| own.same_file(&id)) {
        return Err(CniError::new(
            Code::InvalidEnv,
            "CNI_NETNS is the plugin's own network namespace, not a pod's",
        )
        .with_details(format!(
            "{} is the node's namespace; refusing to act on the node as if it were a pod",
            path.display()
        )));
    }
    if let Some(sock) = visit(&f, &home) {
        id.cookie = cookie_of(&sock);
        keep_pod_rtnl(id, sock);
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn here() -> u64 {
        std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
    }

    fn root() -> bool {
        let root = nix::unistd::geteuid().is_root();
        if !root {
            eprintln!("skipped: setns needs root");
        }
        root
    }

    /// The type check used where NS_GET_NSTYPE is missing (qemu-user, old
    /// kernels): a mount namespace is refused, a network namespace passes,
    /// and the thread ends where it started.
    #[test]
    fn setns_probe_tells_network_namespaces_apart() {
        if !root() {
            return;
        }
        let before = here();
        let net = File::open("/proc/self/ns/net").unwrap();
        probe_netns_with_setns(&net).unwrap();
        let mnt = File::open("/proc/self/ns/mnt").unwrap();
        let err = probe_netns_with_setns(&mnt).unwrap_err();
        assert!(err.to_string().contains("not a network namespace"), "{err}");
        assert_eq!(here(), before);
    }

    /// A namespace of its own, held by a parked thread for the test.
    fn other_netns() -> (String, std::sync::mpsc::Sender<()>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, parked) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare (root)");
            let tid = nix::unistd::gettid().as_raw();
            tx.send(format!("/proc/{}/task/{tid}/ns/net", std::process::id()))
                .unwrap();
            let _ = parked.recv();
        });
        (rx.recv().unwrap(), stop)
    }

    /// The visit comes back, reads the pod's cookie (not ours), and leaves a
    /// socket that only the same namespace's file gets.
    #[test]
    fn validation_visits_once_and_keeps_the_pods_socket() {
        if !root() {
            return;
        }
        let (path, _stop) = other_netns();
        let before = here();
        let id = validate_netns(Path::new(&path)).unwrap();
        assert_eq!(here(), before, "the thread came back");
        let own = own_netns_file().unwrap();
        let own_cookie = visit(&File::open(&path).unwrap(), &own).and_then(|s| cookie_of(&s));
        assert_eq!(id.cookie, own_cookie, "the pod's cookie, read twice");
        let ours = NetnsId::of_netns(&own).unwrap();
        // qemu-user (the arm64 tier) answers no SO_NETNS_COOKIE: None both.
        if id.cookie.is_some() {
            assert_ne!(id.cookie, ours.cookie);
        }
        assert!(pod_rtnl(&ours).is_none(), "not for another namespace");
        let sock = pod_rtnl(&id).expect("kept for the pod");
        assert_eq!(cookie_of(&sock), id.cookie, "the socket lives in the pod");
        let again = pod_rtnl(&id).expect("kept for every caller");
        assert_eq!(cookie_of(&again), id.cookie);
        assert_eq!(own.metadata().unwrap().ino(), before);
    }
}
