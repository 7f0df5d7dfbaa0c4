//! docs/cnitool.md's "Try it by hand with cnitool" walkthrough, run as written
//! with the real upstream cnitool: every ```sh block of that section, in
//! order, in one shell environment, from the project root. Between the
//! blocks this test checks what each one should have done (the pod shaped,
//! with real traffic; CHECK skipped, passing, then failing after tampering;
//! nothing left after DEL), so the docs cannot drift from what works.
//!
//! The walkthrough's names are fixed (`cnirs-node`, `cnirs-pod`,
//! `/tmp/cnirs`): they are cleared before and after, also on failure.

use integration_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const NODE: &str = "cnirs-node";
const POD: &str = "cnirs-pod";
const WORK: &str = "/tmp/cnirs";
const RATE: u64 = 100_000_000;

/// The ```sh blocks of the docs/cnitool.md section `title`, in order.
fn section_blocks(readme: &str, title: &str) -> Vec<String> {
    let start = readme
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("docs/cnitool.md has no section {title:?}"));
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in rest[..end].lines() {
        match (&mut current, line) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap_or_default()),
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// Clears the walkthrough's namespaces and files (before, and on drop).
struct Clean;

impl Clean {
    fn now() {
        for ns in [POD, NODE] {
            sh_quiet(&["ip", "netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(WORK);
    }
}

impl Drop for Clean {
    fn drop(&mut self) {
        Clean::now();
    }
}

/// Runs docs/cnitool.md blocks in one environment carried from block to block.
struct Walkthrough {
    root: PathBuf,
    env_file: PathBuf,
}

impl Walkthrough {
    fn run(&self, block: &str) -> String {
        let script = format!(
            "set -euo pipefail\nsource {env}\n{block}\nexport -p > {env}\n",
            env = self.env_file.display()
        );
        let out = Command::new("bash")
            .args(["-c", &script])
            .current_dir(&self.root)
            .output()
            .expect("bash");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "docs/cnitool.md block failed:\n{block}\n---\n{text}"
        );
        text
    }
}

fn cnitool_source(root: &Path) -> Option<PathBuf> {
    let dir = root.join("../shared/third_party/cnitool");
    if dir.join("cnitool.go").exists() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{} is missing: CI must run the cnitool walkthrough",
            dir.display()
        );
    }
    // Straight to fd 2: libtest would show an eprintln! only on failure.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "SKIPPED: the cnitool walkthrough needs the upstream cnitool source at {} (it is there in CI)\n",
            dir.display()
        )
        .as_bytes(),
    );
    None
}

#[test]
fn readme_cnitool_walkthrough() {
    require_root();
    let root = repo_root();
    if cnitool_source(&root).is_none() {
        return;
    }
    let readme = std::fs::read_to_string(root.join("docs/cnitool.md")).unwrap();
    let blocks = section_blocks(&readme, "Try it by hand with cnitool");
    assert_eq!(blocks.len(), 10, "the walkthrough's steps: {blocks:#?}");
    Clean::now();
    let _clean = Clean;
    let env_dir = TempDir::new("cnitool");
    let w = Walkthrough {
        root,
        env_file: env_dir.path.join("env"),
    };
    std::fs::write(&w.env_file, "").unwrap();
    let node = Netns { name: NODE.into() };
    let pod = Netns { name: POD.into() };

    // Build; namespaces, conflist and environment.
    w.run(&blocks[0]);
    w.run(&blocks[1]);

    // ADD: shaped both ways, labelled.
    w.run(&blocks[2]);
    let eni = node
        .link_names()
        .into_iter()
        .find(|l| l.starts_with("eni"))
        .expect("the pod's eni… veth");
    assert!(node.qdisc(&eni, "tbf").is_some(), "tbf into the pod");
    let ifb = node
        .link_names()
        .into_iter()
        .find(|l| l.starts_with("bwp"))
        .expect("the egress ifb");
    assert!(node.qdisc(&ifb, "tbf").is_some(), "tbf out of the pod");
    let alias = node.link(&eni).unwrap()["ifalias"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        alias.contains("demo/web") && alias.contains("us-west-2a"),
        "{alias}"
    );

    // Look, and the walkthrough's own measurement; then ours, per second.
    let look = w.run(&blocks[3]);
    assert!(look.contains("tbf") && look.contains("demo/web"), "{look}");
    let measured = w.run(&blocks[4]);
    assert!(measured.contains("receiver"), "{measured}");
    let pod_ip = pod
        .ip(&["-4", "-j", "addr", "show", "dev", "eth0"])
        .unwrap();
    let pod_ip: serde_json::Value = serde_json::from_str(&pod_ip).unwrap();
    let pod_ip = pod_ip[0]["addr_info"][0]["local"]
        .as_str()
        .unwrap()
        .to_string();
    iperf(&pod, &pod_ip, &node, 5)
        .unwrap()
        .assert_shaped(RATE, "cnitool: into the pod");
    iperf(&node, "10.99.255.254", &pod, 5)
        .unwrap()
        .assert_shaped(RATE, "cnitool: out of the pod");

    // CHECK: skipped by disableCheck, then passing, then failing.
    let skipped = w.run(&blocks[5]);
    assert!(skipped.contains("nothing checked"), "{skipped}");
    let passed = w.run(&blocks[6]);
    assert!(passed.contains("CHECK: passed"), "{passed}");
    let failed = w.run(&blocks[7]);
    assert!(failed.contains("CHECK: failed, as it should"), "{failed}");
    assert!(
        failed.contains("tbf"),
        "CHECK names what is wrong: {failed}"
    );

    // DEL: nothing of the pod left on the node, nor in the state dirs.
    let after = w.run(&blocks[8]);
    assert!(!after.contains(".json"), "state left: {after}");
    let left = node.node_leftovers();
    assert!(left.is_empty(), "left on the node: {left:?}");
    let cached: Vec<_> = std::fs::read_dir("/var/lib/cni/results")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("aws-cni-cnitool-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(cached.is_empty(), "libcni's cached result left: {cached:?}");

    // Clean up, as docs/cnitool.md says.
    w.run(&blocks[9]);
    assert!(!Path::new(WORK).exists());
    let names = sh(&["ip", "netns", "list"]).unwrap();
    assert!(!names.contains(NODE) && !names.contains(POD), "{names}");
    // Already gone: the guards' deletes are no-ops.
    drop(pod);
    drop(node);
}
