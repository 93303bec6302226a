//! One test per [`RatchetError`] a caller can provoke through the public API, each also
//! checking that the failed call left the session byte-for-byte unchanged and that the
//! session keeps working afterwards.
//!
//! The errors only a header-key holder can provoke (`MalformedHeader`, `MalformedBody`)
//! are provoked with messages re-sealed by a small independent model of §12.1 (the full
//! model is in `ratchet_vectors.rs`). `ChainExhausted` and `CorruptState` need a state no
//! API reaches and are unit tests in `src/ratchet/session.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use petrel_client::ratchet::labels;
use petrel_client::ratchet::{
    MAX_SKIP, MESSAGE_OVERHEAD, Order, QrKey, RatchetError, RekeyRole, SEEN_WINDOW, Session,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use x25519_dalek::{PublicKey, StaticSecret};

const NOW: u64 = 1_700_000_000;

/// A paired (Alice, Bob) with Bob's reply received, so both have full state.
fn pair(seed: u64) -> (Session, Session, ChaCha8Rng) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let invitation = QrKey::generate(&mut rng);
    let mut alice = Session::initiate(&mut rng, &invitation.public()).unwrap();
    let confirmation = alice.encrypt(&mut rng, b"confirmation").unwrap();
    let (mut bob, _) = Session::respond(&invitation, &confirmation, NOW).unwrap();
    let reply = bob.encrypt(&mut rng, b"reply").unwrap();
    alice.decrypt(&reply, NOW).unwrap();
    (alice, bob, rng)
}

fn state(session: &Session) -> Vec<u8> {
    postcard::to_stdvec(session).unwrap()
}

/// Decrypts, expecting `error` and no change of state.
fn refused(session: &mut Session, message: &[u8], error: RatchetError) {
    let before = state(session);
    assert_eq!(session.decrypt(message, NOW).unwrap_err(), error);
    assert!(
        state(session) == before,
        "a failed decrypt changed the state"
    );
}

/// Both directions still work.
fn still_works(alice: &mut Session, bob: &mut Session, rng: &mut ChaCha8Rng) {
    let m = alice.encrypt(rng, b"still there?").unwrap();
    assert_eq!(&*bob.decrypt(&m, NOW).unwrap().plaintext, b"still there?");
    let m = bob.encrypt(rng, b"yes").unwrap();
    assert_eq!(&*alice.decrypt(&m, NOW).unwrap().plaintext, b"yes");
}

#[test]
fn bad_length() {
    let (mut alice, mut bob, mut rng) = pair(1);
    let m = alice.encrypt(&mut rng, b"x").unwrap();
    refused(&mut bob, &m[..2047], RatchetError::BadLength { len: 2047 });
    refused(&mut bob, &[], RatchetError::BadLength { len: 0 });
    let invitation = QrKey::generate(&mut rng);
    assert_eq!(
        Session::respond(&invitation, &[0; 100], NOW).unwrap_err(),
        RatchetError::BadLength { len: 100 }
    );
    bob.decrypt(&m, NOW).unwrap();
    still_works(&mut alice, &mut bob, &mut rng);
}

#[test]
fn duplicate() {
    let (mut alice, mut bob, mut rng) = pair(2);
    let m = alice.encrypt(&mut rng, b"once").unwrap();
    bob.decrypt(&m, NOW).unwrap();
    refused(&mut bob, &m, RatchetError::Duplicate);
    still_works(&mut alice, &mut bob, &mut rng);
    refused(&mut bob, &m, RatchetError::Duplicate);
}

#[test]
fn stale() {
    let (mut alice, mut bob, mut rng) = pair(3);
    // A copy with an altered body is no exact duplicate, but its key is spent.
    let m = alice.encrypt(&mut rng, b"spent").unwrap();
    bob.decrypt(&m, NOW).unwrap();
    let mut altered = m.clone();
    altered[2000] ^= 1;
    refused(&mut bob, &altered, RatchetError::Stale);
    // A replay older than the seen window.
    for _ in 0..SEEN_WINDOW {
        let next = alice.encrypt(&mut rng, b"more").unwrap();
        bob.decrypt(&next, NOW).unwrap();
    }
    refused(&mut bob, &m, RatchetError::Stale);
    still_works(&mut alice, &mut bob, &mut rng);
}

