//! Shadow comparison: whether the candidate did what the live version did with one event.
//!
//! Two calls agree when they have the same outcome (ok, retry, reject, trap, timeout), the
//! same publishes (type, data and attributes; ids and timestamps ignored, as they differ by
//! nature) and the same key-value writes, in the same order. Journal records are not
//! compared: they are the plugin's own notes, and often carry its version.

use crate::broker::Op;
use crate::plugin::{CallError, Outcome};

/// Event attributes that differ between any two publishes of the same event.
const IGNORED_FIELDS: [&str; 2] = ["id", "time"];

/// The field of an outbox entry naming its target stream (see [`crate::relay`]).
const OUTBOX_TARGET: &str = crate::relay::TARGET_FIELD;

/// Longest value shown in a difference.
const MAX_SHOWN: usize = 160;

/// The outcome of a call, as one word and its reason.
fn outcome_of(result: &Result<Outcome, CallError>) -> (&'static str, String) {
    match result {
        Ok(Outcome::Ok(_)) => ("ok", String::new()),
        Ok(Outcome::Retry { reason, .. }) => ("retry", reason.clone()),
        Ok(Outcome::Reject { reason }) => ("reject", reason.clone()),
        Err(CallError::Trap(message)) => ("trap", message.clone()),
        Err(CallError::Timeout(after)) => ("timeout", format!("after {after:?}")),
    }
}

/// `text` cut to [`MAX_SHOWN`] characters.
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut shown: String = text.chars().take(MAX_SHOWN).collect();
    if text.chars().count() > MAX_SHOWN {
        shown.push('…');
    }
    shown
}

/// The comparable effects of a successful call, one readable line each, in call order.
fn effects_of(ops: &[Op], journal: &str) -> Vec<String> {
    ops.iter()
        .filter_map(|op| match op {
            Op::Add { stream, .. } if stream == journal => None,
            Op::Add { fields, .. } => {
                let mut kept: Vec<String> = fields
                    .iter()
                    .filter(|(name, _)| {
                        !IGNORED_FIELDS.contains(&name.as_str()) && name != OUTBOX_TARGET
                    })
                    .map(|(name, value)| format!("{name}={}", shown(value)))
                    .collect();
                kept.sort();
                Some(format!("publish {}", kept.join(" ")))
            }
            Op::Set { key, value } => Some(format!("set {key} = {}", shown(value))),
            Op::Delete { key } => Some(format!("delete {key}")),
            Op::Increment { key, delta } => Some(format!("increment {key} by {delta}")),
            Op::Remove { .. } | Op::Fence { .. } => None,
        })
        .collect()
}

/// How the candidate's call differs from the live one, as readable lines (`None`: they
/// agree). `journal` is the plugin's journal stream, whose records are not compared.
pub fn difference(
    live: &Result<Outcome, CallError>,
    candidate: &Result<Outcome, CallError>,
    journal: &str,
) -> Option<String> {
    let (live_outcome, live_reason) = outcome_of(live);
    let (candidate_outcome, candidate_reason) = outcome_of(candidate);
    if live_outcome != candidate_outcome {
        let with_reason = |outcome: &str, reason: &str| {
            if reason.is_empty() {
                outcome.to_string()
            } else {
                format!("{outcome} ({reason})")
            }
        };
        return Some(format!(
            "outcome: live {}, candidate {}",
            with_reason(live_outcome, &live_reason),
            with_reason(candidate_outcome, &candidate_reason)
        ));
    }
    let (Ok(Outcome::Ok(live)), Ok(Outcome::Ok(candidate))) = (live, candidate) else {
        return None;
    };
    let live = effects_of(&live.ops, journal);
    let candidate = effects_of(&candidate.ops, journal);
    if live == candidate {
        return None;
    }
    let mut lines = Vec::new();
    for index in 0..live.len().max(candidate.len()) {
        match (live.get(index), candidate.get(index)) {
            (Some(live), Some(candidate)) if live == candidate => {}
            (Some(live), Some(candidate)) => {
                lines.push(format!("- live:      {live}"));
                lines.push(format!("+ candidate: {candidate}"));
            }
            (Some(live), None) => lines.push(format!("- live:      {live}")),
            (None, Some(candidate)) => lines.push(format!("+ candidate: {candidate}")),
            (None, None) => {}
        }
    }
    Some(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::CallEffects;

    fn ok(ops: Vec<Op>) -> Result<Outcome, CallError> {
        Ok(Outcome::Ok(CallEffects {
            ops,
            ..CallEffects::default()
        }))
    }

    fn publish(id: &str, data: &str) -> Op {
        Op::Add {
            stream: "evhost:events:Paid".into(),
            fields: vec![
                ("id".into(), id.as_bytes().to_vec()),
                ("time".into(), id.as_bytes().to_vec()),
                ("type".into(), b"Paid".to_vec()),
                ("data".into(), data.as_bytes().to_vec()),
            ],
        }
    }

    fn journal(version: &str) -> Op {
        Op::Add {
            stream: "evhost:journal:p".into(),
            fields: vec![("version".into(), version.as_bytes().to_vec())],
        }
    }

    #[test]
    fn publishes_that_differ_only_in_id_and_time_agree_and_journals_are_not_compared() {
        let live = ok(vec![journal("1"), publish("a", "{\"n\":1}")]);
        let candidate = ok(vec![journal("2"), publish("b", "{\"n\":1}")]);
        assert_eq!(difference(&live, &candidate, "evhost:journal:p"), None);
    }

    #[test]
    fn a_different_publish_or_write_is_shown_line_by_line() {
        let live = ok(vec![
            publish("a", "{\"n\":1}"),
            Op::Set {
                key: "k".into(),
                value: b"1".to_vec(),
            },
        ]);
        let candidate = ok(vec![publish("b", "{\"n\":2}")]);
        let diff = difference(&live, &candidate, "evhost:journal:p").expect("they differ");
        assert!(
            diff.contains("- live:      publish data={\"n\":1}"),
            "{diff}"
        );
        assert!(
            diff.contains("+ candidate: publish data={\"n\":2}"),
            "{diff}"
        );
        assert!(diff.contains("- live:      set k = 1"), "{diff}");
    }

    #[test]
    fn different_outcomes_name_both_with_their_reasons() {
        let live = ok(Vec::new());
        let candidate = Err(CallError::Trap("unreachable".into()));
        let diff = difference(&live, &candidate, "j").expect("they differ");
        assert_eq!(diff, "outcome: live ok, candidate trap (unreachable)");
        let retry = Ok(Outcome::Retry {
            reason: "down".into(),
            delay: None,
        });
        let other_retry = Ok(Outcome::Retry {
            reason: "busy".into(),
            delay: None,
        });
        assert_eq!(difference(&retry, &other_retry, "j"), None);
    }
}
