//! Outbox entries: publishes bound for another partition, committed in the source partition
//! and moved by the relay.

use crate::broker::{Fields, Op};
use crate::keyspace::Keyspace;

/// The first field of an outbox entry: the stream the entry is bound for.
pub const TARGET_FIELD: &str = "evhost.target";

/// The entry of `outbox` for a publish of `event_type` bound for partition `to`: the target
/// stream first, then the event's fields.
pub fn outbox_op(outbox: String, to: Keyspace, event_type: &str, fields: Fields) -> Op {
    let mut entry: Fields = Vec::with_capacity(fields.len() + 1);
    entry.push((
        TARGET_FIELD.to_string(),
        to.event_stream(event_type).into_bytes(),
    ));
    entry.extend(fields);
    Op::Add {
        stream: outbox,
        fields: entry,
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    #[test]
    fn an_outbox_entry_names_its_target_first() {
        let layout = Keyspace::partitioned(NonZeroU32::new(4).expect("4"));
        let fields = vec![("id".to_string(), b"e-1".to_vec())];
        let outbox = layout.at(1).outbox().expect("outbox");
        let op = outbox_op(outbox, layout.at(2), "Paid", fields.clone());
        let Op::Add {
            stream,
            fields: entry,
        } = op
        else {
            panic!("not an add: {op:?}");
        };
        assert_eq!(stream, "evhost:{p1}:outbox");
        assert_eq!(entry[0].0, TARGET_FIELD);
        assert_eq!(entry[0].1, b"evhost:{p2}:events:Paid");
        assert_eq!(&entry[1..], &fields[..]);
    }
}
