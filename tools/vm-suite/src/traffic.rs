//! Real packets: one TCP flow between two namespaces, measured at the
//! receiver second by second (the sender's count would include what sits
//! in its buffers), and a pod's flood past its own qdiscs (`AF_PACKET`
//! with `PACKET_QDISC_BYPASS`). Each end is a thread of this program that
//! enters its namespace with `setns` and never leaves it: the thread ends
//! with the measurement.

use anyhow::{Context as _, Result, bail};
use cni_netlink::Netlink;
use nix::libc;
use nix::sched::{CloneFlags, setns};
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::world::{Ns, Wired};

/// How long each flow runs; the first second (slow start, the bucket's
/// burst) is left out of the steady state.
pub const FLOW_SECONDS: u64 = 4;

/// Moves this thread into `ns` for good (`None`: stays in the node).
fn enter(ns: Option<&Path>) -> Result<()> {
    if let Some(p) = ns {
        let f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
        setns(f.as_fd(), CloneFlags::CLONE_NEWNET).context("setns")?;
    }
    Ok(())
}

/// One end of a flow: a namespace (or the node) and, for the receiver,
/// the address it listens on.
#[derive(Clone)]
pub struct End {
    pub ns: Option<PathBuf>,
    pub ip: Ipv4Addr,
}

impl End {
    pub fn node(ip: Ipv4Addr) -> End {
        End { ns: None, ip }
    }

    pub fn inside(ns: &Ns, ip: Ipv4Addr) -> End {
        End {
            ns: Some(ns.path.clone()),
            ip,
        }
    }

    /// The namespace side of a wired pod or peer.
    pub fn of(w: &Wired) -> End {
        End::inside(&w.ns, w.ip)
    }

    /// The node's address on a wired namespace's veth.
    pub fn node_side(w: &Wired) -> End {
        End::node(w.host_ip)
    }
}

/// Bytes the receiver got in each whole second after the first byte.
pub struct Flow {
    pub per_second: Vec<f64>,
    /// Every payload byte received, the last partial second included.
    pub total: u64,
}

impl Flow {
    /// Median of the seconds after the first, in bits/s.
    pub fn steady(&self) -> f64 {
        let mut rest: Vec<f64> = self.per_second.iter().skip(1).copied().collect();
        if rest.is_empty() {
            return 0.0;
        }
        rest.sort_by(f64::total_cmp);
        let mid = rest.len() / 2;
        if rest.len().is_multiple_of(2) {
            (rest[mid - 1] + rest[mid]) / 2.0
        } else {
            rest[mid]
        }
    }

    /// The steady state within 10% of `rate` (bits/s); the detail names
    /// the measured rate and every second.
    pub fn held(&self, rate: u64, what: &str) -> Result<String> {
        let ratio = self.steady() / rate as f64;
        let detail = format!(
            "{what}: {:.2} Mbit/s steady = {ratio:.3}x of {:.1} (per second {})",
            self.steady() / 1e6,
            rate as f64 / 1e6,
            self.seconds()
        );
        if !(0.90..=1.10).contains(&ratio) {
            bail!("{detail}: outside 10%");
        }
        Ok(detail)
    }

    pub fn seconds(&self) -> String {
        let s: Vec<String> = self
            .per_second
            .iter()
            .map(|b| format!("{:.2}", b / 1e6))
            .collect();
        s.join("/")
    }
}

/// Half a second at the lowest limit checked (4 Mbit/s).
const SNDBUF: usize = 128 * 1024;

static PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(5201);

/// Sends as fast as TCP allows from `from` to `to` for FLOW_SECONDS.
pub fn flow(from: &End, to: &End) -> Result<Flow> {
    let port = PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let addr = SocketAddrV4::new(to.ip, port);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
    let rx_ns = to.ns.clone();
    let receiver = std::thread::spawn(move || -> Result<(Vec<f64>, u64)> {
        let listener = enter(rx_ns.as_deref()).and_then(|()| Ok(TcpListener::bind(addr)?));
        let listener = match listener {
            Ok(l) => {
                let _ = ready_tx.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = ready_tx.send(Err(anyhow::anyhow!("listening on {addr}: {e:#}")));
                return Ok((Vec::new(), 0));
            }
        };
        let (mut s, _) = listener.accept()?;
        // A stalled flow fails the case instead of hanging the boot.
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        receive(&mut s)
    });
    ready_rx.recv().context("receiver thread")??;
    let tx_ns = from.ns.clone();
    let sender = std::thread::spawn(move || -> Result<()> {
        enter(tx_ns.as_deref())?;
        let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(5))
            .with_context(|| format!("connecting to {addr}"))?;
        // A small send buffer: what sits in it still drains at the limit
        // after the sender stops, and would stretch every flow by seconds.
        nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::SndBuf, &SNDBUF)?;
        let buf = vec![0x5au8; 64 * 1024];
        let end = Instant::now() + Duration::from_secs(FLOW_SECONDS);
        while Instant::now() < end {
            s.write_all(&buf)?;
        }
        Ok(())
    });
    // A sender that never connected leaves the receiver in accept():
    // it is left there (the program ends soon), not waited for.
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    let (per_second, total) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    if per_second.is_empty() {
        bail!("no whole second received");
    }
    Ok(Flow { per_second, total })
}

