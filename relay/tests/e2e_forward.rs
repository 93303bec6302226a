//! 2-hop routing between real relay processes: a client hands sealed SENDs to its own
//! relay, which forwards them to the recipient's relay.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Owner, RelayProcess, body};
use petrel_federation::auth::Auth;
use petrel_federation::client::{Command, RelayFrame, Response};
use petrel_federation::peer::SignedRelayInfo;
use petrel_federation::seal::{EnvelopeKey, ForwardedRequest, ResponseOpener, SealedEnvelope};
use petrel_federation::transport::connection::RelayConnection;
use petrel_federation::{ErrorCode, KeyHash, QueueId, RelayAddress};

const FAST_RETRY: &[&str] = &["--forward-to-private", "--forward-retry-min-ms", "50"];

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Asks `via` for `dest`'s signed info and checks it against `dest`'s key.
async fn sealing_key(via: &RelayConnection, dest: &RelayAddress) -> [u8; 32] {
    match via
        .request(
            None,
            Command::RelayInfo {
                relay: dest.clone(),
            },
        )
        .await
        .unwrap()
    {
        Response::RelayInfo(info) => verified(&info, dest),
        other => panic!("{other:?}"),
    }
}

fn verified(info: &SignedRelayInfo, dest: &RelayAddress) -> [u8; 32] {
    info.verify(dest.key(), now()).unwrap().sealing_key
}

fn seal_send(
    sealing: &[u8; 32],
    sid: QueueId,
    text: &[u8],
    sender: Option<&ed25519_dalek::SigningKey>,
) -> (SealedEnvelope, ResponseOpener) {
    let eph = EnvelopeKey::generate(&mut rand::rng());
    let command = Command::Send {
        sender_id: sid,
        body: body(text),
    };
    let auth = sender.map(|k| Auth::sign(k, &eph.public(), &command).unwrap());
    let request = ForwardedRequest {
        sent_at: now(),
        auth,
        command,
    };
    eph.seal(sealing, &request).unwrap()
}

async fn forward(
    conn: &RelayConnection,
    dest: &RelayAddress,
    envelope: SealedEnvelope,
) -> Response {
    conn.request(
        None,
        Command::Forward {
            destination: dest.clone(),
            envelope,
        },
    )
    .await
    .unwrap()
}

fn open(opener: &ResponseOpener, response: Response) -> Response {
    match response {
        Response::Forwarded(sealed) => opener.open(&sealed).unwrap(),
        other => panic!("expected a sealed answer, got {other:?}"),
    }
}

async fn next_delivery(conn: &mut RelayConnection) -> petrel_federation::client::Delivery {
    match conn.next_event().await.expect("session ended") {
        RelayFrame::Deliver(d) => d,
        other => panic!("expected a delivery, got {other:?}"),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn dir_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            all.extend(std::fs::read(path).unwrap());
        }
    }
    all
}

