//! The relay against the command table of `specs/protocol.md` §10.1, read from the spec.
//!
//! For every row the test checks the authenticator rule (absent where the table says
//! required, present where it says absent: `AUTH`) and drives every error code the row
//! lists out of real relay processes over real sockets. At the end the set of
//! (command, code) pairs the scenarios produced must equal the set the spec lists, so a
//! code added to the spec without a scenario — or a scenario for a code the spec does not
//! list — fails here. The corners of §3, §4, §8, §10.2 and §14.2 that an independent
//! implementation found the relay and the spec to disagree on have their own tests below.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Owner, RelayProcess, body};
use ed25519_dalek::SigningKey;
use futures::{AsyncReadExt, AsyncWriteExt};
use petrel_federation::auth::Auth;
use petrel_federation::client::{ClientHello, Command, RelayFrame, RelayHello, Response};
use petrel_federation::peer::SignedRelayInfo;
use petrel_federation::seal::{EnvelopeKey, ForwardedRequest, ResponseOpener, SealedEnvelope};
use petrel_federation::transport::connection::RelayConnection;
use petrel_federation::{ErrorCode, KeyHash, MsgId, QueueId, RelayAddress, RelayKey};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

// ---------------------------------------------------------------------------------------
// The spec's table

/// One row of §10.1: the auth rule as written and the error codes listed.
struct Row {
    auth: String,
    codes: BTreeSet<String>,
}

/// Reads the §10.1 summary table from `specs/protocol.md`.
fn spec_table() -> BTreeMap<String, Row> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/protocol.md");
    let spec = std::fs::read_to_string(path).unwrap();
    let start = spec.find("### 10.1").expect("§10.1 in the spec");
    let mut rows = BTreeMap::new();
    for line in spec[start..]
        .lines()
        .skip_while(|l| !l.starts_with("| command |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
    {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 5, "a §10.1 row has five cells: {line}");
        let codes = cells[4]
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
            .map(str::to_string)
            .collect();
        rows.insert(
            cells[0].to_string(),
            Row {
                auth: cells[1].to_string(),
                codes,
            },
        );
    }
    assert!(
        rows.len() >= 13,
        "§10.1 lists every command: {}",
        rows.len()
    );
    rows
}

