//! Behaviour of a session through its public API: size classes and capacities, the safety
//! code, gap and late reporting, the bounds of the skipped-key store, expiry, serde
//! round trips and redacted `Debug` — and, ignored by default, the throughput measurement
//! for a 100-byte message (run it in a release build):
//!
//! ```text
//! cargo test --release -p petrel-client --test ratchet_session -- --ignored --nocapture
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use petrel_client::ratchet::{
    MAX_SKIPPED_HEADER_KEYS, MAX_SKIPPED_KEYS, MESSAGE_OVERHEAD, Order, QrKey, RatchetError, Role,
    SKIPPED_KEY_MAX_AGE_SECS, Session,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::{Duration, Instant};

const NOW: u64 = 1_700_000_000;

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

#[test]
fn size_classes_and_capacity() {
    assert_eq!(MESSAGE_OVERHEAD, 1317);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let invitation = QrKey::generate(&mut rng);
    for (len, class) in [(699, 2048), (700, 16_384)] {
        let mut alice = Session::initiate(&mut rng, &invitation.public()).unwrap();
        let confirmation = alice.encrypt(&mut rng, &vec![9; len]).unwrap();
        assert_eq!(confirmation.len(), class, "confirmation of {len} bytes");
        let (_, d) = Session::respond(&invitation, &confirmation, NOW).unwrap();
        assert_eq!(d.plaintext.len(), len);
    }
    let (mut alice, mut bob, mut rng) = pair(2);
    for (len, class) in [
        (0, 2048),
        (100, 2048),
        (731, 2048),
        (732, 16_384),
        (15_067, 16_384),
    ]
    .into_iter()
    .chain([(15_068, 61_440), (60_123, 61_440)])
    {
        let m = alice.encrypt(&mut rng, &vec![7; len]).unwrap();
        assert_eq!(m.len(), class, "{len}-byte payload");
        assert_eq!(&*bob.decrypt(&m, NOW).unwrap().plaintext, &vec![7; len][..]);
    }
}

#[test]
fn safety_code_matches_and_differs() {
    let (alice, bob, _) = pair(3);
    let code = alice.safety_code();
    assert_eq!(code, bob.safety_code());
    let groups: Vec<&str> = code.split(' ').collect();
    assert_eq!(groups.len(), 12);
    assert!(
        groups
            .iter()
            .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit()))
    );
    let (carol, _, _) = pair(4);
    assert_ne!(code, carol.safety_code());
    assert_eq!(
        (alice.role(), bob.role()),
        (Role::Initiator, Role::Responder)
    );
}

#[test]
fn gaps_and_late_messages_are_reported() {
    let (mut alice, mut bob, mut rng) = pair(5);
    let m: Vec<_> = (0..5u8)
        .map(|i| alice.encrypt(&mut rng, &[i]).unwrap())
        .collect();
    assert_eq!(bob.decrypt(&m[0], NOW).unwrap().order, Order::InOrder);
    assert_eq!(
        bob.decrypt(&m[3], NOW).unwrap().order,
        Order::Gap { skipped: 2 }
    );
    assert_eq!(bob.decrypt(&m[1], NOW).unwrap().order, Order::Late);
    assert_eq!(bob.decrypt(&m[4], NOW).unwrap().order, Order::InOrder);
    // The last message of a chain lost: the next chain reports it through `pn`.
    let b = bob.encrypt(&mut rng, b"b").unwrap();
    alice.decrypt(&b, NOW).unwrap();
    let _lost = bob.encrypt(&mut rng, b"lost").unwrap();
    let a = alice.encrypt(&mut rng, b"a").unwrap();
    bob.decrypt(&a, NOW).unwrap();
    let b2 = bob.encrypt(&mut rng, b"b2").unwrap();
    assert_eq!(
        alice.decrypt(&b2, NOW).unwrap().order,
        Order::Gap { skipped: 1 }
    );
    assert_eq!(&*bob.decrypt(&m[2], NOW).unwrap().plaintext, &[2]);
}

#[test]
fn skipped_keys_expire() {
    let (mut alice, mut bob, mut rng) = pair(6);
    let early = alice.encrypt(&mut rng, b"early").unwrap();
    let later = alice.encrypt(&mut rng, b"later").unwrap();
    bob.decrypt(&later, NOW).unwrap();
    assert_eq!(bob.skipped_keys(), 1);
    bob.expire_skipped(NOW + SKIPPED_KEY_MAX_AGE_SECS);
    assert_eq!(bob.skipped_keys(), 1, "kept up to the limit");
    bob.expire_skipped(NOW + SKIPPED_KEY_MAX_AGE_SECS + 1);
    assert_eq!(bob.skipped_keys(), 0);
    // The chain is still current, so its header opens; the key is gone.
    assert_eq!(bob.decrypt(&early, NOW).unwrap_err(), RatchetError::Stale);
}

