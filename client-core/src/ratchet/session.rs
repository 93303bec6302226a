//! The session: creation from the pairing handshake, sending, re-keying and the safety
//! code. Receiving is in `receive.rs`.
//!
//! Sending runs the second half of a DH ratchet step lazily: a received step only derives
//! the new receiving chain and marks the sending chain as due; the next [`Session::encrypt`]
//! draws the new ratchet key and KEM item from its RNG and derives the sending chain. The
//! result is the one §12.1 describes (nothing can happen in between that depends on it),
//! and decrypting never needs randomness.
//!
//! Every method works on a copy of the state and stores it only on success.

use super::error::RatchetError;
use super::header::{Header, KemItem, OVERHEAD, Outgoing};
use super::kdf::{self, kdf_ck, kdf_rk};
use super::keys::{DhPair, KemSecret, QrKey, Secret32, encapsulate};
use super::store::{SeenWindow, SkippedKeys};
use super::{Decrypted, RekeyRole, Role};
use petrel_federation::padding::{self, PAD_HEADER_LEN, SIZE_CLASSES};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};

/// One end of an end-to-end encrypted connection (layer 1).
///
/// Create it with [`Session::initiate`] (the side that scanned the invitation) or
/// [`Session::respond`] (the side that made it). It serializes with serde for the
/// encrypted store; every secret in it is erased on drop, and its `Debug` shows only
/// counters.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    pub(super) role: Role,
    /// `IK_B`, the responder's invitation key.
    pub(super) responder_key: [u8; 32],
    /// `E_A`, the initiator's handshake key.
    pub(super) initiator_key: [u8; 32],
    pub(super) ad: [u8; 32],
    /// Initiator only: `E_A`, to prefix to the first message (the confirmation).
    pub(super) confirmation: Option<[u8; 32]>,
    pub(super) state: State,
    pub(super) skipped: SkippedKeys,
    pub(super) seen: SeenWindow,
}

/// The ratchet proper, copied by every operation and replaced on success.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct State {
    pub(super) dhs: DhPair,
    pub(super) dhr: Option<[u8; 32]>,
    pub(super) rk: Secret32,
    /// `None` while the sending half of a step is due (see the module notes).
    pub(super) cks: Option<Secret32>,
    pub(super) ckr: Option<Secret32>,
    pub(super) ns: u32,
    pub(super) nr: u32,
    pub(super) pn: u32,
    pub(super) hks: Option<Secret32>,
    pub(super) hkr: Option<Secret32>,
    pub(super) nhks: Secret32,
    pub(super) nhkr: Secret32,
    pub(super) own_kem: Option<KemSecret>,
    #[serde(with = "serde_bytes")]
    pub(super) peer_ek: Option<Vec<u8>>,
    pub(super) kem_item: Option<KemItem>,
    /// The current sending chain mixed a re-key secret (its headers say so).
    pub(super) rekey_sent: bool,
    pub(super) pending_rekey: Option<PendingRekey>,
    pub(super) last_sent_hash: [u8; 32],
    pub(super) last_received_hash: [u8; 32],
}

/// A re-key secret waiting for the next ratchet step.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct PendingRekey {
    pub(super) shared: Secret32,
    /// Mix it into this side's next sending chain (else only into a marked peer chain).
    pub(super) lead: bool,
}

impl State {
    fn new(dhs: DhPair, rk: Secret32, nhks: Secret32, nhkr: Secret32) -> Self {
        Self {
            dhs,
            dhr: None,
            rk,
            cks: None,
            ckr: None,
            ns: 0,
            nr: 0,
            pn: 0,
            hks: None,
            hkr: None,
            nhks,
            nhkr,
            own_kem: None,
            peer_ek: None,
            kem_item: None,
            rekey_sent: false,
            pending_rekey: None,
            last_sent_hash: [0; 32],
            last_received_hash: [0; 32],
        }
    }

