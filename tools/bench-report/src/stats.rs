//! The statistics every section uses, defined once: the median is the mean
//! of the two middle values when n is even, and percentiles are nearest
//! rank (the ceil(p * n)-th smallest), the usual definition for latency.
//! Before this program the shell had three medians (the awk helper's,
//! jq's upper middle in two helpers, awk's lower middle in the churn one).

/// Summary of one series, in the series' unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// None for an empty series: a missing measurement must not read as 0.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Summary {
            n: v.len(),
            mean: v.iter().sum::<f64>() / v.len() as f64,
            median: median_sorted(&v),
            p90: nearest_rank(&v, 90),
            p99: nearest_rank(&v, 99),
            min: v[0],
            max: v[v.len() - 1],
        })
    }
}

/// Median of a series (any order); None when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    Summary::of(values).map(|s| s.median)
}

fn median_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The ceil(pct * n / 100)-th smallest of a sorted, non-empty series. The
/// rank is computed in integers: 0.9 * 20 in floating point is not 18.
pub fn nearest_rank(sorted: &[f64], pct: usize) -> f64 {
    let n = sorted.len();
    let k = (pct * n).div_ceil(100).clamp(1, n);
    sorted[k - 1]
}

/// a / b, None when either is missing or b is 0 (a ratio to nothing is
/// not a measurement).
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

/// a - b when both are there.
pub fn diff(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? - b?)
}

/// |x - 1|: how far a ratio is from the target 1.
pub fn deviation(x: f64) -> f64 {
    (x - 1.0).abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        let s = Summary::of(&v).unwrap();
        // ceil(0.9 * 20) = 18, ceil(0.99 * 20) = 20
        assert_eq!((s.p90, s.p99), (18.0, 20.0));
        let v: Vec<f64> = (1..=500).map(f64::from).collect();
        // what section 5 says: with 500 pings, p99 is the 495th
        assert_eq!(Summary::of(&v).unwrap().p99, 495.0);
        assert_eq!(nearest_rank(&[7.0], 99), 7.0);
    }

    #[test]
    fn summary_fields() {
        let s = Summary::of(&[2.0, 8.0, 5.0, f64::NAN]).unwrap();
        assert_eq!(s.n, 3);
        assert_eq!((s.mean, s.median, s.min, s.max), (5.0, 5.0, 2.0, 8.0));
    }

    #[test]
    fn ratio_and_diff_need_both() {
        assert_eq!(ratio(Some(1.0), Some(4.0)), Some(0.25));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(diff(Some(3.0), Some(1.0)), Some(2.0));
        assert_eq!(diff(Some(3.0), None), None);
        assert!((deviation(0.97) - 0.03).abs() < 1e-12);
    }
}
