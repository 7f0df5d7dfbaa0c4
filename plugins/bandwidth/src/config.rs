//! Bandwidth configuration: the reference plugin's keys, the spellings real
//! runtimes send, and our own policy knobs.
//!
//! Sources, in order of precedence (the reference's default):
//! 1. the static block: `ingressRate`/`ingressBurst`/`egressRate`/`egressBurst`
//!    at the top level of the plugin config. If any of these keys is present
//!    the static block wins as a whole, as in the reference plugin;
//! 2. `runtimeConfig.bandwidth` (or `bandWidth`), filled by the runtime from
//!    the pod annotations through the `bandwidth` capability.
//!
//! `"precedence": "runtime"` flips that: a pod's annotations win over the
//! node default in the static block. The four rate keys and the
//! `runtimeConfig` key match case-insensitively (containerd sends
//! `IngressRate`, CRI-O `ingressRate`), as Go's JSON does; our own knobs
//! (`precedence`, `runtimeBurst`, `egressMode`, `latencyMs`, `stateDir`, `ifbPool`)
//! are exact.

use crate::rates::{Bits, bits};
use cni_types::NetConf;
use cni_types::config::{any_case, typed};
use cni_types::error::{CniError, Code};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::PathBuf;

pub use crate::rates::{
    Limit, MAX_BURST_BITS, MAX_RATE_BITS, MIN_RATE_BITS, SENTINEL_BURST_BITS, burst_in_range,
    rate_in_range,
};

/// What to do with a runtime's sentinel burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeBurst {
    /// Treat it as unset and use the default bucket (our default).
    Cap,
    /// Install it as given, like the reference plugin (without its u32 wrap).
    Honor,
}

/// Where egress (out of the pod) is shaped. Recorded in the state file as
/// `"ifb"` / `"pod"` (the mode that was applied, never `auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressMode {
    /// `pod` when the host veth already has a `clsact`/`ingress` qdisc we
    /// did not create (a network policy agent's), else `ifb`.
    Auto,
    /// The reference layout: ingress qdisc + redirect to an ifb + tbf there.
    Ifb,
    /// Root tbf on the container interface, inside the pod netns: the host
    /// veth's ingress hook is left to others.
    Pod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precedence {
    Static,
    Runtime,
}

/// Which block the rates came from, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Static,
    Runtime,
    /// Neither: the namespace policy's default.
    Policy,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BandwidthConf {
    pub ingress: Option<Limit>,
    pub egress: Option<Limit>,
    pub source: Source,
    pub runtime_burst: RuntimeBurst,
    pub latency_ms: u32,
    pub state_dir: PathBuf,
    /// How many parked ifbs DEL may leave for later ADDs (`ifbPool`; 0:
    /// DEL deletes its ifb, as the reference plugin does).
    pub ifb_pool: u32,
    pub egress_mode: EgressMode,
    /// Per-namespace defaults and maxima (see [`crate::policy`]).
    pub namespace_policy: Option<crate::policy::NamespacePolicy>,
    /// Peer classes as configured (subnets or zones), see [`crate::classes`].
    pub class_spec: Option<crate::zones::ClassSpec>,
    /// The same with zone CIDRs read (file, IMDS): set by
    /// [`BandwidthConf::resolve_classes`] for ADD and CHECK only.
    pub classes: Option<crate::classes::PeerClasses>,
}

pub const DEFAULT_STATE_DIR: &str = "/run/cni/bandwidth";
pub const DEFAULT_LATENCY_MS: u32 = 25;

fn invalid(msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError::new(Code::InvalidConfig, msg).with_details(details)
}

/// The four rate keys of one JSON object, matched in any case (see
/// [`cni_types::config::any_case`]): Go runtimes and plugins do, and users
/// copy either spelling.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RateBlock {
    ingress_rate: Option<Bits>,
    ingress_burst: Option<Bits>,
    egress_rate: Option<Bits>,
    egress_burst: Option<Bits>,
}

const RATE_KEYS: [&str; 4] = ["ingressRate", "ingressBurst", "egressRate", "egressBurst"];

/// Our own top-level keys, as written: exact spellings. Not
/// `deny_unknown_fields`: the top level is shared with the CNI keys and
/// whatever runtimes and other tools add; `namespacePolicy` and
/// `trafficClasses` are read by their own modules.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Knobs {
    precedence: Option<Precedence>,
    runtime_burst: Option<RuntimeBurst>,
    egress_mode: Option<EgressMode>,
    latency_ms: Option<u32>,
    state_dir: Option<PathBuf>,
    ifb_pool: Option<u32>,
}

