//! Client crypto and the crypto baselines, in this process, one core.
//!
//! * **The ceiling of this machine**: each primitive Petrel is built on, alone, in a tight
//!   loop — X25519, Ed25519 sign and verify (of a 2,048-byte SEND body), XChaCha20-Poly1305
//!   seal and BLAKE3 of 2,048 bytes, ML-KEM-768 encapsulation and decapsulation.
//! * **The ratchet** ([`petrel_client::ratchet::Session`], its public API only): encrypt +
//!   decrypt of 100-byte and 4 KiB payloads, *within a chain* (one side keeps sending: a
//!   KDF step per message) and *ping-pong* (the sides alternate: every message starts a new
//!   chain with an X25519 step and an ML-KEM item — a fresh key pair or an encapsulation).
//!   And the pairing handshake's crypto in memory: invitation key, `initiate`, the
//!   confirmation, `respond`, the first reply and its decryption.
//! * **vodozemac's Olm** (`vodozemac::olm::Session`, config version 1 as Matrix deploys it)
//!   in the same two patterns and sizes, and its session set-up (one-time key, outbound
//!   session, pre-key message, inbound session, first reply), for the target
//!   "ratchet at least as fast as Olm".
//!
//! vodozemac is an optional dependency behind the `olm-baseline` feature of
//! `petrel-tests`, on by default. The issue asks for "a dev-dependency of the bench only",
//! but `petrel-bench` is a binary and binaries cannot use dev-dependencies; a default
//! feature keeps it out of every other crate of the workspace, lets
//! `cargo run --release -p petrel-tests --bin petrel-bench` measure it with no extra flag,
//! and `--no-default-features` builds the bench without it (the Olm rows are then left out
//! and the ratchet rows have no target).
//!
//! Every figure is timed for the plan's duration after one untimed call, in batches that
//! double; every decryption is compared with what was encrypted. Randomness comes from a
//! seeded ChaCha8 generator, so the ratchet does the same work in every run (vodozemac
//! draws from the OS; it takes no generator).

use super::plan::CryptoPlan;
use super::report::Row;
use anyhow::{Context, bail};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ed25519_dalek::{Signer, SigningKey, Verifier};
use ml_kem::kem::{Decapsulate, Encapsulate};
use ml_kem::ml_kem_768::DecapsulationKey;
use petrel_client::ratchet::{QrKey, Session};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use std::time::{Duration, Instant};
use x25519_dalek::{PublicKey, StaticSecret};

/// `now` for the ratchet (Unix seconds; it only stamps skipped keys).
const NOW: u64 = 1_700_000_000;
/// The two payload sizes the issue names.
const SIZES: [(usize, &str); 2] = [(100, "100 B"), (4_096, "4 KiB")];

/// Calls `op` once untimed, then in doubling batches until `duration` has passed; returns
/// calls per second.
fn rate(duration: Duration, mut op: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    op()?;
    let start = Instant::now();
    let mut calls: u64 = 0;
    let mut batch: u64 = 1;
    loop {
        for _ in 0..batch {
            op()?;
        }
        calls += batch;
        let elapsed = start.elapsed();
        if elapsed >= duration {
            return Ok(calls as f64 / elapsed.as_secs_f64());
        }
        batch = (batch * 2).min(1 << 14);
    }
}

/// A payload of `len` bytes that differs per message.
fn payload(len: usize, n: u64) -> Vec<u8> {
    let mut p = vec![0x5a; len];
    for (b, x) in p.iter_mut().zip(n.to_le_bytes()) {
        *b = x;
    }
    p
}

/// What the crypto scenario measured, for rows and ratios.
struct Figures {
    rows: Vec<Row>,
    roundtrips: u64,
}

impl Figures {
    fn rate(&mut self, key: &str, scenario: &str, figure: &str, value: f64, unit: &str) {
        self.rows
            .push(Row::info(key, scenario, figure, value, unit));
    }
}

/// Runs every figure (on a blocking thread: it is pure CPU) and appends the rows.
pub async fn run(plan: &CryptoPlan, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let plan = plan.clone();
    let figures = tokio::task::spawn_blocking(move || measure(&plan))
        .await
        .context("the crypto measurement panicked")??;
    rows.extend(figures.rows);
    rows.push(
        Row::info(
            "crypto.roundtrips",
            "crypto",
            "decryptions checked against their plaintext",
            figures.roundtrips as f64,
            "msgs",
        )
        .sanity(figures.roundtrips > 0, "> 0, all equal"),
    );
    Ok(())
}

