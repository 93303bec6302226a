//! Relay sessions as the engine sees them: wanted, connecting, up, closing, or waiting to
//! retry.
//!
//! ```text
//!  want ──► Connecting ──relay_up──► Up ──relay_down──► Waiting(retry_at) ──timeout──► Connecting
//!               │                    │                    ▲
//!               │        a request failed (Closed/Timeout)│
//!               │                    ▼                    │
//!               │                 Closing ──relay_down────┤
//!               └────────relay_down───────────────────────┘
//! ```
//!
//! A request that failed with the session's end (or was timed out, which ends it) proves
//! the session gone before the driver's `relay_down` says so: the link is `Closing` from
//! then on, and nothing more is transmitted on it. Without that, a request retried at once
//! on the failure (the outbox does) would fail again at once, and an engine whose driver
//! answers such failures before it reports the end would retry forever without the clock
//! moving (the livelock the property test found).
//!
//! A session that failed is retried after an exponential backoff (250 ms doubling to
//! 30 s) with jitter — a uniformly drawn point in the upper half of the delay, so that
//! clients that lost the same relay do not all come back in the same millisecond. An up
//! session from which nothing was heard for [`PING_MS`] gets a PING, which keeps it alive
//! at the relay (idle timeout 120 s, `specs/protocol.md` §5) and finds a dead network
//! path: the driver times the PING out and reports the session down.

use petrel_federation::{RelayAddress, RelayKey};
use std::collections::BTreeMap;

/// First retry delay after a failure, in milliseconds.
pub const BACKOFF_MIN_MS: u64 = 250;
/// Longest retry delay, in milliseconds.
pub const BACKOFF_MAX_MS: u64 = 30_000;
/// Quiet time after which an up session is PINGed, in milliseconds.
pub const PING_MS: u64 = 45_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Up,
    /// Up until a request on it failed; its `relay_down` is on its way.
    Closing,
    Waiting {
        retry_at: u64,
    },
}

#[derive(Debug)]
struct Link {
    address: RelayAddress,
    state: State,
    failures: u32,
    last_heard: u64,
}

/// Every relay session the engine wants.
#[derive(Debug, Default)]
pub struct Links {
    links: BTreeMap<RelayKey, Link>,
}

/// The retry delay after `failures` failures in a row, placed by `jitter` in the upper
/// half of the exponential delay.
pub fn backoff_ms(failures: u32, jitter: u32) -> u64 {
    let exp = BACKOFF_MIN_MS.saturating_mul(1u64 << failures.saturating_sub(1).min(16));
    let delay = exp.min(BACKOFF_MAX_MS);
    let half = delay / 2;
    half + u64::from(jitter) % (delay - half + 1)
}

impl Links {
    /// Adds the relays not known yet; returns those to connect now.
    pub(super) fn want(&mut self, relays: Vec<RelayAddress>) -> Vec<RelayAddress> {
        let mut new = Vec::new();
        for address in relays {
            if self.links.contains_key(address.key()) {
                continue;
            }
            self.links.insert(
                *address.key(),
                Link {
                    address: address.clone(),
                    state: State::Connecting,
                    failures: 0,
                    last_heard: 0,
                },
            );
            new.push(address);
        }
        new
    }

    /// A session opened; false if the relay is not one the engine wants.
    pub(super) fn up(&mut self, relay: &RelayKey, now: u64) -> bool {
        match self.links.get_mut(relay) {
            Some(link) => {
                link.state = State::Up;
                link.failures = 0;
                link.last_heard = now;
                true
            }
            None => false,
        }
    }

    /// A session failed or ended; returns whether it had been up.
    pub(super) fn down(&mut self, relay: &RelayKey, now: u64, jitter: u32) -> bool {
        let Some(link) = self.links.get_mut(relay) else {
            return false;
        };
        let was_up = matches!(link.state, State::Up | State::Closing);
        link.failures = link.failures.saturating_add(1);
        link.state = State::Waiting {
            retry_at: now + backoff_ms(link.failures, jitter),
        };
        was_up
    }

    /// A request on `relay`'s session failed for want of the session: nothing more goes on
    /// it until the driver reports it down (and a new one up).
    pub(super) fn failed(&mut self, relay: &RelayKey) {
        if let Some(link) = self.links.get_mut(relay)
            && link.state == State::Up
        {
            link.state = State::Closing;
        }
    }

