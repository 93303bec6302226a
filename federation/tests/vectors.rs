//! Known-answer vectors for every wire type, read from `specs/vectors/*.hex`.
//!
//! For each message the test builds the layout `specs/protocol.md` documents, field by field
//! and without postcard ([`common::Layout`]), and checks three things: the committed file
//! holds exactly those bytes, decoding the file gives the expected value, and encoding the
//! value gives the file's bytes back. Regenerate the files after a deliberate wire change
//! with `PETREL_WRITE_VECTORS=1 cargo test -p petrel-federation --test vectors`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Layout, check_or_write};
use petrel_federation::address::{Endpoint, Host, RelayAddress, TransportKind};
use petrel_federation::auth::{Auth, Signature};
use petrel_federation::client::*;
use petrel_federation::delivery::{DeliveryBody, DeliveryKind};
use petrel_federation::frame::{self, WireMessage};
use petrel_federation::peer::*;
use petrel_federation::seal::{ForwardedRequest, SealedEnvelope, SealedResponse};
use petrel_federation::{ErrorCode, KeyHash, MsgId, QueueId, RelayKey, SessionId};
use std::fmt::Debug;

fn seq<const N: usize>(start: u8) -> [u8; N] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

fn relay_key() -> RelayKey {
    RelayKey(
        ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
            .verifying_key()
            .to_bytes(),
    )
}
fn rid() -> QueueId {
    QueueId(seq(0x10))
}
fn sid() -> QueueId {
    QueueId(seq(0x20))
}
fn mid() -> MsgId {
    MsgId(seq(0x30))
}

fn address() -> RelayAddress {
    RelayAddress::new(
        relay_key(),
        vec![
            Endpoint {
                transport: TransportKind::Tcp,
                host: Host::Ipv4([203, 0, 113, 5]),
                port: 5223,
            },
            Endpoint {
                transport: TransportKind::Wss,
                host: Host::Name("relay.example".into()),
                port: 443,
            },
            Endpoint {
                transport: TransportKind::Quic,
                host: Host::Ipv6(seq(0x20)),
                port: 5224,
            },
        ],
    )
    .unwrap()
}
fn address_layout() -> Layout {
    Layout::new()
        .raw(
            &relay_key().0,
            "RelayAddress.key: Ed25519 public key (32 bytes, raw)",
        )
        .varint(3, "endpoints: count 3")
        .byte(0, "endpoint 0 transport: Tcp")
        .byte(0, "endpoint 0 host: Ipv4")
        .raw(&[203, 0, 113, 5], "203.0.113.5")
        .varint(5223, "port 5223 (varint)")
        .byte(2, "endpoint 1 transport: Wss")
        .byte(2, "endpoint 1 host: Name")
        .bytes(b"relay.example", "host name (UTF-8)")
        .varint(443, "port 443 (varint)")
        .byte(3, "endpoint 2 transport: Quic")
        .byte(1, "endpoint 2 host: Ipv6")
        .raw(&seq::<16>(0x20), "IPv6 address (16 bytes)")
        .varint(5224, "port 5224 (varint)")
}

fn auth() -> Auth {
    Auth {
        key: seq(0x50),
        sig: Signature(seq(0x80)),
    }
}
fn auth_layout() -> Layout {
    Layout::new()
        .byte(1, "auth: Some")
        .raw(&seq::<32>(0x50), "auth.key: Ed25519 public key")
        .raw(&seq::<64>(0x80), "auth.sig: Ed25519 signature (64 bytes)")
}

fn delivery() -> Delivery {
    Delivery {
        recipient_id: rid(),
        msg_id: mid(),
        ciphertext: vec![0xcc; 20],
    }
}
fn delivery_layout() -> Layout {
    Layout::new()
        .raw(&rid().0, "recipient_id (16 bytes)")
        .raw(&mid().0, "msg_id (16 bytes)")
        .bytes(&[0xcc; 20], "ciphertext")
}