fn measure(plan: &CryptoPlan) -> anyhow::Result<Figures> {
    let mut figures = Figures {
        rows: Vec::new(),
        roundtrips: 0,
    };
    primitives(plan.per_figure, &mut figures)?;
    let olm = olm::measure(plan.per_figure, &mut figures)?;
    ratchet(plan.per_figure, olm.as_ref(), &mut figures)?;
    if let Some(olm) = olm {
        figures.rows.extend(olm.rows);
    }
    Ok(figures)
}

fn primitives(d: Duration, f: &mut Figures) -> anyhow::Result<()> {
    let scenario = "baseline";
    eprintln!("crypto: primitives alone, {:.1} s each", d.as_secs_f64());
    let message = payload(2_048, 7);

    let secret = StaticSecret::from([1u8; 32]);
    let peer = PublicKey::from(&StaticSecret::from([2u8; 32]));
    let x = rate(d, || {
        std::hint::black_box(secret.diffie_hellman(std::hint::black_box(&peer)));
        Ok(())
    })?;
    f.rate(
        "crypto.base.x25519",
        scenario,
        "X25519 key agreement",
        x,
        "ops/s",
    );

    let signing = SigningKey::from_bytes(&[3u8; 32]);
    let sign = rate(d, || {
        std::hint::black_box(signing.sign(std::hint::black_box(&message)));
        Ok(())
    })?;
    f.rate(
        "crypto.base.ed25519_sign",
        scenario,
        "Ed25519 sign, 2,048 B",
        sign,
        "ops/s",
    );
    let signature = signing.sign(&message);
    let verifying = signing.verifying_key();
    let verify = rate(d, || {
        verifying
            .verify(std::hint::black_box(&message), &signature)
            .context("Ed25519 verification failed")
    })?;
    f.rate(
        "crypto.base.ed25519_verify",
        scenario,
        "Ed25519 verify, 2,048 B",
        verify,
        "ops/s",
    );

    let cipher = XChaCha20Poly1305::new(&[4u8; 32].into());
    let nonce = XNonce::from([5u8; 24]);
    let seal = rate(d, || {
        let sealed = cipher
            .encrypt(&nonce, std::hint::black_box(&message[..]))
            .map_err(|_| anyhow::anyhow!("XChaCha20-Poly1305 seal failed"))?;
        std::hint::black_box(sealed);
        Ok(())
    })?;
    f.rate(
        "crypto.base.xchacha_seal",
        scenario,
        "XChaCha20-Poly1305 seal, 2,048 B",
        seal,
        "ops/s",
    );

    let hash = rate(d, || {
        std::hint::black_box(blake3::hash(std::hint::black_box(&message)));
        Ok(())
    })?;
    f.rate(
        "crypto.base.blake3",
        scenario,
        "BLAKE3, 2,048 B",
        hash,
        "ops/s",
    );

    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let dk = DecapsulationKey::from_seed(ml_kem::Seed::from([6u8; 64]));
    let ek = dk.encapsulation_key().clone();
    let encaps = rate(d, || {
        std::hint::black_box(ek.encapsulate_with_rng(&mut rng));
        Ok(())
    })?;
    f.rate(
        "crypto.base.mlkem_encaps",
        scenario,
        "ML-KEM-768 encapsulate",
        encaps,
        "ops/s",
    );
    let (ct, shared) = ek.encapsulate_with_rng(&mut rng);
    let decaps = rate(d, || {
        if dk.decapsulate(std::hint::black_box(&ct)) != shared {
            bail!("ML-KEM-768 decapsulation disagrees");
        }
        Ok(())
    })?;
    f.rate(
        "crypto.base.mlkem_decaps",
        scenario,
        "ML-KEM-768 decapsulate (expanded key)",
        decaps,
        "ops/s",
    );
    Ok(())
}

