//! End-to-end tests under a real containerd (Debian's 1.6), driven over CRI
//! with the `k8s-cri` client, the way the kubelet drives it.
//!
//! Each test starts a **private** containerd: its own config, root, state,
//! sockets, runc root, CNI `bin_dir` (our plugins, `vpc-cni-sim` and
//! Debian's `loopback`) and `conf_dir` (conflist-examples/single-node-sim.conflist
//! with temp `stateDir`s), all in a temp dir. It runs inside a "node"
//! network namespace made by the test (`nsenter --net=NODE unshare --mount
//! --propagation slave containerd`): containerd creates the pod netns from
//! there, and the plugins it runs put the host-side `eni…` veths and `bwp…`
//! ifbs in the node netns, never in the host's. Its private (slave) mount
//! namespace keeps the sandboxes' rootfs and netns mounts out of the host's
//! mount table; they vanish with containerd's processes. (`ip netns exec`
//! does not work here: it remounts /sys for the netns, which hides the
//! cgroup mounts under /sys/fs/cgroup, and runc then fails with "no cgroup
//! mount found in mountinfo".) `netns_mounts_under_state_dir` keeps the pod
//! netns out of /var/run/netns, and runc's `Root` keeps its state out of
//! /run/containerd/runc.
//!
//! No image can be pulled: the sandbox image is built here from a static
//! pause binary (`tests/src/bin/pause.rs`, compiled with `rustc -C
//! target-feature=+crt-static`) as an OCI image layout tarball and imported
//! with `ctr -n k8s.io images import`.
//!
//! Cleanup (also when a test fails) is by name or PID only: the sandboxes'
//! processes (found by our unique cgroup parent), the shims (whose command
//! line names our socket), containerd (its PID), our cgroups, the shim
//! sockets containerd 1.6 puts under `/run/containerd/s` (named by a hash of
//! our socket and the sandbox id), libcni's cache files in
//! `/var/lib/cni/results` naming our sandbox ids, the node netns, the temp
//! dir.
//!
//! Needs root, `containerd`, `runc`, `ctr`, `iperf3`, `tar`, `rustc`
//! (scripts/test.sh installs the packages).

use anyhow::{Context as _, Result, bail};
use hyper_util::rt::TokioIo;
use integration_tests::*;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    LinuxPodSandboxConfig, ListPodSandboxRequest, PodSandboxConfig, PodSandboxMetadata,
    PodSandboxStatusRequest, PodSandboxStatusResponse, RemovePodSandboxRequest,
    RunPodSandboxRequest, StatusRequest, StopPodSandboxRequest, VersionRequest,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tonic::transport::{Channel, Endpoint, Uri};

const RATE: u64 = 50_000_000;
const RATE_Q: &str = "50M";
/// The default tbf bucket at RATE: 25 ms, in bytes.
const BUCKET: u64 = RATE / 8 * 25 / 1000;
const NODE_IP: &str = "10.99.255.254";
const POD_NAMESPACE: &str = "e2e";
const ZONE: &str = "us-west-2a";
const CHAIN: &str = "single-node-sim.conflist";
const STATEFUL: [&str; 3] = ["vpc-cni-sim", "bandwidth", "topology-label"];
const IMAGE: &str = "localhost/cni-e2e/pause:1";
const K8S_NS: &str = "k8s.io";
const SECONDS: u32 = 5;
/// containerd 1.6 puts shim sockets here whatever its config says.
const SHIM_SOCKETS: &str = "/run/containerd/s";
/// libcni's default cache dir, which containerd 1.6 does not let us move.
const CNI_RESULTS: &str = "/var/lib/cni/results";
/// Where our plugins keep state by default (bound to a temp dir for them).
const RUN_CNI: &str = "/run/cni";

/// One containerd at a time: the traffic test needs both cores to itself.
fn serial() -> MutexGuard<'static, ()> {
    integration_tests::require_root();
    integration_tests::serial()
}

