//! Property tests for every wire type: round trip, encoded length, and decoding that never
//! panics on truncated, bit-flipped or random input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use petrel_federation::address::{Endpoint, Host, RelayAddress, TransportKind};
use petrel_federation::auth::{Auth, Signature};
use petrel_federation::client::*;
use petrel_federation::frame::{self, FrameError, LEN_PREFIX, WireMessage};
use petrel_federation::peer::*;
use petrel_federation::seal::{SealedEnvelope, SealedResponse};
use petrel_federation::{ErrorCode, KeyHash, MsgId, QueueId, RelayKey, SessionId};
use proptest::prelude::*;
use std::fmt::Debug;

fn arr32() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}
fn qid() -> impl Strategy<Value = QueueId> {
    any::<[u8; 16]>().prop_map(QueueId)
}
fn mid() -> impl Strategy<Value = MsgId> {
    any::<[u8; 16]>().prop_map(MsgId)
}
fn sig() -> impl Strategy<Value = Signature> {
    (arr32(), arr32()).prop_map(|(a, b)| {
        let mut s = [0u8; 64];
        s[..32].copy_from_slice(&a);
        s[32..].copy_from_slice(&b);
        Signature(s)
    })
}
fn auth() -> impl Strategy<Value = Auth> {
    (arr32(), sig()).prop_map(|(key, sig)| Auth { key, sig })
}
fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}
fn error_code() -> impl Strategy<Value = ErrorCode> {
    any::<u8>().prop_map(ErrorCode::from_code)
}
fn relay_key() -> impl Strategy<Value = RelayKey> {
    any::<[u8; 32]>().prop_map(|seed| {
        RelayKey(
            ed25519_dalek::SigningKey::from_bytes(&seed)
                .verifying_key()
                .to_bytes(),
        )
    })
}
fn endpoint() -> impl Strategy<Value = Endpoint> {
    let transport = prop_oneof![
        Just(TransportKind::Tcp),
        Just(TransportKind::Ws),
        Just(TransportKind::Wss),
        Just(TransportKind::Quic)
    ];
    let host = prop_oneof![
        any::<[u8; 4]>().prop_map(Host::Ipv4),
        any::<[u8; 16]>().prop_map(Host::Ipv6),
        "[a-z0-9]{0,19}[a-z](\\.[a-z]{2,10}){0,3}".prop_map(Host::Name),
    ];
    (transport, host, 1..=u16::MAX).prop_map(|(transport, host, port)| Endpoint {
        transport,
        host,
        port,
    })
}
fn address() -> impl Strategy<Value = RelayAddress> {
    (relay_key(), proptest::collection::vec(endpoint(), 1..=8)).prop_map(|(k, mut e)| {
        // Duplicates are invalid; keep the first of each.
        let mut seen = Vec::new();
        e.retain(|x| {
            let new = !seen.contains(x);
            seen.push(x.clone());
            new
        });
        RelayAddress::new(k, e).unwrap()
    })
}
fn envelope() -> impl Strategy<Value = SealedEnvelope> {
    (arr32(), bytes(300)).prop_map(|(ephemeral, ciphertext)| SealedEnvelope {
        ephemeral,
        ciphertext,
    })
}
fn signed_info() -> impl Strategy<Value = SignedRelayInfo> {
    (
        relay_key(),
        arr32(),
        any::<u64>(),
        any::<u64>(),
        any::<u16>(),
        any::<u16>(),
        sig(),
    )
        .prop_map(
            |(identity, sealing_key, valid_from, valid_until, min_version, max_version, sig)| {
                SignedRelayInfo {
                    info: RelayInfo {
                        identity,
                        sealing_key,
                        valid_from,
                        valid_until,
                        min_version,
                        max_version,
                    },
                    sig,
                }
            },
        )
}
fn delivery() -> impl Strategy<Value = Delivery> {
    (qid(), mid(), bytes(300)).prop_map(|(recipient_id, msg_id, ciphertext)| Delivery {
        recipient_id,
        msg_id,
        ciphertext,
    })
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (
            arr32(),
            arr32(),
            any::<bool>(),
            proptest::option::of(bytes(40))
        )
            .prop_map(|(recipient_key, recipient_dh, subscribe, password)| {
                Command::Create {
                    recipient_key,
                    recipient_dh,
                    subscribe,
                    password,
                }
            }),
        (qid(), arr32()).prop_map(|(recipient_id, h)| Command::Secure {
            recipient_id,
            sender_key_hash: KeyHash(h)
        }),
        (qid(), bytes(3000)).prop_map(|(sender_id, body)| Command::Send { sender_id, body }),
        qid().prop_map(|recipient_id| Command::Subscribe { recipient_id }),
        (qid(), mid()).prop_map(|(recipient_id, msg_id)| Command::Ack {
            recipient_id,
            msg_id
        }),
        qid().prop_map(|recipient_id| Command::Get { recipient_id }),
        qid().prop_map(|recipient_id| Command::Suspend { recipient_id }),
        qid().prop_map(|recipient_id| Command::Delete { recipient_id }),
        Just(Command::Ping),
        address().prop_map(|relay| Command::RelayInfo { relay }),
        (address(), envelope()).prop_map(|(destination, envelope)| Command::Forward {
            destination,
            envelope
        }),
        (mid(), any::<u8>()).prop_map(|(forward_id, wait_secs)| Command::ForwardStatus {
            forward_id,
            wait_secs
        }),
        (qid(), proptest::collection::vec(relay_key(), 0..3)).prop_map(
            |(recipient_id, forwarders)| Command::Restrict {
                recipient_id,
                forwarders
            }
        ),
    ]
}
fn client_frame() -> impl Strategy<Value = ClientFrame> {
    (any::<u32>(), proptest::option::of(auth()), command()).prop_map(|(corr, auth, command)| {
        ClientFrame {
            corr,
            auth,
            command,
        }
    })
}
fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (qid(), qid(), arr32()).prop_map(|(recipient_id, sender_id, relay_dh)| {
            Response::Created(QueueCreated {
                recipient_id,
                sender_id,
                relay_dh,
            })
        }),
        Just(Response::Ok),
        delivery().prop_map(Response::Message),
        Just(Response::Empty),
        error_code().prop_map(Response::Error),
        Just(Response::Pong),
        signed_info().prop_map(Response::RelayInfo),
        bytes(100).prop_map(|ciphertext| Response::Forwarded(SealedResponse { ciphertext })),
        mid().prop_map(|forward_id| Response::Accepted { forward_id }),
        Just(Response::Pending),
    ]
}
fn relay_frame() -> impl Strategy<Value = RelayFrame> {
    prop_oneof![
        (any::<u32>(), response())
            .prop_map(|(corr, response)| RelayFrame::Reply { corr, response }),
        delivery().prop_map(RelayFrame::Deliver),
        qid().prop_map(|recipient_id| RelayFrame::SubscriptionEnded { recipient_id }),
    ]
}
fn relay_hello() -> impl Strategy<Value = RelayHello> {
    prop_oneof![
        (any::<u16>(), any::<[u8; 32]>(), any::<u64>()).prop_map(|(version, s, relay_time)| {
            RelayHello::Accept {
                version,
                session_id: SessionId(s),
                relay_time,
            }
        }),
        error_code().prop_map(RelayHello::Reject),
    ]
}
fn peer_request() -> impl Strategy<Value = PeerRequest> {
    prop_oneof![
        (any::<u32>(), envelope())
            .prop_map(|(corr, envelope)| PeerRequest::Forward { corr, envelope }),
        any::<u32>().prop_map(|corr| PeerRequest::Info { corr }),
    ]
}
fn peer_reply() -> impl Strategy<Value = PeerReply> {
    prop_oneof![
        (any::<u32>(), bytes(100)).prop_map(|(corr, ciphertext)| PeerReply::Forwarded {
            corr,
            response: SealedResponse { ciphertext }
        }),
        (any::<u32>(), signed_info()).prop_map(|(corr, info)| PeerReply::Info { corr, info }),
        (any::<u32>(), error_code()).prop_map(|(corr, code)| PeerReply::Error { corr, code }),
    ]
}

