//! Layer-1 payloads (`specs/protocol.md` §15.2): known-answer vectors read from
//! `specs/vectors/payload.txt`, a hand-built check of the layouts the spec's table gives,
//! and every refusal (trailing bytes, unknown variant, limits, truncation).
//!
//! `PETREL_WRITE_VECTORS=1 cargo test -p petrel-client --test payload` rewrites the file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use petrel_client::payload::{
    MAX_BIO_LEN, MAX_DISPLAY_NAME_LEN, MAX_RECEIPT_IDS, MAX_TEXT_LEN, Payload, PayloadError,
    ProfileCard, QueueRef,
};
use petrel_federation::{QueueId, RelayAddress, RelayKey};
use std::path::PathBuf;

fn relay() -> RelayAddress {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32])
        .verifying_key()
        .to_bytes();
    RelayAddress::new(RelayKey(key), vec!["127.0.0.1:5223".parse().unwrap()]).unwrap()
}

fn queue_ref() -> QueueRef {
    QueueRef {
        relay: relay(),
        sender_id: QueueId([0x11; 16]),
        sender_key: [0x22; 32],
        direct: false,
    }
}

fn card() -> ProfileCard {
    ProfileCard {
        display_name: "Alice".into(),
        bio: Some("birds".into()),
    }
}

fn examples() -> Vec<(&'static str, Payload)> {
    vec![
        (
            "hello",
            Payload::Hello {
                sender_key: [0x33; 32],
                reply: queue_ref(),
                profile: card(),
            },
        ),
        (
            "hello_reply",
            Payload::HelloReply {
                profile: ProfileCard {
                    display_name: "Bob".into(),
                    bio: None,
                },
                direct: true,
            },
        ),
        (
            "text",
            Payload::Text {
                id: [0x44; 16],
                text: "hello, petrel ✓".into(),
            },
        ),
        (
            "receipt",
            Payload::Receipt {
                ids: vec![[0x44; 16], [0x55; 16]],
            },
        ),
        ("new_queue", Payload::NewQueue { queue: queue_ref() }),
        ("switched", Payload::Switched),
        ("rekey", Payload::Rekey { key: [0x66; 32] }),
        ("profile", Payload::Profile(card())),
    ]
}

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../specs/vectors/payload.txt")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn payload_known_answers() {
    let computed: Vec<(String, String)> = examples()
        .into_iter()
        .map(|(name, p)| (name.to_string(), hex(&p.encode().unwrap())))
        .collect();
    if std::env::var_os("PETREL_WRITE_VECTORS").is_some() {
        let mut text = String::from(
            "# Petrel v1 layer-1 payloads (specs/protocol.md 15.2), name = postcard hex.\n\
             # Read by client-core/tests/payload.rs. The relay address is\n\
             # petrel://<Ed25519 public key of the seed 07*32>@127.0.0.1:5223; sender_id 11*16,\n\
             # sender_key 22*32, Hello.sender_key 33*32, Text.id 44*16, Rekey.key 66*32.\n",
        );
        for (name, h) in &computed {
            text.push_str(&format!("{name} = {h}\n"));
        }
        std::fs::write(vectors_path(), text).unwrap();
    }
    let on_disk = std::fs::read_to_string(vectors_path()).unwrap();
    let lines: Vec<(String, String)> = on_disk
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.split_once(" = ").unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    assert_eq!(lines, computed, "payload.txt disagrees with the encoder");
    for (name, payload) in examples() {
        let (_, h) = lines.iter().find(|(k, _)| k == name).unwrap();
        let bytes: Vec<u8> = (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(Payload::decode(&bytes).unwrap(), payload, "{name}");
    }
}

