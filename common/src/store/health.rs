//! `/health` without a database query per call: the answer is kept for `HEALTH_CACHE_MS`, so
//! a load balancer or uptime check polling every second costs one query per interval per
//! process (and cannot keep an auto-pausing database awake on its own faster than that).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::HealthCheck;
use crate::error::StoreError;

/// A failure is kept at most this long: a database coming back is seen within a second.
const FAILURE_CACHE: Duration = Duration::from_secs(1);

/// A health check that asks the database at most once per interval.
pub struct CachedHealth {
    inner: Arc<dyn HealthCheck>,
    ok_for: Duration,
    last: Mutex<Option<(Instant, bool)>>,
}

impl CachedHealth {
    /// Keeps a success for `ok_for` and a failure for at most a second.
    pub fn new(inner: Arc<dyn HealthCheck>, ok_for: Duration) -> Self {
        Self {
            inner,
            ok_for,
            last: Mutex::new(None),
        }
    }
}

#[async_trait]
impl HealthCheck for CachedHealth {
    async fn ping(&self) -> Result<(), StoreError> {
        let cached = *self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, ok)) = cached {
            let keep = if ok {
                self.ok_for
            } else {
                FAILURE_CACHE.min(self.ok_for)
            };
            if at.elapsed() < keep {
                return if ok { Ok(()) } else { Err(StoreError::Cached) };
            }
        }
        let result = self.inner.ping().await;
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), result.is_ok()));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(AtomicUsize);

    #[async_trait]
    impl HealthCheck for Counting {
        async fn ping(&self) -> Result<(), StoreError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_database_is_asked_once_per_interval() {
        let inner = Arc::new(Counting(AtomicUsize::new(0)));
        let cached = CachedHealth::new(inner.clone(), Duration::from_secs(60));
        for _ in 0..10 {
            cached.ping().await.unwrap();
        }
        assert_eq!(inner.0.load(Ordering::SeqCst), 1);
        let uncached = CachedHealth::new(inner.clone(), Duration::ZERO);
        uncached.ping().await.unwrap();
        uncached.ping().await.unwrap();
        assert_eq!(inner.0.load(Ordering::SeqCst), 3);
    }
}
