//! `topology-label`, a chained CNI plugin that names a pod's interfaces
//! after the pod and the node's zone, and applies the zone's profile (MTU,
//! txqueuelen, `net.*` sysctls): what each verb does, in order. The work
//! itself is in [`crate::apply`]. See docs/topology-label.md.

use crate::apply;
use crate::config::{self, Config};
use crate::labels;
use crate::state::State;
use cni_types::env::NetnsId;
use cni_types::error::{CniError, fail};
use cni_types::state::{AttachmentLock, StateStore};
use cni_types::{
    CniResult, Code, Context, Env, GcContext, NetConf, Plugin, ResultExt, log_info, log_warn,
};

/// The plugin, for `cni_types::skel::run`.
pub struct TopologyLabel;

impl Plugin for TopologyLabel {
    const NAME: &'static str = "topology-label";

    fn add(&self, ctx: &Context) -> anyhow::Result<CniResult> {
        add(ctx)
    }

    /// DEL needs only the state directory and network name, so it works
    /// with a configuration whose other keys no longer validate.
    fn del(&self, ctx: &Context) -> anyhow::Result<()> {
        del_attachment(&ctx.conf.raw, &ctx.conf.name, &ctx.env)
    }

    fn check(&self, ctx: &Context) -> anyhow::Result<()> {
        check(ctx)
    }

    fn status(&self, conf: &NetConf) -> anyhow::Result<()> {
        status(conf)
    }

    fn gc(&self, ctx: &GcContext) -> anyhow::Result<()> {
        gc(ctx)
    }

    fn del_best_effort(&self, env: &Env, raw: Option<&serde_json::Value>) -> anyhow::Result<()> {
        del_best_effort(env, raw)
    }
}

fn load_state(store: &StateStore, env: &Env) -> anyhow::Result<Option<State>> {
    store
        .load::<State>(&env.container_id, &env.ifname)
        .cni(Code::Io, "cannot read saved state")
}

fn save_state(store: &StateStore, env: &Env, st: &State) -> anyhow::Result<()> {
    store
        .save(&env.container_id, &env.ifname, st)
        .cni(Code::Io, "cannot save state")
}

fn remove_state(store: &StateStore, env: &Env) -> anyhow::Result<()> {
    store
        .remove(&env.container_id, &env.ifname)
        .cni(Code::Io, "cannot remove saved state")
}

/// GC's lock: the whole store.
fn lock(store: &StateStore) -> anyhow::Result<cni_types::state::StoreLock> {
    store
        .lock()
        .cni(Code::Io, "cannot lock the state directory")
}

/// One attachment's lock: other attachments go on in parallel.
fn lock_attachment(store: &StateStore, env: &Env) -> anyhow::Result<AttachmentLock> {
    store
        .lock_attachment(&env.container_id, &env.ifname)
        .cni(Code::Io, "cannot lock the attachment's state")
}

/// What ADD and CHECK both start from: the config, the pod's netns, what
/// the config asks for this attachment (labels, perhaps from IMDS,
/// resolved before any lock is taken), and the state store.
struct Request {
    netns_path: std::path::PathBuf,
    want: apply::Desired,
    store: StateStore,
}

fn request(ctx: &Context) -> anyhow::Result<Request> {
    let cfg = Config::from_netconf(&ctx.conf)?;
    let netns_path = ctx
        .env
        .netns
        .clone()
        .ok_or_else(|| CniError::new(Code::InvalidEnv, "CNI_NETNS is not set"))?;
    let labels = apply::pod_labels(&cfg, &ctx.conf)?;
    let want = apply::desired(&cfg, &ctx.env, &labels)?;
    let store = StateStore::new(&cfg.state_dir, apply::STATE_OWNER, &cfg.network);
    Ok(Request {
        netns_path,
        want,
        store,
    })
}

fn add(ctx: &Context) -> anyhow::Result<CniResult> {
    let prev = ctx.conf.prev_result()?;
    let Request {
        netns_path,
        want,
        store,
    } = request(ctx)?;
    let lock = lock_attachment(&store, &ctx.env)?;
    let mut insp = apply::inspect(&ctx.env, &netns_path, &want, prev.as_ref())?;
    let old: Option<State> = store.load_lenient(&ctx.env.container_id, &ctx.env.ifname);
    let mut st = apply::plan(ctx, &want, &insp, old.as_ref());
    st.pod = ctx.env.args.pod();
    st.zone = want.zone.clone();
    save_state(&store, &ctx.env, &st)?;
    if let Err(e) = apply::apply(&mut insp, &netns_path, &st) {
        apply::restore(&st, &ctx.env.ifname, Some(&netns_path));
        if let Err(re) = remove_state(&store, &ctx.env) {
            log_warn!("{re:#}");
        }
        lock.remove_file();
        return Err(e);
    }
    log_info!(
        "labelled {} (host {}) alias={:?} mtu={:?} txqlen={:?} sysctls={}",
        insp.cont.name,
        insp.host.as_ref().map_or("-", |h| h.name.as_str()),
        want.alias,
        want.mtu,
        want.txqlen,
        st.sysctls.len()
    );
    Ok(prev.unwrap_or_default())
}

