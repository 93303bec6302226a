//! Receiving: classify an incoming message, derive its key on a copy of the state, and
//! commit only once the body has authenticated and unpadded (§12.1, "Receiving").
//!
//! The order of trials:
//!
//! 1. the length must be a size class;
//! 2. an exact copy of a recently accepted message is a [`RatchetError::Duplicate`];
//! 3. the current receiving header key `HKr`: the current chain — a stored skipped key for
//!    its number (a late message), else a number below `Nr` is [`RatchetError::Stale`],
//!    else skip ahead to it;
//! 4. the next header key `NHKr`: a DH ratchet step;
//! 5. the header keys of the skipped-key store: a late message from an older chain, or
//!    [`RatchetError::Stale`] if its key is gone;
//! 6. nothing opens it: [`RatchetError::Undecryptable`].
//!
//! At most `2 + MAX_SKIPPED_HEADER_KEYS` header trials per message.

use super::error::RatchetError;
use super::header::{Header, KemItem, open_body, open_header};
use super::kdf::{self, MessageKey, kdf_ck, kdf_rk};
use super::keys::{Secret32, parse_encaps_key};
use super::session::{Session, State};
use super::store::SkippedKey;
use super::{Decrypted, MAX_SKIP, Order};
use petrel_federation::padding;

/// Keys skipped by one message, per header key, to store if it is accepted.
type Skipped = Vec<(Secret32, Vec<SkippedKey>)>;

impl Session {
    /// Decrypts one SEND body from the peer. `now` is Unix seconds: it stamps the keys of
    /// skipped messages and expires old ones.
    ///
    /// On success the state has advanced and [`Decrypted::order`] says whether anything
    /// was lost or reordered before this message. On any error the session is unchanged.
    pub fn decrypt(&mut self, message: &[u8], now: u64) -> Result<Decrypted, RatchetError> {
        if !padding::is_class(message.len()) {
            return Err(RatchetError::BadLength { len: message.len() });
        }
        self.receive(message, kdf::message_hash(message), now)
    }

    /// Decrypts a ratchet message; `hash` is the hash of the whole SEND body (which, for a
    /// confirmation, also covers its prefix).
    pub(super) fn receive(
        &mut self,
        message: &[u8],
        hash: [u8; 32],
        now: u64,
    ) -> Result<Decrypted, RatchetError> {
        if self.seen.contains(&hash) {
            return Err(RatchetError::Duplicate);
        }
        if let Some(hkr) = self.state.hkr.clone()
            && let Some(header) = open_header(&hkr.0, &self.ad, message)?
        {
            if let Some(mk) = self.skipped.get(&hkr, header.n) {
                let mk = mk.clone();
                return self.receive_late(hkr, header.n, &mk, message, hash, now);
            }
            if header.n < self.state.nr {
                return Err(RatchetError::Stale);
            }
            return self.receive_current(hkr, header, message, hash, now);
        }
        if let Some(header) = open_header(&self.state.nhkr.0, &self.ad, message)? {
            return self.receive_step(header, message, hash, now);
        }
        let mut late = None;
        for hk in self.skipped.header_keys() {
            if self.state.hkr.as_ref() == Some(hk) {
                continue;
            }
            if let Some(header) = open_header(&hk.0, &self.ad, message)? {
                late = Some((hk.clone(), header.n));
                break;
            }
        }
        let (hk, n) = late.ok_or(RatchetError::Undecryptable)?;
        let mk = self.skipped.get(&hk, n).ok_or(RatchetError::Stale)?.clone();
        self.receive_late(hk, n, &mk, message, hash, now)
    }

    /// A message whose key was skipped earlier.
    fn receive_late(
        &mut self,
        hk: Secret32,
        n: u32,
        mk: &MessageKey,
        message: &[u8],
        hash: [u8; 32],
        now: u64,
    ) -> Result<Decrypted, RatchetError> {
        let (_prev_hash, plaintext) = open_body(mk, &self.ad, message)?;
        self.skipped.remove(&hk, n);
        self.skipped.expire(now);
        self.seen.insert(hash);
        Ok(Decrypted {
            plaintext,
            order: Order::Late,
        })
    }

    /// A message of the current receiving chain, at or after `Nr`.
    fn receive_current(
        &mut self,
        hkr: Secret32,
        header: Header,
        message: &[u8],
        hash: [u8; 32],
        now: u64,
    ) -> Result<Decrypted, RatchetError> {
        let mut next = self.state.clone();
        let keys = skip_to(&mut next, header.n, now)?;
        let mut skipped = vec![(hkr, keys)];
        self.finish(next, &mut skipped, message, hash, now)
    }

