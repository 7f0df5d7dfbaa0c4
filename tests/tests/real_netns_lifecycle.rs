//! ADD, CHECK, DEL, DEL in a real pod namespace: the normal suite runs it
//! against the host build (arm64's kernel cases run in a real Linux 6.1 in
//! the VM tier, docs/vm-tier.md). It also runs against `dist/linux-arm64`
//! under qemu-user (`CNI_TEST_PLUGIN_RUNNER=qemu-aarch64-static`), where
//! qemu's netlink translation passes link, address and route
//! messages only (RTM_GETNSID, neighbours and every tc message answer
//! EOPNOTSUPP without reaching the kernel), so there the plugins run
//! everything up to the host veth lookup: an unshaped attachment goes all
//! the way through, and a shaped one must fail with a CNI error and leave
//! the node exactly as it was.

use integration_tests::*;
use serde_json::{Value, json};

const NET: &str = "lifecycle-net";

struct Setup {
    node: Netns,
    pod: Pod,
    state: TempDir,
}

fn setup() -> Setup {
    require_root();
    let node = Netns::new("cnilcn").unwrap();
    let pod = Pod::new(&node).unwrap();
    Setup {
        node,
        pod,
        state: TempDir::new("cnilcs"),
    }
}

impl Setup {
    fn conf(&self, plugin: &str, extra: Value) -> Value {
        merged(
            json!({
                "cniVersion": "1.0.0",
                "name": NET,
                "type": plugin,
                "stateDir": self.state.str(),
                "prevResult": self.pod.prev_result("1.0.0"),
            }),
            extra,
        )
    }

    fn run(&self, plugin: &str, command: &str, conf: &Value) -> Outcome {
        run_plugin(
            &plugin_bin(plugin),
            Some(&self.node),
            &self.pod.env(command),
            conf.to_string().as_bytes(),
        )
    }

    /// The node and the pod, as the kernel reports them.
    fn world(&self) -> String {
        format!("{}\n{}", self.node.snapshot(), self.pod.ns.snapshot())
    }
}

#[test]
fn unshaped_attachment_passes_through() {
    let s = setup();
    let before = s.world();
    let conf = s.conf("bandwidth", json!({}));
    let out = s.run("bandwidth", "ADD", &conf).ok();
    assert_eq!(
        out.json(),
        s.pod.prev_result("1.0.0"),
        "prevResult unchanged"
    );
    s.run("bandwidth", "CHECK", &conf).ok();
    s.run("bandwidth", "DEL", &conf).ok();
    s.run("bandwidth", "DEL", &conf).ok();
    assert_eq!(s.world(), before, "an unshaped pod changes nothing");
    assert!(s.state.files().is_empty(), "{:?}", s.state.files());
}

#[test]
fn shaped_attachment_lifecycle() {
    let s = setup();
    let before = s.world();
    let cases = [
        (
            "bandwidth",
            json!({"ingressRate": 10_000_000, "ingressBurst": 100_000,
                   "egressRate": 10_000_000, "egressBurst": 100_000}),
        ),
        (
            "topology-label",
            json!({"labels": {"topology.kubernetes.io/zone": "us-test-1a"},
                   "profiles": [{"match": {}, "txqueuelen": 2000}]}),
        ),
    ];
    for (plugin, extra) in cases {
        let conf = s.conf(plugin, extra);
        let add = s.run(plugin, "ADD", &conf);
        if under_emulation() {
            let err = add.err(100);
            assert!(err.to_string().contains("Not supported"), "{plugin}: {err}");
            assert_eq!(s.world(), before, "{plugin}: a failed ADD changed the host");
            // Nothing to check: a CNI error (which one depends on how far
            // the plugin gets before it needs what qemu refuses).
            let check = s.run(plugin, "CHECK", &conf);
            assert!(
                check.status != 0 && check.json()["code"].is_u64(),
                "{plugin}: {check:?}"
            );
        } else {
            add.ok();
            assert_ne!(s.world(), before, "{plugin}: ADD did its work");
            s.run(plugin, "CHECK", &conf).ok();
        }
        s.run(plugin, "DEL", &conf).ok();
        s.run(plugin, "DEL", &conf).ok();
        // bandwidth's DEL parks the pod's ifb for the next ADD (its
        // ifbPool); GC of a network without pods deletes it.
        let parked = s.node.parked_ifbs();
        assert!(parked.len() <= 1, "{plugin}: {parked:?}");
        if !parked.is_empty() {
            let mut gc = conf.clone();
            gc.as_object_mut().unwrap().remove("prevResult");
            gc["cniVersion"] = "1.1.0".into();
            gc["cni.dev/valid-attachments"] = json!([]);
            let env = env_of(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")]);
            run_plugin(
                &plugin_bin(plugin),
                Some(&s.node),
                &env,
                gc.to_string().as_bytes(),
            )
            .ok();
        }
        assert_eq!(s.world(), before, "{plugin}: DEL left something");
        let left: Vec<String> = s.state.files();
        assert!(
            left.iter().all(|f| f.starts_with("imds-cache")),
            "{plugin}: {left:?}"
        );
    }
}
