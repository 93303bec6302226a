//! Known-answer vectors for layer 1, checked against an independent model of §12.1.
//!
//! `specs/vectors/ratchet.txt` holds `name = hex` lines: a pairing (confirmation, reply),
//! a second initiator chain, a re-keyed responder chain, the safety code, and `KDF_RK` /
//! `KDF_CK` examples. The test recomputes every line through the public API from seeded
//! RNGs, and — without the crate's own code — re-derives the handshake, opens every
//! header with the header keys the spec names, and re-derives every message key (KEM
//! decapsulation and re-key mix included) from the secrets the seeded RNGs drew.
//!
//! Regenerate after a deliberate change with
//! `PETREL_WRITE_VECTORS=1 cargo test -p petrel-client --test ratchet_vectors`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ml_kem::kem::{Decapsulate, KeyExport};
use ml_kem::ml_kem_768::DecapsulationKey;
use petrel_client::ratchet::{QrKey, RekeyRole, Session, labels};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use x25519_dalek::{PublicKey, StaticSecret};

const NOW: u64 = 1_700_000_000;

fn seq<const N: usize>(start: u8) -> [u8; N] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

// ---- The independent model -------------------------------------------------------------

fn xof(label: &str, parts: &[&[u8]], n: usize) -> Vec<u8> {
    let mut h = blake3::Hasher::new_derive_key(label);
    parts.iter().for_each(|p| {
        h.update(p);
    });
    let mut out = vec![0; n];
    h.finalize_xof().fill(&mut out);
    out
}

fn arr(b: &[u8]) -> [u8; 32] {
    b.try_into().unwrap()
}

fn kdf_rk(rk: &[u8], dh: &[u8], ss: Option<&[u8]>) -> ([u8; 32], [u8; 32], [u8; 32]) {
    let o = xof(labels::RATCHET_ROOT, &[rk, dh, ss.unwrap_or(&[0; 32])], 96);
    (arr(&o[..32]), arr(&o[32..64]), arr(&o[64..]))
}

/// `(next chain key, message key ‖ nonce)`.
fn kdf_ck(ck: &[u8]) -> ([u8; 32], Vec<u8>) {
    (
        blake3::derive_key(labels::RATCHET_CHAIN, ck),
        xof(labels::RATCHET_MESSAGE, &[ck], 56),
    )
}

fn dh(secret: &StaticSecret, public: &[u8]) -> [u8; 32] {
    secret
        .diffie_hellman(&PublicKey::from(arr(public)))
        .to_bytes()
}

fn aead(key: &[u8], nonce: &[u8], aad: &[u8], data: &[u8], seal: bool) -> Option<Vec<u8>> {
    let cipher = XChaCha20Poly1305::new(&arr(key).into());
    let nonce = XNonce::from(<[u8; 24]>::try_from(nonce).unwrap());
    let payload = Payload { msg: data, aad };
    if seal {
        cipher.encrypt(&nonce, payload).ok()
    } else {
        cipher.decrypt(&nonce, payload).ok()
    }
}

/// A ratchet message opened by the model: the plaintext header and padded body.
struct Opened {
    header: Vec<u8>,
    padded: Vec<u8>,
}

/// Opens `msg` with header key `hk`; the chain key for its body comes from the header.
fn open(msg: &[u8], hk: &[u8], ad: &[u8], mut chain_key: impl FnMut(&[u8]) -> [u8; 32]) -> Opened {
    let (nonce, header_ct, body_ct) = (&msg[..24], &msg[24..1265], &msg[1265..]);
    let header = aead(hk, nonce, ad, header_ct, false).expect("header key");
    let (_, mk) = kdf_ck(&chain_key(&header));
    let aad = [ad, nonce, header_ct].concat();
    let padded = aead(&mk[..32], &mk[32..], &aad, body_ct, false).expect("message key");
    Opened { header, padded }
}

