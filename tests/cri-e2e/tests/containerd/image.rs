//! The DaemonSet image that `scripts/image.sh` builds
//! (`dist/cni-rs-image.oci.tar`, linux/amd64 + linux/arm64 from scratch),
//! imported into the private containerd and run the way the DaemonSet
//! runs it: the installer container with the two hostPath mounts emulated
//! by bind mounts of the node's temp dirs (read-only root filesystem, the
//! manifest's capabilities), then the metrics container. Checked: the
//! binaries land, the conflist is patched, an aws-node-style rewrite is
//! patched again within 10 s, SIGTERM ends the container with status 0, a
//! pod the chain adds afterwards is shaped, and the metrics textfile
//! appears readable by node_exporter's uid 65534. Both platforms'
//! content is checked from the archive itself (the arm64 image cannot run
//! here: no binfmt_misc): every binary static and of its architecture,
//! no /bin/sh, at most 8 MB per platform.

use super::*;

const ARCHIVE: &str = "dist/cni-rs-image.oci.tar";
const IMAGE_NAME: &str = "localhost/cni-rs-e2e:image";
/// The bound on one platform's image (compressed layers + config).
const MAX_IMAGE_BYTES: u64 = 8_000_000;
/// The default capabilities `ctr run` grants (Docker's set) that the
/// DaemonSet's installer drops: it keeps CHOWN, DAC_OVERRIDE and FOWNER.
const DROPPED: [&str; 11] = [
    "CAP_FSETID",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

fn archive() -> PathBuf {
    let p = repo().join(ARCHIVE);
    assert!(
        p.is_file(),
        "{} missing: run scripts/image.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

/// The archive unpacked (an OCI image layout) into `dir`.
fn layout(dir: &Path) -> Value {
    tool(&[
        "tar",
        "-xf",
        &archive().display().to_string(),
        "-C",
        &dir.display().to_string(),
    ])
    .unwrap();
    serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap()
}

fn blob(dir: &Path, desc: &Value) -> PathBuf {
    let digest = desc["digest"].as_str().unwrap();
    dir.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn blob_json(dir: &Path, desc: &Value) -> Value {
    serde_json::from_slice(&std::fs::read(blob(dir, desc)).unwrap()).unwrap()
}

/// The ELF machine of `bytes` and whether it asks for an interpreter
/// (a dynamic binary: it would not start on the node).
fn elf_machine_and_interp(bytes: &[u8]) -> (u16, bool) {
    assert_eq!(&bytes[..4], b"\x7fELF");
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (
        u64_at(32) as usize,
        u16_at(54) as usize,
        u16_at(56) as usize,
    );
    let interp = (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) == 3 // PT_INTERP
    });
    (u16_at(18), interp)
}

/// Both platforms' images, from the archive: the architecture, the files
/// (the three static binaries, nothing else: no shell), the size.
#[test]
fn image_archive_holds_both_platforms_from_scratch() {
    let dir = TempDir::new("crieimg");
    let index = layout(&dir.path);
    // buildah writes the index as the archive's one manifest list.
    let list = match index["manifests"].as_array().unwrap().as_slice() {
        [one]
            if one["mediaType"]
                .as_str()
                .unwrap_or_default()
                .contains("index") =>
        {
            blob_json(&dir.path, one)
        }
        _ => index.clone(),
    };
    let mut seen = Vec::new();
    for m in list["manifests"].as_array().unwrap() {
        let arch = m["platform"]["architecture"].as_str().unwrap().to_string();
        let manifest = blob_json(&dir.path, m);
        let config = blob_json(&dir.path, &manifest["config"]);
        assert_eq!(config["architecture"], arch.as_str());
        assert_eq!(config["os"], "linux");
        assert_eq!(
            config["config"]["Entrypoint"],
            json!(["/opt/cni-rs/bin/cni-rs"])
        );
        let mut size = u(&manifest["config"]["size"]);
        let unpacked = dir.path.join(format!("rootfs-{arch}"));
        std::fs::create_dir_all(&unpacked).unwrap();
        for layer in manifest["layers"].as_array().unwrap() {
            size += u(&layer["size"]);
            let layer_path = blob(&dir.path, layer).display().to_string();
            tool(&[
                "tar",
                "-xf",
                &layer_path,
                "-C",
                &unpacked.display().to_string(),
            ])
            .unwrap();
        }
        let files: Vec<String> = files_under(&unpacked)
            .iter()
            .map(|f| f.strip_prefix(&unpacked).unwrap().display().to_string())
            .collect();
        let mut sorted = files.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                "opt/cni-rs/bin/bandwidth",
                "opt/cni-rs/bin/cni-rs",
                "opt/cni-rs/bin/topology-label"
            ],
            "{arch}: only the binaries"
        );
        assert!(!unpacked.join("bin/sh").exists(), "{arch}: no shell");
        let want_machine = match arch.as_str() {
            "amd64" => 62,
            "arm64" => 183,
            other => panic!("unexpected platform {other}"),
        };
        for f in &files {
            let bytes = std::fs::read(unpacked.join(f)).unwrap();
            let (machine, interp) = elf_machine_and_interp(&bytes);
            assert_eq!(machine, want_machine, "{arch}: {f}");
            assert!(!interp, "{arch}: {f} is dynamic");
            // The very bytes of the release.
            let shipped = repo()
                .join(format!("dist/linux-{arch}/bin"))
                .join(Path::new(f).file_name().unwrap());
            assert!(
                std::fs::read(&shipped).unwrap() == bytes,
                "{arch}: {f} is not {}",
                shipped.display()
            );
        }
        let bytes_unpacked: u64 = files
            .iter()
            .map(|f| std::fs::metadata(unpacked.join(f)).unwrap().len())
            .sum();
        eprintln!(
            "linux/{arch}: image {size} bytes (compressed layers + config), {bytes_unpacked} bytes unpacked"
        );
        assert!(size <= MAX_IMAGE_BYTES, "linux/{arch}: {size} bytes");
        seen.push(arch);
    }
    seen.sort();
    assert_eq!(seen, ["amd64", "arm64"]);
}

