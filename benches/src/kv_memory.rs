//! `kv --against-etcd --memory`: each member's resident set after the
//! load, then after compacting its history as its users would (etcd: a
//! compaction to the current revision, then a defragmentation of every
//! member; rafter-kv: a compaction to the current revision, which also
//! frees the history in its store, and its own log purges behind
//! snapshots, which run without being asked).
//!
//! The resident set is `VmRSS` of `/proc/PID/status` (Linux only): what
//! the process holds in RAM, its page-cache share of mapped files
//! included, not the file cache it reads through.

use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;

use crate::http_connection::{HttpConnection, Prepared};
use crate::local_clusters::LocalCluster;
use crate::report::{latency_histogram, Report};

/// How long the members get after the compaction before their resident
/// set is read again: rafter-kv applies the compaction through its log on
/// every member, and both free memory lazily.
const SETTLE: Duration = Duration::from_secs(3);
/// Most bytes of a compaction or defragmentation answer kept.
const ANSWER_BYTES_MAX: usize = 64 << 10;

/// Reads every member's resident set, compacts the cluster, reads them
/// again: two rows, `after load` and `after compaction`.
pub async fn measure(cluster: &LocalCluster) -> Result<Vec<Report>, String> {
    let name = cluster.system.name();
    let before = resident_sets(cluster)?;
    compact(cluster).await?;
    tokio::time::sleep(SETTLE).await;
    let after = resident_sets(cluster)?;
    Ok(vec![
        row(format!("{name} memory after load"), &before, cluster),
        row(format!("{name} memory after compaction"), &after, cluster),
    ])
}

fn row(case: String, rss_mib: &[f64], cluster: &LocalCluster) -> Report {
    const NAMES: [&str; 3] = ["rss_mib_member_1", "rss_mib_member_2", "rss_mib_member_3"];
    let mut extra: Vec<(&'static str, f64)> =
        NAMES.iter().copied().zip(rss_mib.iter().copied()).collect();
    extra.push(("rss_mib_max", rss_mib.iter().copied().fold(0.0, f64::max)));
    Report {
        mode: "kv-memory",
        case: Some(case),
        nodes: cluster.endpoints.len(),
        clients: 0,
        ops: 0,
        elapsed: Duration::ZERO,
        latency: latency_histogram(),
        errors: Default::default(),
        extra,
    }
}

/// Each member's `VmRSS`, MiB.
fn resident_sets(cluster: &LocalCluster) -> Result<Vec<f64>, String> {
    cluster
        .pids()
        .into_iter()
        .map(|pid| {
            let path = format!("/proc/{pid}/status");
            let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
            vm_rss_kib(&status)
                .map(|kib| kib as f64 / 1024.0)
                .ok_or_else(|| format!("{path} has no VmRSS line"))
        })
        .collect()
}

/// The `VmRSS` of a `/proc/PID/status` text, KiB.
fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(value)
}

/// Compacts to the current revision (read from the first member), then,
/// for etcd, defragments every member.
async fn compact(cluster: &LocalCluster) -> Result<(), String> {
    let first = cluster.endpoints[0];
    let mut connection = HttpConnection::new(first);
    // Any range answers the current revision in its header.
    let probe = Prepared::post("/v3/kv/range", Bytes::from_static(b"{\"key\":\"AA==\"}"));
    let header = call(&mut connection, &probe, "range").await?;
    let revision = revision_of(&header)?;
    let body = format!("{{\"revision\":\"{revision}\",\"physical\":true}}");
    let compaction = Prepared::post("/v3/kv/compaction", Bytes::from(body));
    call(&mut connection, &compaction, "compaction").await?;
    if cluster.system == crate::local_clusters::System::Etcd {
        let defragment = Prepared::post("/v3/maintenance/defragment", Bytes::from_static(b"{}"));
        for addr in &cluster.endpoints {
            call(&mut HttpConnection::new(*addr), &defragment, "defragment").await?;
        }
    }
    Ok(())
}

async fn call(
    connection: &mut HttpConnection,
    request: &Prepared,
    what: &str,
) -> Result<serde_json::Value, String> {
    let (status, body) = connection
        .send_reading(request)
        .await
        .map_err(|failure| format!("{what}: {}", failure.kind()))?;
    let text = String::from_utf8_lossy(&body[..body.len().min(ANSWER_BYTES_MAX)]).into_owned();
    if status != StatusCode::OK {
        return Err(format!("{what}: {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("{what}: not JSON ({e}): {text}"))
}

/// `header.revision` of an answer: etcd's JSON gateway writes 64-bit
/// integers as strings, so both forms are read.
fn revision_of(answer: &serde_json::Value) -> Result<u64, String> {
    let revision = &answer["header"]["revision"];
    revision
        .as_u64()
        .or_else(|| revision.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| format!("no header.revision in {answer}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss_in_kib_and_nothing_else() {
        let status = "Name:\tetcd\nVmPeak:\t  999 kB\nVmRSS:\t   43210 kB\nThreads:\t9\n";
        assert_eq!(vm_rss_kib(status), Some(43_210));
        assert_eq!(vm_rss_kib("Name:\tx\n"), None);
        assert_eq!(vm_rss_kib("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn revisions_come_as_numbers_or_strings() {
        let etcd = serde_json::json!({"header": {"revision": "42"}});
        let kv = serde_json::json!({"header": {"revision": 42}});
        assert_eq!(revision_of(&etcd), Ok(42));
        assert_eq!(revision_of(&kv), Ok(42));
        assert!(revision_of(&serde_json::json!({})).is_err());
    }
}