/// Checks a header's fixed fields and a body's padding, hash and payload.
fn check(o: &Opened, pn: u32, n: u32, kind: u8, prev: &[u8], payload: &[u8]) {
    assert_eq!(o.header.len(), 1225);
    assert_eq!(&o.header[32..36], pn.to_be_bytes());
    assert_eq!(&o.header[36..40], n.to_be_bytes());
    assert_eq!(o.header[40], kind);
    if kind & 1 == 1 {
        assert!(o.header[41 + 1088..].iter().all(|&b| b == 0));
    }
    let len = u32::from_be_bytes(o.padded[..4].try_into().unwrap()) as usize;
    assert!(o.padded[4 + len..].iter().all(|&b| b == 0));
    assert_eq!(&o.padded[4..36], prev);
    assert_eq!(&o.padded[36..4 + len], payload);
}

fn hash(body: &[u8]) -> [u8; 32] {
    blake3::derive_key(labels::RATCHET_MESSAGE_HASH, body)
}

/// The draws a session makes from its RNG, replayed: an X25519 key, or an ML-KEM seed.
fn x25519_draw(rng: &mut ChaCha8Rng) -> StaticSecret {
    StaticSecret::random_from_rng(rng)
}
fn kem_draw(rng: &mut ChaCha8Rng) -> DecapsulationKey {
    let mut seed = [0u8; 64];
    rng.fill_bytes(&mut seed);
    DecapsulationKey::from_seed(seed.into())
}
fn skip(rng: &mut ChaCha8Rng, n: usize) {
    rng.fill_bytes(&mut vec![0; n]);
}

// ---- The vectors -----------------------------------------------------------------------

