//! Redis replies turned into the broker's types, and the small conversions around them.

use std::time::Duration;

use redis::Value;

use crate::broker::{BrokerError, EntryId, GroupInfo, PendingEntry, StreamEntry};

pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

pub(super) fn unexpected(command: &str, value: &Value) -> BrokerError {
    BrokerError::Protocol(format!("{command} replied {value:?}"))
}

pub(super) fn is_no_such_key(err: &redis::RedisError) -> bool {
    err.to_string().to_ascii_lowercase().contains("no such key")
}

pub(super) fn no_group(err: BrokerError, stream: &str, group: &str) -> BrokerError {
    match err {
        BrokerError::Redis(redis_err) if redis_err.code() == Some("NOGROUP") => {
            BrokerError::NoGroup {
                stream: stream.to_string(),
                group: group.to_string(),
            }
        }
        other => other,
    }
}

/// Escapes the glob characters of a `SCAN MATCH` pattern.
pub(super) fn escape_glob(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

pub(super) fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        Value::Int(number) => Some(number.to_string()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

pub(super) fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Int(number) => u64::try_from(*number).ok(),
        other => as_text(other)?.parse().ok(),
    }
}

pub(super) fn parse_id(value: &Value) -> Result<EntryId, BrokerError> {
    as_text(value)
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| unexpected("stream id", value))
}

pub(super) fn parse_scan(value: &Value) -> Result<(Vec<String>, u64), BrokerError> {
    let Value::Array(parts) = value else {
        return Err(unexpected("SCAN", value));
    };
    let (Some(cursor), Some(Value::Array(keys))) = (parts.first(), parts.get(1)) else {
        return Err(unexpected("SCAN", value));
    };
    let cursor = as_u64(cursor).ok_or_else(|| unexpected("SCAN cursor", cursor))?;
    Ok((keys.iter().filter_map(as_text).collect(), cursor))
}

/// Parses `[[id, [field, value, ...]], ...]`, moving the values out of the reply; entries
/// deleted since delivery (`[id, nil]`) are skipped.
pub(super) fn parse_entries(value: Value) -> Result<Vec<StreamEntry>, BrokerError> {
    let items = match value {
        Value::Array(items) => items,
        Value::Nil => return Ok(Vec::new()),
        other => return Err(unexpected("stream entries", &other)),
    };
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(parts) = item else {
            return Err(unexpected("stream entry", &item));
        };
        let mut parts = parts.into_iter();
        let Some(id) = parts.next() else {
            return Err(BrokerError::Protocol("empty stream entry".into()));
        };
        let id = parse_id(&id)?;
        let fields = match parts.next() {
            Some(Value::Array(flat)) => {
                let mut fields = Vec::with_capacity(flat.len() / 2);
                let mut flat = flat.into_iter();
                while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
                    if let Some(name) = into_text(name) {
                        fields.push((name, into_bytes(value)));
                    }
                }
                fields
            }
            Some(Value::Map(pairs)) => pairs
                .into_iter()
                .filter_map(|(name, value)| Some((into_text(name)?, into_bytes(value))))
                .collect(),
            _ => continue,
        };
        entries.push(StreamEntry { id, fields });
    }
    Ok(entries)
}

pub(super) fn into_text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        other => as_text(&other),
    }
}

pub(super) fn into_bytes(value: Value) -> Vec<u8> {
    match value {
        Value::BulkString(bytes) => bytes,
        other => as_text(&other).unwrap_or_default().into_bytes(),
    }
}

/// Parses an `XREAD` reply over several streams into (stream, entry) pairs.
pub(super) fn parse_multi_read(value: Value) -> Result<Vec<(String, StreamEntry)>, BrokerError> {
    let streams: Vec<(Value, Value)> = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|pair| match pair {
                Value::Array(pair) => {
                    let mut pair = pair.into_iter();
                    match (pair.next(), pair.next()) {
                        (Some(name), Some(entries)) => Ok((name, entries)),
                        _ => Err(BrokerError::Protocol("XREAD reply too short".into())),
                    }
                }
                other => Err(unexpected("XREAD", &other)),
            })
            .collect::<Result<_, _>>()?,
        Value::Map(streams) => streams,
        other => return Err(unexpected("XREAD", &other)),
    };
    let mut entries = Vec::new();
    for (name, stream_entries) in streams {
        let Some(name) = into_text(name) else {
            return Err(BrokerError::Protocol(
                "XREAD stream name is not text".into(),
            ));
        };
        for entry in parse_entries(stream_entries)? {
            entries.push((name.clone(), entry));
        }
    }
    Ok(entries)
}