/// `MessageSize` → `MESSAGE_SIZE`, the spec's spelling.
fn spec_name(code: ErrorCode) -> String {
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// What the scenarios saw: (command, code) pairs and the commands whose auth rule held.
#[derive(Default)]
struct Seen {
    codes: BTreeSet<(String, String)>,
    auth_rule: BTreeSet<String>,
}

impl Seen {
    /// Asserts that `response` is `Error(code)` and records it for `command`.
    fn error(&mut self, command: &str, response: Response, code: ErrorCode) {
        assert_eq!(
            response,
            Response::Error(code),
            "{command} should answer {code:?}"
        );
        self.codes.insert((command.to_string(), spec_name(code)));
    }

    /// Asserts that a wrongly present or absent authenticator is `AUTH`.
    fn auth_rule(&mut self, command: &str, response: Response) {
        assert_eq!(
            response,
            Response::Error(ErrorCode::Auth),
            "{command} with the wrong authenticator presence"
        );
        self.auth_rule.insert(command.to_string());
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Writes a config file with a `[limits]` table.
fn config(dir: &Path, name: &str, limits: &str) -> String {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, format!("[limits]\n{limits}\n")).unwrap();
    path.to_str().unwrap().to_string()
}

/// An address with `key` at `endpoints_of`'s endpoints.
fn address_with_key(key: RelayKey, endpoints_of: &RelayAddress) -> RelayAddress {
    RelayAddress::new(key, endpoints_of.endpoints().to_vec()).unwrap()
}

fn foreign_key(seed: u8) -> RelayKey {
    RelayKey(
        SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_bytes(),
    )
}

/// A loopback address nobody listens on (a port just released), with a fresh key.
fn nobody_at(seed: u8) -> RelayAddress {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    RelayAddress::new(
        foreign_key(seed),
        vec![format!("127.0.0.1:{port}").parse().unwrap()],
    )
    .unwrap()
}

async fn relay_info(conn: &RelayConnection, relay: &RelayAddress) -> Response {
    let command = Command::RelayInfo {
        relay: relay.clone(),
    };
    conn.request(None, command).await.unwrap()
}

fn sealing_key(info: Response, dest: &RelayAddress) -> [u8; 32] {
    let Response::RelayInfo(info) = info else {
        panic!("expected RelayInfo, got {info:?}");
    };
    let info: SignedRelayInfo = info;
    info.verify(dest.key(), now()).unwrap().sealing_key
}

fn seal_send(sealing: &[u8; 32], sid: QueueId, text: &[u8]) -> (SealedEnvelope, ResponseOpener) {
    let eph = EnvelopeKey::generate(&mut rand::rng());
    let request = ForwardedRequest {
        sent_at: now(),
        auth: None,
        command: Command::Send {
            sender_id: sid,
            body: body(text),
        },
    };
    eph.seal(sealing, &request).unwrap()
}

/// An envelope no relay can open.
fn garbage_envelope() -> SealedEnvelope {
    SealedEnvelope {
        ephemeral: EnvelopeKey::generate(&mut rand::rng()).public(),
        ciphertext: vec![0x55; 2048 + 256 + 16],
    }
}

fn forward_command(destination: &RelayAddress, envelope: SealedEnvelope) -> Command {
    Command::Forward {
        destination: destination.clone(),
        envelope,
    }
}

async fn forward(conn: &RelayConnection, dest: &RelayAddress, env: SealedEnvelope) -> Response {
    conn.request(None, forward_command(dest, env))
        .await
        .unwrap()
}

/// Long-polls FORWARD_STATUS until the forward is no longer pending.
async fn final_status(conn: &RelayConnection, forward_id: MsgId) -> Response {
    for _ in 0..30 {
        let status = Command::ForwardStatus {
            forward_id,
            wait_secs: 10,
        };
        match conn.request(None, status).await.unwrap() {
            Response::Pending => continue,
            other => return other,
        }
    }
    panic!("the forward stayed pending for 300 s of long polls");
}

fn accepted(response: Response) -> MsgId {
    match response {
        Response::Accepted { forward_id } => forward_id,
        other => panic!("expected Accepted, got {other:?}"),
    }
}

/// The next pushed frame. The 60 s bound only turns a missing push into a failure
/// instead of a hang until the relay's idle timeout; nothing is measured by it.
async fn next_event(conn: &mut RelayConnection) -> RelayFrame {
    tokio::time::timeout(std::time::Duration::from_secs(60), conn.next_event())
        .await
        .expect("no frame pushed within 60 s")
        .expect("session ended")
}

/// A relay with the default settings, and the directory it lives in.
fn one_relay() -> (tempfile::TempDir, RelayProcess) {
    let tmp = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(tmp.path(), &[]);
    (tmp, relay)
}

/// The session still answers.
async fn assert_alive(conn: &RelayConnection) {
    let pong = conn.request(None, Command::Ping).await.unwrap();
    assert_eq!(pong, Response::Pong, "the session goes on");
}

fn stranger() -> SigningKey {
    SigningKey::from_bytes(&[0xee; 32])
}

// ---------------------------------------------------------------------------------------
// The table

#[tokio::test]
async fn every_row_of_the_command_table() {
    let table = spec_table();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut seen = Seen::default();

    // R1: the main relay. Forwards to loopback, retries fast, quota 2.
    let r1_config = config(dir, "r1", "forward_retry_max_secs = 1");
    let r1 = RelayProcess::start(
        &dir.join("r1"),
        &[
            "--forward-to-private",
            "--forward-retry-min-ms",
            "50",
            "--queue-quota",
            "2",
            "--config",
            &r1_config,
        ],
    );
    let mut bob = RelayConnection::connect(&r1.address).await.unwrap();
    let other = RelayConnection::connect(&r1.address).await.unwrap();
    let q = Owner::create(&bob, 1, true).await;
    let rid = q.created.recipient_id;
    let sid = q.created.sender_id;

    // CREATE
    let create = |key: &SigningKey, password: Option<Vec<u8>>| Command::Create {
        recipient_key: key.verifying_key().to_bytes(),
        recipient_dh: x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([7; 32]))
            .to_bytes(),
        subscribe: false,
        password,
    };
    let fresh = SigningKey::from_bytes(&[2; 32]);
    seen.auth_rule(
        "CREATE",
        other.request(None, create(&fresh, None)).await.unwrap(),
    );
    // Signed, but not by the key it creates the queue for.
    let response = other
        .request(Some(&stranger()), create(&fresh, None))
        .await
        .unwrap();
    seen.error("CREATE", response, ErrorCode::Auth);
    let response = other
        .request(Some(&fresh), create(&fresh, Some(vec![b'p'; 129])))
        .await
        .unwrap();
    seen.error("CREATE", response, ErrorCode::Malformed);

    // SECURE
    let sender = SigningKey::from_bytes(&[3; 32]);
    let secure = Command::Secure {
        recipient_id: rid,
        sender_key_hash: KeyHash::of(&sender.verifying_key().to_bytes()),
    };
    seen.auth_rule("SECURE", bob.request(None, secure.clone()).await.unwrap());
    let response = bob
        .request(Some(&stranger()), secure.clone())
        .await
        .unwrap();
    seen.error("SECURE", response, ErrorCode::Auth);

    // SEND, before SECURE: an authenticator is refused; after it, its absence is.
    let send = |text: &[u8]| Command::Send {
        sender_id: sid,
        body: body(text),
    };
    let response = other.request(Some(&sender), send(b"x")).await.unwrap();
    assert_eq!(
        response,
        Response::Error(ErrorCode::Auth),
        "signed before SECURE"
    );
    assert_eq!(
        bob.request(Some(&q.key), secure.clone()).await.unwrap(),
        Response::Ok
    );
    let response = bob.request(Some(&q.key), secure).await.unwrap();
    seen.error("SECURE", response, ErrorCode::Duplicate);
    seen.auth_rule("SEND", other.request(None, send(b"x")).await.unwrap());
    let unknown_queue = Command::Send {
        sender_id: QueueId([0xab; 16]),
        body: body(b"x"),
    };
    let response = other.request(Some(&sender), unknown_queue).await.unwrap();
    seen.error("SEND", response, ErrorCode::Auth);
    let short = Command::Send {
        sender_id: sid,
        body: vec![0; 100],
    };
    let response = other.request(Some(&sender), short).await.unwrap();
    seen.error("SEND", response, ErrorCode::MessageSize);
    for text in [b"one", b"two"] {
        let response = other.request(Some(&sender), send(text)).await.unwrap();
        assert_eq!(response, Response::Ok);
    }
    let response = other.request(Some(&sender), send(b"three")).await.unwrap();
    seen.error("SEND", response, ErrorCode::Quota);

    // SUB
    let sub = Command::Subscribe { recipient_id: rid };
    seen.auth_rule("SUB", other.request(None, sub.clone()).await.unwrap());
    let response = other.request(Some(&stranger()), sub).await.unwrap();
    seen.error("SUB", response, ErrorCode::Auth);

    // ACK: unsigned only on a session that proved the queue.
    let RelayFrame::Deliver(first) = next_event(&mut bob).await else {
        panic!("expected the first message");
    };
    let ack = |msg_id| Command::Ack {
        recipient_id: rid,
        msg_id,
    };
    seen.auth_rule("ACK", other.request(None, ack(first.msg_id)).await.unwrap());
    let response = other
        .request(Some(&stranger()), ack(first.msg_id))
        .await
        .unwrap();
    seen.error("ACK", response, ErrorCode::Auth);
    let response = bob.request(None, ack(MsgId([9; 16]))).await.unwrap();
    seen.error("ACK", response, ErrorCode::NoMessage);

    // GET, SUSPEND, DELETE, RESTRICT: required, and AUTH with another key.
    let recipient_commands = [
        ("GET", Command::Get { recipient_id: rid }),
        ("SUSPEND", Command::Suspend { recipient_id: rid }),
        ("DELETE", Command::Delete { recipient_id: rid }),
        (
            "RESTRICT",
            Command::Restrict {
                recipient_id: rid,
                forwarders: vec![],
            },
        ),
    ];
    for (name, command) in recipient_commands {
        seen.auth_rule(name, other.request(None, command.clone()).await.unwrap());
        let response = other.request(Some(&stranger()), command).await.unwrap();
        seen.error(name, response, ErrorCode::Auth);
    }
    let nine = Command::Restrict {
        recipient_id: rid,
        forwarders: (1..=9).map(foreign_key).collect(),
    };
    let response = bob.request(Some(&q.key), nine).await.unwrap();
    seen.error("RESTRICT", response, ErrorCode::Malformed);

    // The unauthenticated commands refuse an authenticator.
    let unauthenticated = [
        ("PING", Command::Ping),
        (
            "RELAY_INFO",
            Command::RelayInfo {
                relay: r1.address.clone(),
            },
        ),
        ("FORWARD", forward_command(&r1.address, garbage_envelope())),
        (
            "FORWARD_STATUS",
            Command::ForwardStatus {
                forward_id: MsgId([1; 16]),
                wait_secs: 0,
            },
        ),
    ];
    for (name, command) in unauthenticated {
        let response = other.request(Some(&stranger()), command).await.unwrap();
        seen.auth_rule(name, response.clone());
        seen.error(name, response, ErrorCode::Auth);
    }
    assert_alive(&other).await;

    // RELAY_INFO and FORWARD: nobody there, another key at this relay's own endpoint, an
    // envelope nobody can open (own key: processed here).
    let nobody = nobody_at(40);
    let response = relay_info(&other, &nobody).await;
    seen.error("RELAY_INFO", response, ErrorCode::Unreachable);
    let impostor = address_with_key(foreign_key(41), &r1.address);
    let response = relay_info(&other, &impostor).await;
    seen.error("RELAY_INFO", response, ErrorCode::KeyMismatch);
    let response = forward(&other, &impostor, garbage_envelope()).await;
    seen.error("FORWARD", response, ErrorCode::KeyMismatch);
    let response = forward(&other, &r1.address, garbage_envelope()).await;
    seen.error("FORWARD", response, ErrorCode::Envelope);
    let unknown_forward = Command::ForwardStatus {
        forward_id: MsgId([1; 16]),
        wait_secs: 0,
    };
    let response = other.request(None, unknown_forward).await.unwrap();
    seen.error("FORWARD_STATUS", response, ErrorCode::NoMessage);

    // R2: a create password and forwarding off.
    let r2 = RelayProcess::start(
        &dir.join("r2"),
        &["--create-password", "pw", "--forwarding", "off"],
    );
    let on_r2 = RelayConnection::connect(&r2.address).await.unwrap();
    let response = Owner::create_with_password(&on_r2, 5, false, None)
        .await
        .err()
        .unwrap();
    seen.error("CREATE", response, ErrorCode::CreateDenied);
    let response = relay_info(&on_r2, &r1.address).await;
    seen.error("RELAY_INFO", response, ErrorCode::ForwardDenied);
    let response = forward(&on_r2, &r1.address, garbage_envelope()).await;
    seen.error("FORWARD", response, ErrorCode::ForwardDenied);

    // R3: caps of one session.
    let r3_config = config(
        dir,
        "r3",
        "max_queues_per_session = 2\nmax_subscriptions_per_session = 1",
    );
    let r3 = RelayProcess::start(&dir.join("r3"), &["--config", &r3_config]);
    let on_r3 = RelayConnection::connect(&r3.address).await.unwrap();
    let _subscribed = Owner::create(&on_r3, 6, true).await;
    let second = Owner::create(&on_r3, 7, false).await;
    let response = Owner::create_with_password(&on_r3, 8, false, None)
        .await
        .err()
        .unwrap();
    seen.error("CREATE", response, ErrorCode::Limit);
    let sub = Command::Subscribe {
        recipient_id: second.created.recipient_id,
    };
    let response = on_r3.request(Some(&second.key), sub).await.unwrap();
    seen.error("SUB", response, ErrorCode::Limit);

    // R4 (a destination): one forward per peer session, no refill.
    let r4_config = config(
        dir,
        "r4",
        "peer_forward_burst = 1\npeer_forwards_per_sec = 0",
    );
    let r4 = RelayProcess::start(&dir.join("r4"), &["--config", &r4_config]);
    let on_r4 = RelayConnection::connect(&r4.address).await.unwrap();
    let q4 = Owner::create(&on_r4, 9, false).await;
    let sealing4 = sealing_key(relay_info(&other, &r4.address).await, &r4.address);
    let (env, _) = seal_send(&sealing4, q4.created.sender_id, b"first");
    assert!(matches!(
        forward(&other, &r4.address, env).await,
        Response::Forwarded(_)
    ));
    let (env, _) = seal_send(&sealing4, q4.created.sender_id, b"second");
    let response = forward(&other, &r4.address, env).await;
    seen.error("FORWARD", response, ErrorCode::RateLimited);

    // X: a destination that is down while R1 accepts forwards for it, then comes back
    // on the same port. One forward names X's key with an envelope X cannot open; one
    // names another key at X's endpoint.
    let x_dir = dir.join("x");
    let x = RelayProcess::start(&x_dir, &[]);
    let x_address = x.address.clone();
    let x_listen = format!("127.0.0.1:{}", x_address.endpoints()[0].port);
    x.kill();
    let bad_envelope = accepted(forward(&other, &x_address, garbage_envelope()).await);
    let x_impostor = address_with_key(foreign_key(42), &x_address);
    let wrong_key = accepted(forward(&other, &x_impostor, garbage_envelope()).await);
    let _x = RelayProcess::start(&x_dir, &["--listen", &x_listen]);
    let response = final_status(&other, bad_envelope).await;
    seen.error("FORWARD_STATUS", response, ErrorCode::Envelope);
    let response = final_status(&other, wrong_key).await;
    seen.error("FORWARD_STATUS", response, ErrorCode::KeyMismatch);

    // R5: its own clock, an outbox of one entry that expires after 60 s.
    let clock = dir.join("clock");
    std::fs::write(&clock, "1700000000").unwrap();
    let r5_config = config(
        dir,
        "r5",
        "max_outbox = 1\noutbox_ttl_secs = 60\nforward_retry_max_secs = 1",
    );
    let r5 = RelayProcess::start(
        &dir.join("r5"),
        &[
            "--forward-to-private",
            "--forward-retry-min-ms",
            "50",
            "--config",
            &r5_config,
            "--dangerous-clock-file",
            clock.to_str().unwrap(),
        ],
    );
    let on_r5 = RelayConnection::connect(&r5.address).await.unwrap();
    let down = nobody_at(43);
    let waiting = accepted(forward(&on_r5, &down, garbage_envelope()).await);
    let response = forward(&on_r5, &down, garbage_envelope()).await;
    seen.error("FORWARD", response, ErrorCode::OutboxFull);
    std::fs::write(&clock, "1700000120").unwrap();
    let response = final_status(&on_r5, waiting).await;
    seen.error("FORWARD_STATUS", response, ErrorCode::Expired);

    // Every row's auth rule held, and the codes seen are exactly the codes listed.
    let rows: BTreeSet<String> = table.keys().cloned().collect();
    assert_eq!(
        seen.auth_rule, rows,
        "the auth rule of every row was checked"
    );
    for (name, row) in &table {
        assert!(
            row.auth.starts_with("required") || row.auth.starts_with("absent"),
            "{name}: an auth rule this test does not know: {}",
            row.auth
        );
    }
    let listed: BTreeSet<(String, String)> = table
        .iter()
        .flat_map(|(name, row)| row.codes.iter().map(|c| (name.clone(), c.clone())))
        .collect();
    let missing: Vec<_> = listed.difference(&seen.codes).collect();
    let unlisted: Vec<_> = seen.codes.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "listed in §10.1, never produced: {missing:?}"
    );
    assert!(
        unlisted.is_empty(),
        "produced, not listed in §10.1: {unlisted:?}"
    );
    drop((r1, r2, r3, r4, r5));
}

