//! Reading figures out of a Prometheus text exposition (`GET /metrics`), as
//! rafter-kv and etcd both serve it: enough to sum a metric's samples, no
//! more.

/// The sum of every sample of metric `name` (all label sets), or `None` if
/// the text has none.
pub fn sum(text: &str, name: &str) -> Option<f64> {
    sum_labelled(text, name, "")
}

/// The sum of the samples of metric `name` whose label set contains
/// `label` (for example `route="/v3/kv/put"`; `""` matches every sample),
/// or `None` if there is none.
pub fn sum_labelled(text: &str, name: &str, label: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // The name must end here: `foo_total` is not `foo_total_created`.
        let value = if let Some(labelled) = rest.strip_prefix('{') {
            match labelled.rfind('}') {
                Some(end) if labelled[..end].contains(label) => &labelled[end + 1..],
                _ => continue,
            }
        } else if rest.starts_with(' ') && label.is_empty() {
            rest
        } else {
            continue;
        };
        // A sample may carry a timestamp after its value.
        let Some(value) = value.split_whitespace().next() else {
            continue;
        };
        if let Ok(value) = value.parse::<f64>() {
            *total.get_or_insert(0.0) += value;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP rafter_kv_forwarded Requests forwarded to the leader.
# TYPE rafter_kv_forwarded counter
rafter_kv_forwarded_total 12
rafter_kv_forwarded_total_created 1.7e9
rafter_kv_http_requests_total{route=\"put\",code=\"200\"} 5
rafter_kv_http_requests_total{route=\"range\",code=\"503\"} 2 1700000000
rafter_kv_fsync_seconds_sum 0.25
rafter_kv_fsync_seconds_count 100
";

    #[test]
    fn sums_every_label_set_and_only_the_exact_name() {
        assert_eq!(sum(TEXT, "rafter_kv_forwarded_total"), Some(12.0));
        assert_eq!(sum(TEXT, "rafter_kv_http_requests_total"), Some(7.0));
        assert_eq!(sum(TEXT, "rafter_kv_fsync_seconds_sum"), Some(0.25));
        assert_eq!(sum(TEXT, "rafter_kv_fsync_seconds_count"), Some(100.0));
        assert_eq!(sum(TEXT, "rafter_kv_fsync_seconds"), None);
        assert_eq!(sum(TEXT, "absent"), None);
    }

    #[test]
    fn a_label_picks_its_samples_only() {
        let name = "rafter_kv_http_requests_total";
        assert_eq!(sum_labelled(TEXT, name, "route=\"put\""), Some(5.0));
        assert_eq!(sum_labelled(TEXT, name, "code=\"503\""), Some(2.0));
        assert_eq!(sum_labelled(TEXT, name, "route=\"txn\""), None);
        // An unlabelled sample has no label to match.
        assert_eq!(
            sum_labelled(TEXT, "rafter_kv_forwarded_total", "route=\"put\""),
            None
        );
        assert_eq!(sum_labelled(TEXT, name, ""), Some(7.0));
    }
}