fn repo() -> PathBuf {
    integration_tests::repo_root()
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Runs a tool the test needs, with a clear message when it is missing.
fn tool(args: &[&str]) -> Result<String> {
    match Command::new(args[0]).args(&args[1..]).output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{}` not found: apt-get install containerd runc iperf3 (scripts/test.sh installs them)",
            args[0]
        ),
        Err(e) => Err(e).with_context(|| format!("spawning {args:?}")),
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => bail!(
            "{args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    }
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------
// The sandbox image

/// The static pause binary, compiled once into target/cri-e2e (skipped when
/// newer than its source).
fn pause_binary() -> PathBuf {
    let src = repo().join("tests/src/bin/pause.rs");
    let dir = target_dir().join("cri-e2e");
    let out = dir.join("pause");
    if mtime(&out).is_some_and(|t| Some(t) >= mtime(&src)) {
        return out;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join(format!("pause.tmp{}", std::process::id()));
    // glibc's static libc (libc6-dev) links a static-pie: nothing to load
    // in an image that holds this one file.
    let o = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args([
            "--edition",
            "2024",
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
        ])
        .args(["-C", "strip=symbols", "-C", "target-feature=+crt-static"])
        .arg(&src)
        .arg("-o")
        .arg(&tmp)
        .output()
        .expect("running rustc");
    assert!(
        o.status.success(),
        "rustc (static pause): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// A blob in the layout; returns its descriptor.
fn put_blob(layout: &Path, media_type: &str, data: &[u8]) -> Value {
    let digest = sha256_hex(data);
    std::fs::write(layout.join("blobs/sha256").join(&digest), data).unwrap();
    json!({"mediaType": media_type, "digest": format!("sha256:{digest}"), "size": data.len()})
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `tar` with fixed owner and times, so the image is the same every run.
fn tar(dir: &Path, out: &Path, members: &[&str]) {
    tool(
        &[
            "tar",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
            "--sort=name",
            "-C",
            &dir.display().to_string(),
            "-cf",
            &out.display().to_string(),
        ]
        .iter()
        .chain(members)
        .copied()
        .collect::<Vec<_>>(),
    )
    .unwrap();
}

/// The pause image as an OCI image layout tarball: `oci-layout`,
/// `index.json` (named by `io.containerd.image.name`), and blobs: one
/// uncompressed layer holding `/pause`, a config with `Entrypoint
/// ["/pause"]`, and the manifest. Built once per test process.
fn pause_image() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let work = TempDir::new("crie2eimg");
        let rootfs = work.path.join("rootfs");
        let layout = work.path.join("layout");
        std::fs::create_dir_all(&rootfs).unwrap();
        std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
        std::fs::copy(pause_binary(), rootfs.join("pause")).unwrap();
        let layer_tar = work.path.join("layer.tar");
        tar(&rootfs, &layer_tar, &["pause"]);
        let layer = std::fs::read(&layer_tar).unwrap();
        let layer_desc = put_blob(&layout, "application/vnd.oci.image.layer.v1.tar", &layer);
        let config = json!({
            "architecture": go_arch(),
            "os": "linux",
            "config": {"Entrypoint": ["/pause"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]}
        });
        let config_desc = put_blob(
            &layout,
            "application/vnd.oci.image.config.v1+json",
            config.to_string().as_bytes(),
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": [layer_desc]
        });
        let mut manifest_desc = put_blob(
            &layout,
            "application/vnd.oci.image.manifest.v1+json",
            manifest.to_string().as_bytes(),
        );
        manifest_desc["platform"] = json!({"architecture": go_arch(), "os": "linux"});
        manifest_desc["annotations"] = json!({
            "io.containerd.image.name": IMAGE,
            "org.opencontainers.image.ref.name": "1"
        });
        std::fs::write(
            layout.join("index.json"),
            json!({"schemaVersion": 2, "manifests": [manifest_desc]}).to_string(),
        )
        .unwrap();
        std::fs::write(
            layout.join("oci-layout"),
            json!({"imageLayoutVersion": "1.0.0"}).to_string(),
        )
        .unwrap();
        let dir = target_dir().join("cri-e2e");
        std::fs::create_dir_all(&dir).unwrap();
        // The same bytes every run: written aside, then renamed over.
        let tmp = dir.join(format!("pause-image.tar.tmp{}", std::process::id()));
        tar(&layout, &tmp, &["blobs", "index.json", "oci-layout"]);
        let out = dir.join("pause-image.tar");
        std::fs::rename(&tmp, &out).unwrap();
        out
    })
}

