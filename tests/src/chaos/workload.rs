//! The clients: each runs puts, linearizable gets and compare-and-swap
//! transactions on a small key set through random nodes, one operation
//! at a time, each under a deadline, and records every invocation and
//! completion in the history.
//!
//! A write carries the client's session (`x-rafter-client`,
//! `x-rafter-seq`, `shared/kv-api.md` section 4), so when an attempt gets
//! no answer the client retries the same write through another node
//! within the operation's deadline: the state machine applies it at most
//! once and a retry of an applied write answers the first outcome. A write
//! still without an answer at its deadline is recorded `unknown` (`fail`
//! only when no attempt can have reached a server: every one failed to
//! connect); a get without an answer is recorded `fail` (a read changes
//! nothing). Values are unique per write (`client << 40 | counter`), so a
//! read names the write it saw.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde_json::{json, Value};

use super::history::{Event, EventType, OpKind, Recorder};
use super::http::{b64, int, unb64, Http, HttpError};

/// What a read records when the value it got is not a number the harness
/// wrote (a corrupted or foreign value): no write has it, so the
/// linearizability check fails on it.
pub const UNREADABLE_VALUE: u64 = u64::MAX;

/// Pause between attempts of one operation.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The client side of a run.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Concurrent clients.
    pub clients: usize,
    /// Keys (`chaos-0` .. `chaos-{keys-1}`).
    pub keys: usize,
    /// Deadline of one operation, all attempts included.
    pub op_timeout: Duration,
    /// Deadline of one attempt (one HTTP request).
    pub attempt_timeout: Duration,
    /// Planted fault (test only): gets ask for a serializable (local,
    /// possibly stale) read but are recorded as linearizable ones, as a
    /// service that sold serializable reads as linearizable would answer.
    pub stale_reads: bool,
}

/// The etcd key of key number `k`.
pub fn key_name(k: usize) -> String {
    format!("chaos-{k}")
}

/// One client's state.
struct Client {
    id: u64,
    config: WorkloadConfig,
    urls: Arc<Vec<String>>,
    http: Http,
    recorder: Recorder,
    rng: ChaCha8Rng,
    /// Session sequence number of the last write.
    session_seq: u64,
    /// Writes made, for unique values.
    writes: u64,
    /// The last value this client saw or wrote per key (cas expectations).
    known: Vec<Option<u64>>,
}

/// Runs client `id` until `stop` is set (the operation in flight then
/// finishes, within its deadline).
pub async fn run_client(
    id: u64,
    seed: u64,
    config: WorkloadConfig,
    urls: Arc<Vec<String>>,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
) {
    assert!(id > 0 && id < (1 << 23), "client ids fit the value layout");
    let mut client = Client {
        id,
        known: vec![None; config.keys],
        config,
        urls,
        http: Http::new(),
        recorder,
        rng: ChaCha8Rng::seed_from_u64(seed ^ (id << 48)),
        session_seq: 0,
        writes: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        client.one_operation().await;
        let think = client.rng.next_u64() % 10;
        tokio::time::sleep(Duration::from_millis(think)).await;
    }
}

impl Client {
    async fn one_operation(&mut self) {
        let k = (self.rng.next_u64() % self.config.keys as u64) as usize;
        let roll = self.rng.next_u64() % 100;
        match (roll, self.known[k]) {
            (0..35, _) => self.put(k).await,
            (35..55, Some(expected)) => self.cas(k, expected).await,
            _ => self.get(k).await,
        }
    }

    fn next_value(&mut self) -> u64 {
        self.writes += 1;
        assert!(self.writes < (1 << 40), "values stay unique");
        self.id << 40 | self.writes
    }

    async fn put(&mut self, k: usize) {
        let value = self.next_value();
        let key = key_name(k);
        let mut event = Event::new(EventType::Invoke, self.id, OpKind::Put, &key);
        event.value = Some(value);
        let body = json!({"key": b64(&key), "value": b64(value.to_string())});
        match self.write(event, "/v3/kv/put", &body).await {
            Some(_) => self.known[k] = Some(value),
            None => self.known[k] = None,
        }
    }

