//! The lanes of [`Processor::run`]: deliveries in, applied in batches, published, settled.

use super::retry::{is_bad_input, retry_in_place, Backoff};
use super::*;

impl Processor {
    /// Consumes results and dead checks until `shutdown` completes.
    ///
    /// Deliveries are spread by check id over [`Processor::with_lanes`]
    /// lanes that work at once. A lane takes every delivery that has
    /// arrived (up to [`Processor::with_batch`]), applies them in arrival
    /// order in one [`Store::apply_results`] call (one transaction on
    /// PostgreSQL), publishes the check and alert updates and the
    /// reschedules, and then acks them: one check's results (and dead
    /// checks) are applied in the order they arrive, and each delivery is
    /// acked after its effect is durable. Group and location aggregates
    /// are recomputed by a task of their own for every check whose
    /// contribution changed, coalesced: at most one recomputation at a time,
    /// [`AGGREGATE_MIN_GAP`] apart at least.
    ///
    /// A store or queue error is retried *in place*, holding the
    /// deliveries, with a backoff (100 ms doubling up to 5 s, reset on
    /// success) for up to [`RETRY_IN_PLACE`]: the lane takes nothing else
    /// meanwhile, so a database restart neither reorders one check's
    /// results (a requeued result would come back behind newer ones and be
    /// dropped as stale) nor loses any. After that the deliveries are
    /// nacked with requeue and the lane goes on. On shutdown each lane
    /// finishes the batch it applies (or, during a retry, leaves it
    /// unacked); deliveries not yet taken are left unacked (the queue
    /// redelivers them). Results of unknown checks are logged and acked;
    /// a result the store refuses as bad data (on PostgreSQL: SQLSTATE class
    /// 22, 23 or 54, e.g. a NUL byte or a constraint violation) is a
    /// permanent error of that one result: a batch refused as a whole is
    /// applied one by one, and only the refused result is moved to the
    /// poison queue ([`Acker::poison`]) with the reason, so it cannot block
    /// a lane. Before that, [`Processor::with_limits`] cuts outputs to
    /// their caps and poisons results dated too far ahead. Due downtimes are
    /// applied every [`DOWNTIME_TICK`], by a task of their own.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let this = Arc::new(self);
        let mut results = this.queue.consume_results().await?;
        let mut dead = this.queue.consume_dead_checks().await?;
        let mut backoff = Backoff::default();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut lanes = tokio::task::JoinSet::new();
        // Downtimes in a task of their own: the query scans every state, and
        // the deliveries must not wait for it. Aggregates too.
        lanes.spawn(Arc::clone(&this).downtimes(stop_rx.clone()));
        lanes.spawn(Arc::clone(&this).aggregator(stop_rx.clone()));
        let mut senders = Vec::with_capacity(this.lanes);
        for _ in 0..this.lanes {
            let (tx, rx) = tokio::sync::mpsc::channel(this.batch);
            senders.push(tx);
            lanes.spawn(Arc::clone(&this).lane(rx, stop_rx.clone()));
        }
        let lane_of = |check: CheckId| {
            let v = check.0.as_u128();
            ((v as u64 ^ (v >> 64) as u64) % senders.len() as u64) as usize
        };
        tokio::pin!(shutdown);
        let outcome = loop {
            let work = tokio::select! {
                _ = &mut shutdown => break Ok(()),
                d = results.next() => Self::delivered(d, "result", &mut backoff).await
                    .map(|d| d.map(Work::Result)),
                d = dead.next() => Self::delivered(d, "dead check", &mut backoff).await
                    .map(|d| d.map(Work::Dead)),
            };
            let work = match work {
                Err(e) => break Err(e),
                Ok(None) => continue,
                Ok(Some(work)) => {
                    backoff.reset();
                    work
                }
            };
            let lane = match &work {
                Work::Result(d) => lane_of(d.message.check_id),
                Work::Dead(d) => lane_of(d.message.execute.check_id),
            };
            tokio::select! {
                _ = &mut shutdown => break Ok(()),
                sent = senders[lane].send(work) => {
                    if sent.is_err() {
                        break Err(Error::Closed("a result processing lane stopped".into()));
                    }
                }
            }
        };
        stop_tx.send(true).ok();
        drop(senders);
        while let Some(joined) = lanes.join_next().await {
            if let Err(e) = joined {
                tracing::error!(error = %e, "result processing lane panicked");
            }
        }
        outcome
    }

    /// Applies due downtimes every [`DOWNTIME_TICK`] until `stop` is set.
    async fn downtimes(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(DOWNTIME_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopped = stopped(stop);
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                biased;
                () = &mut stopped => return,
                _ = tick.tick() => {
                    if let Err(e) = self.apply_due_downtimes(Utc::now()).await {
                        tracing::warn!(error = %e, "applying due downtimes failed");
                    }
                }
            }
        }
    }

    /// One lane of [`Processor::run`]: applies its deliveries in order, in
    /// batches, until `stop` is set or its channel closes.
    async fn lane(
        self: Arc<Self>,
        mut rx: tokio::sync::mpsc::Receiver<Work>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut backoff = Backoff::default();
        let stopped = stopped(stop);
        tokio::pin!(stopped);
        loop {
            let first = tokio::select! {
                biased;
                () = &mut stopped => return,
                w = rx.recv() => match w {
                    Some(w) => w,
                    None => return,
                },
            };
            let mut batch = vec![first];
            while batch.len() < self.batch {
                match rx.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            if !self
                .apply_batch(batch, stopped.as_mut(), &mut backoff)
                .await
            {
                return;
            }
        }
    }

    /// Applies one lane's batch (see [`Processor::run`]); false when
    /// `stopped` completed meanwhile (the caller must not poll it again).
    async fn apply_batch(
        &self,
        batch: Vec<Work>,
        mut stopped: std::pin::Pin<&mut impl Future<Output = ()>>,
        backoff: &mut Backoff,
    ) -> bool {
        let mut results = Vec::with_capacity(batch.len());
        let mut ackers = Vec::with_capacity(batch.len());
        let now = Utc::now();
        for work in batch {
            let (mut result, acker) = match work {
                Work::Result(d) => d.into_parts(),
                Work::Dead(d) => {
                    let (dc, acker) = d.into_parts();
                    if self.no_worker_yet(&dc) {
                        // Dropped: "no worker yet" (with_no_worker_grace).
                        if let Err(e) = acker.ack().await {
                            tracing::warn!(error = %e, "cannot ack a no-worker-yet dead check");
                        }
                        continue;
                    }
                    (dc.to_result(), acker)
                }
            };
            if let Err(reason) = result.check_clock(now, &self.limits) {
                let what = describe(std::slice::from_ref(&result));
                poison(acker, format!("{what}: {reason}"), &what).await;
                continue;
            }
            if result.cap_output(&self.limits) {
                tracing::debug!(
                    "output of {} cut to the output caps",
                    describe(std::slice::from_ref(&result))
                );
            }
            results.push(result);
            ackers.push(acker);
        }
        if results.is_empty() {
            return true;
        }
        match self
            .apply_chunk(results, ackers, stopped.as_mut(), backoff)
            .await
        {
            Chunk::Done => true,
            Chunk::Stopped => false,
            // The batch as a whole was refused as bad input: one result
            // spoils it. Apply them one by one, so only that one is dropped.
            Chunk::Split(results, ackers) => {
                for (r, a) in results.into_iter().zip(ackers) {
                    let one = self.apply_chunk(vec![r], vec![a], stopped.as_mut(), backoff);
                    if matches!(one.await, Chunk::Stopped) {
                        return false;
                    }
                }
                true
            }
        }
    }

    /// Applies results in one store call, publishes, acks (see
    /// [`Processor::run`]).
    async fn apply_chunk(
        &self,
        results: Vec<CheckResult>,
        ackers: Vec<Box<dyn Acker>>,
        mut stopped: std::pin::Pin<&mut impl Future<Output = ()>>,
        backoff: &mut Backoff,
    ) -> Chunk {
        let what = || describe(&results);
        let applied = retry_in_place(stopped.as_mut(), backoff, &what, || {
            self.store.apply_results(&results, Utc::now())
        })
        .await;
        let outcomes = match applied {
            None => return Chunk::Stopped,
            Some(Ok(outcomes)) if outcomes.len() == results.len() => outcomes,
            Some(Ok(outcomes)) => {
                let e = Error::Closed(format!(
                    "the store returned {} outcomes for {} results",
                    outcomes.len(),
                    results.len()
                ));
                self.settle_all(e, ackers, backoff, what).await;
                return Chunk::Done;
            }
            Some(Err(e)) if is_bad_input(&e) && results.len() > 1 => {
                tracing::warn!(error = %e, "{} refused as a whole; applying them one by one", what());
                return Chunk::Split(results, ackers);
            }
            Some(Err(e)) => {
                self.settle_all(e, ackers, backoff, what).await;
                return Chunk::Done;
            }
        };
        // What the applied transitions mean, in arrival order.
        let now = Utc::now();
        let mut updates = Vec::new();
        let mut controls = Vec::new();
        let mut changed = Vec::new();
        let mut settle = Vec::with_capacity(ackers.len());
        for ((result, outcome), acker) in results.iter().zip(outcomes).zip(ackers) {
            match outcome {
                Ok(t) => {
                    if t.is_applied() {
                        let check = result.check_id;
                        if t.interval_changed {
                            controls.push(reschedule(check, &t));
                        }
                        if t.contribution_changed {
                            changed.push(check);
                        }
                        updates.extend(transition_updates(check, &t, now));
                    }
                    settle.push((acker, Ok(())));
                }
                Err(e) => {
                    let what = describe(std::slice::from_ref(result));
                    settle.push((acker, Err((e, what))));
                }
            }
        }
        let published = retry_in_place(stopped.as_mut(), backoff, &what, || async {
            publish_all(&*self.queue, &updates).await?;
            futures::future::try_join_all(
                controls
                    .iter()
                    .map(|c| self.queue.publish_control(c.clone())),
            )
            .await
            .map(|_| ())
        })
        .await;
        match published {
            None => return Chunk::Stopped,
            Some(Ok(())) => {}
            // The store applied them: a redelivery would be a duplicate
            // and publish nothing either, so ack anyway.
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot publish the updates of {}; they are lost", what())
            }
        }
        let loaded = self.memory.lock().loaded;
        if !loaded && !results.is_empty() {
            // The first batch after start: publish every aggregate it touched.
            changed.extend(results.iter().map(|r| r.check_id));
        }
        self.mark_dirty(changed);
        let mut failed = false;
        let acks = settle.into_iter().map(|(acker, outcome)| async move {
            match outcome {
                Ok(()) => acker.ack().await.map_err(|e| (e, String::new())),
                Err((e, what)) if is_poison(&e) => {
                    poison(acker, format!("{what}: {e}"), &what).await;
                    Ok(())
                }
                Err((e, what)) if is_bad_input(&e) => {
                    tracing::warn!(error = %e, "dropping {what}");
                    acker.ack().await.map_err(|e| (e, what))
                }
                Err((e, what)) => {
                    tracing::error!(error = %e, "{what} failed; requeued");
                    acker.nack(true).await.map_err(|e| (e, what))
                }
            }
        });
        for settled in futures::future::join_all(acks).await {
            if let Err((e, w)) = settled {
                failed = true;
                tracing::warn!(error = %e, "cannot settle a delivery {w}");
            }
        }
        if !failed {
            backoff.reset();
        }
        Chunk::Done
    }

    /// One item of a delivery stream: the delivery, `None` after a stream
    /// error (logged, backed off: the backend reconnects), or an error when
    /// the stream ended for good.
    async fn delivered<T>(
        item: Option<Result<crate::queue::Delivery<T>>>,
        what: &str,
        backoff: &mut Backoff,
    ) -> Result<Option<crate::queue::Delivery<T>>> {
        match item {
            None => Err(Error::Closed(format!("{what} stream ended"))),
            Some(Ok(d)) => Ok(Some(d)),
            Some(Err(e)) => {
                let wait = backoff.next();
                tracing::warn!(error = %e, retry_in = ?wait, "{what} stream error");
                tokio::time::sleep(wait).await;
                Ok(None)
            }
        }
    }

    /// Settles deliveries whose store call failed: dropped (acked) on bad
    /// input, otherwise nacked with requeue after a backoff. A failing ack
    /// is only logged: the message comes again and is then a duplicate,
    /// which the store drops.
    async fn settle_all(
        &self,
        e: Error,
        ackers: Vec<Box<dyn Acker>>,
        backoff: &mut Backoff,
        what: impl Fn() -> String,
    ) {
        let bad = is_bad_input(&e);
        if is_poison(&e) {
            let reason = format!("{}: {e}", what());
            for a in ackers {
                poison(a, reason.clone(), &what()).await;
            }
            return;
        }
        if bad {
            tracing::warn!(error = %e, "dropping {}", what());
        } else {
            let wait = backoff.next();
            tracing::error!(error = %e, retry_in = ?wait, "{} still failing after {RETRY_IN_PLACE:?} of retries; requeued", what());
            tokio::time::sleep(wait).await;
        }
        let settled = futures::future::join_all(ackers.into_iter().map(|a| async move {
            if bad {
                a.ack().await
            } else {
                a.nack(true).await
            }
        }))
        .await;
        for r in settled {
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot settle {}", what());
            }
        }
    }
}

