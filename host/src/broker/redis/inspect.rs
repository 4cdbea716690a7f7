//! What the CLI and the admin endpoint read from Redis: ranges of a stream, its length, its
//! consumer groups, and a follower of new entries.

use async_trait::async_trait;
use redis::Value;

use super::reader::RedisFollower;
use super::reply::{is_no_such_key, parse_group_info, unexpected};
use super::{BrokerError, EntryId, GroupInfo, Inspect, RedisBroker, StreamEntry, StreamFollower};

#[async_trait]
impl Inspect for RedisBroker {
    async fn range(
        &self,
        stream: &str,
        start: EntryId,
        end: EntryId,
        count: usize,
    ) -> Result<Vec<StreamEntry>, BrokerError> {
        self.range_command("XRANGE", stream, start, end, count)
            .await
    }

    async fn rev_range(
        &self,
        stream: &str,
        end: EntryId,
        start: EntryId,
        count: usize,
    ) -> Result<Vec<StreamEntry>, BrokerError> {
        self.range_command("XREVRANGE", stream, end, start, count)
            .await
    }

    async fn len(&self, stream: &str) -> Result<u64, BrokerError> {
        match self.query(redis::cmd("XLEN").arg(stream)).await? {
            Value::Int(len) => Ok(u64::try_from(len).unwrap_or(0)),
            other => Err(unexpected("XLEN", &other)),
        }
    }

    async fn groups(&self, stream: &str) -> Result<Vec<GroupInfo>, BrokerError> {
        let reply = match self
            .query(redis::cmd("XINFO").arg("GROUPS").arg(stream))
            .await
        {
            Ok(reply) => reply,
            Err(BrokerError::Redis(err)) if is_no_such_key(&err) => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let Value::Array(groups) = reply else {
            return Err(unexpected("XINFO GROUPS", &reply));
        };
        groups.iter().map(parse_group_info).collect()
    }

    fn follower(&self) -> Box<dyn StreamFollower> {
        Box::new(RedisFollower::new(self.endpoint.clone()))
    }
}
