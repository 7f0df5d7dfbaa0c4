//! Test harness: private network namespaces, veth "pods" and a runner that
//! invokes the built plugin binaries the way a runtime does (env + stdin,
//! JSON on stdout). Everything a test creates is named uniquely and removed
//! by a guard's `Drop`, also when the test fails.
//!
//! Topology: every test gets a "node" netns standing in for the host (the
//! plugin runs inside it, so host-side veths and ifbs never touch the real
//! host) and one or more "pod" netns, each joined to the node by a veth.

pub mod imds;
use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call, usable as an ifname (<= 15).
pub fn unique(prefix: &str) -> String {
    let name = unique_any_length(prefix);
    assert!(name.len() <= 15, "{name} too long for an ifname");
    name
}

/// A name unique to this process and call, for things that are not ifnames
/// (temp directories): no length limit, so a long prefix and a large pid
/// (CI's pids run past 0x10000) never fail a test.
pub fn unique_any_length(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() % 100_000;
    format!("{prefix}{pid:x}x{n:x}")
}

/// Runs a command and fails with its stderr when it fails.
pub fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("spawning {args:?}"))?;
    if !out.status.success() {
        bail!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command, ignoring failure (cleanup paths).
pub fn sh_quiet(args: &[&str]) {
    let _ = Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The kernel suites need root (network namespaces, tc). As another user
/// the suite's binary says so and ends successfully, so that `cargo test`
/// still runs every unit test; scripts/test.sh (as root) runs them all.
pub fn require_root() {
    // The first test to get here speaks and ends the process; the others
    // wait here for the end rather than print half a line each.
    static GATE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if !nix::unistd::geteuid().is_root() {
        let _gate = GATE.lock();
        let suite = std::env::args()
            .next()
            .and_then(|a| {
                Path::new(&a)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
            })
            .unwrap_or_default();
        // Straight to fd 2: libtest captures eprintln! per test, and the
        // capture is lost when the process exits.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: {suite} needs root (network namespaces, tc): run scripts/test.sh as root"
        );
        std::process::exit(0);
    }
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Result<Netns> {
        require_root();
        let name = unique(prefix);
        sh(&["ip", "netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.name))
    }

    pub fn path_str(&self) -> String {
        self.path().display().to_string()
    }

    /// Runs a command inside this namespace.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// `ip -j link show dev` as JSON, `None` when the link does not exist.
    pub fn link(&self, dev: &str) -> Option<Value> {
        let out = self.ip(&["-j", "-d", "link", "show", "dev", dev]).ok()?;
        let v: Value = serde_json::from_str(&out).ok()?;
        v.as_array()?.first().cloned()
    }

    /// Every link name in the namespace.
    pub fn link_names(&self) -> Vec<String> {
        let out = self.ip(&["-j", "link", "show"]).unwrap_or_default();
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["ifname"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `tc -j qdisc show dev` as JSON (qdiscs the kernel adds by default included).
    pub fn qdiscs(&self, dev: &str) -> Vec<Value> {
        self.exec(&["tc", "-j", "qdisc", "show", "dev", dev])
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// The qdisc of `kind` on `dev`, if present.
    pub fn qdisc(&self, dev: &str, kind: &str) -> Option<Value> {
        self.qdiscs(dev).into_iter().find(|q| q["kind"] == kind)
    }

    /// `tc -j filter show dev X ingress` (or another parent).
    pub fn filters(&self, dev: &str, parent: &str) -> Vec<Value> {
        self.exec(&["tc", "-j", "filter", "show", "dev", dev, parent])
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// The bandwidth plugin's parked ifbs (its `ifbPool`): down, named
    /// `ifb-parked<N>`, marked `cni-bandwidth parked pool=<state dir>`.
    pub fn parked_ifbs(&self) -> Vec<String> {
        self.link_names()
            .into_iter()
            .filter(|n| self.is_parked_ifb(n))
            .collect()
    }

    fn is_parked_ifb(&self, name: &str) -> bool {
        if !name.starts_with(PARKED_IFB_PREFIX) {
            return false;
        }
        let Some(l) = self.link(name) else {
            return false;
        };
        let marked = l["ifalias"]
            .as_str()
            .is_some_and(|a| a.starts_with("cni-bandwidth parked pool="));
        let up = l["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "UP"));
        marked && !up && l["linkinfo"]["info_kind"] == "ifb"
    }

    /// What pods' networking can leave behind in a node netns, as readable
    /// lines: any link but `lo` (and up to [`MAX_PARKED_IFBS`] of the
    /// bandwidth plugin's parked ifbs, which outlive pods by design), and
    /// any shaping qdisc (tbf, ingress, clsact).
    pub fn node_leftovers(&self) -> Vec<String> {
        let names = self.link_names();
        let parked = names.iter().filter(|l| self.is_parked_ifb(l)).count();
        let mut left: Vec<String> = names
            .into_iter()
            .filter(|l| l != "lo" && !self.is_parked_ifb(l))
            .map(|l| format!("node link {l}"))
            .collect();
        if parked > MAX_PARKED_IFBS {
            left.push(format!("{parked} parked ifbs (at most {MAX_PARKED_IFBS})"));
        }
        let qdiscs: Value = self
            .exec(&["tc", "-j", "qdisc", "show"])
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null);
        for q in qdiscs.as_array().into_iter().flatten() {
            if ["tbf", "htb", "bfifo", "ingress", "clsact"]
                .contains(&q["kind"].as_str().unwrap_or_default())
            {
                left.push(format!("qdisc {q}"));
            }
        }
        left.extend(
            self.backstop_tables()
                .into_iter()
                .map(|t| format!("nft table {t}")),
        );
        left
    }

    /// Our backstop tables (`nft list tables`, `netdev cni_bw_…`).
    pub fn backstop_tables(&self) -> Vec<String> {
        self.exec(&["nft", "list", "tables"])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2))
            .filter(|n| n.starts_with("cni_bw_"))
            .map(str::to_string)
            .collect()
    }

    /// A fingerprint of everything tc and link state in the namespace,
    /// to prove that a failed invocation changed nothing.
    pub fn snapshot(&self) -> String {
        let links = self.ip(&["-d", "link", "show"]).unwrap_or_default();
        let mut out = strip_counters(&links);
        for name in self.link_names() {
            out.push_str(
                &self
                    .exec(&["tc", "qdisc", "show", "dev", &name])
                    .unwrap_or_default(),
            );
            out.push_str(
                &self
                    .exec(&["tc", "filter", "show", "dev", &name, "ingress"])
                    .unwrap_or_default(),
            );
        }
        out
    }
}

/// The name prefix of the bandwidth plugin's parked ifbs.
pub const PARKED_IFB_PREFIX: &str = "ifb-parked";
/// The bandwidth plugin's default `ifbPool`.
pub const MAX_PARKED_IFBS: usize = 16;

/// Drops what changes by itself in `ip link` output: carrier and
/// operational state follow the peer, not anything a plugin did.
fn strip_counters(s: &str) -> String {
    s.lines()
        .map(|l| {
            let l = l.replace("NO-CARRIER,", "");
            match l.find(" state ") {
                Some(i) => {
                    let rest = &l[i + 7..];
                    let end = rest.find(' ').unwrap_or(rest.len());
                    format!("{}{}", &l[..i], &rest[end..])
                }
                None => l,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Drop for Netns {
    fn drop(&mut self) {
        sh_quiet(&["ip", "netns", "del", &self.name]);
    }
}

/// A pod: its own netns, joined to the node by a veth (`host` in the node,
/// `eth0` in the pod), addressed `10.X.Y.2/24` (pod) and `.1` (node side).
pub struct Pod {
    pub ns: Netns,
    pub host_veth: String,
    pub ifname: String,
    pub pod_ip: String,
    pub host_ip: String,
    pub container_id: String,
}

impl Pod {
    pub fn new(node: &Netns) -> Result<Pod> {
        let ns = Netns::new("cnip")?;
        let host_veth = unique("vh");
        let ifname = "eth0".to_string();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let subnet = format!("10.{}.{}", 100 + (n / 250) % 100, n % 250);
        let pod_ip = format!("{subnet}.2");
        let host_ip = format!("{subnet}.1");
        node.ip(&[
            "link", "add", &host_veth, "type", "veth", "peer", "name", &ifname, "netns", &ns.name,
        ])?;
        node.ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host_veth])?;
        node.ip(&["link", "set", &host_veth, "up"])?;
        ns.ip(&["addr", "add", &format!("{pod_ip}/24"), "dev", &ifname])?;
        ns.ip(&["link", "set", &ifname, "up"])?;
        ns.ip(&["route", "add", "default", "via", &host_ip])?;
        Ok(Pod {
            container_id: format!("ctr{}", unique("")),
            ns,
            host_veth,
            ifname,
            pod_ip,
            host_ip,
        })
    }

    /// Sets the MTU on both ends (AWS pods run at 9001).
    pub fn set_mtu(&self, node: &Netns, mtu: u32) -> Result<()> {
        let m = mtu.to_string();
        node.ip(&["link", "set", &self.host_veth, "mtu", &m])?;
        self.ns.ip(&["link", "set", &self.ifname, "mtu", &m])?;
        Ok(())
    }

    /// A prevResult like a main plugin's: the host veth (no sandbox), the
    /// container interface (sandbox = netns) and its IP.
    pub fn prev_result(&self, version: &str) -> Value {
        let mut ip = serde_json::json!({"interface": 1, "address": format!("{}/24", self.pod_ip)});
        if version.starts_with("0.") {
            ip["version"] = "4".into();
        }
        serde_json::json!({
            "cniVersion": version,
            "interfaces": [
                {"name": self.host_veth},
                {"name": self.ifname, "sandbox": self.ns.path_str()}
            ],
            "ips": [ip]
        })
    }

    /// The environment of an invocation for this pod.
    pub fn env(&self, command: &str) -> Vec<(String, String)> {
        vec![
            ("CNI_COMMAND".into(), command.into()),
            ("CNI_CONTAINERID".into(), self.container_id.clone()),
            ("CNI_NETNS".into(), self.ns.path_str()),
            ("CNI_IFNAME".into(), self.ifname.clone()),
            ("CNI_PATH".into(), "/opt/cni/bin".into()),
            (
                "CNI_ARGS".into(),
                format!(
                    "K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID=uid-{};IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={}",
                    self.container_id, self.ns.name, self.ns.name
                ),
            ),
        ]
    }
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository root")
}

/// Serialises the tests of one binary that need the machine to themselves
/// (traffic measurements, a private containerd): two cores.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `base` with every key of `extra` set on top (a `null` removes the key):
/// one test config from a base and what the case changes.
pub fn merged(mut base: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        match (v.is_null(), base.as_object_mut()) {
            (true, Some(o)) => {
                o.remove(&k);
            }
            _ => base[k] = v,
        }
    }
    base
}

/// The workspace's target directory (honours CARGO_TARGET_DIR).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// A built plugin binary; `CNI_TEST_PROFILE=release` picks release builds,
/// `CNI_TEST_PLUGIN_DIR` another directory (the arm64 release binaries the
/// qemu tier runs: see `CNI_TEST_PLUGIN_RUNNER`).
pub fn plugin_bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("CNI_TEST_PLUGIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let profile = std::env::var("CNI_TEST_PROFILE").unwrap_or_else(|_| "debug".into());
            target_dir().join(profile)
        }
    };
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace` first",
        p.display()
    );
    p
}

/// The emulator plugins run under (`CNI_TEST_PLUGIN_RUNNER`, e.g.
/// `qemu-aarch64-static` for the arm64 tier), or none: the kernel runs them.
pub fn plugin_runner() -> Option<String> {
    std::env::var("CNI_TEST_PLUGIN_RUNNER")
        .ok()
        .filter(|r| !r.is_empty())
}

/// Whether the plugins run under qemu-user, whose netlink translation
/// refuses every message type but links, addresses and routes (no tc, no
/// RTM_GETNSID): tests that need those skip themselves there.
pub fn under_emulation() -> bool {
    plugin_runner().is_some()
}

/// What a plugin invocation produced.
#[derive(Debug)]
pub struct Outcome {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Outcome {
    /// A finished process's exit status (-1 when killed by a signal) and
    /// its output as text.
    fn from(out: Output) -> Outcome {
        Outcome {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Outcome {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or(Value::Null)
    }

    /// Panics with the plugin's own words unless it succeeded.
    pub fn ok(self) -> Outcome {
        assert_eq!(
            self.status, 0,
            "plugin failed: stdout={} stderr={}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts a CNI error with `code` and returns it.
    pub fn err(self, code: u64) -> Value {
        assert_ne!(self.status, 0, "expected failure, got: {}", self.stdout);
        let v = self.json();
        assert_eq!(
            v["code"].as_u64(),
            Some(code),
            "wrong code: stdout={} stderr={}",
            self.stdout,
            self.stderr
        );
        assert!(
            v["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "no msg: {}",
            self.stdout
        );
        assert!(
            v["cniVersion"].is_string(),
            "no cniVersion: {}",
            self.stdout
        );
        v
    }
}

/// `bin` as a runtime starts it: exactly `env` (nothing inherited), inside
/// `netns` when given.
fn plugin_command(bin: &Path, netns: Option<&Netns>, env: &[(String, String)]) -> Command {
    let mut argv: Vec<std::ffi::OsString> = Vec::new();
    if let Some(ns) = netns {
        argv.extend(["ip", "netns", "exec", &ns.name].map(Into::into));
    }
    argv.extend(plugin_runner().map(Into::into));
    argv.push(bin.into());
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `bin` with exactly `env` (nothing inherited) and `stdin`, inside
/// `netns` when given (as the runtime runs plugins in the host netns).
pub fn run_plugin(
    bin: &Path,
    netns: Option<&Netns>,
    env: &[(String, String)],
    stdin: &[u8],
) -> Outcome {
    let mut cmd = plugin_command(bin, netns, env);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plugin");
    if let Some(mut si) = child.stdin.take() {
        // The plugin may refuse to read everything (oversized input): ignore EPIPE.
        let _ = si.write_all(stdin);
    }
    Outcome::from(child.wait_with_output().expect("wait plugin"))
}

/// Env pairs from string slices.
pub fn env_of(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Replaces (or adds) one variable in an env list.
pub fn with_env(mut env: Vec<(String, String)>, key: &str, value: &str) -> Vec<(String, String)> {
    env.retain(|(k, _)| k != key);
    env.push((key.into(), value.into()));
    env
}

/// Removes one variable from an env list.
pub fn without_env(mut env: Vec<(String, String)>, key: &str) -> Vec<(String, String)> {
    env.retain(|(k, _)| k != key);
    env
}

/// The shared samples handed to us (`../shared/samples` from the repo root),
/// with a copy under `tests/samples` so a clean clone does not depend on it.
pub fn sample(name: &str) -> Value {
    let local = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name);
    let text =
        std::fs::read_to_string(&local).unwrap_or_else(|e| panic!("{}: {e}", local.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", local.display()))
}

/// A temp directory removed on drop (state dirs of plugins under test).
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique_any_length(prefix));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn str(&self) -> String {
        self.path.display().to_string()
    }

    /// Files directly inside (state files a plugin left).
    pub fn files(&self) -> Vec<String> {
        std::fs::read_dir(&self.path)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Per-second throughput measured at the receiver by iperf3.
#[derive(Debug, Clone)]
pub struct Throughput {
    /// bits/s of each one-second interval, as the receiving side saw it.
    pub per_second: Vec<f64>,
    /// TCP payload bytes the receiver got in the whole run.
    pub bytes: u64,
}

impl Throughput {
    /// The shaping acceptance bounds of the bandwidth issue, measured at the
    /// receiver: the first second at most 1.1x the rate (a runtime's
    /// "unlimited" burst is capped) and the steady state (the median second
    /// after the first)
    /// within 3% of it. `what` names the case in the failure message.
    pub fn assert_shaped(&self, rate_bits: u64, what: &str) {
        let r = rate_bits as f64;
        let first = self.per_second[0] / r;
        let steady = self.steady(1) / r;
        eprintln!(
            "{what}: first second {first:.3}x, steady {steady:.4}x, per second {:?}",
            self.per_second
        );
        assert!(
            first <= 1.10,
            "{what}: first second {first:.3}x of the rate"
        );
        assert!(
            (0.97..=1.03).contains(&steady),
            "{what}: steady state {steady:.4}x of the rate"
        );
    }

    /// Median of the intervals after the first `skip`. Not the mean: the
    /// receiver's one-second intervals are cut by its own timer, and on a
    /// 2-core machine a late tick moves bytes from one interval to the next
    /// (measured at 10M: 7.2 then 12.5 Mbit/s, with 9.95 on either side), or
    /// the last interval runs past the moment the sender stopped (8.2 where
    /// the rest read 9.8..10.3). A shaper that is off is off in most
    /// seconds, which the median still shows.
    pub fn steady(&self, skip: usize) -> f64 {
        let mut rest: Vec<f64> = self.per_second.iter().skip(skip).copied().collect();
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
}

/// Runs iperf3 for `seconds` with the server (the receiver) in `receiver`
/// and the client (the sender) in `sender`, and returns the receiver's
/// per-second figures (the sender's would count what sits in its buffers).
pub fn iperf(
    receiver: &Netns,
    receiver_ip: &str,
    sender: &Netns,
    seconds: u32,
) -> Result<Throughput> {
    iperf_with(receiver, receiver_ip, sender, seconds, &[])
}

/// [`iperf`] with more client arguments (`-b 1G` to pace a flow, `-6`).
pub fn iperf_with(
    receiver: &Netns,
    receiver_ip: &str,
    sender: &Netns,
    seconds: u32,
    client_args: &[&str],
) -> Result<Throughput> {
    let port = 5201 + (COUNTER.fetch_add(1, Ordering::Relaxed) % 500) as u16;
    let port_s = port.to_string();
    let server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &receiver.name,
            "iperf3",
            "-s",
            "-1",
            "-J",
            "-p",
            &port_s,
            "-B",
            receiver_ip,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting iperf3 server")?;
    // Wait until the server listens.
    let mut ready = false;
    for _ in 0..50 {
        let ss = receiver.exec(&["ss", "-ltn"]).unwrap_or_default();
        if ss.contains(&format!(":{port} ")) {
            ready = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if !ready {
        bail!("iperf3 server did not start");
    }
    let secs = seconds.to_string();
    let mut args = vec![
        "iperf3",
        "-c",
        receiver_ip,
        "-p",
        &port_s,
        "-t",
        &secs,
        "-J",
    ];
    args.extend_from_slice(client_args);
    let client = sender.exec(&args);
    let out = server
        .wait_with_output()
        .context("waiting for iperf3 server")?;
    client.context("iperf3 client")?;
    let v: Value = serde_json::from_slice(&out.stdout).context("iperf3 server JSON")?;
    let per_second: Vec<f64> = v["intervals"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|i| i["sum"]["seconds"].as_f64().unwrap_or(0.0) > 0.5)
                .filter_map(|i| i["sum"]["bits_per_second"].as_f64())
                .collect()
        })
        .unwrap_or_default();
    if per_second.is_empty() {
        bail!(
            "iperf3 reported no intervals: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let bytes = v["end"]["sum_received"]["bytes"]
        .as_u64()
        .unwrap_or_else(|| {
            v["intervals"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["sum"]["bytes"].as_u64())
                .sum()
        });
    Ok(Throughput { per_second, bytes })
}

/// A process killed on drop (listeners in test namespaces).
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An iperf3 server listening on `port` in `ns` until dropped.
pub fn listener(ns: &Netns, port: u16) -> Child {
    let p = port.to_string();
    let c = Command::new("ip")
        .args(["netns", "exec", &ns.name, "iperf3", "-s", "-p", &p])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn listener");
    for _ in 0..50 {
        if ns
            .exec(&["ss", "-ltn"])
            .unwrap_or_default()
            .contains(&format!(":{port} "))
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Child(c)
}

/// Whether a TCP connection from `from` to ip:port completes within 2 s.
pub fn tcp_connects(from: &Netns, ip: &str, port: u16) -> bool {
    from.exec(&[
        "timeout",
        "2",
        "bash",
        "-c",
        &format!("exec 3<>/dev/tcp/{ip}/{port}"),
    ])
    .is_ok()
}

/// Regular files under `dir`, recursively, except lock files (`.lock`:
/// the state store keeps its lock file, by design; `.ifb-pool`: so does
/// the bandwidth plugin's pool of parked ifbs).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e.file_name() != ".lock" && e.file_name() != ".ifb-pool" {
                out.push(p);
            }
        }
    }
    out
}

/// How [`run_plugin_within`] wires the plugin's stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    Captured,
    /// `/dev/full`: every write fails with ENOSPC.
    Full,
}

/// Like [`run_plugin`], but a plugin that has not finished after `limit`
/// is killed and `None` returned: a hung verb fails its test instead of
/// hanging the suite.
pub fn run_plugin_within(
    bin: &Path,
    netns: Option<&Netns>,
    env: &[(String, String)],
    stdin: &[u8],
    limit: std::time::Duration,
    stderr: Stderr,
) -> Option<Outcome> {
    let mut cmd = plugin_command(bin, netns, env);
    let err = match stderr {
        Stderr::Captured => Stdio::piped(),
        Stderr::Full => Stdio::from(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .expect("/dev/full"),
        ),
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .expect("spawn plugin");
    if let Some(mut si) = child.stdin.take() {
        let _ = si.write_all(stdin);
    }
    let deadline = std::time::Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    Some(Outcome::from(
        child.wait_with_output().expect("wait plugin"),
    ))
}
