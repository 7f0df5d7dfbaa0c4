//! Per-thread network namespace switching.
//!
//! `setns(CLONE_NEWNET)` only affects the calling thread, so a guard that
//! always switches back is enough to do work "inside the pod" without ever
//! leaving the thread stranded there.

use std::{
    fs::File,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use crate::Netlink;
use anyhow::Context;
use cni_types::env::NetnsId;
use nix::sched::{CloneFlags, setns};
use std::io::Write as _;

/// Restores the thread's original netns when dropped, so every exit path
/// (including `?` and panics) leaves the pod namespace.
#[must_use = "dropping the guard immediately switches back"]
#[derive(Debug)]
pub struct NetnsGuard {
    orig: File,
    target: PathBuf,
    restored: bool,
}

impl NetnsGuard {
    /// Switches back explicitly, so a failure can be reported instead of
    /// aborting in `Drop`.
    pub fn restore(mut self) -> anyhow::Result<()> {
        self.restored = true;
        setns(self.orig.as_fd(), CloneFlags::CLONE_NEWNET).with_context(|| {
            format!(
                "failed to return from netns {} to the original netns",
                self.target.display()
            )
        })
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if self.restored {
            return;
        }
        if let Err(e) = setns(self.orig.as_fd(), CloneFlags::CLONE_NEWNET) {
            // Carrying on would run host-side work inside the pod netns.
            // (writeln, not eprintln: a closed stderr must not panic here.)
            let _ = writeln!(
                std::io::stderr(),
                "fatal: cannot return from netns {} to the original netns: {e}",
                self.target.display()
            );
            std::process::abort();
        }
    }
}

fn current_thread_netns() -> anyhow::Result<File> {
    match File::open("/proc/thread-self/ns/net") {
        Ok(f) => Ok(f),
        Err(_) => {
            // Kernels before 3.17 have no /proc/thread-self.
            let path = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid().as_raw());
            File::open(&path).with_context(|| format!("failed to open {path}"))
        }
    }
}

/// Enters the netns at `path` (e.g. `/var/run/netns/x` or
/// `/proc/<pid>/ns/net`) for the current thread only; the returned guard
/// switches back. On error the thread has not moved.
///
/// Only a pod's namespace is ever entered: the thread's own is refused, so
/// pod work (sysctls, the container interface's qdiscs) can never land on
/// the node whatever path a caller passes. The path is opened without
/// blocking, so a FIFO cannot hang the plugin.
pub fn enter(path: &Path) -> anyhow::Result<NetnsGuard> {
    let orig = current_thread_netns().context("failed to open the current netns")?;
    let target = cni_types::fsutil::open_nonblocking(path)
        .with_context(|| format!("failed to open netns {}", path.display()))?;
    cni_types::env::check_netns_fd(&target)
        .with_context(|| format!("{} is not a network namespace", path.display()))?;
    if NetnsId::of_file(&target)? == NetnsId::of_file(&orig)? {
        anyhow::bail!(
            "{} is this process's own network namespace, not a pod's",
            path.display()
        );
    }
    setns(target.as_fd(), CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("failed to enter netns {}", path.display()))?;
    Ok(NetnsGuard {
        orig,
        target: path.to_path_buf(),
        restored: false,
    })
}

/// Runs `f` inside the netns at `path` and comes back, even when `f` fails
/// or panics.
pub fn run_in<T>(path: &Path, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let guard = enter(path)?;
    let res = f();
    guard.restore()?;
    res
}

/// An rtnetlink connection inside the pod netns at `path`: the socket the
/// validation of `CNI_NETNS` already made there when `path` is still that
/// namespace (no second visit), else one made by entering it.
pub fn rtnl_in(path: &Path) -> anyhow::Result<Netlink> {
    let validated = cni_types::fsutil::open_nonblocking(path)
        .ok()
        .filter(|f| cni_types::env::check_netns_fd(f).is_ok())
        .and_then(|f| NetnsId::of_file(&f).ok())
        .and_then(|id| cni_types::netns::pod_rtnl(&id));
    match validated {
        Some(fd) => Netlink::from_fd(fd).context("opening netlink in the pod netns"),
        None => run_in(path, || {
            Netlink::new().context("opening netlink in the pod netns")
        }),
    }
}

