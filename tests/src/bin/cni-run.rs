//! `cni-run`: a minimal CNI runtime for the demo, benchmarks and tests.
//! It runs a conflist the way libcni does: capability args become each
//! plugin's `runtimeConfig` (only for capabilities the plugin declares),
//! every plugin gets the previous one's result as `prevResult`, the final
//! result is cached and fed to CHECK and DEL, and DEL runs in reverse.
//!
//! cni-run add|check|del --conflist FILE --container-id ID --ifname IF
//!     [--netns PATH] [--args 'K=V;K=V'] [--cap-args JSON]
//!     [--cni-path DIR:DIR] [--cache-dir DIR]

use serde_json::{Map, Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio, exit};

struct Opts {
    verb: String,
    conflist: PathBuf,
    container_id: String,
    ifname: String,
    netns: String,
    args: String,
    cap_args: Map<String, Value>,
    cni_path: String,
    cache_dir: PathBuf,
}

fn die(msg: &str) -> ! {
    eprintln!("cni-run: {msg}");
    exit(2)
}

fn parse_opts() -> Opts {
    let mut it = std::env::args().skip(1);
    let verb = it
        .next()
        .unwrap_or_else(|| die("usage: cni-run add|check|del --conflist FILE ..."));
    let mut o = Opts {
        verb,
        conflist: PathBuf::new(),
        container_id: String::new(),
        ifname: "eth0".into(),
        netns: String::new(),
        args: String::new(),
        cap_args: Map::new(),
        cni_path: "/opt/cni/bin".into(),
        cache_dir: PathBuf::from("/var/lib/cni/cni-run"),
    };
    while let Some(flag) = it.next() {
        let val = it
            .next()
            .unwrap_or_else(|| die(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--conflist" => o.conflist = val.into(),
            "--container-id" => o.container_id = val,
            "--ifname" => o.ifname = val,
            "--netns" => o.netns = val,
            "--args" => o.args = val,
            "--cap-args" => {
                o.cap_args = serde_json::from_str::<Value>(&val)
                    .ok()
                    .and_then(|v| v.as_object().cloned())
                    .unwrap_or_else(|| die("--cap-args must be a JSON object"))
            }
            "--cni-path" => o.cni_path = val,
            "--cache-dir" => o.cache_dir = val.into(),
            _ => die(&format!("unknown flag {flag}")),
        }
    }
    if o.container_id.is_empty() {
        die("--container-id is required");
    }
    o
}

fn find_plugin(cni_path: &str, plugin_type: &str) -> PathBuf {
    cni_path
        .split(':')
        .map(|d| Path::new(d).join(plugin_type))
        .find(|p| p.is_file())
        .unwrap_or_else(|| die(&format!("plugin {plugin_type:?} not found in {cni_path}")))
}

/// One plugin invocation; returns its parsed stdout (Null when empty).
fn invoke(o: &Opts, command: &str, conf: &Value) -> Result<Value, String> {
    let plugin_type = conf["type"].as_str().unwrap_or_default();
    let bin = find_plugin(&o.cni_path, plugin_type);
    let mut child = Command::new(&bin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &o.container_id)
        .env("CNI_NETNS", &o.netns)
        .env("CNI_IFNAME", &o.ifname)
        .env("CNI_ARGS", &o.args)
        .env("CNI_PATH", &o.cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    if let Some(mut si) = child.stdin.take() {
        let _ = si.write_all(conf.to_string().as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        return Err(format!("{plugin_type} {command} failed: {text}"));
    }
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text)
        .map_err(|e| format!("{plugin_type} {command}: bad output {text:?}: {e}"))
}

/// The config a plugin sees: its entry plus the list's version and name,
/// runtimeConfig for the capabilities it declares, and prevResult.
fn plugin_conf(o: &Opts, list: &Value, entry: &Value, prev: Option<&Value>) -> Value {
    let mut c = entry.clone();
    c["cniVersion"] = list["cniVersion"].clone();
    c["name"] = list["name"].clone();
    let mut rc = Map::new();
    if let Some(caps) = entry["capabilities"].as_object() {
        for (cap, on) in caps {
            if on.as_bool() == Some(true)
                && let Some(v) = o.cap_args.get(cap)
            {
                rc.insert(cap.clone(), v.clone());
            }
        }
    }
    if !rc.is_empty() {
        c["runtimeConfig"] = Value::Object(rc);
    }
    if let Some(p) = prev {
        c["prevResult"] = p.clone();
    }
    c
}

fn main() {
    let o = parse_opts();
    let text = std::fs::read_to_string(&o.conflist)
        .unwrap_or_else(|e| die(&format!("{}: {e}", o.conflist.display())));
    let list: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| die(&format!("conflist: {e}")));
    let plugins = list["plugins"].as_array().cloned().unwrap_or_default();
    let name = list["name"].as_str().unwrap_or("net");
    let cache = o
        .cache_dir
        .join(format!("{name}-{}-{}", o.container_id, o.ifname));
    let cached: Option<Value> = std::fs::read_to_string(&cache)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    let outcome: Result<Value, String> = match o.verb.as_str() {
        "add" => {
            let mut prev: Option<Value> = None;
            let mut res = Ok(Value::Null);
            for entry in &plugins {
                match invoke(&o, "ADD", &plugin_conf(&o, &list, entry, prev.as_ref())) {
                    Ok(r) => prev = Some(r),
                    Err(e) => {
                        res = Err(e);
                        break;
                    }
                }
            }
            res.map(|_| {
                let r = prev.unwrap_or(Value::Null);
                let _ = std::fs::create_dir_all(&o.cache_dir);
                let _ = std::fs::write(&cache, r.to_string());
                r
            })
        }
        "check" => {
            if list["disableCheck"].as_bool() == Some(true) {
                Ok(Value::Null)
            } else {
                plugins
                    .iter()
                    .try_for_each(|e| {
                        invoke(&o, "CHECK", &plugin_conf(&o, &list, e, cached.as_ref())).map(|_| ())
                    })
                    .map(|_| Value::Null)
            }
        }
        "del" => {
            let r = plugins.iter().rev().try_for_each(|e| {
                invoke(&o, "DEL", &plugin_conf(&o, &list, e, cached.as_ref())).map(|_| ())
            });
            if r.is_ok() {
                let _ = std::fs::remove_file(&cache);
            }
            r.map(|_| Value::Null)
        }
        "gc" => plugins
            .iter()
            .try_for_each(|e| {
                let mut c = plugin_conf(&o, &list, e, None);
                c["cni.dev/valid-attachments"] = o
                    .cap_args
                    .get("validAttachments")
                    .cloned()
                    .unwrap_or(json!([]));
                invoke(&o, "GC", &c).map(|_| ())
            })
            .map(|_| Value::Null),
        v => die(&format!("unknown verb {v}")),
    };
    match outcome {
        Ok(Value::Null) => {}
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
        Err(e) => {
            eprintln!("cni-run: {e}");
            exit(1)
        }
    }
}