#[tokio::test]
async fn forwarding_outbox_replay_policy_and_key_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    let r1 = RelayProcess::start(&tmp.path().join("r1"), FAST_RETRY);
    let r2_dir = tmp.path().join("r2");
    let r2 = RelayProcess::start(&r2_dir, FAST_RETRY);
    let r2_addr = r2.address.clone();
    let r2_port = r2_addr.endpoints()[0].port.to_string();

    // Bob's queue lives on R2; Alice talks only to R1.
    let mut bob = RelayConnection::connect(&r2_addr).await.unwrap();
    let q = Owner::create(&bob, 11, true).await;
    let sid = q.created.sender_id;
    let alice = RelayConnection::connect(&r1.address).await.unwrap();
    let sealing = sealing_key(&alice, &r2_addr).await;

    // The confirmation (unsigned, queue not yet secured) goes through R1.
    let (env, opener) = seal_send(&sealing, sid, b"hello via R1", None);
    assert_eq!(
        open(&opener, forward(&alice, &r2_addr, env.clone()).await),
        Response::Ok
    );
    let d = next_delivery(&mut bob).await;
    assert_eq!(q.open(&d).body, body(b"hello via R1"));
    // R2 saw R1, never Alice: the delivery is re-encrypted, so no byte of what Alice sealed
    // leaves R2 unchanged.
    assert!(!contains(&d.ciphertext, &env.ciphertext[..64]));

    // A replayed envelope is answered OK again and stored once.
    assert_eq!(
        open(&opener, forward(&alice, &r2_addr, env).await),
        Response::Ok
    );
    let ack = Command::Ack {
        recipient_id: q.created.recipient_id,
        msg_id: d.msg_id,
    };
    assert_eq!(bob.request(Some(&q.key), ack).await.unwrap(), Response::Ok);
    let get = Command::Get {
        recipient_id: q.created.recipient_id,
    };
    assert_eq!(
        bob.request(Some(&q.key), get.clone()).await.unwrap(),
        Response::Empty
    );

    // Secure with Alice's sender key: signed forwards pass, unsigned ones get AUTH (sealed).
    let sender = ed25519_dalek::SigningKey::from_bytes(&[12; 32]);
    let secure = Command::Secure {
        recipient_id: q.created.recipient_id,
        sender_key_hash: KeyHash::of(&sender.verifying_key().to_bytes()),
    };
    assert_eq!(
        bob.request(Some(&q.key), secure).await.unwrap(),
        Response::Ok
    );
    let (env, opener) = seal_send(&sealing, sid, b"unsigned", None);
    assert_eq!(
        open(&opener, forward(&alice, &r2_addr, env).await),
        Response::Error(ErrorCode::Auth)
    );
    let (env, opener) = seal_send(&sealing, sid, b"signed", Some(&sender));
    assert_eq!(
        open(&opener, forward(&alice, &r2_addr, env).await),
        Response::Ok
    );
    let d = next_delivery(&mut bob).await;
    assert_eq!(q.open(&d).body, body(b"signed"));
    let ack = Command::Ack {
        recipient_id: q.created.recipient_id,
        msg_id: d.msg_id,
    };
    assert_eq!(bob.request(Some(&q.key), ack).await.unwrap(), Response::Ok);

    // RESTRICT to R1: a direct SEND to R2 is refused, the forwarded one passes.
    let restrict = Command::Restrict {
        recipient_id: q.created.recipient_id,
        forwarders: vec![*r1.address.key()],
    };
    assert_eq!(
        bob.request(Some(&q.key), restrict).await.unwrap(),
        Response::Ok
    );
    let direct = RelayConnection::connect(&r2_addr).await.unwrap();
    let send = Command::Send {
        sender_id: sid,
        body: body(b"direct"),
    };
    assert_eq!(
        direct.request(Some(&sender), send).await.unwrap(),
        Response::Error(ErrorCode::Auth)
    );

    // Outage: R2 is killed; R1 accepts the envelope into its outbox.
    r2.kill();
    let (env, opener) = seal_send(&sealing, sid, b"through the outage", Some(&sender));
    let forward_id = match forward(&alice, &r2_addr, env).await {
        Response::Accepted { forward_id } => forward_id,
        other => panic!("expected ACCEPTED, got {other:?}"),
    };
    let status = Command::ForwardStatus {
        forward_id,
        wait_secs: 0,
    };
    assert_eq!(
        alice.request(None, status).await.unwrap(),
        Response::Pending
    );
    // What R1 stores holds no queue ID.
    let r1_bytes = dir_bytes(&tmp.path().join("r1"));
    assert!(
        !contains(&r1_bytes, &sid.0),
        "R1's files contain the sender ID"
    );

    // R2 comes back on the same port; Bob resubscribes and gets the message once.
    let r2 = RelayProcess::start(
        &r2_dir,
        &[FAST_RETRY, &["--listen", &format!("127.0.0.1:{r2_port}")]].concat(),
    );
    assert_eq!(r2.address.key(), r2_addr.key());
    assert!(r2.address.endpoints().contains(&r2_addr.endpoints()[0]));
    let mut bob = RelayConnection::connect(&r2_addr).await.unwrap();
    let sub = Command::Subscribe {
        recipient_id: q.created.recipient_id,
    };
    assert_eq!(bob.request(Some(&q.key), sub).await.unwrap(), Response::Ok);
    let d = next_delivery(&mut bob).await;
    assert_eq!(q.open(&d).body, body(b"through the outage"));
    let status = Command::ForwardStatus {
        forward_id,
        wait_secs: 10,
    };
    assert_eq!(
        open(&opener, alice.request(None, status).await.unwrap()),
        Response::Ok
    );
    let ack = Command::Ack {
        recipient_id: q.created.recipient_id,
        msg_id: d.msg_id,
    };
    assert_eq!(bob.request(Some(&q.key), ack).await.unwrap(), Response::Ok);
    assert_eq!(
        bob.request(Some(&q.key), get).await.unwrap(),
        Response::Empty
    );
    // Neither the delivered ciphertext nor the queue ID is in R1's files.
    let r1_bytes = dir_bytes(&tmp.path().join("r1"));
    assert!(!contains(&r1_bytes, &d.ciphertext[..64]));
    assert!(!contains(&r1_bytes, &sid.0));

    // A destination address with an altered key is refused, naming the mismatch.
    let forged_key = RelayProcess::start(&tmp.path().join("other"), &[])
        .address
        .key()
        .to_owned();
    let forged = RelayAddress::new(forged_key, r2_addr.endpoints().to_vec()).unwrap();
    let (env, _) = seal_send(&sealing, sid, b"to a forgery", Some(&sender));
    assert_eq!(
        forward(&alice, &forged, env).await,
        Response::Error(ErrorCode::KeyMismatch)
    );

    // Unknown forward IDs are NO_MESSAGE.
    let unknown = Command::ForwardStatus {
        forward_id: petrel_federation::MsgId([1; 16]),
        wait_secs: 0,
    };
    assert_eq!(
        alice.request(None, unknown).await.unwrap(),
        Response::Error(ErrorCode::NoMessage)
    );
}

