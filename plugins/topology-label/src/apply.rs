//! The verbs: inspect everything and validate first, save the previous
//! values, then change links over netlink and sysctls through /proc/sys
//! inside the pod netns; restore on failure and on DEL.

use crate::config::{self, Config, Labels, SysctlKey, Var, cut_alias, merge_profiles};
use crate::labels;
use crate::state::{LinkState, LinkValues, State, SysctlState};
use cni_netlink::{Link, Netlink, netns};
use cni_types::error::{CniError, fail};
use cni_types::state::StateStore;
use cni_types::{CniResult, Code, Context, Env, GcContext, NetConf, ResultExt, log_info, log_warn};
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// What the configuration and labels ask for this attachment.
#[derive(Debug)]
struct Desired {
    alias: Option<String>,
    mtu: Option<u32>,
    txqlen: Option<u32>,
    sysctls: Vec<(SysctlKey, String)>,
}

fn pod_labels(cfg: &Config, conf: &NetConf) -> anyhow::Result<Labels> {
    let mut l = labels::node_labels(cfg)?;
    labels::apply_annotations(cfg, &mut l, &labels::annotations(conf))?;
    Ok(l)
}

fn desired(cfg: &Config, env: &Env, labels: &Labels) -> anyhow::Result<Desired> {
    let alias = cfg.alias.as_ref().and_then(|t| {
        let s = t.render(|v| match v {
            Var::Namespace => env.args.pod_namespace().map(str::to_string),
            Var::Pod => env.args.pod_name().map(str::to_string),
            Var::Uid => env.args.pod_uid().map(str::to_string),
            Var::ContainerId => Some(env.container_id.clone()),
            Var::Ifname => Some(env.ifname.clone()),
            Var::Network => Some(cfg.network.clone()),
            Var::Label(k) => labels.get(k).cloned(),
        });
        let s = cut_alias(&s).to_string();
        (!s.is_empty()).then_some(s)
    });
    let settings = merge_profiles(&cfg.profiles, labels);
    let mut sysctls = Vec::with_capacity(settings.sysctls.len());
    for (template, value) in &settings.sysctls {
        let key = config::config_error(SysctlKey::resolve(
            template,
            &env.ifname,
            cfg.sysctl_allowlist.as_deref(),
        ))?;
        sysctls.push((key, value.clone()));
    }
    Ok(Desired {
        alias,
        mtu: settings.mtu,
        txqlen: settings.txqueuelen,
        sysctls,
    })
}

/// Refuses a CNI_NETNS that is the plugin's own netns: sysctls written
/// there would change the node.
fn refuse_own_netns(path: &Path) -> anyhow::Result<()> {
    let own = std::fs::metadata("/proc/thread-self/ns/net");
    let target = std::fs::metadata(path);
    if let (Ok(a), Ok(b)) = (own, target)
        && a.ino() == b.ino()
        && a.dev() == b.dev()
    {
        return fail(
            Code::InvalidEnv,
            "CNI_NETNS is the plugin's own network namespace, not a pod's",
        );
    }
    Ok(())
}

fn normalize(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads a sysctl in the calling thread's netns; `None` when it does not exist.
fn read_sysctl(key: &SysctlKey) -> anyhow::Result<Option<String>> {
    let path = key.path();
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).cni_with(Code::Io, || format!("cannot read sysctl {}", key.display()));
        }
    };
    let mut s = String::new();
    file.take(4096)
        .read_to_string(&mut s)
        .cni_with(Code::Io, || format!("cannot read sysctl {}", key.display()))?;
    Ok(Some(s.trim_end_matches('\n').to_string()))
}

fn write_sysctl(key: &SysctlKey, value: &str) -> anyhow::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(key.path())
        .cni_with(Code::Kernel, || {
            format!("cannot open sysctl {}", key.display())
        })?;
    f.write_all(value.as_bytes()).cni_with(Code::Kernel, || {
        format!("cannot set sysctl {} to {value:?}", key.display())
    })
}

fn check_mtu(link: &Link, mtu: u32, side: &str) -> anyhow::Result<()> {
    let max = link.max_mtu.filter(|m| *m > 0);
    let min = link.min_mtu.filter(|m| *m > 0);
    if max.is_some_and(|m| mtu > m) || min.is_some_and(|m| mtu < m) {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!("mtu {mtu} is not allowed on the {side} interface"),
        )
        .with_details(format!(
            "{} accepts {}..{}",
            link.name,
            min.map_or("?".into(), |m| m.to_string()),
            max.map_or("?".into(), |m| m.to_string())
        ))
        .into());
    }
    Ok(())
}

