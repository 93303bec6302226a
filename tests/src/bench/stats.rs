//! Latency summaries: nearest-rank percentiles over every sample of a window.
//!
//! Samples are kept whole (a few hundred thousand `u32` microseconds at most) rather than
//! in a histogram, so p999 is exact for the window.

/// Percentiles of a set of samples, in the samples' unit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
}

/// The nearest-rank `q` quantile (0 < q ≤ 1) of sorted samples.
fn quantile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted.get(index).map_or(f64::NAN, |&v| f64::from(v))
}

/// Summarises `samples` (sorted in place). `None` when there are none.
pub fn summarize(samples: &mut [u32]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    Some(Summary {
        count: samples.len(),
        p50: quantile(samples, 0.50),
        p99: quantile(samples, 0.99),
        p999: quantile(samples, 0.999),
        max: quantile(samples, 1.0),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<u32> = (1..=1000).rev().collect();
        let s = summarize(&mut v).unwrap();
        assert_eq!(
            (s.count, s.p50, s.p99, s.p999, s.max),
            (1000, 500.0, 990.0, 999.0, 1000.0)
        );
        let s = summarize(&mut [7]).unwrap();
        assert_eq!((s.p50, s.p999), (7.0, 7.0));
        assert!(summarize(&mut []).is_none());
    }
}