fn signed_info() -> SignedRelayInfo {
    SignedRelayInfo {
        info: RelayInfo {
            identity: relay_key(),
            sealing_key: seq(0x60),
            valid_from: 1_700_000_000,
            valid_until: 1_700_604_800,
            min_version: 1,
            max_version: 1,
        },
        sig: Signature(seq(0x90)),
    }
}
fn signed_info_layout() -> Layout {
    Layout::new()
        .raw(&relay_key().0, "info.identity: relay key")
        .raw(&seq::<32>(0x60), "info.sealing_key: X25519 public key")
        .varint(1_700_000_000, "info.valid_from (varint Unix seconds)")
        .varint(1_700_604_800, "info.valid_until")
        .varint(1, "info.min_version")
        .varint(1, "info.max_version")
        .raw(&seq::<64>(0x90), "sig: Ed25519 signature")
}

fn envelope() -> SealedEnvelope {
    SealedEnvelope {
        ephemeral: seq(0x70),
        ciphertext: vec![0xee; 24],
    }
}
fn envelope_layout() -> Layout {
    Layout::new()
        .raw(&seq::<32>(0x70), "envelope.ephemeral: X25519 public key")
        .bytes(&[0xee; 24], "envelope.ciphertext")
}

/// Checks one file of framed messages.
fn check_framed<T: WireMessage + PartialEq + Debug>(
    file: &str,
    header: &str,
    cases: Vec<(&str, T, Layout)>,
) {
    let layouts: Vec<(&str, Layout)> = cases.iter().map(|(n, _, l)| (*n, l.framed(1))).collect();
    let parsed = check_or_write(file, header, &layouts);
    for (name, value, _) in &cases {
        let bytes = &parsed[*name];
        let decoded: T = frame::decode(1, bytes).unwrap_or_else(|e| panic!("{file}/{name}: {e}"));
        assert_eq!(&decoded, value, "{file}/{name}: decoded value");
        assert_eq!(
            &frame::encode(1, value).unwrap(),
            bytes,
            "{file}/{name}: re-encoding"
        );
    }
}

/// Checks one file of bare postcard values (types nested in frames or sealed).
fn check_bare<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + Debug>(
    file: &str,
    header: &str,
    cases: Vec<(&str, T, Layout)>,
) {
    let layouts: Vec<(&str, Layout)> = cases.iter().map(|(n, _, l)| (*n, l.clone())).collect();
    let parsed = check_or_write(file, header, &layouts);
    for (name, value, _) in &cases {
        let bytes = &parsed[*name];
        let decoded: T =
            postcard::from_bytes(bytes).unwrap_or_else(|e| panic!("{file}/{name}: {e}"));
        assert_eq!(&decoded, value, "{file}/{name}: decoded value");
        assert_eq!(
            &postcard::to_stdvec(value).unwrap(),
            bytes,
            "{file}/{name}: re-encoding"
        );
    }
}

fn cf(corr: u32, auth: Option<Auth>, command: Command) -> ClientFrame {
    ClientFrame {
        corr,
        auth,
        command,
    }
}
fn cf_head(corr: u64, with_auth: bool, variant: u8, name: &str) -> Layout {
    let l = Layout::new().varint(corr, &format!("corr = {corr} (varint)"));
    let l = if with_auth {
        l.extend(auth_layout())
    } else {
        l.byte(0, "auth: None")
    };
    l.byte(variant, &format!("command: {name} (variant {variant})"))
}

#[test]
fn client_hello() {
    check_framed(
        "client_hello.hex",
        "ClientHello: the first frame a client sends (specs/protocol.md, Versioning).",
        vec![(
            "v1_only",
            ClientHello {
                min_version: 1,
                max_version: 1,
            },
            Layout::new()
                .varint(1, "min_version")
                .varint(1, "max_version"),
        )],
    );
}

#[test]
fn relay_hello() {
    check_framed(
        "relay_hello.hex",
        "RelayHello: the relay's answer to ClientHello.",
        vec![
            (
                "accept",
                RelayHello::Accept {
                    version: 1,
                    session_id: SessionId(seq(0x40)),
                    relay_time: 1_700_000_000,
                },
                Layout::new()
                    .byte(0, "RelayHello::Accept (variant 0)")
                    .varint(1, "version")
                    .raw(&seq::<32>(0x40), "session_id (32 bytes)")
                    .varint(1_700_000_000, "relay_time (varint Unix seconds)"),
            ),
            (
                "reject_version",
                RelayHello::Reject(ErrorCode::Version),
                Layout::new()
                    .byte(1, "RelayHello::Reject (variant 1)")
                    .byte(2, "error code 2 = VERSION"),
            ),
        ],
    );
}

