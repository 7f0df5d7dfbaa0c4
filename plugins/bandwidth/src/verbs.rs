//! What ADD, DEL, CHECK, STATUS and GC do, in order; the netlink work is
//! in [`crate::apply`].

use crate::config::{BandwidthConf, DEFAULT_STATE_DIR};
use crate::devices;
use crate::ifb_pool::IfbPool;
use crate::plan::AddRequest;
use crate::policy::PolicyRecord;
use crate::record::{Attachment, Installed};
use crate::{check, plan, reconcile, teardown};
use anyhow::Context as _;
use cni_netlink::kernel::System;
use cni_netlink::{Link, Netlink};
use cni_types::error::{CniError, Code, Failures, ResultExt};
use cni_types::result::Interface;
use cni_types::skel::{Context, GcContext, Plugin, pass_through};
use cni_types::state::{AttachmentLock, StateStore};
use cni_types::{CniResult, Env, NetConf, log_info, log_warn};
use serde_json::Value;
use std::collections::HashSet;
use std::path::PathBuf;

/// The plugin, for `cni_types::skel::run`.
pub struct Bandwidth;

fn kernel() -> anyhow::Result<System> {
    System::new()
        .context("opening a netlink socket")
        .cni(Code::Kernel, "netlink unavailable")
}

fn store(conf: &BandwidthConf, network: &str) -> StateStore {
    StateStore::new(&conf.state_dir, Bandwidth::NAME, network)
}

fn chained_prev(conf: &NetConf) -> anyhow::Result<CniResult> {
    conf.prev_result()?.ok_or_else(|| {
        CniError::new(Code::InvalidConfig, "prevResult is missing")
            .with_details(
                "bandwidth is a chained plugin: it must run after a main plugin in a conflist",
            )
            .into()
    })
}

impl Plugin for Bandwidth {
    const NAME: &'static str = "bandwidth";

