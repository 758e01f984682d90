//! The same seeded sequence of JSON requests against a single-member etcd
//! (Debian's `etcd-server`) and a 3-node rafter-kv cluster; the answers
//! must agree field by field, except `cluster_id`, `member_id` and
//! `raft_term`, and except where `kv-example/README.md` ("Differences from
//! etcd") documents an extension.
//!
//! Needs `etcd` on the PATH (or `RAFTER_ETCD=/path/to/etcd`); `.ci/run`
//! installs it. Without it the test fails under CI (`CI` set) and is
//! skipped with a message elsewhere.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{b64, free_tcp_port, Cluster, Http};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

/// Requests per run.
const REQUESTS: usize = 400;
/// Keys: few enough that every sort sees ties rarely past Go's insertion
/// sort (12 elements), so etcd's unstable sort is stable here too.
const KEYS: [&[u8]; 10] = [
    b"a", b"ab", b"abc", b"b", b"b/1", b"b/2", b"c", b"\x00", b"\xff", b"zz",
];

struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn etcd_binary() -> Option<String> {
    if let Ok(path) = std::env::var("RAFTER_ETCD") {
        return Some(path);
    }
    let found = Command::new("sh")
        .args(["-c", "command -v etcd"])
        .output()
        .ok()?;
    found
        .status
        .success()
        .then(|| String::from_utf8_lossy(&found.stdout).trim().to_owned())
}

