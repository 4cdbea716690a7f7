//! The probe's key-value actions: read-modify-write counters, atomic increments,
//! compare-and-swap and batch reads, for the host's consistency tests.
//!
//! | `action` | what it does |
//! |---|---|
//! | `"count"` | adds 1, by `get` and `set`, to the decimal counters `key` (default `total`) and `<key>:<event type>` |
//! | `"increment"` | `increment`s `key` (default `counter`) by `by` (default 1) |
//! | `"cas"` | `compare_and_swap` of `key` (default `slot`) from `expect` (a string, or absent/null for "no value") to `new` (default: the event id), then publishes `ProbeCasResult` `{"event", "swapped"}` |
//! | `"get-many"` | `set`s each pair of the object `set` (if any), then `get_many` of the list `keys`, and publishes `ProbeGetManyResult` `{"values": [text or null, ...]}` |

use evhost_sdk::prelude::*;
use serde_json::{Map, Value, json};

/// A key-value action.
#[derive(Debug, Clone, PartialEq)]
pub enum StateAction {
    Count {
        key: String,
    },
    Increment {
        key: String,
        by: u64,
    },
    Cas {
        key: String,
        expect: Option<String>,
        new: Option<String>,
    },
    GetMany {
        set: Vec<(String, String)>,
        keys: Vec<String>,
    },
}

impl StateAction {
    /// The action named `action`, if it is a key-value one.
    pub fn parse(action: &str, data: &Map<String, Value>) -> Option<Self> {
        let text = |name: &str| data.get(name).and_then(Value::as_str).map(str::to_owned);
        let key = |default: &str| text("key").unwrap_or_else(|| default.to_owned());
        Some(match action {
            "count" => StateAction::Count { key: key("total") },
            "increment" => StateAction::Increment {
                key: key("counter"),
                by: data.get("by").and_then(Value::as_u64).unwrap_or(1),
            },
            "cas" => StateAction::Cas {
                key: key("slot"),
                expect: text("expect"),
                new: text("new"),
            },
            "get-many" => StateAction::GetMany {
                set: data
                    .get("set")
                    .and_then(Value::as_object)
                    .map(|pairs| {
                        pairs
                            .iter()
                            .map(|(key, value)| {
                                (key.clone(), value.as_str().unwrap_or_default().to_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                keys: data
                    .get("keys")
                    .and_then(Value::as_array)
                    .map(|keys| {
                        keys.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            _ => return None,
        })
    }

    /// Does it for `event`.
    pub fn run(&self, event: &Event) -> Result<()> {
        match self {
            StateAction::Count { key } => {
                add_one(key)?;
                add_one(&format!("{key}:{}", event.event_type()))
            }
            StateAction::Increment { key, by } => kv::increment(key, *by).map(|_| ()),
            StateAction::Cas { key, expect, new } => {
                let new = new.clone().unwrap_or_else(|| event.id().to_owned());
                let swapped = kv::compare_and_swap(key, expect.as_deref().map(str::as_bytes), new)?;
                publish(
                    "ProbeCasResult",
                    &json!({ "event": event.id(), "swapped": swapped }),
                )
                .map(|_| ())
            }
            StateAction::GetMany { set, keys } => {
                for (key, value) in set {
                    kv::set(key, value)?;
                }
                let values: Vec<Value> = kv::get_many(keys)?
                    .into_iter()
                    .map(|value| match value {
                        Some(bytes) => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
                        None => Value::Null,
                    })
                    .collect();
                publish("ProbeGetManyResult", &json!({ "values": values })).map(|_| ())
            }
        }
    }
}

/// Adds 1 to the decimal counter `key` by reading and writing it (a read-modify-write).
fn add_one(key: &str) -> Result<()> {
    let count = kv::get(key)?
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.parse::<u64>().ok())
        .unwrap_or(0);
    kv::set(key, (count + 1).to_string())
}
