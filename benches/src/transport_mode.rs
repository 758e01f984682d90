//! `transport`: `rafter-quic` alone on loopback (`rafter_quic::bench`): two
//! endpoints with mutual TLS, one sending appends of one entry to the other,
//! for each payload size, one message at a time and pipelined.
//!
//! One report per (payload, mode) case; `ops` counts messages delivered.
//! The bench times the whole run, not each message, so the latency columns
//! stay empty; for `single`, `delivery_us_mean` is the mean time from send
//! to delivery.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rafter_quic::bench::{loopback, LoopbackParams, LoopbackReport, Mode};

use crate::progress;
use crate::report::{latency_histogram, Report};
use crate::storage_mode::{parse_seconds, parse_warmup};

/// Largest payload accepted: the transport's default frame limit is
/// larger, but beyond this the case measures memory copies, not messages.
const PAYLOAD_BYTES_MAX: usize = 4 << 20;
/// Messages of each warm-up run.
const WARMUP_MESSAGES: u64 = 1000;

/// What `transport` runs.
#[derive(Debug, Clone, clap::Args)]
pub struct TransportArgs {
    /// Messages of each pipelined case.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub messages: u64,
    /// Messages of each one-at-a-time case (each waits for the previous one
    /// to arrive, so it is much slower).
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub single_messages: u64,
    /// Command bytes in each append, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "64,4096", value_parser = parse_payload)]
    pub payloads: Vec<usize>,
    /// Messages in flight at most when pipelined (at most the transport's
    /// queue length).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub window: u64,
    /// Unmeasured warm-up, in seconds (pipelined runs of the first payload).
    #[arg(long, default_value_t = 1.0, value_parser = parse_warmup)]
    pub warmup: f64,
    /// Give up on a case after this many seconds.
    #[arg(long, default_value_t = 120.0, value_parser = parse_seconds)]
    pub timeout: f64,
}

fn parse_payload(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if n <= PAYLOAD_BYTES_MAX => Ok(n),
        _ => Err(format!(
            "a payload is 0..={PAYLOAD_BYTES_MAX} bytes, not {value:?}"
        )),
    }
}

/// One case: a payload size and a mode.
struct Case {
    payload_bytes: usize,
    name: &'static str,
    mode: Mode,
    messages: u64,
}

/// Runs `transport` and returns one report per (payload, mode).
pub async fn run(args: &TransportArgs) -> Result<Vec<Report>, String> {
    let timeout = Duration::from_secs_f64(args.timeout);
    let window = Mode::Pipelined {
        window: args.window as usize,
    };
    if args.warmup > 0.0 {
        let bar = progress::spinner("transport warm-up");
        let started = Instant::now();
        while started.elapsed().as_secs_f64() < args.warmup {
            let params = LoopbackParams {
                payload_bytes: args.payloads[0],
                messages: WARMUP_MESSAGES,
                mode: window,
                timeout,
            };
            loopback(params)
                .await
                .map_err(|error| format!("transport warm-up failed: {error}"))?;
        }
        bar.finish_and_clear();
    }

    let cases: Vec<Case> = args
        .payloads
        .iter()
        .flat_map(|&payload_bytes| {
            [
                Case {
                    payload_bytes,
                    name: "single",
                    mode: Mode::Single,
                    messages: args.single_messages,
                },
                Case {
                    payload_bytes,
                    name: "pipelined",
                    mode: window,
                    messages: args.messages,
                },
            ]
        })
        .collect();
    let bar = progress::cases("transport", cases.len() as u64);
    let mut reports = Vec::new();
    for case in &cases {
        let label = format!("{} B {}", case.payload_bytes, case.name);
        bar.set_message(label.clone());
        let params = LoopbackParams {
            payload_bytes: case.payload_bytes,
            messages: case.messages,
            mode: case.mode,
            timeout,
        };
        let result = loopback(params)
            .await
            .map_err(|error| format!("transport case {label} failed: {error}"))?;
        reports.push(report(case, &result, args.window));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(reports)
}

fn report(case: &Case, result: &LoopbackReport, window: u64) -> Report {
    let seconds = result.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    let mut extra = vec![
        ("payload_bytes", case.payload_bytes as f64),
        ("msgs_per_sec", result.messages_per_second),
        ("mb_per_sec", result.payload_mb_per_second),
        (
            "frame_mb_per_sec",
            result.frame_bytes as f64 / 1e6 / seconds,
        ),
    ];
    match case.mode {
        Mode::Single => extra.push((
            "delivery_us_mean",
            seconds * 1e6 / result.messages.max(1) as f64,
        )),
        _ => extra.push(("window", window as f64)),
    }
    Report {
        mode: "transport",
        case: Some(format!("{} B {}", case.payload_bytes, case.name)),
        nodes: 0,
        clients: 1,
        ops: result.messages,
        elapsed: result.elapsed,
        latency: latency_histogram(),
        errors: BTreeMap::new(),
        extra,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_report_per_payload_and_mode() {
        let args = TransportArgs {
            messages: 200,
            single_messages: 20,
            payloads: vec![64, 4096],
            window: 64,
            warmup: 0.0,
            timeout: 60.0,
        };
        let reports = run(&args).await.unwrap();
        let cases: Vec<_> = reports.iter().map(|r| r.case.clone().unwrap()).collect();
        assert_eq!(
            cases,
            [
                "64 B single",
                "64 B pipelined",
                "4096 B single",
                "4096 B pipelined"
            ]
        );
        assert_eq!(reports[0].ops, 20);
        assert_eq!(reports[1].ops, 200);
        for report in &reports {
            let json = report.to_json();
            assert!(json["msgs_per_sec"].as_f64().unwrap() > 0.0, "{json}");
            assert!(json["frame_mb_per_sec"].as_f64().unwrap() > 0.0, "{json}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_window_over_the_queue_is_an_error_not_a_panic() {
        let args = TransportArgs {
            messages: 10,
            single_messages: 1,
            payloads: vec![64],
            window: 1_000_000,
            warmup: 0.0,
            timeout: 10.0,
        };
        let error = run(&args).await.unwrap_err();
        assert!(error.contains("window"), "{error}");
    }

    #[test]
    fn bad_payloads_are_refused() {
        assert!(parse_payload("-1").is_err());
        assert!(parse_payload("99999999999").is_err());
        assert_eq!(parse_payload("4096"), Ok(4096));
    }
}
