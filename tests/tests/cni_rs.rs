//! `cni-rs`, the operator's view, against real pods and real traffic:
//! bytes per direction agree with what the receivers got on the wire, a
//! pod pushed past its limit shows overlimits growing, an unshaped pod
//! shows zero, the Prometheus output parses with the reference parser
//! (`prometheus_client`, PyPI) and matches the JSON, the textfile is
//! written atomically and readable by node_exporter's uid, the table
//! escapes control characters in pod names, and bad state never hides the
//! other attachments.

use integration_tests::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};

const NET: &str = "cnirs-net";
const RATE: u64 = 50_000_000;
const ZONE: &str = "topology.kubernetes.io/zone";

fn cni_rs_bin() -> std::path::PathBuf {
    plugin_bin("cni-rs")
}

struct Node {
    node: Netns,
    bw_state: TempDir,
    tl_state: TempDir,
}

impl Node {
    fn new() -> Node {
        require_root();
        Node {
            node: Netns::new("cnirsn").unwrap(),
            bw_state: TempDir::new("cnirsb"),
            tl_state: TempDir::new("cnirst"),
        }
    }

    fn add(&self, pod: &Pod, plugin: &str, extra: Value) {
        let state = if plugin == "bandwidth" {
            &self.bw_state
        } else {
            &self.tl_state
        };
        let conf = merged(
            json!({"cniVersion": "1.0.0", "name": NET, "type": plugin,
                   "stateDir": state.str(), "prevResult": pod.prev_result("1.0.0")}),
            extra,
        );
        run_plugin(
            &plugin_bin(plugin),
            Some(&self.node),
            &pod.env("ADD"),
            conf.to_string().as_bytes(),
        )
        .ok();
    }

    /// `cni-rs ARGS` in the node's netns, with these state dirs.
    fn cni_rs(&self, args: &[&str]) -> Outcome {
        self.cni_rs_with(args, &self.bw_state.str(), &self.tl_state.str())
    }

