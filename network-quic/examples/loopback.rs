//! Transport-only throughput on loopback: 64-byte and 4 KiB appends, one
//! message in flight versus pipelined.
//!
//! Run: `cargo run --release -p rafter-quic --example loopback [messages]`

use std::time::Duration;

use rafter_quic::bench::{loopback, LoopbackParams, Mode};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let messages: u64 = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(20_000);
    println!(
        "{:>8} {:>12} {:>10} {:>12} {:>10}",
        "payload", "mode", "messages", "msgs/s", "MB/s"
    );
    for payload_bytes in [64usize, 4096] {
        for (name, mode, count) in [
            ("single", Mode::Single, (messages / 10).max(1)),
            ("pipelined", Mode::Pipelined { window: 1024 }, messages),
        ] {
            let params = LoopbackParams {
                payload_bytes,
                messages: count,
                mode,
                timeout: Duration::from_secs(120),
            };
            match loopback(params).await {
                Ok(report) => println!(
                    "{:>8} {:>12} {:>10} {:>12.0} {:>10.1}",
                    payload_bytes,
                    name,
                    report.messages,
                    report.messages_per_second,
                    report.payload_mb_per_second
                ),
                Err(error) => println!("{payload_bytes:>8} {name:>12} failed: {error}"),
            }
        }
    }
}
