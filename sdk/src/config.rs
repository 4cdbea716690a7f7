//! The plugin's configuration (`wasi:config/store`): string values set by the operator.
//!
//! ```
//! use evhost_sdk::prelude::*;
//!
//! fn region() -> String {
//!     config::get("region").unwrap_or_else(|| "eu".to_owned())
//! }
//!
//! fn max_amount() -> Result<f64> {
//!     // Not set: the default; set but not a number: a retry error for the operator to fix.
//!     Ok(config::get_parsed("max_amount")?.unwrap_or(10_000.0))
//! }
//! ```

use std::str::FromStr;

use crate::bindings::wasi::config::store;
use crate::error::{Error, Result};

/// The value of `key`, or `None` if it is not set or the configuration cannot be read (the
/// failure is logged as a warning). Use [`try_get`] to see failures.
pub fn get(key: &str) -> Option<String> {
    match try_get(key) {
        Ok(value) => value,
        Err(err) => {
            crate::log::warn(err.message());
            None
        }
    }
}

/// The value of `key`, or `None` if it is not set.
///
/// # Errors
///
/// A *retry* error if the configuration cannot be read.
pub fn try_get(key: &str) -> Result<Option<String>> {
    store::get(key).map_err(|err| Error::retry(format!("reading config {key:?}: {err}")))
}

/// The value of `key` parsed as `T`, or `None` if it is not set.
///
/// # Errors
///
/// A *retry* error if the configuration cannot be read or the value does not parse: a
/// configuration mistake is fixed by the operator, after which the event can succeed.
pub fn get_parsed<T>(key: &str) -> Result<Option<T>>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let Some(text) = try_get(key)? else {
        return Ok(None);
    };
    text.trim()
        .parse()
        .map(Some)
        .map_err(|err| Error::retry(format!("config {key:?} = {text:?} is invalid: {err}")))
}

/// Every configuration key and value.
///
/// # Errors
///
/// A *retry* error if the configuration cannot be read.
pub fn get_all() -> Result<Vec<(String, String)>> {
    store::get_all().map_err(|err| Error::retry(format!("reading the config: {err}")))
}
