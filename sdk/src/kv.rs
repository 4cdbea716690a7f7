//! The plugin's key-value store (`wasi:keyvalue`, default bucket).
//!
//! Keys are private to the plugin: the host prefixes them with the plugin's name. The bucket is
//! opened on first use and kept for the life of the instance.
//!
//! Writes are buffered and committed with the event's acknowledgement, all or nothing; reads see
//! them at once, and so do the later calls of the same batch. No update is lost: when a call
//! writes, the commit checks that every key it read ([`get`], [`exists`], [`get_many`]) still
//! holds what it read; if another consumer changed one meanwhile, the call's effects are dropped
//! and the event is handled again with fresh reads (a conflict, counted in
//! `evhost_kv_conflicts_total`, never a reason to dead-letter). So each event is serializable
//! with respect to the keys it read and wrote, and the `total` below stays exact with any number
//! of consumers. [`increment`] is cheaper for a counter: no read to check, it never conflicts.
//! Calls that only read, or only write, are not checked; `list-keys` (raw [`bindings`] only) is
//! not checked either.
//!
//! [`bindings`]: crate::bindings
//!
//! ```
//! use evhost_sdk::prelude::*;
//!
//! /// Adds a bid to its auction's total: a get then a set, checked at commit.
//! fn add_bid(auction_id: &str, amount: u64) -> Result<u64> {
//!     let key = format!("total:{auction_id}");
//!     let total = kv::get_json::<u64>(&key)?.unwrap_or(0) + amount;
//!     kv::set_json(&key, &total)?;
//!     Ok(total)
//! }
//!
//! /// Counts a bid: one atomic increment, never a conflict.
//! fn count_bid(auction_id: &str) -> Result<u64> {
//!     kv::increment(format!("bids:{auction_id}"), 1)
//! }
//! ```

use std::cell::OnceCell;
use std::collections::HashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::wasi::keyvalue::store::{self, Bucket};
use crate::bindings::wasi::keyvalue::{atomics, batch};
use crate::error::{Error, Result};
use crate::event::short_type_name;

thread_local! {
    /// The default bucket, opened by the first call that needs it.
    static BUCKET: OnceCell<Bucket> = const { OnceCell::new() };
}

/// Runs `f` with the default bucket, opening it first if needed. A failed open is not cached.
fn with_bucket<T>(f: impl FnOnce(&Bucket) -> Result<T>) -> Result<T> {
    BUCKET.with(|cell| {
        let bucket = match cell.get() {
            Some(bucket) => bucket,
            None => {
                let opened = store::open("")
                    .map_err(|err| Error::retry(format!("opening the key-value bucket: {err}")))?;
                cell.get_or_init(|| opened)
            }
        };
        f(bucket)
    })
}

/// Maps a host error to a retry error naming the operation and key.
fn host_error(operation: &str, key: &str, err: store::Error) -> Error {
    Error::retry(format!("key-value {operation} {key:?}: {err}"))
}

/// Maps a host error of a batch operation to a retry error naming the operation, the first key
/// and how many there were.
fn batch_error(operation: &str, first: &str, count: usize, err: store::Error) -> Error {
    if count == 1 {
        return host_error(operation, first, err);
    }
    Error::retry(format!(
        "key-value {operation} {first:?} and {} more keys: {err}",
        count - 1
    ))
}

/// The value stored under `key`, or `None`.
///
/// # Errors
///
/// A *retry* error if the store fails.
pub fn get(key: impl AsRef<str>) -> Result<Option<Vec<u8>>> {
    let key = key.as_ref();
    with_bucket(|bucket| bucket.get(key).map_err(|err| host_error("get", key, err)))
}

/// Stores `value` under `key`, replacing any previous value.
///
/// # Errors
///
/// A *retry* error if the store fails.
pub fn set(key: impl AsRef<str>, value: impl AsRef<[u8]>) -> Result<()> {
    let key = key.as_ref();
    with_bucket(|bucket| {
        bucket
            .set(key, value.as_ref())
            .map_err(|err| host_error("set", key, err))
    })
}

/// Removes `key`; does nothing if it is absent.
///
/// # Errors
///
/// A *retry* error if the store fails.
pub fn delete(key: impl AsRef<str>) -> Result<()> {
    let key = key.as_ref();
    with_bucket(|bucket| {
        bucket
            .delete(key)
            .map_err(|err| host_error("delete", key, err))
    })
}

