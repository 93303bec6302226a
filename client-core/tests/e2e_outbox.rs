//! The persistent outbox against real relay processes that go away and come back: a
//! message sent while the sender's own relay is down waits in the encrypted store and is
//! sent by the next sync; a message whose destination relay is down waits in the
//! forwarding relay's outbox; each arrives exactly once, in order. And the profile option
//! that makes contacts reach it only through its pinned relays (RESTRICT + `direct`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Relay;
use petrel_client::client::{Client, Clock, Connected, Event, Sent};
use petrel_client::profile::{Profile, Profiles};
use petrel_client::store::{KdfParams, Store};
use petrel_federation::RelayAddress;
use std::path::Path;
use std::time::Duration;

fn store(dir: &Path, name: &str, relay: &RelayAddress) -> Store {
    store_with(dir, name, relay, false)
}

fn store_with(dir: &Path, name: &str, relay: &RelayAddress, require_pinned: bool) -> Store {
    let store = Store::open(
        &dir.join(format!("{name}.redb")),
        b"pw",
        KdfParams::DANGEROUS_TESTING,
        &mut rand::rng(),
    )
    .unwrap();
    Profiles::new(&store)
        .create(
            &mut rand::rng(),
            Profile {
                name: name.into(),
                display_name: name.into(),
                bio: None,
                relays: vec![relay.clone()],
                require_pinned_forwarding: require_pinned,
                rotation_secs: 7 * 24 * 3600,
            },
        )
        .unwrap();
    store
}

fn profile(store: &Store, name: &str) -> Profile {
    Profiles::new(store).get(name).unwrap()
}

fn texts(events: Vec<Event>) -> Vec<String> {
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::Message { text, .. } => Some(text),
            _ => None,
        })
        .collect()
}

