//! The work behind the verbs: what the config asks for this attachment,
//! inspecting everything first, planning what to save, then changing links
//! over netlink and sysctls inside the pod netns; restoring on failure and
//! on DEL; and CHECK's comparison.

use crate::config::{self, Config, Labels, SysctlKey, Var, cut_alias, merge_profiles};
use crate::labels;
use crate::state::{LinkState, LinkValues, State, SysctlState};
use crate::sysctl;
use cni_netlink::host_veth::{self, HostSide};
use cni_netlink::{Link, Netlink, netns};
use cni_types::error::{CniError, fail};
use cni_types::{CniResult, Code, Context, Env, NetConf, ResultExt, log_warn};
use std::path::Path;

/// The owner name of this plugin's state files.
pub const STATE_OWNER: &str = "topology-label";

/// What the configuration and labels ask for this attachment.
#[derive(Debug)]
pub(crate) struct Desired {
    pub(crate) alias: Option<String>,
    pub(crate) mtu: Option<u32>,
    pub(crate) txqlen: Option<u32>,
    pub(crate) sysctls: Vec<(SysctlKey, String)>,
    /// The pod's zone label, recorded for operators (`cni-rs pods`).
    pub(crate) zone: Option<String>,
}

pub(crate) fn pod_labels(cfg: &Config, conf: &NetConf) -> anyhow::Result<Labels> {
    let mut l = labels::node_labels(cfg)?;
    labels::apply_annotations(cfg, &mut l, &labels::annotations(conf))?;
    Ok(l)
}

pub(crate) fn desired(cfg: &Config, env: &Env, labels: &Labels) -> anyhow::Result<Desired> {
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
        // Checked with a placeholder ifname at parse time; again with the real one.
        let key = SysctlKey::resolve(template, &env.ifname, cfg.sysctl_allowlist.as_deref())
            .map_err(|e| config::invalid(format!("sysctls: {e}")))?;
        sysctls.push((key, value.clone()));
    }
    Ok(Desired {
        alias,
        mtu: settings.mtu,
        txqlen: settings.txqueuelen,
        sysctls,
        zone: labels.get(config::ZONE).cloned(),
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

/// Refuses to raise `link`'s MTU above the bucket of a tbf its packets go
/// through (its own root tbf, or the root tbf of an ifb its ingress hook
/// redirects to): tbf drops every packet larger than its burst, so the pod
/// would silently receive or send nothing at full size. That happens when
/// `bandwidth` runs before this plugin and sized the burst for the old MTU;
/// interface settings must settle before shaping.
fn refuse_mtu_over_tbf(nl: &mut Netlink, link: &Link, mtu: u32, side: &str) -> anyhow::Result<()> {
    use cni_netlink::tc::{INGRESS_HANDLE, Qdisc, ticks_to_burst};
    if mtu <= link.mtu {
        return Ok(());
    }
    let tbf_burst = |qs: &[Qdisc]| {
        qs.iter()
            .find(|q| q.is_root() && q.kind == "tbf")
            .and_then(|q| q.tbf)
            .map(|p| ticks_to_burst(p.rate_bytes_per_sec, p.buffer_ticks))
    };
    let mut shaped: Vec<(String, u64)> = Vec::new();
    let qs = nl
        .top_qdiscs(link.index)
        .cni(Code::Kernel, "cannot list qdiscs")?;
    if let Some(b) = tbf_burst(&qs) {
        shaped.push((link.name.clone(), b));
    }
    if qs.iter().any(Qdisc::is_ingress) {
        let filters = nl
            .filters(link.index, INGRESS_HANDLE)
            .cni(Code::Kernel, "cannot list filters")?;
        for m in filters.iter().flat_map(|f| &f.mirred) {
            let Some(target) = nl
                .link_by_index(m.ifindex)
                .cni(Code::Kernel, "cannot look up a redirect target")?
            else {
                continue;
            };
            let target_qs = nl
                .top_qdiscs(target.index)
                .cni(Code::Kernel, "cannot list qdiscs")?;
            if let Some(b) = tbf_burst(&target_qs) {
                shaped.push((target.name, b));
            }
        }
    }
    // A frame is the MTU plus the Ethernet header, which tbf counts; the
    // dumped bucket is rounded to scheduler ticks, so allow a byte or two.
    let frame = u64::from(mtu) + 14;
    if let Some((dev, burst)) = shaped.iter().find(|(_, b)| b + 2 < frame) {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!(
                "mtu {mtu} on the {side} interface {} would exceed the burst of the tbf on {dev}",
                link.name
            ),
        )
        .with_details(format!(
            "the tbf's bucket holds {burst} bytes and drops every frame larger than that; \
             run topology-label before bandwidth in the conflist so shaping is sized for the final MTU"
        ))
        .into());
    }
    Ok(())
}