/// Whether a value is stored under `key`.
///
/// # Errors
///
/// A *retry* error if the store fails.
pub fn exists(key: impl AsRef<str>) -> Result<bool> {
    let key = key.as_ref();
    with_bucket(|bucket| {
        bucket
            .exists(key)
            .map_err(|err| host_error("exists", key, err))
    })
}

/// The value stored under `key` parsed as JSON into `T`, or `None`.
///
/// # Errors
///
/// A *retry* error if the store fails; a *reject* error if the stored value does not parse as
/// `T` (retrying would read the same value).
pub fn get_json<T: DeserializeOwned>(key: impl AsRef<str>) -> Result<Option<T>> {
    let key = key.as_ref();
    match get(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|err| {
            Error::reject(format!(
                "key-value {key:?} is not a valid {}: {err}",
                short_type_name(std::any::type_name::<T>())
            ))
        }),
    }
}

/// Stores `value` as JSON under `key`.
///
/// # Errors
///
/// A *reject* error if `value` cannot be serialized; a *retry* error if the store fails.
pub fn set_json<T: Serialize + ?Sized>(key: impl AsRef<str>, value: &T) -> Result<()> {
    let key = key.as_ref();
    let bytes = serde_json::to_vec(value).map_err(|err| {
        Error::reject(format!(
            "cannot serialize {} as JSON for key-value {key:?}: {err}",
            short_type_name(std::any::type_name::<T>())
        ))
    })?;
    set(key, bytes)
}

/// Adds `delta` to the counter under `key` and returns the new value.
///
/// Cheaper than [`get`] then [`set`]: the host applies it at commit with `INCRBY`, so it never
/// conflicts and the increments of all consumers add up exactly. The key must hold a counter:
/// absent (0) or a decimal integer (no `+`, no leading zeros, no spaces) of at most 2^53 − 1
/// (9007199254740991, JavaScript's largest safe integer) in absolute value, and the result must
/// stay between 0 and 2^53 − 1. It is stored as decimal text: [`get`] then returns `b"42"`.
///
/// The value returned is the stored value when read plus this batch's own increments; others'
/// increments committed meanwhile are added at commit, so the stored value may end up higher.
/// Log or show it, but do not use it as an identity: take [`get`] and [`set`] (checked at
/// commit) for an exact sequence number.
///
/// # Errors
///
/// A *retry* error if the store fails, `key` holds no counter or the result is out of range
/// (the host does not tell these apart).
pub fn increment(key: impl AsRef<str>, delta: u64) -> Result<u64> {
    let key = key.as_ref();
    with_bucket(|bucket| {
        atomics::increment(bucket, key, delta).map_err(|err| host_error("increment", key, err))
    })
}

/// The values stored under `keys`, in the order of `keys`, `None` for an absent key.
///
/// One host call and one round trip to the store for all of them; otherwise like [`get`] for
/// each key (sees the batch's uncommitted writes, checked at commit).
///
/// ```
/// # use evhost_sdk::prelude::*;
/// fn emails(bidder_ids: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
///     kv::get_many(bidder_ids.iter().map(|id| format!("email:{id}")))
/// }
/// ```
///
/// # Errors
///
/// A *retry* error if the store fails.
pub fn get_many<K: AsRef<str>>(keys: impl IntoIterator<Item = K>) -> Result<Vec<Option<Vec<u8>>>> {
    let keys: Vec<String> = keys
        .into_iter()
        .map(|key| key.as_ref().to_owned())
        .collect();
    let Some(first) = keys.first() else {
        return Ok(Vec::new());
    };
    let entries = with_bucket(|bucket| {
        batch::get_many(bucket, &keys)
            .map_err(|err| batch_error("get-many", first, keys.len(), err))
    })?;
    Ok(in_key_order(&keys, entries))
}

/// The values of `entries` (what `get-many` answered) in the order of `keys`. evhost answers one
/// entry per key, in order; the WIT does not promise that, and some hosts leave absent keys out,
/// so anything else is matched by the keys the entries carry.
fn in_key_order(keys: &[String], entries: Vec<Option<(String, Vec<u8>)>>) -> Vec<Option<Vec<u8>>> {
    let in_order = entries.len() == keys.len()
        && entries
            .iter()
            .zip(keys)
            .all(|(entry, key)| entry.as_ref().is_none_or(|(got, _)| got == key));
    if in_order {
        return entries
            .into_iter()
            .map(|entry| entry.map(|(_, value)| value))
            .collect();
    }
    let found: HashMap<String, Vec<u8>> = entries.into_iter().flatten().collect();
    keys.iter().map(|key| found.get(key).cloned()).collect()
}