fn del_best_effort(env: &Env, raw: Option<&serde_json::Value>) -> anyhow::Result<()> {
    let Some(raw) = raw else { return Ok(()) };
    let name = cni_types::config::raw_network_name(raw);
    if env.container_id.is_empty() || env.ifname.is_empty() {
        return Ok(());
    }
    del_attachment(raw, name, env)
}

fn del_attachment(raw: &serde_json::Value, network: &str, env: &Env) -> anyhow::Result<()> {
    let store = StateStore::new(config::state_dir_of(raw), apply::STATE_OWNER, network);
    if !store.dir().exists() {
        return Ok(());
    }
    let lock = lock_attachment(&store, env)?;
    // Without a (readable) record there is nothing to restore, but an ADD
    // killed before its first rename may have left a temp file that
    // removing the state sweeps.
    if let Some(st) = store.load_lenient::<State>(&env.container_id, &env.ifname) {
        // The pod side only in the namespace ADD worked in (the dispatcher
        // already dropped one that is gone or the node's).
        let pod = env.netns.as_deref().filter(|ns| {
            let same = NetnsId::matches_record(st.netns_id, env.netns_id);
            if !same {
                log_warn!(
                    "CNI_NETNS {} is not the namespace ADD labelled: leaving it alone",
                    ns.display()
                );
            }
            same
        });
        apply::restore(&st, &env.ifname, pod);
    }
    remove_state(&store, env)?;
    lock.remove_file();
    Ok(())
}

fn check(ctx: &Context) -> anyhow::Result<()> {
    let Request {
        netns_path,
        want,
        store,
    } = request(ctx)?;
    let Some(st) = load_state(&store, &ctx.env)? else {
        return fail(
            Code::CheckMismatch,
            "no saved state for this attachment: ADD did not run or DEL already did",
        );
    };
    if !NetnsId::matches_record(st.netns_id, ctx.env.netns_id) {
        return fail(
            Code::CheckMismatch,
            format!(
                "CNI_NETNS {} is not the network namespace ADD labelled",
                netns_path.display()
            ),
        );
    }
    let diffs = apply::differences(&ctx.env, &netns_path, &want, &st)?;
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            Code::CheckMismatch,
            "the interfaces differ from what topology-label set",
        )
        .with_details(diffs.join("; "))
        .into())
    }
}

fn status(conf: &NetConf) -> anyhow::Result<()> {
    let cfg = Config::from_netconf(conf)?;
    if cfg.required {
        labels::node_labels(&cfg).cni(
            Code::NotAvailable,
            "node topology labels are required and no source answers",
        )?;
    }
    Ok(())
}

fn gc(ctx: &GcContext) -> anyhow::Result<()> {
    let store = StateStore::new(
        config::state_dir_of(&ctx.conf.raw),
        apply::STATE_OWNER,
        &ctx.conf.name,
    );
    if !store.dir().exists() {
        return Ok(());
    }
    let _lock = lock(&store)?;
    let listing = store
        .list::<State>()
        .cni(Code::Io, "cannot list saved state")?;
    for path in &listing.broken {
        log_warn!("GC: leaving unreadable state file {}", path.display());
    }
    // Every stale record is tried; failures are reported together.
    let mut failures = cni_types::error::Failures::default();
    for saved in listing.found {
        let (container_id, ifname) = (saved.container_id, saved.ifname);
        let live = ctx
            .valid
            .iter()
            .any(|a| a.container_id == container_id && a.ifname == ifname);
        if !live {
            log_info!("GC: removing state of {container_id} {ifname}");
            failures.record(
                format!("state of {container_id}/{ifname}"),
                store
                    .remove(&container_id, &ifname)
                    .cni(Code::Io, "cannot remove saved state"),
            );
        }
    }
    store.sweep_attachment_locks();
    failures.finish(Code::Io, "garbage collection incomplete")
}
