//! Latency summaries from raw samples: sorting a few hundred thousand `u32`s is cheaper than keeping a
//! histogram structure hot in the request loop.

use serde::Serialize;

/// Percentiles of one run, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub samples: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl LatencySummary {
    /// Summarises latencies given in microseconds; sorts `micros` in place.
    pub fn from_micros(micros: &mut [u32]) -> Self {
        if micros.is_empty() {
            return Self::default();
        }
        micros.sort_unstable();
        let ms = |us: u32| f64::from(us) / 1000.0;
        let sum: u64 = micros.iter().map(|&us| u64::from(us)).sum();
        Self {
            samples: micros.len(),
            p50_ms: ms(nearest_rank(micros, 0.50)),
            p90_ms: ms(nearest_rank(micros, 0.90)),
            p99_ms: ms(nearest_rank(micros, 0.99)),
            max_ms: ms(micros[micros.len() - 1]),
            mean_ms: sum as f64 / micros.len() as f64 / 1000.0,
        }
    }
}

/// Nearest-rank percentile of sorted, non-empty samples.
fn nearest_rank(sorted: &[u32], quantile: f64) -> u32 {
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_one_to_a_hundred() {
        let mut micros: Vec<u32> = (1..=100).rev().map(|ms| ms * 1000).collect();
        let summary = LatencySummary::from_micros(&mut micros);
        assert_eq!(summary.samples, 100);
        assert_eq!(summary.p50_ms, 50.0);
        assert_eq!(summary.p90_ms, 90.0);
        assert_eq!(summary.p99_ms, 99.0);
        assert_eq!(summary.max_ms, 100.0);
        assert_eq!(summary.mean_ms, 50.5);
    }

    #[test]
    fn no_samples_is_all_zero() {
        assert_eq!(
            LatencySummary::from_micros(&mut []),
            LatencySummary::default()
        );
    }
}