// ---------------------------------------------------------------------------------------
// §8 / §10.2: ACK and DELETE from another session

/// An ACK from a second session of the recipient moves the subscriber on: the next
/// message is pushed to the session holding the subscription (§8, "acknowledged by any
/// session").
#[tokio::test]
async fn ack_from_another_session_pushes_the_next_message_to_the_subscriber() {
    let (_tmp, relay) = one_relay();
    let mut subscriber = RelayConnection::connect(&relay.address).await.unwrap();
    let second = RelayConnection::connect(&relay.address).await.unwrap();
    let q = Owner::create(&subscriber, 1, true).await;
    let rid = q.created.recipient_id;
    for text in [b"one", b"two"] {
        let send = Command::Send {
            sender_id: q.created.sender_id,
            body: body(text),
        };
        assert_eq!(second.request(None, send).await.unwrap(), Response::Ok);
    }
    let RelayFrame::Deliver(one) = next_event(&mut subscriber).await else {
        panic!("expected the first delivery");
    };
    assert_eq!(q.open(&one).body, body(b"one"));
    let ack = Command::Ack {
        recipient_id: rid,
        msg_id: one.msg_id,
    };
    assert_eq!(
        second.request(Some(&q.key), ack).await.unwrap(),
        Response::Ok
    );
    let RelayFrame::Deliver(two) = next_event(&mut subscriber).await else {
        panic!("expected the second delivery on the subscriber");
    };
    assert_eq!(q.open(&two).body, body(b"two"));
}

