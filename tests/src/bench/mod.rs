//! `smesh-bench`: how fast and how lean the mesh is, measured against the
//! limit (a plain producer to the same broker) in the same run.
//!
//! Every comparison is a ratio of two figures measured in the same round,
//! the median over `--rounds` rounds; raw figures go to a JSON file. Nothing
//! here is a pass/fail threshold.

pub mod direct;
pub mod failover;
pub mod footprint;
pub mod mesh;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

/// Measures throughput, latency, failover time, replay speed and memory of
/// a smesh mesh on a real Kafka broker.
#[derive(Parser, Debug, Clone)]
#[command(name = "smesh-bench", about, max_term_width = 100)]
pub struct BenchArgs {
    /// Events per throughput run.
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 256)]
    pub payload: usize,
    /// Rounds per comparison (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Clients in the many-clients throughput run.
    #[arg(long, default_value_t = 50)]
    pub clients: u64,
    /// Offered loads for the latency runs, events/s.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub rates: Vec<u64>,
    /// Seconds per latency run.
    #[arg(long, default_value_t = 8)]
    pub latency_secs: u64,
    /// Kills per failover measurement.
    #[arg(long, default_value_t = 5)]
    pub kills: usize,
    /// Rows of the spool drained in the replay run.
    #[arg(long, default_value_t = 1_000_000)]
    pub replay_rows: u64,
    /// Idle clients connected to one sidecar in the footprint run.
    #[arg(long, default_value_t = 1000)]
    pub idle_clients: usize,
    /// Sections to run (default: all): throughput, latency, tls, delivery, failover, replay,
    /// footprint.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Where the raw figures go.
    #[arg(long, default_value = "target/bench-results.json")]
    pub out: PathBuf,
    /// Kafka bootstrap servers to use instead of starting a broker.
    #[arg(long)]
    pub kafka: Option<String>,
}

impl BenchArgs {
    pub fn wants(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    pub fn from_histogram(h: &hdrhistogram::Histogram<u64>) -> Self {
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Everything measured, as written to the JSON file.
#[derive(Debug, Default, Serialize)]
pub struct Results {
    pub machine: BTreeMap<String, String>,
    pub parameters: BTreeMap<String, String>,
    /// Raw figures per round and their medians, by name.
    pub figures: BTreeMap<String, Figure>,
}

/// One named figure: every round's value and the median.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figure {
    pub unit: String,
    pub rounds: Vec<f64>,
    pub median: f64,
}

impl Results {
    pub fn record(&mut self, name: &str, unit: &str, value: f64) {
        let figure = self.figures.entry(name.to_string()).or_default();
        figure.unit = unit.to_string();
        figure.rounds.push(value);
        figure.median = median(&figure.rounds);
    }

    pub fn median(&self, name: &str) -> Option<f64> {
        self.figures.get(name).map(|f| f.median)
    }
}

pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

/// A table a person can read.
pub fn table(results: &Results) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<52} {:>14} {:<8} {}\n",
        "figure", "median", "unit", "rounds"
    ));
    out.push_str(&format!("{}\n", "-".repeat(100)));
    for (name, figure) in &results.figures {
        let rounds: Vec<String> = figure.rounds.iter().map(|v| format_value(*v)).collect();
        out.push_str(&format!(
            "{:<52} {:>14} {:<8} {}\n",
            name,
            format_value(figure.median),
            figure.unit,
            rounds.join(" ")
        ));
    }
    out
}

fn format_value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A timeout for things that should take seconds.
pub const PATIENCE: Duration = Duration::from_secs(600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_rounds() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        let mut results = Results::default();
        results.record("x", "ev/s", 10.0);
        results.record("x", "ev/s", 30.0);
        results.record("x", "ev/s", 20.0);
        assert_eq!(results.median("x"), Some(20.0));
        assert!(table(&results).contains("10.00 30.00 20.00"));
    }
}