    fn cni_rs_with(&self, args: &[&str], bw: &str, tl: &str) -> Outcome {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.node.name])
            .arg(cni_rs_bin())
            .args(args)
            .args(["--bandwidth-state-dir", bw, "--topology-state-dir", tl])
            .stdin(Stdio::null())
            .output()
            .expect("run cni-rs");
        Outcome::from(out)
    }

    /// `cni-rs ARGS` as [`Node::cni_rs`] runs it, under umask 077: what it
    /// creates must not depend on the umask it inherits.
    fn cni_rs_umask_077(&self, args: &[&str]) -> Outcome {
        let out = Command::new("sh")
            .args(["-c", "umask 077 && exec \"$@\"", "sh"])
            .args(["ip", "netns", "exec", &self.node.name])
            .arg(cni_rs_bin())
            .args(args)
            .args(["--bandwidth-state-dir", &self.bw_state.str()])
            .args(["--topology-state-dir", &self.tl_state.str()])
            .stdin(Stdio::null())
            .output()
            .expect("run cni-rs");
        Outcome::from(out)
    }

    fn rows(&self) -> Vec<Value> {
        let out = self.cni_rs(&["pods", "--json"]).ok();
        serde_json::from_str::<Value>(&out.stdout)
            .unwrap_or_else(|e| panic!("cni-rs --json: {e}: {}", out.stdout))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn row_of(&self, pod: &Pod) -> Value {
        self.rows()
            .into_iter()
            .find(|r| r["containerId"] == pod.container_id.as_str())
            .unwrap_or_else(|| panic!("no row for {}", pod.container_id))
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// What the receiver got, as bytes through the host veth: the veth counts
/// each GSO super-packet (up to 64 KiB) once, with one set of headers, so
/// its bytes are the payload plus well under 1%.
fn through_veth(payload: u64) -> f64 {
    payload as f64
}

/// What the receiver got, as the shaper's qdisc counts it (egress in ifb
/// mode: the ifb's root, the pod's own even on an ifb a pod before it
/// used): per packet on the wire, each TCP segment with its own Ethernet,
/// IP and TCP (timestamps) headers, 66 bytes per `mtu - 52` of payload.
fn through_the_shaper(payload: u64, mtu: u64) -> f64 {
    let mss = mtu - 52;
    payload as f64 * (1.0 + 66.0 / mss as f64)
}

#[test]
fn bytes_match_the_wire_and_a_pod_past_its_limit_shows_overlimits() {
    let n = Node::new();
    let pod = Pod::new(&n.node).unwrap();
    n.add(
        &pod,
        "topology-label",
        json!({"labels": {ZONE: "us-test-1a"}}),
    );
    n.add(
        &pod,
        "bandwidth",
        json!({"ingressRate": RATE, "ingressBurst": RATE / 40, "egressRate": RATE,
               "egressBurst": RATE / 40, "egressMode": "ifb"}),
    );
    let before = n.row_of(&pod);
    assert_eq!(before["zone"], "us-test-1a");
    assert_eq!(before["hostVeth"], pod.host_veth.as_str());
    assert_eq!(before["egressMode"], "ifb");
    assert_eq!(before["stale"], false);
    assert!(
        before["namespace"].is_string() && before["pod"].is_string(),
        "{before}"
    );
    for d in ["ingress", "egress"] {
        assert_eq!(u(&before[d]["rateBitsPerSecond"]), RATE, "{d}");
        assert_eq!(before[d]["classes"], json!({}), "{d}");
    }

    // Into the pod: the node sends, the pod receives.
    let into = iperf(&pod.ns, &pod.pod_ip, &n.node, 3).unwrap();
    let mid = n.row_of(&pod);
    let got = (u(&mid["ingress"]["bytes"]) - u(&before["ingress"]["bytes"])) as f64;
    let want = through_veth(into.bytes);
    assert!(
        (got / want - 1.0).abs() <= 0.02,
        "into the pod: cni-rs {got} bytes vs {want:.0} received"
    );
    assert!(
        u(&mid["ingress"]["overlimits"]) > u(&before["ingress"]["overlimits"]),
        "pushed past its limit, the pod's ingress tbf throttled: {mid}"
    );

    // Out of the pod: through the ifb's tbf.
    let out = iperf(&n.node, &pod.host_ip, &pod.ns, 3).unwrap();
    let after = n.row_of(&pod);
    let got = (u(&after["egress"]["bytes"]) - u(&mid["egress"]["bytes"])) as f64;
    let mtu = u(&pod.ns.link("eth0").unwrap()["mtu"]);
    let want = through_the_shaper(out.bytes, mtu);
    assert!(
        (got / want - 1.0).abs() <= 0.02,
        "out of the pod: cni-rs {got} bytes vs {want:.0} received"
    );
    assert!(
        u(&after["egress"]["overlimits"]) > u(&mid["egress"]["overlimits"]),
        "{after}"
    );

    // The Prometheus output parses with the reference parser and says the
    // same as the JSON (read back to back while the pod is idle). Idle
    // means the shapers' queues have drained too: iperf3 returns while up
    // to latencyMs of data still waits in a tbf.
    let mut json_rows = n.rows();
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let again = n.rows();
        if again == json_rows {
            break;
        }
        json_rows = again;
    }
    let prom = n.cni_rs(&["pods", "--prometheus"]).ok();
    let samples = parse_prometheus(&prom.stdout);
    let row = json_rows
        .iter()
        .find(|r| r["containerId"] == pod.container_id.as_str())
        .unwrap();
    for (metric, field) in [
        ("cni_rs_bytes_total", "bytes"),
        ("cni_rs_packets_total", "packets"),
        ("cni_rs_overlimits_total", "overlimits"),
        ("cni_rs_drops_total", "drops"),
        ("cni_rs_rate_bits_per_second", "rateBitsPerSecond"),
    ] {
        for d in ["ingress", "egress"] {
            let v = samples
                .iter()
                .find(|s| {
                    s["name"] == metric
                        && s["labels"]["pod"] == row["pod"]
                        && s["labels"]["direction"] == d
                })
                .unwrap_or_else(|| panic!("no {metric} {d} in {}", prom.stdout));
            let (p, j) = (v["value"].as_f64().unwrap(), u(&row[d][field]) as f64);
            // A neighbour probe may pass between the two reads.
            assert!(
                (p - j).abs() <= (j * 0.001).max(2000.0),
                "{metric} {d}: {p} vs {j}"
            );
        }
    }
}

/// The samples of a Prometheus text page, as parsed by `prometheus_client`
/// (the official Python client's parser): a JSON list of name/labels/value.
fn parse_prometheus(text: &str) -> Vec<Value> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append({"name": s.name, "labels": s.labels, "value": s.value, "type": fam.type})
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the page: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn an_unshaped_pod_shows_zero_and_bad_state_hides_nothing_else() {
    let n = Node::new();
    let pod = Pod::new(&n.node).unwrap();
    n.add(
        &pod,
        "topology-label",
        json!({"labels": {ZONE: "us-test-1b"}}),
    );
    let row = n.row_of(&pod);
    for d in ["ingress", "egress"] {
        assert!(row[d]["rateBitsPerSecond"].is_null(), "{row}");
        assert_eq!(
            (u(&row[d]["drops"]), u(&row[d]["overlimits"])),
            (0, 0),
            "{row}"
        );
        assert!(row[d]["bytes"].is_u64(), "{row}");
    }

    // A truncated state file, one that is not ours in shape, and a record
    // whose host veth is gone.
    let dir = Path::new(&n.bw_state.path);
    std::fs::write(
        dir.join("bandwidth+x+trunc+eth0.json"),
        br#"{"owner":"bandwidth","netw"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("bandwidth+x+foreign+eth0.json"),
        br#"{"hello": 1}"#,
    )
    .unwrap();
    let gone = json!({"owner": "bandwidth", "network": NET, "containerID": "gone1", "ifname": "eth0",
        "data": {"hostVeth": "vhgone0", "hostIndex": 99999, "ingressTbf": true, "ifb": null,
                 "ingressQdisc": false, "filterPrio": null, "ingressRate": 1000000,
                 "pod": {"namespace": "old", "name": "deleted-pod"}}});
    std::fs::write(
        dir.join("bandwidth+cnirs-net+gone1+eth0.json"),
        gone.to_string(),
    )
    .unwrap();
    let out = n.cni_rs(&["pods", "--json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let rows: Vec<Value> = serde_json::from_str::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap();
    assert!(
        rows.iter()
            .any(|r| r["containerId"] == pod.container_id.as_str()),
        "{rows:?}"
    );
    let errors: Vec<&Value> = rows.iter().filter(|r| r["error"].is_string()).collect();
    assert_eq!(
        errors.len(),
        2,
        "the truncated and the foreign file: {rows:?}"
    );
    let stale = rows
        .iter()
        .find(|r| r["containerId"] == "gone1")
        .expect("the gone pod's row");
    assert_eq!(stale["stale"], true);
    assert_eq!(stale["pod"], "deleted-pod");
    assert!(stale["ingress"]["bytes"].is_null());
    // The table marks them too.
    let table = n.cni_rs(&["pods"]).ok().stdout;
    assert!(
        table.contains("stale") && table.contains("! unreadable state"),
        "{table}"
    );
    // The metrics count them.
    let samples = parse_prometheus(&n.cni_rs(&["pods", "--prometheus"]).ok().stdout);
    let bad = samples
        .iter()
        .find(|s| s["name"] == "cni_rs_unreadable_attachments")
        .unwrap();
    assert_eq!(bad["value"].as_f64(), Some(3.0));

    // An unreadable state dir (here: a regular file) is reported; the
    // other dir's attachments still print, exit 0.
    let not_a_dir = n.tl_state.path.join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let out = n.cni_rs_with(
        &["pods", "--json"],
        &not_a_dir.display().to_string(),
        &n.tl_state.str(),
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(out.stderr.contains("bandwidth state"), "{}", out.stderr);
    assert!(out.stdout.contains(&pod.container_id));
    // Nothing at all readable: exit 1.
    let nothing = n.cni_rs_with(
        &["pods"],
        &not_a_dir.display().to_string(),
        &not_a_dir.display().to_string(),
    );
    assert_eq!(nothing.status, 1, "{}", nothing.stdout);
}

#[test]
fn metrics_textfile_is_written_atomically_and_kept_fresh() {
    let n = Node::new();
    let pod = Pod::new(&n.node).unwrap();
    n.add(
        &pod,
        "bandwidth",
        json!({"ingressRate": RATE, "ingressBurst": RATE / 40}),
    );
    let out_dir = TempDir::new("cnirsm");
    let file = out_dir.path.join("cni-rs.prom");
    let once = n.cni_rs(&["metrics", "--textfile", &file.display().to_string()]);
    assert_eq!(once.status, 0, "{}", once.stderr);
    let text = std::fs::read_to_string(&file).unwrap();
    let samples = parse_prometheus(&text);
    assert!(
        samples
            .iter()
            .any(|s| s["name"] == "cni_rs_rate_bits_per_second"
                && s["value"].as_f64() == Some(RATE as f64))
    );
    assert_eq!(out_dir.files(), ["cni-rs.prom"], "no temp file left");
    // Forever, every second: the file is replaced (new inode) while running.
    use std::os::unix::fs::MetadataExt as _;
    let ino0 = std::fs::metadata(&file).unwrap().ino();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &n.node.name])
        .arg(cni_rs_bin())
        .args([
            "metrics",
            "--textfile",
            &file.display().to_string(),
            "--interval",
            "1",
        ])
        .args([
            "--bandwidth-state-dir",
            &n.bw_state.str(),
            "--topology-state-dir",
            &n.tl_state.str(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut replaced = false;
    while std::time::Instant::now() < deadline {
        if std::fs::metadata(&file).map(|m| m.ino()).unwrap_or(ino0) != ino0 {
            replaced = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(replaced, "the textfile was not rewritten within 10 s");
    // Bad usage: 2, and nothing written.
    let bad = n.cni_rs(&[
        "metrics",
        "--textfile",
        &out_dir.path.join("x.txt").display().to_string(),
    ]);
    assert_eq!(bad.status, 2, "{}", bad.stderr);
}

/// node_exporter (kube-prometheus-stack) runs as uid 65534: the textfile
/// is 0644 and the directories cni-rs creates for it 0755, even when
/// cni-rs inherits umask 077, and that uid reads and parses it.
#[test]
fn metrics_textfile_is_readable_by_node_exporters_uid() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;
    let n = Node::new();
    let pod = Pod::new(&n.node).unwrap();
    n.add(
        &pod,
        "bandwidth",
        json!({"ingressRate": RATE, "ingressBurst": RATE / 40}),
    );
    let out_dir = TempDir::new("cnirsu");
    // The test's own directory (and the temp dir above it) are open to
    // everyone; what cni-rs creates below it is under test.
    std::fs::set_permissions(&out_dir.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    for a in out_dir.path.ancestors().skip(1) {
        let m = std::fs::metadata(a).unwrap().permissions().mode();
        assert!(
            m & 0o001 != 0,
            "{} is not searchable by uid 65534",
            a.display()
        );
    }
    let textfile_dir = out_dir.path.join("node_exporter/textfile");
    let file = textfile_dir.join("cni-rs.prom");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    // Twice: creating the directories, then replacing the file.
    for round in ["first", "second"] {
        let out = n.cni_rs_umask_077(&["metrics", "--textfile", &file.display().to_string()]);
        assert_eq!(out.status, 0, "{round}: {}", out.stderr);
        let read = Command::new("cat")
            .arg(&file)
            .uid(65534)
            .gid(65534)
            .output()
            .expect("run cat as uid 65534");
        assert!(
            read.status.success(),
            "{round}: uid 65534 cannot read the textfile: {}",
            String::from_utf8_lossy(&read.stderr)
        );
        let samples = parse_prometheus(&String::from_utf8_lossy(&read.stdout));
        assert!(
            samples
                .iter()
                .any(|s| s["name"] == "cni_rs_rate_bits_per_second"
                    && s["value"].as_f64() == Some(RATE as f64)),
            "{round}: {samples:?}"
        );
        assert_eq!(mode(&file), 0o644, "{round}: the textfile");
        assert_eq!(mode(&textfile_dir), 0o755, "{round}: a created directory");
        assert_eq!(mode(textfile_dir.parent().unwrap()), 0o755, "{round}");
    }
    let left: Vec<String> = std::fs::read_dir(&textfile_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["cni-rs.prom"], "no temp file left");
}

/// A pod name is whatever the runtime put in `K8S_POD_NAME`: a newline or
/// an ESC in it (or in the namespace) is escaped in the table, so each
/// attachment stays one line and nothing reaches the terminal raw; the
/// JSON keeps the name as it was.
#[test]
fn the_table_escapes_control_characters_in_pod_names() {
    let n = Node::new();
    let plain = Pod::new(&n.node).unwrap();
    n.add(
        &plain,
        "topology-label",
        json!({"labels": {ZONE: "us-test-1a"}}),
    );
    let hostile = Pod::new(&n.node).unwrap();
    let (ns, name) = ("ns\twith-tab", "evil\nfake-row\u{1b}[31m");
    let env: Vec<(String, String)> = hostile
        .env("ADD")
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "CNI_ARGS" => (
                k,
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}"),
            ),
            _ => (k, v),
        })
        .collect();
    let conf = json!({"cniVersion": "1.0.0", "name": NET, "type": "topology-label",
        "stateDir": n.tl_state.str(), "labels": {ZONE: "us-test-1a"},
        "prevResult": hostile.prev_result("1.0.0")});
    run_plugin(
        &plugin_bin("topology-label"),
        Some(&n.node),
        &env,
        conf.to_string().as_bytes(),
    )
    .ok();
    let row = n.row_of(&hostile);
    assert_eq!(
        (row["namespace"].as_str(), row["pod"].as_str()),
        (Some(ns), Some(name))
    );

    let table = n.cni_rs(&["pods"]).ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "a header and one line per pod: {table:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ns\\twith-tab/evil\\nfake-row\\x1b[31m ")),
        "{table:?}"
    );
    assert!(
        !table.chars().any(|c| c.is_control() && c != '\n'),
        "a raw control character: {table:?}"
    );
}

#[test]
fn help_needs_no_root_and_no_state() {
    let out = Command::new(cni_rs_bin()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cni-rs pods") && text.contains("--prometheus"),
        "{text}"
    );
}

/// Egress shaped inside the pod (egressMode pod): drops and overlimits come
/// from the container interface's tbf, read in the recorded namespace.
#[test]
fn pod_mode_egress_counts_the_pod_side_tbf() {
    let n = Node::new();
    let pod = Pod::new(&n.node).unwrap();
    n.add(
        &pod,
        "bandwidth",
        json!({"egressRate": RATE, "egressBurst": RATE / 40, "egressMode": "pod"}),
    );
    let before = n.row_of(&pod);
    assert_eq!(before["egressMode"], "pod");
    assert_eq!(u(&before["egress"]["rateBitsPerSecond"]), RATE);
    assert!(before["egress"]["overlimits"].is_u64(), "{before}");
    iperf(&n.node, &pod.host_ip, &pod.ns, 2).unwrap();
    let after = n.row_of(&pod);
    assert!(
        u(&after["egress"]["overlimits"]) > u(&before["egress"]["overlimits"]),
        "{after}"
    );
    assert!(after["ingress"]["rateBitsPerSecond"].is_null());
}

/// `cni-rs pods --json | head`: a reader that goes away ends the output
/// quietly (status 0, nothing on stderr), not with a panic about a broken
/// pipe.
#[test]
fn a_reader_that_goes_away_is_not_a_panic() {
    let dir = TempDir::new("cnirs-pipe");
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    drop(read_end); // every write now fails with EPIPE
    let out = Command::new(cni_rs_bin())
        .args(["pods", "--json", "--bandwidth-state-dir"])
        .arg(dir.path.join("bw"))
        .arg("--topology-state-dir")
        .arg(dir.path.join("tl"))
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(stderr.is_empty(), "{stderr}");
}
