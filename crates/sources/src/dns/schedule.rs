//! When each name is looked up next.
//!
//! A name is due again when its records expire (its TTL), but never sooner than
//! `min_refresh` (a TTL of 0 must not become a query loop) and never later than
//! `max_refresh` (a day-long TTL must not hide a change for a day). Names that fall due
//! within a few milliseconds of each other are looked up in one round, so a thousand
//! names with equal TTLs cost one snapshot per refresh, not a thousand.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

/// Names due within this much of the first due one join its round.
pub(super) const COALESCE: Duration = Duration::from_millis(50);

/// The pause before a name is looked up again, given the smallest TTL (seconds) of
/// the records its last answer held.
pub fn refresh_after(ttl_seconds: u32, min: Duration, max: Duration) -> Duration {
    Duration::from_secs(u64::from(ttl_seconds)).clamp(min, max.max(min))
}

/// Each name's next lookup, by its index in the configured list.
pub(super) struct Schedule {
    due: BTreeSet<(Instant, usize)>,
    at: Vec<Instant>,
}

impl Schedule {
    /// Every one of `count` names due now.
    pub(super) fn new(count: usize) -> Schedule {
        let now = Instant::now();
        Schedule {
            due: (0..count).map(|i| (now, i)).collect(),
            at: vec![now; count],
        }
    }

    pub(super) fn set(&mut self, index: usize, at: Instant) {
        self.due.remove(&(self.at[index], index));
        self.at[index] = at;
        self.due.insert((at, index));
    }

    /// When the next name is due; `None` when there is no name at all.
    pub(super) fn next(&self) -> Option<Instant> {
        self.due.first().map(|(at, _)| *at)
    }

    /// Takes every name due by `now` (plus [`COALESCE`]). A taken name is not due again
    /// until [`Schedule::set`] says when.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<usize> {
        let limit = now + COALESCE;
        let mut taken = Vec::new();
        while let Some(&(at, index)) = self.due.first() {
            if at > limit {
                break;
            }
            self.due.pop_first();
            taken.push(index);
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(5);
    const MAX: Duration = Duration::from_secs(300);

    #[test]
    fn the_ttl_sets_the_refresh_within_min_and_max() {
        assert_eq!(refresh_after(30, MIN, MAX), Duration::from_secs(30));
        assert_eq!(refresh_after(0, MIN, MAX), MIN, "a TTL of 0 waits the minimum");
        assert_eq!(
            refresh_after(86_400, MIN, MAX),
            MAX,
            "a day-long TTL waits the maximum"
        );
        assert_eq!(refresh_after(u32::MAX, MIN, MAX), MAX);
        assert_eq!(
            refresh_after(10, MIN, Duration::from_secs(1)),
            MIN,
            "a maximum below the minimum never panics"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_is_due_again_after_its_ttl_and_names_due_together_share_a_round() {
        let mut schedule = Schedule::new(3);
        assert_eq!(
            schedule.take_due(Instant::now()),
            [0, 1, 2],
            "everything is due at start"
        );
        assert_eq!(schedule.next(), None, "taken names wait for their answers");

        let answered = Instant::now();
        schedule.set(0, answered + refresh_after(30, MIN, MAX));
        schedule.set(1, answered + refresh_after(0, MIN, MAX));
        schedule.set(
            2,
            answered + refresh_after(30, MIN, MAX) + Duration::from_millis(10),
        );

        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(
            schedule.take_due(Instant::now()).is_empty(),
            "nothing is due before the minimum"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(schedule.next(), Some(answered + MIN));
        assert_eq!(
            schedule.take_due(Instant::now()),
            [1],
            "the TTL-0 name after the minimum"
        );
        schedule.set(1, Instant::now() + MIN);

        tokio::time::sleep_until(schedule.next().unwrap()).await;
        assert_eq!(Instant::now() - answered, Duration::from_secs(10));
        assert_eq!(schedule.take_due(Instant::now()), [1]);
        schedule.set(1, Instant::now() + MAX);

        tokio::time::advance(Duration::from_secs(19)).await;
        assert!(
            schedule.take_due(Instant::now()).is_empty(),
            "the 30 s TTL has not expired"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            schedule.take_due(Instant::now()),
            [0, 2],
            "names due within a few milliseconds are looked up together"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn setting_a_name_again_replaces_its_previous_time() {
        let mut schedule = Schedule::new(1);
        schedule.take_due(Instant::now());
        schedule.set(0, Instant::now() + Duration::from_secs(1));
        schedule.set(0, Instant::now() + Duration::from_secs(60));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(schedule.take_due(Instant::now()).is_empty());
        assert_eq!(schedule.next(), Some(Instant::now() + Duration::from_secs(58)));
    }
}
