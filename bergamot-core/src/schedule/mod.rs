//! The scheduler: when each check runs.
//!
//! Decide, then act. [`Schedule`] is a pure, deterministic structure that
//! holds every scheduled check with its current interval and next due time
//! and, given a time, decides what is due ([`Schedule::due`]). [`Scheduler`]
//! is the thin async driver around it: it publishes the executes through a
//! [`Queue`](crate::queue::Queue), applies
//! [`SchedulerControl`](crate::queue::SchedulerControl) messages and reloads,
//! and stops on a shutdown future.
//!
//! - **Spread**: a check's first run is at its [`spread_offset`] (a hash of
//!   its id modulo its interval) after start or after the reload that added
//!   it, so a thousand checks with one interval never fire together.
//! - **Interval**: initially `policy.every`; then whatever the processor's
//!   `Reschedule` says (the state machine's next interval). A shorter
//!   interval brings the next run to at most that interval from now.
//! - **Lag**: a check popped more than `lag_threshold` late is re-spread over
//!   a short catch-up window instead of firing with everything else that
//!   piled up; it runs once however many intervals it missed.
//! - **Partitions**: each check belongs to partition [`partition_of`]`(id, P)`;
//!   a schedule dispatches only the partitions it owns
//!   ([`Schedule::set_owned_partitions`], all by default), and the driver
//!   follows a [`PartitionOwner`] when given one. A gained partition resumes
//!   each check's cadence from its last run ([`Schedule::resume`]).
//!
//! The design is written up in `docs/scheduler.md`.
//!
//! ```
//! use bergamot_core::model::{Check, CheckId, Model, Policy};
//! use bergamot_core::schedule::{Schedule, ScheduleConfig};
//! use std::time::Duration;
//! use tokio::time::Instant;
//!
//! let id = CheckId::host("site", "web1");
//! let check = Check::host("site", "web1")
//!     .engine("dummy")
//!     .policy(Policy::builder().every(Duration::from_secs(60)).build())
//!     .build();
//! let model = Model { site: "site".into(), checks: vec![check], ..Model::default() };
//!
//! let start = Instant::now();
//! let mut schedule = Schedule::new(ScheduleConfig::default(), start);
//! schedule.apply_model(&model, start);
//! // The first run is spread within the interval by a hash of the id.
//! let first = schedule.next_due(id).expect("scheduled");
//! assert!(first < start + Duration::from_secs(60));
//! assert!(schedule.due(first - Duration::from_millis(1), chrono::Utc::now()).is_empty());
//! let executes = schedule.due(first, chrono::Utc::now());
//! assert_eq!(executes.len(), 1);
//! assert_eq!(executes[0].ttl, Duration::from_secs(60));
//! // Then every interval.
//! assert_eq!(schedule.next_due(id), Some(first + Duration::from_secs(60)));
//! ```

mod driver;
mod owner;
mod table;
#[cfg(test)]
mod tests;

#[cfg(test)]
use driver::WallClock;
pub use driver::{Scheduler, SchedulerConfig, SchedulerHandle};
pub use owner::{AllPartitions, PartitionOwner};
pub use table::{
    partition_of, spread_offset, Dispatch, OwnershipChange, ReloadSummary, Schedule,
    ScheduleConfig, SchedulerStats, DEFAULT_PARTITIONS,
};