/// Finds the host end of the container's veth (in the plugin's netns).
/// `None` (with a warning) when the container interface is not a veth.
fn find_host_veth(
    host_nl: &mut Netlink,
    cont: &Link,
    prev: Option<&CniResult>,
) -> anyhow::Result<Option<Link>> {
    if cont.kind.as_deref() != Some("veth") {
        log_warn!(
            "{} is a {} interface, not a veth: only the container side is labelled",
            cont.name,
            cont.kind.as_deref().unwrap_or("unknown")
        );
        return Ok(None);
    }
    let (Some(peer), Some(_)) = (cont.peer_index, cont.link_netnsid) else {
        log_warn!(
            "the veth peer of {} is not in another namespace: only the container side is labelled",
            cont.name
        );
        return Ok(None);
    };
    let names: Vec<&str> = prev
        .map(|r| {
            r.interfaces()
                .iter()
                .filter(|i| i.is_host_side() && !i.name.is_empty())
                .map(|i| i.name.as_str())
                .collect()
        })
        .unwrap_or_default();
    match host_nl
        .veth_peer_of(cont)
        .cni(Code::Kernel, "cannot look up the host veth")?
    {
        Some(l) => {
            if !names.is_empty() && !names.contains(&l.name.as_str()) {
                log_warn!(
                    "host veth {} (peer of {}) is not among prevResult's host interfaces {names:?}",
                    l.name,
                    cont.name
                );
            }
            Ok(Some(l))
        }
        None => Err(CniError::new(
            Code::InterfaceNotFound,
            "the host side of the container's veth was not found",
        )
        .with_details(format!(
            "{} has peer ifindex {peer}, which is not its veth peer in this namespace",
            cont.name
        ))
        .into()),
    }
}

/// Everything read before any change.
struct Inspection {
    pod_nl: Netlink,
    cont: Link,
    host_nl: Netlink,
    host: Option<Link>,
    /// Current values of the desired sysctls, in the same order.
    sysctl_now: Vec<String>,
}

fn inspect(
    env: &Env,
    netns_path: &Path,
    want: &Desired,
    prev: Option<&CniResult>,
) -> anyhow::Result<Inspection> {
    let (pod_nl, cont, sysctl_now) = netns::run_in(netns_path, || {
        let mut nl = Netlink::new().cni(Code::Kernel, "cannot open netlink in the pod netns")?;
        let cont = nl
            .link_by_name(&env.ifname)
            .cni(Code::Kernel, "cannot look up the container interface")?
            .ok_or_else(|| -> anyhow::Error {
                CniError::new(
                    Code::InterfaceNotFound,
                    format!("container interface {} not found", env.ifname),
                )
                .with_details(format!("no such link in {}", netns_path.display()))
                .into()
            })?;
        let mut now = Vec::with_capacity(want.sysctls.len());
        for (key, _) in &want.sysctls {
            match read_sysctl(key)? {
                Some(v) => now.push(v),
                None => {
                    return fail(
                        Code::InvalidConfig,
                        format!(
                            "sysctl {} does not exist in the pod's network namespace",
                            key.display()
                        ),
                    );
                }
            }
        }
        Ok((nl, cont, now))
    })?;
    if let Some(mtu) = want.mtu {
        check_mtu(&cont, mtu, "container")?;
    }
    let mut host_nl = Netlink::new().cni(Code::Kernel, "cannot open netlink")?;
    let host = find_host_veth(&mut host_nl, &cont, prev)?;
    if let (Some(mtu), Some(h)) = (want.mtu, &host) {
        check_mtu(h, mtu, "host")?;
    }
    Ok(Inspection {
        pod_nl,
        cont,
        host_nl,
        host,
        sysctl_now,
    })
}

/// A previous value: the one saved by an earlier ADD of this attachment
/// when the link still carries what that ADD set (a retried ADD), else the
/// current one.
fn inherit<T: Clone + PartialEq>(
    old: Option<&LinkState>,
    field: impl Fn(&LinkValues) -> Option<T>,
    current: T,
) -> T {
    match old {
        Some(o) if field(&o.set).as_ref() == Some(&current) => field(&o.prev).unwrap_or(current),
        _ => current,
    }
}