#[test]
fn header_key_cap_evicts_the_oldest_chain() {
    let (mut alice, mut bob, mut rng) = pair(7);
    // Each round: Alice starts a chain, one message of it is held back, Bob answers.
    let mut held = Vec::new();
    for round in 0..=MAX_SKIPPED_HEADER_KEYS {
        let h = alice.encrypt(&mut rng, &[round as u8]).unwrap();
        let next = alice.encrypt(&mut rng, b"next").unwrap();
        bob.decrypt(&next, NOW).unwrap();
        held.push(h);
        let b = bob.encrypt(&mut rng, b"b").unwrap();
        alice.decrypt(&b, NOW).unwrap();
    }
    assert_eq!(bob.skipped_keys(), MAX_SKIPPED_HEADER_KEYS);
    assert_eq!(
        bob.decrypt(&held[0], NOW).unwrap_err(),
        RatchetError::Undecryptable
    );
    for (i, h) in held.iter().enumerate().skip(1) {
        let d = bob.decrypt(h, NOW).unwrap();
        assert_eq!((&d.plaintext[..], d.order), (&[i as u8][..], Order::Late));
    }
    assert_eq!(bob.skipped_keys(), 0);
}

#[test]
fn key_cap_evicts_the_oldest_keys() {
    let (mut alice, mut bob, mut rng) = pair(8);
    let mut first = None;
    // Three chains of 800 skipped keys each: 2400 > MAX_SKIPPED_KEYS.
    for _ in 0..3 {
        let m: Vec<_> = (0..801)
            .map(|_| alice.encrypt(&mut rng, b"m").unwrap())
            .collect();
        bob.decrypt(&m[800], NOW).unwrap();
        first.get_or_insert(m);
        let b = bob.encrypt(&mut rng, b"b").unwrap();
        alice.decrypt(&b, NOW).unwrap();
    }
    assert_eq!(bob.skipped_keys(), MAX_SKIPPED_KEYS);
    let first = first.unwrap();
    // The oldest 400 keys of the first chain are gone, the rest are there.
    assert_eq!(
        bob.decrypt(&first[399], NOW).unwrap_err(),
        RatchetError::Stale
    );
    assert_eq!(bob.decrypt(&first[400], NOW).unwrap().order, Order::Late);
}

#[test]
fn state_round_trips_through_serde() {
    let (mut alice, mut bob, mut rng) = pair(9);
    let held = alice.encrypt(&mut rng, b"held").unwrap();
    let m = alice.encrypt(&mut rng, b"m").unwrap();
    bob.decrypt(&m, NOW).unwrap();
    let bytes = postcard::to_stdvec(&bob).unwrap();
    let mut restored: Session = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(postcard::to_stdvec(&restored).unwrap(), bytes);
    assert_eq!(&*restored.decrypt(&held, NOW).unwrap().plaintext, b"held");
    assert_eq!(
        restored.decrypt(&m, NOW).unwrap_err(),
        RatchetError::Duplicate
    );
    let reply = restored.encrypt(&mut rng, b"from the store").unwrap();
    assert_eq!(
        &*alice.decrypt(&reply, NOW).unwrap().plaintext,
        b"from the store"
    );
}

#[test]
fn debug_output_is_redacted() {
    let (alice, _, _) = pair(10);
    let key = QrKey::from_secret([0x42; 32]);
    let text = format!("{alice:?} {key:?}");
    assert!(!text.contains("4242"), "{text}");
    assert!(text.contains(&hex::encode(key.public())), "{text}");
}

fn report(what: &str, n: u32, elapsed: Duration) {
    println!(
        "{what}: {n} × (encrypt + decrypt) of 100 bytes in {elapsed:.2?}: {:.2?} each, {:.0}/s",
        elapsed / n,
        f64::from(n) / elapsed.as_secs_f64()
    );
}

/// Encrypt+decrypt pairs of a 100-byte message: first in one direction (one sending chain,
/// the common case of several messages in a row), then strictly alternating, where every
/// message is a ratchet step (a fresh X25519 key, two DH per side, and an ML-KEM key
/// generation or an encapsulation and a decapsulation).
#[test]
#[ignore = "a measurement: run it with --release -- --ignored --nocapture"]
fn rate_100_byte_messages() {
    let (mut alice, mut bob, mut rng) = pair(1);
    let payload = [0x5a; 100];
    let n = 20_000;
    let start = Instant::now();
    for _ in 0..n {
        let m = alice.encrypt(&mut rng, &payload).unwrap();
        assert_eq!(bob.decrypt(&m, NOW).unwrap().plaintext.len(), 100);
    }
    report("same chain", n, start.elapsed());
    let n = 4_000;
    let start = Instant::now();
    for i in 0..n {
        let (from, to) = if i % 2 == 0 {
            (&mut bob, &mut alice)
        } else {
            (&mut alice, &mut bob)
        };
        let m = from.encrypt(&mut rng, &payload).unwrap();
        assert_eq!(to.decrypt(&m, NOW).unwrap().plaintext.len(), 100);
    }
    report("alternating, a ratchet step each", n, start.elapsed());
}
