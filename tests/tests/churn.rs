//! Pod churn in parallel (issue 26): calls for different attachments run
//! at the same time (no node-wide lock), and what the old lock protected
//! across attachments stays right. Eight pods in four pairs whose
//! reference ifb names collide (`advnetA` + `bc1…` and `advnet` + `Abc1…`
//! concatenate alike) run ADD and CHECK together, twice (a retried ADD),
//! with GC of both networks running alongside (every pod valid), then DEL
//! together, twice: every ADD and DEL succeeds, every pod owns exactly its
//! own ifb and redirect, GC removes nothing live, and nothing is left but
//! the parked ifbs, which the next round's ADDs take again (the same
//! devices, one pod each) and a final GC without pods deletes.

use integration_tests::*;
use serde_json::{Value, json};

const ROUNDS: usize = 3;

struct Attachment {
    pod: Pod,
    network: &'static str,
    container_id: String,
}

impl Attachment {
    fn env(&self, verb: &str) -> Vec<(String, String)> {
        with_env(self.pod.env(verb), "CNI_CONTAINERID", &self.container_id)
    }

    fn conf(&self, state: &TempDir) -> Value {
        json!({
            "cniVersion": "1.1.0", "name": self.network, "type": "bandwidth",
            "stateDir": state.str(), "egressMode": "ifb",
            "runtimeConfig": {"bandwidth": {"ingressRate": 20_000_000, "ingressBurst": 200_000,
                                             "egressRate": 20_000_000, "egressBurst": 200_000}},
            "prevResult": self.pod.prev_result("1.1.0"),
        })
    }

    fn run(&self, node: &Netns, state: &TempDir, verb: &str) -> Outcome {
        let conf = self.conf(state).to_string();
        run_plugin(
            &plugin_bin("bandwidth"),
            Some(node),
            &self.env(verb),
            conf.as_bytes(),
        )
    }

    fn alias(&self) -> String {
        format!(
            "cni-bandwidth net={} id={} if=eth0",
            self.network, self.container_id
        )
    }
}

fn gc(node: &Netns, state: &TempDir, network: &str, all: &[Attachment]) -> Outcome {
    let valid: Vec<Value> = all
        .iter()
        .filter(|a| a.network == network)
        .map(|a| json!({"containerID": a.container_id, "ifname": "eth0"}))
        .collect();
    let conf = json!({
        "cniVersion": "1.1.0", "name": network, "type": "bandwidth", "stateDir": state.str(),
        "cni.dev/valid-attachments": valid,
    });
    run_plugin(
        &plugin_bin("bandwidth"),
        Some(node),
        &env_of(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")]),
        conf.to_string().as_bytes(),
    )
}

/// Each attachment's ifb carries its own mark, and its host veth
/// redirects to exactly that ifb.
fn assert_own_ifbs(node: &Netns, all: &[Attachment]) {
    for a in all {
        let ifb = node
            .link_names()
            .into_iter()
            .filter_map(|n| node.link(&n))
            .find(|l| l["ifalias"].as_str() == Some(a.alias().as_str()))
            .unwrap_or_else(|| panic!("no ifb marked for {}", a.alias()));
        let filters = node.filters(&a.pod.host_veth, "ingress");
        let target = filters
            .iter()
            .find_map(|f| {
                f["options"]["actions"][0]["to_dev"]
                    .as_str()
                    .map(str::to_string)
            })
            .unwrap_or_default();
        assert_eq!(
            Some(target.as_str()),
            ifb["ifname"].as_str(),
            "{} redirects to another's ifb",
            a.alias()
        );
    }
}

fn in_parallel(all: &[Attachment], f: impl Fn(&Attachment) + Sync) {
    std::thread::scope(|s| {
        for a in all {
            let f = &f;
            s.spawn(move || f(a));
        }
    });
}

#[test]
fn parallel_churn_keeps_every_attachment_its_own() {
    let node = Netns::new("chn").unwrap();
    let state = TempDir::new("chst");
    let mut all = Vec::new();
    for i in 0..4 {
        let id = unique("");
        for (network, cid) in [
            ("advnetA", format!("bc1{id}{i}")),
            ("advnet", format!("Abc1{id}{i}")),
        ] {
            all.push(Attachment {
                pod: Pod::new(&node).unwrap(),
                network,
                container_id: cid,
            });
        }
    }
    let mut parked_before = None;
    for round in 0..ROUNDS {
        std::thread::scope(|s| {
            s.spawn(|| {
                in_parallel(&all, |a| {
                    for _ in 0..2 {
                        a.run(&node, &state, "ADD").ok();
                    }
                    a.run(&node, &state, "CHECK").ok();
                })
            });
            for network in ["advnetA", "advnet"] {
                let (node, state, all) = (&node, &state, &all);
                s.spawn(move || gc(node, state, network, all).ok());
            }
        });
        assert_own_ifbs(&node, &all);
        assert_eq!(
            state.files().len(),
            all.len(),
            "round {round}: one record each"
        );
        in_parallel(&all, |a| {
            a.run(&node, &state, "CHECK").ok();
        });
        in_parallel(&all, |a| {
            a.run(&node, &state, "DEL").ok();
            a.run(&node, &state, "DEL").ok();
        });
        let ifbs: Vec<_> = node
            .link_names()
            .into_iter()
            .filter(|n| n.starts_with("bwp"))
            .collect();
        assert!(ifbs.is_empty(), "round {round}: {ifbs:?} left");
        // Every DEL parked its ifb (the default pool has room for 16), and
        // from the second round on every ADD took a parked one: the same
        // eight devices, never two pods on one (assert_own_ifbs), none lost.
        let parked = parked_indexes(&node);
        assert_eq!(parked.len(), all.len(), "round {round}: parked {parked:?}");
        if let Some(before) = &parked_before {
            assert_eq!(&parked, before, "round {round}: the same ifbs, reused");
        }
        parked_before = Some(parked);
        for a in &all {
            for kind in ["tbf", "ingress"] {
                assert!(
                    node.qdisc(&a.pod.host_veth, kind).is_none(),
                    "round {round}: {kind} left on {}",
                    a.pod.host_veth
                );
            }
        }
        assert!(
            state.files().is_empty(),
            "round {round}: {:?}",
            state.files()
        );
        let locks: Vec<_> = std::fs::read_dir(&state.path)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".lock."))
            .collect();
        assert!(
            locks.is_empty(),
            "round {round}: attachment locks left: {locks:?}"
        );
    }
    // Without pods, GC empties the pool.
    for network in ["advnetA", "advnet"] {
        gc(&node, &state, network, &[]).ok();
    }
    assert!(node.parked_ifbs().is_empty(), "{:?}", node.parked_ifbs());
}

/// The ifindexes of the parked ifbs, each checked clean (down, marked,
/// no shaper left on it).
fn parked_indexes(node: &Netns) -> std::collections::BTreeSet<u64> {
    node.parked_ifbs()
        .iter()
        .map(|p| {
            assert!(node.qdisc(p, "tbf").is_none(), "a tbf on parked {p}");
            node.link(p).unwrap()["ifindex"].as_u64().unwrap()
        })
        .collect()
}