/// DELETE from another session ends the subscriber's subscription with
/// `SubscriptionEnded` (§8, §10.2).
#[tokio::test]
async fn delete_from_another_session_ends_the_subscription() {
    let (_tmp, relay) = one_relay();
    let mut subscriber = RelayConnection::connect(&relay.address).await.unwrap();
    let second = RelayConnection::connect(&relay.address).await.unwrap();
    let q = Owner::create(&subscriber, 1, true).await;
    let rid = q.created.recipient_id;
    let delete = Command::Delete { recipient_id: rid };
    assert_eq!(
        second.request(Some(&q.key), delete).await.unwrap(),
        Response::Ok
    );
    match next_event(&mut subscriber).await {
        RelayFrame::SubscriptionEnded { recipient_id } => assert_eq!(recipient_id, rid),
        other => panic!("expected SubscriptionEnded, got {other:?}"),
    }
    // The session itself goes on.
    assert_alive(&subscriber).await;
}

// ---------------------------------------------------------------------------------------
// §3 and §4: frames and hellos

/// A length prefix of 0 is not a frame: a `MALFORMED` notice, then the relay closes.
#[tokio::test]
async fn empty_frame_is_told_malformed_then_closed() {
    let (_tmp, relay) = one_relay();
    let mut conn = RelayConnection::connect(&relay.address).await.unwrap();
    conn.send_raw(vec![0, 0, 0, 0]).await.unwrap();
    assert_eq!(
        next_event(&mut conn).await,
        RelayFrame::Reply {
            corr: 0,
            response: Response::Error(ErrorCode::Malformed)
        }
    );
    assert_eq!(
        conn.next_event().await,
        None,
        "the relay closed the session"
    );
}