impl RateBlock {
    /// `obj`'s rate keys; `what` says where it is, for the error.
    fn read(obj: &Map<String, Value>, what: &str) -> Result<RateBlock, CniError> {
        any_case(obj, &RATE_KEYS, what)
    }

    fn is_empty(&self) -> bool {
        *self == RateBlock::default()
    }

    /// Both directions' limits, validated.
    fn limits(&self, sentinel_is_unset: bool) -> Result<(Option<Limit>, Option<Limit>), CniError> {
        let ingress = direction(
            "ingress",
            bits(self.ingress_rate),
            bits(self.ingress_burst),
            sentinel_is_unset,
        )?;
        let egress = direction(
            "egress",
            bits(self.egress_rate),
            bits(self.egress_burst),
            sentinel_is_unset,
        )?;
        Ok((ingress, egress))
    }
}

/// The rate keys at the top level of the plugin config.
fn static_block(raw: &Value) -> Result<RateBlock, CniError> {
    match raw.as_object() {
        Some(obj) => RateBlock::read(obj, ""),
        None => Ok(RateBlock::default()),
    }
}

/// `runtimeConfig.bandwidth`, as the runtime filled it from the pod's
/// annotations.
fn runtime_block(conf: &NetConf) -> Result<RateBlock, CniError> {
    match conf.runtime_config_entry("bandwidth") {
        None | Some(Value::Null) => Ok(RateBlock::default()),
        Some(Value::Object(obj)) => RateBlock::read(obj, "runtimeConfig.bandwidth"),
        Some(other) => Err(invalid(
            "invalid runtimeConfig.bandwidth",
            format!("runtimeConfig.bandwidth must be an object, got {other}"),
        )),
    }
}

/// The block that applies is taken whole, never merged key by key, as in
/// the reference plugin (see the module doc).
fn choose(
    static_block: RateBlock,
    runtime_block: RateBlock,
    precedence: Precedence,
) -> (RateBlock, Source) {
    match (
        static_block.is_empty(),
        runtime_block.is_empty(),
        precedence,
    ) {
        (true, true, _) => (RateBlock::default(), Source::None),
        (false, true, _) | (false, false, Precedence::Static) => (static_block, Source::Static),
        (true, false, _) | (false, false, Precedence::Runtime) => (runtime_block, Source::Runtime),
    }
}

/// Validates one direction the way the reference does (rate and burst come
/// together), plus range checks the reference lacks.
fn direction(
    name: &str,
    rate: Option<u64>,
    burst: Option<u64>,
    sentinel_is_unset: bool,
) -> Result<Option<Limit>, CniError> {
    let rate = rate.unwrap_or(0);
    let burst = burst.unwrap_or(0);
    if rate == 0 && burst == 0 {
        return Ok(None);
    }
    if rate == 0 {
        return Err(invalid(
            format!("{name}Burst is set but {name}Rate is not"),
            format!("{name}Burst={burst} needs a non-zero {name}Rate"),
        ));
    }
    if burst == 0 {
        return Err(invalid(
            format!("{name}Rate is set but {name}Burst is not"),
            format!(
                "{name}Rate={rate} needs a non-zero {name}Burst (bits), as in the reference plugin"
            ),
        ));
    }
    rate_in_range(&format!("{name}Rate"), rate)
        .map_err(|d| invalid(format!("{name}Rate out of range"), d))?;
    burst_in_range(&format!("{name}Burst"), burst)
        .map_err(|d| invalid(format!("{name}Burst too large"), d))?;
    let burst_bits = if sentinel_is_unset && burst >= SENTINEL_BURST_BITS {
        None
    } else {
        Some(burst)
    };
    Ok(Some(Limit {
        rate_bits: rate,
        burst_bits,
    }))
}

/// `latencyMs`: the tbf queue's delay bound.
fn latency_ms(given: Option<u32>) -> Result<u32, CniError> {
    match given {
        None => Ok(DEFAULT_LATENCY_MS),
        Some(n) if (1..=60_000).contains(&n) => Ok(n),
        Some(n) => Err(invalid(
            "invalid latencyMs",
            format!("latencyMs must be 1..=60000, got {n}"),
        )),
    }
}

