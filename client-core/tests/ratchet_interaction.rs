//! Two seeded parties talk through a hostile network, in the manner of libsignal's
//! `interaction` fuzz target.
//!
//! Each step picks one action: send (either side, payloads of every class), deliver the
//! next message in order, drop it, hold it back (to deliver later, out of order), deliver
//! a held message, replay something already delivered, deliver a tampered or truncated
//! copy, or re-key. The checks:
//!
//! * every accepted message is exactly what was sent, and is accepted once;
//! * [`Order`] is exactly right: `Late` for a message older than one already accepted,
//!   `InOrder` for the next one, `Gap { skipped }` with the number jumped over otherwise;
//! * every other outcome is a typed error the action allows (messages delivered in order
//!   must always be accepted), and a failed decrypt leaves the serialized session
//!   byte-for-byte unchanged;
//! * at the end of each run both directions still work.
//!
//! `SEEDS × STEPS` = 10,400 steps, counting only steps that acted on something. A failure
//! prints its seed and step; re-run one seed with `PETREL_RATCHET_SEED=n` (and make runs
//! longer with `PETREL_RATCHET_STEPS=n`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use petrel_client::ratchet::{
    Order, QrKey, RatchetError, RekeyRole, SEEN_WINDOW, SKIPPED_KEY_MAX_AGE_SECS, Session,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

/// Outcome counts over the whole run, printed at the end.
static STATS: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

fn count(what: impl Into<String>) {
    *STATS.lock().unwrap().entry(what.into()).or_default() += 1;
}

const SEEDS: u64 = 20;
const STEPS: usize = 520;
const NOW: u64 = 1_700_000_000;

/// One message on the wire.
#[derive(Clone)]
struct Wire {
    /// Position in its sender's sequence.
    index: usize,
    body: Vec<u8>,
}

/// One side: its session, RNG, and what it knows of the peer's messages.
struct Party {
    session: Session,
    rng: ChaCha8Rng,
    /// Plaintexts it sent, by index.
    sent: Vec<Vec<u8>>,
    /// Messages in flight to the peer, in order.
    in_flight: VecDeque<Wire>,
    /// Messages held back by the network.
    held: Vec<Wire>,
    /// Messages the peer has been handed (for replays).
    delivered: Vec<Wire>,
    /// Peer indices this side accepted, in acceptance order.
    accepted: Vec<usize>,
    /// Highest peer index accepted in order (not late).
    highest: Option<usize>,
}

impl Party {
    fn new(session: Session, seed: u64) -> Self {
        Self {
            session,
            rng: ChaCha8Rng::seed_from_u64(seed),
            sent: Vec::new(),
            in_flight: VecDeque::new(),
            held: Vec::new(),
            delivered: Vec::new(),
            accepted: Vec::new(),
            highest: None,
        }
    }
}

fn payload(rng: &mut ChaCha8Rng, tag: &str, index: usize) -> Vec<u8> {
    let len = match rng.random_range(0..1000) {
        0 => 15_100,                          // the 60 KiB class
        1..10 => rng.random_range(732..3000), // the 16 KiB class
        _ => rng.random_range(0..200),
    };
    let mut p = format!("{tag}{index}:").into_bytes();
    p.extend((0..len).map(|_| rng.random::<u8>()));
    p
}

fn state(session: &Session) -> Vec<u8> {
    postcard::to_stdvec(session).unwrap()
}

/// Sender `from` sends one message to `to`.
fn send(from: &mut Party, tag: &str) {
    let index = from.sent.len();
    let plain = payload(&mut from.rng, tag, index);
    let body = from.session.encrypt(&mut from.rng, &plain).unwrap();
    assert!(petrel_federation::padding::is_class(body.len()));
    from.sent.push(plain);
    from.in_flight.push_back(Wire { index, body });
    count("sent");
}

/// How a message reaches the receiver, which decides the outcomes allowed.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Expect {
    /// In order: must be accepted (unless accepted before).
    Fresh,
    /// Held back: accepted, or its key was evicted.
    Held,
    /// A replay of something delivered before.
    Replay,
    /// Bytes altered.
    Tampered,
}

