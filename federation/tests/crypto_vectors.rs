//! Known-answer vectors for every construction: key hash, command signature, delivery
//! re-encryption (layer 3), sealed envelope and response (layer 2), and signed relay info.
//!
//! `specs/vectors/crypto.txt` lists inputs and outputs as `name = hex`; the test recomputes
//! every line from the same inputs. Regenerate after a deliberate change with
//! `PETREL_WRITE_VECTORS=1 cargo test -p petrel-federation --test crypto_vectors`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use petrel_federation::auth::{Auth, signed_bytes};
use petrel_federation::client::{Command, Response};
use petrel_federation::delivery::{DeliveryBody, DeliveryKey, DeliveryKind};
use petrel_federation::padding;
use petrel_federation::peer::{RelayInfo, SignedRelayInfo};
use petrel_federation::seal::{self, EnvelopeKey, ForwardedRequest};
use petrel_federation::{KeyHash, MsgId, QueueId, RelayKey, SessionId};
use x25519_dalek::{PublicKey, StaticSecret};

fn seq<const N: usize>(start: u8) -> [u8; N] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

fn compute() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut put = |k: &str, v: &[u8]| out.push((k.to_string(), v.to_vec()));

    // Key hash.
    let queue_key = ed25519_dalek::SigningKey::from_bytes(&seq(0x01));
    let queue_pub = queue_key.verifying_key().to_bytes();
    put("queue_key_seed", &seq::<32>(0x01));
    put("queue_key_public", &queue_pub);
    put("queue_key_hash", &KeyHash::of(&queue_pub).0);

    // Command signature bound to a session.
    let session = SessionId(seq(0x40));
    let command = Command::Subscribe {
        recipient_id: QueueId(seq(0x10)),
    };
    put("auth_session_id", &session.0);
    put(
        "auth_command_postcard",
        &postcard::to_stdvec(&command).unwrap(),
    );
    put(
        "auth_signed_bytes",
        &signed_bytes(&session.0, &command).unwrap(),
    );
    let auth = Auth::sign(&queue_key, &session.0, &command).unwrap();
    put("auth_signature", &auth.sig.0);

    // Layer 3: delivery key and one delivery.
    let recipient_secret = StaticSecret::from(seq::<32>(0x21));
    let relay_secret = StaticSecret::from(seq::<32>(0x41));
    let recipient_dh = PublicKey::from(&recipient_secret).to_bytes();
    let relay_dh = PublicKey::from(&relay_secret).to_bytes();
    let relay_side =
        DeliveryKey::derive(&relay_secret, &recipient_dh, &relay_dh, &recipient_dh).unwrap();
    let recipient_side =
        DeliveryKey::derive(&recipient_secret, &recipient_dh, &relay_dh, &relay_dh).unwrap();
    assert_eq!(relay_side.as_bytes(), recipient_side.as_bytes());
    put("delivery_recipient_secret", &seq::<32>(0x21));
    put("delivery_relay_secret", &seq::<32>(0x41));
    put("delivery_recipient_dh", &recipient_dh);
    put("delivery_relay_dh", &relay_dh);
    put("delivery_key", relay_side.as_bytes());
    let rid = QueueId(seq(0x10));
    let mid = MsgId(seq(0x30));
    let body = DeliveryBody {
        received_at: 1_700_000_000,
        kind: DeliveryKind::Message,
        body: b"hello".to_vec(),
    };
    let ct = relay_side.seal(&rid, &mid, &body);
    assert_eq!(recipient_side.open(&rid, &mid, &ct).unwrap(), body);
    put("delivery_recipient_id", &rid.0);
    put("delivery_msg_id", &mid.0);
    put("delivery_plaintext", &postcard::to_stdvec(&body).unwrap());
    put("delivery_ciphertext", &ct);

    // Layer 2: sealed envelope and response.
    let sealing_secret = StaticSecret::from(seq::<32>(0x61));
    let sealing_public = PublicKey::from(&sealing_secret).to_bytes();
    let eph = EnvelopeKey::from_secret(StaticSecret::from(seq::<32>(0x81)));
    let send = Command::Send {
        sender_id: QueueId(seq(0x20)),
        body: padding::pad(b"sealed", 2048).unwrap(),
    };
    let send_auth = Auth::sign(&queue_key, &eph.public(), &send).unwrap();
    let request = ForwardedRequest {
        sent_at: 1_700_000_000,
        auth: Some(send_auth),
        command: send,
    };
    put("seal_sealing_secret", &seq::<32>(0x61));
    put("seal_sealing_public", &sealing_public);
    put("seal_ephemeral_secret", &seq::<32>(0x81));
    put("seal_ephemeral_public", &eph.public());
    put(
        "seal_request_postcard",
        &postcard::to_stdvec(&request).unwrap(),
    );
    // What the AEAD encrypts is the padded request (§12.2, §13): SEND body + 256 bytes.
    let request_postcard = postcard::to_stdvec(&request).unwrap();
    let request_padded =
        padding::pad(&request_postcard, 2048 + seal::REQUEST_PAD_OVERHEAD).unwrap();
    put("seal_request_padded", &request_padded);
    let (envelope, opener) = eph.seal(&sealing_public, &request).unwrap();
    assert_eq!(
        envelope.ciphertext.len(),
        request_padded.len() + 16,
        "padded + tag"
    );
    put("seal_envelope_ciphertext", &envelope.ciphertext);
    put("seal_replay_tag", &seal::replay_tag(&envelope));
    let (opened, sealer) = seal::open_request(&sealing_secret, &envelope).unwrap();
    assert_eq!(opened, request);
    let response = sealer.seal(&Response::Ok);
    let response_padded = padding::pad(
        &postcard::to_stdvec(&Response::Ok).unwrap(),
        seal::RESPONSE_PAD_LEN,
    )
    .unwrap();
    assert_eq!(
        response.ciphertext.len(),
        response_padded.len() + 16,
        "padded + tag"
    );
    put("seal_response_ok_padded", &response_padded);
    assert_eq!(opener.open(&response).unwrap(), Response::Ok);
    put("seal_response_ok_ciphertext", &response.ciphertext);

    // Signed relay info.
    let identity = ed25519_dalek::SigningKey::from_bytes(&seq(0xa1));
    let info = RelayInfo {
        identity: RelayKey(identity.verifying_key().to_bytes()),
        sealing_key: sealing_public,
        valid_from: 1_700_000_000,
        valid_until: 1_700_604_800,
        min_version: 1,
        max_version: 1,
    };
    let signed = SignedRelayInfo::sign(&identity, info.clone());
    assert!(signed.verify(&info.identity, 1_700_000_001).is_ok());
    put("relay_identity_seed", &seq::<32>(0xa1));
    put("relay_info_postcard", &postcard::to_stdvec(&info).unwrap());
    put("relay_info_signature", &signed.sig.0);
    out
}

