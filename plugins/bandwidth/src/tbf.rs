//! tbf parameters from a configured limit and the device: pure arithmetic,
//! in u64 throughout, so nothing wraps over the whole range runtimes send.
//!
//! The reference computes the bucket as a u32 count of scheduler ticks; with
//! containerd's "unlimited" burst that count wraps, and `10M` becomes
//! `burst 193273526b lat 275s`. We hand the kernel the burst in bytes
//! (TCA_TBF_BURST) and the rate as u64 (TCA_TBF_RATE64 when needed).

use crate::rates::Limit;

/// The default bucket holds this much time at the configured rate: small
/// enough that the first second stays within ~1.03x of the rate, large
/// enough for steady-state TCP to reach the rate within a few percent.
pub const DEFAULT_BUCKET_MS: u64 = 25;
/// tbf counts the Ethernet header of every packet (qdisc_pkt_len), so a
/// full-size packet is MTU + 14 bytes; a smaller bucket drops it.
pub const L2_HEADER_BYTES: u64 = 14;
/// The largest GSO/GRO packet the stack hands a qdisc by default.
pub const GSO_MAX_BYTES: u64 = 65_536;
/// The queue's floor never holds more than this much time at the rate:
/// the pod author picks the rate, and at 1 kbit/s a 64 KiB floor queued
/// for 536 s.
pub const MAX_FLOOR_WAIT_MS: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub rate_bytes_per_sec: u64,
    pub burst_bytes: u32,
    pub limit_bytes: u32,
    /// The configured burst was raised to fit a full-size packet.
    pub burst_raised_to_mtu: bool,
}

pub fn shape(limit: &Limit, mtu: u32, latency_ms: u32) -> Shape {
    let rate_bytes = (limit.rate_bits / 8).max(1);
    let min_burst = u64::from(mtu) + L2_HEADER_BYTES;
    let wanted = match limit.burst_bits {
        Some(bits) => bits.div_ceil(8),
        None => rate_bytes.saturating_mul(DEFAULT_BUCKET_MS) / 1000,
    };
    let burst = wanted.max(min_burst).min(u64::from(u32::MAX));
    // The queue holds `latency_ms` at the rate, so that is the most a packet
    // waits. The reference adds the burst on top (tc's `latency` formula),
    // which doubles the wait at the default bucket and, with a runtime's
    // 512 MiB burst, queues for minutes. The floor is one GSO super-packet
    // plus a frame: tbf splits a 64 KiB GSO packet into frames that must all
    // fit, or TCP loses a quarter of its rate at 10 Mbit/s (measured). Below
    // ~26 Mbit/s at 25 ms that floor, not `latency_ms`, bounds the wait.
    // A smaller floor was tried (6.5 frames, enough for one flow at 10
    // Mbit/s with jumbo frames in scripts/lib/queue-sweep.sh), and a 20
    // Mbit/s flow at MTU 1500 then lost 7% of its rate: BENCHMARKS.md,
    // "Queue floor".
    // The floor itself holds at most MAX_FLOOR_WAIT_MS at the rate, but
    // always the largest packet tbf enqueues whole (one up to the burst),
    // or every such packet would be dropped.
    let gso_floor = GSO_MAX_BYTES + min_burst;
    let floor = gso_floor
        .min(rate_bytes.saturating_mul(MAX_FLOOR_WAIT_MS) / 1000)
        .max(burst.min(gso_floor));
    let queue = rate_bytes.saturating_mul(u64::from(latency_ms)) / 1000;
    let limit_bytes = queue.max(floor).min(u64::from(u32::MAX));
    Shape {
        rate_bytes_per_sec: rate_bytes,
        burst_bytes: burst as u32,
        limit_bytes: limit_bytes as u32,
        burst_raised_to_mtu: limit.burst_bits.is_some() && wanted < min_burst,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(rate: u64, burst: Option<u64>) -> Limit {
        Limit {
            rate_bits: rate,
            burst_bits: burst,
        }
    }

    #[test]
    fn containerd_10m_sentinel_capped_default_bucket() {
        let s = shape(&lim(10_000_000, None), 1500, 25);
        assert_eq!(s.rate_bytes_per_sec, 1_250_000);
        assert_eq!(s.burst_bytes, 31_250);
        assert_eq!(s.limit_bytes, 65_536 + 1514, "the GSO floor at 10M");
        let g = shape(&lim(1_000_000_000, None), 9001, 25);
        assert_eq!(g.limit_bytes, 3_125_000, "25 ms of queue at 1G");
    }

    #[test]
    fn honored_sentinel_does_not_wrap() {
        let s = shape(&lim(10_000_000, Some(4_294_967_295)), 1500, 25);
        assert_eq!(s.burst_bytes, 536_870_912);
        assert_eq!(
            s.limit_bytes,
            65_536 + 1514,
            "the queue does not grow with the burst"
        );
        let crio = shape(&lim(10_000_000, Some(u32::MAX as u64 * 8 - 1)), 1500, 25);
        assert_eq!(crio.burst_bytes, u32::MAX, "saturates instead of wrapping");
    }

    #[test]
    fn whole_rate_range() {
        let low = shape(&lim(1_000, None), 1500, 25);
        assert_eq!(low.rate_bytes_per_sec, 125);
        assert_eq!(low.burst_bytes, 1514, "never below a full-size frame");
        assert_eq!(
            low.limit_bytes, 1514,
            "one frame of queue, not 64 KiB (536 s at 1 kbit/s)"
        );
        let k100 = shape(&lim(100_000, None), 1500, 25);
        assert_eq!(k100.limit_bytes, 12_500, "the floor waits at most 1 s");
        let big_burst = shape(&lim(100_000, Some(800_000)), 1500, 25);
        assert_eq!(
            big_burst.limit_bytes,
            65_536 + 1514,
            "a GSO packet within the burst is enqueued whole: it must fit"
        );
        let peta = shape(&lim(1_000_000_000_000_000, None), 9001, 25);
        assert_eq!(peta.rate_bytes_per_sec, 125_000_000_000_000);
        assert_eq!(peta.burst_bytes, u32::MAX);
        assert_eq!(peta.limit_bytes, u32::MAX);
        let big = shape(&lim(40_000_000_000, None), 9001, 25);
        assert!(big.rate_bytes_per_sec > u64::from(u32::MAX));
        assert_eq!(big.burst_bytes, 125_000_000);
    }

    #[test]
    fn explicit_small_burst_raised_to_mtu() {
        let s = shape(&lim(1_000_000, Some(800)), 9001, 25);
        assert_eq!(s.burst_bytes, 9015);
        assert!(s.burst_raised_to_mtu);
    }

    #[test]
    fn latency_sets_queue() {
        let s = shape(&lim(8_000_000, Some(80_000)), 1500, 100);
        assert_eq!(s.limit_bytes, 100_000);
        let tiny = shape(&lim(1_000_000, Some(80_000)), 9001, 1);
        assert_eq!(
            tiny.limit_bytes,
            65_536 + 9015,
            "at least one GSO packet and a frame"
        );
    }
}