/// `ctr run` of the image as the DaemonSet's container `name` would run:
/// attached (its exit status is the child's), in the node netns
/// (hostNetwork), read-only root, in our cgroup parent (cleaned up with
/// the node), `mounts` as (host dir, container path, rw).
fn run_container(
    node: &Node,
    id: &str,
    mounts: &[(&Path, &str, bool)],
    drop_caps: &[&str],
    args: &[&str],
) -> std::process::Child {
    let log = std::fs::File::create(node.path(&format!("{id}.log"))).unwrap();
    let mut cmd = Command::new("ctr");
    cmd.args([
        "--address",
        &node.socket.display().to_string(),
        "-n",
        K8S_NS,
        "run",
    ])
    .args(["--rm", "--net-host", "--read-only"])
    .args(["--cgroup", &format!("{}/{id}", node.cgroup_parent)]);
    for (host, inside, rw) in mounts {
        let mode = if *rw { "rw" } else { "ro" };
        cmd.arg("--mount").arg(format!(
            "type=bind,src={},dst={inside},options=rbind:{mode}",
            host.display()
        ));
    }
    for c in drop_caps {
        cmd.args(["--cap-drop", c]);
    }
    // The DaemonSet's `command` (the full argv, as ctr takes it).
    cmd.args([IMAGE_NAME, id, "/opt/cni-rs/bin/cni-rs"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("ctr run")
}

fn container_log(node: &Node, id: &str) -> String {
    std::fs::read_to_string(node.path(&format!("{id}.log"))).unwrap_or_default()
}

/// SIGTERM to the container's task (as the kubelet stops a pod): it must
/// exit 0 within the DaemonSet's 10 s grace period.
fn terminate(node: &Node, id: &str, mut child: std::process::Child) -> Duration {
    let t0 = Instant::now();
    node.ctr(&["tasks", "kill", "--signal", "SIGTERM", id], &[]);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(
                st.success(),
                "{id} on SIGTERM: {st}\n{}",
                container_log(node, id)
            );
            return t0.elapsed();
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!(
                "{id} still running 10 s after SIGTERM\n{}",
                container_log(node, id)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `cond`; on a timeout the panic shows `context()` (a log).
fn wait_for(
    what: &str,
    timeout: Duration,
    context: impl Fn() -> String,
    mut cond: impl FnMut() -> bool,
) -> Duration {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < timeout,
            "{what}: not within {timeout:?}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    t0.elapsed()
}

fn chain_types(conf: &Path) -> Vec<String> {
    std::fs::read_to_string(conf)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .map(|v| {
            v["plugins"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| p["type"].as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

/// The aws-node side of the node: only its main plugin in the chain
/// (vpc-cni-sim standing in for aws-cni), as aws-node renders it before
/// anything of ours is there.
fn aws_node_chain(v: &mut Value) {
    let main = v["plugins"][0].clone();
    v["plugins"] = json!([main]);
}

#[test]
fn image_installs_and_shapes_under_containerd() {
    let _serial = serial();
    let archive = archive();
    let t0 = Instant::now();
    let node = Node::start_with(aws_node_chain, &["vpc-cni-sim"], true);
    node.ctr(
        &[
            "images",
            "import",
            "--all-platforms",
            "--index-name",
            IMAGE_NAME,
        ],
        &[&archive],
    );
    let listed = node.ctr(&["images", "ls"], &[]);
    assert!(
        listed.lines().any(|l| l.starts_with(IMAGE_NAME)
            && l.contains("linux/amd64")
            && l.contains("linux/arm64")),
        "{listed}"
    );
    let conf = node.path("net.d/10-aws.conflist");
    let aws_render = std::fs::read(&conf).unwrap();
    let labels = node.path("topology-labels.json");
    std::fs::write(
        &labels,
        json!({"topology.kubernetes.io/zone": ZONE}).to_string(),
    )
    .unwrap();

    // The installer, as the DaemonSet's `install` container.
    let (bin, net) = (node.path("cni-bin"), node.path("net.d"));
    let labels_arg = labels.display().to_string();
    let install = run_container(
        &node,
        "cni-rs-install",
        &[
            (&bin, "/host/opt/cni/bin", true),
            (&net, "/host/etc/cni/net.d", true),
        ],
        &DROPPED,
        &[
            "install",
            "--watch",
            "--from",
            "/opt/cni-rs/bin",
            "--cni-bin-dir",
            "/host/opt/cni/bin",
            "--conflist",
            "/host/etc/cni/net.d/10-aws.conflist",
            "--labels-file",
            &labels_arg,
        ],
    );
    let ours = ["vpc-cni-sim", "topology-label", "bandwidth-rs"];
    let took = wait_for(
        "installed by the container",
        Duration::from_secs(30),
        || container_log(&node, "cni-rs-install"),
        || chain_types(&conf) == ours,
    );
    eprintln!("installed {took:?} after ctr run");
    for (installed, built) in [
        ("bandwidth-rs", "bandwidth"),
        ("topology-label", "topology-label"),
    ] {
        assert!(
            std::fs::read(bin.join(installed)).unwrap()
                == std::fs::read(repo().join("dist/linux-amd64/bin").join(built)).unwrap(),
            "{installed} is the image's {built}"
        );
    }

    // aws-node restarts: a fresh render renamed over the file.
    let tmp = net.join(".aws-node-render.tmp");
    std::fs::write(&tmp, &aws_render).unwrap();
    std::fs::rename(&tmp, &conf).unwrap();
    let took = wait_for(
        "re-patched after aws-node's rewrite",
        Duration::from_secs(10),
        || container_log(&node, "cni-rs-install"),
        || chain_types(&conf) == ours,
    );
    eprintln!("re-patched {took:?} after aws-node's rewrite");
    let took = terminate(&node, "cni-rs-install", install);
    let log = container_log(&node, "cni-rs-install");
    assert!(log.contains("patched") && log.contains("stopped"), "{log}");
    eprintln!("installer exited 0 {took:?} after SIGTERM");

    // A pod the patched chain adds afterwards is shaped.
    std::thread::sleep(Duration::from_secs(1)); // containerd reloads the conflist
    let id = node
        .run_pod(pod_config(&node, "web", Some(RATE_Q)))
        .unwrap_or_else(|e| panic!("{e}\n{}", node.log()));
    let eni = node
        .ns
        .link_names()
        .into_iter()
        .find(|l| l.starts_with("eni"))
        .expect("eni veth");
    let tbf = node
        .ns
        .qdisc(&eni, "tbf")
        .unwrap_or_else(|| panic!("no tbf on {eni}"));
    assert_eq!(u(&tbf["options"]["rate"]), RATE / 8, "{tbf}");
    let alias = node.ns.link(&eni).unwrap()["ifalias"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        alias.contains("e2e/web") && alias.contains(ZONE),
        "{alias:?}"
    );
    assert!(
        node.state_dir("bandwidth").is_dir(),
        "bandwidth's state under the node's /run/cni"
    );

    metrics_container_writes_a_readable_textfile(&node);

    node.cri().stop(&id).unwrap();
    node.cri().remove(&id).unwrap();
    node.assert_clean();
    eprintln!("image test under containerd: {:?}", t0.elapsed());
}

/// The DaemonSet's `metrics` container: the state read-only, the textfile
/// dir writable, no capabilities; the file appears, lists the pod, and
/// node_exporter's uid 65534 can read it.
fn metrics_container_writes_a_readable_textfile(node: &Node) {
    let textfile_dir = node.path("textfile");
    std::fs::create_dir_all(&textfile_dir).unwrap();
    let state = node.path("cni-state");
    let mut caps = DROPPED.to_vec();
    caps.extend(["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER"]);
    let metrics = run_container(
        node,
        "cni-rs-metrics",
        &[
            (&state, "/host/run/cni", false),
            (&textfile_dir, "/host/textfile", true),
        ],
        &caps,
        &[
            "metrics",
            "--textfile",
            "/host/textfile/cni-rs.prom",
            "--interval",
            "15",
            "--bandwidth-state-dir",
            "/host/run/cni/bandwidth",
            "--topology-state-dir",
            "/host/run/cni/topology-label",
        ],
    );
    let prom = textfile_dir.join("cni-rs.prom");
    wait_for(
        "the metrics textfile",
        Duration::from_secs(20),
        || container_log(node, "cni-rs-metrics"),
        || prom.exists(),
    );
    let as_nobody = tool(&[
        "setpriv",
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "cat",
        &prom.display().to_string(),
    ])
    .unwrap_or_else(|e| panic!("uid 65534 cannot read {}: {e}", prom.display()));
    assert!(as_nobody.contains("pod=\"web\""), "{as_nobody}");
    terminate(node, "cni-rs-metrics", metrics);
}
