//! A scripted session over real sockets against a real `petrel-relay` process: the happy
//! path and every typed error, with the relay staying up throughout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Owner, RelayProcess, body};
use petrel_federation::client::{
    ClientFrame, ClientHello, Command, RelayFrame, RelayHello, Response,
};
use petrel_federation::delivery::DeliveryKind;
use petrel_federation::transport::connection::RelayConnection;
use petrel_federation::{ErrorCode, KeyHash, MsgId, QueueId, frame};

fn err(code: ErrorCode) -> Response {
    Response::Error(code)
}

async fn next_delivery(conn: &mut RelayConnection) -> petrel_federation::client::Delivery {
    match conn.next_event().await.expect("session ended") {
        RelayFrame::Deliver(d) => d,
        other => panic!("expected a delivery, got {other:?}"),
    }
}

#[tokio::test]
async fn scripted_session_with_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let clock = dir.path().join("clock");
    std::fs::write(&clock, "1700000000").unwrap();
    let clock_arg = clock.to_str().unwrap().to_string();
    let mut relay = RelayProcess::start(
        &dir.path().join("data"),
        &[
            "--queue-quota",
            "3",
            "--message-ttl",
            "3600",
            "--dangerous-clock-file",
            &clock_arg,
        ],
    );

    let mut bob = RelayConnection::connect(&relay.address).await.unwrap();
    let alice = RelayConnection::connect(&relay.address).await.unwrap();

    // Create, secure, send, receive, ACK.
    let q = Owner::create(&bob, 1, true).await;
    let rid = q.created.recipient_id;
    let sid = q.created.sender_id;
    let sender = ed25519_dalek::SigningKey::from_bytes(&[2; 32]);
    let sender_hash = KeyHash::of(&sender.verifying_key().to_bytes());
    // Before SECURE anyone may send unsigned (the first message of a handshake).
    let first = Command::Send {
        sender_id: sid,
        body: body(b"hello before secure"),
    };
    assert_eq!(alice.request(None, first).await.unwrap(), Response::Ok);
    let d = next_delivery(&mut bob).await;
    let opened = q.open(&d);
    assert_eq!(opened.kind, DeliveryKind::Message);
    assert_eq!(opened.body, body(b"hello before secure"));
    assert_eq!(opened.received_at, 1_700_000_000);
    let secure = Command::Secure {
        recipient_id: rid,
        sender_key_hash: sender_hash,
    };
    assert_eq!(
        bob.request(Some(&q.key), secure.clone()).await.unwrap(),
        Response::Ok
    );
    // Wrong ACK ID, then the right one.
    let wrong_ack = Command::Ack {
        recipient_id: rid,
        msg_id: MsgId([9; 16]),
    };
    assert_eq!(
        bob.request(Some(&q.key), wrong_ack).await.unwrap(),
        err(ErrorCode::NoMessage)
    );
    let ack = Command::Ack {
        recipient_id: rid,
        msg_id: d.msg_id,
    };
    assert_eq!(
        bob.request(Some(&q.key), ack.clone()).await.unwrap(),
        Response::Ok
    );
    // ACKing twice: the message is gone.
    assert_eq!(
        bob.request(Some(&q.key), ack).await.unwrap(),
        err(ErrorCode::NoMessage)
    );

    // Second SECURE.
    assert_eq!(
        bob.request(Some(&q.key), secure).await.unwrap(),
        err(ErrorCode::Duplicate)
    );
    // Now unsigned SENDs and SENDs signed by another key are refused, the sender's works.
    let send = |text: &[u8]| Command::Send {
        sender_id: sid,
        body: body(text),
    };
    assert_eq!(
        alice.request(None, send(b"x")).await.unwrap(),
        err(ErrorCode::Auth)
    );
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    assert_eq!(
        alice.request(Some(&stranger), send(b"x")).await.unwrap(),
        err(ErrorCode::Auth)
    );
    assert_eq!(
        alice.request(Some(&sender), send(b"second")).await.unwrap(),
        Response::Ok
    );
    let d = next_delivery(&mut bob).await;
    assert_eq!(q.open(&d).body, body(b"second"));

    // Unknown queue and wrong key answer the same AUTH.
    let unknown = Command::Get {
        recipient_id: QueueId([7; 16]),
    };
    assert_eq!(
        bob.request(Some(&q.key), unknown).await.unwrap(),
        err(ErrorCode::Auth)
    );
    let get = Command::Get { recipient_id: rid };
    assert_eq!(
        bob.request(Some(&stranger), get.clone()).await.unwrap(),
        err(ErrorCode::Auth)
    );
    // A signature bound to another session is refused too.
    let foreign = petrel_federation::auth::Auth::sign(&q.key, &alice.session_id().0, &get).unwrap();
    assert_eq!(
        bob.request_with_auth(Some(foreign), get.clone())
            .await
            .unwrap(),
        err(ErrorCode::Auth)
    );
    // GET sees the unacknowledged message.
    match bob.request(Some(&q.key), get.clone()).await.unwrap() {
        Response::Message(m) => assert_eq!(m.msg_id, d.msg_id),
        other => panic!("{other:?}"),
    }

    // Oversized (not a size class) and too large for a frame.
    let odd = Command::Send {
        sender_id: sid,
        body: vec![0; 3000],
    };
    assert_eq!(
        alice.request(Some(&sender), odd).await.unwrap(),
        err(ErrorCode::MessageSize)
    );

    // Quota: 3 messages; the 4th SEND gets QUOTA and the recipient later sees a marker.
    for text in [b"q2".as_slice(), b"q3"] {
        assert_eq!(
            alice.request(Some(&sender), send(text)).await.unwrap(),
            Response::Ok
        );
    }
    assert_eq!(
        alice.request(Some(&sender), send(b"q4")).await.unwrap(),
        err(ErrorCode::Quota)
    );
    assert_eq!(
        alice.request(Some(&sender), send(b"q5")).await.unwrap(),
        err(ErrorCode::Quota)
    );
    let mut kinds = Vec::new();
    let mut pending = d;
    loop {
        let opened = q.open(&pending);
        kinds.push((opened.kind, opened.body.clone()));
        let ack = Command::Ack {
            recipient_id: rid,
            msg_id: pending.msg_id,
        };
        assert_eq!(bob.request(Some(&q.key), ack).await.unwrap(), Response::Ok);
        if opened.kind == DeliveryKind::QuotaReached {
            break;
        }
        pending = next_delivery(&mut bob).await;
    }
    assert_eq!(
        kinds,
        vec![
            (DeliveryKind::Message, body(b"second")),
            (DeliveryKind::Message, body(b"q2")),
            (DeliveryKind::Message, body(b"q3")),
            (DeliveryKind::QuotaReached, vec![]),
        ]
    );
    assert_eq!(
        bob.request(Some(&q.key), get.clone()).await.unwrap(),
        Response::Empty
    );

    // Expiry: a message older than the TTL is gone; ACKing it answers NO_MESSAGE.
    assert_eq!(
        alice.request(Some(&sender), send(b"old")).await.unwrap(),
        Response::Ok
    );
    let old = next_delivery(&mut bob).await;
    std::fs::write(&clock, "1700003601").unwrap();
    assert_eq!(
        bob.request(Some(&q.key), get.clone()).await.unwrap(),
        Response::Empty
    );
    let ack_old = Command::Ack {
        recipient_id: rid,
        msg_id: old.msg_id,
    };
    assert_eq!(
        bob.request(Some(&q.key), ack_old).await.unwrap(),
        err(ErrorCode::NoMessage)
    );

    // Malformed frame: answered with corr 0 and MALFORMED; the session goes on.
    let mut garbage = 3u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[1, 0xff, 0xff]);
    bob.send_raw(garbage).await.unwrap();
    match bob.next_event().await.unwrap() {
        RelayFrame::Reply { corr: 0, response } => assert_eq!(response, err(ErrorCode::Malformed)),
        other => panic!("{other:?}"),
    }
    // Wrong protocol version in a frame: VERSION, session goes on.
    let ping = frame::encode(
        2,
        &ClientFrame {
            corr: 77,
            auth: None,
            command: Command::Ping,
        },
    )
    .unwrap();
    bob.send_raw(ping).await.unwrap();
    match bob.next_event().await.unwrap() {
        RelayFrame::Reply { corr: 0, response } => assert_eq!(response, err(ErrorCode::Version)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        bob.request(None, Command::Ping).await.unwrap(),
        Response::Pong
    );

    // SUSPEND: senders get AUTH; DELETE: the queue is gone.
    let suspend = Command::Suspend { recipient_id: rid };
    assert_eq!(
        bob.request(Some(&q.key), suspend).await.unwrap(),
        Response::Ok
    );
    assert_eq!(
        alice.request(Some(&sender), send(b"late")).await.unwrap(),
        err(ErrorCode::Auth)
    );
    let delete = Command::Delete { recipient_id: rid };
    assert_eq!(
        bob.request(Some(&q.key), delete.clone()).await.unwrap(),
        Response::Ok
    );
    assert_eq!(
        bob.request(Some(&q.key), get).await.unwrap(),
        err(ErrorCode::Auth)
    );
    assert_eq!(
        bob.request(Some(&q.key), delete).await.unwrap(),
        err(ErrorCode::Auth)
    );

    // A frame over the size limit: TOO_LARGE with corr 0, then the session closes.
    bob.send_raw(vec![0xff, 0xff, 0xff, 0xff]).await.unwrap();
    match bob.next_event().await.unwrap() {
        RelayFrame::Reply { corr: 0, response } => assert_eq!(response, err(ErrorCode::TooLarge)),
        other => panic!("{other:?}"),
    }
    assert!(
        bob.next_event().await.is_none(),
        "session should end after TOO_LARGE"
    );

    // The relay is still up and serving.
    assert!(relay.is_running());
    let carol = RelayConnection::connect(&relay.address).await.unwrap();
    assert_eq!(
        carol.request(None, Command::Ping).await.unwrap(),
        Response::Pong
    );
    assert!(
        relay.terminate().success(),
        "relay exits cleanly on SIGTERM"
    );
}