    /// Whether a session with `relay` is up.
    pub fn is_up(&self, relay: &RelayKey) -> bool {
        self.links.get(relay).is_some_and(|l| l.state == State::Up)
    }

    /// Whether a session with `relay` is being opened (the driver will report it up or
    /// down).
    pub(super) fn is_connecting(&self, relay: &RelayKey) -> bool {
        self.links
            .get(relay)
            .is_some_and(|l| l.state == State::Connecting)
    }

    /// Whether any session is being opened.
    pub(super) fn any_connecting(&self) -> bool {
        self.links.values().any(|l| l.state == State::Connecting)
    }

    /// The relay's address, if it is wanted.
    pub(super) fn address(&self, relay: &RelayKey) -> Option<&RelayAddress> {
        self.links.get(relay).map(|l| &l.address)
    }

    /// Something arrived from `relay`.
    pub(super) fn heard(&mut self, relay: &RelayKey, now: u64) {
        if let Some(link) = self.links.get_mut(relay) {
            link.last_heard = link.last_heard.max(now);
        }
    }

    /// Relays whose retry is due: they are connecting from now on.
    pub(super) fn due_connects(&mut self, now: u64) -> Vec<RelayAddress> {
        let mut due = Vec::new();
        for link in self.links.values_mut() {
            if let State::Waiting { retry_at } = link.state
                && retry_at <= now
            {
                link.state = State::Connecting;
                due.push(link.address.clone());
            }
        }
        due
    }

    /// Up relays quiet for [`PING_MS`]: PING them.
    pub(super) fn due_pings(&mut self, now: u64) -> Vec<RelayKey> {
        let mut due = Vec::new();
        for (key, link) in &mut self.links {
            if link.state == State::Up && link.last_heard + PING_MS <= now {
                link.last_heard = now;
                due.push(*key);
            }
        }
        due
    }

    /// The next retry or PING.
    pub(super) fn next_deadline(&self) -> Option<u64> {
        self.links
            .values()
            .filter_map(|l| match l.state {
                State::Waiting { retry_at } => Some(retry_at),
                State::Up => Some(l.last_heard + PING_MS),
                State::Connecting | State::Closing => None,
            })
            .min()
    }

    /// Every wanted relay and whether it is up.
    pub(super) fn status(&self) -> Vec<(RelayAddress, bool)> {
        self.links
            .values()
            .map(|l| (l.address.clone(), l.state == State::Up))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_stays_in_the_upper_half() {
        for failures in 1..40 {
            let exp = (BACKOFF_MIN_MS << (failures - 1).min(16)).min(BACKOFF_MAX_MS);
            for jitter in [0, 1, 977, u32::MAX] {
                let d = backoff_ms(failures, jitter);
                assert!(d >= exp / 2 && d <= exp, "{failures} {jitter} {d}");
            }
        }
        assert_eq!(backoff_ms(1, 0), 125);
        assert_eq!(backoff_ms(30, 0), 15_000);
    }

    #[test]
    fn a_failed_request_closes_the_link_until_the_driver_reports_it() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
        let text = format!(
            "petrel://{}@127.0.0.1:5000",
            petrel_federation::address::key_text(&RelayKey(key.to_bytes()))
        );
        let address: RelayAddress = text.parse().unwrap();
        let key = *address.key();
        let mut links = Links::default();
        assert_eq!(links.want(vec![address.clone()]).len(), 1);
        assert!(links.up(&key, 1_000));
        assert!(links.is_up(&key));
        links.failed(&key);
        assert!(
            !links.is_up(&key),
            "nothing more goes on a session known gone"
        );
        assert_eq!(
            links.next_deadline(),
            None,
            "no PING on it: its end is reported"
        );
        assert!(links.due_pings(1_000 + PING_MS).is_empty());
        assert!(
            links.down(&key, 2_000, 0),
            "its end is reported as the end of an up link"
        );
        assert!(links.next_deadline().is_some());
        assert!(links.up(&key, 3_000));
        assert!(links.is_up(&key), "a new session is up again");
    }
}