    /// A message that opens under `NHKr`: the peer started a new chain.
    fn receive_step(
        &mut self,
        header: Header,
        message: &[u8],
        hash: [u8; 32],
        now: u64,
    ) -> Result<Decrypted, RatchetError> {
        let mut next = self.state.clone();
        // The KEM items alternate: a ciphertext answers our encapsulation key, an
        // encapsulation key answers our ciphertext.
        let kem_secret = match (&header.kem, next.own_kem.take()) {
            (KemItem::Ciphertext(ct), Some(dk)) => Some(dk.decapsulate(ct)?),
            (KemItem::EncapsKey(ek), None) => {
                parse_encaps_key(ek)?;
                next.peer_ek = Some(ek.clone());
                None
            }
            _ => return Err(RatchetError::MalformedHeader),
        };
        let rekey = match (header.rekey, next.pending_rekey.take()) {
            (false, pending) => {
                next.pending_rekey = pending;
                None
            }
            (true, Some(pending)) => Some(pending.shared),
            (true, None) => return Err(RatchetError::UnexpectedRekey),
        };
        let mut skipped = Skipped::new();
        if let Some(hkr) = next.hkr.clone() {
            skipped.push((hkr, skip_to(&mut next, header.pn, now)?));
        }
        // The receiving half of the step; the sending half waits for the next encrypt.
        next.pn = next.ns;
        next.ns = 0;
        next.nr = 0;
        next.hks = Some(next.nhks.clone());
        next.hkr = Some(next.nhkr.clone());
        next.dhr = Some(header.dh);
        next.cks = None;
        if let Some(shared) = rekey {
            next.rk = kdf::rekey(&next.rk, &shared);
        }
        let root = kdf_rk(&next.rk, &next.dhs.dh(&header.dh)?, kem_secret.as_ref());
        next.rk = root.rk;
        next.ckr = Some(root.ck);
        next.nhkr = root.nhk;
        let hkr = next.hkr.clone().ok_or(RatchetError::CorruptState)?;
        skipped.push((hkr, skip_to(&mut next, header.n, now)?));
        self.finish(next, &mut skipped, message, hash, now)
    }

    /// Derives the message key at `Nr`, opens the body and, if it is good, commits `next`,
    /// the skipped keys and the hashes.
    fn finish(
        &mut self,
        mut next: State,
        skipped: &mut Skipped,
        message: &[u8],
        hash: [u8; 32],
        now: u64,
    ) -> Result<Decrypted, RatchetError> {
        let ckr = next.ckr.as_ref().ok_or(RatchetError::CorruptState)?;
        let (next_ck, mk) = kdf_ck(ckr);
        next.ckr = Some(next_ck);
        // `n < 2^32 − 1` was checked when the header was decoded.
        next.nr = next.nr.saturating_add(1);
        let (prev_hash, plaintext) = open_body(&mk, &self.ad, message)?;
        let count: usize = skipped.iter().map(|(_, keys)| keys.len()).sum();
        let order = if count == 0 && prev_hash == next.last_received_hash {
            Order::InOrder
        } else {
            Order::Gap {
                skipped: u32::try_from(count).unwrap_or(u32::MAX),
            }
        };
        next.last_received_hash = hash;
        self.state = next;
        for (hk, keys) in skipped.drain(..) {
            self.skipped.extend(&hk, keys);
        }
        self.skipped.expire(now);
        self.seen.insert(hash);
        Ok(Decrypted { plaintext, order })
    }
}

/// Advances the receiving chain of `state` to message `until`, returning the keys of the
/// messages it passes over; refuses to pass over more than [`MAX_SKIP`].
fn skip_to(state: &mut State, until: u32, now: u64) -> Result<Vec<SkippedKey>, RatchetError> {
    let Some(mut ck) = state.ckr.clone() else {
        return Ok(Vec::new());
    };
    let count = until.saturating_sub(state.nr);
    if count > MAX_SKIP {
        return Err(RatchetError::TooManySkipped {
            skip: u64::from(count),
        });
    }
    let mut keys = Vec::with_capacity(count as usize);
    while state.nr < until {
        let (next, mk) = kdf_ck(&ck);
        keys.push(SkippedKey {
            n: state.nr,
            stored_at: now,
            mk,
        });
        ck = next;
        state.nr += 1;
    }
    state.ckr = Some(ck);
    Ok(keys)
}