#[tokio::test]
async fn wrong_protocol_version_in_hello_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = RelayProcess::start(dir.path(), &[]);
    let node = petrel_federation::transport::Node::start(
        petrel_federation::transport::Keypair::generate_ed25519(),
        &[],
        Default::default(),
    )
    .await
    .unwrap();
    let peer = node.connect(&relay.address).await.unwrap();
    let mut stream = node
        .open(peer, petrel_federation::client::PROTOCOL)
        .await
        .unwrap();
    use petrel_federation::transport::io::{read_message, write_message};
    write_message(
        &mut stream,
        1,
        &ClientHello {
            min_version: 7,
            max_version: 9,
        },
    )
    .await
    .unwrap();
    let reply: RelayHello = read_message(&mut stream, 1, 65_536).await.unwrap();
    assert_eq!(reply, RelayHello::Reject(ErrorCode::Version));
    assert!(relay.is_running());
}

#[tokio::test]
async fn create_password_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(dir.path(), &["--create-password", "open sesame"]);
    let conn = RelayConnection::connect(&relay.address).await.unwrap();
    assert_eq!(
        Owner::create_with_password(&conn, 1, false, None)
            .await
            .err(),
        Some(err(ErrorCode::CreateDenied))
    );
    assert_eq!(
        Owner::create_with_password(&conn, 1, false, Some(b"wrong"))
            .await
            .err(),
        Some(err(ErrorCode::CreateDenied))
    );
    assert!(
        Owner::create_with_password(&conn, 1, false, Some(b"open sesame"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn rate_limit_and_subscription_takeover() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(dir.path(), &["--burst", "5", "--rate", "0"]);
    let mut first = RelayConnection::connect(&relay.address).await.unwrap();
    let q = Owner::create(&first, 1, true).await;
    // A second session subscribes: the first is told it lost the queue.
    let second = RelayConnection::connect(&relay.address).await.unwrap();
    let sub = Command::Subscribe {
        recipient_id: q.created.recipient_id,
    };
    assert_eq!(
        second.request(Some(&q.key), sub).await.unwrap(),
        Response::Ok
    );
    match first.next_event().await.unwrap() {
        RelayFrame::SubscriptionEnded { recipient_id } => {
            assert_eq!(recipient_id, q.created.recipient_id)
        }
        other => panic!("{other:?}"),
    }
    // Burst of 5 with no refill: CREATE used one, 4 PINGs pass, the next is RATE_LIMITED.
    for _ in 0..4 {
        assert_eq!(
            first.request(None, Command::Ping).await.unwrap(),
            Response::Pong
        );
    }
    assert_eq!(
        first.request(None, Command::Ping).await.unwrap(),
        err(ErrorCode::RateLimited)
    );
}

/// ACK needs no signature on a session that proved the queue's key (a signed CREATE, SUB
/// or GET on that session); everywhere else an unsigned ACK is `AUTH`.
#[tokio::test]
async fn unsigned_ack_only_on_a_session_that_proved_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(dir.path(), &[]);
    let mut owner_conn = RelayConnection::connect(&relay.address).await.unwrap();
    let other = RelayConnection::connect(&relay.address).await.unwrap();
    let q = Owner::create(&owner_conn, 1, true).await;
    let rid = q.created.recipient_id;
    let send = |text: &'static [u8]| Command::Send {
        sender_id: q.created.sender_id,
        body: body(text),
    };
    let ack = |msg_id| Command::Ack {
        recipient_id: rid,
        msg_id,
    };
    assert_eq!(
        other.request(None, send(b"one")).await.unwrap(),
        Response::Ok
    );
    assert_eq!(
        other.request(None, send(b"two")).await.unwrap(),
        Response::Ok
    );
    assert_eq!(
        other.request(None, send(b"three")).await.unwrap(),
        Response::Ok
    );

    // The creating (and subscribed) session ACKs without a signature.
    let d = next_delivery(&mut owner_conn).await;
    // Another session that never proved the key cannot, even with the right message ID.
    assert_eq!(
        other.request(None, ack(d.msg_id)).await.unwrap(),
        err(ErrorCode::Auth)
    );
    assert_eq!(
        owner_conn.request(None, ack(d.msg_id)).await.unwrap(),
        Response::Ok
    );

    // A session that GETs with a signature may then ACK unsigned too.
    let reader = RelayConnection::connect(&relay.address).await.unwrap();
    let get = Command::Get { recipient_id: rid };
    let Response::Message(m) = reader.request(Some(&q.key), get).await.unwrap() else {
        panic!("expected the second message");
    };
    assert_eq!(
        reader.request(None, ack(m.msg_id)).await.unwrap(),
        Response::Ok
    );

    // A signature with the wrong key is still refused on a proven session.
    let d = next_delivery(&mut owner_conn).await;
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    assert_eq!(
        owner_conn
            .request(Some(&stranger), ack(d.msg_id))
            .await
            .unwrap(),
        err(ErrorCode::Auth)
    );

    // Once the queue is deleted, the proof is worth nothing.
    let delete = Command::Delete { recipient_id: rid };
    assert_eq!(
        owner_conn.request(Some(&q.key), delete).await.unwrap(),
        Response::Ok
    );
    assert_eq!(
        reader.request(None, ack(d.msg_id)).await.unwrap(),
        err(ErrorCode::Auth)
    );
}

/// SIGTERM sent the moment the address line appears drains and exits cleanly: the signal
/// handler is in place before the relay announces itself. (The window this guards was a
/// few microseconds wide, so the test shows the behaviour rather than reliably catching
/// its loss.)
#[test]
fn sigterm_right_after_the_address_line_exits_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    for round in 0..5 {
        let relay = RelayProcess::start(&tmp.path().join("data"), &[]);
        let status = relay.terminate();
        assert!(status.success(), "round {round}: {status:?}");
    }
}
