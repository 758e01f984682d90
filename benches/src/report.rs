//! The result of one run: printed as a table, appended as one JSON object
//! per run to `--json FILE`.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

/// Latencies are recorded in nanoseconds; this is the largest (one minute),
/// anything slower is clamped to it.
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// A new latency histogram (nanoseconds, 3 significant digits).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

/// One measured run (or one case of a mode that measures several).
#[derive(Debug, Clone)]
pub struct Report {
    /// The mode: `core`, `cluster`, `storage` or `transport`.
    pub mode: &'static str,
    /// What this case is, when a mode measures several (`batch=10`, ...).
    pub case: Option<String>,
    /// Raft nodes in the run (0 when the mode has none).
    pub nodes: usize,
    /// Concurrent closed-loop clients.
    pub clients: usize,
    /// Operations completed in the measured phase (errors included).
    pub ops: u64,
    /// Measured wall time.
    pub elapsed: Duration,
    /// Latency per call, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Failed operations by kind.
    pub errors: BTreeMap<String, u64>,
    /// Mode-specific figures (`fsyncs_per_sec`, `mb_per_sec`, ...), in the
    /// order they are printed.
    pub extra: Vec<(&'static str, f64)>,
}

impl Report {
    /// Operations per second over the measured phase.
    pub fn ops_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ops as f64 / secs
        } else {
            0.0
        }
    }

    /// Total failed operations.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn quantile_us(&self, q: f64) -> f64 {
        if self.latency.is_empty() {
            return 0.0;
        }
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    fn max_us(&self) -> f64 {
        self.latency.max() as f64 / 1000.0
    }

    /// The run as one JSON object (the `--json` line).
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("mode".into(), json!(self.mode));
        if let Some(case) = &self.case {
            object.insert("case".into(), json!(case));
        }
        object.insert("nodes".into(), json!(self.nodes));
        object.insert("clients".into(), json!(self.clients));
        object.insert("ops".into(), json!(self.ops));
        object.insert("elapsed_s".into(), json!(self.elapsed.as_secs_f64()));
        object.insert("ops_per_sec".into(), json!(round2(self.ops_per_sec())));
        // A mode that times no single call (storage, transport) has no
        // latencies: null, not a made-up zero.
        let latency = |value: f64| {
            if self.latency.is_empty() {
                Value::Null
            } else {
                json!(round2(value))
            }
        };
        object.insert("p50_us".into(), latency(self.quantile_us(0.5)));
        object.insert("p90_us".into(), latency(self.quantile_us(0.9)));
        object.insert("p99_us".into(), latency(self.quantile_us(0.99)));
        object.insert("p999_us".into(), latency(self.quantile_us(0.999)));
        object.insert("max_us".into(), latency(self.max_us()));
        object.insert("errors".into(), json!(self.error_count()));
        object.insert("errors_by_kind".into(), json!(self.errors));
        for (name, value) in &self.extra {
            object.insert((*name).into(), json!(round2(*value)));
        }
        Value::Object(object)
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Appends each report as one JSON line to `path`.
pub fn append_json(path: &Path, reports: &[Report]) -> std::io::Result<()> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    for report in reports {
        writeln!(file, "{}", report.to_json())?;
    }
    Ok(())
}

/// Appends each value as one JSON line to `path` (nothing when empty).
pub fn append_json_values(path: &Path, values: &[Value]) -> std::io::Result<()> {
    if values.is_empty() {
        return Ok(());
    }
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    for value in values {
        writeln!(file, "{value}")?;
    }
    Ok(())
}

/// Prints the reports as one table: the common columns, then each extra
/// figure that any report has, then errors by kind.
pub fn print_table(reports: &[Report]) {
    let mut extra_names: Vec<&'static str> = Vec::new();
    for report in reports {
        for (name, _) in &report.extra {
            if !extra_names.contains(name) {
                extra_names.push(name);
            }
        }
    }
    let mut header: Vec<String> = [
        "mode", "case", "nodes", "clients", "ops", "ops/s", "p50 µs", "p90 µs", "p99 µs",
        "p999 µs", "max µs", "errors",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend(extra_names.iter().map(|s| s.to_string()));
    let mut rows = vec![header];
    for report in reports {
        let mut row = vec![
            report.mode.to_string(),
            report.case.clone().unwrap_or_else(|| "-".into()),
            report.nodes.to_string(),
            report.clients.to_string(),
            report.ops.to_string(),
            format!("{:.0}", report.ops_per_sec()),
        ];
        for value in [
            report.quantile_us(0.5),
            report.quantile_us(0.9),
            report.quantile_us(0.99),
            report.quantile_us(0.999),
            report.max_us(),
        ] {
            row.push(if report.latency.is_empty() {
                "-".into()
            } else {
                format!("{value:.1}")
            });
        }
        row.push(report.error_count().to_string());
        for name in &extra_names {
            let value = report.extra.iter().find(|(n, _)| n == name);
            row.push(value.map_or_else(|| "-".into(), |(_, v)| format!("{v:.1}")));
        }
        rows.push(row);
    }
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for (i, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, width))| {
                if c < 2 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        println!("{}", line.join("  "));
        if i == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * (columns - 1);
            println!("{}", "-".repeat(total));
        }
    }
    for report in reports {
        if report.errors.is_empty() {
            continue;
        }
        let kinds: Vec<String> = report
            .errors
            .iter()
            .map(|(kind, count)| format!("{kind}: {count}"))
            .collect();
        let case = report.case.as_deref().unwrap_or(report.mode);
        println!("errors ({case}): {}", kinds.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_documented_fields() {
        let mut latency = latency_histogram();
        for us in 1..=1000u64 {
            latency.record(us * 1000).unwrap();
        }
        let report = Report {
            mode: "core",
            case: None,
            nodes: 3,
            clients: 4,
            ops: 1000,
            elapsed: Duration::from_millis(500),
            latency,
            errors: BTreeMap::from([("Timeout".to_string(), 2)]),
            extra: vec![("fsyncs_per_sec", 10.0)],
        };
        let json = report.to_json();
        for field in [
            "mode",
            "nodes",
            "clients",
            "ops",
            "ops_per_sec",
            "p50_us",
            "p99_us",
            "p999_us",
            "max_us",
            "errors",
        ] {
            assert!(json.get(field).is_some(), "missing {field}");
        }
        assert_eq!(json["ops_per_sec"], 2000.0);
        assert_eq!(json["errors"], 2);
        assert_eq!(json["fsyncs_per_sec"], 10.0);
        let p50 = json["p50_us"].as_f64().unwrap();
        assert!((499.0..=501.0).contains(&p50), "p50 {p50}");
    }

    #[test]
    fn json_latencies_are_null_when_nothing_was_timed() {
        let report = Report {
            mode: "storage",
            case: Some("raw redb batch=10".into()),
            nodes: 0,
            clients: 1,
            ops: 100,
            elapsed: Duration::from_secs(1),
            latency: latency_histogram(),
            errors: BTreeMap::new(),
            extra: vec![("entries_per_sec", 100.0)],
        };
        let json = report.to_json();
        for field in ["p50_us", "p99_us", "p999_us", "max_us"] {
            assert!(json[field].is_null(), "{field} is {}", json[field]);
        }
        assert_eq!(json["ops_per_sec"], 100.0);
        assert_eq!(json["entries_per_sec"], 100.0);
    }
}
