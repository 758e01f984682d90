//! The key-value subcommands, over the etcd routes (`/v3/kv/*`), so keys
//! and values of any bytes given as text work the same as etcd's.

use crate::api::prefix_end;
use hyper::Method;
use serde_json::{json, Value};

use super::client::{Endpoints, Failure, EXIT_COMPARE_FAILED};
use super::{b64, int_of, text_of, ClientOptions, Output};

/// `put`.
#[derive(Debug, clap::Args)]
pub struct PutArgs {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// Also print the value it replaced.
    #[arg(long)]
    pub prev_kv: bool,
    #[command(flatten)]
    pub options: ClientOptions,
}

/// `get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The key.
    pub key: String,
    /// Read at this revision (0: the current one).
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Read the answering node's state, maybe stale, without the leader.
    #[arg(long)]
    pub serializable: bool,
    #[command(flatten)]
    pub options: ClientOptions,
}

/// `del`.
#[derive(Debug, clap::Args)]
pub struct DelArgs {
    /// The key (with --prefix: the prefix).
    pub key: String,
    /// Delete every key that starts with KEY.
    #[arg(long)]
    pub prefix: bool,
    #[command(flatten)]
    pub options: ClientOptions,
}

/// `scan`.
#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// The prefix (none: every key).
    #[arg(default_value = "")]
    pub prefix: String,
    /// At most this many keys (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Print keys only.
    #[arg(long)]
    pub keys_only: bool,
    /// Read at this revision (0: the current one).
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Read the answering node's state, maybe stale, without the leader.
    #[arg(long)]
    pub serializable: bool,
    #[command(flatten)]
    pub options: ClientOptions,
}

/// `txn-cas`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("condition").required(true).args(["expect", "absent"])))]
pub struct TxnCasArgs {
    /// The key.
    pub key: String,
    /// The value to put.
    pub new: String,
    /// Put only if the key holds this value.
    #[arg(long, value_name = "OLD")]
    pub expect: Option<String>,
    /// Put only if the key is absent.
    #[arg(long)]
    pub absent: bool,
    #[command(flatten)]
    pub options: ClientOptions,
}

/// `compact`.
#[derive(Debug, clap::Args)]
pub struct CompactArgs {
    /// Revisions older than this one are forgotten.
    pub revision: i64,
    #[command(flatten)]
    pub options: ClientOptions,
}

/// A key-value as printed with `--json`.
fn kv_json(kv: &Value) -> Result<Value, Failure> {
    Ok(json!({
        "key": text_of(kv, "key")?,
        "value": text_of(kv, "value")?,
        "create_revision": int_of(kv, "create_revision")?,
        "mod_revision": int_of(kv, "mod_revision")?,
        "version": int_of(kv, "version")?,
    }))
}

fn revision_of(answer: &Value) -> Result<i64, Failure> {
    int_of(&answer["header"], "revision")
}

/// `put KEY VALUE`.
pub async fn put(endpoints: &Endpoints, out: &Output, args: PutArgs) -> Result<u8, Failure> {
    let body = json!({"key": b64(&args.key), "value": b64(&args.value), "prev_kv": args.prev_kv});
    let answer = endpoints
        .write(Method::POST, "/v3/kv/put", Some(&body))
        .await?
        .json()?;
    let revision = revision_of(&answer)?;
    let prev = match answer.get("prev_kv") {
        Some(kv) if args.prev_kv => Some(kv_json(kv)?),
        _ => None,
    };
    out.print(
        || match &prev {
            Some(prev) => format!("OK (revision {revision}; was {})", prev["value"]),
            None => format!("OK (revision {revision})"),
        },
        &json!({"revision": revision, "prev_kv": prev}),
    );
    Ok(0)
}

/// `get KEY`: the value, or exit 3.
pub async fn get(endpoints: &Endpoints, out: &Output, args: GetArgs) -> Result<u8, Failure> {
    let body =
        json!({"key": b64(&args.key), "revision": args.rev, "serializable": args.serializable});
    let answer = endpoints
        .request(Method::POST, "/v3/kv/range", Some(&body))
        .await?
        .json()?;
    let revision = revision_of(&answer)?;
    let Some(kv) = answer["kvs"].as_array().and_then(|kvs| kvs.first()) else {
        return Err(Failure::NotFound(format!(
            "key {:?} not found (revision {revision})",
            args.key
        )));
    };
    let mut kv = kv_json(kv)?;
    let value = kv["value"].as_str().unwrap_or_default().to_owned();
    kv["revision"] = json!(revision);
    out.print(|| value, &kv);
    Ok(0)
}