/// Syncs until `n` texts arrived (each sync waits for a first push when none is there).
async fn receive(client: &mut Client<'_>, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..20 {
        client
            .sync(&mut rand::rng(), Some(Duration::from_secs(5)))
            .await
            .unwrap();
        got.extend(texts(client.take_events()));
        if got.len() >= n {
            break;
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_survives_relays_going_away() {
    let dir = tempfile::tempdir().unwrap();
    let mut r1 = Relay::start(&dir.path().join("r1"), "127.0.0.1:0");
    let mut r2 = Relay::start(&dir.path().join("r2"), "127.0.0.1:0");
    let alice_store = store(dir.path(), "alice", &r1.address());
    let bob_store = store(dir.path(), "bob", &r2.address());
    let mut rng = rand::rng();

    // Pairing through the library API.
    let mut bob = Client::new(&bob_store, profile(&bob_store, "bob"), Clock::default());
    let invitation = bob.invite(&mut rng, Some("alice".into())).await.unwrap();
    let mut alice = Client::new(
        &alice_store,
        profile(&alice_store, "alice"),
        Clock::default(),
    );
    let connected = alice
        .connect(
            &mut rng,
            &invitation,
            petrel_qr::Provenance::Pasted,
            Some("bob".into()),
        )
        .await
        .unwrap();
    assert!(matches!(
        connected,
        Connected::Contact {
            delivered: true,
            ..
        }
    ));
    bob.sync(&mut rng, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(bob.take_events().contains(&Event::Connected {
        contact: "alice".into()
    }));
    alice
        .sync(&mut rng, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(alice.take_events().contains(&Event::Connected {
        contact: "bob".into()
    }));
    alice.close().await;

    // Alice's own relay is down: the message waits in her store.
    let r1_listen = r1.listen();
    r1.kill();
    let mut alice = Client::new(
        &alice_store,
        profile(&alice_store, "alice"),
        Clock::default(),
    );
    assert_eq!(
        alice.send_text(&mut rng, "bob", "one").await.unwrap(),
        Sent::Queued
    );
    assert_eq!(
        alice.send_text(&mut rng, "bob", "two").await.unwrap(),
        Sent::Queued
    );
    assert_eq!(alice.outbox_len().unwrap(), 2);
    alice.close().await;

    // It comes back (same identity, same port): the next sync sends both, in order.
    let _r1 = Relay::start(&dir.path().join("r1"), &r1_listen);
    let mut alice = Client::new(
        &alice_store,
        profile(&alice_store, "alice"),
        Clock::default(),
    );
    alice.sync(&mut rng, None).await.unwrap();
    assert_eq!(alice.outbox_len().unwrap(), 0);
    bob.close().await;
    let mut bob = Client::new(&bob_store, profile(&bob_store, "bob"), Clock::default());
    assert_eq!(receive(&mut bob, 2).await, ["one", "two"]);

    // Bob's relay is down: Alice's relay keeps the message in its forwarding outbox.
    bob.close().await;
    let r2_listen = r2.listen();
    r2.kill();
    let sent = alice.send_text(&mut rng, "bob", "three").await.unwrap();
    assert_eq!(sent, Sent::AtRelay);
    let _r2 = Relay::start(&dir.path().join("r2"), &r2_listen);
    let mut bob = Client::new(&bob_store, profile(&bob_store, "bob"), Clock::default());
    assert_eq!(receive(&mut bob, 1).await, ["three"]);
    // Nothing more arrives: each message was shown once.
    bob.sync(&mut rng, None).await.unwrap();
    assert!(texts(bob.take_events()).is_empty());
    let contact = bob.contact("alice").unwrap();
    let history: Vec<String> = bob
        .messages(&contact)
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(history, ["one", "two", "three"]);
    // Alice learns how the forward ended and marks the messages delivered on the receipt.
    alice
        .sync(&mut rng, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(alice.outbox_len().unwrap(), 0);
    let bob_contact = alice.contact("bob").unwrap();
    let delivered = alice
        .messages(&bob_contact)
        .unwrap()
        .iter()
        .filter(|m| m.delivered)
        .count();
    assert!(delivered >= 2, "receipts: {delivered} of 3 delivered");
    alice.close().await;
    bob.close().await;
}

/// Bob's profile requires contacts to reach him only through his pinned relays: his
/// queues are RESTRICTed to them and Alice is told to send directly. A SEND forwarded
/// through Alice's own relay is refused by Bob's relay; Alice's client never tries that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_only_profile_is_reached_directly() {
    let dir = tempfile::tempdir().unwrap();
    let r1 = Relay::start(&dir.path().join("r1"), "127.0.0.1:0");
    let r2 = Relay::start(&dir.path().join("r2"), "127.0.0.1:0");
    let alice_store = store(dir.path(), "alice", &r1.address());
    let bob_store = store_with(dir.path(), "bob", &r2.address(), true);
    let mut rng = rand::rng();
    let mut bob = Client::new(&bob_store, profile(&bob_store, "bob"), Clock::default());
    let invitation = bob.invite(&mut rng, Some("alice".into())).await.unwrap();
    let mut alice = Client::new(
        &alice_store,
        profile(&alice_store, "alice"),
        Clock::default(),
    );
    alice
        .connect(
            &mut rng,
            &invitation,
            petrel_qr::Provenance::Scanned,
            Some("bob".into()),
        )
        .await
        .unwrap();
    bob.sync(&mut rng, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    alice
        .sync(&mut rng, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    let target = alice.contact("bob").unwrap().outbound;
    assert!(target.direct, "Bob's reply did not ask for direct sends");

    // Alice's messages arrive (sent straight to R2).
    assert_eq!(
        alice.send_text(&mut rng, "bob", "direct").await.unwrap(),
        Sent::Stored
    );
    assert_eq!(receive(&mut bob, 1).await, ["direct"]);

    // The same SEND, forwarded through R1 instead, is refused by R2.
    let mut forwarded = target.clone();
    forwarded.direct = false;
    let mut relays = petrel_client::net::Relays::new();
    let body = petrel_federation::padding::pad(b"via R1", 2048).unwrap();
    let now = Clock::default().network_now();
    let refused = relays
        .send(&mut rng, &r1.address(), &forwarded, true, body, now)
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(petrel_federation::ErrorCode::Auth),
        "{refused}"
    );
    relays.close().await;
    bob.sync(&mut rng, None).await.unwrap();
    assert!(texts(bob.take_events()).is_empty());
    alice.close().await;
    bob.close().await;
}
