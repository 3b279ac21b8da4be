//! Retrying failing store and queue calls in place, with a backoff.

use super::*;

/// Whether an error is about the input (retrying cannot help): such
/// deliveries are dropped, everything else is retried.
pub(super) fn is_bad_input(e: &Error) -> bool {
    matches!(
        e,
        Error::NotFound { .. } | Error::InvalidInput(_) | Error::Decode(_)
    )
}

/// Runs `f` until it succeeds, fails on bad input, or has failed for
/// [`RETRY_IN_PLACE`] (then returns its last error), sleeping `backoff`
/// between attempts. `None` when `shutdown` completed while waiting (the
/// caller must not poll it again).
pub(super) async fn retry_in_place<T, F, Fut>(
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    backoff: &mut Backoff,
    what: &impl Fn() -> String,
    mut f: F,
) -> Option<Result<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let started = tokio::time::Instant::now();
    loop {
        match f().await {
            Err(e) if !is_bad_input(&e) && started.elapsed() < RETRY_IN_PLACE => {
                let wait = backoff.next();
                tracing::warn!(error = %e, retry_in = ?wait, "{} failed; retrying", what());
                tokio::select! {
                    biased;
                    () = shutdown.as_mut() => {
                        tracing::info!("shutting down: leaving {} unacked for redelivery", what());
                        return None;
                    }
                    () = tokio::time::sleep(wait) => {}
                }
            }
            other => return Some(other),
        }
    }
}

/// Exponential backoff between retries of failing store calls.
#[derive(Debug)]
pub(super) struct Backoff {
    current: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            current: Duration::from_millis(100),
        }
    }
}

impl Backoff {
    pub(super) fn next(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(Duration::from_secs(5));
        d
    }

    pub(super) fn reset(&mut self) {
        *self = Backoff::default();
    }
}