    /// The sending half of a DH ratchet step: a fresh ratchet key, the KEM item (a
    /// ciphertext to the peer's unused encapsulation key, else a fresh encapsulation key),
    /// an optional re-key mix, then `(RK, CKs, NHKs) = KDF_RK(RK, X25519(DHs, DHr), ss)`.
    fn start_sending_chain<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
    ) -> Result<(), RatchetError> {
        let dhr = self.dhr.ok_or(RatchetError::CorruptState)?;
        let dhs = DhPair::generate(rng);
        let (item, ss) = match self.peer_ek.take() {
            Some(ek) => {
                let (ss, ct) = encapsulate(rng, &ek)?;
                (KemItem::Ciphertext(ct), Some(ss))
            }
            None => {
                let (dk, ek) = KemSecret::generate(rng);
                self.own_kem = Some(dk);
                (KemItem::EncapsKey(ek), None)
            }
        };
        let dh = dhs.dh(&dhr)?;
        self.rekey_sent = false;
        if let Some(rekey) = self.pending_rekey.take_if(|p| p.lead) {
            self.rk = kdf::rekey(&self.rk, &rekey.shared);
            self.rekey_sent = true;
        }
        let step = kdf_rk(&self.rk, &dh, ss.as_ref());
        self.rk = step.rk;
        self.cks = Some(step.ck);
        self.nhks = step.nhk;
        self.dhs = dhs;
        self.kem_item = Some(item);
        Ok(())
    }
}

impl Session {
    /// Starts a connection as the initiator, from the invitation's key `IK_B`.
    ///
    /// Draws the handshake key `E_A`, the first ratchet key and an ML-KEM key pair. The
    /// first [`Self::encrypt`] returns the confirmation, `E_A ‖ ratchet message`.
    pub fn initiate<R: CryptoRng + ?Sized>(
        rng: &mut R,
        invitation_key: &[u8; 32],
    ) -> Result<Self, RatchetError> {
        let handshake_key = DhPair::generate(rng);
        let initiator_key = handshake_key.public();
        let hs = kdf::handshake(
            &handshake_key.dh(invitation_key)?,
            &initiator_key,
            invitation_key,
        );
        // `E_A` only holds the place of DHs: the first sending chain replaces it (and the
        // placeholder NHKs) with a fresh ratchet key before anything is derived from it.
        let mut state = State::new(
            handshake_key,
            hs.sk.clone(),
            hs.nhkb.clone(),
            hs.nhkb.clone(),
        );
        state.dhr = Some(*invitation_key);
        state.start_sending_chain(rng)?;
        state.hks = Some(hs.hka.clone());
        Ok(Self {
            role: Role::Initiator,
            responder_key: *invitation_key,
            initiator_key,
            ad: hs.ad,
            confirmation: Some(initiator_key),
            state,
            skipped: SkippedKeys::default(),
            seen: SeenWindow::default(),
        })
    }

    /// Accepts a confirmation (the SEND body `E_A ‖ ratchet message`) with the invitation
    /// key it answers, and returns the responder's session with the confirmation's
    /// payload. `now` is Unix seconds (it stamps skipped keys).
    pub fn respond(
        invitation: &QrKey,
        confirmation: &[u8],
        now: u64,
    ) -> Result<(Self, Decrypted), RatchetError> {
        let bad_length = RatchetError::BadLength {
            len: confirmation.len(),
        };
        if !padding::is_class(confirmation.len()) {
            return Err(bad_length);
        }
        let (initiator_key, message) = confirmation.split_first_chunk::<32>().ok_or(bad_length)?;
        let responder_key = invitation.public();
        let hs = kdf::handshake(
            &invitation.pair().dh(initiator_key)?,
            initiator_key,
            &responder_key,
        );
        let mut session = Self {
            role: Role::Responder,
            responder_key,
            initiator_key: *initiator_key,
            ad: hs.ad,
            confirmation: None,
            state: State::new(
                invitation.pair().clone(),
                hs.sk.clone(),
                hs.nhkb.clone(),
                hs.hka.clone(),
            ),
            skipped: SkippedKeys::default(),
            seen: SeenWindow::default(),
        };
        let decrypted = session.receive(message, kdf::message_hash(confirmation), now)?;
        Ok((session, decrypted))
    }