/// `ifbPool`: 0..=256 parked ifbs (see [`crate::ifb_pool`]).
fn ifb_pool(given: Option<u32>) -> Result<u32, CniError> {
    use crate::ifb_pool::{DEFAULT_SLOTS, MAX_SLOTS};
    match given {
        None => Ok(DEFAULT_SLOTS),
        Some(n) if n <= MAX_SLOTS => Ok(n),
        Some(n) => Err(invalid(
            "invalid ifbPool",
            format!("ifbPool must be 0..={MAX_SLOTS}, got {n}"),
        )),
    }
}

/// `stateDir`: absolute, as a runtime's working directory is unknown.
fn state_dir(given: Option<PathBuf>) -> Result<PathBuf, CniError> {
    match given {
        None => Ok(PathBuf::from(DEFAULT_STATE_DIR)),
        Some(p) if p.is_absolute() => Ok(p),
        Some(p) => Err(invalid(
            "invalid stateDir",
            format!("stateDir must be an absolute path, got {}", p.display()),
        )),
    }
}

impl BandwidthConf {
    pub fn parse(conf: &NetConf) -> Result<BandwidthConf, CniError> {
        let raw = &conf.raw;
        let knobs: Knobs = typed(raw, "")?;
        let runtime_burst = knobs.runtime_burst.unwrap_or(RuntimeBurst::Cap);
        let precedence = knobs.precedence.unwrap_or(Precedence::Static);
        let egress_mode = knobs.egress_mode.unwrap_or(EgressMode::Auto);
        let latency_ms = latency_ms(knobs.latency_ms)?;
        let state_dir = state_dir(knobs.state_dir)?;
        let ifb_pool = ifb_pool(knobs.ifb_pool)?;
        let (block, source) = choose(static_block(raw)?, runtime_block(conf)?, precedence);
        // Only a runtime's burst can be the "unlimited" sentinel; an
        // operator's explicit static burst is honoured as written.
        let sentinel_is_unset = source == Source::Runtime && runtime_burst == RuntimeBurst::Cap;
        let (ingress, egress) = block.limits(sentinel_is_unset)?;
        let namespace_policy = crate::policy::NamespacePolicy::parse(raw)?;
        let class_spec = crate::zones::parse(raw, conf.runtime_config_entry("bandwidth"))?;
        Ok(BandwidthConf {
            ingress,
            egress,
            source,
            runtime_burst,
            latency_ms,
            state_dir,
            ifb_pool,
            egress_mode,
            namespace_policy,
            class_spec,
            classes: None,
        })
    }

    /// Applies the namespace policy for the pod `namespace`/`pod` to the
    /// limits asked for, saying so when it lowers one. `None` when no
    /// policy entry applies.
    pub fn apply_namespace_policy(
        &mut self,
        namespace: Option<&str>,
        pod: Option<&str>,
    ) -> Option<crate::policy::PolicyRecord> {
        let record = self.namespace_policy.as_ref()?.apply(
            namespace,
            &mut self.ingress,
            &mut self.egress,
        )?;
        for (dir, d) in [("ingress", &record.ingress), ("egress", &record.egress)] {
            if d.capped {
                cni_types::log_warn!(
                    "namespace {} pod {}: {dir} rate {} bits/s is above the namespace maximum (entry {:?}); shaped at {} bits/s",
                    namespace.unwrap_or("-"),
                    pod.unwrap_or("-"),
                    d.asked.unwrap_or_default(),
                    record.entry,
                    d.applied.unwrap_or_default()
                );
            }
        }
        if self.source == Source::None && (record.ingress.defaulted || record.egress.defaulted) {
            self.source = Source::Policy;
        }
        Some(record)
    }

    pub fn shapes_anything(&self) -> bool {
        self.ingress.is_some() || self.egress.is_some()
    }

    /// Something goes on the node for this pod: a limit, or zone classes
    /// (which count every pod, limited or not). Subnets alone change
    /// nothing for a pod without a limit, as in the reference.
    pub fn installs_anything(&self) -> bool {
        self.shapes_anything()
            || self
                .class_spec
                .as_ref()
                .is_some_and(|c| c.origin() == crate::classes::Origin::Zones)
    }