/// Stores every `(key, value)` pair, replacing previous values: [`set`] for each, in one host
/// call.
///
/// # Errors
///
/// A *retry* error if the store fails; pairs before the failing one may be buffered, so return
/// the error (the host then discards all the call's writes).
pub fn set_many<K: AsRef<str>, V: AsRef<[u8]>>(
    pairs: impl IntoIterator<Item = (K, V)>,
) -> Result<()> {
    let pairs: Vec<(String, Vec<u8>)> = pairs
        .into_iter()
        .map(|(key, value)| (key.as_ref().to_owned(), value.as_ref().to_vec()))
        .collect();
    let Some((first, _)) = pairs.first() else {
        return Ok(());
    };
    with_bucket(|bucket| {
        batch::set_many(bucket, &pairs)
            .map_err(|err| batch_error("set-many", first, pairs.len(), err))
    })
}

/// Removes every key of `keys`, skipping absent ones: [`delete`] for each, in one host call.
///
/// # Errors
///
/// A *retry* error if the store fails; keys before the failing one may be buffered, so return
/// the error (the host then discards all the call's writes).
pub fn delete_many<K: AsRef<str>>(keys: impl IntoIterator<Item = K>) -> Result<()> {
    let keys: Vec<String> = keys
        .into_iter()
        .map(|key| key.as_ref().to_owned())
        .collect();
    let Some(first) = keys.first() else {
        return Ok(());
    };
    with_bucket(|bucket| {
        batch::delete_many(bucket, &keys)
            .map_err(|err| batch_error("delete-many", first, keys.len(), err))
    })
}

/// Sets `key` to `new` if it holds `expected` (`None`: absent) and returns whether it did; a
/// `false` writes nothing.
///
/// This WIT version has no compare-and-swap, so this is [`get`], a comparison and [`set`], and
/// still a real one: the read is checked at commit. If another consumer changes `key` between
/// the read and the commit, this call's effects are dropped and the event is handled again;
/// there `compare_and_swap` sees the new value and returns `false`, so the lost race is reported
/// to the plugin, never committed. (If `expected` was itself read from `key` in the same call,
/// the re-run reads the new value too and may succeed.)
///
/// ```
/// # use evhost_sdk::prelude::*;
/// /// Claims the auction for `bidder_id`: of all concurrent claims, exactly one gets `true`.
/// fn claim(auction_id: &str, bidder_id: &str) -> Result<bool> {
///     kv::compare_and_swap(format!("winner:{auction_id}"), None, bidder_id)
/// }
/// ```
///
/// # Errors
///
/// A *retry* error if the store fails.
pub fn compare_and_swap(
    key: impl AsRef<str>,
    expected: Option<&[u8]>,
    new: impl AsRef<[u8]>,
) -> Result<bool> {
    let key = key.as_ref();
    if get(key)?.as_deref() != expected {
        return Ok(false);
    }
    set(key, new)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &str) -> Option<(String, Vec<u8>)> {
        Some((key.to_owned(), value.as_bytes().to_vec()))
    }

    /// `get-many` answers are mapped to the keys asked, in order or not, absent keys left out
    /// or not, a key asked twice answered twice.
    #[test]
    fn get_many_answers_follow_the_order_of_the_keys() {
        let keys: Vec<String> = ["a", "b", "c", "a"].map(String::from).to_vec();
        let expected = vec![
            Some(b"1".to_vec()),
            None,
            Some(b"3".to_vec()),
            Some(b"1".to_vec()),
        ];
        let in_order = vec![entry("a", "1"), None, entry("c", "3"), entry("a", "1")];
        assert_eq!(in_key_order(&keys, in_order), expected);
        let shuffled = vec![entry("c", "3"), entry("a", "1"), None, entry("a", "1")];
        assert_eq!(in_key_order(&keys, shuffled), expected);
        let present_only = vec![entry("c", "3"), entry("a", "1")];
        assert_eq!(in_key_order(&keys, present_only), expected);
        assert_eq!(in_key_order(&[], Vec::new()), Vec::<Option<Vec<u8>>>::new());
    }
}