/// Reads to EOF; bits/s of each whole second since the first byte, and
/// the bytes in all.
fn receive(s: &mut TcpStream) -> Result<(Vec<f64>, u64)> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut buckets: Vec<u64> = Vec::new();
    let mut start: Option<Instant> = None;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let t0 = *start.get_or_insert_with(Instant::now);
        let sec = t0.elapsed().as_secs() as usize;
        if buckets.len() <= sec {
            buckets.resize(sec + 1, 0);
        }
        buckets[sec] += n as u64;
    }
    let total = buckets.iter().sum();
    // The last second is cut short by the sender's stop.
    buckets.pop();
    Ok((buckets.into_iter().map(|b| b as f64 * 8.0).collect(), total))
}

/// What a flood did: bytes the flooder handed to the driver, and what the
/// peer's interface received in each second.
pub struct Flood {
    pub sent: u64,
    pub per_second: Vec<u64>,
}

/// Floods `peer` from `pod`'s `eth0` for `seconds` with UDP frames sent
/// by `AF_PACKET` with `PACKET_QDISC_BYPASS`, straight to the veth past
/// the pod's qdiscs and tc hooks, as a pod with only `CAP_NET_RAW` can;
/// samples the peer's received bytes every second.
pub fn flood(pod: &Wired, host_mac: [u8; 6], peer: &Wired, seconds: u64) -> Result<Flood> {
    let ns = pod.ns.path.clone();
    let (src, dst) = (pod.ip, peer.ip);
    let mut counters = peer.ns.netlink()?;
    let rx = |nl: &mut Netlink| -> Result<u64> {
        Ok(nl
            .link_counters()?
            .into_iter()
            .find(|c| c.name == "eth0")
            .context("peer has no eth0")?
            .rx_bytes)
    };
    let t = std::thread::spawn(move || -> Result<u64> {
        enter(Some(&ns))?;
        bypass_send(host_mac, src, dst, seconds)
    });
    let start = Instant::now();
    let mut last = rx(&mut counters)?;
    let mut per_second = Vec::new();
    for s in 1..=seconds {
        let next = start + Duration::from_secs(s);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let now = rx(&mut counters)?;
        per_second.push(now - last);
        last = now;
    }
    let sent = t
        .join()
        .map_err(|_| anyhow::anyhow!("flooder panicked"))??;
    Ok(Flood { sent, per_second })
}

const FRAME: usize = 1514;

/// The flooder: one full-size UDP frame, sent again and again.
fn bypass_send(dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, seconds: u64) -> Result<u64> {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is not owned elsewhere.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: the option value is a valid c_int for the call's duration.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        bail!("PACKET_QDISC_BYPASS: {}", std::io::Error::last_os_error());
    }
    let mut nl = Netlink::new()?;
    let eth0 = nl.link_by_name("eth0")?.context("no eth0 in the pod")?;
    let frame = udp_frame(eth0.mac.unwrap_or_default(), dst_mac, src, dst);
    // SAFETY: sockaddr_ll is plain old data; zeroed is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = eth0.index as i32;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&dst_mac);
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut sent = 0u64;
    while Instant::now() < end {
        for _ in 0..64 {
            // SAFETY: frame and sll outlive the call; lengths are theirs.
            let n = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if n > 0 {
                sent += n as u64;
            }
        }
    }
    Ok(sent)
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s >> 16) + (s & 0xffff);
    }
    !(s as u16)
}

/// Ethernet + IPv4 + UDP to port 9 (discard), FRAME bytes in all.
fn udp_frame(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let ip_len = (FRAME - 14) as u16;
    let mut f = Vec::with_capacity(FRAME);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let udp_len = ip_len - 20;
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&9u16.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(FRAME, b'x');
    f
}
