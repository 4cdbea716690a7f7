//! Stream entry ids (`<milliseconds>-<sequence>`).

use std::fmt;
use std::str::FromStr;

/// A stream entry id: milliseconds since the Unix epoch and a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EntryId {
    /// Milliseconds since the Unix epoch when the entry was added.
    pub ms: u64,
    /// Sequence number within that millisecond.
    pub seq: u64,
}

/// An entry id that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream entry id {0:?}: expected <milliseconds>-<sequence>")]
pub struct InvalidEntryId(pub String);

impl EntryId {
    /// `0-0`, smaller than every real entry id.
    pub const ZERO: EntryId = EntryId { ms: 0, seq: 0 };
    /// The largest possible id.
    pub const MAX: EntryId = EntryId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// Creates an id from its parts.
    pub const fn new(ms: u64, seq: u64) -> Self {
        EntryId { ms, seq }
    }

    /// The id immediately after this one.
    pub fn next(self) -> Self {
        if self.seq == u64::MAX {
            EntryId::new(self.ms.saturating_add(1), 0)
        } else {
            EntryId::new(self.ms, self.seq + 1)
        }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EntryId {
    type Err = InvalidEntryId;

    /// Parses `<ms>-<seq>` or a bare `<ms>` (sequence 0), as Redis accepts.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidEntryId(s.to_string());
        let (ms, seq) = match s.split_once('-') {
            Some((ms, seq)) => (ms, seq),
            None => (s, "0"),
        };
        Ok(EntryId {
            ms: ms.parse().map_err(|_| invalid())?,
            seq: seq.parse().map_err(|_| invalid())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let id: EntryId = "1700000000000-7".parse().expect("valid id");
        assert_eq!(id, EntryId::new(1_700_000_000_000, 7));
        assert_eq!(id.to_string(), "1700000000000-7");
        assert_eq!("12".parse::<EntryId>(), Ok(EntryId::new(12, 0)));
        assert!("x-1".parse::<EntryId>().is_err());
        assert!("1-".parse::<EntryId>().is_err());
    }

    #[test]
    fn orders_and_steps() {
        assert!(EntryId::new(1, 5) < EntryId::new(2, 0));
        assert_eq!(EntryId::new(1, 5).next(), EntryId::new(1, 6));
        assert_eq!(EntryId::new(1, u64::MAX).next(), EntryId::new(2, 0));
    }
}
