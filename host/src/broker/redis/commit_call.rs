//! A [`Commit`] as one call of the commit script (`commit.lua`): its keys and arguments, and
//! its reply or error turned back into the broker's terms.
//!
//! One script, because it checks groups and ownership before writing anything, which
//! MULTI/EXEC cannot do (XACK on a missing group answers 0, and EXEC never rolls back).

use std::time::Duration;

use redis::{Script, ScriptInvocation, Value};

use super::reply::*;
use crate::broker::{BrokerError, Commit, CommitReport, EntryId, Op};

/// The commit script invoked with a commit's keys and arguments.
pub(super) struct CommitCall<'a> {
    invocation: ScriptInvocation<'a>,
    /// (stream, group) of every key index that names a group, to explain a `NOGROUP`.
    groups_by_key: Vec<Option<(String, String)>>,
}

/// One ownership check: the pending entries of a consumer of a group on a stream in a range.
struct OwnershipRange<'c> {
    stream: &'c str,
    group: &'c str,
    consumer: &'c str,
    min: EntryId,
    max: EntryId,
}

/// How long a commit's mark (see [`CommitCall::encode`]) outlives it: far longer than the
/// cluster client goes on sending a command again.
const MARK_TTL: Duration = Duration::from_secs(60);

impl<'a> CommitCall<'a> {
    /// Encodes `commit` for `script` (see `commit.lua` for the layout of `KEYS` and `ARGV`).
    /// With `mark` (a key in the commit's slot, unique to this commit) the script runs at
    /// most once: sent again, it answers what its first run did.
    pub(super) fn encode(script: &'a Script, commit: &Commit, mark: Option<&str>) -> Self {
        let mut call = CommitCall {
            invocation: script.prepare_invoke(),
            groups_by_key: Vec::new(),
        };
        if let Some(mark) = mark {
            call.invocation
                .key(mark)
                .arg("K")
                .arg(u64::try_from(MARK_TTL.as_millis()).unwrap_or(u64::MAX));
            call.groups_by_key.push(None);
        }
        for op in &commit.ops {
            call.op(op);
        }
        // One ownership lookup per (stream, group, consumer) instead of one per entry; only
        // settlements with ops are checked (see `commit.lua`).
        let mut ranges: Vec<OwnershipRange<'_>> = Vec::new();
        for settlement in commit.settlements.iter().filter(|s| !s.ops.is_empty()) {
            let found = ranges.iter_mut().find(|range| {
                range.stream == settlement.stream
                    && range.group == settlement.group
                    && range.consumer == settlement.consumer
            });
            match found {
                Some(range) => {
                    range.min = range.min.min(settlement.id);
                    range.max = range.max.max(settlement.id);
                }
                None => ranges.push(OwnershipRange {
                    stream: &settlement.stream,
                    group: &settlement.group,
                    consumer: &settlement.consumer,
                    min: settlement.id,
                    max: settlement.id,
                }),
            }
        }
        for range in &ranges {
            call.invocation
                .key(range.stream)
                .arg("O")
                .arg(range.group)
                .arg(range.consumer)
                .arg(range.min.to_string())
                .arg(range.max.to_string())
                // Every pending entry of the consumer in the range (others may lie between).
                .arg(1_000_000);
            call.names_group(range.stream, range.group);
        }
        let settlements = &commit.settlements;
        let mut index = 0;
        while index < settlements.len() {
            let settlement = &settlements[index];
            // A run of settlements without ops on the same stream, group and consumer is one
            // `U` op: most batches are only acknowledgements.
            let run = settlements[index..]
                .iter()
                .take_while(|other| {
                    other.ops.is_empty()
                        && other.stream == settlement.stream
                        && other.group == settlement.group
                        && other.consumer == settlement.consumer
                })
                .count();
            if run > 0 {
                call.invocation
                    .key(&settlement.stream)
                    .arg("U")
                    .arg(&settlement.group)
                    .arg(&settlement.consumer)
                    .arg(run);
                for other in &settlements[index..index + run] {
                    call.invocation.arg(other.id.to_string());
                }
                call.names_group(&settlement.stream, &settlement.group);
                index += run;
                continue;
            }
            index += 1;
            call.invocation
                .key(&settlement.stream)
                .arg("T")
                .arg(&settlement.group)
                .arg(&settlement.consumer)
                .arg(settlement.id.to_string())
                .arg(settlement.expects.len() + settlement.ops.len());
            call.names_group(&settlement.stream, &settlement.group);
            for expect in &settlement.expects {
                call.invocation
                    .key(&expect.key)
                    .arg("E")
                    .arg(expect.digest.to_hex());
                call.groups_by_key.push(None);
            }
            for op in &settlement.ops {
                call.op(op);
            }
        }
        call
    }