    /// Reads the zone CIDRs where the config says they are (inline, file,
    /// IMDS), when something will be installed or checked with them.
    pub fn resolve_classes(&mut self) -> Result<(), CniError> {
        if self.installs_anything()
            && let Some(spec) = &self.class_spec
        {
            self.classes = Some(spec.resolve()?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<BandwidthConf, CniError> {
        BandwidthConf::parse(&NetConf::from_value(v).unwrap())
    }

    #[test]
    fn containerd_pascal_case_sentinel_is_capped() {
        let c = parse(json!({"cniVersion":"0.4.0","name":"n","type":"bandwidth","capabilities":{"bandwidth":true},
            "runtimeConfig":{"bandwidth":{"IngressRate":10000000,"IngressBurst":4294967295u64,"EgressRate":10000000,"EgressBurst":4294967295u64}}}))
        .unwrap();
        assert_eq!(c.source, Source::Runtime);
        assert_eq!(
            c.ingress,
            Some(Limit {
                rate_bits: 10_000_000,
                burst_bits: None
            })
        );
        assert_eq!(
            c.egress,
            Some(Limit {
                rate_bits: 10_000_000,
                burst_bits: None
            })
        );
    }

    #[test]
    fn honor_keeps_sentinel_and_crio_burst_fits() {
        let c = parse(json!({"cniVersion":"1.0.0","runtimeBurst":"honor",
            "runtimeConfig":{"bandWidth":{"ingressRate":1000000,"ingressBurst":34359738359u64}}}))
        .unwrap();
        assert_eq!(
            c.ingress,
            Some(Limit {
                rate_bits: 1_000_000,
                burst_bits: Some(34_359_738_359)
            })
        );
        assert_eq!(c.egress, None);
    }

    #[test]
    fn static_block_wins_and_is_honoured() {
        let c = parse(
            json!({"cniVersion":"1.0.0","ingressRate":8000,"ingressBurst":4294967295u64,
            "runtimeConfig":{"bandwidth":{"egressRate":1000000,"egressBurst":80000}}}),
        )
        .unwrap();
        assert_eq!(c.source, Source::Static);
        assert_eq!(
            c.ingress,
            Some(Limit {
                rate_bits: 8000,
                burst_bits: Some(4_294_967_295)
            })
        );
        assert_eq!(c.egress, None, "static block wins as a whole");
    }

    #[test]
    fn runtime_precedence_flips() {
        let c = parse(json!({"cniVersion":"1.0.0","precedence":"runtime","ingressRate":8000,"ingressBurst":8000,
            "runtimeConfig":{"bandwidth":{"egressRate":1000000,"egressBurst":80000}}}))
        .unwrap();
        assert_eq!(c.source, Source::Runtime);
        assert_eq!(c.ingress, None);
        assert!(c.egress.is_some());
    }

    #[test]
    fn invalid_combinations() {
        for bad in [
            json!({"cniVersion":"1.0.0","ingressRate":0,"ingressBurst":123}),
            json!({"cniVersion":"1.0.0","egressRate":123000,"egressBurst":0}),
            json!({"cniVersion":"1.0.0","egressRate":123000}),
            json!({"cniVersion":"1.0.0","ingressRate":-5,"ingressBurst":1}),
            json!({"cniVersion":"1.0.0","ingressRate":"10M","ingressBurst":1}),
            json!({"cniVersion":"1.0.0","ingressRate":1.5,"ingressBurst":1}),
            json!({"cniVersion":"1.0.0","ingressRate":999,"ingressBurst":100000}),
            json!({"cniVersion":"1.0.0","ingressRate":1000000000000000001u64,"ingressBurst":100000}),
            json!({"cniVersion":"1.0.0","ingressRate":1000000,"ingressBurst":34359738361u64}),
            json!({"cniVersion":"1.0.0","runtimeBurst":"sometimes"}),
            json!({"cniVersion":"1.0.0","latencyMs":0}),
            json!({"cniVersion":"1.0.0","egressMode":"host"}),
            json!({"cniVersion":"1.0.0","stateDir":"relative"}),
            json!({"cniVersion":"1.0.0","ifbPool":257}),
            json!({"cniVersion":"1.0.0","ifbPool":-1}),
            json!({"cniVersion":"1.0.0","ifbPool":"16"}),
            json!({"cniVersion":"1.0.0","ifbPool":1.5}),
            json!({"cniVersion":"1.0.0","runtimeConfig":{"bandwidth":[1]}}),
        ] {
            let e = parse(bad.clone()).unwrap_err();
            assert_eq!(e.code, Code::InvalidConfig, "{bad}");
        }
    }

    #[test]
    fn rate_type_error_names_block_and_key() {
        let e = parse(json!({"cniVersion":"1.0.0",
            "runtimeConfig":{"bandwidth":{"IngressRate":"10M","IngressBurst":1}}}))
        .unwrap_err();
        assert_eq!(e.code, Code::InvalidConfig);
        assert_eq!(e.msg, "invalid runtimeConfig.bandwidth");
        assert_eq!(
            e.details,
            r#"runtimeConfig.bandwidth.ingressRate: invalid type: string "10M", expected a non-negative integer (bits or bits/s)"#
        );
        let e = parse(json!({"cniVersion":"1.0.0","egressBurst":-1})).unwrap_err();
        assert_eq!(
            e.details,
            "egressBurst: invalid value: integer `-1`, expected a non-negative integer (bits or bits/s)"
        );
        let e = parse(json!({"cniVersion":"1.0.0","ingressRate":1e6})).unwrap_err();
        assert!(
            e.details
                .starts_with("ingressRate: invalid type: floating point"),
            "{}",
            e.details
        );
    }

    #[test]
    fn own_keys_are_typed_and_named() {
        let e = parse(json!({"cniVersion":"1.0.0","egressMode":"tc"})).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (Code::InvalidConfig, "invalid egressMode")
        );
        assert!(
            e.details
                .contains("unknown variant `tc`, expected one of `auto`, `ifb`, `pod`"),
            "{}",
            e.details
        );
        let e = parse(json!({"cniVersion":"1.0.0","latencyMs":"25"})).unwrap_err();
        assert!(
            e.details.starts_with("latencyMs: invalid type"),
            "{}",
            e.details
        );
        let e = parse(json!({"cniVersion":"1.0.0","trafficClasses":{"sameZone":{"ingresRate":1}}}))
            .unwrap_err();
        assert_eq!(e.msg, "invalid trafficClasses.sameZone");
        assert!(
            e.details
                .starts_with("trafficClasses.sameZone.ingresRate: unknown field `ingresRate`"),
            "{}",
            e.details
        );
        let e = parse(json!({"cniVersion":"1.0.0",
            "namespacePolicy":{"team-a":{"max":{"egressRate":"1G"}}}}))
        .unwrap_err();
        assert!(
            e.details
                .starts_with("namespacePolicy.team-a.max.egressRate: invalid type"),
            "{}",
            e.details
        );
        let c = parse(
            json!({"cniVersion":"1.0.0","egressMode":null,"precedence":"runtime",
            "runtimeBurst":"honor","stateDir":"/run/x","latencyMs":50}),
        )
        .unwrap();
        assert_eq!((c.egress_mode, c.latency_ms), (EgressMode::Auto, 50));
        assert_eq!(c.ifb_pool, crate::ifb_pool::DEFAULT_SLOTS);
        let off = parse(json!({"cniVersion":"1.0.0","ifbPool":0})).unwrap();
        assert_eq!(off.ifb_pool, 0, "0 turns the pool off");
        assert_eq!(c.runtime_burst, RuntimeBurst::Honor);
        assert_eq!(
            parse(json!({"cniVersion":"1.0.0","stateDir":"run"}))
                .unwrap_err()
                .msg,
            "invalid stateDir"
        );
    }

    #[test]
    fn duplicate_spellings_last_non_null_wins() {
        // Written in map order (upper case sorts first), so this holds
        // whether or not serde_json preserves insertion order.
        let c = parse(json!({"cniVersion":"1.0.0",
            "IngressRate":1000,"ingressRate":2000,"ingressBurst":8000,
            "EgressRate":3000,"egressRate":null,"egressBurst":8000}))
        .unwrap();
        assert_eq!(c.ingress.unwrap().rate_bits, 2000);
        assert_eq!(c.egress.unwrap().rate_bits, 3000);
        let bad =
            json!({"cniVersion":"1.0.0","INGRESSRATE":"x","ingressRate":2000,"ingressBurst":8000});
        assert_eq!(parse(bad).unwrap_err().code, Code::InvalidConfig);
    }

    #[test]
    fn unknown_and_null_rate_keys_are_ignored() {
        let c = parse(
            json!({"cniVersion":"1.0.0","ingress":"fast","ingressRateX":[1],
            "ingressRate":null,"prevResult":{"interfaces":[]},
            "runtimeConfig":{"bandwidth":{"note":"x","egressBurst":null}}}),
        )
        .unwrap();
        assert_eq!(c.source, Source::None);
        assert!(!c.shapes_anything());
    }

    #[test]
    fn nothing_configured() {
        let c = parse(json!({"cniVersion":"1.0.0","name":"n"})).unwrap();
        assert!(!c.shapes_anything());
        assert_eq!(c.latency_ms, 25);
    }
}