// ---------------------------------------------------------------------------
// The CRI client

/// A CRI runtime client over containerd's unix socket, on a
/// current-thread tokio runtime (every call is `block_on`).
struct Cri {
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
}

impl Cri {
    fn connect(socket: &Path) -> Result<Cri> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let path = socket.to_path_buf();
        let channel = rt.block_on(async {
            // The URI is required by tonic and ignored by the connector.
            Endpoint::try_from("http://[::]:50051")?
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
                .await
        })?;
        Ok(Cri {
            rt,
            client: RuntimeServiceClient::new(channel),
        })
    }

    /// Runs one call with a deadline; errors carry the gRPC status message.
    fn call<T, F>(&self, what: &str, fut: F) -> Result<T>
    where
        F: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        match self
            .rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(90), fut).await })
        {
            Err(_) => bail!("{what}: no answer within 90 s"),
            Ok(Err(status)) => bail!("{what}: {:?}: {}", status.code(), status.message()),
            Ok(Ok(resp)) => Ok(resp.into_inner()),
        }
    }

    fn version(&self) -> Result<String> {
        let mut c = self.client.clone();
        let v = self.call("Version", c.version(VersionRequest::default()))?;
        Ok(format!("{} {}", v.runtime_name, v.runtime_version))
    }

    /// Whether containerd has loaded a CNI config (condition NetworkReady).
    fn network_ready(&self) -> Result<bool> {
        let mut c = self.client.clone();
        let s = self.call("Status", c.status(StatusRequest { verbose: false }))?;
        Ok(s.status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.r#type == "NetworkReady" && c.status)
        }))
    }

    fn run(&self, config: PodSandboxConfig) -> Result<String> {
        let mut c = self.client.clone();
        let r = self.call(
            "RunPodSandbox",
            c.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            }),
        )?;
        Ok(r.pod_sandbox_id)
    }

    fn status(&self, id: &str) -> Result<PodSandboxStatusResponse> {
        let mut c = self.client.clone();
        self.call(
            "PodSandboxStatus",
            c.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            }),
        )
    }

    fn stop(&self, id: &str) -> Result<()> {
        let mut c = self.client.clone();
        self.call(
            "StopPodSandbox",
            c.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            }),
        )
        .map(|_| ())
    }

    fn remove(&self, id: &str) -> Result<()> {
        let mut c = self.client.clone();
        self.call(
            "RemovePodSandbox",
            c.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            }),
        )
        .map(|_| ())
    }

    fn list(&self) -> Result<Vec<String>> {
        let mut c = self.client.clone();
        let r = self.call(
            "ListPodSandbox",
            c.list_pod_sandbox(ListPodSandboxRequest { filter: None }),
        )?;
        Ok(r.items.into_iter().map(|s| s.id).collect())
    }
}

// ---------------------------------------------------------------------------
// The node: a private containerd in its own netns

/// Every 64-hex-digit word in `s` (sandbox ids in containerd's errors).
fn ids_in(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_ascii_hexdigit())
        .filter(|w| w.len() == 64)
        .map(str::to_string)
        .collect()
}