/// The host end of the container's veth (in the plugin's netns), by the
/// policy both plugins share ([`host_veth::host_side`]). Labelling can do
/// without one: `None`, with a warning, when the container interface has
/// no host side.
fn find_host_veth(
    host_nl: &mut Netlink,
    cont: &Link,
    netns_path: &Path,
    prev: Option<&CniResult>,
) -> anyhow::Result<Option<Link>> {
    match host_veth::host_side(host_nl, cont, netns_path, prev)? {
        HostSide::Veth(host) => Ok(Some(host)),
        none => {
            log_warn!(
                "{}: only the container side is labelled",
                none.why_none(&cont.name)
            );
            Ok(None)
        }
    }
}

/// Everything read before any change.
pub(crate) struct Inspection {
    pod_nl: Netlink,
    pub(crate) cont: Link,
    host_nl: Netlink,
    pub(crate) host: Option<Link>,
    /// Current values of the desired sysctls, in the same order.
    sysctl_now: Vec<String>,
}

pub(crate) fn inspect(
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
            match sysctl::read(key)? {
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
    let mut pod_nl = pod_nl;
    if let Some(mtu) = want.mtu {
        check_mtu(&cont, mtu, "container")?;
        refuse_mtu_over_tbf(&mut pod_nl, &cont, mtu, "container")?;
    }
    let mut host_nl = Netlink::new().cni(Code::Kernel, "cannot open netlink")?;
    let host = find_host_veth(&mut host_nl, &cont, netns_path, prev)?;
    if let (Some(mtu), Some(h)) = (want.mtu, &host) {
        check_mtu(h, mtu, "host")?;
        refuse_mtu_over_tbf(&mut host_nl, h, mtu, "host")?;
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

/// Keeps a field an earlier ADD set and this one does not (`set` is
/// `None`): its `set` and `prev` are carried over so DEL can still put the
/// previous value back, as long as the link still carries what was set
/// (then applying it again changes nothing). When it no longer does,
/// someone else changed it since, and DEL would leave it alone anyway.
fn keep<T: Clone + PartialEq>(
    set: &mut Option<T>,
    prev: &mut Option<T>,
    old: Option<&LinkState>,
    field: impl Fn(&LinkValues) -> Option<T>,
    current: T,
) {
    if set.is_some() {
        return;
    }
    if let Some(o) = old
        && field(&o.set).as_ref() == Some(&current)
    {
        *set = field(&o.set);
        *prev = field(&o.prev);
    }
}

fn link_state(link: &Link, set: LinkValues, old: Option<&LinkState>) -> LinkState {
    let old = old.filter(|o| o.index == link.index && o.name == link.name);
    let cur_alias = link.alias.clone().unwrap_or_default();
    let mut prev = LinkValues {
        alias: set
            .alias
            .as_ref()
            .map(|_| inherit(old, |v| v.alias.clone(), cur_alias.clone())),
        mtu: set.mtu.map(|_| inherit(old, |v| v.mtu, link.mtu)),
        txqlen: set.txqlen.map(|_| inherit(old, |v| v.txqlen, link.txqlen)),
    };
    let mut set = set;
    keep(
        &mut set.alias,
        &mut prev.alias,
        old,
        |v| v.alias.clone(),
        cur_alias,
    );
    keep(&mut set.mtu, &mut prev.mtu, old, |v| v.mtu, link.mtu);
    keep(
        &mut set.txqlen,
        &mut prev.txqlen,
        old,
        |v| v.txqlen,
        link.txqlen,
    );
    LinkState {
        index: link.index,
        name: link.name.clone(),
        prev,
        set,
    }
}

/// The sysctl entries: the desired ones (`now` holds their current values,
/// in the same order), each with the previous value an earlier ADD saved
/// when the sysctl still holds what that ADD set, else the current one; and
/// the kept ones: everything an earlier ADD changed that is no longer
/// desired, carried over unchanged so DEL can still put it back.
fn plan_sysctls(
    want: &[(SysctlKey, String)],
    now: &[String],
    old: Option<&State>,
) -> (Vec<SysctlState>, Vec<SysctlState>) {
    let old_entries: Vec<&SysctlState> = old
        .map(|o| o.sysctls.iter().chain(&o.kept_sysctls).collect())
        .unwrap_or_default();
    let desired = want
        .iter()
        .zip(now)
        .map(|((key, value), now)| {
            let prev = old_entries
                .iter()
                .find(|s| s.key == *key)
                .filter(|s| sysctl::normalize(&s.set) == sysctl::normalize(now))
                .map_or_else(|| now.clone(), |s| s.prev.clone());
            SysctlState {
                key: key.clone(),
                prev,
                set: value.clone(),
            }
        })
        .collect();
    let mut kept: Vec<SysctlState> = Vec::new();
    for s in old_entries {
        if !want.iter().any(|(k, _)| *k == s.key) && !kept.iter().any(|k| k.key == s.key) {
            kept.push(s.clone());
        }
    }
    (desired, kept)
}

pub(crate) fn plan(ctx: &Context, want: &Desired, insp: &Inspection, old: Option<&State>) -> State {
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
    st.netns_id = ctx.env.netns_id;
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
    (st.sysctls, st.kept_sysctls) = plan_sysctls(&want.sysctls, &insp.sysctl_now, old);
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

pub(crate) fn apply(insp: &mut Inspection, netns_path: &Path, st: &State) -> anyhow::Result<()> {
    apply_link(&mut insp.pod_nl, &insp.cont, &st.container, "container")?;
    if !st.sysctls.is_empty() {
        netns::run_in(netns_path, || {
            for s in &st.sysctls {
                sysctl::write(&s.key, &s.set)?;
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
pub(crate) fn restore(st: &State, ifname: &str, netns_path: Option<&Path>) {
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
            for s in st.sysctls.iter().chain(&st.kept_sysctls) {
                let key = &s.key;
                match sysctl::read(key) {
                    Ok(Some(now)) if sysctl::normalize(&now) == sysctl::normalize(&s.set) => {
                        if sysctl::normalize(&s.prev) != sysctl::normalize(&s.set)
                            && let Err(e) = sysctl::write(key, &s.prev)
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

/// CHECK's comparison: every way the interfaces and sysctls differ from
/// what the config asks (empty when they match).
pub(crate) fn differences(
    env: &Env,
    netns_path: &Path,
    want: &Desired,
    st: &State,
) -> anyhow::Result<Vec<String>> {
    let mut diffs: Vec<String> = Vec::new();
    let (cont, sysctl_now) = netns::run_in(netns_path, || {
        let mut nl = Netlink::new().cni(Code::Kernel, "cannot open netlink in the pod netns")?;
        let cont = nl
            .link_by_name(&env.ifname)
            .cni(Code::Kernel, "cannot look up the container interface")?;
        let mut now = Vec::new();
        for (key, _) in &want.sysctls {
            now.push(sysctl::read(key)?);
        }
        Ok((cont, now))
    })?;
    let Some(cont) = cont else {
        return fail(
            Code::InterfaceNotFound,
            format!("container interface {} not found", env.ifname),
        );
    };
    link_differences(&mut diffs, want, "container", &cont, true);
    for ((key, value), now) in want.sysctls.iter().zip(sysctl_now) {
        match now {
            Some(v) if sysctl::normalize(&v) == sysctl::normalize(value) => {}
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
            Some(l) if l.name == h.name => link_differences(&mut diffs, want, "host", &l, false),
            _ => diffs.push(format!("host veth {} is gone", h.name)),
        }
    }
    Ok(diffs)
}

/// One link against the alias, MTU and (container side) txqueuelen asked.
fn link_differences(diffs: &mut Vec<String>, want: &Desired, side: &str, l: &Link, txq: bool) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(alias: Option<&str>, mtu: Option<u32>, txqlen: Option<u32>) -> LinkValues {
        LinkValues {
            alias: alias.map(str::to_string),
            mtu,
            txqlen,
        }
    }

    fn link(mtu: u32, txqlen: u32, alias: Option<&str>) -> Link {
        Link {
            index: 7,
            name: "eth0".into(),
            mtu,
            txqlen,
            alias: alias.map(str::to_string),
            ..Link::default()
        }
    }

    /// What a first ADD with alias, mtu 1400 and txqueuelen 2000 saved.
    fn first_add() -> LinkState {
        LinkState {
            index: 7,
            name: "eth0".into(),
            prev: values(Some(""), Some(1500), Some(1000)),
            set: values(Some("a"), Some(1400), Some(2000)),
        }
    }

    #[test]
    fn retried_add_keeps_what_it_no_longer_sets() {
        let old = first_add();
        let live = link(1400, 2000, Some("a"));
        // Nothing set any more: everything stays recorded.
        let st = link_state(&live, LinkValues::default(), Some(&old));
        assert_eq!(st, old);
        // Still set: inherited as before; only the alias is new.
        let st = link_state(&live, values(Some("b"), Some(1400), None), Some(&old));
        assert_eq!(st.set, values(Some("b"), Some(1400), Some(2000)));
        assert_eq!(st.prev, values(Some(""), Some(1500), Some(1000)));
        // A value someone else changed since is not ours to restore.
        let st = link_state(
            &link(1450, 2000, Some("a")),
            LinkValues::default(),
            Some(&old),
        );
        assert_eq!(st.set, values(Some("a"), None, Some(2000)));
        assert_eq!(st.prev, values(Some(""), None, Some(1000)));
        // Another link (same name, new index): nothing carried.
        let mut other = link(1400, 2000, Some("a"));
        other.index = 8;
        let st = link_state(&other, LinkValues::default(), Some(&old));
        assert_eq!(
            (st.set, st.prev),
            (LinkValues::default(), LinkValues::default())
        );
        // No earlier ADD: nothing carried.
        let st = link_state(&live, values(None, Some(1300), None), None);
        assert_eq!(st.set, values(None, Some(1300), None));
        assert_eq!(st.prev, values(None, Some(1400), None));
    }

    fn key(s: &str) -> SysctlKey {
        SysctlKey {
            components: s.split('.').map(str::to_string).collect(),
        }
    }

    fn sysctl(k: &str, prev: &str, set: &str) -> SysctlState {
        SysctlState {
            key: key(k),
            prev: prev.into(),
            set: set.into(),
        }
    }

    #[test]
    fn sysctls_no_longer_desired_are_kept_until_desired_again() {
        const RP: &str = "net.ipv4.conf.eth0.rp_filter";
        const KA: &str = "net.ipv4.tcp_keepalive_time";
        let mut old = State::new(first_add());
        old.sysctls = vec![sysctl(RP, "0", "2"), sysctl(KA, "7200", "600")];

        // Only the keepalive is still desired (with a new value).
        let (desired, kept) = plan_sysctls(&[(key(KA), "300".into())], &["600".into()], Some(&old));
        assert_eq!(desired, vec![sysctl(KA, "7200", "300")]);
        assert_eq!(kept, vec![sysctl(RP, "0", "2")]);

        // Nothing desired: both kept, through any number of retries.
        let mut second = State::new(first_add());
        (second.sysctls, second.kept_sysctls) = (desired, kept);
        let (desired, kept) = plan_sysctls(&[], &[], Some(&second));
        assert!(desired.is_empty());
        assert_eq!(kept, vec![sysctl(KA, "7200", "300"), sysctl(RP, "0", "2")]);

        // Desired again while it still holds what was set: the original
        // previous value is inherited, and it is no longer only kept.
        let mut third = State::new(first_add());
        third.kept_sysctls = kept;
        let (desired, kept) = plan_sysctls(&[(key(RP), "1".into())], &["2".into()], Some(&third));
        assert_eq!(desired, vec![sysctl(RP, "0", "1")]);
        assert_eq!(kept, vec![sysctl(KA, "7200", "300")]);

        // No earlier ADD: the current value is the previous one.
        let (desired, kept) = plan_sysctls(&[(key(RP), "1".into())], &["0".into()], None);
        assert_eq!(desired, vec![sysctl(RP, "0", "1")]);
        assert!(kept.is_empty());
    }
}
