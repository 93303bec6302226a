//! Shared fixtures for the integration tests: sample payloads, proptest strategies, a
//! seeded RNG, and a parser for the annotated-hex vector files.
//!
//! Each test binary includes this module and uses a different part of it.
#![allow(dead_code, unreachable_pub)]

use petrel_federation::{Endpoint, Host, QueueId, RelayAddress, RelayKey, TransportKind};
use petrel_qr::{Invitation, Payload, Purpose};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;

/// A deterministic RNG: a failing seed replays exactly.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A valid relay key (an Ed25519 public key) from a seed.
pub fn relay_key(seed: u8) -> RelayKey {
    let signing = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    RelayKey(signing.verifying_key().to_bytes())
}

/// A relay address with the given endpoints, as text.
pub fn relay(seed: u8, endpoints: &[&str]) -> RelayAddress {
    let endpoints = endpoints.iter().map(|e| e.parse().unwrap()).collect();
    RelayAddress::new(relay_key(seed), endpoints).unwrap()
}

/// An invitation with fixed, recognisable bytes.
pub fn invitation(purpose: Purpose, relay: RelayAddress) -> Invitation {
    let mut sender = [0u8; 16];
    let mut dh = [0u8; 32];
    for (i, b) in sender.iter_mut().enumerate() {
        *b = 0xa0 + i as u8;
    }
    for (i, b) in dh.iter_mut().enumerate() {
        *b = 0x40 + i as u8;
    }
    Invitation {
        purpose,
        relay,
        sender_id: QueueId(sender),
        dh_key: dh,
    }
}

/// The default invitation: a relay with one IPv4 TCP endpoint, as a relay on a VPS has.
pub fn default_invitation() -> Payload {
    Payload::Invitation(invitation(
        Purpose::Connect,
        relay(7, &["203.0.113.5:5223"]),
    ))
}

/// An invitation through a relay behind a PaaS router (one `wss` host name).
pub fn paas_invitation() -> Payload {
    Payload::Invitation(invitation(
        Purpose::Connect,
        relay(8, &["wss/petrel-relay.example.org:443"]),
    ))
}

/// A few payloads of every kind and typical size.
pub fn samples() -> Vec<(&'static str, Payload)> {
    vec![
        ("default invitation", default_invitation()),
        ("paas invitation", paas_invitation()),
        (
            "rekey invitation, two endpoints",
            Payload::Invitation(invitation(
                Purpose::Rekey,
                relay(9, &["198.51.100.7:5223", "quic/[2001:db8::7]:5224"]),
            )),
        ),
        (
            "relay address",
            Payload::RelayAddress(relay(7, &["203.0.113.5:5223"])),
        ),
        (
            "relay address, three endpoints",
            Payload::RelayAddress(relay(
                10,
                &[
                    "203.0.113.9:5223",
                    "ws/[2001:db8::9]:80",
                    "wss/relay.example.net:443",
                ],
            )),
        ),
    ]
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    let transport = prop_oneof![
        Just(TransportKind::Tcp),
        Just(TransportKind::Ws),
        Just(TransportKind::Wss),
        Just(TransportKind::Quic),
    ];
    let host = prop_oneof![
        any::<[u8; 4]>().prop_map(Host::Ipv4),
        any::<[u8; 16]>().prop_map(Host::Ipv6),
        // The last label must not be all digits (it would look like an IPv4 literal).
        "([a-z0-9]{1,20}\\.){0,3}[a-z][a-z0-9]{0,11}".prop_map(Host::Name),
    ];
    (transport, host, 1..=u16::MAX).prop_map(|(transport, host, port)| Endpoint {
        transport,
        host,
        port,
    })
}

/// Any valid relay address (1 to 8 endpoints).
pub fn any_relay() -> impl Strategy<Value = RelayAddress> {
    (any::<u8>(), prop::collection::vec(endpoint(), 1..=8)).prop_map(|(seed, mut endpoints)| {
        // An address lists each endpoint once.
        let mut seen = Vec::new();
        endpoints.retain(|e| {
            let new = !seen.contains(e);
            seen.push(e.clone());
            new
        });
        RelayAddress::new(relay_key(seed), endpoints).unwrap()
    })
}

/// Any valid payload.
pub fn any_payload() -> impl Strategy<Value = Payload> {
    let purpose = prop_oneof![Just(Purpose::Connect), Just(Purpose::Rekey)];
    let invitation = (purpose, any_relay(), any::<[u8; 16]>(), any::<[u8; 32]>())
        .prop_filter("an all-zero key is refused", |(_, _, _, dh)| {
            *dh != [0u8; 32]
        })
        .prop_map(|(purpose, relay, sender, dh_key)| {
            Payload::Invitation(Invitation {
                purpose,
                relay,
                sender_id: QueueId(sender),
                dh_key,
            })
        });
    prop_oneof![invitation, any_relay().prop_map(Payload::RelayAddress)]
}

/// `specs/vectors/qr/` in the workspace.
pub fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../specs/vectors/qr")
}

/// One vector file: `key = value` fields, and bytes as hex lines with `#` annotations.
#[derive(Debug, Default)]
pub struct Vector {
    pub fields: Vec<(String, String)>,
    pub bytes: Vec<u8>,
}

impl Vector {
    pub fn parse(text: &str) -> Vector {
        let mut vector = Vector::default();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if let Some((key, value)) = line.split_once('=') {
                vector
                    .fields
                    .push((key.trim().to_string(), value.trim().to_string()));
            } else {
                let hex: String = line.split_whitespace().collect();
                vector.bytes.extend(
                    (0..hex.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()),
                );
            }
        }
        vector
    }

    pub fn field(&self, key: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("vector has no field `{key}`"))
    }
}
