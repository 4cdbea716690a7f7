//! The batch overlay: key-value writes of a batch's successful calls that are not committed
//! yet, so that later calls of the same lane read them (read-your-writes).
//!
//! A consumer's lane owns its overlay across calls and clears it when the batch is committed;
//! it lends the overlay to an instance for the length of one call. Instances hold no batch
//! state, so a trapped instance can be discarded without losing what the batch wrote.

use std::collections::HashMap;

/// Uncommitted key-value state of a batch: `None` marks a deleted key.
#[derive(Debug, Default, Clone)]
pub struct BatchOverlay {
    values: HashMap<String, Option<Vec<u8>>>,
}

impl BatchOverlay {
    /// The buffered value of `key`: `Some(None)` when deleted, `None` when not buffered.
    pub fn lookup(&self, key: &str) -> Option<Option<&[u8]>> {
        self.values.get(key).map(|value| value.as_deref())
    }

    /// Takes in the key-value state of a successful call.
    pub fn absorb(&mut self, call: impl IntoIterator<Item = (String, Option<Vec<u8>>)>) {
        self.values.extend(call);
    }

    /// Keys held, with whether each is present (`false`: deleted).
    pub fn keys(&self) -> impl Iterator<Item = (&String, bool)> {
        self.values
            .iter()
            .map(|(key, value)| (key, value.is_some()))
    }

    /// The batch was committed (or abandoned): reads go to the broker again.
    pub fn clear(&mut self) {
        self.values.clear();
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::BatchOverlay;

    #[test]
    fn later_writes_win_and_deletes_are_remembered() {
        let mut overlay = BatchOverlay::default();
        overlay.absorb([("a".to_string(), Some(b"1".to_vec()))]);
        overlay.absorb([
            ("a".to_string(), Some(b"2".to_vec())),
            ("b".to_string(), None),
        ]);
        assert_eq!(overlay.lookup("a"), Some(Some(&b"2"[..])));
        assert_eq!(overlay.lookup("b"), Some(None));
        assert_eq!(overlay.lookup("c"), None);
        overlay.clear();
        assert!(overlay.is_empty());
    }
}
