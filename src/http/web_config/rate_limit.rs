//! `rate_limit`: one token bucket for the whole server, as exporter-toolkit has.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::file::{Ctx, RawRateLimit, WebConfigError};

/// A token bucket like Go's `rate.NewLimiter(rate.Every(interval), burst)`.
pub(super) struct RateLimiter {
    interval: Duration,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// Takes a token if one is left.
    pub(super) fn allow(&self) -> bool {
        let mut state = self.state.lock();
        let now = Instant::now();
        let refill = now.duration_since(state.1).as_secs_f64() / self.interval.as_secs_f64();
        state.0 = (state.0 + refill).min(self.burst);
        state.1 = now;
        if state.0 >= 1.0 {
            state.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The limiter `rate_limit` asks for; `None` without an interval (no limit).
pub(super) fn build_rate_limiter(
    ctx: &Ctx<'_>,
    raw: RawRateLimit,
) -> Result<Option<RateLimiter>, WebConfigError> {
    let interval = match raw.interval.as_deref() {
        None | Some("") => return Ok(None),
        Some(text) => crate::time::parse_go_duration(text).map_err(|_| {
            ctx.invalid("rate_limit: interval", format!("invalid duration {text:?}"))
        })?,
    };
    if interval.is_zero() {
        return Ok(None);
    }
    let burst = f64::from(raw.burst.unwrap_or(0));
    Ok(Some(RateLimiter {
        interval,
        burst,
        state: Mutex::new((burst, Instant::now())),
    }))
}
