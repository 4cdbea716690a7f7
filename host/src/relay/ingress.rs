//! Keys of ingress events: what puts an event of a producer that knows nothing of partitions
//! into its partition.

use std::collections::HashMap;

use crate::event::{Event, PARTITION_KEY};

/// The data field that keys the ingress events of each type (`--ingress-key TYPE=FIELD`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngressKeys(HashMap<String, String>);

impl IngressKeys {
    /// Parses `TYPE=FIELD` rules.
    ///
    /// # Errors
    ///
    /// A message naming the rule that is not `TYPE=FIELD`.
    pub fn parse(rules: &[String]) -> Result<Self, String> {
        let mut keys = HashMap::new();
        for rule in rules {
            match rule.split_once('=') {
                Some((event_type, field)) if !event_type.is_empty() && !field.is_empty() => {
                    keys.insert(event_type.to_string(), field.to_string());
                }
                _ => {
                    return Err(format!(
                        "--ingress-key {rule:?}: expected TYPE=FIELD, e.g. AuctionEnded=auction_id"
                    ));
                }
            }
        }
        Ok(IngressKeys(keys))
    }

    /// The key of an ingress event: its `partitionkey`, else the configured data field (a
    /// string, number or boolean of its JSON data object), else none (spread by id).
    pub fn key_of(&self, event: &Event) -> Option<String> {
        if let Some(key) = event.extension(PARTITION_KEY) {
            return Some(key.to_string());
        }
        let field = self.0.get(&event.event_type)?;
        let data: serde_json::Value = serde_json::from_slice(&event.data).ok()?;
        match data.get(field)? {
            serde_json::Value::String(text) => Some(text.clone()),
            value @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => {
                Some(value.to_string())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingress_keys_come_from_the_extension_or_the_named_field() {
        let keys =
            IngressKeys::parse(&["AuctionEnded=auction_id".into(), "N=n".into()]).expect("rules");
        let mut event = Event::new("AuctionEnded", "test", br#"{"auction_id":"a-7"}"#.to_vec());
        assert_eq!(keys.key_of(&event).as_deref(), Some("a-7"));
        event.set_extension(PARTITION_KEY, "explicit");
        assert_eq!(keys.key_of(&event).as_deref(), Some("explicit"));
        let number = Event::new("N", "test", br#"{"n":42}"#.to_vec());
        assert_eq!(keys.key_of(&number).as_deref(), Some("42"));
        let other = Event::new("Other", "test", br#"{"auction_id":"a-7"}"#.to_vec());
        assert_eq!(keys.key_of(&other), None);
        let not_json = Event::new("AuctionEnded", "test", b"nope".to_vec());
        assert_eq!(keys.key_of(&not_json), None);
        for bad in ["AuctionEnded", "=x", "A="] {
            let err = IngressKeys::parse(&[bad.into()]).expect_err(bad);
            assert!(err.contains("TYPE=FIELD"), "{err}");
        }
    }
}