    async fn cas(&mut self, k: usize, expected: u64) {
        let new = self.next_value();
        let key = key_name(k);
        let mut event = Event::new(EventType::Invoke, self.id, OpKind::Cas, &key);
        event.value = Some(new);
        event.expected = Some(expected);
        let body = json!({
            "compare": [{"key": b64(&key), "target": "VALUE", "result": "EQUAL",
                         "value": b64(expected.to_string())}],
            "success": [{"request_put": {"key": b64(&key), "value": b64(new.to_string())}}],
        });
        match self.write(event, "/v3/kv/txn", &body).await {
            Some(true) => self.known[k] = Some(new),
            // The value moved on; the next get will tell.
            Some(false) | None => self.known[k] = None,
        }
    }

    /// Runs one write with retries under its session; records its
    /// invocation and completion. `Some(succeeded)` if it completed ok.
    async fn write(&mut self, invoke: Event, path: &str, body: &Value) -> Option<bool> {
        self.session_seq += 1;
        let headers = [
            ("x-rafter-client", self.id.to_string()),
            ("x-rafter-seq", self.session_seq.to_string()),
        ];
        let mut done = invoke.clone();
        self.recorder.record(invoke);
        let deadline = Instant::now() + self.config.op_timeout;
        let mut maybe_applied = false;
        let (last_error, node) = loop {
            let node = self.pick_node();
            let url = format!("{}{path}", self.urls[node]);
            let timeout = self.attempt_timeout(deadline);
            match self.http.post(&url, &headers, body, timeout).await {
                Ok(answer) => {
                    done.event_type = EventType::Ok;
                    done.node = Some(node);
                    done.revision = int(&answer["header"]["revision"]);
                    if done.op == OpKind::Cas {
                        done.succeeded = Some(answer["succeeded"] == true);
                    }
                    let succeeded = done.succeeded.unwrap_or(true);
                    self.recorder.record(done);
                    return Some(succeeded);
                }
                Err(HttpError::Connect(e)) => {
                    if Instant::now() + RETRY_PAUSE >= deadline {
                        break (format!("cannot connect: {e}"), node);
                    }
                }
                Err(e) => {
                    maybe_applied = true;
                    if Instant::now() + RETRY_PAUSE >= deadline {
                        break (e.to_string(), node);
                    }
                }
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        };
        done.event_type = if maybe_applied {
            EventType::Unknown
        } else {
            EventType::Fail
        };
        done.node = Some(node);
        done.error = Some(last_error);
        self.recorder.record(done);
        None
    }

    async fn get(&mut self, k: usize) {
        let key = key_name(k);
        let invoke = Event::new(EventType::Invoke, self.id, OpKind::Get, &key);
        let mut done = invoke.clone();
        self.recorder.record(invoke);
        let body = if self.config.stale_reads {
            json!({"key": b64(&key), "serializable": true})
        } else {
            json!({"key": b64(&key)})
        };
        let deadline = Instant::now() + self.config.op_timeout;
        loop {
            let node = self.pick_node();
            let url = format!("{}/v3/kv/range", self.urls[node]);
            let timeout = self.attempt_timeout(deadline);
            let result = self.http.post(&url, &[], &body, timeout).await;
            done.node = Some(node);
            match result {
                Ok(answer) => {
                    let value = read_value(&answer);
                    done.event_type = EventType::Ok;
                    done.value = value;
                    done.revision = int(&answer["header"]["revision"]);
                    self.recorder.record(done);
                    self.known[k] = value;
                    return;
                }
                Err(e) if Instant::now() + RETRY_PAUSE >= deadline => {
                    done.event_type = EventType::Fail;
                    done.error = Some(e.to_string());
                    self.recorder.record(done);
                    return;
                }
                Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
            }
        }
    }

    fn pick_node(&mut self) -> usize {
        (self.rng.next_u64() % self.urls.len() as u64) as usize
    }

    fn attempt_timeout(&self, deadline: Instant) -> Duration {
        let left = deadline.saturating_duration_since(Instant::now());
        left.min(self.config.attempt_timeout)
            .max(Duration::from_millis(50))
    }
}

/// The value of a one-key range answer: `None` if absent,
/// [`UNREADABLE_VALUE`] if it is not a number the harness wrote.
fn read_value(answer: &Value) -> Option<u64> {
    let kv = answer["kvs"].as_array()?.first()?;
    let text = kv["value"].as_str().unwrap_or("");
    let value = unb64(text)
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.parse().ok());
    Some(value.unwrap_or(UNREADABLE_VALUE))
}
