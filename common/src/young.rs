//! Ids named before their row exists. A turn's `start` event names its id at once, but its row is
//! written a moment later (once its first text is on its way, or after 100 ms), so a request that
//! names a turn just started, in this process or another, may come first. Every route that takes
//! a turn's id looks again, with backoff, while the id's own time stamp (a UUIDv7 holds it) says
//! the turn began less than [`GRACE`] ago. Anything else costs one look: an id that is not a
//! UUIDv7, one stamped earlier, or one stamped in the future (crafted, or from a clock far ahead).

use std::future::Future;
use std::time::{Duration, SystemTime};

use uuid::Uuid;

/// How long after its start a turn's row may still be missing.
pub const GRACE: Duration = Duration::from_secs(2);

/// How far ahead of this clock an id may be stamped and still count as just made (another
/// process's clock may run a little ahead).
pub const CLOCK_SKEW: Duration = Duration::from_millis(250);

/// The waits between looks: doubling from 25 ms to 400 ms, so at most 9 more looks in [`GRACE`].
const FIRST_WAIT: Duration = Duration::from_millis(25);
const LONGEST_WAIT: Duration = Duration::from_millis(400);

/// Runs `look` until it finds the row; while the id says the turn began less than [`GRACE`]
/// ago, a row not found yet is looked for again after a wait that doubles (at most about 10
/// looks in all). Errors end the wait at once.
pub async fn awaiting_row<T, E, F, Fut>(id: Uuid, mut look: F) -> Result<Option<T>, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    let until = tokio::time::Instant::now() + grace_left(id, SystemTime::now());
    let mut wait = FIRST_WAIT;
    loop {
        if let Some(found) = look().await? {
            return Ok(Some(found));
        }
        let now = tokio::time::Instant::now();
        if now >= until {
            return Ok(None);
        }
        tokio::time::sleep(wait.min(until - now)).await;
        wait = (wait * 2).min(LONGEST_WAIT);
    }
}

/// What is left of [`GRACE`] for a turn with this id: zero for an id that is not a UUIDv7, for
/// one stamped more than [`GRACE`] ago, and for one stamped more than [`CLOCK_SKEW`] ahead of
/// `now`; never more than [`GRACE`].
pub fn grace_left(id: Uuid, now: SystemTime) -> Duration {
    if id.get_version_num() != 7 {
        return Duration::ZERO;
    }
    let Some((secs, nanos)) = id.get_timestamp().map(|t| t.to_unix()) else {
        return Duration::ZERO;
    };
    let stamped = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
    match stamped.duration_since(now) {
        // Ahead of this clock: within the skew, as if made now; beyond it, not waited for.
        Ok(ahead) if ahead > CLOCK_SKEW => Duration::ZERO,
        Ok(_) => GRACE,
        Err(behind) => GRACE.saturating_sub(behind.duration()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped(t: SystemTime) -> Uuid {
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, d.as_secs(), d.subsec_nanos());
        Uuid::new_v7(ts)
    }

    #[test]
    fn only_an_id_stamped_moments_ago_is_waited_for() {
        let now = SystemTime::now();
        let just = grace_left(stamped(now - Duration::from_millis(500)), now);
        assert!(just > Duration::from_millis(1400) && just <= Duration::from_millis(1500));
        assert_eq!(
            grace_left(stamped(now - Duration::from_secs(3)), now),
            Duration::ZERO
        );
        // A clock a little ahead is a turn just made; an id from the future is not.
        assert_eq!(
            grace_left(stamped(now + Duration::from_millis(100)), now),
            GRACE
        );
        assert_eq!(
            grace_left(stamped(now + Duration::from_secs(1)), now),
            Duration::ZERO
        );
        assert_eq!(
            grace_left(stamped(now + Duration::from_secs(3600)), now),
            Duration::ZERO
        );
        assert_eq!(
            grace_left(Uuid::from_u128(0x1234_5678), now),
            Duration::ZERO
        );
        assert_eq!(grace_left(Uuid::nil(), now), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_young_row_costs_at_most_ten_looks() {
        let id = stamped(SystemTime::now());
        let mut looks = 0;
        let started = tokio::time::Instant::now();
        let found: Result<Option<()>, ()> = awaiting_row(id, || {
            looks += 1;
            async { Ok(None) }
        })
        .await;
        assert_eq!(found, Ok(None));
        assert!(looks <= 10, "{looks} looks");
        assert!(started.elapsed() <= GRACE + Duration::from_millis(10));
        // An old id: one look.
        let mut looks = 0;
        let old = stamped(SystemTime::now() - Duration::from_secs(10));
        let _: Result<Option<()>, ()> = awaiting_row(old, || {
            looks += 1;
            async { Ok(None) }
        })
        .await;
        assert_eq!(looks, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_row_that_appears_is_found() {
        let id = stamped(SystemTime::now());
        let mut looks = 0;
        let found: Result<Option<u8>, ()> = awaiting_row(id, || {
            looks += 1;
            let n = looks;
            async move { Ok((n == 3).then_some(7)) }
        })
        .await;
        assert_eq!(found, Ok(Some(7)));
    }
}
