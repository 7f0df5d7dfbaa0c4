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
//! (`precedence`, `runtimeBurst`, `egressMode`, `latencyMs`, `stateDir`)
//! are exact.

use cni_types::NetConf;
use cni_types::error::{CniError, Code};
use serde::de::{Deserialize, Deserializer, Error as _, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use std::fmt;
use std::path::PathBuf;

/// Rates below this are not a useful shaping target and below tbf's
/// byte-rate resolution; Kubernetes quantities start at 1k anyway.
pub const MIN_RATE_BITS: u64 = 1_000;
/// 1 Pbit/s: the top of the range runtimes can express.
pub const MAX_RATE_BITS: u64 = 1_000_000_000_000_000;
/// The kernel's burst attribute is a u32 of bytes.
pub const MAX_BURST_BITS: u64 = u32::MAX as u64 * 8;

/// The one range check of a rate (bits/s), for the static block, the
/// runtime's, traffic classes and the namespace policy: the details of the
/// refusal, each caller names the key.
pub fn rate_in_range(key: &str, rate: u64) -> Result<(), String> {
    if (MIN_RATE_BITS..=MAX_RATE_BITS).contains(&rate) {
        return Ok(());
    }
    Err(format!(
        "{key}={rate} bits/s is outside {MIN_RATE_BITS}..={MAX_RATE_BITS} (1 kbit/s..1 Pbit/s)"
    ))
}

/// The one range check of a burst (bits).
pub fn burst_in_range(key: &str, burst: u64) -> Result<(), String> {
    if burst <= MAX_BURST_BITS {
        return Ok(());
    }
    Err(format!(
        "{key}={burst} bits exceeds {MAX_BURST_BITS} (4 GiB, the kernel's u32 of bytes)"
    ))
}
/// containerd, CRI-O and dockershim mean "unlimited" with a burst of
/// u32::MAX bits (containerd) or u32::MAX*8-1 (CRI-O): anything from 2^31-1
/// bits (256 MiB) up is such a sentinel, never an operator's choice.
pub const SENTINEL_BURST_BITS: u64 = (1 << 31) - 1;

/// One direction's limit as configured, before device-dependent math.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub rate_bits: u64,
    /// `None`: use the default bucket (see `shaping`).
    pub burst_bits: Option<u64>,
}

/// What to do with a runtime's sentinel burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// The four rate keys of one JSON object. Its `Deserialize` matches the keys
/// in any case, because Go runtimes and plugins do and users copy either
/// spelling; other keys are ignored, as the block shares its object with
/// the rest of the config.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct RateBlock {
    ingress_rate: Option<u64>,
    ingress_burst: Option<u64>,
    egress_rate: Option<u64>,
    egress_burst: Option<u64>,
}

impl<'de> Deserialize<'de> for RateBlock {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RateBlockVisitor)
    }
}

struct RateBlockVisitor;

impl<'de> Visitor<'de> for RateBlockVisitor {
    type Value = RateBlock;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with ingressRate/ingressBurst/egressRate/egressBurst")
    }

    /// When one key comes in several cases, the last non-null one in map
    /// order wins, and a bad value in any of them is an error: a `null`
    /// means "not set", never "clear what another spelling set".
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RateBlock, A::Error> {
        let mut b = RateBlock::default();
        while let Some(key) = map.next_key::<String>()? {
            let slot = if key.eq_ignore_ascii_case("ingressRate") {
                &mut b.ingress_rate
            } else if key.eq_ignore_ascii_case("ingressBurst") {
                &mut b.ingress_burst
            } else if key.eq_ignore_ascii_case("egressRate") {
                &mut b.egress_rate
            } else if key.eq_ignore_ascii_case("egressBurst") {
                &mut b.egress_burst
            } else {
                // Skipped unread: the top-level object can carry a large prevResult.
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            // Read as a Value, not a u64, so that the error can quote what
            // was sent and a null can be told apart from a bad value.
            let value = map.next_value::<Value>()?;
            if value.is_null() {
                continue;
            }
            let n = value.as_u64().ok_or_else(|| {
                A::Error::custom(format!(
                    "{key} must be a non-negative integer (bits or bits/s), got {value}"
                ))
            })?;
            *slot = Some(n);
        }
        Ok(b)
    }
}

impl RateBlock {
    /// `value` must be an object; `what` says where it is, for the error.
    fn read(value: &Value, what: &str) -> Result<RateBlock, CniError> {
        RateBlock::deserialize(value)
            .map_err(|e| invalid("invalid bandwidth rate", format!("{what}.{e}")))
    }