/// Hands `wire` (possibly altered) from `from` to `to` and checks the outcome.
fn deliver(from: &Party, to: &mut Party, wire: &Wire, body: &[u8], expect: Expect, now: u64) {
    let before = state(&to.session);
    let already = to.accepted.contains(&wire.index);
    let result = to.session.decrypt(body, now);
    match result {
        Ok(decrypted) => {
            assert!(expect != Expect::Tampered, "tampered message accepted");
            assert!(!already, "message {} accepted twice", wire.index);
            assert_eq!(&*decrypted.plaintext, &from.sent[wire.index][..]);
            let expected = match to.highest {
                Some(h) if wire.index < h => Order::Late,
                Some(h) if wire.index == h + 1 => Order::InOrder,
                None if wire.index == 0 => Order::InOrder,
                h => Order::Gap {
                    skipped: (wire.index - h.map_or(0, |h| h + 1)) as u32,
                },
            };
            assert_eq!(decrypted.order, expected, "order of message {}", wire.index);
            count(match expected {
                Order::InOrder => "accepted in order",
                Order::Gap { .. } => "accepted after a gap",
                _ => "accepted late",
            });
            if expected != Order::Late {
                to.highest = Some(wire.index);
            }
            to.accepted.push(wire.index);
        }
        Err(error) => {
            assert!(state(&to.session) == before, "failed decrypt changed state");
            let recent = to
                .accepted
                .iter()
                .rev()
                .take(SEEN_WINDOW)
                .any(|&i| i == wire.index);
            let ok = match (expect, &error) {
                (Expect::Replay, RatchetError::Duplicate) => already && recent,
                (Expect::Replay, RatchetError::Stale | RatchetError::Undecryptable) => !recent,
                (Expect::Held, RatchetError::Stale | RatchetError::Undecryptable) => !already,
                (Expect::Tampered, RatchetError::BadLength { .. }) => body.len() != wire.body.len(),
                (
                    Expect::Tampered,
                    RatchetError::Undecryptable | RatchetError::BodyAuth | RatchetError::Stale,
                ) => true,
                _ => false,
            };
            assert!(ok, "message {}: unexpected {error:?}", wire.index);
            let name = format!("{error:?}");
            let name = name.split(' ').next().unwrap_or_default();
            count(format!("{expect:?} refused {name}"));
        }
    }
}

/// One network action from `from` towards `to`; false if it found nothing to act on.
fn step(rng: &mut ChaCha8Rng, a: &mut Party, b: &mut Party, a_to_b: bool, now: u64) -> bool {
    let (from, to, tag) = if a_to_b { (a, b, "a") } else { (b, a, "b") };
    match rng.random_range(0..100) {
        0..35 => send(from, tag),
        35..65 => {
            let Some(wire) = from.in_flight.pop_front() else {
                return false;
            };
            deliver(from, to, &wire, &wire.body, Expect::Fresh, now);
            from.delivered.push(wire);
        }
        65..70 => {
            count("dropped");
            return from.in_flight.pop_front().is_some();
        }
        70..76 => {
            let Some(wire) = from.in_flight.pop_front() else {
                return false;
            };
            from.held.push(wire);
        }
        76..84 => {
            if from.held.is_empty() {
                return false;
            }
            let wire = from.held.swap_remove(rng.random_range(0..from.held.len()));
            deliver(from, to, &wire, &wire.body, Expect::Held, now);
            from.delivered.push(wire);
        }
        84..92 => {
            if from.delivered.is_empty() {
                return false;
            }
            let wire = from.delivered[rng.random_range(0..from.delivered.len())].clone();
            deliver(from, to, &wire, &wire.body, Expect::Replay, now);
        }
        _ => {
            let pool: Vec<&Wire> = from.delivered.iter().chain(&from.in_flight).collect();
            if pool.is_empty() {
                return false;
            }
            let wire = pool[rng.random_range(0..pool.len())].clone();
            let mut body = wire.body.clone();
            if rng.random_bool(0.2) {
                body.truncate(body.len() - 1);
            } else {
                let at = rng.random_range(0..body.len());
                body[at] ^= 1 << rng.random_range(0..8);
            }
            deliver(from, to, &wire, &body, Expect::Tampered, now);
        }
    }
    true
}

