//! A circuit breaker per policy: a policy that keeps missing its deadline
//! runs one evaluation at a time until one ends in time. A looping policy
//! then costs one thread, not one per concurrent review, and its failure
//! policy answers for the reviews it sits out.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Deadlines missed in a row that open the circuit. One miss can be a
/// slow moment of the machine; three in a row is the policy.
const TRIP_AFTER: u32 = 3;

#[derive(Debug, Default)]
pub struct Breaker {
    /// Deadlines missed in a row.
    misses: AtomicU32,
    /// An evaluation is running while the circuit is open.
    probing: AtomicBool,
}

/// Leave to run the policy now; while the circuit is open, the one
/// evaluation allowed at a time.
pub struct Ticket<'a> {
    probe: Option<&'a AtomicBool>,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Some(probing) = self.probe {
            probing.store(false, Ordering::Release);
        }
    }
}

impl Breaker {
    /// Whether the policy keeps missing its deadline.
    pub fn is_open(&self) -> bool {
        self.misses() >= TRIP_AFTER
    }

    pub fn misses(&self) -> u32 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Leave to run: always while closed; while open, only if no other
    /// evaluation of the policy is running.
    pub(super) fn admit(&self) -> Option<Ticket<'_>> {
        if !self.is_open() {
            return Some(Ticket { probe: None });
        }
        self.probing
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Ticket {
                probe: Some(&self.probing),
            })
    }

    /// Records how an evaluation of the policy ended.
    pub(super) fn record(&self, missed_deadline: bool) {
        if missed_deadline {
            let _ = self
                .misses
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_add(1))
                });
        } else if self.misses() != 0 {
            self.misses.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_misses_in_a_row_and_closes_on_a_success() {
        let breaker = Breaker::default();
        for _ in 0..TRIP_AFTER - 1 {
            breaker.record(true);
        }
        breaker.record(false);
        assert!(!breaker.is_open(), "a success resets the count");
        for _ in 0..TRIP_AFTER {
            breaker.record(true);
        }
        assert!(breaker.is_open());
        let probe = breaker.admit().expect("one evaluation may run");
        assert!(breaker.admit().is_none(), "only one at a time");
        drop(probe);
        let probe = breaker.admit().expect("the next one may run");
        breaker.record(false);
        drop(probe);
        assert!(!breaker.is_open());
        assert!(breaker.admit().is_some() && breaker.admit().is_some());
    }
}