/// Alice and Bob after the pairing handshake and the first reply.
fn ratchet_pair(rng: &mut ChaCha8Rng) -> anyhow::Result<(Session, Session)> {
    let invitation = QrKey::generate(rng);
    let mut alice = Session::initiate(rng, &invitation.public())?;
    let confirmation = alice.encrypt(rng, b"confirmation")?;
    let (mut bob, first) = Session::respond(&invitation, &confirmation, NOW)?;
    if &first.plaintext[..] != b"confirmation" {
        bail!("the confirmation decrypted to something else");
    }
    let reply = bob.encrypt(rng, b"reply")?;
    if &alice.decrypt(&reply, NOW)?.plaintext[..] != b"reply" {
        bail!("the first reply decrypted to something else");
    }
    Ok((alice, bob))
}

fn ratchet(d: Duration, olm: Option<&olm::Rates>, f: &mut Figures) -> anyhow::Result<()> {
    let scenario = "crypto";
    eprintln!("crypto: ratchet, {:.1} s per figure", d.as_secs_f64());
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut handshakes: u64 = 0;
    let pairing = rate(d, || {
        ratchet_pair(&mut rng)?;
        handshakes += 1;
        Ok(())
    })?;
    f.roundtrips += 2 * handshakes;
    let row = Row::info(
        "crypto.ratchet.pairing",
        scenario,
        "pairing handshake crypto (invitation key, initiate, confirmation, respond, first \
         reply, decrypt)",
        1e6 / pairing,
        "µs",
    );
    f.rows.push(row.note(
        "In memory, without the relays: the crypto of the pairing, not its round trips. The \
         Olm comparison is its session set-up (one-time key, outbound session, pre-key \
         message, inbound session, first reply), without creating the accounts.",
    ));

    for (i, (len, size)) in SIZES.into_iter().enumerate() {
        for pingpong in [false, true] {
            let (mut alice, mut bob) = ratchet_pair(&mut rng)?;
            let mut n: u64 = 0;
            let r = rate(d, || {
                let message = payload(len, n);
                let (from, to) = if pingpong && n % 2 == 1 {
                    (&mut bob, &mut alice)
                } else {
                    (&mut alice, &mut bob)
                };
                let sealed = from.encrypt(&mut rng, &message)?;
                if to.decrypt(&sealed, NOW)?.plaintext[..] != message[..] {
                    bail!("a ratchet message decrypted to something else");
                }
                n += 1;
                Ok(())
            })?;
            f.roundtrips += n;
            let pattern = if pingpong { "pingpong" } else { "chain" };
            let text = if pingpong {
                "ping-pong (a DH + KEM step each)"
            } else {
                "within a chain"
            };
            let mut row = Row::info(
                &format!("crypto.ratchet.{pattern}_{len}"),
                scenario,
                &format!("ratchet encrypt + decrypt, {size}, {text}"),
                r,
                "msgs/s",
            );
            if let Some(olm) = olm {
                let olm_rate = olm.messages[i][usize::from(pingpong)];
                row = row.at_least(olm_rate, "≥ Olm");
            }
            f.rows.push(row.note(
                "Petrel pads every message to a size class (100 B → 2,048 B, 4 KiB → 16,384 B) \
                 and encrypts its header separately; each ping-pong step adds an ML-KEM-768 \
                 key pair or encapsulation (decapsulation on the other side) to the X25519 \
                 step. Olm v1: X25519 steps only, AES-256-CBC + HMAC-SHA-256, no padding.",
            ));
        }
    }
    Ok(())
}

#[cfg(feature = "olm-baseline")]
mod olm {
    //! vodozemac's Olm, measured like the ratchet.

    use super::{Duration, Figures, SIZES, payload, rate};
    use crate::bench::report::Row;
    use anyhow::{Context, bail};
    use vodozemac::olm::{Account, InboundCreationResult, OlmMessage, Session, SessionConfig};

    /// Olm's figures, for the ratchet rows' targets.
    pub(super) struct Rates {
        /// Messages per second per size, [within a chain, ping-pong].
        pub(super) messages: [[f64; 2]; 2],
        /// The Olm rows, added after the ratchet's.
        pub(super) rows: Vec<Row>,
    }