/// Both parties scan each other's re-key QR in person; both lead (race-free: the first new
/// chain carries the mix and the other side follows it).
fn rekey(rng: &mut ChaCha8Rng, a: &mut Party, b: &mut Party) {
    count("re-keys");
    let (ka, kb) = (QrKey::generate(rng), QrKey::generate(rng));
    let (ra, rb) = if rng.random_bool(0.5) {
        (RekeyRole::Lead, RekeyRole::Follow)
    } else {
        (RekeyRole::Lead, RekeyRole::Lead)
    };
    a.session.rekey(&ka, &kb.public(), ra).unwrap();
    b.session.rekey(&kb, &ka.public(), rb).unwrap();
}

fn run(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let invitation = QrKey::generate(&mut rng);
    let mut a = Party::new(
        Session::initiate(&mut rng, &invitation.public()).unwrap(),
        seed * 2 + 1000,
    );
    let first = payload(&mut a.rng, "a", 0);
    let confirmation = a.session.encrypt(&mut a.rng, &first).unwrap();
    a.sent.push(first.clone());
    let (session, decrypted) = Session::respond(&invitation, &confirmation, NOW).unwrap();
    assert_eq!(&*decrypted.plaintext, &first[..]);
    assert_eq!(a.session.safety_code(), session.safety_code());
    let mut b = Party::new(session, seed * 2 + 1001);
    b.accepted.push(0);
    b.highest = Some(0);
    a.delivered.push(Wire {
        index: 0,
        body: confirmation,
    });

    let mut now = NOW;
    let mut done = 0;
    let steps = std::env::var("PETREL_RATCHET_STEPS").map_or(STEPS, |s| s.parse().unwrap());
    while done < steps {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // One re-key at a time: the previous one has completed on both sides.
            if rng.random_range(0..200) == 0
                && !a.session.rekey_pending()
                && !b.session.rekey_pending()
            {
                rekey(&mut rng, &mut a, &mut b);
            }
            // Time passes; now and then a month, which expires every skipped key.
            now += if rng.random_range(0..500) == 0 {
                count("a month passed");
                SKIPPED_KEY_MAX_AGE_SECS + 1
            } else {
                rng.random_range(0..60)
            };
            let a_to_b = rng.random_bool(0.5);
            step(&mut rng, &mut a, &mut b, a_to_b, now)
        }));
        match result {
            Ok(acted) => done += usize::from(acted),
            Err(_) => panic!("seed {seed}, step {done}"),
        }
    }
    *STATS.lock().unwrap().entry("steps".into()).or_default() += done;
    // Both directions still work: deliver what is in flight, then one more each way.
    finish(&mut a, &mut b, "a", seed, now);
    finish(&mut b, &mut a, "b", seed, now);
}

fn finish(from: &mut Party, to: &mut Party, tag: &str, seed: u64, now: u64) {
    while let Some(wire) = from.in_flight.pop_front() {
        deliver(from, to, &wire, &wire.body, Expect::Fresh, now);
    }
    send(from, tag);
    let wire = from.in_flight.pop_front().unwrap();
    let before = to.accepted.len();
    deliver(from, to, &wire, &wire.body, Expect::Fresh, now);
    assert_eq!(to.accepted.len(), before + 1, "seed {seed}: session stuck");
}

#[test]
fn interaction() {
    match std::env::var("PETREL_RATCHET_SEED") {
        Ok(seed) => run(seed.parse().unwrap()),
        Err(_) => (0..SEEDS).for_each(run),
    }
    let stats = STATS.lock().unwrap();
    eprintln!("outcomes: {stats:#?}");
    if std::env::var_os("PETREL_RATCHET_SEED").is_none() {
        assert!(stats["steps"] >= 10_000);
    }
}