fn compute() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut put = |k: &str, v: &[u8]| out.push((k.to_string(), v.to_vec()));

    // KDF examples with fixed inputs.
    let (rk, ck, nhk) = kdf_rk(&seq::<32>(0x20), &seq::<32>(0x40), Some(&seq::<32>(0x60)));
    put("kdf_rk_in_rk", &seq::<32>(0x20));
    put("kdf_rk_in_dh", &seq::<32>(0x40));
    put("kdf_rk_in_ss", &seq::<32>(0x60));
    put("kdf_rk_out", &[rk, ck, nhk].concat());
    let (rk, ck, nhk) = kdf_rk(&seq::<32>(0x20), &seq::<32>(0x40), None);
    put("kdf_rk_no_kem_out", &[rk, ck, nhk].concat());
    let (next, mk) = kdf_ck(&seq::<32>(0x80));
    put("kdf_ck_in", &seq::<32>(0x80));
    put("kdf_ck_out_chain", &next);
    put("kdf_ck_out_message_key_nonce", &mk);

    // The pairing, through the API. Alice's RNG is seed 1, Bob's seed 2.
    let (mut ra, mut rb) = (ChaCha8Rng::seed_from_u64(1), ChaCha8Rng::seed_from_u64(2));
    let ik_secret = seq::<32>(0x11);
    let invitation = QrKey::from_secret(ik_secret);
    let ik = invitation.public();
    put("invitation_secret", &ik_secret);
    put("invitation_public", &ik);
    let mut alice = Session::initiate(&mut ra, &ik).unwrap();
    let confirmation = alice.encrypt(&mut ra, b"hello bob").unwrap();
    let (mut bob, d) = Session::respond(&invitation, &confirmation, NOW).unwrap();
    assert_eq!(&*d.plaintext, b"hello bob");
    let reply = bob.encrypt(&mut rb, b"hello alice").unwrap();
    assert_eq!(
        &*alice.decrypt(&reply, NOW).unwrap().plaintext,
        b"hello alice"
    );
    let second = alice.encrypt(&mut ra, b"second chain").unwrap();
    assert_eq!(
        &*bob.decrypt(&second, NOW).unwrap().plaintext,
        b"second chain"
    );
    let (ka, kb) = (QrKey::from_secret(seq(0xa1)), QrKey::from_secret(seq(0xc1)));
    bob.rekey(&kb, &ka.public(), RekeyRole::Lead).unwrap();
    alice.rekey(&ka, &kb.public(), RekeyRole::Follow).unwrap();
    let rekeyed = bob.encrypt(&mut rb, b"re-keyed").unwrap();
    assert_eq!(
        &*alice.decrypt(&rekeyed, NOW).unwrap().plaintext,
        b"re-keyed"
    );
    assert_eq!(alice.safety_code(), bob.safety_code());

    // The same, re-derived by the model from the secrets the RNGs drew, in order.
    // Alice: E_A, DHs, ML-KEM seed, header nonce; then DHs, ML-KEM seed, header nonce.
    // Bob: DHs, encapsulation randomness, header nonce; the same again.
    let (mut ma, mut mb) = (ChaCha8Rng::seed_from_u64(1), ChaCha8Rng::seed_from_u64(2));
    let (e_a, dhs_a1, dk1) = (
        x25519_draw(&mut ma),
        x25519_draw(&mut ma),
        kem_draw(&mut ma),
    );
    skip(&mut ma, 24);
    let (dhs_a2, dk2) = (x25519_draw(&mut ma), kem_draw(&mut ma));
    let dhs_b1 = x25519_draw(&mut mb);
    skip(&mut mb, 32 + 24);
    let ik_static = StaticSecret::from(ik_secret);
    let e_a_pub = PublicKey::from(&e_a).to_bytes();
    assert_eq!(&confirmation[..32], e_a_pub);
    let init = xof(labels::RATCHET_INIT, &[&dh(&e_a, &ik), &e_a_pub, &ik], 96);
    let (sk, hka, nhkb) = (&init[..32], &init[32..64], &init[64..]);
    let ad = blake3::derive_key(labels::RATCHET_AD, &[ik, e_a_pub].concat());
    put("handshake_secret", &e_a.to_bytes());
    put("handshake_public", &e_a_pub);
    put("sk_hka_nhkb", &init);
    put("ad", &ad);

    // Confirmation: first initiator chain, classical only, an encapsulation key.
    let mut root1 = None;
    let conf = open(&confirmation[32..], hka, &ad, |h| {
        let step = kdf_rk(sk, &dh(&ik_static, &h[..32]), None);
        root1 = Some(step);
        step.1
    });
    let (rk1, _, nhk_a1) = root1.unwrap();
    check(&conf, 0, 0, 0, &[0; 32], b"hello bob");
    assert_eq!(&conf.header[..32], PublicKey::from(&dhs_a1).as_bytes());
    assert_eq!(&conf.header[41..], &dk1.encapsulation_key().to_bytes()[..]);
    assert_eq!(confirmation.len(), 2048);
    put("confirmation", &confirmation);
    put("confirmation_header", &conf.header);

    // Reply: Bob's first chain answers with a KEM ciphertext mixed into KDF_RK.
    let mut ss1 = [0u8; 32];
    let reply_opened = open(&reply, nhkb, &ad, |h| {
        ss1 = arr(&dk1.decapsulate_slice(&h[41..41 + 1088]).unwrap());
        kdf_rk(&rk1, &dh(&dhs_a1, &h[..32]), Some(&ss1)).1
    });
    check(&reply_opened, 0, 0, 1, &[0; 32], b"hello alice");
    assert_eq!(
        &reply_opened.header[..32],
        PublicKey::from(&dhs_b1).as_bytes()
    );
    let (rk2, _, nhk_b1) = kdf_rk(&rk1, &dh(&dhs_b1, &conf.header[..32]), Some(&ss1));
    put("reply", &reply);
    put("reply_header", &reply_opened.header);
    put("reply_kem_secret", &ss1);

    // Second initiator chain: a fresh encapsulation key, no KEM secret; pn = 1.
    let second_opened = open(&second, &nhk_a1, &ad, |h| {
        kdf_rk(&rk2, &dh(&dhs_b1, &h[..32]), None).1
    });
    check(
        &second_opened,
        1,
        0,
        0,
        &hash(&confirmation),
        b"second chain",
    );
    assert_eq!(
        &second_opened.header[..32],
        PublicKey::from(&dhs_a2).as_bytes()
    );
    assert_eq!(
        &second_opened.header[41..],
        &dk2.encapsulation_key().to_bytes()[..]
    );
    let (rk3, _, _) = kdf_rk(
        &rk2,
        &dh(&dhs_a2, PublicKey::from(&dhs_b1).as_bytes()),
        None,
    );
    put("second", &second);
    put("second_header", &second_opened.header);

    // Re-keyed responder chain: kind 0x03 (ciphertext, re-key mixed), pn = 1.
    let shared = dh(&StaticSecret::from(seq::<32>(0xc1)), &ka.public());
    let rk3_mixed = xof(labels::RATCHET_REKEY, &[&rk3, &shared], 32);
    let mut ss2 = [0u8; 32];
    let rekeyed_opened = open(&rekeyed, &nhk_b1, &ad, |h| {
        ss2 = arr(&dk2.decapsulate_slice(&h[41..41 + 1088]).unwrap());
        kdf_rk(&rk3_mixed, &dh(&dhs_a2, &h[..32]), Some(&ss2)).1
    });
    check(&rekeyed_opened, 1, 0, 3, &hash(&reply), b"re-keyed");
    put("rekey_initiator_secret", &seq::<32>(0xa1));
    put("rekey_responder_secret", &seq::<32>(0xc1));
    put("rekey_shared", &shared);
    put("rekeyed", &rekeyed);
    put("rekeyed_header", &rekeyed_opened.header);
    put("rekeyed_kem_secret", &ss2);

    let code = alice.safety_code();
    let digits = xof(labels::SAFETY_CODE, &[&ik, &e_a_pub], 60);
    let expected: Vec<String> = digits
        .chunks(5)
        .map(|c| {
            format!(
                "{:05}",
                c.iter().fold(0u64, |a, &b| a << 8 | u64::from(b)) % 100_000
            )
        })
        .collect();
    assert_eq!(code, expected.join(" "));
    put("safety_code_ascii", code.as_bytes());
    out
}