    /// A session pair between `alice` and `bob` after a pre-key message and a reply.
    fn pair(alice: &Account, bob: &mut Account) -> anyhow::Result<(Session, Session)> {
        let config = SessionConfig::version_1();
        let otk = bob
            .generate_one_time_keys(1)
            .created
            .first()
            .copied()
            .context("no one-time key")?;
        let mut a = alice.create_outbound_session(config, bob.curve25519_key(), otk)?;
        let OlmMessage::PreKey(pre_key) = a.encrypt(b"confirmation")? else {
            bail!("Olm's first message is not a pre-key message");
        };
        let InboundCreationResult {
            session: mut b,
            plaintext,
        } = bob.create_inbound_session(config, alice.curve25519_key(), &pre_key)?;
        if plaintext != b"confirmation" {
            bail!("Olm's pre-key message decrypted to something else");
        }
        let reply = b.encrypt(b"reply")?;
        if a.decrypt(&reply)? != b"reply" {
            bail!("Olm's first reply decrypted to something else");
        }
        Ok((a, b))
    }

    pub(super) fn measure(d: Duration, f: &mut Figures) -> anyhow::Result<Option<Rates>> {
        let scenario = "baseline";
        eprintln!("crypto: vodozemac Olm, {:.1} s per figure", d.as_secs_f64());
        let alice = Account::new();
        let mut bob = Account::new();
        let mut setups: u64 = 0;
        let setup = rate(d, || {
            pair(&alice, &mut bob)?;
            setups += 1;
            Ok(())
        })?;
        f.roundtrips += 2 * setups;
        let mut rows = vec![Row::info(
            "crypto.olm.setup",
            scenario,
            "vodozemac Olm session set-up",
            1e6 / setup,
            "µs",
        )];
        let mut messages = [[0.0; 2]; 2];
        for (i, (len, size)) in SIZES.into_iter().enumerate() {
            for pingpong in [false, true] {
                let (mut a, mut b) = pair(&alice, &mut bob)?;
                let mut n: u64 = 0;
                let r = rate(d, || {
                    let message = payload(len, n);
                    let (from, to) = if pingpong && n % 2 == 1 {
                        (&mut b, &mut a)
                    } else {
                        (&mut a, &mut b)
                    };
                    let sealed = from.encrypt(&message)?;
                    if to.decrypt(&sealed)? != message {
                        bail!("an Olm message decrypted to something else");
                    }
                    n += 1;
                    Ok(())
                })?;
                f.roundtrips += n;
                if let Some(slot) = messages
                    .get_mut(i)
                    .and_then(|m| m.get_mut(usize::from(pingpong)))
                {
                    *slot = r;
                }
                let (pattern, text) = if pingpong {
                    ("pingpong", "ping-pong (a DH step each)")
                } else {
                    ("chain", "within a chain")
                };
                rows.push(Row::info(
                    &format!("crypto.olm.{pattern}_{len}"),
                    scenario,
                    &format!("vodozemac Olm encrypt + decrypt, {size}, {text}"),
                    r,
                    "msgs/s",
                ));
            }
        }
        Ok(Some(Rates { messages, rows }))
    }
}

#[cfg(not(feature = "olm-baseline"))]
mod olm {
    //! Built without the `olm-baseline` feature: no Olm figures.

    use super::{Duration, Figures};
    use crate::bench::report::Row;

    pub(super) struct Rates {
        pub(super) messages: [[f64; 2]; 2],
        pub(super) rows: Vec<Row>,
    }

    pub(super) fn measure(_d: Duration, _f: &mut Figures) -> anyhow::Result<Option<Rates>> {
        eprintln!("crypto: built without the olm-baseline feature; no vodozemac figures");
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pairs_and_payloads() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (mut alice, mut bob) = ratchet_pair(&mut rng).unwrap();
        let m = payload(4_096, 3);
        assert_eq!(m.len(), 4_096);
        assert_ne!(m, payload(4_096, 4));
        let sealed = alice.encrypt(&mut rng, &m).unwrap();
        assert_eq!(sealed.len(), 16_384);
        assert_eq!(&bob.decrypt(&sealed, NOW).unwrap().plaintext[..], &m[..]);
    }

    #[test]
    fn rate_counts_calls() {
        let mut calls = 0;
        let r = rate(Duration::from_millis(5), || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert!(r > 0.0 && calls > 1);
    }
}