#[test]
fn client_frame() {
    let hash = KeyHash(seq(0xa0));
    check_framed(
        "client_frame.hex",
        "ClientFrame: corr, optional auth, command (specs/protocol.md, Commands).",
        vec![
            (
                "create",
                cf(
                    1,
                    Some(auth()),
                    Command::Create {
                        recipient_key: seq(0x50),
                        recipient_dh: seq(0x60),
                        subscribe: true,
                        password: Some(b"pw".to_vec()),
                    },
                ),
                cf_head(1, true, 0, "Create")
                    .raw(&seq::<32>(0x50), "recipient_key: Ed25519 public key")
                    .raw(&seq::<32>(0x60), "recipient_dh: X25519 public key")
                    .byte(1, "subscribe: true")
                    .byte(1, "password: Some")
                    .bytes(b"pw", "password bytes"),
            ),
            (
                "secure",
                cf(
                    2,
                    Some(auth()),
                    Command::Secure {
                        recipient_id: rid(),
                        sender_key_hash: hash,
                    },
                ),
                cf_head(2, true, 1, "Secure")
                    .raw(&rid().0, "recipient_id")
                    .raw(&seq::<32>(0xa0), "sender_key_hash (BLAKE3, 32 bytes)"),
            ),
            (
                "send_unsigned",
                cf(
                    300,
                    None,
                    Command::Send {
                        sender_id: sid(),
                        body: vec![0xbb; 5],
                    },
                ),
                cf_head(300, false, 2, "Send")
                    .raw(&sid().0, "sender_id")
                    .bytes(&[0xbb; 5], "body"),
            ),
            (
                "send_signed",
                cf(
                    3,
                    Some(auth()),
                    Command::Send {
                        sender_id: sid(),
                        body: vec![0xbb; 5],
                    },
                ),
                cf_head(3, true, 2, "Send")
                    .raw(&sid().0, "sender_id")
                    .bytes(&[0xbb; 5], "body"),
            ),
            (
                "subscribe",
                cf(
                    4,
                    Some(auth()),
                    Command::Subscribe {
                        recipient_id: rid(),
                    },
                ),
                cf_head(4, true, 3, "Subscribe").raw(&rid().0, "recipient_id"),
            ),
            (
                "ack",
                cf(
                    5,
                    Some(auth()),
                    Command::Ack {
                        recipient_id: rid(),
                        msg_id: mid(),
                    },
                ),
                cf_head(5, true, 4, "Ack")
                    .raw(&rid().0, "recipient_id")
                    .raw(&mid().0, "msg_id"),
            ),
            (
                "get",
                cf(
                    6,
                    Some(auth()),
                    Command::Get {
                        recipient_id: rid(),
                    },
                ),
                cf_head(6, true, 5, "Get").raw(&rid().0, "recipient_id"),
            ),
            (
                "suspend",
                cf(
                    7,
                    Some(auth()),
                    Command::Suspend {
                        recipient_id: rid(),
                    },
                ),
                cf_head(7, true, 6, "Suspend").raw(&rid().0, "recipient_id"),
            ),
            (
                "delete",
                cf(
                    8,
                    Some(auth()),
                    Command::Delete {
                        recipient_id: rid(),
                    },
                ),
                cf_head(8, true, 7, "Delete").raw(&rid().0, "recipient_id"),
            ),
            (
                "ping",
                cf(9, None, Command::Ping),
                cf_head(9, false, 8, "Ping"),
            ),
            (
                "relay_info",
                cf(10, None, Command::RelayInfo { relay: address() }),
                cf_head(10, false, 9, "RelayInfo").extend(address_layout()),
            ),
            (
                "forward",
                cf(
                    11,
                    None,
                    Command::Forward {
                        destination: address(),
                        envelope: envelope(),
                    },
                ),
                cf_head(11, false, 10, "Forward")
                    .extend(address_layout())
                    .extend(envelope_layout()),
            ),
            (
                "forward_status",
                cf(
                    12,
                    None,
                    Command::ForwardStatus {
                        forward_id: mid(),
                        wait_secs: 10,
                    },
                ),
                cf_head(12, false, 11, "ForwardStatus")
                    .raw(&mid().0, "forward_id")
                    .byte(10, "wait_secs = 10 (u8)"),
            ),
            (
                "restrict",
                cf(
                    13,
                    Some(auth()),
                    Command::Restrict {
                        recipient_id: rid(),
                        forwarders: vec![relay_key()],
                    },
                ),
                cf_head(13, true, 12, "Restrict")
                    .raw(&rid().0, "recipient_id")
                    .varint(1, "forwarders: count 1")
                    .raw(&relay_key().0, "forwarder relay key"),
            ),
        ],
    );
}