    fn add(&self, ctx: &Context) -> anyhow::Result<CniResult> {
        let (bw, policy) = conf_for_pod(ctx)?;
        let mut result = chained_prev(&ctx.conf)?;
        let env = &ctx.env;
        let store = store(&bw, &ctx.conf.name);
        if !bw.installs_anything() && load_state::<Installed>(&store, env).is_none() {
            // Nothing to shape and nothing of ours: touch nothing at all.
            return pass_through(&ctx.conf);
        }
        let mut nl = kernel()?;
        let pool = IfbPool::new(&store, bw.ifb_pool);
        let lock = lock_attachment(&store, env)?;
        let previous: Option<Installed> = load_state(&store, env);
        if !bw.installs_anything() {
            // A retried ADD that no longer asks for shaping removes what an
            // earlier one installed.
            if let Some(prev) = &previous {
                teardown::teardown(
                    &mut nl,
                    prev,
                    &attachment(&ctx.conf.name, env),
                    pod_side(prev, env),
                    Some(&pool),
                )?;
                store
                    .remove(&env.container_id, &env.ifname)
                    .cni(Code::Io, "cannot remove state")?;
                lock.remove_file();
            }
            return pass_through(&ctx.conf);
        }
        if result.interfaces().is_empty() {
            return Err(
                CniError::new(Code::InvalidConfig, "prevResult has no interfaces")
                    .with_details("the host-side veth must be listed in prevResult.interfaces")
                    .into(),
            );
        }
        let (host, req) = request(ctx, &bw, policy, nl.netlink(), &result, Some(&pool))?;
        let existed = previous.is_some();
        let outcome = install_with_retries(&mut nl, &store, env, &host, &req, previous);
        let (_inst, ifb) = match outcome {
            Ok(v) => v,
            Err(e) => {
                if !existed {
                    let _ = store.remove(&env.container_id, &env.ifname);
                    lock.remove_file();
                }
                return Err(e);
            }
        };
        log_info!(
            "shaped {} (source {:?}, runtimeBurst {:?})",
            host.name,
            bw.source,
            bw.runtime_burst
        );
        if let Some(ifb) = ifb {
            result.push_interface(Interface {
                name: ifb.name.clone(),
                mac: ifb.mac.map(|m| {
                    m.iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":")
                }),
                ..Default::default()
            });
        }
        Ok(result)
    }

    fn del(&self, ctx: &Context) -> anyhow::Result<()> {
        // DEL must clean up even when the config no longer parses: fall
        // back to the default state dir rather than fail.
        // (and delete the ifb: no pool without a config).
        let (state_dir, pool_slots) = BandwidthConf::parse(&ctx.conf)
            .map(|c| (c.state_dir, c.ifb_pool))
            .unwrap_or_else(|e| {
                log_warn!("config invalid on DEL ({e}); cleaning up with defaults");
                (state_dir_of(&ctx.conf.raw), 0)
            });
        del_attachment(
            &ctx.env,
            &ctx.conf.name,
            StateStore::new(state_dir, Self::NAME, &ctx.conf.name),
            pool_slots,
        )
    }

    fn del_best_effort(&self, env: &Env, raw: Option<&Value>) -> anyhow::Result<()> {
        let name = raw
            .map(cni_types::config::raw_network_name)
            .unwrap_or_default();
        if name.is_empty() {
            return Ok(());
        }
        let dir = raw
            .map(state_dir_of)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        del_attachment(env, name, StateStore::new(dir, Self::NAME, name), 0)
    }

    fn check(&self, ctx: &Context) -> anyhow::Result<()> {
        let (bw, policy) = conf_for_pod(ctx)?;
        let prev = chained_prev(&ctx.conf)?;
        if !bw.installs_anything() {
            return Ok(());
        }
        let env = &ctx.env;
        let store = store(&bw, &ctx.conf.name);
        let inst: Option<Installed> = store
            .load(&env.container_id, &env.ifname)
            .cni(Code::Io, "cannot read saved state")?;
        // Another namespace under CNI_NETNS is a mismatch before anything
        // is looked up in it.
        if let Some(i) = &inst
            && !i.same_pod(env.netns_id)
        {
            return Err(CniError::new(
                Code::CheckMismatch,
                "CNI_NETNS is not the network namespace ADD shaped",
            )
            .with_details(format!("{:?} is another namespace", env.netns))
            .into());
        }
        let mut nl = kernel()?;
        let (host, req) = request(ctx, &bw, policy, nl.netlink(), &prev, None)?;
        check::verify(&mut nl, &host, &req, inst.as_ref())
    }

    fn status(&self, conf: &NetConf) -> anyhow::Result<()> {
        // A config every ADD would refuse (an installer checks with STATUS
        // before it writes the conflist) is not ready: code 7 says why.
        BandwidthConf::parse(conf)?;
        let mut nl = Netlink::new()
            .context("opening a netlink socket")
            .cni(Code::NotAvailable, "netlink unavailable")?;
        nl.link_by_index(1)
            .context("reading links")
            .cni(Code::NotAvailable, "netlink unavailable")?;
        Ok(())
    }

    fn gc(&self, ctx: &GcContext) -> anyhow::Result<()> {
        let bw = BandwidthConf::parse(&ctx.conf)?;
        let network = &ctx.conf.name;
        let store = store(&bw, network);
        let valid: HashSet<(&str, &str)> = ctx
            .valid
            .iter()
            .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
            .collect();
        let mut nl = kernel()?;
        let _lock = store
            .lock()
            .cni(Code::Io, "cannot lock the state directory")?;
        let listing = store
            .list::<Installed>()
            .cni(Code::Io, "cannot list state")?;
        for path in &listing.broken {
            log_warn!("ignoring unreadable state file {}", path.display());
        }
        // Every stale attachment is tried; one failure does not keep the
        // others (or the ifb sweep) from being collected.
        let mut failures = Failures::default();
        for saved in listing.found {
            let (cid, ifname, inst) = (saved.container_id, saved.ifname, saved.data);
            if valid.contains(&(cid.as_str(), ifname.as_str())) {
                continue;
            }
            log_info!("gc: removing stale attachment {cid}/{ifname}");
            let who = Attachment {
                network,
                container_id: &cid,
                ifname: &ifname,
            };
            let what = format!("attachment {cid}/{ifname}");
            // The pod side too, while its namespace is still the recorded one.
            let pod = gc_pod_side(&inst, &ifname);
            let pod = pod.as_ref().map(|(ns, i)| (ns.as_path(), i.as_str()));
            if failures
                .record(&what, teardown::teardown(&mut nl, &inst, &who, pod, None))
                .is_some()
            {
                failures.record(
                    &what,
                    store
                        .remove(&cid, &ifname)
                        .cni(Code::Io, "cannot remove state"),
                );
            }
        }
        let is_valid = |cid: &str, ifname: &str| valid.contains(&(cid, ifname));
        teardown::sweep_stale_ifbs(&mut nl, network, &is_valid, &mut failures);
        teardown::sweep_stale_tables(&mut nl, network, &is_valid, &mut failures);
        // A network without pods keeps no parked ifbs; others keep the
        // configured number (fewer when `ifbPool` was lowered).
        let keep = if valid.is_empty() { 0 } else { bw.ifb_pool };
        IfbPool::new(&store, bw.ifb_pool).trim(&mut nl, keep, &mut failures);
        store.sweep_attachment_locks();
        failures.finish(Code::Kernel, "garbage collection incomplete")
    }
}