/// What [`Processor::apply_chunk`] did.
enum Chunk {
    /// Applied and settled.
    Done,
    /// Shutdown while retrying: left unacked.
    Stopped,
    /// Refused as a whole as bad input: apply one by one.
    Split(Vec<CheckResult>, Vec<Box<dyn Acker>>),
}

/// A delivery handed to a lane of [`Processor::run`].
enum Work {
    Result(crate::queue::Delivery<CheckResult>),
    Dead(crate::queue::Delivery<DeadCheck>),
}

/// Whether a bad-input error is about the message itself (the store
/// refused its data, or it cannot be decoded): such deliveries go to the
/// poison queue with the reason. Results of unknown checks (e.g. a check
/// just removed from the config) are only dropped.
fn is_poison(e: &Error) -> bool {
    matches!(e, Error::InvalidInput(_) | Error::Decode(_))
}

/// Moves one delivery to the poison queue ([`Acker::poison`]), logging why;
/// a failure to do so is logged (the delivery comes again).
async fn poison(acker: Box<dyn Acker>, reason: String, what: &str) {
    tracing::warn!(%reason, "moving {what} to the poison queue");
    if let Err(e) = acker.poison(reason).await {
        tracing::warn!(error = %e, "cannot poison {what}");
    }
}

/// Resolves once `stop` is set (or its sender is gone).
pub(super) async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    stop.wait_for(|s| *s).await.ok();
}
