//! The node installer (`cni-rs install` / `uninstall`, which
//! `scripts/install.sh` and `uninstall.sh` wrap) and its DaemonSet, on
//! copies in temp dirs: never the machine's own /etc/cni or /opt/cni.
//! Patching aws-node's conflist and the ENABLE_BANDWIDTH_PLUGIN variant,
//! idempotence, flags, refusals (malformed JSON, a FIFO, a directory, a
//! read-only dir, bad tarballs), binaries, watch mode against a simulated
//! aws-node restart, uninstall, the DaemonSet manifest against the
//! Kubernetes schemas, and the patched conflist running the chain end to
//! end.

use integration_tests::*;
use serde_json::{Value, json};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    repo_root()
}

fn example(name: &str) -> PathBuf {
    repo().join("conflist-examples").join(name)
}

fn json_of(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn types(conf: &Value) -> Vec<String> {
    conf["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A stand-in for a built plugin: an ELF header of this machine's
/// architecture (all the installer checks: it never runs a plugin) and
/// `tag`, so copies can be told apart. Real binaries are used where their
/// behaviour matters (the chain test).
fn fake_plugin(tag: &str) -> Vec<u8> {
    let machine: u16 = if cfg!(target_arch = "aarch64") {
        183
    } else {
        62
    };
    let mut elf = vec![0u8; 64];
    elf[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
    elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[18..20].copy_from_slice(&machine.to_le_bytes());
    elf.extend_from_slice(format!("\n# {tag}\n").as_bytes());
    elf
}

/// A file's bytes as text (a fake plugin's tag is readable in them).
fn text_of(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned()
}

/// The installer: `cni-rs` as built.
fn cni_rs() -> Command {
    Command::new(plugin_bin("cni-rs"))
}

/// A simulated node: `net.d/` holding a copy of a conflist example (mode
/// 0644 as aws-node writes it), an empty CNI `bin/` and a `from/` dir of
/// built plugins.
struct Node {
    dir: TempDir,
    conf: PathBuf,
    bin: PathBuf,
    from: PathBuf,
}

impl Node {
    fn new(example_name: &str) -> Node {
        // The installer is a root tool (it refuses otherwise).
        require_root();
        let dir = TempDir::new("cniinst");
        let net = dir.path.join("net.d");
        let bin = dir.path.join("bin");
        let from = dir.path.join("from");
        for d in [&net, &bin, &from] {
            std::fs::create_dir_all(d).unwrap();
        }
        let conf = net.join("10-aws.conflist");
        std::fs::copy(example(example_name), &conf).unwrap();
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
        let node = Node {
            dir,
            conf,
            bin,
            from,
        };
        node.set_fake_plugins("v1");
        node
    }

    fn set_fake_plugins(&self, tag: &str) {
        for p in ["bandwidth", "topology-label"] {
            let f = self.from.join(p);
            std::fs::write(&f, fake_plugin(&format!("{p} {tag}"))).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    /// Uses the real built plugins (target/debug) as the source.
    fn use_built_plugins(&self) {
        for p in ["bandwidth", "topology-label"] {
            let _ = std::fs::remove_file(self.from.join(p));
            std::os::unix::fs::symlink(plugin_bin(p), self.from.join(p)).unwrap();
        }
    }

    fn net(&self) -> PathBuf {
        self.conf.parent().unwrap().to_path_buf()
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--from".into(),
            self.from.display().to_string(),
            "--cni-bin-dir".into(),
            self.bin.display().to_string(),
            "--conflist".into(),
            self.conf.display().to_string(),
        ]
    }

    fn run(&self, verb: &str, extra: &[&str]) -> Outcome {
        let out = cni_rs()
            .arg(verb)
            .args(self.args())
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("run cni-rs");
        Outcome::from(out)
    }

    fn install(&self, extra: &[&str]) -> Outcome {
        self.run("install", extra)
    }

    fn uninstall(&self) -> Outcome {
        // uninstall takes no --from.
        let out = cni_rs()
            .arg("uninstall")
            .args(&self.args()[2..])
            .stdin(Stdio::null())
            .output()
            .expect("run cni-rs uninstall");
        Outcome::from(out)
    }

    fn conf_json(&self) -> Value {
        json_of(&self.conf)
    }

    /// Every name in a directory, hidden ones (temp files) included.
    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn backup(&self) -> PathBuf {
        self.net().join("10-aws.conflist.bak-rs")
    }

    /// Simulates aws-node's restart: a fresh render renamed over the file.
    fn aws_node_rewrite(&self, example_name: &str) {
        let tmp = self.net().join(".aws-node-render.tmp");
        std::fs::copy(example(example_name), &tmp).unwrap();
        std::fs::rename(&tmp, &self.conf).unwrap();
    }
}

fn ok(o: Outcome) -> Outcome {
    assert_eq!(
        o.status, 0,
        "cni-rs failed: stdout={} stderr={}",
        o.stdout, o.stderr
    );
    o
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn ino(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().ino()
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    t0.elapsed()
}

#[test]
fn patches_the_aws_node_sample() {
    let node = Node::new("10-aws.conflist");
    let orig = node.conf_json();
    let o = ok(node.install(&[]));
    assert!(
        o.stdout.is_empty(),
        "stdout is for --dry-run diffs only: {}",
        o.stdout
    );

    // Byte for byte what the committed example says.
    let want = std::fs::read(example("10-aws-installed.conflist")).unwrap();
    let got = std::fs::read(&node.conf).unwrap();
    assert!(
        got == want,
        "cni-rs install's output differs from conflist-examples/10-aws-installed.conflist:\n{}",
        String::from_utf8_lossy(&got)
    );
    // Everything of aws-node's is kept as it was; ours come last.
    let new = node.conf_json();
    let (a, b) = (orig.as_object().unwrap(), new.as_object().unwrap());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in a {
        if k != "plugins" {
            assert_eq!(&b[k], v, "{k}");
        }
    }
    let plugins = new["plugins"].as_array().unwrap();
    assert_eq!(
        &plugins[..3],
        orig["plugins"].as_array().unwrap().as_slice()
    );
    assert_eq!(
        types(&new),
        [
            "aws-cni",
            "egress-cni",
            "portmap",
            "topology-label",
            "bandwidth-rs"
        ]
    );
    assert_eq!(plugins[4]["capabilities"], json!({"bandwidth": true}));
    assert_eq!(
        plugins[3]["capabilities"],
        json!({"io.kubernetes.cri.pod-annotations": true})
    );
    assert_eq!(mode(&node.conf), 0o644);

    // The backup holds the file as it was, and nothing loads it.
    assert_eq!(
        std::fs::read(node.backup()).unwrap(),
        std::fs::read(example("10-aws.conflist")).unwrap()
    );
    assert_eq!(mode(&node.backup()), 0o644);
    assert_eq!(
        Node::names(&node.net()),
        ["10-aws.conflist", "10-aws.conflist.bak-rs"],
        "no temp files, no second *.conflist"
    );

    // Binaries under names aws-node never writes, 0755, no temp files.
    assert_eq!(Node::names(&node.bin), ["bandwidth-rs", "topology-label"]);
    for (installed, built) in [
        ("bandwidth-rs", "bandwidth"),
        ("topology-label", "topology-label"),
    ] {
        let p = node.bin.join(installed);
        assert_eq!(mode(&p), 0o755, "{installed}");
        assert_eq!(
            std::fs::read(&p).unwrap(),
            std::fs::read(node.from.join(built)).unwrap()
        );
    }
}

#[test]
fn enable_bandwidth_plugin_variant_is_replaced() {
    let node = Node::new("10-aws-enable-bandwidth-plugin.conflist");
    let orig = node.conf_json();
    ok(node.install(&[]));
    let new = node.conf_json();
    assert_eq!(
        types(&new),
        [
            "aws-cni",
            "egress-cni",
            "portmap",
            "topology-label",
            "bandwidth-rs"
        ]
    );
    let shaping: Vec<&Value> = new["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["capabilities"]["bandwidth"] == true)
        .collect();
    assert_eq!(shaping.len(), 1, "one shaping entry: {new}");
    // The replaced entry is kept inside ours, for uninstall.
    assert_eq!(new["plugins"][4]["x-cni-rs-replaced"], orig["plugins"][3]);
    assert_eq!(
        new["plugins"].as_array().unwrap()[..3],
        orig["plugins"].as_array().unwrap()[..3]
    );

    // aws-node restarts and renders its reference entry again: replaced
    // again, the same bytes as before.
    let first = std::fs::read(&node.conf).unwrap();
    node.aws_node_rewrite("10-aws-enable-bandwidth-plugin.conflist");
    ok(node.install(&[]));
    assert_eq!(std::fs::read(&node.conf).unwrap(), first);
}

#[test]
fn second_run_and_patched_file_change_nothing() {
    let node = Node::new("10-aws.conflist");
    ok(node.install(&[]));
    let bytes = std::fs::read(&node.conf).unwrap();
    let backup = std::fs::read(node.backup()).unwrap();
    let inodes = [
        ino(&node.conf),
        ino(&node.backup()),
        ino(&node.bin.join("bandwidth-rs")),
        ino(&node.bin.join("topology-label")),
    ];
    let o = ok(node.install(&[]));
    assert!(o.stdout.is_empty() && o.stderr.is_empty(), "{o:?}");
    assert_eq!(std::fs::read(&node.conf).unwrap(), bytes);
    assert_eq!(std::fs::read(node.backup()).unwrap(), backup);
    assert_eq!(
        [
            ino(&node.conf),
            ino(&node.backup()),
            ino(&node.bin.join("bandwidth-rs")),
            ino(&node.bin.join("topology-label")),
        ],
        inodes,
        "nothing rewritten"
    );
    let o = ok(node.install(&["--dry-run"]));
    assert!(o.stdout.is_empty(), "no diff: {}", o.stdout);

    // The committed patched example is already what install wants.
    let node = Node::new("10-aws-installed.conflist");
    let before = ino(&node.conf);
    let o = ok(node.install(&["--dry-run"]));
    assert!(o.stdout.is_empty(), "no diff: {}", o.stdout);
    ok(node.install(&[]));
    assert_eq!(ino(&node.conf), before);
    assert_eq!(
        std::fs::read(&node.conf).unwrap(),
        std::fs::read(example("10-aws-installed.conflist")).unwrap()
    );
    assert!(!node.backup().exists(), "no change, no backup");
}

#[test]
fn dry_run_prints_the_diff_and_changes_nothing() {
    let node = Node::new("10-aws.conflist");
    let before = std::fs::read(&node.conf).unwrap();
    let o = ok(node.install(&["--dry-run"]));
    assert!(o.stdout.starts_with("--- "), "{}", o.stdout);
    assert!(
        o.stdout.contains("+      \"type\": \"bandwidth-rs\","),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("+      \"type\": \"topology-label\","),
        "{}",
        o.stdout
    );
    assert!(o.stderr.contains("would install"), "{}", o.stderr);
    assert_eq!(std::fs::read(&node.conf).unwrap(), before);
    assert_eq!(Node::names(&node.net()), ["10-aws.conflist"]);
    assert!(Node::names(&node.bin).is_empty());
}

#[test]
fn flags_land_in_the_entries() {
    let node = Node::new("10-aws.conflist");
    ok(node.install(&[
        "--latency-ms",
        "50",
        "--runtime-burst",
        "honor",
        "--egress-mode",
        "pod",
        "--labels-file",
        "/etc/eks/labels.json",
        "--imds",
        "--alias",
        "{pod} {zoneId}",
    ]));
    let c = node.conf_json();
    assert_eq!(
        c["plugins"][4],
        json!({"type": "bandwidth-rs", "capabilities": {"bandwidth": true},
               "runtimeBurst": "honor", "latencyMs": 50, "egressMode": "pod"})
    );
    assert_eq!(
        c["plugins"][3],
        json!({"type": "topology-label",
               "capabilities": {"io.kubernetes.cri.pod-annotations": true},
               "labelsFile": "/etc/eks/labels.json", "imds": {"enabled": true},
               "alias": "{pod} {zoneId}"})
    );

    // New flags update our entries in place; unset flags go back to defaults.
    ok(node.install(&["--egress-mode", "ifb"]));
    let c = node.conf_json();
    assert_eq!(types(&c).len(), 5);
    assert_eq!(c["plugins"][4]["egressMode"], "ifb");
    assert_eq!(c["plugins"][4]["latencyMs"], 25);
    assert_eq!(c["plugins"][4]["runtimeBurst"], "cap");
    assert_eq!(
        c["plugins"][3],
        json!({"type": "topology-label",
               "capabilities": {"io.kubernetes.cri.pod-annotations": true},
               "labelsFile": "/etc/cni/topology-labels.json"})
    );
    // Ours keep their places if something was appended after them
    // (topology-label always right before bandwidth-rs).
    let mut moved = c.clone();
    moved["plugins"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "tuning", "sysctl": {}}));
    std::fs::write(&node.conf, serde_json::to_string_pretty(&moved).unwrap()).unwrap();
    ok(node.install(&["--labels-file", ""]));
    let c = node.conf_json();
    assert_eq!(
        types(&c),
        [
            "aws-cni",
            "egress-cni",
            "portmap",
            "topology-label",
            "bandwidth-rs",
            "tuning"
        ]
    );
    assert!(c["plugins"][3].get("labelsFile").is_none(), "{c}");

    // --no-topology-label: only bandwidth-rs.
    ok(node.install(&["--no-topology-label"]));
    assert_eq!(
        types(&node.conf_json()),
        ["aws-cni", "egress-cni", "portmap", "bandwidth-rs", "tuning"]
    );

    // Bad values are refused before anything is read or written.
    let before = std::fs::read(&node.conf).unwrap();
    for bad in [
        &["--latency-ms", "0"][..],
        &["--latency-ms", "60001"],
        &["--latency-ms", "x"],
        &["--runtime-burst", "sometimes"],
        &["--egress-mode", "host"],
        &["--interval", "0"],
        &["--bogus"],
    ] {
        let o = node.install(bad);
        assert_eq!(o.status, 2, "{bad:?}: {o:?}");
        assert!(!o.stderr.is_empty(), "{bad:?}");
    }
    assert_eq!(std::fs::read(&node.conf).unwrap(), before);
}

#[test]
fn settings_the_plugin_rejects_are_refused() {
    let node = Node::new("10-aws.conflist");
    node.use_built_plugins();
    let before = std::fs::read(&node.conf).unwrap();
    let o = node.install(&["--alias", "{nope}"]);
    assert_eq!(o.status, 1, "{o:?}");
    assert!(
        o.stderr.contains("topology-label rejects") && o.stderr.contains("{nope}"),
        "{}",
        o.stderr
    );
    assert_eq!(std::fs::read(&node.conf).unwrap(), before);
    assert!(Node::names(&node.bin).is_empty());
    assert_eq!(Node::names(&node.net()), ["10-aws.conflist"]);

    // A list version our plugins do not speak would fail every pod.
    let mut c = node.conf_json();
    c["cniVersion"] = "0.2.0".into();
    std::fs::write(&node.conf, serde_json::to_string_pretty(&c).unwrap()).unwrap();
    let o = node.install(&[]);
    assert_eq!(o.status, 1, "{o:?}");
    assert!(o.stderr.contains("cniVersion '0.2.0'"), "{}", o.stderr);
}

#[test]
fn traffic_class_flags_write_the_block_and_bad_ones_are_refused() {
    let node = Node::new("10-aws.conflist");
    node.use_built_plugins();
    let before = std::fs::read(&node.conf).unwrap();
    let bw_entry = |node: &Node| {
        node.conf_json()["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["type"] == "bandwidth-rs")
            .unwrap()
            .clone()
    };
    for (bad, says) in [
        (vec!["--cross-zone-rate", "20M"], "bits per second"),
        (vec!["--zone-cidrs-file", "relative.json"], "absolute path"),
        (
            vec!["--zone", "us-west-2a"],
            "--zone needs --zone-cidrs-file",
        ),
    ] {
        let o = node.install(&bad);
        assert_eq!(o.status, 2, "{bad:?}: {o:?}");
        assert!(o.stderr.contains(says), "{bad:?}: {}", o.stderr);
        assert_eq!(std::fs::read(&node.conf).unwrap(), before, "{bad:?}");
    }
    // EKS zero-config: the block alone, IMDS answers on the node.
    ok(node.install(&[
        "--traffic-classes",
        "--cross-zone-rate",
        "20000000",
        "--same-zone-unshaped",
    ]));
    assert_eq!(
        bw_entry(&node)["trafficClasses"],
        json!({"sameZone": {"shaped": false},
               "crossZone": {"ingressRate": 20_000_000, "egressRate": 20_000_000},
               "outside": {}})
    );
    // From a bootstrap file, with the zone.
    let file = node.dir.path.join("zones.json");
    std::fs::write(
        &file,
        r#"{"zoneCidrs": {"a": ["10.1.0.0/16"], "b": ["10.2.0.0/16"]}}"#,
    )
    .unwrap();
    let f = file.display().to_string();
    ok(node.install(&[
        "--zone",
        "a",
        "--zone-cidrs-file",
        &f,
        "--outside-rate",
        "50000000",
    ]));
    assert_eq!(
        bw_entry(&node)["trafficClasses"],
        json!({"zone": "a", "zoneCidrsFile": f, "sameZone": {}, "crossZone": {},
               "outside": {"ingressRate": 50_000_000, "egressRate": 50_000_000}})
    );
}

#[test]
fn namespace_policy_file_lands_in_the_entry_and_bad_ones_are_refused() {
    let node = Node::new("10-aws.conflist");
    node.use_built_plugins();
    let policy = json!({"tenant-a": {"default": {"ingressRate": 100_000_000, "egressRate": 100_000_000},
                                     "max": {"ingressRate": 500_000_000, "egressRate": 500_000_000}},
                        "kube-system": {"exempt": true}});
    let file = node.dir.path.join("bandwidth-policy.json");
    std::fs::write(&file, policy.to_string()).unwrap();
    let before = std::fs::read(&node.conf).unwrap();
    let path = |p: &Path| p.display().to_string();

    // Refused before anything changes, and never hanging: missing, a FIFO,
    // a directory, not JSON, not an object, and a policy the plugin rejects.
    let fifo = node.dir.path.join("policy.fifo");
    sh(&["mkfifo", &path(&fifo)]).unwrap();
    let not_json = node.dir.path.join("not.json");
    std::fs::write(&not_json, "{").unwrap();
    let array = node.dir.path.join("array.json");
    std::fs::write(&array, "[]").unwrap();
    let below = node.dir.path.join("below.json");
    std::fs::write(
        &below,
        json!({"*": {"default": {"ingressRate": 20_000_000}, "max": {"ingressRate": 10_000_000}}})
            .to_string(),
    )
    .unwrap();
    for (bad, says) in [
        (node.dir.path.join("missing.json"), "does not exist"),
        (fifo, "not a regular file"),
        (node.dir.path.clone(), "not a regular file"),
        (not_json, "--namespace-policy"),
        (array, "must be a JSON object"),
        (below, "bandwidth rejects"),
    ] {
        let started = Instant::now();
        let o = node.install(&["--namespace-policy", &path(&bad)]);
        assert!(started.elapsed() < Duration::from_secs(30), "{bad:?} hung");
        assert_eq!(o.status, 1, "{bad:?}: {o:?}");
        assert!(o.stderr.contains(says), "{bad:?}: {}", o.stderr);
        assert_eq!(std::fs::read(&node.conf).unwrap(), before, "{bad:?}");
    }

    ok(node.install(&["--namespace-policy", &path(&file)]));
    let c = node.conf_json();
    let bw = c["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "bandwidth-rs")
        .unwrap()
        .clone();
    assert_eq!(bw["namespacePolicy"], policy);
}

#[test]
fn malformed_conflists_are_refused_untouched() {
    for (content, says) in [
        (
            "{\"cniVersion\": \"0.4.0\", \"plugins\": [",
            "not valid JSON",
        ),
        ("", "not valid JSON"),
        ("{} {}", "not valid JSON"),
        ("[]", "not a JSON object"),
        (
            "{\"cniVersion\": \"0.4.0\", \"plugins\": {}}",
            "no \"plugins\" array",
        ),
        ("{\"plugins\": [\"portmap\"]}", "not a JSON object"),
    ] {
        let node = Node::new("10-aws.conflist");
        std::fs::write(&node.conf, content).unwrap();
        let o = node.install(&[]);
        assert_eq!(o.status, 1, "{content:?}: {o:?}");
        assert!(
            o.stderr.contains(says) && o.stderr.contains("refusing"),
            "{content:?}: {}",
            o.stderr
        );
        assert_eq!(std::fs::read_to_string(&node.conf).unwrap(), content);
        assert_eq!(Node::names(&node.net()), ["10-aws.conflist"], "{content:?}");
        assert!(Node::names(&node.bin).is_empty(), "{content:?}");
        let o = node.uninstall();
        assert_eq!(o.status, 1, "uninstall {content:?}: {o:?}");
        assert_eq!(std::fs::read_to_string(&node.conf).unwrap(), content);
    }
    let node = Node::new("10-aws.conflist");
    std::fs::remove_file(&node.conf).unwrap();
    let o = node.install(&[]);
    assert_eq!(o.status, 1);
    assert!(o.stderr.contains("does not exist"), "{}", o.stderr);
    assert!(Node::names(&node.bin).is_empty());
}

/// A conflist path that is a FIFO or a directory is refused at once (a
/// FIFO is never opened for a blocking read), by install and uninstall,
/// with nothing changed.
#[test]
fn conflist_that_is_a_fifo_or_a_directory_is_refused() {
    for what in ["a FIFO", "a directory"] {
        let node = Node::new("10-aws.conflist");
        std::fs::remove_file(&node.conf).unwrap();
        if what == "a FIFO" {
            nix::unistd::mkfifo(&node.conf, nix::sys::stat::Mode::from_bits_truncate(0o644))
                .unwrap();
        } else {
            std::fs::create_dir(&node.conf).unwrap();
        }
        let started = Instant::now();
        for o in [node.install(&[]), node.uninstall()] {
            assert_eq!(o.status, 1, "{what}: {o:?}");
            assert!(
                o.stderr.contains("refusing") && o.stderr.contains("not a regular file"),
                "{what}: {}",
                o.stderr
            );
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{what}: hung");
        assert_eq!(Node::names(&node.net()), ["10-aws.conflist"], "{what}");
        assert!(Node::names(&node.bin).is_empty(), "{what}");
    }
}

/// As root, mode bits do not stop writes: the directory is made read-only
/// with a read-only bind mount in a private mount namespace.
#[test]
fn read_only_directory_is_refused_untouched() {
    let node = Node::new("10-aws.conflist");
    let before = std::fs::read(&node.conf).unwrap();
    let net = node.net().display().to_string();
    let mut cmd = vec![
        format!("mount --bind {net} {net} && mount -o remount,bind,ro {net} && exec \"$@\""),
        "sh".to_string(),
        plugin_bin("cni-rs").display().to_string(),
        "install".to_string(),
    ];
    cmd.extend(node.args());
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .args(&cmd)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refusing") && stderr.contains("Read-only file system"),
        "{stderr}"
    );
    assert!(stderr.contains(&net), "{stderr}");
    assert_eq!(std::fs::read(&node.conf).unwrap(), before);
    assert_eq!(Node::names(&node.net()), ["10-aws.conflist"]);
    assert!(
        Node::names(&node.bin).is_empty(),
        "refused before copying anything"
    );
}

#[test]
fn binaries_are_replaced_only_when_they_differ() {
    let node = Node::new("10-aws.conflist");
    ok(node.install(&[]));
    let bw = node.bin.join("bandwidth-rs");
    let tl = node.bin.join("topology-label");
    let (i_bw, i_tl) = (ino(&bw), ino(&tl));
    ok(node.install(&[]));
    assert_eq!((ino(&bw), ino(&tl)), (i_bw, i_tl), "identical: not copied");

    // A new build is renamed in (a new inode; running plugins keep theirs).
    node.set_fake_plugins("v2");
    let o = ok(node.install(&[]));
    assert!(o.stderr.contains("installed"), "{}", o.stderr);
    assert_ne!(ino(&bw), i_bw);
    assert!(text_of(&bw).contains("bandwidth v2"));
    assert!(text_of(&tl).contains("topology-label v2"));

    // A wrong mode is repaired.
    std::fs::set_permissions(&bw, std::fs::Permissions::from_mode(0o644)).unwrap();
    ok(node.install(&[]));
    assert_eq!(mode(&bw), 0o755);
    assert_eq!(Node::names(&node.bin), ["bandwidth-rs", "topology-label"]);

    // A source that does not run here (wrong architecture) is refused.
    std::fs::write(node.from.join("bandwidth"), b"\x7fELF garbage").unwrap();
    let o = node.install(&[]);
    assert_eq!(o.status, 1, "{o:?}");
    assert!(o.stderr.contains("does not run"), "{}", o.stderr);
    assert!(text_of(&bw).contains("bandwidth v2"));
    // So is a script where a plugin should be: the node runs it as an
    // executable with no shell promised.
    std::fs::write(node.from.join("bandwidth"), b"#!/bin/sh\necho\n").unwrap();
    let o = node.install(&[]);
    assert_eq!(o.status, 1, "{o:?}");
    assert!(o.stderr.contains("not an ELF"), "{}", o.stderr);
}

/// A release tarball as `scripts/release.sh` lays it out (one directory
/// holding `bin/` with the plugins: the fake ones here), with `extra`
/// adding to that directory (a shell command run inside it) before `pack`
/// packs it. Returns the tarball, in a `downloads/` dir of its own.
fn release_tarball(node: &Node, tag: &str, extra: &str, pack: &str) -> PathBuf {
    let name = format!("cni-rs-0.0.0-{tag}");
    let stage = node.dir.path.join(format!("stage-{tag}"));
    let top = stage.join(&name);
    std::fs::create_dir_all(top.join("bin")).unwrap();
    for p in ["bandwidth", "topology-label"] {
        std::fs::copy(node.from.join(p), top.join("bin").join(p)).unwrap();
    }
    let downloads = node.dir.path.join(format!("downloads-{tag}"));
    std::fs::create_dir_all(&downloads).unwrap();
    let tgz = downloads.join(format!("{name}.tgz"));
    let script = format!("cd \"$1\" && {{ {extra} ; }} && cd .. && {pack} >\"$3\"");
    sh(&[
        "bash",
        "-ec",
        &script,
        "-",
        &top.display().to_string(),
        &name,
        &tgz.display().to_string(),
    ])
    .unwrap();
    tgz
}

/// Packs the release directory `$2` to stdout, as release.sh does.
const PACK: &str =
    "tar -c --format=gnu --numeric-owner --owner=0 --group=0 -f - -- \"$2\" | gzip -1";

/// cni-rs install --from a tarball, bounded in time (a FIFO must never be
/// opened), TMPDIR under the node's dir (it must stay empty: the tarball
/// is unpacked in memory).
fn install_from(node: &Node, tgz: &Path) -> Outcome {
    let tmp = node.dir.path.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = Command::new("timeout")
        .arg("120")
        .arg(plugin_bin("cni-rs"))
        .arg("install")
        .arg("--from")
        .arg(tgz)
        .args(&node.args()[2..])
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .output()
        .expect("run cni-rs install");
    Outcome::from(out)
}

/// Refused with nothing installed, the conflist untouched and no scratch
/// left; returns stderr.
fn refused_from(node: &Node, tgz: &Path, why: &str) -> String {
    let conf_before = std::fs::read(&node.conf).unwrap();
    let out = install_from(node, tgz);
    assert_eq!(out.status, 1, "{why}: {}", out.stderr);
    assert!(out.stderr.contains("refusing"), "{why}: {}", out.stderr);
    assert!(
        Node::names(&node.bin).is_empty(),
        "{why}: installed {:?}",
        Node::names(&node.bin)
    );
    assert_eq!(
        std::fs::read(&node.conf).unwrap(),
        conf_before,
        "{why}: conflist changed"
    );
    assert!(
        Node::names(&node.dir.path.join("tmp")).is_empty(),
        "{why}: scratch left behind"
    );
    out.stderr
}

/// A SHA256SUMS beside the tarball that is there but is not a readable
/// regular file is a refusal, not "no checksums" (which would install the
/// tarball unverified).
#[test]
fn from_tarball_refuses_a_checksum_file_it_cannot_read() {
    let node = Node::new("10-aws.conflist");
    let tgz = release_tarball(&node, "sums", "true", PACK);
    let sums = tgz.parent().unwrap().join("SHA256SUMS");
    let fifo =
        || nix::unistd::mkfifo(&sums, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let dir = || std::fs::create_dir(&sums).unwrap();
    let dangling = || std::os::unix::fs::symlink("/nonexistent/SHA256SUMS", &sums).unwrap();
    let to_dir = || std::os::unix::fs::symlink("/", &sums).unwrap();
    let cases: [(&str, &dyn Fn()); 4] = [
        ("a FIFO", &fifo),
        ("a directory", &dir),
        ("a dangling link", &dangling),
        ("a link to a directory", &to_dir),
    ];
    for (what, make) in cases {
        make();
        let err = refused_from(&node, &tgz, what);
        assert!(err.contains("SHA256SUMS"), "{what}: {err}");
        if sums.is_dir() && !sums.is_symlink() {
            std::fs::remove_dir(&sums).unwrap();
        } else {
            std::fs::remove_file(&sums).unwrap();
        }
    }
    // The same tarball with a real SHA256SUMS, and with none, installs.
    let sum = sh(&["sha256sum", &tgz.display().to_string()]).unwrap();
    let hash = sum.split_whitespace().next().unwrap().to_string();
    let name = tgz.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::write(&sums, format!("{hash}  {name}\n")).unwrap();
    let out = ok(install_from(&node, &tgz));
    assert!(out.stderr.contains("matches"), "{}", out.stderr);
    assert_eq!(Node::names(&node.bin), ["bandwidth-rs", "topology-label"]);
}

/// What a tarball unpacks to is bounded: a 1 GiB member (zeros, a few MB
/// of gzip; or sparse, a few hundred bytes) is refused before it reaches
/// the disk.
#[test]
fn from_tarball_refuses_one_that_unpacks_too_big() {
    let node = Node::new("10-aws.conflist");
    let zeros = release_tarball(
        &node,
        "zeros",
        "mkdir lib && truncate -s 1G lib/zeros",
        PACK,
    );
    let size = std::fs::metadata(&zeros).unwrap().len();
    assert!(size < 8 << 20, "the bomb is small: {size} bytes");
    let err = refused_from(&node, &zeros, "1 GiB of zeros");
    assert!(err.contains("bytes: not a cni-rs release"), "{err}");
    let sparse = release_tarball(
        &node,
        "sparse",
        "truncate -s 1G bin/sparse",
        &PACK.replace("tar -c", "tar -c --sparse"),
    );
    let err = refused_from(&node, &sparse, "a 1 GiB sparse member");
    assert!(err.contains("bytes: not a cni-rs release"), "{err}");
    let many = release_tarball(
        &node,
        "many",
        "mkdir lib && for i in $(seq 1 1200); do : >lib/$i; done",
        PACK,
    );
    let err = refused_from(&node, &many, "1200 members");
    assert!(err.contains("members"), "{err}");
    let link = release_tarball(&node, "link", "ln -s /etc lib", PACK);
    let err = refused_from(&node, &link, "a symlink");
    assert!(err.contains("not a file or directory"), "{err}");
    // A release-sized tarball still installs.
    let fine = release_tarball(&node, "fine", "mkdir lib && truncate -s 20M lib/data", PACK);
    ok(install_from(&node, &fine));
    assert_eq!(Node::names(&node.bin), ["bandwidth-rs", "topology-label"]);
}

#[test]
fn uninstall_restores_the_original_chain() {
    for name in ["10-aws.conflist", "10-aws-enable-bandwidth-plugin.conflist"] {
        let node = Node::new(name);
        let orig = node.conf_json();
        ok(node.install(&[]));
        ok(node.uninstall());
        assert_eq!(node.conf_json(), orig, "{name}");
        assert!(
            Node::names(&node.bin).is_empty(),
            "{name}: binaries removed"
        );
        assert_eq!(
            Node::names(&node.net()),
            ["10-aws.conflist"],
            "{name}: backup removed, no temp files"
        );
        assert_eq!(mode(&node.conf), 0o644);
        let o = ok(node.uninstall());
        assert!(o.stderr.contains("nothing to do"), "{}", o.stderr);
    }

    // After an aws-node rewrite (new MTU), uninstall keeps the new render,
    // not the stale backup.
    let node = Node::new("10-aws.conflist");
    ok(node.install(&[]));
    let mut c = node.conf_json();
    c["plugins"][0]["mtu"] = "1500".into();
    std::fs::write(&node.conf, serde_json::to_string_pretty(&c).unwrap()).unwrap();
    ok(node.uninstall());
    let after = node.conf_json();
    assert_eq!(after["plugins"][0]["mtu"], "1500");
    assert_eq!(types(&after), ["aws-cni", "egress-cni", "portmap"]);
}

/// Uninstall deletes the bandwidth plugin's parked ifbs (its `ifbPool`)
/// in its network namespace, after a dry run that only names them, and
/// nothing else: not an attachment's ifb, not an unmarked ifb under a
/// slot name.
#[test]
fn uninstall_deletes_the_parked_ifbs_and_nothing_else() {
    require_root();
    let node = Node::new("10-aws.conflist");
    ok(node.install(&[]));
    let ns = Netns::new("unin").unwrap();
    let mark = |dev: &str, alias: &str| {
        ns.ip(&["link", "add", dev, "type", "ifb"]).unwrap();
        if !alias.is_empty() {
            ns.ip(&["link", "set", dev, "alias", alias]).unwrap();
        }
    };
    mark(
        "ifb-parked0",
        "cni-bandwidth parked pool=/run/cni/bandwidth",
    );
    mark("ifb-parked1", "");
    mark("bwpkeep", "cni-bandwidth net=n id=c if=eth0");
    let in_ns = |extra: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(plugin_bin("cni-rs"))
            .arg("uninstall")
            .args(&node.args()[2..])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Outcome::from(out)
    };
    let dry = ok(in_ns(&["--dry-run"]));
    assert!(
        dry.stderr
            .contains("would delete the parked ifb ifb-parked0"),
        "{}",
        dry.stderr
    );
    assert!(
        ns.link("ifb-parked0").is_some(),
        "a dry run changes nothing"
    );
    let o = ok(in_ns(&[]));
    assert!(
        o.stderr.contains("deleted the parked ifb ifb-parked0"),
        "{}",
        o.stderr
    );
    assert!(ns.link("ifb-parked0").is_none());
    assert!(ns.link("ifb-parked1").is_some() && ns.link("bwpkeep").is_some());
}

/// `cni-rs install --watch` as the DaemonSet runs it, killed on drop.
struct Watcher {
    child: std::process::Child,
    log: PathBuf,
}

impl Watcher {
    fn start(node: &Node, interval: &str, extra: &[&str]) -> Watcher {
        let log = node.dir.path.join("watch.log");
        let child = cni_rs()
            .arg("install")
            .args(node.args())
            .args(["--watch", "--interval", interval])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Watcher { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, as the kubelet stops a pod: exits 0, promptly.
    fn terminate(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "exit on SIGTERM: {st:?}\n{}", self.log());
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "still running 5 s after SIGTERM\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(self.log().contains("stopped"), "{}", self.log());
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_installed(node: &Node) -> bool {
    std::fs::read_to_string(&node.conf)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|c| {
            let t = types(&c);
            t.iter().filter(|t| *t == "bandwidth-rs").count() == 1
                && t.iter().filter(|t| *t == "topology-label").count() == 1
                && !t.iter().any(|t| t == "bandwidth")
        })
}

fn binary_intact(node: &Node) -> bool {
    std::fs::read(node.bin.join("bandwidth-rs")).ok()
        == std::fs::read(node.from.join("bandwidth")).ok()
        && mode(&node.bin.join("bandwidth-rs")) == 0o755
}

/// With `interval` longer than the test's 5 s deadlines, only inotify
/// events can make the deadlines.
fn watch_scenario(interval: &str, extra: &[&str]) {
    let node = Node::new("10-aws.conflist");
    let w = Watcher::start(&node, interval, extra);
    wait_until("first apply", Duration::from_secs(10), || {
        is_installed(&node) && binary_intact(&node)
    });

    // aws-node restarts: renders its file again (atomic rename), with the
    // reference bandwidth entry this time.
    node.aws_node_rewrite("10-aws-enable-bandwidth-plugin.conflist");
    let took = wait_until(
        "re-applied after aws-node's rewrite",
        Duration::from_secs(5),
        || is_installed(&node),
    );
    eprintln!("{extra:?}: conflist re-applied after {took:?}");

    // Something overwrites our binary in place.
    std::fs::write(node.bin.join("bandwidth-rs"), b"garbage").unwrap();
    let took = wait_until("binary restored", Duration::from_secs(5), || {
        binary_intact(&node)
    });
    eprintln!("{extra:?}: binary restored after {took:?}");

    // Our own writes do not make it loop: the file stays put.
    let settled = ino(&node.conf);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        ino(&node.conf),
        settled,
        "rewrote a settled file\n{}",
        w.log()
    );
    assert_eq!(
        std::fs::read(&node.conf).unwrap(),
        {
            // The same as a one-shot install of that render.
            let other = Node::new("10-aws-enable-bandwidth-plugin.conflist");
            ok(other.install(&[]));
            std::fs::read(&other.conf).unwrap()
        },
        "{}",
        w.log()
    );

    // A malformed file (a human mid-edit) is reported once, then fixed by
    // the next good render.
    let tmp = node.net().join(".editor.tmp");
    std::fs::write(&tmp, "{\"plugins\": [").unwrap();
    std::fs::rename(&tmp, &node.conf).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        std::fs::read_to_string(&node.conf).unwrap(),
        "{\"plugins\": ["
    );
    node.aws_node_rewrite("10-aws.conflist");
    wait_until("re-applied after the fix", Duration::from_secs(5), || {
        is_installed(&node)
    });
    let log = w.log();
    assert_eq!(log.matches("not valid JSON").count(), 1, "{log}");
    w.terminate();
}

#[test]
fn watch_reapplies_with_inotify() {
    watch_scenario("30", &[]);
}

#[test]
fn watch_reapplies_by_polling() {
    watch_scenario("1", &["--poll"]);
}

/// The DaemonSet starts before aws-node on a new node: it waits for the
/// conflist, then installs.
#[test]
fn watch_waits_for_aws_node() {
    let node = Node::new("10-aws.conflist");
    std::fs::remove_file(&node.conf).unwrap();
    let w = Watcher::start(&node, "30", &[]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!node.conf.exists());
    node.aws_node_rewrite("10-aws.conflist");
    wait_until(
        "installed once aws-node wrote",
        Duration::from_secs(5),
        || is_installed(&node),
    );
    w.terminate();
}

fn yaml_to_json(path: &Path) -> Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
        ])
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn kubernetes_validate(version: &str, manifest: &Path) -> std::process::Output {
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "-k", version])
        .arg(manifest)
        .output()
        .expect("python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named"),
        "kubernetes-validate missing: pip install kubernetes-validate (scripts/test.sh does)"
    );
    out
}

/// The manifest against the Kubernetes OpenAPI schemas bundled in the
/// `kubernetes-validate` package (offline, strict: unknown fields fail),
/// then the properties a node installer needs.
#[test]
fn daemonset_manifest_is_valid() {
    let manifest = repo().join("deploy/daemonset.yaml");
    for version in ["1.29", "1.31", "1.33"] {
        let out = kubernetes_validate(version, &manifest);
        assert!(
            out.status.success(),
            "{version}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The validator does catch mistakes.
    let bad = TempDir::new("cnids");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let broken = bad.path.join("bad.yaml");
    std::fs::write(&broken, text.replace("tolerations:", "toleration:")).unwrap();
    let out = kubernetes_validate("1.31", &broken);
    assert!(!out.status.success(), "a typo must fail validation");

    let docs = yaml_to_json(&manifest);
    assert_eq!(docs.as_array().unwrap().len(), 1);
    let ds = &docs[0];
    assert_eq!(ds["kind"], "DaemonSet");
    assert_eq!(ds["metadata"]["namespace"], "kube-system");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]));
    assert!(pod.get("nodeSelector").is_none());
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    let terms = &pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    let arch = terms[0]["matchExpressions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "kubernetes.io/arch")
        .expect("arch affinity");
    assert_eq!(arch["operator"], "In");
    assert_eq!(arch["values"], json!(["amd64", "arm64"]));

    // The metrics sidecar: cni-rs writes the textfile; the state is read-only.
    let m = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "metrics")
        .expect("the metrics container");
    assert_eq!(m["command"][0], "/opt/cni-rs/bin/cni-rs");
    assert_eq!(m["command"][1], "metrics");
    let args: Vec<&str> = m["command"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let after = |flag: &str| args.iter().position(|a| *a == flag).map(|i| args[i + 1]);
    assert!(
        after("--textfile").is_some_and(|p| p.ends_with(".prom")),
        "{args:?}"
    );
    assert!(after("--interval").is_some(), "{args:?}");
    let state_mount = m["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "cni-state")
        .expect("state mount");
    assert_eq!(state_mount["readOnly"], true);
    assert!(
        after("--bandwidth-state-dir")
            .is_some_and(|p| p.starts_with(state_mount["mountPath"].as_str().unwrap()))
    );
    assert_eq!(pod["hostNetwork"], true, "the node's counters");
    assert_ne!(m["securityContext"]["privileged"], true);

    let c = &pod["containers"][0];
    assert_eq!(
        c["command"],
        json!([
            "/opt/cni-rs/bin/cni-rs",
            "install",
            "--watch",
            "--from",
            "/opt/cni-rs/bin",
            "--cni-bin-dir",
            "/host/opt/cni/bin",
            "--conflist",
            "/host/etc/cni/net.d/10-aws.conflist"
        ])
    );
    for k in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(c["resources"][k][r].is_string(), "resources.{k}.{r}");
        }
    }
    assert_eq!(c["securityContext"]["runAsUser"], 0);
    assert_ne!(c["securityContext"]["privileged"], true);
    let mounts: Vec<(String, String)> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["mountPath"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let host_path = |name: &str| -> String {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .and_then(|v| v["hostPath"]["path"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    for (host, inside) in [
        ("/etc/cni/net.d", "/host/etc/cni/net.d"),
        ("/opt/cni/bin", "/host/opt/cni/bin"),
    ] {
        assert!(
            mounts
                .iter()
                .any(|(n, p)| p == inside && host_path(n) == host),
            "{host} mounted at {inside}: {mounts:?}"
        );
    }
    // Nothing in the image needs scratch space: no emptyDir.
    assert!(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v.get("emptyDir").is_none())
    );
    // The image layout the manifest relies on is the Dockerfile's: from
    // scratch, the release's bin/ and nothing else (tests/cri-e2e's image
    // test runs what scripts/image.sh builds from it).
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let steps: Vec<&str> = dockerfile
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    for want in [
        "FROM scratch",
        "COPY dist/linux-${TARGETARCH}/bin/ /opt/cni-rs/bin/",
        "ENTRYPOINT [\"/opt/cni-rs/bin/cni-rs\"]",
    ] {
        assert!(steps.contains(&want), "Dockerfile: {want}");
    }
    assert!(
        !steps.iter().any(|l| l.starts_with("RUN")),
        "no RUN step: nothing to run it with"
    );
}

/// install's entries run the chain: vpc-cni-sim (aws-cni's look-alike,
/// from single-node-sim.conflist) followed by what install appended,
/// with the built plugins installed by cni-rs install as bandwidth-rs and
/// topology-label, driven by cni-run like a runtime (ADD, DEL, DEL).
#[test]
fn patched_conflist_runs_the_chain() {
    let node = Node::new("single-node-sim.conflist");
    node.use_built_plugins();
    let state = TempDir::new("cnist");
    let cache = TempDir::new("cnica");
    // The node's base as aws-node renders it with ENABLE_BANDWIDTH_PLUGIN:
    // the main plugin, then the reference bandwidth entry, which install
    // replaces (and keeps inside ours: the plugin must ignore that key).
    let mut base = node.conf_json();
    let main = base["plugins"][0].clone();
    base["plugins"] = json!([main, {"type": "bandwidth", "capabilities": {"bandwidth": true}}]);
    base["plugins"][0]["stateDir"] = state.path.join("vpc-cni-sim").display().to_string().into();
    std::fs::write(&node.conf, serde_json::to_string_pretty(&base).unwrap()).unwrap();
    let labels = node.dir.path.join("topology-labels.json");
    std::fs::write(
        &labels,
        json!({"topology.kubernetes.io/zone": "us-west-2a", "topology.kubernetes.io/region": "us-west-2"})
            .to_string(),
    )
    .unwrap();
    ok(node.install(&["--labels-file", &labels.display().to_string()]));
    let mut conf = node.conf_json();
    assert_eq!(
        types(&conf),
        ["vpc-cni-sim", "topology-label", "bandwidth-rs"]
    );
    // Plugin state goes to temp dirs, never this machine's /var/lib/cni.
    for p in conf["plugins"].as_array_mut().unwrap()[1..].iter_mut() {
        let t = p["type"].as_str().unwrap().to_string();
        p["stateDir"] = state.path.join(t).display().to_string().into();
    }
    let run_conf = node.dir.path.join("run.conflist");
    std::fs::write(&run_conf, serde_json::to_string_pretty(&conf).unwrap()).unwrap();

    let ns = Netns::new("cnin").unwrap();
    ns.ip(&["addr", "add", "10.99.255.254/32", "dev", "lo"])
        .unwrap();
    ns.exec(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
        .unwrap();
    let pod = Netns::new("cnip").unwrap();
    let id = format!("inst{}", unique(""));
    let rate: u64 = 10_000_000;
    let caps = json!({
        "bandwidth": {"IngressRate": rate, "IngressBurst": 4294967295u64, "EgressRate": rate, "EgressBurst": 4294967295u64},
        "io.kubernetes.cri.pod-annotations": {"kubernetes.io/ingress-bandwidth": "10M", "kubernetes.io/egress-bandwidth": "10M"}
    });
    // bandwidth-rs/topology-label come only from the installed bin dir;
    // vpc-cni-sim from the build.
    let cni_path = format!(
        "{}:{}",
        node.bin.display(),
        plugin_bin("vpc-cni-sim").parent().unwrap().display()
    );
    let cni = |verb: &str, netns: &str| -> Outcome {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(plugin_bin("cni-run"))
            .arg(verb)
            .arg("--conflist")
            .arg(&run_conf)
            .args(["--container-id", &id])
            .args(["--netns", netns])
            .args(["--ifname", "eth0"])
            .args([
                "--args",
                &format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID={id};K8S_POD_UID=uid-{id}"),
            ])
            .args(["--cap-args", &caps.to_string()])
            .args(["--cni-path", &cni_path])
            .args(["--cache-dir", &cache.str()])
            .output()
            .unwrap();
        Outcome::from(out)
    };
    let res = cni("add", &pod.path_str()).ok().json();
    let eni = res["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .find(|n| n.starts_with("eni"))
        .unwrap_or_else(|| panic!("no eni in {res}"))
        .to_string();
    let tbf = ns
        .qdisc(&eni, "tbf")
        .unwrap_or_else(|| panic!("no tbf on {eni}"));
    assert_eq!(tbf["options"]["rate"].as_u64(), Some(rate / 8), "{tbf}");
    let ifb = res["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .find(|n| n.starts_with("bwp"))
        .expect("egress shaped through an ifb")
        .to_string();
    assert!(ns.qdisc(&ifb, "tbf").is_some(), "no tbf on {ifb}");
    let alias = ns.link(&eni).unwrap()["ifalias"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(alias, "demo/web us-west-2a", "labels from --labels-file");

    cni("del", &pod.path_str()).ok();
    cni("del", "").ok();
    // The pod's ifb is parked (bandwidth's ifbPool), nothing else stays.
    let parked = ns.parked_ifbs();
    assert!(parked.len() <= 1, "{parked:?}");
    let left: Vec<String> = ns
        .link_names()
        .into_iter()
        .filter(|l| l != "lo" && !parked.contains(l))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The scripts stay shellcheck-clean (scripts/test.sh installs shellcheck).
#[test]
fn scripts_are_shellcheck_clean() {
    let out = Command::new("shellcheck")
        .args(["-x", "-P", "SCRIPTDIR"])
        .args([
            "install.sh",
            "uninstall.sh",
            "release.sh",
            "test.sh",
            "bench.sh",
            "image.sh",
            "lib/queue-sweep.sh",
            "lib/classes-cost.sh",
            "lib/classes-accuracy.sh",
            "lib/backstop-cost.sh",
            "lib/churn-waves.sh",
            "lib/time-pod-verb.sh",
            "demo.sh",
            "lib/demo-zones.sh",
            "lib/quantity.sh",
        ])
        .current_dir(repo().join("scripts"))
        .output()
        .expect("shellcheck (apt-get install shellcheck; scripts/test.sh does)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
