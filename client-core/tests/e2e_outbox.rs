//! The persistent outbox against real relay processes that go away and come back, driven
//! through the `petrel` CLI with no `petrel serve` running (each command runs the engine
//! in its own process): a message sent while the sender's own relay is down waits in the
//! encrypted store and is sent by the next command; so does one whose destination relay is
//! down (a one-shot command does not know that relay's sealing key; `petrel serve` keeps
//! it and hands such messages to the forwarding relay's outbox, which `e2e_serve.rs`
//! exercises by killing the destination relay mid-stream); each arrives exactly once, in
//! order, with its receipt. And
//! the profile option that makes contacts reach it only through its pinned relays
//! (RESTRICT + `direct`): a SEND forwarded through another relay is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{PASSPHRASE, Relay, petrel_run as petrel};
use petrel_client::contact::{CONTACTS, Contact};
use petrel_client::store::{KdfParams, Store};
use petrel_federation::client::{Command as RelayCommand, Response};
use petrel_federation::seal::{EnvelopeKey, ForwardedRequest};
use petrel_federation::transport::connection::RelayConnection;
use petrel_federation::{Auth, ErrorCode};
use std::path::Path;

/// What `sync --wait` may wait for a message still in a forwarding relay's outbox.
const SYNC_WAIT: &str = "20";

fn create_profile(home: &Path, name: &str, relay: &str, extra: &[&str]) {
    let mut args = vec!["profile", "create", name, "--relay", relay];
    args.extend_from_slice(extra);
    petrel(home, &args);
}

/// Bob invites, Alice pastes the link, both sync until each sees the other connected.
fn pair(alice: &Path, bob: &Path) {
    let (stdout, _) = petrel(bob, &["invite", "--alias", "alice", "--no-terminal"]);
    let link = stdout
        .split_whitespace()
        .find(|w| w.starts_with("PETREL:"))
        .unwrap_or_else(|| panic!("no link in {stdout:?}"))
        .to_string();
    petrel(alice, &["connect", &link, "--alias", "bob"]);
    let (_, bob_err) = petrel(bob, &["sync", "--wait", SYNC_WAIT]);
    assert!(bob_err.contains("connected with"), "bob sync: {bob_err}");
    let (_, alice_err) = petrel(alice, &["sync", "--wait", SYNC_WAIT]);
    assert!(
        alice_err.contains("connected with"),
        "alice sync: {alice_err}"
    );
}

/// Syncs (waiting for news) until `n` message lines were printed; returns them.
fn receive(home: &Path, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..10 {
        let (stdout, _) = petrel(home, &["sync", "--wait", SYNC_WAIT]);
        got.extend(stdout.lines().map(str::to_string));
        if got.len() >= n {
            break;
        }
    }
    got
}

fn history(home: &Path, contact: &str) -> Vec<serde_json::Value> {
    let (stdout, _) = petrel(home, &["history", contact, "--json"]);
    match serde_json::from_str(&stdout).unwrap() {
        serde_json::Value::Array(rows) => rows,
        other => panic!("history --json is not a list: {other}"),
    }
}

fn texts(rows: &[serde_json::Value]) -> Vec<&str> {
    rows.iter().map(|m| m["text"].as_str().unwrap()).collect()
}

