//! What a commit checks before it applies a settlement: that each key the handler read still
//! holds what it read (no lost update), and that each key it increments holds a counter.
//!
//! A read is remembered as a digest of the value, not the value: the commit script compares
//! `redis.sha1hex` of the current value with it, so a commit carries 40 bytes per key read
//! whatever the size of the value.

use sha1_smol::Sha1;

/// The largest counter value, and the largest increment: 2^53 − 1, the largest integer that
/// a double (the commit script's Lua numbers, JavaScript's numbers) holds exactly.
pub const MAX_COUNTER: i64 = 9_007_199_254_740_991;

/// What a key held when a handler read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueDigest {
    /// The key did not exist.
    Absent,
    /// SHA-1 of the value.
    Sha1([u8; 20]),
}

impl ValueDigest {
    /// The digest of a read value (`None`: the key was absent).
    pub fn of(value: Option<&[u8]>) -> Self {
        match value {
            None => ValueDigest::Absent,
            Some(bytes) => ValueDigest::Sha1(Sha1::from(bytes).digest().bytes()),
        }
    }

    /// Whether `value` is what was read.
    pub fn matches(&self, value: Option<&[u8]>) -> bool {
        *self == ValueDigest::of(value)
    }

    /// The form the commit script compares: lowercase hex of the SHA-1, `-` when absent.
    pub fn to_hex(&self) -> String {
        match self {
            ValueDigest::Absent => "-".to_string(),
            ValueDigest::Sha1(bytes) => bytes.iter().map(|byte| format!("{byte:02x}")).collect(),
        }
    }
}

/// A key a settlement expects to hold what its handler read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// The full key.
    pub key: String,
    /// What it held when read.
    pub digest: ValueDigest,
}

/// Why a value cannot be incremented.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CounterError {
    /// The value is not a decimal integer as Redis's `INCRBY` writes it.
    #[error(
        "the value is not a counter (a decimal integer without sign '+', spaces or leading zeros)"
    )]
    NotACounter,
    /// The value or the result lies outside ±(2^53 − 1).
    #[error("the counter would leave the range ±9007199254740991 (2^53 - 1)")]
    OutOfRange,
}

/// The counter a key holds: 0 when absent, else its value, which must be written as
/// `INCRBY` writes it and lie within ±[`MAX_COUNTER`] (the commit script checks the same).
pub fn counter_value(value: Option<&[u8]>) -> Result<i64, CounterError> {
    let Some(bytes) = value else {
        return Ok(0);
    };
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let canonical = match digits {
        [b'0'] => bytes.len() == 1,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if !canonical {
        return Err(CounterError::NotACounter);
    }
    if digits.len() > 16 {
        return Err(CounterError::OutOfRange);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| CounterError::NotACounter)?;
    let number: i64 = text.parse().map_err(|_| CounterError::NotACounter)?;
    if number.abs() > MAX_COUNTER {
        return Err(CounterError::OutOfRange);
    }
    Ok(number)
}

/// `current + delta`, within ±[`MAX_COUNTER`].
pub fn counter_add(current: i64, delta: u64) -> Result<i64, CounterError> {
    let delta = i64::try_from(delta).map_err(|_| CounterError::OutOfRange)?;
    match current.checked_add(delta) {
        Some(sum) if sum.abs() <= MAX_COUNTER && delta <= MAX_COUNTER => Ok(sum),
        _ => Err(CounterError::OutOfRange),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_tell_values_and_absence_apart() {
        let empty = ValueDigest::of(Some(b""));
        assert_ne!(empty, ValueDigest::Absent);
        assert!(empty.matches(Some(b"")));
        assert!(!empty.matches(None));
        assert!(ValueDigest::Absent.matches(None));
        // The same text `redis.sha1hex("abc")` returns.
        assert_eq!(
            ValueDigest::of(Some(b"abc")).to_hex(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(ValueDigest::Absent.to_hex(), "-");
    }

    #[test]
    fn counters_are_canonical_integers_within_two_to_the_53() {
        assert_eq!(counter_value(None), Ok(0));
        assert_eq!(counter_value(Some(b"0")), Ok(0));
        assert_eq!(counter_value(Some(b"42")), Ok(42));
        assert_eq!(counter_value(Some(b"-7")), Ok(-7));
        assert_eq!(counter_value(Some(b"9007199254740991")), Ok(MAX_COUNTER));
        for bad in [
            &b""[..],
            b"-0",
            b"+1",
            b"01",
            b" 1",
            b"1 ",
            b"1.5",
            b"x",
            b"-",
        ] {
            assert_eq!(
                counter_value(Some(bad)),
                Err(CounterError::NotACounter),
                "{bad:?}"
            );
        }
        for big in [&b"9007199254740992"[..], b"99999999999999999999999"] {
            assert_eq!(counter_value(Some(big)), Err(CounterError::OutOfRange));
        }
        assert_eq!(counter_add(1, 2), Ok(3));
        assert_eq!(counter_add(-5, 2), Ok(-3));
        assert_eq!(counter_add(MAX_COUNTER, 1), Err(CounterError::OutOfRange));
        assert_eq!(counter_add(0, u64::MAX), Err(CounterError::OutOfRange));
    }
}