async fn start_etcd(binary: &str, http: &Http) -> Etcd {
    let dir = tempfile::tempdir().unwrap();
    let client = free_tcp_port();
    let peer = free_tcp_port();
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new(binary)
        .arg("--data-dir")
        .arg(dir.path().join("etcd"))
        .args(["--name", "diff"])
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("diff={peer_url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd starts");
    let etcd = Etcd {
        child,
        url,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((StatusCode::OK, _)) = http
            .post_json(&etcd.url, "/v3/kv/range", &json!({"key": b64("probe")}))
            .await
        {
            return etcd;
        }
        assert!(Instant::now() < deadline, "etcd did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// splitmix64: a seeded sequence with no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// One request: route, body, and whether it is malformed (then only the
/// status and code are compared: parse messages come from different
/// JSON libraries).
struct Case {
    route: &'static str,
    body: String,
    malformed: bool,
}

struct Generator {
    rng: Rng,
    revision: i64,
}

impl Generator {
    fn key(&mut self) -> String {
        b64(self.rng.pick(&KEYS))
    }

    /// A `key`/`range_end` pair in one of etcd's forms.
    fn range(&mut self) -> Value {
        let key = self.rng.pick(&KEYS);
        let mut range = json!({"key": b64(key)});
        match self.rng.below(5) {
            0 => {}
            1 => range["range_end"] = json!("AA=="),
            2 => {
                let mut end = key.to_vec();
                match end.last_mut() {
                    Some(last) if *last < 0xff => *last += 1,
                    _ => end = vec![0],
                }
                range["range_end"] = json!(b64(end));
            }
            3 => range["range_end"] = json!(b64(self.rng.pick(&KEYS))),
            _ => {
                range["key"] = json!("AA==");
                range["range_end"] = json!("AA==");
            }
        }
        range
    }

    fn revision_field(&mut self) -> Value {
        match self.rng.below(6) {
            0 => json!((self.revision - self.rng.below(4) as i64)
                .max(1)
                .to_string()),
            1 => json!(self.revision + 1 + self.rng.below(3) as i64),
            2 => json!(-1),
            _ => json!(0),
        }
    }

    fn put(&mut self) -> Value {
        let mut put = json!({"key": self.key(), "value": b64(self.rng.below(1000).to_string())});
        if self.rng.chance(30) {
            put["prev_kv"] = json!(true);
        }
        if self.rng.chance(10) {
            put["ignore_value"] = json!(true);
            put["value"] = json!(null);
        }
        put
    }

    fn range_request(&mut self) -> Value {
        let mut range = self.range();
        if self.rng.chance(30) {
            range["limit"] = json!(self.rng.below(4));
        }
        if self.rng.chance(30) {
            range["revision"] = self.revision_field();
        }
        if self.rng.chance(15) {
            range["keys_only"] = json!(true);
        }
        if self.rng.chance(10) {
            range["count_only"] = json!(true);
        }
        if self.rng.chance(30) {
            range["sort_order"] = json!(self.rng.pick(&["NONE", "ASCEND", "DESCEND"]));
            range["sort_target"] =
                json!(self.rng.pick(&["KEY", "VERSION", "CREATE", "MOD", "VALUE"]));
        }
        if self.rng.chance(10) {
            range["min_mod_revision"] = json!(self.rng.below(self.revision.max(1) as u64 + 1));
        }
        if self.rng.chance(20) {
            range["serializable"] = json!(true);
        }
        range
    }

    fn delete(&mut self) -> Value {
        let mut delete = self.range();
        if self.rng.chance(40) {
            delete["prev_kv"] = json!(true);
        }
        delete
    }

    fn compare(&mut self) -> Value {
        let mut compare = self.range();
        if self.rng.chance(50) {
            compare.as_object_mut().unwrap().remove("range_end");
        }
        compare["result"] = json!(self.rng.pick(&["EQUAL", "GREATER", "LESS", "NOT_EQUAL"]));
        match self.rng.below(5) {
            0 => {
                compare["target"] = json!("VERSION");
                compare["version"] = json!(self.rng.below(3));
            }
            1 => {
                compare["target"] = json!("CREATE");
                compare["create_revision"] = json!(self.rng.below(self.revision as u64 + 2));
            }
            2 => {
                compare["target"] = json!("MOD");
                compare["mod_revision"] =
                    json!(self.rng.below(self.revision as u64 + 2).to_string());
            }
            3 => {
                compare["target"] = json!("VALUE");
                compare["value"] = json!(b64(self.rng.below(1000).to_string()));
            }
            _ => {
                compare["target"] = json!("LEASE");
                compare["lease"] = json!(self.rng.below(2));
            }
        }
        compare
    }

    fn op(&mut self, depth: u32) -> Value {
        match self.rng.below(if depth > 0 { 3 } else { 4 }) {
            0 => json!({"request_put": self.put()}),
            1 => {
                let mut range = self.range_request();
                range.as_object_mut().unwrap().remove("serializable");
                json!({"request_range": range})
            }
            2 => json!({"request_delete_range": self.delete()}),
            _ => json!({"request_txn": self.txn(depth + 1)}),
        }
    }

    fn txn(&mut self, depth: u32) -> Value {
        let compares: Vec<Value> = (0..self.rng.below(3)).map(|_| self.compare()).collect();
        let success: Vec<Value> = (0..self.rng.below(4)).map(|_| self.op(depth)).collect();
        let failure: Vec<Value> = (0..self.rng.below(3)).map(|_| self.op(depth)).collect();
        json!({"compare": compares, "success": success, "failure": failure})
    }

    fn malformed(&mut self) -> Case {
        let (route, body) = self.rng.pick(&[
            ("/v3/kv/put", "{\"key\": "),
            ("/v3/kv/put", "{\"key\":\"!!!\",\"value\":\"dg==\"}"),
            ("/v3/kv/put", "{\"value\":\"dg==\"}"),
            ("/v3/kv/put", "[1,2]"),
            ("/v3/kv/put", "{\"key\":\"YQ==\",\"lease\":\"7\"}"),
            ("/v3/kv/range", "{\"key\":\"YQ==\",\"limit\":\"many\"}"),
            ("/v3/kv/range", "{\"key\":\"YQ==\",\"sort_order\":\"UP\"}"),
            ("/v3/kv/range", "{}"),
            ("/v3/kv/deleterange", "{\"range_end\":\"eg==\"}"),
            ("/v3/kv/txn", "{\"success\":[{\"request_put\":{\"key\":\"YQ==\"}},{\"request_put\":{\"key\":\"YQ==\"}}]}"),
            ("/v3/kv/txn", "{\"compare\":[{\"target\":\"VERSION\",\"result\":\"EQUAL\"}]}"),
            ("/v3/kv/compaction", "{\"revision\":\"99999\"}"),
        ]);
        Case {
            route,
            body: body.to_owned(),
            malformed: true,
        }
    }

    fn next(&mut self) -> Case {
        let (route, body) = match self.rng.below(100) {
            0..=29 => ("/v3/kv/put", self.put()),
            30..=54 => ("/v3/kv/range", self.range_request()),
            55..=64 => ("/v3/kv/deleterange", self.delete()),
            65..=84 => ("/v3/kv/txn", self.txn(0)),
            85..=89 => {
                let revision = (self.revision - self.rng.below(5) as i64).max(1);
                (
                    "/v3/kv/compaction",
                    json!({"revision": revision.to_string()}),
                )
            }
            _ => return self.malformed(),
        };
        Case {
            route,
            body: body.to_string(),
            malformed: false,
        }
    }
}

/// The answer with what legitimately differs removed.
fn normalize(mut value: Value) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                if let Some(Value::Object(header)) = map.get_mut("header") {
                    header.remove("cluster_id");
                    header.remove("member_id");
                    header.remove("raft_term");
                }
                for item in map.values_mut() {
                    strip(item);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut value);
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rafter_kv_answers_as_etcd_does() {
    let Some(binary) = etcd_binary() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "etcd is not installed (CI installs etcd-server)"
        );
        eprintln!("SKIPPED: etcd not found (apt-get install etcd-server, or set RAFTER_ETCD)");
        return;
    };
    let http = Http::new();
    let etcd = start_etcd(&binary, &http).await;
    let cluster = Cluster::start(3, &[]).await;
    let seed: u64 = std::env::var("DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut generator = Generator {
        rng: Rng(seed),
        revision: 1,
    };
    let mut differences = Vec::new();
    for n in 0..REQUESTS {
        let case = generator.next();
        // Serializable reads go to the leader, which applied every write it
        // acknowledged; the rest go through the nodes in turn.
        let node = if case.body.contains("serializable") {
            cluster.wait_leader(Duration::from_secs(10)).await
        } else {
            n % 3
        };
        let ours = http
            .send(
                Method::POST,
                &format!("{}{}", cluster.url(node), case.route),
                &[],
                case.body.clone(),
            )
            .await
            .unwrap();
        let theirs = http
            .send(
                Method::POST,
                &format!("{}{}", etcd.url, case.route),
                &[],
                case.body.clone(),
            )
            .await
            .unwrap();
        let parse = |body: &[u8]| serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
        let (ours_json, theirs_json) = (normalize(parse(&ours.2)), normalize(parse(&theirs.2)));
        let same = if case.malformed {
            ours.0 == theirs.0 && ours_json["code"] == theirs_json["code"]
        } else {
            ours.0 == theirs.0 && ours_json == theirs_json
        };
        if !same {
            differences.push(format!(
                "#{n} POST {} {}\n  etcd:      {} {}\n  rafter-kv: {} {}",
                case.route, case.body, theirs.0, theirs_json, ours.0, ours_json
            ));
        }
        if let Some(revision) = theirs_json["header"]["revision"].as_str() {
            generator.revision = revision.parse().unwrap();
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {REQUESTS} answers differ (seed {seed}):\n{}",
        differences.len(),
        differences.join("\n")
    );
    cluster.wait_converged(Duration::from_secs(10)).await;
}
