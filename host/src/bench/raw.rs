//! The baseline: a plain redis-rs consumer loop doing no work.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::Value;

use super::BenchError;

/// Consumes `count` entries of `stream` with `XREADGROUP COUNT 100 BLOCK` and one `XACK` per
/// batch; returns the elapsed time.
///
/// # Errors
///
/// When Redis fails.
pub async fn consume(url: &str, stream: &str, count: usize) -> Result<Duration, BenchError> {
    let mut conn = connection(url).await?;
    create_group(&mut conn, stream, "raw").await?;
    let started = Instant::now();
    let mut consumed = 0;
    while consumed < count {
        let ids = read_batch(&mut conn, stream, 100).await?;
        if ids.is_empty() {
            continue;
        }
        consumed += ids.len();
        ack(
            &mut conn,
            stream,
            &ids.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        )
        .await?;
    }
    Ok(started.elapsed())
}

/// Like [`consume`], doing the work of a counting handler by hand: one `INCR` of one key per
/// entry, pipelined with the batch's `XACK`; returns the elapsed time.
///
/// # Errors
///
/// When Redis fails.
pub async fn consume_counting(
    url: &str,
    stream: &str,
    count: usize,
) -> Result<Duration, BenchError> {
    let mut conn = connection(url).await?;
    create_group(&mut conn, stream, "raw").await?;
    let counter = format!("{stream}:raw-count");
    let started = Instant::now();
    let mut consumed = 0;
    while consumed < count {
        let ids = read_batch(&mut conn, stream, 100).await?;
        if ids.is_empty() {
            continue;
        }
        consumed += ids.len();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for _ in &ids {
            pipe.cmd("INCR").arg(&counter).ignore();
        }
        pipe.cmd("XACK").arg(stream).arg("raw");
        for (id, _) in &ids {
            pipe.arg(id);
        }
        pipe.ignore();
        pipe.query_async::<()>(&mut conn).await?;
    }
    Ok(started.elapsed())
}

/// Reads what arrives on `stream` for `duration` and returns, per entry, the delay between the
/// producer's timestamp (in the event id) and the moment the loop got it.
///
/// # Errors
///
/// When Redis fails.
pub async fn latencies(
    url: &str,
    stream: &str,
    duration: Duration,
) -> Result<Vec<Duration>, BenchError> {
    let mut conn = connection(url).await?;
    create_group(&mut conn, stream, "raw").await?;
    let mut latencies = Vec::new();
    let until = Instant::now() + duration;
    while Instant::now() < until {
        let batch = read_batch(&mut conn, stream, 100).await?;
        let now = SystemTime::now();
        for (_, event_id) in &batch {
            if let Some(latency) = super::harness::latency_of(event_id, now) {
                latencies.push(latency);
            }
        }
        if !batch.is_empty() {
            ack(
                &mut conn,
                stream,
                &batch.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
            )
            .await?;
        }
    }
    Ok(latencies)
}

async fn connection(url: &str) -> Result<redis::aio::MultiplexedConnection, BenchError> {
    let client = redis::Client::open(url)?;
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

async fn create_group(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    group: &str,
) -> Result<(), BenchError> {
    let created: redis::RedisResult<Value> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(err) if err.code() != Some("BUSYGROUP") => Err(err.into()),
        _ => Ok(()),
    }
}

/// One `XREADGROUP ... BLOCK 100`: (entry id, the entry's `id` field).
async fn read_batch(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    count: usize,
) -> Result<Vec<(String, String)>, BenchError> {
    let reply: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("raw")
        .arg("raw-1")
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(100)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(conn)
        .await?;
    let mut out = Vec::new();
    let Value::Array(streams) = reply else {
        return Ok(out);
    };
    for stream in streams {
        let Value::Array(pair) = stream else { continue };
        let Some(Value::Array(entries)) = pair.get(1) else {
            continue;
        };
        for entry in entries {
            let Value::Array(parts) = entry else { continue };
            let (Some(Value::BulkString(id)), Some(Value::Array(fields))) =
                (parts.first(), parts.get(1))
            else {
                continue;
            };
            let event_id = fields
                .chunks(2)
                .find_map(|pair| match pair {
                    [Value::BulkString(name), Value::BulkString(value)] if name == b"id" => {
                        Some(String::from_utf8_lossy(value).into_owned())
                    }
                    _ => None,
                })
                .unwrap_or_default();
            out.push((String::from_utf8_lossy(id).into_owned(), event_id));
        }
    }
    Ok(out)
}

async fn ack(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    ids: &[String],
) -> Result<(), BenchError> {
    redis::cmd("XACK")
        .arg(stream)
        .arg("raw")
        .arg(ids)
        .query_async::<()>(conn)
        .await?;
    Ok(())
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_nanos())
        .unwrap_or(0)
}