#[test]
fn undecryptable() {
    let (mut alice, mut bob, mut rng) = pair(4);
    refused(&mut bob, &[7; 2048], RatchetError::Undecryptable);
    // A message of another connection.
    let (mut carol, _, _) = pair(5);
    let m = carol.encrypt(&mut rng, b"not for bob").unwrap();
    refused(&mut bob, &m, RatchetError::Undecryptable);
    // A damaged header.
    let mut m = alice.encrypt(&mut rng, b"x").unwrap();
    m[30] ^= 0x80;
    refused(&mut bob, &m, RatchetError::Undecryptable);
    still_works(&mut alice, &mut bob, &mut rng);
}

#[test]
fn body_auth() {
    let (mut alice, mut bob, mut rng) = pair(6);
    for _ in 0..2 {
        // Once in the current chain, once at a ratchet step.
        let m = alice.encrypt(&mut rng, b"intact").unwrap();
        let mut altered = m.clone();
        altered[1500] ^= 1;
        refused(&mut bob, &altered, RatchetError::BodyAuth);
        assert_eq!(&*bob.decrypt(&m, NOW).unwrap().plaintext, b"intact");
        let m = bob.encrypt(&mut rng, b"ack").unwrap();
        alice.decrypt(&m, NOW).unwrap();
    }
    still_works(&mut alice, &mut bob, &mut rng);
}

#[test]
fn too_many_skipped() {
    let (mut alice, mut bob, mut rng) = pair(7);
    let messages: Vec<_> = (0..=MAX_SKIP + 1)
        .map(|i| alice.encrypt(&mut rng, &i.to_be_bytes()).unwrap())
        .collect();
    let last = MAX_SKIP as usize + 1;
    refused(
        &mut bob,
        &messages[last],
        RatchetError::TooManySkipped {
            skip: u64::from(MAX_SKIP) + 1,
        },
    );
    let d = bob.decrypt(&messages[last - 1], NOW).unwrap();
    assert_eq!(d.order, Order::Gap { skipped: MAX_SKIP });
    assert_eq!(bob.skipped_keys(), MAX_SKIP as usize);
    assert_eq!(
        bob.decrypt(&messages[last], NOW).unwrap().order,
        Order::InOrder
    );
    assert_eq!(bob.decrypt(&messages[3], NOW).unwrap().order, Order::Late);
    still_works(&mut alice, &mut bob, &mut rng);
}

#[test]
fn weak_key() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    // The all-zero point has low order: every DH output with it is zero.
    assert_eq!(
        Session::initiate(&mut rng, &[0; 32]).unwrap_err(),
        RatchetError::WeakKey
    );
    let invitation = QrKey::generate(&mut rng);
    let mut alice = Session::initiate(&mut rng, &invitation.public()).unwrap();
    let mut confirmation = alice.encrypt(&mut rng, b"hi").unwrap();
    confirmation[..32].fill(0);
    assert_eq!(
        Session::respond(&invitation, &confirmation, NOW).unwrap_err(),
        RatchetError::WeakKey
    );
    let (mut alice, mut bob, mut rng) = pair(9);
    let before = state(&alice);
    let key = QrKey::generate(&mut rng);
    assert_eq!(
        alice.rekey(&key, &[0; 32], RekeyRole::Lead).unwrap_err(),
        RatchetError::WeakKey
    );
    assert!(state(&alice) == before, "a failed call changed the state");
    still_works(&mut alice, &mut bob, &mut rng);
}

#[test]
fn unexpected_rekey_then_recovery() {
    let (mut alice, mut bob, mut rng) = pair(10);
    let (ka, kb) = (QrKey::generate(&mut rng), QrKey::generate(&mut rng));
    // Bob learned Alice's key (over the ratchet) and leads; Alice has not called rekey yet.
    bob.rekey(&kb, &ka.public(), RekeyRole::Lead).unwrap();
    let m = alice.encrypt(&mut rng, b"ping").unwrap();
    bob.decrypt(&m, NOW).unwrap();
    let marked = bob.encrypt(&mut rng, b"re-keyed").unwrap();
    assert!(!bob.rekey_pending());
    refused(&mut alice, &marked, RatchetError::UnexpectedRekey);
    // With the secret in place, the same message opens and the mix is done on both sides.
    alice.rekey(&ka, &kb.public(), RekeyRole::Follow).unwrap();
    assert_eq!(
        &*alice.decrypt(&marked, NOW).unwrap().plaintext,
        b"re-keyed"
    );
    assert!(!alice.rekey_pending());
    still_works(&mut alice, &mut bob, &mut rng);
}