/// The recorded pod namespace and container interface GC may act in: only
/// when the recorded path still names the very namespace ADD worked in
/// (same file and cookie); otherwise the pod side went with its namespace.
fn gc_pod_side(inst: &Installed, ifname: &str) -> Option<(PathBuf, String)> {
    if !(inst.pod_tbf || inst.pod_clsact) || inst.netns.is_none() {
        return None;
    }
    let path = PathBuf::from(inst.netns_path.as_deref()?);
    let now = cni_types::env::validate_netns(&path).ok()?;
    // GC only ever deals with gone pods: without a cookie on both sides
    // (records of earlier versions) a matching inode proves nothing.
    let cookies = inst.netns.and_then(|n| n.cookie).is_some() && now.cookie.is_some();
    (cookies && inst.same_pod(Some(now))).then(|| (path, ifname.to_string()))
}

/// The pod's host veth and what ADD installs on it (and CHECK expects).
/// The config with the namespace policy applied for this pod: what ADD
/// installs and CHECK expects.
fn conf_for_pod(ctx: &Context) -> anyhow::Result<(BandwidthConf, Option<PolicyRecord>)> {
    let mut bw = BandwidthConf::parse(&ctx.conf)?;
    let args = &ctx.env.args;
    let record = bw.apply_namespace_policy(args.pod_namespace(), args.pod_name());
    bw.resolve_classes()?;
    Ok((bw, record))
}

fn request<'a>(
    ctx: &'a Context,
    bw: &'a BandwidthConf,
    policy: Option<PolicyRecord>,
    nl: &mut Netlink,
    prev: &CniResult,
    ifb_pool: Option<&'a IfbPool<'a>>,
) -> anyhow::Result<(Link, AddRequest<'a>)> {
    let env = &ctx.env;
    let netns = env.netns.as_deref().unwrap_or(std::path::Path::new(""));
    let host = devices::find_host_veth(nl, netns, &env.ifname, prev)?;
    let (ingress, egress) = plan::shapes(bw, &host);
    let req = AddRequest {
        network: &ctx.conf.name,
        container_id: &env.container_id,
        ifname: &env.ifname,
        netns,
        netns_id: env.netns_id,
        egress_mode: bw.egress_mode,
        ingress,
        egress,
        policy,
        pod: env.args.pod(),
        classes: bw.classes.as_ref(),
        latency_ms: bw.latency_ms,
        ifb_pool,
    };
    Ok((host, req))
}