    /// Records that the last key added names `group` on `stream`.
    fn names_group(&mut self, stream: &str, group: &str) {
        self.groups_by_key
            .push(Some((stream.to_string(), group.to_string())));
    }

    /// Adds one write.
    fn op(&mut self, op: &Op) {
        let invocation = &mut self.invocation;
        match op {
            Op::Add { stream, fields } => {
                invocation.key(stream).arg("A").arg(fields.len());
                for (name, value) in fields {
                    invocation.arg(name).arg(value);
                }
            }
            Op::Set { key, value } => {
                invocation.key(key).arg("S").arg(value);
            }
            Op::Delete { key } => {
                invocation.key(key).arg("D");
            }
            Op::Increment { key, delta } => {
                invocation.key(key).arg("I").arg(*delta);
            }
            Op::Remove { stream, id } => {
                invocation.key(stream).arg("R").arg(id.to_string());
            }
            Op::Fence { key, owner } => {
                invocation.key(key).arg("F").arg(owner);
            }
        }
        self.groups_by_key.push(None);
    }

    /// Runs the script on `conn` (`Script` sends EVALSHA and falls back to EVAL once if the
    /// server lacks the script) and reads its reply for `commit`.
    pub(super) async fn invoke<C: redis::aio::ConnectionLike + Send>(
        self,
        conn: &mut C,
        commit: &Commit,
    ) -> Result<CommitReport, BrokerError> {
        match self
            .invocation
            .invoke_async::<Value>(conn)
            .await
            .map_err(BrokerError::from)
        {
            Ok(Value::Array(lists)) => {
                let ids = |list: Option<&Value>| match list {
                    Some(Value::Array(ids)) => ids.iter().map(parse_id).collect(),
                    Some(other) => Err(unexpected("commit script", other)),
                    None => Ok(Vec::new()),
                };
                Ok(CommitReport {
                    skipped: ids(lists.first())?,
                    conflicted: ids(lists.get(1))?,
                })
            }
            Ok(Value::Nil) => Ok(CommitReport::default()),
            Ok(other) => Err(unexpected("commit script", &other)),
            Err(BrokerError::Redis(err)) if err.code() == Some("FENCED") => {
                let fence = commit.ops.iter().find_map(|op| match op {
                    Op::Fence { key, owner } => Some((key.clone(), owner.clone())),
                    _ => None,
                });
                match fence {
                    Some((key, owner)) => Err(BrokerError::Fenced { key, owner }),
                    None => Err(BrokerError::Redis(err)),
                }
            }
            Err(BrokerError::Redis(err)) if err.code() == Some("NOGROUP") => {
                // The script names the failing key (1-based).
                let failed = err
                    .detail()
                    .and_then(|detail| detail.split_whitespace().next()?.parse::<usize>().ok())
                    .and_then(|position| {
                        self.groups_by_key
                            .get(position.checked_sub(1)?)
                            .cloned()
                            .flatten()
                    });
                match failed {
                    Some((stream, group)) => Err(BrokerError::NoGroup { stream, group }),
                    None => Err(BrokerError::Redis(err)),
                }
            }
            Err(err) => Err(err),
        }
    }
}