/// True when `path` is a network namespace, so a plugin can reject a
/// `CNI_NETNS` that is a regular file (or another namespace type) up front.
pub fn is_netns(path: &Path) -> bool {
    cni_types::fsutil::open_nonblocking(path)
        .map(|f| cni_types::env::check_netns_fd(&f).is_ok())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use std::{os::unix::fs::MetadataExt, sync::mpsc, thread};

    use super::*;
    use crate::Netlink;
    use crate::testutil::private_netns;

    fn own_netns_ino() -> u64 {
        std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
    }

    /// A helper thread parked in its own fresh netns; its netns path stays
    /// valid while the thread is alive.
    struct OtherNetns {
        path: PathBuf,
        stop: mpsc::Sender<()>,
        handle: thread::JoinHandle<()>,
    }

    impl OtherNetns {
        fn spawn() -> OtherNetns {
            let (tx_path, rx_path) = mpsc::channel();
            let (stop, rx_stop) = mpsc::channel::<()>();
            let handle = thread::spawn(move || {
                nix::sched::unshare(CloneFlags::CLONE_NEWNET).unwrap();
                let tid = nix::unistd::gettid().as_raw();
                tx_path
                    .send(PathBuf::from(format!(
                        "/proc/{}/task/{tid}/ns/net",
                        std::process::id()
                    )))
                    .unwrap();
                let _ = rx_stop.recv();
            });
            OtherNetns {
                path: rx_path.recv().unwrap(),
                stop,
                handle,
            }
        }

        fn finish(self) {
            self.stop.send(()).unwrap();
            self.handle.join().unwrap();
        }
    }

    #[test]
    fn enter_and_restore() {
        let Some(mut nl) = private_netns() else {
            return;
        };
        nl.create_ifb("inmain", 1500, None).unwrap();
        let home = own_netns_ino();
        let other = OtherNetns::spawn();
        assert!(is_netns(&other.path));

        {
            let _guard = enter(&other.path).unwrap();
            assert_ne!(own_netns_ino(), home);
            let mut inside = Netlink::new().unwrap();
            assert!(inside.link_by_name("inmain").unwrap().is_none());
            inside.create_ifb("inother", 1500, None).unwrap();
        }
        assert_eq!(own_netns_ino(), home);
        let mut nl2 = Netlink::new().unwrap();
        assert!(nl2.link_by_name("inmain").unwrap().is_some());
        assert!(nl2.link_by_name("inother").unwrap().is_none());

        // explicit restore, and run_in on both success and failure
        enter(&other.path).unwrap().restore().unwrap();
        assert_eq!(own_netns_ino(), home);
        let found = run_in(&other.path, || {
            Ok(Netlink::new()?.link_by_name("inother")?.is_some())
        })
        .unwrap();
        assert!(found);
        assert_eq!(own_netns_ino(), home);
        let err = run_in(&other.path, || -> anyhow::Result<()> {
            anyhow::bail!("boom")
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert_eq!(own_netns_ino(), home);

        // A socket created inside keeps acting on that netns after leaving.
        let mut sock_inside = run_in(&other.path, || Ok(Netlink::new()?)).unwrap();
        assert!(sock_inside.link_by_name("inother").unwrap().is_some());
        assert!(sock_inside.link_by_name("inmain").unwrap().is_none());

        other.finish();
    }

    #[test]
    fn rejects_non_netns_paths() {
        let Some(_nl) = private_netns() else {
            return;
        };
        let home = own_netns_ino();
        assert!(is_netns(Path::new("/proc/self/ns/net")));
        assert!(!is_netns(Path::new("/proc/self/ns/mnt")));
        assert!(!is_netns(Path::new("/proc/self/status")));
        assert!(!is_netns(Path::new("/nonexistent/netns")));
        let own = enter(Path::new("/proc/thread-self/ns/net")).unwrap_err();
        assert!(
            format!("{own:#}").contains("own network namespace"),
            "{own:#}"
        );
        for p in [
            "/proc/self/status",
            "/proc/self/ns/mnt",
            "/nonexistent/netns",
        ] {
            let err = enter(Path::new(p)).unwrap_err();
            assert!(format!("{err:#}").contains(p), "{err:#}");
            assert_eq!(own_netns_ino(), home);
        }
    }

    #[test]
    fn veth_peer_moved_to_other_netns() {
        let Some(mut nl) = private_netns() else {
            return;
        };
        let other = OtherNetns::spawn();
        nl.create_veth("mv0", "mv1").unwrap();
        let a = nl.link_by_name("mv0").unwrap().unwrap();
        let b = nl.link_by_name("mv1").unwrap().unwrap();
        let fd = File::open(&other.path).unwrap();
        nl.move_link_to_netns_fd(b.index, fd.as_fd()).unwrap();
        assert!(nl.link_by_name("mv1").unwrap().is_none());
        let a2 = nl.link_by_index(a.index).unwrap().unwrap();
        assert!(a2.link_netnsid.is_some());
        let b_inside = run_in(&other.path, || Ok(Netlink::new()?.link_by_name("mv1")?)).unwrap();
        let b_inside = b_inside.unwrap();
        assert_eq!(a2.peer_index, Some(b_inside.index));
        // From the other side: found only through the namespace it is in.
        let pod_fd = File::open(&other.path).unwrap();
        let peer = nl.veth_peer_in(&b_inside, pod_fd.as_fd()).unwrap();
        assert_eq!(peer.map(|l| l.index), Some(a.index));
        let third = OtherNetns::spawn();
        let third_fd = File::open(&third.path).unwrap();
        assert_eq!(nl.veth_peer_in(&b_inside, third_fd.as_fd()).unwrap(), None);
        third.finish();
        other.finish();
    }
}