fn state_dir_of(raw: &Value) -> PathBuf {
    cni_types::state::state_dir_in(raw, DEFAULT_STATE_DIR)
}

fn load_state<T: serde::de::DeserializeOwned>(store: &StateStore, env: &Env) -> Option<T> {
    store.load_lenient(&env.container_id, &env.ifname)
}

fn attachment<'a>(network: &'a str, env: &'a Env) -> Attachment<'a> {
    Attachment {
        network,
        container_id: &env.container_id,
        ifname: &env.ifname,
    }
}

/// The pod netns and container interface DEL may act in: only the
/// namespace recorded at ADD (the dispatcher already dropped a CNI_NETNS
/// that is gone or the plugin's own). Another namespace under the same
/// path is left alone; the pod-side tbf went away with the recorded one.
fn pod_side<'a>(inst: &Installed, env: &'a Env) -> Option<(&'a std::path::Path, &'a str)> {
    let ns = env.netns.as_deref()?;
    if !inst.same_pod(env.netns_id) {
        log_warn!(
            "CNI_NETNS {} is not the namespace ADD shaped: leaving it alone",
            ns.display()
        );
        return None;
    }
    Some((ns, env.ifname.as_str()))
}

/// One attachment's lock: ADDs and DELs of other attachments go on in
/// parallel (a DEL waiting on an ifb's deletion holds up no other pod).
fn lock_attachment(store: &StateStore, env: &Env) -> anyhow::Result<AttachmentLock> {
    store
        .lock_attachment(&env.container_id, &env.ifname)
        .cni(Code::Io, "cannot lock the attachment's state")
}

/// How often an ADD runs again after a concurrent ADD took the ifb name
/// it chose (each run sees the name taken and chooses the next).
const IFB_RACE_ATTEMPTS: usize = 3;

/// [`reconcile::install`], run again when a parallel ADD took its ifb name.
fn install_with_retries(
    nl: &mut System,
    store: &StateStore,
    env: &Env,
    host: &Link,
    req: &AddRequest<'_>,
    mut previous: Option<Installed>,
) -> anyhow::Result<(Installed, Option<Link>)> {
    let mut save = |inst: &Installed| {
        store
            .save(&env.container_id, &env.ifname, inst)
            .cni(Code::Io, "cannot write state")
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        match reconcile::install(nl, host, req, previous.as_ref(), &mut save) {
            Err(e) if attempt < IFB_RACE_ATTEMPTS && e.is::<reconcile::IfbTaken>() => {
                log_info!("{e}; choosing again");
                // The failed run recorded its claims (the taken name among
                // them): the next run starts from that record.
                previous = load_state(store, env);
            }
            other => return other,
        }
    }
}

fn del_attachment(
    env: &Env,
    network: &str,
    store: StateStore,
    pool_slots: u32,
) -> anyhow::Result<()> {
    let mut nl = kernel()?;
    let pool = IfbPool::new(&store, pool_slots);
    let lock = lock_attachment(&store, env)?;
    let who = attachment(network, env);
    match load_state(&store, env) {
        Some(inst) => teardown::teardown(&mut nl, &inst, &who, pod_side(&inst, env), Some(&pool))?,
        // No record: an ifb the reference plugin left before an upgrade
        // (unmarked, under its name), or ours marked for this attachment.
        // One marked for another attachment is left alone.
        // The same for a backstop table under this attachment's name.
        None => {
            teardown::delete_owned_ifb(
                &mut nl,
                &devices::ifb_name(network, &env.container_id),
                &who,
            )?;
            crate::backstop::remove(&mut nl, &crate::backstop::table_name(&who), &who)?;
        }
    }
    store
        .remove(&env.container_id, &env.ifname)
        .cni(Code::Io, "cannot remove state")?;
    lock.remove_file();
    Ok(())
}
