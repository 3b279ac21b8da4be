//! Scheduling ownership: which partitions of the checks this node schedules.
//!
//! Every check belongs to one of `P` partitions ([`partition_of`]). In a
//! cluster each partition is owned by exactly one live node in steady
//! state; a [`PartitionOwner`] says which ones this node owns, and the
//! [`Scheduler`](super::Scheduler) follows its [`watch`](PartitionOwner::watch)
//! channel. [`AllPartitions`] owns everything (one node, embedded mode);
//! `bergamot_store::PgPartitionOwner` shares them between nodes through
//! PostgreSQL session advisory locks.
//!
//! [`partition_of`]: super::partition_of

use crate::error::Result;
use async_trait::async_trait;
use std::collections::BTreeSet;
use tokio::sync::watch;

/// Decides which scheduling partitions this node owns.
///
/// Implementations publish every change of the owned set on the
/// [`watch`](Self::watch) channel, and must publish the loss of a partition
/// *before* another node can take it (for instance, drop everything as soon
/// as the connection that holds the locks is gone), so that no check is
/// scheduled by two nodes once the cluster is stable.
#[async_trait]
pub trait PartitionOwner: Send + Sync {
    /// The number of partitions `P` (the same on every node).
    fn partitions(&self) -> u32;

    /// One ownership round: takes free partitions up to this node's fair
    /// share and gives back those above it. Returns the owned set after the
    /// round. On failure the owner holds (and publishes) nothing.
    async fn acquire(&self) -> Result<BTreeSet<u32>>;

    /// Gives every partition back (on shutdown), so that other nodes can
    /// take them at once.
    async fn release(&self) -> Result<()>;

    /// The partitions owned now.
    fn owned(&self) -> BTreeSet<u32>;

    /// A channel that always holds the owned set.
    fn watch(&self) -> watch::Receiver<BTreeSet<u32>>;
}

/// A [`PartitionOwner`] that owns every partition, always: a single
/// scheduler node (embedded mode).
#[derive(Debug)]
pub struct AllPartitions {
    partitions: u32,
    tx: watch::Sender<BTreeSet<u32>>,
}

impl AllPartitions {
    /// Owns all of `partitions` partitions (0 is taken as 1).
    pub fn new(partitions: u32) -> Self {
        let partitions = partitions.max(1);
        let (tx, _) = watch::channel((0..partitions).collect());
        AllPartitions { partitions, tx }
    }
}

#[async_trait]
impl PartitionOwner for AllPartitions {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    async fn acquire(&self) -> Result<BTreeSet<u32>> {
        Ok(self.owned())
    }

    async fn release(&self) -> Result<()> {
        Ok(())
    }

    fn owned(&self) -> BTreeSet<u32> {
        self.tx.borrow().clone()
    }

    fn watch(&self) -> watch::Receiver<BTreeSet<u32>> {
        self.tx.subscribe()
    }
}