    /// Encrypts `payload` into a SEND body of the smallest size class that holds it.
    pub fn encrypt<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        payload: &[u8],
    ) -> Result<Vec<u8>, RatchetError> {
        let prefix = self.confirmation;
        let prefix_len = if prefix.is_some() { 32 } else { 0 };
        let class = padding::class_for(payload.len(), OVERHEAD - PAD_HEADER_LEN + prefix_len)
            .ok_or(RatchetError::TooLong {
                len: payload.len(),
                max: SIZE_CLASSES[SIZE_CLASSES.len() - 1] - OVERHEAD - prefix_len,
            })?;
        let mut next = self.state.clone();
        if next.cks.is_none() {
            next.start_sending_chain(rng)?;
        } else if next.ns == u32::MAX {
            return Err(RatchetError::ChainExhausted);
        }
        let (Some(cks), Some(hks), Some(kem)) = (&next.cks, &next.hks, &next.kem_item) else {
            return Err(RatchetError::CorruptState);
        };
        let (next_ck, mk) = kdf_ck(cks);
        let header = Header {
            dh: next.dhs.public(),
            pn: next.pn,
            n: next.ns,
            rekey: next.rekey_sent,
            kem: kem.clone(),
        };
        let mut header_nonce = [0u8; 24];
        rng.fill_bytes(&mut header_nonce);
        let sealed = Outgoing {
            header_key: &hks.0,
            ad: &self.ad,
            header_nonce,
            header: &header,
            mk: &mk,
            prev_hash: &next.last_sent_hash,
            payload,
            len: class - prefix_len,
        }
        .seal()?;
        let mut body = Vec::with_capacity(class);
        body.extend_from_slice(prefix.as_ref().map_or(&[][..], |p| &p[..]));
        body.extend_from_slice(&sealed);
        next.cks = Some(next_ck);
        next.ns += 1;
        next.last_sent_hash = kdf::message_hash(&body);
        self.state = next;
        self.confirmation = None;
        Ok(body)
    }

    /// Mixes `X25519(own, peer_public)` — from a re-key QR exchange — into the root key at
    /// the next DH ratchet step. With [`RekeyRole::Lead`] this side's next sending chain
    /// mixes it and marks its headers; with either role, a marked chain from the peer
    /// mixes it on arrival. A second call replaces a secret not yet used.
    pub fn rekey(
        &mut self,
        own: &QrKey,
        peer_public: &[u8; 32],
        role: RekeyRole,
    ) -> Result<(), RatchetError> {
        let shared = own.pair().dh(peer_public)?;
        self.state.pending_rekey = Some(PendingRekey {
            shared,
            lead: role == RekeyRole::Lead,
        });
        Ok(())
    }

    /// True while a re-key secret waits for its ratchet step. Start a new re-key only when
    /// the previous one is no longer pending on either side.
    pub fn rekey_pending(&self) -> bool {
        self.state.pending_rekey.is_some()
    }

    /// The safety code both sides compare in person: 60 digits in twelve groups of five,
    /// from both connection keys (`IK_B` and `E_A`), equal on both sides.
    pub fn safety_code(&self) -> String {
        kdf::safety_code(&self.responder_key, &self.initiator_key)
    }

    /// Which side of the pairing this session is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Number of skipped message keys held for late messages.
    pub fn skipped_keys(&self) -> usize {
        self.skipped.len()
    }

    /// Forgets skipped keys older than [`SKIPPED_KEY_MAX_AGE_SECS`](super::SKIPPED_KEY_MAX_AGE_SECS)
    /// (also done by every successful decrypt).
    pub fn expire_skipped(&mut self, now: u64) {
        self.skipped.expire(now);
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("sent_in_chain", &self.state.ns)
            .field("received_in_chain", &self.state.nr)
            .field("skipped_keys", &self.skipped.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha8Rng;
    use rand_core::SeedableRng;

    fn alice() -> (Session, ChaCha8Rng) {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let invitation = QrKey::generate(&mut rng);
        (
            Session::initiate(&mut rng, &invitation.public()).unwrap(),
            rng,
        )
    }

    #[test]
    fn chain_exhausted() {
        let (mut session, mut rng) = alice();
        session.state.ns = u32::MAX;
        assert_eq!(
            session.encrypt(&mut rng, b"x").unwrap_err(),
            RatchetError::ChainExhausted
        );
        assert_eq!(session.state.ns, u32::MAX);
        assert!(session.confirmation.is_some());
    }

    #[test]
    fn corrupt_state() {
        let (mut session, mut rng) = alice();
        session.state.hks = None;
        assert_eq!(
            session.encrypt(&mut rng, b"x").unwrap_err(),
            RatchetError::CorruptState
        );
        // A sending step due with no peer ratchet key.
        let (mut session, mut rng) = alice();
        session.state.cks = None;
        session.state.dhr = None;
        assert_eq!(
            session.encrypt(&mut rng, b"x").unwrap_err(),
            RatchetError::CorruptState
        );
        // A stored encapsulation key that fails the FIPS 203 check.
        let (mut session, mut rng) = alice();
        session.state.cks = None;
        session.state.peer_ek = Some(vec![0xff; 1184]);
        assert_eq!(
            session.encrypt(&mut rng, b"x").unwrap_err(),
            RatchetError::CorruptState
        );
        assert!(session.state.peer_ek.is_some(), "state changed on failure");
    }

    #[test]
    fn debug_shows_no_secrets() {
        let (session, _) = alice();
        let text = format!("{session:?}");
        assert!(text.len() < 120 && !text.contains("rk"), "{text}");
    }
}
