//! Range reads: etcd's `range_end` rules, reads at the current revision (from
//! the live index) and at older ones (from the history), filters, sorting,
//! limit, `count` and `more`. Generic over the table handles so the writer
//! (inside its transaction, seeing its own writes) and the reader share one
//! implementation.

use std::cmp::Ordering;
use std::ops::Bound;

use super::error::{KvError, StoreError};
use super::request::{KeyValue, RangeRequest, RangeResponse, SortOrder, SortTarget};
use super::source::{live_value, Source};
use super::tables::{key_successor, HistoryRecord, LiveEntry};

/// A key range in `BTreeMap::range`'s terms.
pub(crate) type Bounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The keys a `key` / `range_end` pair names (etcd's `mkGteRange` rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeySpan<'a> {
    /// `range_end` empty: the one key.
    Single(&'a [u8]),
    /// `range_end` is `[0]`: every key >= the key.
    From(&'a [u8]),
    /// `[start, end)`. Invariant: start < end.
    Between(&'a [u8], &'a [u8]),
    /// `key >= range_end`: no key.
    Empty,
}

impl<'a> KeySpan<'a> {
    pub(crate) fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        match range_end {
            [] => KeySpan::Single(key),
            [0] => KeySpan::From(key),
            end if key < end => KeySpan::Between(key, end),
            _ => KeySpan::Empty,
        }
    }

    /// The span in `BTreeMap::range`'s terms; `None` when it is empty.
    pub(crate) fn bounds(self) -> Option<Bounds<'a>> {
        match self {
            KeySpan::Single(key) => Some((Bound::Included(key), Bound::Included(key))),
            KeySpan::From(start) => Some((Bound::Included(start), Bound::Unbounded)),
            KeySpan::Between(start, end) => Some((Bound::Included(start), Bound::Excluded(end))),
            KeySpan::Empty => None,
        }
    }

    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        match *self {
            KeySpan::Single(k) => key == k,
            KeySpan::From(start) => key >= start,
            KeySpan::Between(start, end) => key >= start && key < end,
            KeySpan::Empty => false,
        }
    }
}

/// A key found by a read, before sorting and cutting.
struct Candidate {
    key: Vec<u8>,
    entry: LiveEntry,
    /// Known already (historical reads decode it anyway) or fetched late.
    value: Option<Vec<u8>>,
}

/// The keys in `span` alive at `revision`, in key order, from the history:
/// two seeks per key that has history in the span.
fn entries_at(
    history: &impl Source,
    span: KeySpan<'_>,
    revision: i64,
) -> Result<Vec<Candidate>, StoreError> {
    let mut out = Vec::new();
    let mut push = |key: &[u8], found: Option<(i64, HistoryRecord)>| {
        if let Some((
            mod_revision,
            HistoryRecord::Put {
                create_revision,
                version,
                value,
            },
        )) = found
        {
            out.push(Candidate {
                key: key.to_vec(),
                entry: LiveEntry {
                    create_revision,
                    mod_revision,
                    version,
                },
                value: Some(value),
            });
        }
    };
    let mut from = match span {
        KeySpan::Empty => return Ok(out),
        KeySpan::Single(key) => {
            push(key, history.record_at(key, revision)?);
            return Ok(out);
        }
        KeySpan::From(start) | KeySpan::Between(start, _) => start.to_vec(),
    };
    while let Some(key) = history.next_history_key(&from)? {
        if !span.contains(&key) {
            break;
        }
        push(&key, history.record_at(&key, revision)?);
        from = key_successor(&key);
    }
    Ok(out)
}

/// Answers `request` over a store whose current revision is `current` and
/// compact revision `compact`; `source` must hold the state at `current`.
pub(crate) fn range(
    source: &impl Source,
    current: i64,
    compact: i64,
    request: &RangeRequest,
) -> Result<Result<RangeResponse, KvError>, StoreError> {
    if request.key.is_empty() {
        return Ok(Err(KvError::EmptyKey));
    }
    if request.revision > current {
        return Ok(Err(KvError::FutureRevision));
    }
    let revision = if request.revision <= 0 {
        current
    } else {
        request.revision
    };
    if revision < compact {
        return Ok(Err(KvError::Compacted));
    }
    let span = KeySpan::new(&request.key, &request.range_end);
    let mut candidates = if revision == current {
        source
            .live_range(span)?
            .into_iter()
            .map(|(key, entry)| Candidate {
                key,
                entry,
                value: None,
            })
            .collect()
    } else {
        entries_at(source, span, revision)?
    };
    let count = candidates.len() as i64;
    if request.count_only {
        return Ok(Ok(RangeResponse {
            revision: current,
            kvs: Vec::new(),
            more: false,
            count,
        }));
    }
    // etcd prunes after counting: `count` ignores these filters.
    candidates.retain(|c| {
        let e = &c.entry;
        !(request.max_mod_revision != 0 && e.mod_revision > request.max_mod_revision
            || request.min_mod_revision != 0 && e.mod_revision < request.min_mod_revision
            || request.max_create_revision != 0 && e.create_revision > request.max_create_revision
            || request.min_create_revision != 0 && e.create_revision < request.min_create_revision)
    });
    let order = match (request.sort_order, request.sort_target) {
        (SortOrder::None, SortTarget::Key) => SortOrder::None,
        (SortOrder::None, _) => SortOrder::Ascend,
        (order, _) => order,
    };
    if order != SortOrder::None {
        if request.sort_target == SortTarget::Value {
            for c in candidates.iter_mut().filter(|c| c.value.is_none()) {
                c.value = Some(live_value(source, &c.key, &c.entry)?);
            }
        }
        let target = request.sort_target;
        let compare = |a: &Candidate, b: &Candidate| -> Ordering {
            match target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.entry.version.cmp(&b.entry.version),
                SortTarget::Create => a.entry.create_revision.cmp(&b.entry.create_revision),
                SortTarget::Mod => a.entry.mod_revision.cmp(&b.entry.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            }
        };
        // Stable: ties keep key order, in both directions.
        match order {
            SortOrder::Descend => candidates.sort_by(|a, b| compare(b, a)),
            _ => candidates.sort_by(compare),
        }
    }
    let mut more = false;
    if request.limit > 0 && candidates.len() as i64 > request.limit {
        candidates.truncate(request.limit as usize);
        more = true;
    }
    let mut kvs = Vec::with_capacity(candidates.len());
    for c in candidates {
        let value = if request.keys_only {
            Vec::new()
        } else {
            match c.value {
                Some(v) => v,
                None => live_value(source, &c.key, &c.entry)?,
            }
        };
        kvs.push(c.entry.key_value(c.key, value));
    }
    Ok(Ok(RangeResponse {
        revision: current,
        kvs,
        more,
        count,
    }))
}

/// The kvs (with values) of the live keys in `span`, in key order.
pub(crate) fn live_kvs(
    source: &impl Source,
    span: KeySpan<'_>,
) -> Result<Vec<KeyValue>, StoreError> {
    let mut out = Vec::new();
    for (key, entry) in source.live_range(span)? {
        let value = live_value(source, &key, &entry)?;
        out.push(entry.key_value(key, value));
    }
    Ok(out)
}
