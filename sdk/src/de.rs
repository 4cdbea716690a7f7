//! Serde helpers for the loose JSON that event producers send.
//!
//! ```
//! use evhost_sdk::prelude::*;
//!
//! #[derive(Deserialize)]
//! struct AuctionEnded {
//!     #[serde(deserialize_with = "evhost_sdk::de::string_or_number")]
//!     auction_id: String,
//! }
//!
//! let from_number: AuctionEnded = serde_json::from_str(r#"{"auction_id": 7}"#)?;
//! let from_string: AuctionEnded = serde_json::from_str(r#"{"auction_id": "7"}"#)?;
//! assert_eq!(from_number.auction_id, from_string.auction_id);
//! # Ok::<(), serde_json::Error>(())
//! ```

use serde::Deserialize;
use serde::de::{Deserializer, Error as _, Unexpected};
use serde_json::Value;

/// Deserializes a JSON string or number (`"7"` or `7`) as a `String`; anything else is an
/// error. Use it with `#[serde(deserialize_with = "evhost_sdk::de::string_or_number")]` on
/// id fields.
///
/// # Errors
///
/// The deserializer's error for a boolean, null, array or object.
pub fn string_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    const EXPECTED: &str = "a string or a number";
    match Value::deserialize(deserializer)? {
        Value::String(text) => Ok(text),
        Value::Number(number) => Ok(number.to_string()),
        Value::Bool(flag) => Err(D::Error::invalid_type(Unexpected::Bool(flag), &EXPECTED)),
        Value::Null => Err(D::Error::invalid_type(Unexpected::Unit, &EXPECTED)),
        Value::Array(_) => Err(D::Error::invalid_type(Unexpected::Seq, &EXPECTED)),
        Value::Object(_) => Err(D::Error::invalid_type(Unexpected::Map, &EXPECTED)),
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    struct Id {
        #[serde(deserialize_with = "super::string_or_number")]
        id: String,
    }

    /// Strings and numbers (integers and decimals) are accepted; other JSON types are not.
    #[test]
    fn strings_and_numbers_only() {
        let parse = |json: &str| serde_json::from_str::<Id>(json).map(|id| id.id);
        assert_eq!(parse(r#"{"id": "a-1"}"#).ok(), Some("a-1".to_owned()));
        assert_eq!(parse(r#"{"id": 42}"#).ok(), Some("42".to_owned()));
        assert_eq!(parse(r#"{"id": 4.5}"#).ok(), Some("4.5".to_owned()));
        for bad in [
            r#"{"id": true}"#,
            r#"{"id": null}"#,
            r#"{"id": [1]}"#,
            r#"{"id": {}}"#,
            "{}",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let err = parse(r#"{"id": true}"#).expect_err("a boolean is no id");
        assert!(
            err.to_string().contains("expected a string or a number"),
            "{err}"
        );
    }
}