/// Round trip, encoded length, and robustness of one value's frame.
fn check<T: WireMessage + PartialEq + Debug>(
    value: &T,
    cut: usize,
    flip: usize,
) -> Result<(), TestCaseError> {
    let encoded = frame::encode(1, value).unwrap();
    // Encoded length: the prefix states exactly the bytes that follow, and the body is the
    // version byte plus the postcard encoding.
    let stated = u32::from_be_bytes(encoded[..LEN_PREFIX].try_into().unwrap()) as usize;
    prop_assert_eq!(stated, encoded.len() - LEN_PREFIX);
    prop_assert_eq!(stated, 1 + postcard::to_stdvec(value).unwrap().len());
    let decoded: T = frame::decode(1, &encoded).unwrap();
    prop_assert_eq!(&decoded, value);

    // Truncated anywhere: an error, never a panic, never a wrong value.
    let cut = cut % encoded.len();
    prop_assert!(frame::decode::<T>(1, &encoded[..cut]).is_err());
    // The body alone, cut short, fails too (postcard runs out of input).
    let body = &encoded[LEN_PREFIX..];
    if cut > 0 && cut < body.len() {
        let _ = frame::decode_body::<T>(1, &body[..cut]);
    }
    // One bit flipped: decodes to something or fails, but never panics.
    let mut flipped = encoded.clone();
    let bit = flip % (flipped.len() * 8);
    flipped[bit / 8] ^= 1 << (bit % 8);
    let _ = frame::decode::<T>(1, &flipped);
    // A wrong version byte is refused as such.
    let mut wrong = encoded.clone();
    wrong[LEN_PREFIX] = 2;
    let refused = matches!(
        frame::decode::<T>(1, &wrong),
        Err(FrameError::Version {
            got: 2,
            expected: 1
        })
    );
    prop_assert!(refused, "wrong version byte not refused as such");
    Ok(())
}