#[test]
fn mismatched_rekey_secret_fails_the_body() {
    let (mut alice, mut bob, mut rng) = pair(11);
    let (ka, kb, other) = (
        QrKey::generate(&mut rng),
        QrKey::generate(&mut rng),
        QrKey::generate(&mut rng),
    );
    bob.rekey(&kb, &ka.public(), RekeyRole::Lead).unwrap();
    alice
        .rekey(&ka, &other.public(), RekeyRole::Follow)
        .unwrap();
    let m = alice.encrypt(&mut rng, b"ping").unwrap();
    bob.decrypt(&m, NOW).unwrap();
    let marked = bob.encrypt(&mut rng, b"re-keyed").unwrap();
    refused(&mut alice, &marked, RatchetError::BodyAuth);
    alice.rekey(&ka, &kb.public(), RekeyRole::Follow).unwrap();
    alice.decrypt(&marked, NOW).unwrap();
    still_works(&mut alice, &mut bob, &mut rng);
}

#[test]
fn too_long() {
    let (mut alice, mut bob, mut rng) = pair(12);
    let max = 61_440 - MESSAGE_OVERHEAD;
    let before = state(&alice);
    assert_eq!(
        alice.encrypt(&mut rng, &vec![1; max + 1]).unwrap_err(),
        RatchetError::TooLong { len: max + 1, max }
    );
    assert!(state(&alice) == before, "a failed call changed the state");
    let m = alice.encrypt(&mut rng, &vec![1; max]).unwrap();
    assert_eq!(m.len(), 61_440);
    assert_eq!(bob.decrypt(&m, NOW).unwrap().plaintext.len(), max);
    still_works(&mut alice, &mut bob, &mut rng);
}

#[test]
fn every_error_is_classified() {
    for e in [
        RatchetError::BadLength { len: 1 },
        RatchetError::Duplicate,
        RatchetError::Stale,
        RatchetError::Undecryptable,
        RatchetError::BodyAuth,
        RatchetError::MalformedHeader,
        RatchetError::MalformedBody,
        RatchetError::TooManySkipped { skip: 1001 },
        RatchetError::WeakKey,
        RatchetError::UnexpectedRekey,
    ] {
        assert!(e.is_peer_fault(), "{e}");
    }
    for e in [
        RatchetError::TooLong { len: 2, max: 1 },
        RatchetError::ChainExhausted,
        RatchetError::CorruptState,
    ] {
        assert!(!e.is_peer_fault(), "{e}");
    }
}

// ---- Messages only a header-key holder can make ----------------------------------------

fn xof(label: &str, parts: &[&[u8]], n: usize) -> Vec<u8> {
    let mut h = blake3::Hasher::new_derive_key(label);
    parts.iter().for_each(|p| {
        h.update(p);
    });
    let mut out = vec![0; n];
    h.finalize_xof().fill(&mut out);
    out
}

fn aead(key: &[u8], nonce: &[u8], aad: &[u8], data: &[u8], seal: bool) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(&<[u8; 32]>::try_from(key).unwrap().into());
    let nonce = XNonce::from(<[u8; 24]>::try_from(nonce).unwrap());
    let payload = Payload { msg: data, aad };
    if seal {
        cipher.encrypt(&nonce, payload).unwrap()
    } else {
        cipher.decrypt(&nonce, payload).unwrap()
    }
}

