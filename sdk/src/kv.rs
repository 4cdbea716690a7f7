//! The plugin's key-value store (`wasi:keyvalue/store`, default bucket).
//!
//! Keys are private to the plugin: the host prefixes them with the plugin's name. The bucket is
//! opened on first use and kept for the life of the instance.
//!
//! ```
//! use evhost_sdk::prelude::*;
//!
//! fn remember(bidder_id: &str, email: &str) -> Result<()> {
//!     kv::set(format!("email:{bidder_id}"), email)?;
//!     let seen: u64 = kv::get_json("bidders_seen")?.unwrap_or(0);
//!     kv::set_json("bidders_seen", &(seen + 1))
//! }
//! ```

use std::cell::OnceCell;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::wasi::keyvalue::store::{self, Bucket};
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