/// PIDs of live processes for which `pred(pid)` holds.
fn pids_where(pred: impl Fn(u32) -> bool) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != std::process::id() && pred(pid))
        .collect()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn kill(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// The inode of the network namespace of `pid`.
fn netns_inode(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// A private containerd in its own "node" netns, torn down on drop (also
/// when the test fails): see the module doc for what is removed and how.
struct Node {
    /// Where the pods' host sides land, and where containerd runs.
    ns: Netns,
    dir: TempDir,
    socket: PathBuf,
    /// Unique cgroup parent of our sandboxes (cgroupfs driver).
    cgroup_parent: String,
    containerd: Option<std::process::Child>,
    /// Sandbox ids seen (responses, errors): what the cleanup looks for.
    ids: Mutex<HashSet<String>>,
    /// Which of the shared dirs containerd or libcni may create
    /// (/run/containerd/s, /var/lib/cni/results and their parents) existed
    /// before us: the others are removed on drop if empty.
    preexisting: Vec<PathBuf>,
    cri: Option<Cri>,
    /// Whether /run/cni is bound to `cni-state` in containerd's mount
    /// namespace (the image test: plugins with their default stateDir),
    /// and whether this test created the empty /run/cni mount point.
    run_cni: Option<bool>,
}

impl Node {
    /// Starts a private containerd with the chain rendered from
    /// single-node-sim.conflist, then `edit` applied to it.
    fn start(edit: impl FnOnce(&mut Value)) -> Node {
        Node::start_with(edit, &STATEFUL, false)
    }

    /// As `start`, with only `plugins` (of STATEFUL) in the CNI bin dir,
    /// and with `run_cni`, /run/cni bound to the node's `cni-state` dir
    /// inside containerd's own mount namespace: plugins the chain runs
    /// with their default state dirs (/run/cni/<plugin>) write there, not
    /// in this machine's /run/cni.
    fn start_with(edit: impl FnOnce(&mut Value), plugins: &[&str], run_cni: bool) -> Node {
        for t in ["containerd", "ctr", "runc"] {
            tool(&[t, "--version"]).unwrap();
        }
        let ns = Netns::new("crin").unwrap();
        let dir = TempDir::new("crie2e");
        let mut node = Node {
            socket: dir.path.join("containerd.sock"),
            cgroup_parent: format!("/{}", unique("crie2e")),
            ns,
            dir,
            containerd: None,
            ids: Mutex::new(HashSet::new()),
            preexisting: ["/run/containerd", SHIM_SOCKETS, "/var/lib/cni", CNI_RESULTS]
                .iter()
                .map(PathBuf::from)
                .filter(|p| p.exists())
                .collect(),
            cri: None,
            run_cni: None,
        };
        if run_cni {
            let created = !Path::new(RUN_CNI).exists();
            std::fs::create_dir_all(RUN_CNI).unwrap();
            std::fs::create_dir_all(node.path("cni-state")).unwrap();
            node.run_cni = Some(created);
        }
        node.ns
            .ip(&["addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"])
            .unwrap();
        node.ns
            .exec(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
            .unwrap();
        node.write_cni(edit, plugins);
        node.write_config();
        node.spawn();
        node
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path.join(rel)
    }

    fn cri(&self) -> &Cri {
        self.cri.as_ref().expect("CRI connected")
    }

    fn write_cni(&self, edit: impl FnOnce(&mut Value), plugins: &[&str]) {
        let bin = self.path("cni-bin");
        std::fs::create_dir_all(&bin).unwrap();
        for p in plugins {
            std::os::unix::fs::symlink(plugin_bin(p), bin.join(p)).unwrap();
        }
        let loopback = Path::new("/usr/lib/cni/loopback");
        assert!(
            loopback.exists(),
            "{} missing: apt-get install containernetworking-plugins (scripts/test.sh installs it)",
            loopback.display()
        );
        std::os::unix::fs::symlink(loopback, bin.join("loopback")).unwrap();
        let text = std::fs::read_to_string(repo().join("conflist-examples").join(CHAIN)).unwrap();
        let mut v: Value = serde_json::from_str(&text).unwrap();
        for p in v["plugins"].as_array_mut().unwrap() {
            let t = p["type"].as_str().unwrap_or_default().to_string();
            if STATEFUL.contains(&t.as_str()) {
                p["stateDir"] = self.state_dir(&t).display().to_string().into();
            }
        }
        edit(&mut v);
        let conf = self.path("net.d");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(
            conf.join("10-aws.conflist"),
            serde_json::to_string_pretty(&v).unwrap(),
        )
        .unwrap();
    }

    fn state_dir(&self, plugin: &str) -> PathBuf {
        self.path("cni-state").join(plugin)
    }

    fn write_config(&self) {
        let d = |rel: &str| self.path(rel).display().to_string();
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.opt",
]

[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  # root lacks CAP_SYS_RESOURCE on this VM
  restrict_oom_score_adj = true
  # pod netns mounts under our state dir, not /var/run/netns
  netns_mounts_under_state_dir = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        # runc's state under our temp dir, not /run/containerd/runc
        Root = "{runc}"
"#,
            root = d("root"),
            state = d("state"),
            socket = self.socket.display(),
            bin = d("cni-bin"),
            conf = d("net.d"),
            runc = d("runc"),
        );
        std::fs::write(self.path("config.toml"), config).unwrap();
    }

    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.path("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// containerd in the node netns; waits until CRI answers and the CNI
    /// config is loaded, then imports the pause image.
    fn spawn(&mut self) {
        let log = std::fs::File::create(self.path("containerd.log")).unwrap();
        // Not `ip netns exec`: it remounts /sys for the netns, which drops
        // the cgroup mounts under /sys/fs/cgroup from containerd's view
        // (runc: "no cgroup mount found in mountinfo"). nsenter joins the
        // node netns; unshare gives containerd its own slave mount
        // namespace, so its mounts never reach the host's mount table.
        // Both exec: the child's PID is containerd's.
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.ns.path_str())).args([
            "unshare",
            "--mount",
            "--propagation",
            "slave",
        ]);
        if self.run_cni.is_some() {
            // The bind exists only in containerd's mount namespace (and
            // its shims', containers' and plugins').
            cmd.args(["sh", "-c", "mount --bind \"$0\" /run/cni && exec \"$@\""])
                .arg(self.path("cni-state"));
        }
        let child = cmd
            .args(["containerd", "--config"])
            .arg(self.path("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn nsenter unshare containerd");
        self.containerd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.containerd.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "containerd exited ({st}); is it installed (apt-get install containerd runc)?\n{}",
                    self.log()
                );
            }
            if self.cri.is_none() && self.socket.exists() {
                self.cri = Cri::connect(&self.socket).ok();
            }
            if let Some(cri) = &self.cri
                && cri.network_ready().unwrap_or(false)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "containerd not ready (CRI + CNI config) within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("{}", self.cri().version().unwrap());
        self.ctr(&["images", "import"], &[pause_image()]);
    }

    fn ctr(&self, args: &[&str], paths: &[&Path]) -> String {
        let sock = self.socket.display().to_string();
        let mut full = vec!["ctr", "--address", &sock, "-n", K8S_NS];
        full.extend_from_slice(args);
        let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        full.extend(paths.iter().map(String::as_str));
        tool(&full).unwrap()
    }

    fn remember(&self, ids: impl IntoIterator<Item = String>) {
        self.ids.lock().unwrap().extend(ids);
    }

    /// RunPodSandbox; on failure the sandbox id in containerd's error is
    /// remembered for the cleanup.
    fn run_pod(&self, config: PodSandboxConfig) -> Result<String> {
        let r = self.cri().run(config);
        match &r {
            Ok(id) => self.remember([id.clone()]),
            Err(e) => self.remember(ids_in(&e.to_string())),
        }
        r
    }

    /// Files under the plugins' state dirs (lock files are kept by design).
    fn state_files(&self) -> Vec<PathBuf> {
        files_under(&self.path("cni-state"))
    }

    /// libcni cache files naming one of our sandboxes.
    fn cached_results(&self) -> Vec<PathBuf> {
        let ids = self.ids.lock().unwrap().clone();
        std::fs::read_dir(CNI_RESULTS)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                ids.iter().any(|id| n.contains(id.as_str()))
            })
            .collect()
    }

    /// Everything a sandbox could leave behind on the node, as readable lines.
    fn leftovers(&self) -> Vec<String> {
        let mut left = self.ns.node_leftovers();
        let routes = self.ns.ip(&["-4", "route", "show"]).unwrap_or_default();
        for r in routes.lines().filter(|r| r.starts_with("10.99.")) {
            left.push(format!("route {r}"));
        }
        for f in self.state_files() {
            left.push(format!("state file {}", f.display()));
        }
        for f in self.cached_results() {
            left.push(format!("libcni cache {}", f.display()));
        }
        for f in files_under(&self.path("state/io.containerd.grpc.v1.cri/netns")) {
            left.push(format!("netns mount {}", f.display()));
        }
        match self.cri().list() {
            Ok(l) if l.is_empty() => {}
            Ok(l) => left.push(format!("sandboxes {l:?}")),
            Err(e) => left.push(format!("ListPodSandbox: {e}")),
        }
        left
    }

    fn assert_clean(&self) {
        let left = self.leftovers();
        assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
    }

    /// Processes of our sandboxes: in our unique cgroup parent.
    fn sandbox_pids(&self) -> Vec<u32> {
        let needle = format!(":{}/", self.cgroup_parent);
        pids_where(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|c| c.contains(&needle))
        })
    }

    /// Our shims: their command line names our socket.
    fn shim_pids(&self) -> Vec<u32> {
        let sock = self.socket.display().to_string();
        pids_where(|pid| {
            let c = cmdline(pid);
            c.contains("containerd-shim") && c.contains(&sock)
        })
    }

    /// Every sandbox id containerd knows (its CRI metadata dirs) or we saw.
    fn all_ids(&self) -> HashSet<String> {
        let mut ids = self.ids.lock().unwrap().clone();
        for rel in [
            "root/io.containerd.grpc.v1.cri/sandboxes",
            "state/io.containerd.runtime.v2.task/k8s.io",
        ] {
            for e in std::fs::read_dir(self.path(rel))
                .into_iter()
                .flatten()
                .flatten()
            {
                ids.extend(ids_in(&e.file_name().to_string_lossy()));
            }
        }
        ids
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        use nix::sys::signal::Signal::{SIGKILL, SIGTERM};
        let ids = self.all_ids();
        self.cri = None;
        // Sandboxes and shims first (they outlive containerd), then containerd.
        for pid in self.sandbox_pids().into_iter().chain(self.shim_pids()) {
            kill(pid, SIGKILL);
        }
        if let Some(mut c) = self.containerd.take() {
            kill(c.id(), SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(self.sandbox_pids().is_empty() && self.shim_pids().is_empty())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Our cgroups (empty once their processes are gone).
        for ctrl in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let parent = ctrl.path().join(self.cgroup_parent.trim_start_matches('/'));
            for sub in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                if sub.path().is_dir() {
                    let _ = std::fs::remove_dir(sub.path());
                }
            }
            let _ = std::fs::remove_dir(&parent);
        }
        // Shim sockets: /run/containerd/s/sha256(<address>/<ns>/<id>).
        let sock = self.socket.display().to_string();
        for id in &ids {
            let name = sha256_hex(format!("{sock}/{K8S_NS}/{id}").as_bytes());
            let _ = std::fs::remove_file(Path::new(SHIM_SOCKETS).join(name));
        }
        self.ids.lock().unwrap().extend(ids);
        for f in self.cached_results() {
            let _ = std::fs::remove_file(f);
        }
        if self.run_cni == Some(true) {
            let _ = std::fs::remove_dir(RUN_CNI);
        }
        // Directories containerd or libcni created for us, if now empty.
        for d in [SHIM_SOCKETS, "/run/containerd", CNI_RESULTS, "/var/lib/cni"] {
            if !self.preexisting.iter().any(|p| p == Path::new(d)) {
                let _ = std::fs::remove_dir(d);
            }
        }
        // containerd's mounts lived in its own mount namespace, gone with
        // its processes; should one show here all the same, detach it
        // before the temp dir is removed. `ns` and `dir` are dropped next.
        let prefix = format!("{}/", self.dir.path.display());
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            sh_quiet(&["umount", "-l", m]);
        }
    }
}