fn reply(corr: u32, response: Response) -> RelayFrame {
    RelayFrame::Reply { corr, response }
}
fn reply_head(corr: u64, variant: u8, name: &str) -> Layout {
    Layout::new()
        .byte(0, "RelayFrame::Reply (variant 0)")
        .varint(corr, &format!("corr = {corr}"))
        .byte(variant, &format!("response: {name} (variant {variant})"))
}

#[test]
fn relay_frame() {
    check_framed(
        "relay_frame.hex",
        "RelayFrame: replies, pushed deliveries and subscription ends (specs/protocol.md, Responses).",
        vec![
            (
                "created",
                reply(
                    1,
                    Response::Created(QueueCreated {
                        recipient_id: rid(),
                        sender_id: sid(),
                        relay_dh: seq(0x60),
                    }),
                ),
                reply_head(1, 0, "Created")
                    .raw(&rid().0, "recipient_id")
                    .raw(&sid().0, "sender_id")
                    .raw(&seq::<32>(0x60), "relay_dh: X25519 public key"),
            ),
            ("ok", reply(2, Response::Ok), reply_head(2, 1, "Ok")),
            (
                "message",
                reply(3, Response::Message(delivery())),
                reply_head(3, 2, "Message").extend(delivery_layout()),
            ),
            (
                "empty",
                reply(4, Response::Empty),
                reply_head(4, 3, "Empty"),
            ),
            (
                "error_auth",
                reply(5, Response::Error(ErrorCode::Auth)),
                reply_head(5, 4, "Error").byte(5, "error code 5 = AUTH"),
            ),
            ("pong", reply(6, Response::Pong), reply_head(6, 5, "Pong")),
            (
                "relay_info",
                reply(7, Response::RelayInfo(signed_info())),
                reply_head(7, 6, "RelayInfo").extend(signed_info_layout()),
            ),
            (
                "forwarded",
                reply(
                    8,
                    Response::Forwarded(SealedResponse {
                        ciphertext: vec![0xdd; 17],
                    }),
                ),
                reply_head(8, 7, "Forwarded").bytes(&[0xdd; 17], "sealed response ciphertext"),
            ),
            (
                "accepted",
                reply(9, Response::Accepted { forward_id: mid() }),
                reply_head(9, 8, "Accepted").raw(&mid().0, "forward_id"),
            ),
            (
                "pending",
                reply(10, Response::Pending),
                reply_head(10, 9, "Pending"),
            ),
            (
                "deliver",
                RelayFrame::Deliver(delivery()),
                Layout::new()
                    .byte(1, "RelayFrame::Deliver (variant 1)")
                    .extend(delivery_layout()),
            ),
            (
                "subscription_ended",
                RelayFrame::SubscriptionEnded {
                    recipient_id: rid(),
                },
                Layout::new()
                    .byte(2, "RelayFrame::SubscriptionEnded (variant 2)")
                    .raw(&rid().0, "recipient_id"),
            ),
        ],
    );
}