fn parse(text: &str) -> Vec<(String, Vec<u8>)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once(" = ").expect("name = hex");
            (k.to_string(), hex::decode(v).expect("hex"))
        })
        .collect()
}

#[test]
fn ratchet_known_answers() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/vectors/ratchet.txt");
    let computed = compute();
    if std::env::var_os("PETREL_WRITE_VECTORS").is_some() {
        let mut text = String::from(HEADER_COMMENT);
        for (k, v) in &computed {
            text.push_str(&format!("{k} = {}\n", hex::encode(v)));
        }
        std::fs::write(&path, text).unwrap();
    }
    let on_disk = parse(&std::fs::read_to_string(&path).unwrap());
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(names(&on_disk), names(&computed), "vector names");
    for ((k, want), (_, got)) in on_disk.iter().zip(&computed) {
        assert_eq!(hex::encode(want), hex::encode(got), "vector {k}");
    }
}

const HEADER_COMMENT: &str = "\
# Petrel v1 layer-1 known-answer vectors (specs/protocol.md 12.1, 15), name = hex.
# Read by client-core/tests/ratchet_vectors.rs, which also re-derives every message below
# with an independent model of the spec. X25519 secrets are raw 32-byte scalars.
#
# kdf_*: KDF_RK(rk, dh, ss) = XOF(\"petrel v1 ratchet root\", rk | dh | ss, 96) = rk' | ck | nhk
#   (ss = 0^32 for kdf_rk_no_kem_out); KDF_CK(ck) = chain key, then message key | nonce.
# The conversation: the invitation key IK_B is invitation_secret; Alice (initiator) draws
# from ChaCha8Rng::seed_from_u64(1), Bob (responder) from seed_from_u64(2), in this order:
#   Alice: E_A (32), DHs (32), ML-KEM seed d|z (64), header nonce (24); then for her
#          second chain DHs, ML-KEM seed, header nonce.
#   Bob:   DHs (32), ML-KEM encapsulation randomness (32), header nonce (24); the same again.
# (The draw order is this implementation's, not part of the protocol.)
#   confirmation = E_A | ratchet message, payload \"hello bob\" (header kind 00, ek)
#   reply        = Bob -> Alice \"hello alice\" (kind 01: KEM ciphertext, secret mixed)
#   second       = Alice's second chain, \"second chain\" (kind 00, pn 1)
#   rekeyed      = Bob's second chain after rekey(Bob Lead, Alice Follow) with the
#                  rekey_* secrets, \"re-keyed\" (kind 03: ciphertext + re-key mixed, pn 1)
# *_header lines are plaintext headers (1225 bytes): dh | pn | n | kind | kem.
# safety_code_ascii is the code as ASCII: 12 groups of 5 digits.
";
