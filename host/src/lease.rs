//! Partition leases: each partition of a partitioned keyspace is consumed by one host at a
//! time, so that the events of one key are handled in order even with many hosts.
//!
//! Every host answers a roll call (`evhost:hosts`, where its name is kept for the lease's time
//! to live, so that counting the hosts never walks the keyspace) and holds its share of the partitions, P divided by the hosts alive, rounded up. Each round
//! (a third of the time to live) it renews the leases it holds (`evhost:{pN}:lease`), gives up
//! those over its share and takes free ones up to it. A host that joins is given partitions
//! within two rounds; a host that stops gives its leases up once its consumers have committed,
//! and the partitions of a host that died are taken when their leases expire.
//!
//! Leases alone would not stop a host that stalled (a long pause, a frozen VM) from
//! committing after its lease expired and another host took the partition: every commit of a
//! partition is therefore fenced ([`crate::broker::Op::Fence`]), and the commit script refuses
//! it, applying nothing, when the lease is not the committer's.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, BrokerError};
use crate::keyspace::Keyspace;
use crate::partition::fnv1a32;

/// The default time to live of a lease: how long a dead host's partitions wait.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(6);

/// The partition leases of one host.
pub struct Leases {
    broker: Arc<dyn Broker>,
    /// The partitioned layout.
    layout: Keyspace,
    /// This host's name in the leases (its consumer name).
    owner: String,
    /// How long a lease lasts without renewal.
    ttl: Duration,
    /// The partitions this host holds.
    owned: watch::Sender<BTreeSet<u32>>,
    /// The hosts the roll call counted last, for a round in which it cannot be read.
    hosts: AtomicU32,
}

impl Leases {
    /// The leases of host `owner` on the partitions of `layout`, none held yet.
    pub fn new(broker: Arc<dyn Broker>, layout: Keyspace, owner: String, ttl: Duration) -> Self {
        let (owned, _) = watch::channel(BTreeSet::new());
        Leases {
            broker,
            layout,
            owner,
            ttl,
            owned,
            hosts: AtomicU32::new(1),
        }
    }

    /// The partitions held, told on every change.
    pub fn subscribe(&self) -> watch::Receiver<BTreeSet<u32>> {
        self.owned.subscribe()
    }

    /// The partitions held now.
    pub fn owned(&self) -> BTreeSet<u32> {
        self.owned.borrow().clone()
    }

    /// Rounds until `cancel` is cancelled (the leases are kept: [`Leases::release_all`] gives
    /// them up once the consumers are done).
    pub async fn run(&self, cancel: CancellationToken) {
        let every = self.ttl / 3;
        loop {
            if let Err(err) = self.round().await {
                tracing::warn!(error = %err, "partition leases: round failed; retrying");
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    /// One round: say this host is alive, renew, give up over the share, take up to it.
    ///
    /// Each call to Redis is bounded by the round's period, and the leases are renewed all at
    /// once: on a Redis Cluster the leases lie on several nodes, and one node away (a failover,
    /// a network cut) must not hold up the renewal of the others until they expire. A lease
    /// whose renewal failed is kept (a commit under it is fenced if it was lost meanwhile) and
    /// renewed again next round; only a lease another host holds is given up.
    ///
    /// # Errors
    ///
    /// When giving a lease up fails (what was done so far stays done).
    pub async fn round(&self) -> Result<(), BrokerError> {
        let broker = self.broker.as_ref();
        let hosts = match self
            .bounded(broker.heartbeat(self.layout.hosts(), &self.owner, self.ttl))
            .await
        {
            Ok(hosts) => {
                self.hosts.store(hosts.max(1), Ordering::Relaxed);
                hosts.max(1)
            }
            Err(err) => {
                tracing::warn!(error = %err, key = self.layout.hosts(), "partition leases: the roll call cannot be answered; counting the hosts as last time");
                self.hosts.load(Ordering::Relaxed)
            }
        };
        let partitions = self.layout.partitions();
        let share = partitions.div_ceil(hosts);
        let mut held = self.owned();
        let before = held.clone();
        let renewals = before.iter().map(|&partition| async move {
            let lease = self.layout.at(partition).lease();
            let renewed = self
                .bounded(broker.acquire_lease(&lease, &self.owner, self.ttl))
                .await;
            (partition, lease, renewed)
        });
        for (partition, lease, renewed) in futures_util::future::join_all(renewals).await {
            match renewed {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(partition, "partition lease lost: another host holds it now");
                    held.remove(&partition);
                }
                Err(err) => {
                    tracing::warn!(partition, %lease, error = %err, "partition lease cannot be renewed (its Redis node is away?); kept until renewed or lost");
                }
            }
        }
        while held.len() > share as usize {
            let Some(partition) = held.pop_last() else {
                break;
            };
            broker
                .release_lease(&self.layout.at(partition).lease(), &self.owner)
                .await?;
        }
        // Each host starts looking at a partition of its own, so that hosts starting together
        // do not all race for partition 0.
        let offset = fnv1a32(self.owner.as_bytes()) % partitions;
        for step in 0..partitions {
            if held.len() >= share as usize {
                break;
            }
            let partition = (offset + step) % partitions;
            if held.contains(&partition) {
                continue;
            }
            let lease = self.layout.at(partition).lease();
            match self
                .bounded(broker.acquire_lease(&lease, &self.owner, self.ttl))
                .await
            {
                Ok(true) => {
                    held.insert(partition);
                }
                Ok(false) => {}
                Err(err) => {
                    tracing::debug!(partition, error = %err, "partition lease cannot be taken now");
                }
            }
        }
        if held != before {
            tracing::info!(hosts, share, partitions = ?held, "partition leases: this host consumes these partitions");
            self.owned.send_replace(held);
        }
        Ok(())
    }

    /// `call`, failing when it takes longer than a round's period.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, BrokerError>>,
    ) -> Result<T, BrokerError> {
        let limit = self.ttl / 3;
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => Err(BrokerError::NoAnswer(limit)),
        }
    }

