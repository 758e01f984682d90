//! The history of a run: every invocation and every completion of a
//! client operation, in one total order, written as JSON lines as it
//! happens (`history.jsonl` in the run directory) and kept in memory for
//! the checks.
//!
//! # Format (one JSON object per line)
//!
//! | field | on | meaning |
//! |---|---|---|
//! | `seq` | all | position in the history: 0, 1, 2, … with no gaps; the total order of events |
//! | `time_ns` | all | nanoseconds since the run started (monotonic clock; non-decreasing in `seq`) |
//! | `type` | all | `invoke`, `ok`, `fail` (it certainly did not take effect) or `unknown` (it may have, at any time after its invocation) |
//! | `client` | all | the client (one operation in flight per client, so a completion belongs to its client's last invocation) |
//! | `op` | all | `put`, `get` (a linearizable read) or `cas` (a txn: if the key's value equals `expected`, put `value`) |
//! | `key` | all | the etcd key, text |
//! | `value` | put, cas; get's `ok` | the value written (a put, a cas's new value), or read (`null`: the key was absent); values are `u64`s, written in etcd as decimal text |
//! | `expected` | cas | the value the swap requires |
//! | `succeeded` | cas's `ok` | whether the swap happened |
//! | `revision` | `ok` | the store revision in the answer's header (for a put or a swap that happened: the write's own revision) |
//! | `node` | completions | the host index that gave the last answer or error |
//! | `error` | `fail`, `unknown` | the last error |
//!
//! Invariant: an event's `seq` and `time_ns` are taken under one lock, so
//! `seq` order is real-time order: an invocation is recorded before its
//! first request leaves, and a completion after its last answer arrived,
//! so each operation's effect lies between its two events.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What kind of event a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The client is about to send the operation.
    Invoke,
    /// It took effect, with the answer recorded.
    Ok,
    /// It certainly did not take effect.
    Fail,
    /// It may have taken effect, at any time after its invocation.
    Unknown,
}

/// The operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Set the key to `value`.
    Put,
    /// Read the key (linearizable).
    Get,
    /// Set the key to `value` if it holds `expected`.
    Cas,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the total order.
    pub seq: u64,
    /// Nanoseconds since the run started.
    pub time_ns: u64,
    /// What the line says.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The client.
    pub client: u64,
    /// The operation.
    pub op: OpKind,
    /// The key.
    pub key: String,
    /// Written or read value (see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<u64>,
    /// A cas's expected value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<u64>,
    /// A completed cas: whether it swapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<bool>,
    /// The answer's revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// The host of the last answer or error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<usize>,
    /// The last error of a `fail` or `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Event {
    /// An event with the given identity and no answer fields (the
    /// recorder fills `seq` and `time_ns`).
    pub fn new(event_type: EventType, client: u64, op: OpKind, key: &str) -> Event {
        Event {
            seq: 0,
            time_ns: 0,
            event_type,
            client,
            op,
            key: key.to_owned(),
            value: None,
            expected: None,
            succeeded: None,
            revision: None,
            node: None,
            error: None,
        }
    }
}

struct Inner {
    events: Vec<Event>,
    out: BufWriter<File>,
    write_error: Option<String>,
}

/// Records events from every client (cheap to clone).
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    inner: Arc<Mutex<Inner>>,
}

impl Recorder {
    /// A recorder writing to `path` (created or truncated), with time
    /// counted from `start`.
    pub fn create(path: &Path, start: Instant) -> std::io::Result<Recorder> {
        let out = BufWriter::new(File::create(path)?);
        Ok(Recorder {
            start,
            inner: Arc::new(Mutex::new(Inner {
                events: Vec::new(),
                out,
                write_error: None,
            })),
        })
    }

    /// Stamps `event` with the next `seq` and the time now, writes and
    /// keeps it; returns the stamped event.
    pub fn record(&self, mut event: Event) -> Event {
        // Poisoned only if another client panicked while recording, which
        // already fails the run.
        let mut inner = self.inner.lock().expect("history lock poisoned");
        event.seq = inner.events.len() as u64;
        event.time_ns = self.start.elapsed().as_nanos() as u64;
        if inner.write_error.is_none() {
            let line = serde_json::to_string(&event).expect("an event always encodes");
            if let Err(e) = writeln!(inner.out, "{line}") {
                inner.write_error = Some(e.to_string());
            }
        }
        inner.events.push(event.clone());
        event
    }

    /// The nanoseconds since the start (the clock events are stamped with).
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Flushes the file and returns every event so far.
    pub fn finish(&self) -> std::io::Result<Vec<Event>> {
        let mut inner = self.inner.lock().expect("history lock poisoned");
        if let Some(e) = inner.write_error.take() {
            return Err(std::io::Error::other(e));
        }
        inner.out.flush()?;
        Ok(inner.events.clone())
    }
}

/// Why a history file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read.
    #[error("reading the history: {0}")]
    Io(#[from] std::io::Error),
    /// A line is not an event.
    #[error("line {line}: {detail}")]
    Line { line: usize, detail: String },
}

/// Reads a history written by [`Recorder`] (or by another tool in the
/// same format), checking that `seq` counts up from 0 without gaps.
pub fn read(path: &Path) -> Result<Vec<Event>, ReadError> {
    let mut events = Vec::new();
    for (n, line) in BufReader::new(File::open(path)?).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let event: Event = serde_json::from_str(&line).map_err(|e| ReadError::Line {
            line: n + 1,
            detail: e.to_string(),
        })?;
        if event.seq != events.len() as u64 {
            return Err(ReadError::Line {
                line: n + 1,
                detail: format!("seq {} where {} was due", event.seq, events.len()),
            });
        }
        events.push(event);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_history_reads_back_and_a_gap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let recorder = Recorder::create(&path, Instant::now()).unwrap();
        let mut put = Event::new(EventType::Invoke, 3, OpKind::Put, "chaos-1");
        put.value = Some(42);
        recorder.record(put.clone());
        put.event_type = EventType::Ok;
        put.revision = Some(7);
        recorder.record(put);
        let events = recorder.finish().unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1]);
        assert!(events[0].time_ns <= events[1].time_ns);
        assert_eq!(read(&path).unwrap(), events);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.lines().next().unwrap().contains(r#""type":"invoke""#),
            "{text}"
        );
        // Drop the first line: seq 1 where 0 was due.
        let rest: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, rest).unwrap();
        assert!(matches!(read(&path), Err(ReadError::Line { line: 1, .. })));
    }
}