/// A frame with a wrong version byte after the hello: a `VERSION` notice, and the
/// session continues (§3).
#[tokio::test]
async fn wrong_version_byte_is_told_and_the_session_continues() {
    let (_tmp, relay) = one_relay();
    let mut conn = RelayConnection::connect(&relay.address).await.unwrap();
    let frame = petrel_federation::frame::encode(
        9,
        &petrel_federation::client::ClientFrame {
            corr: 5,
            auth: None,
            command: Command::Ping,
        },
    )
    .unwrap();
    conn.send_raw(frame).await.unwrap();
    assert_eq!(
        next_event(&mut conn).await,
        RelayFrame::Reply {
            corr: 0,
            response: Response::Error(ErrorCode::Version)
        }
    );
    assert_alive(&conn).await;
}

/// Sends `bytes` as the first frame of a client stream and reads the relay's hello answer.
async fn first_frame(relay: &RelayAddress, bytes: &[u8]) -> Option<RelayHello> {
    use petrel_federation::transport::{Keypair, Node};
    let node = Node::start(Keypair::generate_ed25519(), &[], Default::default())
        .await
        .unwrap();
    let peer = node.connect(relay).await.unwrap();
    let mut stream = node
        .open(peer, petrel_federation::client::PROTOCOL)
        .await
        .unwrap();
    stream.write_all(bytes).await.unwrap();
    stream.flush().await.unwrap();
    let answer =
        petrel_federation::transport::io::read_message::<RelayHello, _>(&mut stream, 1, 65_536)
            .await
            .ok();
    // After a Reject the relay closes the stream.
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
    assert!(rest.is_empty(), "nothing after the answer: {rest:?}");
    node.shutdown().await;
    answer
}

