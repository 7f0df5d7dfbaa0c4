//! Runs the release binaries as a runtime does: exactly the CNI
//! environment (nothing inherited), the config on stdin, the answer (or a
//! CNI error) on stdout.

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::world::Pod;

/// Where /init put the release's `bin/` (`VMSUITE_BIN` overrides it, for a
/// run on a development machine).
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var("VMSUITE_BIN").unwrap_or_else(|_| "/opt/cni/bin".into());
    PathBuf::from(dir).join(name)
}

/// One invocation's exit status and output.
#[derive(Debug)]
pub struct Outcome {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or(Value::Null)
    }

    /// The answer, or an error carrying the plugin's own words.
    pub fn ok(self) -> Result<Value> {
        if self.status != 0 {
            bail!(
                "exit {}: {} {}",
                self.status,
                self.stdout.trim(),
                self.stderr.trim()
            );
        }
        Ok(self.json())
    }

    /// The CNI error, which must carry `code`.
    pub fn err(self, code: u64) -> Result<Value> {
        let v = self.json();
        if self.status == 0 || v["code"].as_u64() != Some(code) {
            bail!(
                "expected CNI error {code}, got exit {}: {}",
                self.status,
                self.stdout.trim()
            );
        }
        Ok(v)
    }
}

/// Runs `name` with exactly `env` and `stdin`.
pub fn run_env(name: &str, env: &[(String, String)], stdin: &[u8]) -> Result<Outcome> {
    let mut child = Command::new(bin(name))
        .env_clear()
        .env("PATH", "/sbin:/bin")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    if let Some(mut si) = child.stdin.take() {
        // A plugin may stop reading early: its answer says why.
        let _ = si.write_all(stdin);
    }
    let out = child.wait_with_output().context("waiting for the plugin")?;
    Ok(Outcome {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs plugin `name`'s `verb` for `pod` with `conf`.
pub fn run(name: &str, verb: &str, pod: &Pod, conf: &Value) -> Result<Outcome> {
    run_env(name, &pod.env(verb), conf.to_string().as_bytes())
}

/// containerd's second DEL: no netns, no prevResult.
pub fn del_bare(name: &str, pod: &Pod, conf: &Value) -> Result<Outcome> {
    let mut bare = conf.clone();
    if let Some(o) = bare.as_object_mut() {
        o.remove("prevResult");
    }
    let env: Vec<_> = pod
        .env("DEL")
        .into_iter()
        .map(|(k, v)| {
            if k == "CNI_NETNS" {
                (k, String::new())
            } else {
                (k, v)
            }
        })
        .collect();
    run_env(name, &env, bare.to_string().as_bytes())
}

/// `base` with every key of `extra` set on top (`null` removes a key).
pub fn merged(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            if v.is_null() {
                b.remove(&k);
            } else {
                b.insert(k, v);
            }
        }
    }
    base
}