    /// Gives every lease up (and leaves the roll call), so that other hosts take the
    /// partitions at their next round.
    pub async fn release_all(&self) {
        let held = self.owned();
        for partition in held {
            let lease = self.layout.at(partition).lease();
            if let Err(err) = self.broker.release_lease(&lease, &self.owner).await {
                tracing::warn!(partition, error = %err, "cannot give the partition lease up; it expires by itself");
            }
        }
        let _ = self.broker.leave(self.layout.hosts(), &self.owner).await;
        self.owned.send_replace(BTreeSet::new());
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::broker::memory::MemoryBroker;

    fn layout() -> Keyspace {
        Keyspace::partitioned(NonZeroU32::new(4).expect("4"))
    }

    /// One host takes every partition; a second one gets half within two rounds; when one
    /// gives its leases up, the other takes them all.
    #[tokio::test]
    async fn hosts_share_the_partitions_and_take_over_given_up_ones() {
        let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
        let ttl = Duration::from_secs(30);
        let a = Leases::new(broker.clone(), layout(), "a".into(), ttl);
        let b = Leases::new(broker.clone(), layout(), "b".into(), ttl);
        a.round().await.expect("round");
        assert_eq!(a.owned().len(), 4);
        b.round().await.expect("round");
        a.round().await.expect("round");
        b.round().await.expect("round");
        let (owned_a, owned_b) = (a.owned(), b.owned());
        assert_eq!(
            (owned_a.len(), owned_b.len()),
            (2, 2),
            "{owned_a:?} {owned_b:?}"
        );
        assert!(owned_a.is_disjoint(&owned_b));
        b.release_all().await;
        a.round().await.expect("round");
        assert_eq!(a.owned().len(), 4);
    }

    /// A lease held by another host is not taken; an expired one is.
    #[tokio::test]
    async fn a_lease_is_taken_only_when_free_or_expired() {
        let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
        let ttl = Duration::from_millis(100);
        let key = layout().at(1).lease();
        assert!(broker.acquire_lease(&key, "a", ttl).await.expect("lease"));
        assert!(!broker.acquire_lease(&key, "b", ttl).await.expect("lease"));
        assert!(broker.acquire_lease(&key, "a", ttl).await.expect("renew"));
        tokio::time::sleep(ttl * 2).await;
        assert!(broker.acquire_lease(&key, "b", ttl).await.expect("expired"));
        assert!(!broker.release_lease(&key, "a").await.expect("not a's"));
        assert!(broker.release_lease(&key, "b").await.expect("b's"));
    }
}