/// A first frame that is not a valid hello is answered `Reject(code)` (§3, §4).
#[tokio::test]
async fn bad_hellos_are_rejected_with_their_code() {
    let (_tmp, relay) = one_relay();
    let hello = ClientHello {
        min_version: 1,
        max_version: 1,
    };
    let mut other_version = petrel_federation::frame::encode(1, &hello).unwrap();
    other_version[4] = 2;
    assert_eq!(
        first_frame(&relay.address, &other_version).await,
        Some(RelayHello::Reject(ErrorCode::Version))
    );
    assert_eq!(
        first_frame(&relay.address, &[0, 0, 0, 0]).await,
        Some(RelayHello::Reject(ErrorCode::Malformed))
    );
    assert_eq!(
        first_frame(&relay.address, &[0, 0, 0, 2, 1, 0xff]).await,
        Some(RelayHello::Reject(ErrorCode::Malformed))
    );
    assert_eq!(
        first_frame(&relay.address, &[0xff, 0xff, 0xff, 0xff]).await,
        Some(RelayHello::Reject(ErrorCode::TooLarge))
    );
    // A good hello still works.
    let conn = RelayConnection::connect(&relay.address).await.unwrap();
    assert_alive(&conn).await;
}

// ---------------------------------------------------------------------------------------
// §14.2: the order of the forwarding rules

