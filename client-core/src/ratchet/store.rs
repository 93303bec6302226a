//! Bounded memory of the past: skipped message keys and recently seen messages.
//!
//! **Skipped keys.** When a message skips ahead in a chain, the keys of the messages it
//! jumped over are kept so those can still be read when they arrive late. They are grouped
//! by header key (the receiver tries each group's key on an incoming header), in the order
//! they were stored — chains in the order the ratchet left them, keys by number — so the
//! oldest key is always the first of the first group. The store holds at most
//! [`MAX_SKIPPED_KEYS`] keys in at most [`MAX_SKIPPED_HEADER_KEYS`] groups, evicting the
//! oldest first, and forgets keys older than [`SKIPPED_KEY_MAX_AGE_SECS`].
//!
//! **Seen messages.** The hashes of the last [`SEEN_WINDOW`] accepted messages, so that an
//! exact copy (a relay's redelivery, a replay) is named a duplicate before any decryption.
//!
//! Both are changed only when a message is accepted.

use super::kdf::MessageKey;
use super::keys::Secret32;
use super::{MAX_SKIPPED_HEADER_KEYS, MAX_SKIPPED_KEYS, SEEN_WINDOW, SKIPPED_KEY_MAX_AGE_SECS};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// One skipped message key.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct SkippedKey {
    pub(crate) n: u32,
    pub(crate) stored_at: u64,
    pub(crate) mk: MessageKey,
}

/// The skipped keys of one chain.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct SkippedChain {
    pub(crate) header_key: Secret32,
    pub(crate) keys: VecDeque<SkippedKey>,
}

/// The skipped-key store.
#[derive(Clone, Default, Serialize, Deserialize)]
pub(crate) struct SkippedKeys {
    chains: VecDeque<SkippedChain>,
}

impl SkippedKeys {
    /// Number of keys held.
    pub(crate) fn len(&self) -> usize {
        self.chains.iter().map(|c| c.keys.len()).sum()
    }

    /// The header keys to try, oldest first.
    pub(crate) fn header_keys(&self) -> impl Iterator<Item = &Secret32> {
        self.chains.iter().map(|c| &c.header_key)
    }

    /// The key of message `n` under `header_key`, if stored.
    pub(crate) fn get(&self, header_key: &Secret32, n: u32) -> Option<&MessageKey> {
        self.chains
            .iter()
            .find(|c| &c.header_key == header_key)?
            .keys
            .iter()
            .find(|k| k.n == n)
            .map(|k| &k.mk)
    }

    /// Removes the key of message `n` under `header_key` (it has been used).
    pub(crate) fn remove(&mut self, header_key: &Secret32, n: u32) {
        if let Some(pos) = self.chains.iter().position(|c| &c.header_key == header_key) {
            self.chains[pos].keys.retain(|k| k.n != n);
            if self.chains[pos].keys.is_empty() {
                self.chains.remove(pos);
            }
        }
    }

    /// Adds keys skipped in one chain (in increasing `n`), then evicts down to the caps.
    pub(crate) fn extend(
        &mut self,
        header_key: &Secret32,
        keys: impl IntoIterator<Item = SkippedKey>,
    ) {
        let mut keys = keys.into_iter().peekable();
        if keys.peek().is_none() {
            return;
        }
        // A chain only ever gains keys while it is the receiving chain, which is the newest
        // group, so appending keeps the store in age order.
        match self.chains.back_mut() {
            Some(last) if &last.header_key == header_key => last.keys.extend(keys),
            _ => self.chains.push_back(SkippedChain {
                header_key: header_key.clone(),
                keys: keys.collect(),
            }),
        }
        while self.chains.len() > MAX_SKIPPED_HEADER_KEYS {
            self.chains.pop_front();
        }
        let mut excess = self.len().saturating_sub(MAX_SKIPPED_KEYS);
        while excess > 0 {
            let Some(first) = self.chains.front_mut() else {
                break;
            };
            let take = excess.min(first.keys.len());
            first.keys.drain(..take);
            excess -= take;
            if first.keys.is_empty() {
                self.chains.pop_front();
            }
        }
    }

    /// Forgets keys stored more than [`SKIPPED_KEY_MAX_AGE_SECS`] before `now`.
    pub(crate) fn expire(&mut self, now: u64) {
        for chain in &mut self.chains {
            chain
                .keys
                .retain(|k| now.saturating_sub(k.stored_at) <= SKIPPED_KEY_MAX_AGE_SECS);
        }
        self.chains.retain(|c| !c.keys.is_empty());
    }
}

/// Hashes of the most recently accepted messages.
#[derive(Clone, Default, Serialize, Deserialize)]
pub(crate) struct SeenWindow {
    hashes: VecDeque<[u8; 32]>,
}

impl SeenWindow {
    pub(crate) fn contains(&self, hash: &[u8; 32]) -> bool {
        self.hashes.contains(hash)
    }

    pub(crate) fn insert(&mut self, hash: [u8; 32]) {
        if self.hashes.len() >= SEEN_WINDOW {
            self.hashes.pop_front();
        }
        self.hashes.push_back(hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32, stored_at: u64) -> SkippedKey {
        SkippedKey {
            n,
            stored_at,
            mk: MessageKey {
                key: [n as u8; 32],
                nonce: [0; 24],
            },
        }
    }

    #[test]
    fn caps_evict_oldest_first() {
        let mut store = SkippedKeys::default();
        for chain in 0..MAX_SKIPPED_HEADER_KEYS as u8 + 2 {
            store.extend(&Secret32([chain; 32]), (0..3).map(|n| key(n, 0)));
        }
        assert_eq!(store.chains.len(), MAX_SKIPPED_HEADER_KEYS);
        assert!(store.get(&Secret32([0; 32]), 0).is_none());
        assert!(store.get(&Secret32([2; 32]), 0).is_some());

        let big = Secret32([0xff; 32]);
        store.extend(&big, (0..MAX_SKIPPED_KEYS as u32).map(|n| key(n, 0)));
        assert_eq!(store.len(), MAX_SKIPPED_KEYS);
        assert_eq!(store.chains.len(), 1);
        store.extend(&big, [key(MAX_SKIPPED_KEYS as u32, 0)]);
        assert!(store.get(&big, 0).is_none() && store.get(&big, 1).is_some());

        store.remove(&big, 1);
        assert!(store.get(&big, 1).is_none());
        store.expire(SKIPPED_KEY_MAX_AGE_SECS + 1);
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn seen_window_forgets_oldest() {
        let hash = |i: usize| {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&(i as u64).to_be_bytes());
            h
        };
        let mut seen = SeenWindow::default();
        for i in 0..=SEEN_WINDOW {
            seen.insert(hash(i));
        }
        assert!(!seen.contains(&hash(0)));
        assert!(seen.contains(&hash(1)) && seen.contains(&hash(SEEN_WINDOW)));
    }
}