/// Parses an `XREADGROUP` reply for one stream.
pub(super) fn parse_read_reply(value: Value) -> Result<Vec<StreamEntry>, BrokerError> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => match streams.into_iter().next() {
            None => Ok(Vec::new()),
            Some(Value::Array(pair)) => match pair.into_iter().nth(1) {
                Some(entries) => parse_entries(entries),
                None => Err(BrokerError::Protocol(
                    "XREADGROUP reply without entries".into(),
                )),
            },
            Some(other) => Err(unexpected("XREADGROUP", &other)),
        },
        Value::Map(streams) => match streams.into_iter().next() {
            None => Ok(Vec::new()),
            Some((_, entries)) => parse_entries(entries),
        },
        other => Err(unexpected("XREADGROUP", &other)),
    }
}

pub(super) fn parse_pending(value: &Value) -> Result<Vec<PendingEntry>, BrokerError> {
    let Value::Array(items) = value else {
        return Err(unexpected("XPENDING", value));
    };
    items
        .iter()
        .map(|item| {
            let Value::Array(parts) = item else {
                return Err(unexpected("XPENDING entry", item));
            };
            match parts.as_slice() {
                [id, consumer, idle, deliveries] => Ok(PendingEntry {
                    id: parse_id(id)?,
                    consumer: as_text(consumer).unwrap_or_default(),
                    idle: Duration::from_millis(as_u64(idle).unwrap_or(0)),
                    deliveries: as_u64(deliveries)
                        .and_then(|count| u32::try_from(count).ok())
                        .unwrap_or(u32::MAX),
                }),
                _ => Err(unexpected("XPENDING entry", item)),
            }
        })
        .collect()
}

pub(super) fn parse_group_info(value: &Value) -> Result<GroupInfo, BrokerError> {
    let pairs: Vec<(String, &Value)> = match value {
        Value::Array(flat) => flat
            .chunks(2)
            .filter_map(|pair| match pair {
                [key, value] => Some((as_text(key)?, value)),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(key, value)| Some((as_text(key)?, value)))
            .collect(),
        other => return Err(unexpected("XINFO GROUPS entry", other)),
    };
    let field = |name: &str| pairs.iter().find(|(key, _)| key == name).map(|(_, v)| *v);
    Ok(GroupInfo {
        name: field("name").and_then(as_text).unwrap_or_default(),
        consumers: field("consumers").and_then(as_u64).unwrap_or(0),
        pending: field("pending").and_then(as_u64).unwrap_or(0),
        last_delivered: field("last-delivered-id")
            .map(parse_id)
            .transpose()?
            .unwrap_or_default(),
        lag: field("lag").and_then(as_u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_glob_characters() {
        assert_eq!(escape_glob("evhost:kv:{a}*?"), "evhost:kv:{a}\\*\\?");
    }

    #[test]
    fn parses_read_replies() {
        let reply = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"events:A".to_vec()),
            Value::Array(vec![
                Value::Array(vec![
                    Value::BulkString(b"1-0".to_vec()),
                    Value::Array(vec![
                        Value::BulkString(b"payload".to_vec()),
                        Value::BulkString(b"{}".to_vec()),
                    ]),
                ]),
                Value::Array(vec![Value::BulkString(b"2-0".to_vec()), Value::Nil]),
            ]),
        ])]);
        let entries = parse_read_reply(reply).expect("parses");
        assert_eq!(entries.len(), 1, "deleted entries are skipped");
        assert_eq!(entries[0].id, EntryId::new(1, 0));
        assert_eq!(
            entries[0].fields,
            vec![("payload".to_string(), b"{}".to_vec())]
        );
        assert!(parse_read_reply(Value::Nil).expect("nil").is_empty());
    }

    #[test]
    fn parses_multi_stream_read_replies() {
        let entry = |id: &[u8]| {
            Value::Array(vec![
                Value::BulkString(id.to_vec()),
                Value::Array(vec![
                    Value::BulkString(b"data".to_vec()),
                    Value::BulkString(b"{}".to_vec()),
                ]),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::BulkString(b"events:A".to_vec()),
                Value::Array(vec![entry(b"1-0")]),
            ]),
            Value::Array(vec![
                Value::BulkString(b"events:B".to_vec()),
                Value::Array(vec![entry(b"2-0"), entry(b"3-0")]),
            ]),
        ]);
        let entries = parse_multi_read(reply).expect("parses");
        let got: Vec<(String, EntryId)> = entries
            .into_iter()
            .map(|(stream, entry)| (stream, entry.id))
            .collect();
        assert_eq!(
            got,
            vec![
                ("events:A".to_string(), EntryId::new(1, 0)),
                ("events:B".to_string(), EntryId::new(2, 0)),
                ("events:B".to_string(), EntryId::new(3, 0)),
            ]
        );
        assert!(parse_multi_read(Value::Nil).expect("nil").is_empty());
    }
}