#[tokio::test]
async fn forwarding_policy_off_and_private_destinations() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = RelayProcess::start(&tmp.path().join("dest"), &[]);
    let off = RelayProcess::start(
        &tmp.path().join("off"),
        &["--forwarding", "off", "--forward-to-private"],
    );
    let conn = RelayConnection::connect(&off.address).await.unwrap();
    let (env, _) = seal_send(&[9; 32], QueueId([1; 16]), b"x", None);
    assert_eq!(
        forward(&conn, &dest.address, env.clone()).await,
        Response::Error(ErrorCode::ForwardDenied)
    );
    // Default policy: a destination on loopback/private addresses only is refused, so
    // clients cannot make a relay probe its own network.
    let default = RelayProcess::start(&tmp.path().join("default"), &[]);
    let conn = RelayConnection::connect(&default.address).await.unwrap();
    assert_eq!(
        forward(&conn, &dest.address, env).await,
        Response::Error(ErrorCode::ForwardDenied)
    );
    // ...and a destination that refuses forwards from peers answers FORWARD_DENIED too.
    let open_fwd = RelayProcess::start(&tmp.path().join("open"), &["--forward-to-private"]);
    let conn = RelayConnection::connect(&open_fwd.address).await.unwrap();
    let sealing = sealing_key(&conn, &off.address).await;
    let (env, _) = seal_send(&sealing, QueueId([1; 16]), b"x", None);
    assert_eq!(
        forward(&conn, &off.address, env).await,
        Response::Error(ErrorCode::ForwardDenied)
    );
}

#[tokio::test]
async fn outbox_bounds_and_peer_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = RelayProcess::start(&tmp.path().join("dest"), &[]);
    let other = RelayProcess::start(&tmp.path().join("other"), &[]);
    let dest_addr = dest.address.clone();
    let dest_key = dest_addr.key_text();

    // `peers` mode: only the listed destination is served.
    let peers_only = RelayProcess::start(
        &tmp.path().join("peers"),
        &[
            "--forward-to-private",
            "--forwarding",
            "peers",
            "--forward-peer",
            &dest_key,
        ],
    );
    let conn = RelayConnection::connect(&peers_only.address).await.unwrap();
    let sealing = sealing_key(&conn, &dest_addr).await;
    let owner_conn = RelayConnection::connect(&dest_addr).await.unwrap();
    let q = Owner::create(&owner_conn, 31, false).await;
    let (env, opener) = seal_send(&sealing, q.created.sender_id, b"listed", None);
    assert_eq!(
        open(&opener, forward(&conn, &dest_addr, env).await),
        Response::Ok
    );
    let (env, _) = seal_send(&sealing, q.created.sender_id, b"unlisted", None);
    assert_eq!(
        forward(&conn, &other.address, env).await,
        Response::Error(ErrorCode::ForwardDenied)
    );

    // A full outbox: with room for one envelope, the second forward to a dead relay is
    // refused with OUTBOX_FULL.
    let config = tmp.path().join("small.toml");
    std::fs::write(
        &config,
        "[limits]\nmax_outbox = 1\nforward_timeout_secs = 1\n",
    )
    .unwrap();
    let small = RelayProcess::start(
        &tmp.path().join("small"),
        &["--forward-to-private", "--config", config.to_str().unwrap()],
    );
    let conn = RelayConnection::connect(&small.address).await.unwrap();
    drop(owner_conn);
    dest.kill();
    let (env, _) = seal_send(&sealing, q.created.sender_id, b"first", None);
    assert!(matches!(
        forward(&conn, &dest_addr, env).await,
        Response::Accepted { .. }
    ));
    let (env, _) = seal_send(&sealing, q.created.sender_id, b"second", None);
    assert_eq!(
        forward(&conn, &dest_addr, env).await,
        Response::Error(ErrorCode::OutboxFull)
    );
}

