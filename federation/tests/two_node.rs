//! Two libp2p nodes over loopback for each protocol: a relay-side node accepting streams and
//! a client (or forwarding relay) dialing it by its relay address.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures::AsyncWriteExt;
use futures::StreamExt;
use petrel_federation::address::RelayAddress;
use petrel_federation::client::{
    self, ClientFrame, ClientHello, Command, RelayFrame, RelayHello, Response,
};
use petrel_federation::frame::FrameError;
use petrel_federation::ids::SessionId;
use petrel_federation::limits::MAX_FRAME_LEN;
use petrel_federation::peer::{self, PeerReply, PeerRequest, RelayInfo, SignedRelayInfo};
use petrel_federation::transport::io::{read_body, read_message, write_message};
use petrel_federation::transport::session::{self, HELLO_WIRE_VERSION, HelloError};
use petrel_federation::transport::{
    DialFailed, Keypair, Node, TransportLimits, endpoint_of, relay_key_of,
};
use petrel_federation::{ErrorCode, RelayKey};

fn relay_keypair(seed: u8) -> (Keypair, ed25519_dalek::SigningKey) {
    let keypair = Keypair::ed25519_from_bytes([seed; 32]).unwrap();
    (keypair, ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
}

async fn start_relay(seed: u8, listen: &str, limits: TransportLimits) -> (Node, RelayAddress) {
    let (keypair, _) = relay_keypair(seed);
    let key = relay_key_of(&keypair).unwrap();
    let node = Node::start(keypair, &[listen.parse().unwrap()], limits)
        .await
        .unwrap();
    let endpoints = node.listen_addrs().iter().filter_map(endpoint_of).collect();
    let address = RelayAddress::new(key, endpoints).unwrap();
    (node, address)
}

async fn client_node() -> Node {
    Node::start(Keypair::generate_ed25519(), &[], TransportLimits::default())
        .await
        .unwrap()
}

/// A minimal client-protocol server: hello, then answers PING with PONG until the stream ends.
fn serve_pings(node: &Node) -> tokio::task::JoinHandle<Vec<libp2p::PeerId>> {
    let mut incoming = node.accept(client::PROTOCOL).unwrap();
    tokio::spawn(async move {
        let mut peers = Vec::new();
        while let Some((peer, mut stream)) = incoming.next().await {
            peers.push(peer);
            if session::accept_client_hello(&mut stream, SessionId([9; 32]), 1_700_000_000)
                .await
                .is_err()
            {
                continue;
            }
            while let Ok(frame) =
                read_message::<ClientFrame, _>(&mut stream, 1, MAX_FRAME_LEN).await
            {
                let response = match frame.command {
                    Command::Ping => Response::Pong,
                    _ => Response::Error(ErrorCode::Prohibited),
                };
                let reply = RelayFrame::Reply {
                    corr: frame.corr,
                    response,
                };
                if write_message(&mut stream, 1, &reply).await.is_err() {
                    break;
                }
            }
            if peers.len() == 2 {
                break;
            }
        }
        peers
    })
}

async fn ping_once(client: &Node, relay: &RelayAddress) -> session::ClientSession {
    let peer = client.connect(relay).await.unwrap();
    let mut stream = client.open(peer, client::PROTOCOL).await.unwrap();
    let session = session::client_hello(&mut stream).await.unwrap();
    write_message(
        &mut stream,
        1,
        &ClientFrame {
            corr: 42,
            auth: None,
            command: Command::Ping,
        },
    )
    .await
    .unwrap();
    let reply: RelayFrame = read_message(&mut stream, 1, MAX_FRAME_LEN).await.unwrap();
    assert_eq!(
        reply,
        RelayFrame::Reply {
            corr: 42,
            response: Response::Pong
        }
    );
    stream.close().await.unwrap();
    session
}

#[tokio::test]
async fn client_protocol_over_tcp_with_fresh_keys_per_session() {
    let (relay, address) = start_relay(1, "/ip4/127.0.0.1/tcp/0", TransportLimits::default()).await;
    let server = serve_pings(&relay);
    // Two sessions from two client nodes: each has its own transport key, so the relay sees
    // two unrelated peer IDs.
    let a = client_node().await;
    let b = client_node().await;
    let s = ping_once(&a, &address).await;
    assert_eq!(s.version, 1);
    assert_eq!(s.session_id, SessionId([9; 32]));
    ping_once(&b, &address).await;
    let peers = server.await.unwrap();
    assert_eq!(peers, vec![a.peer_id(), b.peer_id()]);
    assert_ne!(a.peer_id(), b.peer_id());
}

#[tokio::test]
async fn client_protocol_over_websocket() {
    let (relay, address) =
        start_relay(2, "/ip4/127.0.0.1/tcp/0/ws", TransportLimits::default()).await;
    assert!(address.to_string().contains("@ws/127.0.0.1:"), "{address}");
    let _server = serve_pings(&relay);
    ping_once(&client_node().await, &address).await;
}

#[tokio::test]
async fn relay_protocol_info_exchange() {
    let (relay, address) = start_relay(3, "/ip4/127.0.0.1/tcp/0", TransportLimits::default()).await;
    let (_, identity) = relay_keypair(3);
    let info = SignedRelayInfo::sign(
        &identity,
        RelayInfo {
            identity: RelayKey(identity.verifying_key().to_bytes()),
            sealing_key: [5; 32],
            valid_from: 100,
            valid_until: 200,
            min_version: 1,
            max_version: 1,
        },
    );
    let mut incoming = relay.accept(peer::PROTOCOL).unwrap();
    let served = info.clone();
    tokio::spawn(async move {
        let (_, mut stream) = incoming.next().await.unwrap();
        session::accept_peer_hello(&mut stream).await.unwrap();
        while let Ok(req) = read_message::<PeerRequest, _>(&mut stream, 1, MAX_FRAME_LEN).await {
            let reply = match req {
                PeerRequest::Info { corr } => PeerReply::Info {
                    corr,
                    info: served.clone(),
                },
                PeerRequest::Forward { corr, .. } => PeerReply::Error {
                    corr,
                    code: ErrorCode::Envelope,
                },
            };
            write_message(&mut stream, 1, &reply).await.unwrap();
        }
    });
    // The forwarding side is a relay too, with its own identity.
    let (forwarder, _) = start_relay(4, "/ip4/127.0.0.1/tcp/0", TransportLimits::default()).await;
    let peer = forwarder.connect(&address).await.unwrap();
    let mut stream = forwarder.open(peer, peer::PROTOCOL).await.unwrap();
    assert_eq!(session::peer_hello(&mut stream).await.unwrap(), 1);
    write_message(&mut stream, 1, &PeerRequest::Info { corr: 7 })
        .await
        .unwrap();
    match read_message::<PeerReply, _>(&mut stream, 1, MAX_FRAME_LEN)
        .await
        .unwrap()
    {
        PeerReply::Info { corr: 7, info: got } => {
            assert_eq!(got, info);
            got.verify(address.key(), 150).unwrap();
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_relay_with_another_key_is_refused_naming_both_keys() {
    let (_relay, address) =
        start_relay(5, "/ip4/127.0.0.1/tcp/0", TransportLimits::default()).await;
    // Same endpoints, altered key.
    let (other, _) = relay_keypair(6);
    let forged =
        RelayAddress::new(relay_key_of(&other).unwrap(), address.endpoints().to_vec()).unwrap();
    let err = client_node().await.connect(&forged).await.unwrap_err();
    match &err {
        DialFailed::WrongKey {
            expected, obtained, ..
        } => {
            assert_eq!(expected, &forged.key_text());
            assert_eq!(obtained, &address.key_text());
        }
        other => panic!("expected WrongKey, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("mismatch") && text.contains(&forged.key_text()),
        "{text}"
    );
}

#[tokio::test]
async fn a_four_gib_length_prefix_fails_before_allocation_on_a_real_stream() {
    let (relay, address) = start_relay(7, "/ip4/127.0.0.1/tcp/0", TransportLimits::default()).await;
    let mut incoming = relay.accept(client::PROTOCOL).unwrap();
    let server = tokio::spawn(async move {
        let (_, mut stream) = incoming.next().await.unwrap();
        read_body(&mut stream, MAX_FRAME_LEN).await
    });
    let client = client_node().await;
    let peer = client.connect(&address).await.unwrap();
    let mut stream = client.open(peer, client::PROTOCOL).await.unwrap();
    // Claim 4 GiB - 1 and send nothing more: the reader must refuse from the prefix alone
    // (if it tried to read the body it would wait forever for bytes that never come).
    stream.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
    stream.flush().await.unwrap();
    let result = server.await.unwrap();
    assert_eq!(
        result,
        Err(FrameError::TooLarge {
            len: u32::MAX as u64,
            max: MAX_FRAME_LEN
        })
    );
}

#[tokio::test]
async fn no_common_version_is_rejected() {
    let (relay, address) = start_relay(8, "/ip4/127.0.0.1/tcp/0", TransportLimits::default()).await;
    let mut incoming = relay.accept(client::PROTOCOL).unwrap();
    let server = tokio::spawn(async move {
        let (_, mut stream) = incoming.next().await.unwrap();
        session::accept_client_hello(&mut stream, SessionId([0; 32]), 0).await
    });
    let client = client_node().await;
    let peer = client.connect(&address).await.unwrap();
    let mut stream = client.open(peer, client::PROTOCOL).await.unwrap();
    write_message(
        &mut stream,
        HELLO_WIRE_VERSION,
        &ClientHello {
            min_version: 2,
            max_version: 9,
        },
    )
    .await
    .unwrap();
    let reply: RelayHello = read_message(&mut stream, HELLO_WIRE_VERSION, MAX_FRAME_LEN)
        .await
        .unwrap();
    assert_eq!(reply, RelayHello::Reject(ErrorCode::Version));
    assert!(matches!(
        server.await.unwrap(),
        Err(HelloError::NoCommonVersion { min: 2, max: 9, .. })
    ));
}

#[tokio::test]
async fn per_ip_limit_refuses_the_extra_connection() {
    let limits = TransportLimits {
        max_per_ip: 1,
        ..TransportLimits::default()
    };
    let (relay, address) = start_relay(9, "/ip4/127.0.0.1/tcp/0", limits).await;
    let _server = serve_pings(&relay);
    let first = client_node().await;
    first.connect(&address).await.unwrap();
    let second = client_node().await;
    let err = second.connect(&address).await.unwrap_err();
    assert!(matches!(err, DialFailed::Unreachable(_)), "{err:?}");
    // The first connection still works.
    ping_once(&first, &address).await;
}