/// `del KEY [--prefix]`.
pub async fn del(endpoints: &Endpoints, out: &Output, args: DelArgs) -> Result<u8, Failure> {
    let mut body = json!({"key": b64(&args.key)});
    if args.prefix {
        body["range_end"] = json!(b64(prefix_end(args.key.as_bytes())));
    }
    let answer = endpoints
        .write(Method::POST, "/v3/kv/deleterange", Some(&body))
        .await?
        .json()?;
    let revision = revision_of(&answer)?;
    let deleted = int_of(&answer, "deleted")?;
    out.print(
        || format!("deleted {deleted} (revision {revision})"),
        &json!({"deleted": deleted, "revision": revision}),
    );
    Ok(0)
}

/// `scan [PREFIX]`.
pub async fn scan(endpoints: &Endpoints, out: &Output, args: ScanArgs) -> Result<u8, Failure> {
    let key: Vec<u8> = if args.prefix.is_empty() {
        vec![0]
    } else {
        args.prefix.as_bytes().to_vec()
    };
    let body = json!({
        "key": b64(&key),
        "range_end": b64(prefix_end(args.prefix.as_bytes())),
        "limit": args.limit,
        "keys_only": args.keys_only,
        "revision": args.rev,
        "serializable": args.serializable,
    });
    let answer = endpoints
        .request(Method::POST, "/v3/kv/range", Some(&body))
        .await?
        .json()?;
    let revision = revision_of(&answer)?;
    let kvs = answer["kvs"]
        .as_array()
        .map(|kvs| kvs.iter().map(kv_json).collect::<Result<Vec<_>, _>>())
        .transpose()?
        .unwrap_or_default();
    let more = answer["more"].as_bool().unwrap_or(false);
    let count = int_of(&answer, "count")?;
    out.print(
        || {
            let mut lines: Vec<String> = kvs
                .iter()
                .map(|kv| {
                    let key = kv["key"].as_str().unwrap_or_default();
                    if args.keys_only {
                        key.to_owned()
                    } else {
                        format!("{key}\t{}", kv["value"].as_str().unwrap_or_default())
                    }
                })
                .collect();
            if more {
                lines.push(format!("({} of {count} keys; raise --limit)", kvs.len()));
            }
            lines.join("\n")
        },
        &json!({"revision": revision, "count": count, "more": more, "kvs": kvs}),
    );
    Ok(0)
}

/// `txn-cas KEY NEW --expect OLD | --absent`.
pub async fn txn_cas(endpoints: &Endpoints, out: &Output, args: TxnCasArgs) -> Result<u8, Failure> {
    let key = b64(&args.key);
    let compare = match &args.expect {
        Some(old) => json!({"key": key, "target": "VALUE", "result": "EQUAL", "value": b64(old)}),
        None => json!({"key": key, "target": "VERSION", "result": "EQUAL", "version": 0}),
    };
    let body = json!({
        "compare": [compare],
        "success": [{"request_put": {"key": key, "value": b64(&args.new)}}],
        "failure": [{"request_range": {"key": key}}],
    });
    let answer = endpoints
        .write(Method::POST, "/v3/kv/txn", Some(&body))
        .await?
        .json()?;
    let revision = revision_of(&answer)?;
    if answer["succeeded"].as_bool().unwrap_or(false) {
        out.print(
            || format!("OK (revision {revision})"),
            &json!({"succeeded": true, "revision": revision}),
        );
        return Ok(0);
    }
    let current = answer["responses"][0]["response_range"]["kvs"]
        .as_array()
        .and_then(|kvs| kvs.first())
        .map(kv_json)
        .transpose()?;
    let human = match &current {
        Some(kv) => format!("compare failed: {:?} holds {}", args.key, kv["value"]),
        None => format!("compare failed: {:?} is absent", args.key),
    };
    if out.json {
        println!(
            "{}",
            json!({"succeeded": false, "revision": revision, "current": current})
        );
    } else {
        eprintln!("rafter-kv: {human}");
    }
    Ok(EXIT_COMPARE_FAILED)
}

/// `compact REVISION`.
pub async fn compact(
    endpoints: &Endpoints,
    out: &Output,
    args: CompactArgs,
) -> Result<u8, Failure> {
    let body = json!({"revision": args.revision});
    let answer = endpoints
        .write(Method::POST, "/v3/kv/compaction", Some(&body))
        .await?
        .json()?;
    let revision = revision_of(&answer)?;
    out.print(
        || {
            format!(
                "compacted: revisions before {} are gone (revision {revision})",
                args.revision
            )
        },
        &json!({"compacted": args.revision, "revision": revision}),
    );
    Ok(0)
}