// ---------------------------------------------------------------------------
// Pods

fn pod_config(node: &Node, name: &str, bandwidth: Option<&str>) -> PodSandboxConfig {
    let mut annotations = HashMap::new();
    if let Some(q) = bandwidth {
        annotations.insert("kubernetes.io/ingress-bandwidth".into(), q.into());
        annotations.insert("kubernetes.io/egress-bandwidth".into(), q.into());
    }
    annotations.insert("kubernetes.io/config.source".into(), "api".into());
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{}", unique("")),
            namespace: POD_NAMESPACE.into(),
            attempt: 0,
        }),
        hostname: name.into(),
        labels: HashMap::from([
            ("app".into(), name.into()),
            ("io.kubernetes.pod.namespace".into(), POD_NAMESPACE.into()),
        ]),
        annotations,
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: node.cgroup_parent.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Receiver-side iperf3; steady state within 3% of RATE after second 1,
/// first second within 1.1x (the runtime's "unlimited" burst is capped).
fn assert_shaped_traffic(what: &str, receiver: &Netns, ip: &str, sender: &Netns) {
    iperf(receiver, ip, sender, SECONDS)
        .unwrap()
        .assert_shaped(RATE, what);
}

#[test]
fn annotated_pod_is_shaped_and_cleaned_up() {
    let _serial = serial();
    let node = Node::start(|_| {});
    let started = Instant::now();

    let id = node
        .run_pod(pod_config(&node, "web", Some(RATE_Q)))
        .unwrap_or_else(|e| panic!("{e}\n{}", node.log()));
    let st = node.cri().status(&id).unwrap();
    let status = st.status.as_ref().expect("sandbox status");
    assert_eq!(status.state, 0, "SANDBOX_READY: {status:?}");
    let pod_ip = status
        .network
        .as_ref()
        .map(|n| n.ip.clone())
        .unwrap_or_default();
    assert!(
        pod_ip.starts_with("10.99.0."),
        "pod IP from vpc-cni-sim: {pod_ip:?}"
    );
    let info: Value = serde_json::from_str(st.info.get("info").expect("verbose info")).unwrap();
    let pid = u(&info["pid"]) as u32;
    let netns_path = info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["type"] == "network"))
        .and_then(|n| n["path"].as_str())
        .expect("sandbox netns path")
        .to_string();
    assert!(
        netns_path.starts_with(
            &node
                .path("state/io.containerd.grpc.v1.cri/netns")
                .display()
                .to_string()
        ),
        "netns under our state dir: {netns_path}"
    );
    let pod_netns_inode = netns_inode(pid).expect("pause process netns");
    assert_ne!(netns_inode(std::process::id()), Some(pod_netns_inode));

    // The node side: tbf at the annotated rate on the eni veth, the ifb,
    // topology-label's alias; all inside the node netns.
    let links = node.ns.link_names();
    let eni: Vec<&String> = links.iter().filter(|l| l.starts_with("eni")).collect();
    assert_eq!(eni.len(), 1, "one eni veth in the node netns: {links:?}");
    let eni = eni[0].clone();
    let bwp: Vec<&String> = links.iter().filter(|l| l.starts_with("bwp")).collect();
    assert_eq!(bwp.len(), 1, "one bwp ifb in the node netns: {links:?}");
    let bwp = bwp[0].clone();
    let host_links = tool(&["ip", "-o", "link", "show"]).unwrap();
    assert!(
        !host_links.contains(&eni) && !host_links.contains(&bwp),
        "nothing in the host netns: {host_links}"
    );
    let tbf = node
        .ns
        .qdisc(&eni, "tbf")
        .unwrap_or_else(|| panic!("no tbf on {eni}"));
    assert_eq!(u(&tbf["options"]["rate"]), RATE / 8, "{tbf}");
    // containerd asked for a u32::MAX-bit burst ("unlimited"): capped to
    // the default 25 ms bucket (runtimeBurst "cap"), not 512 MiB.
    let burst = u(&tbf["options"]["burst"]);
    assert!(
        (BUCKET * 99 / 100..=BUCKET * 101 / 100).contains(&burst),
        "tbf burst {burst} B, expected the 25 ms bucket {BUCKET} B: {tbf}"
    );
    assert!(
        node.ns.qdisc(&eni, "ingress").is_some(),
        "ingress qdisc on {eni}"
    );
    let tbf = node
        .ns
        .qdisc(&bwp, "tbf")
        .unwrap_or_else(|| panic!("no tbf on {bwp}"));
    assert_eq!(u(&tbf["options"]["rate"]), RATE / 8, "{tbf}");
    let link = node.ns.link(&eni).expect("eni link");
    assert_eq!(u(&link["mtu"]), 9001, "{link}");
    let alias = link["ifalias"].as_str().unwrap_or_default();
    assert!(
        alias.contains(&format!("{POD_NAMESPACE}/web")) && alias.contains(ZONE),
        "topology-label alias on {eni}: {alias:?}"
    );
    assert!(
        !node.state_files().is_empty(),
        "plugin state files after ADD"
    );
    assert!(
        !node.cached_results().is_empty(),
        "containerd's libcni cached the result"
    );
    eprintln!("sandbox {id}: {pod_ip} via {eni} (alias {alias:?}), egress ifb {bwp}");

    // Traffic both ways, measured at the receiver. The pod's netns is
    // reached through its pause process (containerd's mount of it lives
    // in containerd's own mount namespace).
    {
        let pod = Netns {
            name: unique("crip"),
        };
        sh(&["ip", "netns", "attach", &pod.name, &pid.to_string()]).unwrap();
        let eth0 = pod.link("eth0").expect("eth0 in the pod");
        assert_eq!(u(&eth0["mtu"]), 9001);
        assert_shaped_traffic("node -> pod (ingress tbf)", &pod, &pod_ip, &node.ns);
        assert_shaped_traffic("pod -> node (egress via ifb)", &node.ns, NODE_IP, &pod);
    } // detached: our handle must not keep the netns alive

    // StopPodSandbox: DEL with the netns; RemovePodSandbox: DEL without.
    node.cri().stop(&id).unwrap();
    let after_stop = node.ns.link_names();
    assert!(
        !after_stop
            .iter()
            .any(|l| l.starts_with("eni") || l.starts_with("bwp")),
        "StopPodSandbox removed the veth and ifb: {after_stop:?}"
    );
    node.cri().remove(&id).unwrap();
    node.assert_clean();
    assert!(!Path::new(&netns_path).exists(), "{netns_path} removed");
    assert!(
        pids_where(|p| netns_inode(p) == Some(pod_netns_inode)).is_empty(),
        "no process left in the pod netns"
    );
    assert!(node.sandbox_pids().is_empty(), "pause process gone");
    eprintln!("pod lifecycle under containerd: {:?}", started.elapsed());
}

