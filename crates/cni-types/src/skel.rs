//! The verb dispatch every plugin's `main` hands control to.
//!
//! A plugin implements [`Plugin`]; `main` is `cni_types::skel::run(MyPlugin)`.
//! [`dispatch`] takes the environment, stdin and stdout as arguments so the
//! whole protocol can be tested without a process.

use crate::config::{Attachment, MAX_STDIN_BYTES, NetConf, peek_version};
use crate::env::{Command, Env, validate_netns};
use crate::error::{CniError, Code};
use crate::result::CniResult;
use crate::version::Version;
use crate::{log_debug, log_error, log_warn};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::Path;

/// Everything a verb handler needs about one invocation.
#[derive(Debug, Clone)]
pub struct Context {
    pub env: Env,
    pub conf: NetConf,
}

/// GC input: the config and the attachments the runtime still considers live.
#[derive(Debug, Clone)]
pub struct GcContext {
    pub conf: NetConf,
    pub valid: Vec<Attachment>,
}

/// A CNI plugin. Errors carry a code through [`crate::ResultExt::cni`];
/// unclassified ones are reported as plugin failures (100).
pub trait Plugin {
    /// Used in logs.
    const NAME: &'static str;

    /// Returns the result to print (a chained plugin returns its prevResult,
    /// possibly extended); the skeleton writes it in the config's version.
    fn add(&self, ctx: &Context) -> anyhow::Result<CniResult>;
    /// Must succeed when everything is already gone, and without netns or prevResult.
    fn del(&self, ctx: &Context) -> anyhow::Result<()>;
    fn check(&self, ctx: &Context) -> anyhow::Result<()>;
    /// Ready unless the plugin says otherwise (codes 50/51).
    fn status(&self, _conf: &NetConf) -> anyhow::Result<()> {
        Ok(())
    }
    fn gc(&self, _ctx: &GcContext) -> anyhow::Result<()> {
        Ok(())
    }
    /// DEL whose config could not be parsed: clean up whatever can be found
    /// from the environment (and the raw document, when it was JSON). The
    /// original decode error is still reported afterwards.
    fn del_best_effort(&self, _env: &Env, _raw: Option<&Value>) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The version answer, the same whatever the plugin.
pub fn version_info() -> Value {
    json!({
        "cniVersion": Version::NEWEST.as_str(),
        "supportedVersions": Version::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
    })
}

/// Reads stdin up to the limit; one byte more means it is too large.
fn read_stdin(stdin: &mut dyn Read) -> Result<Vec<u8>, CniError> {
    let mut buf = Vec::new();
    stdin
        .take(MAX_STDIN_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| CniError::new(Code::Io, "cannot read stdin").with_details(e.to_string()))?;
    Ok(buf)
}

/// Runs one invocation and returns the process exit status.
pub fn dispatch<P: Plugin>(
    plugin: &P,
    get_env: impl Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
) -> i32 {
    let mut reply_version = Version::NEWEST;
    let outcome = run_verb(plugin, &get_env, stdin, &mut reply_version);
    let (text, status) = match outcome {
        Ok(Some(value)) => (value.to_string(), 0),
        Ok(None) => (String::new(), 0),
        Err(err) => {
            let cni = CniError::from_anyhow(&err);
            log_error!("code {} {}: {}", cni.code.number(), cni.msg, cni.details);
            (cni.to_json(reply_version.as_str()), 1)
        }
    };
    if !text.is_empty()
        && writeln!(stdout, "{text}")
            .and_then(|_| stdout.flush())
            .is_err()
    {
        return 1;
    }
    status
}

fn run_verb<P: Plugin>(
    plugin: &P,
    get_env: &impl Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    reply_version: &mut Version,
) -> anyhow::Result<Option<Value>> {
    let env = Env::from_lookup(get_env);
    if let Ok(e) = &env
        && e.command == Command::Version
    {
        return Ok(Some(version_info()));
    }
    // Decode stdin before judging the environment, so that errors are
    // answered in the caller's cniVersion whenever it is readable.
    let raw = read_stdin(stdin).and_then(|b| NetConf::decode(&b));
    if let Ok(v) = &raw
        && let Some(version) = peek_version(v)
    {
        *reply_version = version;
    }
    let env = env?;
    let tag = format!("{} {}", env.command.as_str(), env.container_id);
    crate::log::init(P::NAME, tag, raw.as_ref().ok());
    log_debug!(
        "netns={:?} ifname={} args={:?}",
        env.netns,
        env.ifname,
        env.args.pairs
    );

    let best_effort_del = |raw: Option<&Value>| {
        if env.command == Command::Del
            && let Err(e) = plugin.del_best_effort(&env, raw)
        {
            log_error!("best-effort DEL after a config error failed: {e:#}");
        }
    };
    let raw = match raw {
        Ok(raw) => raw,
        Err(e) => {
            best_effort_del(None);
            return Err(e.into());
        }
    };
    let conf = match NetConf::from_value(raw.clone()) {
        Ok(conf) => conf,
        Err(e) => {
            best_effort_del(Some(&raw));
            return Err(e.into());
        }
    };
    dispatch_verb(plugin, env, conf)
}

fn dispatch_verb<P: Plugin>(
    plugin: &P,
    mut env: Env,
    conf: NetConf,
) -> anyhow::Result<Option<Value>> {
    let version = conf.version;
    let check_name = || crate::config::validate_network_name(&conf.name);
    match env.command {
        Command::Version => Ok(Some(version_info())),
        Command::Add => {
            check_name()?;
            env.netns_id = Some(validate_netns(
                env.netns.as_deref().unwrap_or(Path::new("")),
            )?);
            let ctx = Context { env, conf };
            let result = plugin.add(&ctx)?;
            Ok(Some(result.to_value(version)))
        }
        Command::Check => {
            if !version.allows_check() {
                return Err(
                    CniError::new(Code::IncompatibleVersion, "CHECK is not supported")
                        .with_details(format!(
                            "cniVersion {version} does not allow CHECK (needs 0.4.0 or later)"
                        ))
                        .into(),
                );
            }
            check_name()?;
            env.netns_id = Some(validate_netns(
                env.netns.as_deref().unwrap_or(Path::new("")),
            )?);
            plugin.check(&Context { env, conf })?;
            Ok(None)
        }
        Command::Del => {
            // A netns that is already gone is normal on DEL: treat it as
            // absent. So is one that is not a pod's (the plugin's own, a
            // plain file): DEL then cleans up only on the node side, and
            // never mistakes the node for the pod.
            match env.netns.as_deref().map(validate_netns) {
                Some(Ok(id)) => env.netns_id = Some(id),
                Some(Err(e)) => {
                    log_warn!("DEL ignores CNI_NETNS: {}: {}", e.msg, e.details);
                    env.netns = None;
                }
                None => {}
            }
            plugin.del(&Context { env, conf })?;
            Ok(None)
        }
        Command::Status | Command::Gc => {
            if !version.allows_status_and_gc() {
                return Err(CniError::new(
                    Code::IncompatibleVersion,
                    format!("{} is not supported", env.command.as_str()),
                )
                .with_details(format!(
                    "cniVersion {version} does not allow {} (needs 1.1.0)",
                    env.command.as_str()
                ))
                .into());
            }
            check_name()?;
            if env.command == Command::Status {
                plugin.status(&conf)?;
            } else {
                let valid = conf.valid_attachments()?;
                plugin.gc(&GcContext { conf, valid })?;
            }
            Ok(None)
        }
    }
}

/// The real process entry point: environment, stdin, stdout, exit status.
pub fn run<P: Plugin>(plugin: P) -> ! {
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let status = dispatch(&plugin, |k| std::env::var(k).ok(), &mut stdin, &mut stdout);
    drop(stdout);
    std::process::exit(status)
}

/// Convenience for plugins whose ADD has nothing to add.
pub fn pass_through(conf: &NetConf) -> anyhow::Result<CniResult> {
    Ok(conf.prev_result()?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Recorder {
        calls: RefCell<Vec<String>>,
    }

    impl Plugin for Recorder {
        const NAME: &'static str = "recorder";
        fn add(&self, ctx: &Context) -> anyhow::Result<CniResult> {
            self.calls.borrow_mut().push("add".into());
            pass_through(&ctx.conf)
        }
        fn del(&self, ctx: &Context) -> anyhow::Result<()> {
            self.calls
                .borrow_mut()
                .push(format!("del netns={:?}", ctx.env.netns));
            Ok(())
        }
        fn check(&self, _ctx: &Context) -> anyhow::Result<()> {
            self.calls.borrow_mut().push("check".into());
            Ok(())
        }
        fn gc(&self, ctx: &GcContext) -> anyhow::Result<()> {
            self.calls
                .borrow_mut()
                .push(format!("gc {}", ctx.valid.len()));
            Ok(())
        }
        fn del_best_effort(&self, _env: &Env, raw: Option<&Value>) -> anyhow::Result<()> {
            self.calls
                .borrow_mut()
                .push(format!("best-effort raw={}", raw.is_some()));
            Ok(())
        }
    }

    fn run(p: &Recorder, env: &[(&str, &str)], stdin: &str) -> (i32, Value) {
        let m: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut out = Vec::new();
        let status = dispatch(p, |k| m.get(k).cloned(), &mut stdin.as_bytes(), &mut out);
        let v = serde_json::from_slice(&out).unwrap_or(Value::Null);
        (status, v)
    }

    /// A network namespace that is not the test's own, held by a parked
    /// thread (needs root, like every suite here).
    struct OtherNetns {
        path: String,
        stop: std::sync::mpsc::Sender<()>,
    }

    impl OtherNetns {
        /// `None` (the test skips, and says so) when not root.
        fn new() -> Option<OtherNetns> {
            if !nix::unistd::geteuid().is_root() {
                // Not eprintln!: libtest would capture it and show it only on failure.
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    concat!("skipped: needs root (a second network namespace)", "\n").as_bytes(),
                );
                return None;
            }
            let (tx, rx) = std::sync::mpsc::channel();
            let (stop, parked) = std::sync::mpsc::channel::<()>();
            std::thread::spawn(move || {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (root)");
                let tid = nix::unistd::gettid().as_raw();
                tx.send(format!("/proc/{}/task/{tid}/ns/net", std::process::id()))
                    .unwrap();
                let _ = parked.recv();
            });
            Some(OtherNetns {
                path: rx.recv().unwrap(),
                stop,
            })
        }
    }

    impl Drop for OtherNetns {
        fn drop(&mut self) {
            let _ = self.stop.send(());
        }
    }

    const DEL: &[(&str, &str)] = &[
        ("CNI_COMMAND", "DEL"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_IFNAME", "eth0"),
    ];

    #[test]
    fn version_without_stdin() {
        let p = Recorder::default();
        let (status, v) = run(&p, &[("CNI_COMMAND", "VERSION")], "");
        assert_eq!(status, 0);
        assert_eq!(v, version_info());
        assert!(p.calls.borrow().is_empty());
    }

    #[test]
    fn del_without_netns_reaches_plugin() {
        let p = Recorder::default();
        let (status, v) = run(&p, DEL, r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!((status, v), (0, Value::Null));
        assert_eq!(p.calls.borrow().as_slice(), ["del netns=None"]);
    }

    #[test]
    fn del_with_gone_netns_is_treated_as_none() {
        let p = Recorder::default();
        let mut env = DEL.to_vec();
        env.push(("CNI_NETNS", "/nonexistent/netns"));
        let (status, _) = run(&p, &env, r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!(status, 0);
        assert_eq!(p.calls.borrow().as_slice(), ["del netns=None"]);
    }

    #[test]
    fn del_with_bad_config_cleans_up_then_reports() {
        let p = Recorder::default();
        let (status, v) = run(&p, DEL, r#"{"cniVersion":"0.1.0","name":"n"}"#);
        assert_eq!(status, 1);
        assert_eq!(v["code"], 1);
        assert_eq!(p.calls.borrow().as_slice(), ["best-effort raw=true"]);
        let p = Recorder::default();
        let (status, v) = run(&p, DEL, "not json");
        assert_eq!((status, v["code"].as_u64()), (1, Some(6)));
        assert_eq!(p.calls.borrow().as_slice(), ["best-effort raw=false"]);
    }

    #[test]
    fn own_netns_is_refused_on_add_and_check_and_ignored_on_del() {
        for cmd in ["ADD", "CHECK"] {
            let p = Recorder::default();
            let env = [
                ("CNI_COMMAND", cmd),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", "/proc/self/ns/net"),
            ];
            let (status, v) = run(&p, &env, r#"{"cniVersion":"1.0.0","name":"n"}"#);
            assert_eq!((status, v["code"].as_u64()), (1, Some(4)), "{cmd}: {v}");
            assert!(p.calls.borrow().is_empty());
        }
        let p = Recorder::default();
        let mut env = DEL.to_vec();
        env.push(("CNI_NETNS", "/proc/self/ns/net"));
        let (status, _) = run(&p, &env, r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!(status, 0);
        assert_eq!(p.calls.borrow().as_slice(), ["del netns=None"]);
    }

    #[test]
    fn gates_and_gc_input() {
        let p = Recorder::default();
        let Some(other) = OtherNetns::new() else {
            return;
        };
        let check = [
            ("CNI_COMMAND", "CHECK"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", other.path.as_str()),
        ];
        let (status, v) = run(&p, &check, r#"{"cniVersion":"0.3.1","name":"n"}"#);
        assert_eq!(
            (status, v["code"].as_u64(), v["cniVersion"].as_str()),
            (1, Some(1), Some("0.3.1"))
        );
        let (status, _) = run(&p, &check, r#"{"cniVersion":"0.4.0","name":"n"}"#);
        assert_eq!(status, 0);
        let gc = r#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"},{"containerID":"b","ifname":"eth0"}]}"#;
        let (status, _) = run(&p, &[("CNI_COMMAND", "GC")], gc);
        assert_eq!(status, 0);
        assert_eq!(p.calls.borrow().as_slice(), ["check", "gc 2"]);
        let (status, v) = run(
            &p,
            &[("CNI_COMMAND", "STATUS")],
            r#"{"cniVersion":"1.0.0"}"#,
        );
        assert_eq!((status, v["code"].as_u64()), (1, Some(1)));
    }

    #[test]
    fn add_validates_netns_before_the_plugin_runs() {
        let p = Recorder::default();
        let add = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/etc/hostname"),
        ];
        let (status, v) = run(&p, &add, r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!((status, v["code"].as_u64()), (1, Some(4)));
        assert!(p.calls.borrow().is_empty());
        let Some(other) = OtherNetns::new() else {
            return;
        };
        let add = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", other.path.as_str()),
        ];
        let (status, v) = run(
            &p,
            &add,
            r#"{"cniVersion":"1.0.0","name":"n","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}}"#,
        );
        assert_eq!(status, 0);
        assert_eq!(v["ips"][0]["address"], "10.0.0.2/24");
    }
}