/// A pipelined burst of forwards to a destination the relay has no session with yet (first
/// use, and again after the destination restarts) shares one dial and arrives in order.
#[tokio::test]
async fn burst_of_forwards_shares_one_dial_and_keeps_order() {
    const BURST: usize = 24;
    let tmp = tempfile::tempdir().unwrap();
    let r1 = RelayProcess::start(&tmp.path().join("r1"), FAST_RETRY);
    let r2_dir = tmp.path().join("r2");
    let r2 = RelayProcess::start(&r2_dir, FAST_RETRY);
    let r2_addr = r2.address.clone();
    let r2_port = r2_addr.endpoints()[0].port.to_string();
    let owner_conn = RelayConnection::connect(&r2_addr).await.unwrap();
    let q = Owner::create(&owner_conn, 41, false).await;
    let alice = RelayConnection::connect(&r1.address).await.unwrap();
    let sealing = sealing_key(&alice, &r2_addr).await;

    let mut r2 = Some(r2);
    for round in 0..2 {
        if round == 1 {
            // The destination restarts: R1's session to it is dead.
            r2.take().unwrap().kill();
            r2 = Some(RelayProcess::start(
                &r2_dir,
                &[FAST_RETRY, &["--listen", &format!("127.0.0.1:{r2_port}")]].concat(),
            ));
        }
        let mut sent = Vec::new();
        let mut requests = Vec::new();
        for i in 0..BURST {
            let text = format!("round {round} message {i}").into_bytes();
            let (env, opener) = seal_send(&sealing, q.created.sender_id, &text, None);
            sent.push(text);
            let (alice, dest) = (&alice, &r2_addr);
            requests.push(async move { (forward(alice, dest, env).await, opener) });
        }
        // All requests are written before any answer is read.
        for (response, opener) in futures::future::join_all(requests).await {
            assert_eq!(open(&opener, response), Response::Ok, "round {round}");
        }
        let owner = RelayConnection::connect(&r2_addr).await.unwrap();
        let get = Command::Get {
            recipient_id: q.created.recipient_id,
        };
        for (i, text) in sent.iter().enumerate() {
            let d = match owner.request(Some(&q.key), get.clone()).await.unwrap() {
                Response::Message(d) => d,
                other => panic!("round {round} message {i}: {other:?}"),
            };
            assert_eq!(
                q.open(&d).body,
                body(text),
                "round {round}: message {i} out of order"
            );
            let ack = Command::Ack {
                recipient_id: q.created.recipient_id,
                msg_id: d.msg_id,
            };
            assert_eq!(
                owner.request(Some(&q.key), ack).await.unwrap(),
                Response::Ok
            );
        }
        assert_eq!(
            owner.request(Some(&q.key), get).await.unwrap(),
            Response::Empty,
            "round {round}: nothing more than the burst"
        );
    }
}

/// A burst of forwards to a destination that accepts connections but never answers is
/// answered (ACCEPTED into the outbox) after about one forward timeout: forwards waiting
/// for the destination's dial gate count that wait against their timeout instead of each
/// dialing in turn.
#[tokio::test]
async fn burst_to_a_silent_destination_is_answered_after_one_timeout() {
    const BURST: usize = 10;
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("fast.toml");
    std::fs::write(&config, "[limits]\nforward_timeout_secs = 1\n").unwrap();
    let r1 = RelayProcess::start(
        &tmp.path().join("r1"),
        &["--forward-to-private", "--config", config.to_str().unwrap()],
    );
    let other = RelayProcess::start(&tmp.path().join("other"), &[]);
    let alice = RelayConnection::connect(&r1.address).await.unwrap();
    // R1 never talks to `other`: only its key is used, at an address that never answers.
    // What the envelopes are sealed to does not matter, as they never arrive.
    let sealing =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([5; 32])).to_bytes();

    // The kernel completes TCP handshakes into the backlog; nothing ever reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let endpoint = petrel_federation::Endpoint {
        transport: petrel_federation::TransportKind::Tcp,
        host: petrel_federation::Host::Ipv4([127, 0, 0, 1]),
        port,
    };
    let dest = RelayAddress::new(*other.address.key(), vec![endpoint]).unwrap();

    let start = std::time::Instant::now();
    let mut requests = Vec::new();
    for i in 0..BURST {
        let (env, _) = seal_send(&sealing, QueueId([7; 16]), format!("{i}").as_bytes(), None);
        let (alice, dest) = (&alice, &dest);
        requests.push(async move { forward(alice, dest, env).await });
    }
    for response in futures::future::join_all(requests).await {
        assert!(
            matches!(response, Response::Accepted { .. }),
            "expected ACCEPTED, got {response:?}"
        );
    }
    // Dialing in turn would take at least BURST × 1 s; a generous bound, far from both.
    let elapsed = start.elapsed();
    assert!(
        elapsed < std::time::Duration::from_secs(BURST as u64 / 2),
        "the burst took {elapsed:?}: forwards waited for the dial gate one timeout each"
    );
    drop(silent);
}
