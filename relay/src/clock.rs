//! The relay's clock, passed in so tests control time.
//!
//! Production uses the system clock. End-to-end tests of TTL expiry start the relay with
//! the hidden `--dangerous-clock-file PATH` flag: the relay then reads "now" (Unix seconds,
//! as text) from that file every time it needs the time, so a test advances time by
//! writing a number instead of sleeping.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the relay gets the time from.
#[derive(Clone, Debug)]
pub enum Clock {
    /// The system clock.
    System,
    /// A file holding Unix seconds (tests only).
    File(PathBuf),
    /// A fixed value (unit tests).
    Fixed(u64),
}

impl Clock {
    /// Now, in Unix seconds.
    pub fn now(&self) -> u64 {
        match self {
            Clock::System => system_now(),
            Clock::File(path) => std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or_else(system_now),
            Clock::Fixed(t) => *t,
        }
    }
}

fn system_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