fn outbox_waiting(home: &Path) -> u64 {
    let (stdout, _) = petrel(home, &["relay", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    status["outbox"]["waiting"]
        .as_u64()
        .unwrap_or_else(|| panic!("no outbox count in {status}"))
}

#[test]
fn outbox_survives_relays_going_away() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut r1 = Relay::start(&root.join("r1"), "127.0.0.1:0");
    let mut r2 = Relay::start(&root.join("r2"), "127.0.0.1:0");
    let (alice, bob) = (root.join("alice"), root.join("bob"));
    create_profile(&alice, "alice", &r1.address().to_string(), &[]);
    create_profile(&bob, "bob", &r2.address().to_string(), &[]);
    pair(&alice, &bob);

    // Alice's own relay is down: each message waits in her store, and she is told so.
    let r1_listen = r1.listen();
    r1.kill();
    for text in ["one", "two"] {
        let (_, stderr) = petrel(&alice, &["send", "bob", text]);
        assert!(stderr.contains("queued"), "send {text}: {stderr}");
    }
    assert_eq!(outbox_waiting(&alice), 2);
    let (_, stderr) = petrel(&alice, &["sync"]);
    assert!(stderr.contains("2 message(s) wait"), "{stderr}");

    // It comes back (same identity, same port): the next sync sends both, in order.
    let _r1 = Relay::start(&root.join("r1"), &r1_listen);
    petrel(&alice, &["sync"]);
    assert_eq!(outbox_waiting(&alice), 0);
    assert_eq!(receive(&bob, 2), ["alice: one", "alice: two"]);

    // Bob's relay is down. A one-shot command starts without Bob's relay's sealing key
    // (it is not kept in the store), and Alice's relay cannot fetch it: the message waits
    // in Alice's outbox, and she is told which relay is missing.
    let r2_listen = r2.listen();
    r2.kill();
    let (_, stderr) = petrel(&alice, &["send", "bob", "three"]);
    assert!(stderr.contains("queued"), "{stderr}");
    assert!(
        stderr.contains("cannot reach the contact's relay"),
        "{stderr}"
    );
    assert_eq!(outbox_waiting(&alice), 1);
    let _r2 = Relay::start(&root.join("r2"), &r2_listen);
    petrel(&alice, &["sync"]);
    assert_eq!(outbox_waiting(&alice), 0);
    assert_eq!(receive(&bob, 1), ["alice: three"]);

    // Nothing more arrives: each message was shown once, and the history has each once.
    let (stdout, _) = petrel(&bob, &["sync"]);
    assert_eq!(stdout, "", "shown again");
    assert_eq!(texts(&history(&bob, "alice")), ["one", "two", "three"]);
    // Alice's next sync reads Bob's receipts: every message is marked delivered.
    let rows = receive_receipts(&alice, 3);
    assert_eq!(texts(&rows), ["one", "two", "three"]);
}

/// Syncs Alice until `n` of her messages are marked delivered; returns her history.
fn receive_receipts(home: &Path, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..10 {
        let rows = history(home, "bob");
        if rows.iter().filter(|m| m["delivered"] == true).count() >= n {
            return rows;
        }
        petrel(home, &["sync", "--wait", SYNC_WAIT]);
    }
    panic!("receipts never arrived: {:?}", history(home, "bob"));
}

/// Bob's profile requires contacts to reach him only through his pinned relays: his
/// queues are RESTRICTed to them and Alice is told to send directly. A SEND forwarded
/// through Alice's own relay is refused by Bob's relay; Alice's client never tries that.
#[test]
fn pinned_only_profile_is_reached_directly() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let r1 = Relay::start(&root.join("r1"), "127.0.0.1:0");
    let r2 = Relay::start(&root.join("r2"), "127.0.0.1:0");
    let (alice, bob) = (root.join("alice"), root.join("bob"));
    create_profile(&alice, "alice", &r1.address().to_string(), &[]);
    create_profile(
        &bob,
        "bob",
        &r2.address().to_string(),
        &["--require-pinned-forwarding"],
    );
    pair(&alice, &bob);

    // Alice's client was told to send straight to R2, and does.
    let target = {
        let store = Store::open(
            &alice.join("petrel.redb"),
            PASSPHRASE.as_bytes(),
            KdfParams::DANGEROUS_TESTING,
            &mut rand::rng(),
        )
        .unwrap();
        let contacts = store.list::<Contact>(CONTACTS).unwrap();
        assert_eq!(contacts.len(), 1);
        contacts.into_iter().next().unwrap().1.outbound
    };
    assert!(target.direct, "Bob's reply did not ask for direct sends");
    assert_eq!(target.relay.key(), r2.address().key());
    let (_, stderr) = petrel(&alice, &["send", "bob", "direct"]);
    assert_eq!(stderr.trim(), "sent", "{stderr}");
    assert_eq!(receive(&bob, 1), ["alice: direct"]);

    // The same SEND, sealed and forwarded through R1 instead, is refused by R2.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let refused = runtime.block_on(async {
        let conn = RelayConnection::connect(&r1.address()).await.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let info = match conn
            .request(
                None,
                RelayCommand::RelayInfo {
                    relay: r2.address(),
                },
            )
            .await
            .unwrap()
        {
            Response::RelayInfo(info) => info,
            other => panic!("RELAY_INFO: {other:?}"),
        };
        let sealing = info.verify(r2.address().key(), now).unwrap().sealing_key;
        let send = RelayCommand::Send {
            sender_id: target.sender_id,
            body: petrel_federation::padding::pad(b"via R1", 2048).unwrap(),
        };
        let ephemeral = EnvelopeKey::generate(&mut rand::rng());
        let signer = ed25519_dalek::SigningKey::from_bytes(&target.sender_key);
        let auth = Auth::sign(&signer, &ephemeral.public(), &send).unwrap();
        let request = ForwardedRequest {
            sent_at: now,
            auth: Some(auth),
            command: send,
        };
        let (envelope, opener) = ephemeral.seal(&sealing, &request).unwrap();
        let forward = RelayCommand::Forward {
            destination: r2.address(),
            envelope,
        };
        let answer = match conn.request(None, forward).await.unwrap() {
            Response::Forwarded(sealed) => opener.open(&sealed).unwrap(),
            other => panic!("FORWARD to a reachable relay: {other:?}"),
        };
        conn.close().await;
        answer
    });
    assert!(
        matches!(&refused, Response::Error(code) if *code == ErrorCode::Auth),
        "R2 answered the forwarded SEND with {refused:?}"
    );
    let (stdout, _) = petrel(&bob, &["sync"]);
    assert_eq!(stdout, "", "the forwarded SEND reached Bob");
}