#[test]
fn peer_messages() {
    check_framed(
        "peer_hello.hex",
        "PeerHello: the first frame of a relay-to-relay session.",
        vec![(
            "v1_only",
            PeerHello {
                min_version: 1,
                max_version: 1,
            },
            Layout::new()
                .varint(1, "min_version")
                .varint(1, "max_version"),
        )],
    );
    check_framed(
        "peer_hello_reply.hex",
        "PeerHelloReply: the destination relay's answer.",
        vec![
            (
                "accept",
                PeerHelloReply::Accept { version: 1 },
                Layout::new()
                    .byte(0, "Accept (variant 0)")
                    .varint(1, "version"),
            ),
            (
                "reject_busy",
                PeerHelloReply::Reject(ErrorCode::Busy),
                Layout::new()
                    .byte(1, "Reject (variant 1)")
                    .byte(18, "error code 18 = BUSY"),
            ),
        ],
    );
    check_framed(
        "peer_request.hex",
        "PeerRequest: what a forwarding relay asks a destination relay.",
        vec![
            (
                "forward",
                PeerRequest::Forward {
                    corr: 1,
                    envelope: envelope(),
                },
                Layout::new()
                    .byte(0, "Forward (variant 0)")
                    .varint(1, "corr")
                    .extend(envelope_layout()),
            ),
            (
                "info",
                PeerRequest::Info { corr: 2 },
                Layout::new().byte(1, "Info (variant 1)").varint(2, "corr"),
            ),
        ],
    );
    check_framed(
        "peer_reply.hex",
        "PeerReply: the destination relay's answers.",
        vec![
            (
                "forwarded",
                PeerReply::Forwarded {
                    corr: 1,
                    response: SealedResponse {
                        ciphertext: vec![0xdd; 17],
                    },
                },
                Layout::new()
                    .byte(0, "Forwarded (variant 0)")
                    .varint(1, "corr")
                    .bytes(&[0xdd; 17], "sealed response ciphertext"),
            ),
            (
                "info",
                PeerReply::Info {
                    corr: 2,
                    info: signed_info(),
                },
                Layout::new()
                    .byte(1, "Info (variant 1)")
                    .varint(2, "corr")
                    .extend(signed_info_layout()),
            ),
            (
                "error_envelope",
                PeerReply::Error {
                    corr: 3,
                    code: ErrorCode::Envelope,
                },
                Layout::new()
                    .byte(2, "Error (variant 2)")
                    .varint(3, "corr")
                    .byte(16, "error code 16 = ENVELOPE"),
            ),
        ],
    );
}

#[test]
fn nested_types() {
    check_bare(
        "relay_address.hex",
        "RelayAddress, binary form (postcard; used inside commands and QR payloads).",
        vec![("three_endpoints", address(), address_layout())],
    );
    check_bare(
        "delivery_body.hex",
        "DeliveryBody: the plaintext of a layer-3 delivery.",
        vec![
            (
                "message",
                DeliveryBody {
                    received_at: 1_700_000_000,
                    kind: DeliveryKind::Message,
                    body: vec![0xbb; 5],
                },
                Layout::new()
                    .varint(1_700_000_000, "received_at (varint Unix seconds)")
                    .byte(0, "kind: Message")
                    .bytes(&[0xbb; 5], "body"),
            ),
            (
                "quota_marker",
                DeliveryBody {
                    received_at: 1_700_000_001,
                    kind: DeliveryKind::QuotaReached,
                    body: vec![],
                },
                Layout::new()
                    .varint(1_700_000_001, "received_at")
                    .byte(1, "kind: QuotaReached")
                    .bytes(&[], "body"),
            ),
        ],
    );
    check_bare(
        "forwarded_request.hex",
        "ForwardedRequest: the plaintext of a sealed envelope.",
        vec![(
            "signed_send",
            ForwardedRequest {
                sent_at: 1_700_000_000,
                auth: Some(auth()),
                command: Command::Send {
                    sender_id: sid(),
                    body: vec![0xbb; 5],
                },
            },
            Layout::new()
                .varint(1_700_000_000, "sent_at")
                .extend(auth_layout())
                .byte(2, "command: Send (variant 2)")
                .raw(&sid().0, "sender_id")
                .bytes(&[0xbb; 5], "body"),
        )],
    );
}