fn link_state(link: &Link, set: LinkValues, old: Option<&LinkState>) -> LinkState {
    let old = old.filter(|o| o.index == link.index && o.name == link.name);
    let cur_alias = link.alias.clone().unwrap_or_default();
    let prev = LinkValues {
        alias: set
            .alias
            .as_ref()
            .map(|_| inherit(old, |v| v.alias.clone(), cur_alias.clone())),
        mtu: set.mtu.map(|_| inherit(old, |v| v.mtu, link.mtu)),
        txqlen: set.txqlen.map(|_| inherit(old, |v| v.txqlen, link.txqlen)),
    };
    LinkState {
        index: link.index,
        name: link.name.clone(),
        prev,
        set,
    }
}

fn plan(ctx: &Context, want: &Desired, insp: &Inspection, old: Option<&State>) -> State {
    let cont = link_state(
        &insp.cont,
        LinkValues {
            alias: want.alias.clone(),
            mtu: want.mtu,
            txqlen: want.txqlen,
        },
        old.map(|o| &o.container),
    );
    let mut st = State::new(cont);
    st.netns = ctx.env.netns.as_ref().map(|p| p.display().to_string());
    st.host = insp.host.as_ref().map(|h| {
        link_state(
            h,
            LinkValues {
                alias: want.alias.clone(),
                mtu: want.mtu,
                txqlen: None,
            },
            old.and_then(|o| o.host.as_ref()),
        )
    });
    for ((key, value), now) in want.sysctls.iter().zip(&insp.sysctl_now) {
        let prev = old
            .and_then(|o| o.sysctls.iter().find(|s| s.key == key.components))
            .filter(|s| normalize(&s.set) == normalize(now))
            .map_or_else(|| now.clone(), |s| s.prev.clone());
        st.sysctls.push(SysctlState {
            key: key.components.clone(),
            prev,
            set: value.clone(),
        });
    }
    st
}

fn apply_link(nl: &mut Netlink, link: &Link, st: &LinkState, side: &str) -> anyhow::Result<()> {
    if let Some(a) = &st.set.alias
        && link.alias.as_deref().unwrap_or("") != a
    {
        nl.set_alias(link.index, a).cni_with(Code::Kernel, || {
            format!("cannot set the alias of the {side} interface")
        })?;
    }
    if let Some(m) = st.set.mtu
        && link.mtu != m
    {
        nl.set_mtu(link.index, m).cni_with(Code::Kernel, || {
            format!("cannot set the mtu of the {side} interface")
        })?;
    }
    if let Some(q) = st.set.txqlen
        && link.txqlen != q
    {
        nl.set_txqlen(link.index, q).cni_with(Code::Kernel, || {
            format!("cannot set the txqueuelen of the {side} interface")
        })?;
    }
    Ok(())
}

fn apply(insp: &mut Inspection, netns_path: &Path, st: &State) -> anyhow::Result<()> {
    apply_link(&mut insp.pod_nl, &insp.cont, &st.container, "container")?;
    if !st.sysctls.is_empty() {
        netns::run_in(netns_path, || {
            for s in &st.sysctls {
                write_sysctl(
                    &SysctlKey {
                        components: s.key.clone(),
                    },
                    &s.set,
                )?;
            }
            Ok(())
        })?;
    }
    if let (Some(link), Some(hs)) = (&insp.host, &st.host) {
        apply_link(&mut insp.host_nl, link, hs, "host")?;
    }
    Ok(())
}