#[test]
fn crypto_known_answers() {
    let path = common::vectors_dir().join("crypto.txt");
    let computed = compute();
    if std::env::var_os("PETREL_WRITE_VECTORS").is_some() {
        let mut text = String::from(
            "# Petrel v1 crypto known-answer vectors (specs/protocol.md, Encryption layers).\n\
             # name = hex. X25519 secrets are raw 32-byte scalars (clamped by X25519 itself);\n\
             # Ed25519 keys are 32-byte seeds. Postcard lines are the exact bytes signed,\n\
             # hashed or encrypted. Layer 2 pads before it encrypts: seal_request_padded =\n\
             # pad(seal_request_postcard, len(SEND body) + 256) is the plaintext of\n\
             # seal_envelope_ciphertext, seal_response_ok_padded = pad(Response::Ok, 64)\n\
             # that of seal_response_ok_ciphertext (pad: specs/protocol.md section 13).\n",
        );
        for (k, v) in &computed {
            text.push_str(&format!("{k} = {}\n", hex::encode(v)));
        }
        std::fs::write(&path, text).unwrap();
    }
    let on_disk = common::parse_kv_file(&std::fs::read_to_string(&path).unwrap());
    assert_eq!(on_disk.len(), computed.len(), "vector count");
    for (k, v) in &computed {
        assert_eq!(
            on_disk.get(k).map(hex::encode),
            Some(hex::encode(v)),
            "vector {k}"
        );
    }
}