/// Alice's message number `n` of her first chain (`n = 0` is the confirmation), opened by
/// the model with `HKA` and re-sealed after `header` and `padded` altered it. Returns the
/// invitation, Bob's session after the confirmation, and the genuine and altered message.
fn altered(
    n: usize,
    header: impl Fn(&mut Vec<u8>),
    padded: impl Fn(&mut Vec<u8>),
) -> (QrKey, Option<Session>, Vec<u8>, Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(20);
    let ik_secret = StaticSecret::from([0x11; 32]);
    let invitation = QrKey::from_secret([0x11; 32]);
    let ik = invitation.public();
    let mut alice = Session::initiate(&mut rng, &ik).unwrap();
    let sent: Vec<_> = (0..=n)
        .map(|_| alice.encrypt(&mut rng, b"genuine").unwrap())
        .collect();
    let e_a = &sent[0][..32];
    let bob = (n > 0).then(|| Session::respond(&invitation, &sent[0], NOW).unwrap().0);
    let genuine = sent[n].clone();
    let (prefix, msg) = genuine.split_at(if n == 0 { 32 } else { 0 });
    let e_a_dh = ik_secret.diffie_hellman(&PublicKey::from(<[u8; 32]>::try_from(e_a).unwrap()));
    let init = xof(labels::RATCHET_INIT, &[e_a_dh.as_bytes(), e_a, &ik], 96);
    let (sk, hka) = (&init[..32], &init[32..64]);
    let ad = blake3::derive_key(labels::RATCHET_AD, &[&ik[..], e_a].concat());
    let nonce = &msg[..24];
    let mut h = aead(hka, nonce, &ad, &msg[24..1265], false);
    let dh_a = PublicKey::from(<[u8; 32]>::try_from(&h[..32]).unwrap());
    let root = xof(
        labels::RATCHET_ROOT,
        &[sk, ik_secret.diffie_hellman(&dh_a).as_bytes(), &[0; 32]],
        96,
    );
    let mut ck = root[32..64].to_vec();
    for _ in 0..n {
        ck = blake3::derive_key(labels::RATCHET_CHAIN, &ck).to_vec();
    }
    let mk = xof(labels::RATCHET_MESSAGE, &[&ck], 56);
    let aad = [&ad[..], nonce, &msg[24..1265]].concat();
    let mut p = aead(&mk[..32], &mk[32..], &aad, &msg[1265..], false);
    header(&mut h);
    padded(&mut p);
    let header_ct = aead(hka, nonce, &ad, &h, true);
    let aad = [&ad[..], nonce, &header_ct].concat();
    let body_ct = aead(&mk[..32], &mk[32..], &aad, &p, true);
    let altered = [prefix, nonce, &header_ct, &body_ct].concat();
    assert_eq!(altered.len(), genuine.len());
    (invitation, bob, genuine, altered)
}

/// The altered confirmation through `respond`, and the altered second message through
/// Bob's session (which must stay unchanged and then accept the genuine one).
fn both(
    header: impl Fn(&mut Vec<u8>) + Copy,
    padded: impl Fn(&mut Vec<u8>) + Copy,
) -> [Result<(), RatchetError>; 2] {
    let (invitation, _, _, conf) = altered(0, header, padded);
    let first = Session::respond(&invitation, &conf, NOW).map(|_| ());
    let (_, bob, genuine, second) = altered(1, header, padded);
    let mut bob = bob.unwrap();
    let before = state(&bob);
    let second = bob.decrypt(&second, NOW).map(|_| ());
    if second.is_err() {
        assert!(state(&bob) == before, "a failed decrypt changed the state");
        assert_eq!(&*bob.decrypt(&genuine, NOW).unwrap().plaintext, b"genuine");
    }
    [first, second]
}

#[test]
fn the_model_reseals_faithfully() {
    assert_eq!(both(|_| {}, |_| {}), [Ok(()), Ok(())]);
}

#[test]
fn malformed_header() {
    let bad = Err(RatchetError::MalformedHeader);
    // Unknown kind bits; a ciphertext with non-zero filler; the message number 2^32 − 1.
    assert_eq!(both(|h| h[40] = 0x04, |_| {}), [bad.clone(), bad.clone()]);
    assert_eq!(both(|h| h[40] = 0x01, |_| {}), [bad.clone(), bad.clone()]);
    assert_eq!(
        both(|h| h[36..40].fill(0xff), |_| {}),
        [bad.clone(), bad.clone()]
    );
    // At a step: a ciphertext where an encapsulation key is due, and an encapsulation key
    // that fails the FIPS 203 modulus check. (Later messages of a chain carry the same
    // KEM item, which is checked only at the step.)
    let wrong_item = |h: &mut Vec<u8>| {
        h[40] = 0x01;
        h[41 + 1088..].fill(0);
    };
    assert_eq!(both(wrong_item, |_| {})[0], bad);
    assert_eq!(both(|h| h[41..41 + 384].fill(0xff), |_| {})[0], bad);
}

#[test]
fn malformed_body() {
    let bad = Err(RatchetError::MalformedBody);
    // Non-zero padding; a declared length beyond the buffer; too short for the hash.
    let cases: [fn(&mut Vec<u8>); 3] = [
        |p| *p.last_mut().unwrap() = 1,
        |p| p[..4].copy_from_slice(&5000u32.to_be_bytes()),
        |p| {
            p[..4].copy_from_slice(&3u32.to_be_bytes());
            p[7..].fill(0);
        },
    ];
    for padded in cases {
        assert_eq!(both(|_| {}, padded), [bad.clone(), bad.clone()]);
    }
}
