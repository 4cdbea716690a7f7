//! Stream entries as `history` and `tail` show them: one line for people, one JSON object for
//! scripts, and the `--filter key=value` test on data fields.

use serde_json::{Map, Value, json};

use super::UsageError;
use super::output::{Cell, Style, entry_time, paint, truncate};
use evhost::broker::{EntryId, StreamEntry};
use evhost::event::{Event, MalformedEntry};

/// Widest data summary on a line.
const DATA_WIDTH: usize = 80;

/// One entry of an event stream, parsed in any accepted format.
#[derive(Debug)]
pub struct EventView {
    /// The stream it was read from.
    pub stream: String,
    /// Its entry id.
    pub entry_id: EntryId,
    /// The event, or why the entry is not one.
    parsed: Result<(Event, Option<Value>), MalformedEntry>,
    /// The raw fields as text, for malformed entries.
    raw: Vec<(String, String)>,
}

impl EventView {
    /// Parses `entry` of `stream`.
    pub fn new(stream: &str, entry: &StreamEntry) -> Self {
        let parsed = Event::from_entry(stream, entry.id, &entry.fields).map(|event| {
            let data = serde_json::from_slice(&event.data).ok();
            (event, data)
        });
        let raw = match parsed {
            Ok(_) => Vec::new(),
            Err(_) => entry
                .fields
                .iter()
                .map(|(name, value)| (name.clone(), String::from_utf8_lossy(value).into_owned()))
                .collect(),
        };
        EventView {
            stream: stream.to_string(),
            entry_id: entry.id,
            parsed,
            raw,
        }
    }

    /// The parsed envelope with the stream and entry id, as one JSON object.
    pub fn to_json(&self) -> Value {
        match &self.parsed {
            Ok((event, data)) => {
                let data = data.clone().unwrap_or_else(|| {
                    Value::String(String::from_utf8_lossy(&event.data).into_owned())
                });
                let extensions: Map<String, Value> = event
                    .extensions
                    .iter()
                    .map(|(key, value)| (key.clone(), Value::String(value.clone())))
                    .collect();
                json!({
                    "stream": self.stream,
                    "entry_id": self.entry_id.to_string(),
                    "id": event.id,
                    "type": event.event_type,
                    "source": event.source,
                    "time": event.time,
                    "specversion": event.specversion,
                    "datacontenttype": event.datacontenttype,
                    "data": data,
                    "extensions": extensions,
                })
            }
            Err(reason) => {
                let fields: Map<String, Value> = self
                    .raw
                    .iter()
                    .map(|(key, value)| (key.clone(), Value::String(value.clone())))
                    .collect();
                json!({
                    "stream": self.stream,
                    "entry_id": self.entry_id.to_string(),
                    "error": reason.to_string(),
                    "fields": fields,
                })
            }
        }
    }

    /// Whether every filter matches a top-level field of the data (malformed entries never
    /// match a filter).
    pub fn matches(&self, filters: &[Filter]) -> bool {
        if filters.is_empty() {
            return true;
        }
        let Ok((_, Some(Value::Object(data)))) = &self.parsed else {
            return false;
        };
        filters.iter().all(|filter| {
            data.get(&filter.key).is_some_and(|value| match value {
                Value::String(text) => *text == filter.value,
                other => {
                    // The JSON text, not `Value == String` (which only matches strings).
                    let text = other.to_string();
                    text == filter.value
                }
            })
        })
    }

    /// Entry id, time, type, event id and a data summary, as table cells.
    pub fn cells(&self) -> Vec<Cell> {
        match &self.parsed {
            Ok((event, data)) => {
                let summary = match data {
                    Some(value) => value.to_string(),
                    None => String::from_utf8_lossy(&event.data).into_owned(),
                };
                vec![
                    self.entry_id.to_string().into(),
                    Cell::styled(event.time.clone(), Style::Dim),
                    Cell::styled(event.event_type.clone(), Style::Bold),
                    event.id.clone().into(),
                    truncate(&summary, DATA_WIDTH).into(),
                ]
            }
            Err(reason) => vec![
                self.entry_id.to_string().into(),
                Cell::styled(entry_time(self.entry_id), Style::Dim),
                Cell::styled(
                    evhost::keyspace::event_type_in(&self.stream)
                        .unwrap_or(&self.stream)
                        .to_string(),
                    Style::Bold,
                ),
                Cell::styled("(malformed)", Style::Red),
                truncate(&reason.to_string(), DATA_WIDTH).into(),
            ],
        }
    }

    /// One line with fixed column widths, for output that cannot be aligned afterwards.
    pub fn line(&self, colors: bool) -> String {
        let cells = self.cells();
        let widths: [usize; 4] = [18, 30, 20, 36];
        let mut out = String::new();
        for (index, cell) in cells.iter().enumerate() {
            let text = cell.text();
            let painted = paint(text, cell.style(), colors);
            match widths.get(index) {
                Some(width) => {
                    let pad = width.saturating_sub(text.chars().count());
                    out.push_str(&painted);
                    out.push_str(&" ".repeat(pad + 2));
                }
                None => out.push_str(&painted),
            }
        }
        out.trim_end().to_string()
    }
}

/// `--filter key=value`: a top-level data field whose value (a string's content, or the JSON
/// text of any other value) equals `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The data field.
    pub key: String,
    /// The value it must have.
    pub value: String,
}

impl std::str::FromStr for Filter {
    type Err = UsageError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok(Filter {
                key: key.to_string(),
                value: value.to_string(),
            }),
            _ => Err(UsageError(format!(
                "invalid filter {text:?}: use key=value, e.g. workflow_id=wf-1"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(data: &str) -> EventView {
        let event = Event::new("T", "test", data.as_bytes().to_vec());
        let entry = StreamEntry {
            id: EntryId::new(5, 0),
            fields: event.to_fields(),
        };
        EventView::new("events:T", &entry)
    }

    #[test]
    fn filters_on_top_level_data_fields() {
        let event = view(r#"{"workflow_id":"wf-1","n":3,"ok":true}"#);
        let filter = |text: &str| text.parse::<Filter>().expect("filter");
        assert!(event.matches(&[filter("workflow_id=wf-1"), filter("n=3")]));
        assert!(event.matches(&[filter("ok=true")]));
        assert!(!event.matches(&[filter("workflow_id=wf-2")]));
        assert!(!event.matches(&[filter("missing=x")]));
        assert!("novalue".parse::<Filter>().is_err());
        let json = event.to_json();
        assert_eq!(json["entry_id"], "5-0");
        assert_eq!(json["data"]["n"], 3);
        assert_eq!(json["type"], "T");
    }

    #[test]
    fn shows_malformed_entries() {
        let entry = StreamEntry {
            id: EntryId::new(5, 0),
            fields: vec![("x".into(), b"1".to_vec()), ("y".into(), b"2".to_vec())],
        };
        let view = EventView::new("events:T", &entry);
        assert!(view.to_json()["error"].as_str().is_some());
        assert!(view.line(false).contains("(malformed)"));
        assert!(!view.matches(&["x=1".parse().expect("filter")]));
    }
}