fn random_input<T: WireMessage + Debug>(data: &[u8]) {
    let _ = frame::decode::<T>(1, data);
    let _ = frame::decode_body::<T>(1, data);
    let mut framed = (data.len() as u32 + 1).to_be_bytes().to_vec();
    framed.push(1);
    framed.extend_from_slice(data);
    let _ = frame::decode::<T>(1, &framed);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn client_frames(v in client_frame(), cut in any::<usize>(), flip in any::<usize>()) {
        check(&v, cut, flip)?;
    }

    #[test]
    fn relay_frames(v in relay_frame(), cut in any::<usize>(), flip in any::<usize>()) {
        check(&v, cut, flip)?;
    }

    #[test]
    fn hellos(min in any::<u16>(), max in any::<u16>(), r in relay_hello(), cut in any::<usize>(), flip in any::<usize>()) {
        check(&ClientHello { min_version: min, max_version: max }, cut, flip)?;
        check(&PeerHello { min_version: min, max_version: max }, cut, flip)?;
        check(&r, cut, flip)?;
        let reply = if min % 2 == 0 { PeerHelloReply::Accept { version: max } } else { PeerHelloReply::Reject(ErrorCode::from_code(min as u8)) };
        check(&reply, cut, flip)?;
    }

    #[test]
    fn peer_frames(req in peer_request(), rep in peer_reply(), cut in any::<usize>(), flip in any::<usize>()) {
        check(&req, cut, flip)?;
        check(&rep, cut, flip)?;
    }

    #[test]
    fn addresses_round_trip_as_text_and_binary(addr in address()) {
        let text = addr.to_string();
        prop_assert_eq!(&text.parse::<RelayAddress>().unwrap(), &addr);
        let bin = postcard::to_stdvec(&addr).unwrap();
        prop_assert_eq!(&postcard::from_bytes::<RelayAddress>(&bin).unwrap(), &addr);
    }

    #[test]
    fn random_bytes_never_panic(data in bytes(600)) {
        random_input::<ClientHello>(&data);
        random_input::<RelayHello>(&data);
        random_input::<ClientFrame>(&data);
        random_input::<RelayFrame>(&data);
        random_input::<PeerHello>(&data);
        random_input::<PeerHelloReply>(&data);
        random_input::<PeerRequest>(&data);
        random_input::<PeerReply>(&data);
        let _ = postcard::from_bytes::<RelayAddress>(&data);
        let _ = std::str::from_utf8(&data).map(|s| s.parse::<RelayAddress>());
    }
}

#[test]
fn invalid_addresses_are_refused_in_binary_form_too() {
    // A binary address with zero endpoints, or a bad host name, does not decode.
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32])
        .verifying_key()
        .to_bytes();
    let mut no_endpoints = key.to_vec();
    no_endpoints.push(0);
    assert!(postcard::from_bytes::<RelayAddress>(&no_endpoints).is_err());
    let mut bad_name = key.to_vec();
    bad_name.extend_from_slice(&[1, 0, 2, 3, b'a', b'_', b'b', 1]);
    assert!(postcard::from_bytes::<RelayAddress>(&bad_name).is_err());
    // Nine endpoints: over the limit.
    let mut nine = key.to_vec();
    nine.push(9);
    for _ in 0..9 {
        nine.extend_from_slice(&[0, 0, 127, 0, 0, 1, 1]);
    }
    assert!(postcard::from_bytes::<RelayAddress>(&nine).is_err());
}

#[test]
fn oversized_frames_are_refused() {
    let big = ClientFrame {
        corr: 1,
        auth: None,
        command: Command::Send {
            sender_id: QueueId([0; 16]),
            body: vec![0; petrel_federation::limits::MAX_FRAME_LEN],
        },
    };
    assert!(matches!(
        frame::encode(1, &big),
        Err(FrameError::TooLarge { .. })
    ));
    // A frame whose prefix claims more than the limit is refused from the prefix alone,
    // even with the bytes present.
    let mut claimed = (petrel_federation::limits::MAX_FRAME_LEN as u32 + 1)
        .to_be_bytes()
        .to_vec();
    claimed.extend(vec![0; 16]);
    assert!(matches!(
        frame::decode::<ClientFrame>(1, &claimed),
        Err(FrameError::TooLarge { .. })
    ));
}
