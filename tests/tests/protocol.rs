//! The CNI protocol as a runtime sees it, against the built binaries:
//! VERSION, every bad-input class with its spec code, pass-through of
//! prevResult in every version, and the version gates of CHECK/STATUS/GC.

use integration_tests::*;
use serde_json::{Value, json};

const PLUGINS: [&str; 2] = ["bandwidth", "topology-label"];
const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

fn conf(version: &str, plugin: &str) -> Value {
    json!({"cniVersion": version, "name": "proto-net", "type": plugin})
}

fn attach_env(command: &str, netns: &str) -> Vec<(String, String)> {
    env_of(&[
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "c0ffee01"),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ])
}

fn run(plugin: &str, env: &[(String, String)], stdin: &Value) -> Outcome {
    run_plugin(&plugin_bin(plugin), None, env, stdin.to_string().as_bytes())
}

#[test]
fn version_answers_every_version() {
    for plugin in PLUGINS {
        for v in VERSIONS {
            let out = run(
                plugin,
                &env_of(&[("CNI_COMMAND", "VERSION")]),
                &json!({"cniVersion": v}),
            )
            .ok();
            assert_eq!(
                out.json(),
                json!({"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]})
            );
        }
        // Runtimes may send no stdin at all for VERSION.
        let out = run_plugin(
            &plugin_bin(plugin),
            None,
            &env_of(&[("CNI_COMMAND", "VERSION")]),
            b"",
        )
        .ok();
        assert_eq!(
            out.json()["supportedVersions"].as_array().map(Vec::len),
            Some(5)
        );
    }
}

#[test]
fn bad_environment_is_code_4() {
    let ns = Netns::new("cniproto").unwrap();
    let netns = ns.path_str();
    for plugin in PLUGINS {
        let c = conf("1.0.0", plugin);
        let base = attach_env("ADD", &netns);
        let cases: Vec<(&str, Vec<(String, String)>)> = vec![
            ("no CNI_COMMAND", without_env(base.clone(), "CNI_COMMAND")),
            (
                "unknown verb",
                with_env(base.clone(), "CNI_COMMAND", "FROB"),
            ),
            (
                "no container id",
                without_env(base.clone(), "CNI_CONTAINERID"),
            ),
            (
                "bad container id",
                with_env(base.clone(), "CNI_CONTAINERID", "-bad/id"),
            ),
            ("no ifname", without_env(base.clone(), "CNI_IFNAME")),
            ("ifname ../x", with_env(base.clone(), "CNI_IFNAME", "../x")),
            (
                "ifname 16 chars",
                with_env(base.clone(), "CNI_IFNAME", "abcdefghijklmnop"),
            ),
            (
                "ifname with colon",
                with_env(base.clone(), "CNI_IFNAME", "eth0:1"),
            ),
            ("no netns on ADD", without_env(base.clone(), "CNI_NETNS")),
            (
                "netns is a file",
                with_env(base.clone(), "CNI_NETNS", "/etc/hostname"),
            ),
            (
                "netns missing",
                with_env(base.clone(), "CNI_NETNS", "/var/run/netns/does-not-exist"),
            ),
            (
                "bad CNI_ARGS",
                with_env(base.clone(), "CNI_ARGS", "K8S_POD_NAME"),
            ),
            (
                "unknown CNI_ARGS",
                with_env(base.clone(), "CNI_ARGS", "Foo=bar"),
            ),
        ];
        for (what, env) in cases {
            let err = run(plugin, &env, &c).err(4);
            assert_eq!(
                err["cniVersion"], "1.0.0",
                "{plugin}: {what}: error in the config's version"
            );
        }
    }
}

#[test]
fn bad_stdin_codes() {
    let ns = Netns::new("cniproto").unwrap();
    let env = attach_env("ADD", &ns.path_str());
    for plugin in PLUGINS {
        let bin = plugin_bin(plugin);
        let not_json = run_plugin(&bin, None, &env, b"{\"cniVersion\": \"1.0.0\",").err(6);
        assert_eq!(
            not_json["cniVersion"], "1.1.0",
            "falls back to the newest version"
        );
        run_plugin(&bin, None, &env, b"[]").err(6);
        run_plugin(&bin, None, &env, b"").err(6);
        run_plugin(&bin, None, &env, b"\xff\xfe").err(6);
        let wrong_type = run(plugin, &env, &json!({"cniVersion":"0.4.0","name":["x"]})).err(6);
        assert_eq!(wrong_type["cniVersion"], "0.4.0");
        let unknown = run(plugin, &env, &json!({"cniVersion":"9.9.9","name":"n"})).err(1);
        assert_eq!(unknown["cniVersion"], "1.1.0");
        run(plugin, &env, &json!({"cniVersion":"0.2.0","name":"n"})).err(1);
        run(plugin, &env, &json!({"name":"n"})).err(1);
        let mut big = br#"{"cniVersion":"1.0.0","name":"n","pad":""#.to_vec();
        big.extend(std::iter::repeat_n(b'a', 1 << 20));
        big.extend(br#""}"#);
        run_plugin(&bin, None, &env, &big).err(7);
    }
}

#[test]
fn version_gates_for_check_status_gc() {
    let ns = Netns::new("cniproto").unwrap();
    for plugin in PLUGINS {
        for v in ["0.3.0", "0.3.1"] {
            let err = run(
                plugin,
                &attach_env("CHECK", &ns.path_str()),
                &conf(v, plugin),
            )
            .err(1);
            assert_eq!(err["cniVersion"], v);
        }
        for v in ["0.3.1", "0.4.0", "1.0.0"] {
            run(
                plugin,
                &env_of(&[("CNI_COMMAND", "STATUS")]),
                &conf(v, plugin),
            )
            .err(1);
            run(plugin, &env_of(&[("CNI_COMMAND", "GC")]), &conf(v, plugin)).err(1);
        }
        let status = run(
            plugin,
            &env_of(&[("CNI_COMMAND", "STATUS")]),
            &conf("1.1.0", plugin),
        )
        .ok();
        assert_eq!(status.stdout.trim(), "");
        let mut gc = conf("1.1.0", plugin);
        gc["cni.dev/valid-attachments"] = json!([{"containerID":"c0ffee01","ifname":"eth0"}]);
        let state = TempDir::new("cnigc");
        gc["stateDir"] = json!(state.str());
        let out = run(
            plugin,
            &env_of(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")]),
            &gc,
        )
        .ok();
        assert_eq!(out.stdout.trim(), "");
    }
}

/// A chained ADD with nothing to do hands prevResult on unchanged, in the
/// config's version: the AWS sample (non-MAC `mac`, `sandbox` "0", dummy
/// interface) survives byte-for-byte as JSON.
#[test]
fn chained_add_passes_prev_result_through_every_version() {
    let ns = Netns::new("cniproto").unwrap();
    let aws = sample("aws-cni-result.json");
    for v in VERSIONS {
        let mut c = conf(v, "bandwidth");
        c["prevResult"] = aws.clone();
        let out = run("bandwidth", &attach_env("ADD", &ns.path_str()), &c).ok();
        let mut expect = aws.clone();
        expect["cniVersion"] = json!(v);
        if !v.starts_with("0.") {
            for ip in expect["ips"].as_array_mut().unwrap() {
                ip.as_object_mut().unwrap().remove("version");
            }
        }
        assert_eq!(out.json(), expect, "version {v}");
    }
    // And exactly the sample, in the sample's own version.
    let mut c = conf("0.4.0", "bandwidth");
    c["prevResult"] = aws.clone();
    let out = run("bandwidth", &attach_env("ADD", &ns.path_str()), &c).ok();
    assert_eq!(out.json(), aws);
}

#[test]
fn del_without_netns_and_prev_result_succeeds() {
    for plugin in PLUGINS {
        for v in VERSIONS {
            let mut c = conf(v, plugin);
            let state = TempDir::new("cnidel");
            c["stateDir"] = json!(state.str());
            let env = env_of(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "c0ffee01"),
                ("CNI_IFNAME", "eth0"),
            ]);
            let out = run(plugin, &env, &c).ok();
            assert_eq!(out.stdout.trim(), "", "{plugin} {v}");
            // A netns that no longer exists is the same as none on DEL.
            let env = with_env(env, "CNI_NETNS", "/var/run/netns/gone-already");
            run(plugin, &env, &c).ok();
        }
    }
}

/// `logFile`/`logLevel` (and aws-cni's `pluginLogFile`): log lines go to
/// the file, created 0600, never through a symlink; stdout carries only the
/// protocol.
#[test]
fn log_file_is_used_and_stdout_stays_protocol() {
    use std::os::unix::fs::PermissionsExt;
    let ns = Netns::new("cniproto").unwrap();
    let dir = TempDir::new("cnilog");
    let log = dir.path.join("plugin.log");
    let mut c = conf("0.4.0", "bandwidth");
    c["prevResult"] = sample("aws-cni-result.json");
    c["logFile"] = json!(log);
    c["logLevel"] = json!("debug");
    let out = run("bandwidth", &attach_env("ADD", &ns.path_str()), &c).ok();
    assert_eq!(
        out.json(),
        sample("aws-cni-result.json"),
        "stdout is only the result"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("bandwidth[") && text.contains("ADD c0ffee01"),
        "{text}"
    );
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Errors are logged too, in aws-cni's key spelling.
    let mut bad = conf("1.0.0", "bandwidth");
    bad["pluginLogFile"] = json!(log);
    bad["ingressRate"] = json!(5);
    run("bandwidth", &attach_env("ADD", &ns.path_str()), &bad).err(7);
    assert!(std::fs::read_to_string(&log).unwrap().contains("ERROR"));
    // A symlinked log path is not followed (and the plugin still works).
    let target = dir.path.join("target.log");
    let link = dir.path.join("link.log");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    c["logFile"] = json!(link);
    run("bandwidth", &attach_env("ADD", &ns.path_str()), &c).ok();
    assert!(!target.exists(), "log written through a symlink");
}