/// Puts back what `st` recorded, where the value is still the one we set
/// (someone else's later change is left alone). Best effort: problems are
/// logged, since DEL must succeed when things are already gone.
fn restore(st: &State, ifname: &str, netns_path: Option<&Path>) {
    fn restore_link(nl: &mut Netlink, ls: &LinkState, side: &str) {
        let link = match nl.link_by_index(ls.index) {
            Ok(Some(l)) if l.name == ls.name => l,
            Ok(_) => return,
            Err(e) => {
                log_warn!("cannot look up the {side} interface {}: {e}", ls.name);
                return;
            }
        };
        if let (Some(set), Some(prev)) = (&ls.set.alias, &ls.prev.alias)
            && link.alias.as_deref().unwrap_or("") == set
            && set != prev
            && let Err(e) = nl.set_alias(link.index, prev)
        {
            log_warn!("cannot restore the alias of {}: {e}", ls.name);
        }
        if let (Some(set), Some(prev)) = (ls.set.mtu, ls.prev.mtu)
            && link.mtu == set
            && set != prev
            && let Err(e) = nl.set_mtu(link.index, prev)
        {
            log_warn!("cannot restore the mtu of {}: {e}", ls.name);
        }
        if let (Some(set), Some(prev)) = (ls.set.txqlen, ls.prev.txqlen)
            && link.txqlen == set
            && set != prev
            && let Err(e) = nl.set_txqlen(link.index, prev)
        {
            log_warn!("cannot restore the txqueuelen of {}: {e}", ls.name);
        }
    }

    if let Some(ns) = netns_path {
        let res = netns::run_in(ns, || {
            let mut nl = Netlink::new()?;
            if let Ok(Some(l)) = nl.link_by_name(ifname)
                && l.index == st.container.index
            {
                restore_link(&mut nl, &st.container, "container");
            }
            for s in &st.sysctls {
                let key = SysctlKey {
                    components: s.key.clone(),
                };
                match read_sysctl(&key) {
                    Ok(Some(now)) if normalize(&now) == normalize(&s.set) => {
                        if normalize(&s.prev) != normalize(&s.set)
                            && let Err(e) = write_sysctl(&key, &s.prev)
                        {
                            log_warn!("cannot restore sysctl {}: {e:#}", key.display());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => log_warn!("cannot read sysctl {}: {e:#}", key.display()),
                }
            }
            Ok(())
        });
        if let Err(e) = res {
            log_warn!("cannot restore the pod side: {e:#}");
        }
    }
    if let Some(h) = &st.host {
        match Netlink::new() {
            Ok(mut nl) => restore_link(&mut nl, h, "host"),
            Err(e) => log_warn!("cannot open netlink: {e}"),
        }
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

fn lock(store: &StateStore) -> anyhow::Result<cni_types::state::StoreLock> {
    store
        .lock()
        .cni(Code::Io, "cannot lock the state directory")
}

pub fn add(ctx: &Context) -> anyhow::Result<CniResult> {
    let cfg = Config::from_netconf(&ctx.conf)?;
    let prev = ctx.conf.prev_result()?;
    let netns_path = ctx
        .env
        .netns
        .clone()
        .ok_or_else(|| CniError::new(Code::InvalidEnv, "CNI_NETNS is not set"))?;
    refuse_own_netns(&netns_path)?;
    let labels = pod_labels(&cfg, &ctx.conf)?;
    let want = desired(&cfg, &ctx.env, &labels)?;
    // Labels (perhaps IMDS) are resolved before taking the lock.
    let store = StateStore::new(&cfg.state_dir, &cfg.network);
    let _lock = lock(&store)?;
    let mut insp = inspect(&ctx.env, &netns_path, &want, prev.as_ref())?;
    let old = load_state(&store, &ctx.env).unwrap_or_else(|e| {
        log_warn!("ignoring unreadable previous state: {e:#}");
        None
    });
    let st = plan(ctx, &want, &insp, old.as_ref());
    save_state(&store, &ctx.env, &st)?;
    if let Err(e) = apply(&mut insp, &netns_path, &st) {
        restore(&st, &ctx.env.ifname, Some(&netns_path));
        if let Err(re) = remove_state(&store, &ctx.env) {
            log_warn!("{re:#}");
        }
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

/// DEL needs only the state directory and network name, so it works with
/// a configuration whose other keys no longer validate.
pub fn del(ctx: &Context) -> anyhow::Result<()> {
    del_attachment(&ctx.conf.raw, &ctx.conf.name, &ctx.env)
}

pub fn del_best_effort(env: &Env, raw: Option<&serde_json::Value>) -> anyhow::Result<()> {
    let Some(raw) = raw else { return Ok(()) };
    let name = raw
        .get("name")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    if env.container_id.is_empty() || env.ifname.is_empty() {
        return Ok(());
    }
    del_attachment(raw, name, env)
}

fn del_attachment(raw: &serde_json::Value, network: &str, env: &Env) -> anyhow::Result<()> {
    let store = StateStore::new(config::state_dir_of(raw), network);
    if !store.dir().exists() {
        return Ok(());
    }
    let _lock = lock(&store)?;
    match load_state(&store, env) {
        Ok(Some(st)) => restore(&st, &env.ifname, env.netns.as_deref()),
        // Nothing to restore, but an ADD killed before its first rename may
        // have left a temp file that removing the state sweeps away.
        Ok(None) => {}
        Err(e) => log_warn!("dropping unreadable state: {e:#}"),
    }
    remove_state(&store, env)
}

pub fn check(ctx: &Context) -> anyhow::Result<()> {
    let cfg = Config::from_netconf(&ctx.conf)?;
    let netns_path = ctx
        .env
        .netns
        .clone()
        .ok_or_else(|| CniError::new(Code::InvalidEnv, "CNI_NETNS is not set"))?;
    let labels = pod_labels(&cfg, &ctx.conf)?;
    let want = desired(&cfg, &ctx.env, &labels)?;
    let store = StateStore::new(&cfg.state_dir, &cfg.network);
    let Some(st) = load_state(&store, &ctx.env)? else {
        return fail(
            Code::CheckMismatch,
            "no saved state for this attachment: ADD did not run or DEL already did",
        );
    };
    let mut diffs: Vec<String> = Vec::new();
    let compare_link = |diffs: &mut Vec<String>, side: &str, l: &Link, txq: bool| {
        if let Some(a) = &want.alias
            && l.alias.as_deref() != Some(a.as_str())
        {
            diffs.push(format!(
                "{side} {} alias is {:?}, want {a:?}",
                l.name, l.alias
            ));
        }
        if let Some(m) = want.mtu
            && l.mtu != m
        {
            diffs.push(format!("{side} {} mtu is {}, want {m}", l.name, l.mtu));
        }
        if txq
            && let Some(q) = want.txqlen
            && l.txqlen != q
        {
            diffs.push(format!(
                "{side} {} txqueuelen is {}, want {q}",
                l.name, l.txqlen
            ));
        }
    };
    let (cont, sysctl_now) = netns::run_in(&netns_path, || {
        let mut nl = Netlink::new().cni(Code::Kernel, "cannot open netlink in the pod netns")?;
        let cont = nl
            .link_by_name(&ctx.env.ifname)
            .cni(Code::Kernel, "cannot look up the container interface")?;
        let mut now = Vec::new();
        for (key, _) in &want.sysctls {
            now.push(read_sysctl(key)?);
        }
        Ok((cont, now))
    })?;
    let Some(cont) = cont else {
        return fail(
            Code::InterfaceNotFound,
            format!("container interface {} not found", ctx.env.ifname),
        );
    };
    compare_link(&mut diffs, "container", &cont, true);
    for ((key, value), now) in want.sysctls.iter().zip(sysctl_now) {
        match now {
            Some(v) if normalize(&v) == normalize(value) => {}
            other => diffs.push(format!(
                "sysctl {} is {:?}, want {value:?}",
                key.display(),
                other
            )),
        }
    }
    if let Some(h) = &st.host {
        let mut nl = Netlink::new().cni(Code::Kernel, "cannot open netlink")?;
        match nl
            .link_by_index(h.index)
            .cni(Code::Kernel, "cannot look up the host veth")?
        {
            Some(l) if l.name == h.name => compare_link(&mut diffs, "host", &l, false),
            _ => diffs.push(format!("host veth {} is gone", h.name)),
        }
    }
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

pub fn status(conf: &NetConf) -> anyhow::Result<()> {
    let cfg = Config::from_netconf(conf)?;
    if cfg.required {
        labels::node_labels(&cfg).cni(
            Code::NotAvailable,
            "node topology labels are required and no source answers",
        )?;
    }
    Ok(())
}

pub fn gc(ctx: &GcContext) -> anyhow::Result<()> {
    let store = StateStore::new(config::state_dir_of(&ctx.conf.raw), &ctx.conf.name);
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
    for saved in listing.found {
        let (container_id, ifname) = (saved.container_id, saved.ifname);
        let live = ctx
            .valid
            .iter()
            .any(|a| a.container_id == container_id && a.ifname == ifname);
        if !live {
            log_info!("GC: removing state of {container_id} {ifname}");
            if let Err(e) = store.remove(&container_id, &ifname) {
                log_warn!("GC: {e:#}");
            }
        }
    }
    Ok(())
}