    fn is_empty(&self) -> bool {
        *self == RateBlock::default()
    }

    /// Both directions' limits, validated.
    fn limits(&self, sentinel_is_unset: bool) -> Result<(Option<Limit>, Option<Limit>), CniError> {
        let ingress = direction(
            "ingress",
            self.ingress_rate,
            self.ingress_burst,
            sentinel_is_unset,
        )?;
        let egress = direction(
            "egress",
            self.egress_rate,
            self.egress_burst,
            sentinel_is_unset,
        )?;
        Ok((ingress, egress))
    }
}

/// The rate keys at the top level of the plugin config.
fn static_block(raw: &Value) -> Result<RateBlock, CniError> {
    if raw.is_object() {
        RateBlock::read(raw, "config")
    } else {
        Ok(RateBlock::default())
    }
}

/// `runtimeConfig.bandwidth`, as the runtime filled it from the pod's
/// annotations.
fn runtime_block(conf: &NetConf) -> Result<RateBlock, CniError> {
    match conf.runtime_config_entry("bandwidth") {
        None | Some(Value::Null) => Ok(RateBlock::default()),
        Some(obj @ Value::Object(_)) => RateBlock::read(obj, "runtimeConfig.bandwidth"),
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

fn parse_enum<T>(raw: &Value, key: &str, default: T, options: &[(&str, T)]) -> Result<T, CniError>
where
    T: Copy,
{
    match raw.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::String(s)) => options
            .iter()
            .find(|(n, _)| n == s)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                invalid(
                    format!("invalid {key}"),
                    format!("{key}={s:?}, expected one of {}", names.join(", ")),
                )
            }),
        Some(other) => Err(invalid(
            format!("invalid {key}"),
            format!("{key} must be a string, got {other}"),
        )),
    }
}

fn parse_runtime_burst(raw: &Value) -> Result<RuntimeBurst, CniError> {
    parse_enum(
        raw,
        "runtimeBurst",
        RuntimeBurst::Cap,
        &[("cap", RuntimeBurst::Cap), ("honor", RuntimeBurst::Honor)],
    )
}

fn parse_precedence(raw: &Value) -> Result<Precedence, CniError> {
    parse_enum(
        raw,
        "precedence",
        Precedence::Static,
        &[
            ("static", Precedence::Static),
            ("runtime", Precedence::Runtime),
        ],
    )
}

fn parse_egress_mode(raw: &Value) -> Result<EgressMode, CniError> {
    parse_enum(
        raw,
        "egressMode",
        EgressMode::Auto,
        &[
            ("auto", EgressMode::Auto),
            ("ifb", EgressMode::Ifb),
            ("pod", EgressMode::Pod),
        ],
    )
}

fn parse_latency_ms(raw: &Value) -> Result<u32, CniError> {
    match raw.get("latencyMs") {
        None | Some(Value::Null) => Ok(DEFAULT_LATENCY_MS),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=60_000).contains(n))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                invalid(
                    "invalid latencyMs",
                    format!("latencyMs must be 1..=60000, got {v}"),
                )
            }),
    }
}

fn parse_state_dir(raw: &Value) -> Result<PathBuf, CniError> {
    match raw.get("stateDir") {
        None | Some(Value::Null) => Ok(PathBuf::from(DEFAULT_STATE_DIR)),
        Some(Value::String(s)) if s.starts_with('/') => Ok(PathBuf::from(s)),
        Some(v) => Err(invalid(
            "invalid stateDir",
            format!("stateDir must be an absolute path, got {v}"),
        )),
    }
}

impl BandwidthConf {
    pub fn parse(conf: &NetConf) -> Result<BandwidthConf, CniError> {
        let raw = &conf.raw;
        let runtime_burst = parse_runtime_burst(raw)?;
        let precedence = parse_precedence(raw)?;
        let egress_mode = parse_egress_mode(raw)?;
        let latency_ms = parse_latency_ms(raw)?;
        let state_dir = parse_state_dir(raw)?;
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
        assert_eq!(
            e.details,
            r#"runtimeConfig.bandwidth.IngressRate must be a non-negative integer (bits or bits/s), got "10M""#
        );
        let e = parse(json!({"cniVersion":"1.0.0","egressBurst":-1})).unwrap_err();
        assert_eq!(
            e.details,
            "config.egressBurst must be a non-negative integer (bits or bits/s), got -1"
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