#[test]
fn sealed_lengths_reveal_only_the_class() {
    let sealing_public = PublicKey::from(&StaticSecret::from([9u8; 32])).to_bytes();
    let key = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
    let mut lens = std::collections::BTreeSet::new();
    for signed in [false, true] {
        for text_len in [0usize, 100, 1500] {
            let eph = EnvelopeKey::from_secret(StaticSecret::from([text_len as u8 + 1; 32]));
            let send = Command::Send {
                sender_id: QueueId([1; 16]),
                body: padding::pad(&vec![7u8; text_len], 2048).unwrap(),
            };
            let auth = signed.then(|| Auth::sign(&key, &eph.public(), &send).unwrap());
            let request = ForwardedRequest {
                sent_at: u64::MAX,
                auth,
                command: send,
            };
            lens.insert(
                eph.seal(&sealing_public, &request)
                    .unwrap()
                    .0
                    .ciphertext
                    .len(),
            );
        }
    }
    assert_eq!(
        lens.len(),
        1,
        "signed and unsigned envelopes of one class differ: {lens:?}"
    );

    let secret = StaticSecret::from([9u8; 32]);
    let eph = EnvelopeKey::from_secret(StaticSecret::from([5u8; 32]));
    let request = ForwardedRequest {
        sent_at: 1,
        auth: None,
        command: Command::Send {
            sender_id: QueueId([1; 16]),
            body: vec![0; 2048],
        },
    };
    let (env, _) = eph.seal(&sealing_public, &request).unwrap();
    let (_, sealer) = seal::open_request(&secret, &env).unwrap();
    let ok = sealer.seal(&Response::Ok).ciphertext.len();
    let err = sealer
        .seal(&Response::Error(petrel_federation::ErrorCode::Quota))
        .ciphertext
        .len();
    assert_eq!(ok, err, "OK and error responses must have one length");
}

#[test]
fn tampering_is_detected() {
    let secret = StaticSecret::from([9u8; 32]);
    let public = PublicKey::from(&secret).to_bytes();
    let eph = EnvelopeKey::from_secret(StaticSecret::from([5u8; 32]));
    let request = ForwardedRequest {
        sent_at: 1,
        auth: None,
        command: Command::Send {
            sender_id: QueueId([1; 16]),
            body: vec![0; 2048],
        },
    };
    let (env, _) = eph.seal(&public, &request).unwrap();
    for i in [0, 100, env.ciphertext.len() - 1] {
        let mut bad = env.clone();
        bad.ciphertext[i] ^= 1;
        assert_eq!(
            seal::open_request(&secret, &bad).unwrap_err(),
            seal::SealError::Decrypt
        );
    }
    let mut wrong_eph = env.clone();
    wrong_eph.ephemeral[0] ^= 1;
    assert!(seal::open_request(&secret, &wrong_eph).is_err());
    // A low-order ephemeral key is refused before any decryption.
    let zero = petrel_federation::seal::SealedEnvelope {
        ephemeral: [0; 32],
        ciphertext: env.ciphertext,
    };
    assert_eq!(
        seal::open_request(&secret, &zero).unwrap_err(),
        seal::SealError::WeakKey
    );

    // A delivery under another queue's ID or message ID does not open.
    let key = DeliveryKey::from_bytes([4; 32]);
    let body = DeliveryBody {
        received_at: 1,
        kind: DeliveryKind::Message,
        body: vec![1, 2, 3],
    };
    let ct = key.seal(&QueueId([1; 16]), &MsgId([2; 16]), &body);
    assert!(key.open(&QueueId([9; 16]), &MsgId([2; 16]), &ct).is_err());
    assert!(key.open(&QueueId([1; 16]), &MsgId([9; 16]), &ct).is_err());

    // A signature does not verify under another session binding.
    let k = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
    let cmd = Command::Delete {
        recipient_id: QueueId([1; 16]),
    };
    let auth = Auth::sign(&k, &[1; 32], &cmd).unwrap();
    assert!(auth.verify(&[1; 32], &cmd).is_ok());
    assert!(auth.verify(&[2; 32], &cmd).is_err());
    assert!(
        auth.verify(
            &[1; 32],
            &Command::Delete {
                recipient_id: QueueId([2; 16])
            }
        )
        .is_err()
    );
}