/// The layouts of §15.2, built byte by byte without the encoder.
#[test]
fn layouts_match_the_spec_table() {
    let text = "hello, petrel ✓";
    let mut expected = vec![0x02];
    expected.extend([0x44; 16]);
    expected.push(text.len() as u8);
    expected.extend(text.as_bytes());
    let encoded = Payload::Text {
        id: [0x44; 16],
        text: text.into(),
    }
    .encode()
    .unwrap();
    assert_eq!(encoded, expected);

    assert_eq!(Payload::Switched.encode().unwrap(), vec![0x05]);

    let mut rekey = vec![0x06];
    rekey.extend([0x66; 32]);
    assert_eq!(Payload::Rekey { key: [0x66; 32] }.encode().unwrap(), rekey);

    // HelloReply: variant 1, name (varint length ‖ UTF-8), bio None (00), direct (01).
    let reply = Payload::HelloReply {
        profile: ProfileCard {
            display_name: "Bob".into(),
            bio: None,
        },
        direct: true,
    };
    assert_eq!(reply.encode().unwrap(), b"\x01\x03Bob\x00\x01".to_vec());

    // Receipt: variant 3, count, then the raw IDs.
    let mut receipt = vec![0x03, 0x02];
    receipt.extend([0x44; 16]);
    receipt.extend([0x55; 16]);
    let encoded = Payload::Receipt {
        ids: vec![[0x44; 16], [0x55; 16]],
    }
    .encode()
    .unwrap();
    assert_eq!(encoded, receipt);
}

#[test]
fn refusals_are_typed() {
    let ok = Payload::Switched.encode().unwrap();
    let mut trailing = ok.clone();
    trailing.push(0);
    assert!(matches!(
        Payload::decode(&trailing),
        Err(PayloadError::Malformed(_))
    ));
    assert!(matches!(
        Payload::decode(&[0x08]),
        Err(PayloadError::Malformed(_))
    ));
    assert!(matches!(
        Payload::decode(&[]),
        Err(PayloadError::Malformed(_))
    ));
    // Every truncation of every example is refused, never a panic.
    for (name, p) in examples() {
        let bytes = p.encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(
                Payload::decode(&bytes[..cut]).is_err(),
                "{name} cut at {cut} decoded"
            );
        }
    }

    let long_text = Payload::Text {
        id: [0; 16],
        text: "x".repeat(MAX_TEXT_LEN + 1),
    };
    assert_eq!(long_text.encode(), Err(PayloadError::TooLong("the text")));
    // A peer's over-long text (encoded by hand) is refused on decode too.
    let mut raw = vec![0x02];
    raw.extend([0; 16]);
    let n = MAX_TEXT_LEN + 1;
    raw.extend([(n & 0x7f) as u8 | 0x80, (n >> 7) as u8]);
    raw.extend(std::iter::repeat_n(b'x', n));
    assert_eq!(
        Payload::decode(&raw),
        Err(PayloadError::TooLong("the text"))
    );

    let at_limit = Payload::Text {
        id: [0; 16],
        text: "x".repeat(MAX_TEXT_LEN),
    };
    assert_eq!(
        Payload::decode(&at_limit.encode().unwrap()).unwrap(),
        at_limit
    );

    let long_name = Payload::Profile(ProfileCard {
        display_name: "n".repeat(MAX_DISPLAY_NAME_LEN + 1),
        bio: None,
    });
    assert_eq!(
        long_name.encode(),
        Err(PayloadError::TooLong("the display name"))
    );
    let long_bio = Payload::Profile(ProfileCard {
        display_name: "n".into(),
        bio: Some("b".repeat(MAX_BIO_LEN + 1)),
    });
    assert_eq!(long_bio.encode(), Err(PayloadError::TooLong("the bio")));
    let many = Payload::Receipt {
        ids: vec![[0; 16]; MAX_RECEIPT_IDS + 1],
    };
    assert_eq!(many.encode(), Err(PayloadError::TooLong("the receipt")));
}

#[test]
fn queue_ref_debug_hides_the_sender_key() {
    let shown = format!("{:?}", queue_ref());
    assert!(!shown.contains("34, 34"), "{shown}");
    assert!(!shown.to_lowercase().contains("2222"), "{shown}");
    assert!(!shown.contains("sender_key"), "{shown}");
}