/// A plugin anywhere in the chain fails ADD: RunPodSandbox fails naming it,
/// containerd's DEL undoes what the earlier plugins did, nothing is left.
fn failure_fails_run_pod_sandbox(plugin: &str, edit: impl Fn(&mut Value)) {
    let _serial = serial();
    let node = Node::start(|v| {
        let p = v["plugins"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|p| p["type"] == plugin)
            .expect("plugin in chain");
        edit(p);
    });
    let err = node
        .run_pod(pod_config(&node, "web", Some(RATE_Q)))
        .expect_err("RunPodSandbox must fail")
        .to_string();
    eprintln!("{plugin}: {err}");
    assert!(
        err.contains(&format!("type=\"{plugin}\"")) && err.contains("failed (add)"),
        "containerd names the failing plugin: {err}"
    );
    assert!(
        !node.ids.lock().unwrap().is_empty(),
        "sandbox id in the error"
    );
    node.assert_clean();
    assert!(node.sandbox_pids().is_empty(), "no sandbox process");
}

#[test]
fn failure_in_bandwidth_fails_run_pod_sandbox() {
    failure_fails_run_pod_sandbox("bandwidth", |p| p["latencyMs"] = json!(0));
}

#[test]
fn failure_in_topology_label_fails_run_pod_sandbox() {
    failure_fails_run_pod_sandbox("topology-label", |p| {
        p["annotationOverrides"] = json!([""]);
    });
}

#[test]
fn failure_in_main_plugin_fails_run_pod_sandbox() {
    failure_fails_run_pod_sandbox("vpc-cni-sim", |p| p["podCIDR"] = json!("10.99.0.0/33"));
}

// ---------------------------------------------------------------------------
// The DaemonSet image (scripts/image.sh) under containerd: see image.rs.

#[path = "containerd/image.rs"]
mod image;
