//! Group and location aggregates: recomputed for the checks whose
//! contribution changed, published when they changed.

use super::retry::Backoff;
use super::*;
use crate::aggregate::{GroupState, LocationState};

impl Processor {
    /// Reloads the model's group graph and the current aggregates (the
    /// baseline against which changes are published). Call after a config sync.
    pub async fn refresh_model(&self) -> Result<()> {
        let model = self.store.model().await?;
        let index = Arc::new(GraphIndex::new(&model));
        let groups = self.store.group_states(None).await?;
        let locations = self.store.location_states(None).await?;
        let mut m = self.memory.lock();
        m.index = index;
        m.groups = groups.into_iter().map(|g| (g.id, g.aggregate)).collect();
        m.locations = locations.into_iter().map(|l| (l.id, l.aggregate)).collect();
        m.loaded = true;
        Ok(())
    }

    /// Re-reads the group graph only (the baselines stay: a change not yet
    /// published is still published).
    async fn refresh_index(&self) -> Result<()> {
        let model = self.store.model().await?;
        let index = Arc::new(GraphIndex::new(&model));
        self.memory.lock().index = index;
        Ok(())
    }

    /// Recomputes the aggregates of every group and location `checks` are
    /// in (each once, in one query per kind) and publishes those that
    /// changed since last published.
    pub(super) async fn publish_aggregates(&self, checks: &[CheckId]) -> Result<()> {
        if !self.remember {
            return self.publish_current_aggregates(checks).await;
        }
        // One caller at a time from here: read the aggregates, compare with
        // the last published, publish.
        let _serial = self.aggregates.lock().await;
        if !self.memory.lock().loaded {
            self.refresh_model().await?;
            // The baseline already includes the change: publish the
            // aggregates once anyway, so subscribers see them.
            let mut m = self.memory.lock();
            m.groups.clear();
            m.locations.clear();
        }
        let mut index = Arc::clone(&self.memory.lock().index);
        if checks.iter().any(|c| index.check_index(*c).is_none()) {
            // A check the graph does not know yet: the model changed.
            self.refresh_index().await?;
            index = Arc::clone(&self.memory.lock().index);
        }
        let mut groups = BTreeSet::new();
        let mut locations = BTreeSet::new();
        for c in checks {
            groups.extend(index.ancestor_groups(*c).unwrap_or_default());
            locations.extend(index.ancestor_locations(*c).unwrap_or_default());
        }
        let at = Utc::now();
        let mut current = Vec::new();
        if !groups.is_empty() {
            let groups: Vec<GroupId> = groups.into_iter().collect();
            let states = self.store.group_states_of(&groups).await?;
            current.extend(states.into_iter().map(|g| group_update(g, at)));
        }
        if !locations.is_empty() {
            let locations: Vec<LocationId> = locations.into_iter().collect();
            let states = self.store.location_states_of(&locations).await?;
            current.extend(states.into_iter().map(|l| location_update(l, at)));
        }
        let updates: Vec<Update> = {
            let m = self.memory.lock();
            current.into_iter().filter(|u| !m.published(u)).collect()
        };
        publish_all(&*self.queue, &updates).await?;
        // Remembered once published: a failed publish is published again.
        let mut m = self.memory.lock();
        for u in updates {
            m.remember(u);
        }
        Ok(())
    }

    /// Marks checks whose contribution to aggregates changed, for the
    /// aggregate task of [`Processor::run`].
    pub(super) fn mark_dirty(&self, checks: impl IntoIterator<Item = CheckId>) {
        let mut dirty = self.dirty.lock();
        let before = dirty.len();
        dirty.extend(checks);
        if dirty.len() > before {
            self.dirty_notify.notify_one();
        }
    }

    /// Recomputes and publishes the aggregates of the dirty checks until
    /// `stop` is set: at most one recomputation at a time, then a pause of
    /// [`AGGREGATE_MIN_GAP`] or four times the recomputation's duration,
    /// whichever is longer; changes marked meanwhile are coalesced. Also
    /// re-reads the group graph every [`MODEL_REFRESH`].
    pub(super) async fn aggregator(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        let stopped = super::lanes::stopped(stop);
        tokio::pin!(stopped);
        let mut backoff = Backoff::default();
        let mut refresh = tokio::time::interval(MODEL_REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.reset();
        loop {
            tokio::select! {
                biased;
                () = &mut stopped => return,
                _ = refresh.tick() => {
                    if let Err(e) = self.refresh_index().await {
                        tracing::warn!(error = %e, "re-reading the group graph failed");
                    }
                    continue;
                }
                () = self.dirty_notify.notified() => {}
            }
            let checks: Vec<CheckId> = self.dirty.lock().drain().collect();
            if checks.is_empty() {
                continue;
            }
            let started = tokio::time::Instant::now();
            let pause = match self.publish_aggregates(&checks).await {
                Ok(()) => {
                    backoff.reset();
                    (started.elapsed() * 4).max(AGGREGATE_MIN_GAP)
                }
                Err(e) => {
                    let wait = backoff.next();
                    tracing::warn!(error = %e, retry_in = ?wait, "recomputing aggregates failed");
                    self.mark_dirty(checks);
                    wait
                }
            };
            tokio::select! {
                biased;
                () = &mut stopped => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Publishes the current aggregate of every group and location
    /// `checks` are in, as the store says (no graph, no memory): the
    /// aggregates of a processor [`Processor::without_memory`].
    async fn publish_current_aggregates(&self, checks: &[CheckId]) -> Result<()> {
        let at = Utc::now();
        for &check in checks {
            let groups = self.store.ancestor_groups(check).await?;
            for g in self.store.group_states_of(&groups).await? {
                self.queue.publish_update(group_update(g, at)).await?;
            }
            let locations = self.store.ancestor_locations(check).await?;
            for l in self.store.location_states_of(&locations).await? {
                self.queue.publish_update(location_update(l, at)).await?;
            }
        }
        Ok(())
    }
}

impl Memory {
    /// Whether `u` carries the aggregate last published for its group or
    /// location.
    fn published(&self, u: &Update) -> bool {
        match u {
            Update::Group(g) => self.groups.get(&g.group_id) == Some(&g.aggregate),
            Update::Location(l) => self.locations.get(&l.location_id) == Some(&l.aggregate),
            _ => false,
        }
    }

    /// Remembers `u`'s aggregate as the one published.
    fn remember(&mut self, u: Update) {
        match u {
            Update::Group(g) => {
                self.groups.insert(g.group_id, g.aggregate);
            }
            Update::Location(l) => {
                self.locations.insert(l.location_id, l.aggregate);
            }
            _ => {}
        }
    }
}

fn group_update(g: GroupState, at: DateTime<Utc>) -> Update {
    Update::Group(GroupUpdate {
        group_id: g.id,
        aggregate: g.aggregate,
        at,
    })
}

fn location_update(l: LocationState, at: DateTime<Utc>) -> Update {
    Update::Location(LocationUpdate {
        location_id: l.id,
        aggregate: l.aggregate,
        at,
    })
}