/// Without `--forward-to-private`: an address with this relay's own key is processed here
/// even though its endpoint is loopback (own key before the private rule); another key at
/// a loopback endpoint is `FORWARD_DENIED` before anything is dialled.
#[tokio::test]
async fn own_key_comes_before_the_private_rule() {
    let (_tmp, relay) = one_relay();
    let mut bob = RelayConnection::connect(&relay.address).await.unwrap();
    let alice = RelayConnection::connect(&relay.address).await.unwrap();
    let q = Owner::create(&bob, 1, true).await;
    let sealing = sealing_key(relay_info(&alice, &relay.address).await, &relay.address);
    let (env, opener) = seal_send(&sealing, q.created.sender_id, b"to myself");
    match forward(&alice, &relay.address, env).await {
        Response::Forwarded(sealed) => assert_eq!(opener.open(&sealed).unwrap(), Response::Ok),
        other => panic!("expected Forwarded, got {other:?}"),
    }
    let RelayFrame::Deliver(d) = next_event(&mut bob).await else {
        panic!("expected the delivery");
    };
    assert_eq!(q.open(&d).body, body(b"to myself"));

    let impostor = address_with_key(foreign_key(50), &relay.address);
    assert_eq!(
        relay_info(&alice, &impostor).await,
        Response::Error(ErrorCode::ForwardDenied)
    );
    assert_eq!(
        forward(&alice, &impostor, garbage_envelope()).await,
        Response::Error(ErrorCode::ForwardDenied)
    );
}

/// An authenticator on PING is `AUTH` and changes nothing: a signed PING with a valid
/// signature by any key is refused too.
#[tokio::test]
async fn signed_ping_is_refused_even_when_the_signature_is_valid() {
    let (_tmp, relay) = one_relay();
    let conn = RelayConnection::connect(&relay.address).await.unwrap();
    let key = SigningKey::from_bytes(&[4; 32]);
    let auth = Auth::sign(&key, &conn.session_id().0, &Command::Ping).unwrap();
    assert_eq!(
        conn.request_with_auth(Some(auth), Command::Ping)
            .await
            .unwrap(),
        Response::Error(ErrorCode::Auth)
    );
    assert_alive(&conn).await;
}
