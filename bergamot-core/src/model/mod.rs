//! Plain data: ids, statuses, checks, groups, locations, results and the
//! resolved model that a configuration loads to.

mod check;
pub(crate) use check::{opt_secs as opt_secs_serde, secs as secs_serde};
mod ids;
mod result;
mod status;

pub use check::{Check, CheckBuilder, CheckKind, Group, Location, Model, Policy, PolicyBuilder};
pub use ids::{CheckId, GroupId, LocationId, ResultId};
pub use result::{CheckResult, Perfdata, ResultLimits, DEFAULT_MAX_OUTPUT, DEFAULT_MAX_SKEW};
pub use status::{Status, UnknownStatus};
