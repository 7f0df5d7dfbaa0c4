//! Rates and bursts as configured, and their one range check: shared by
//! the static block, the runtime's, traffic classes and the namespace
//! policy. A leaf: it imports no other module of the plugin.

use serde::de::{self, Deserializer, Visitor};
use std::fmt;

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

/// A rate or burst as written: a non-negative JSON integer. Its own
/// `Deserialize` says what is expected in the refusal ("expected a
/// non-negative integer of bits or bits/s"), where a bare `u64` would say
/// "expected u64"; floats (`1e6`) and strings (`"10M"`) are refused, as by
/// Go's `uint64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bits(pub u64);

impl<'de> serde::Deserialize<'de> for Bits {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_u64(BitsVisitor)
    }
}

struct BitsVisitor;

impl Visitor<'_> for BitsVisitor {
    type Value = Bits;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a non-negative integer (bits or bits/s)")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Bits, E> {
        Ok(Bits(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Bits, E> {
        u64::try_from(v)
            .map(Bits)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }
}

/// The value of an optional `Bits` key.
pub fn bits(b: Option<Bits>) -> Option<u64> {
    b.map(|Bits(n)| n)
}
