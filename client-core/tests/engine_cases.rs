//! The engine's bugs that the property test (`engine_props.rs`) found, each as one fixed
//! scenario on the model network, so that each fails on its own if it comes back.
//!
//! - A request failed for want of a session, answered before the session's end is
//!   reported: the outbox resent at once, forever, with the clock standing still.
//! - A re-key code shown a second time before the first was answered replaced the first
//!   one's key, and the two sides' root keys split for good.
//! - During a queue rotation both queues were read at once, so messages sent to the new
//!   queue were shown before older ones still on their way to the old queue.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod engine_model;

use engine_model::{Net, profile};
use petrel_client::engine::{Connected, Event, Reply, Request};
use petrel_federation::RelayAddress;
use petrel_qr::Provenance;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const ALICE: usize = 0;
const BOB: usize = 1;

/// Alice pins r0 then r1, Bob r1 then r2; Alice invited Bob. Returns the relays.
fn alice_and_bob(seed: u64) -> (Net, Vec<RelayAddress>) {
    let mut net = Net::new(ChaCha8Rng::seed_from_u64(seed), 1_800_000_000_000);
    let r: Vec<RelayAddress> = (0..3).map(|i| net.add_relay(5000 + i)).collect();
    net.add_client(profile("alice", vec![r[0].clone(), r[1].clone()]));
    net.add_client(profile("bob", vec![r[1].clone(), r[2].clone()]));
    net.settle(1_000);
    net.pair(ALICE, BOB);
    (net, r)
}

fn send(net: &mut Net, from: usize, to: &str, text: &str) {
    let request = Request::Send {
        contact: to.into(),
        text: text.into(),
    };
    net.request(from, request);
}

#[test]
fn a_send_failed_before_its_sessions_end_is_reported_waits_for_the_next_session() {
    for seed in 0..8 {
        let (mut net, r) = alice_and_bob(seed);
        // Alice's session with her own relay ends; the model answers her next SEND (no
        // session) before it tells her engine the session ended, as a driver may.
        let id = net.clients[ALICE].sessions[r[0].key()];
        net.kill_session(id);
        let before = net.clients[ALICE].failed_answers;
        send(&mut net, ALICE, "bob", "after the cut");
        net.settle(5_000); // The settle budget panics if the engine resends without end.
        assert_eq!(net.shown(BOB, "alice"), ["after the cut"], "seed {seed}");
        assert_eq!(
            net.clients[ALICE].failed_answers - before,
            1,
            "seed {seed}: the SEND went again on the session known gone"
        );
    }
}

#[test]
fn a_rekey_code_shown_again_before_it_is_answered_is_the_same_code() {
    for seed in 0..4 {
        let (mut net, _) = alice_and_bob(seed);
        let show = |net: &mut Net| {
            let op = net.request(
                ALICE,
                Request::InviteRekey {
                    contact: "bob".into(),
                },
            );
            match net.take_done(ALICE, op) {
                Ok(Reply::Invitation(code)) => code,
                other => panic!("invite_rekey: {other:?}"),
            }
        };
        let first = show(&mut net);
        let scan = |net: &mut Net, code| {
            let op = net.request(
                BOB,
                Request::Connect {
                    invitation: code,
                    provenance: Provenance::Scanned,
                    alias: None,
                },
            );
            net.take_done(BOB, op)
        };
        match scan(&mut net, first.clone()) {
            Ok(Reply::Connected(Connected::Rekeyed { alias })) => assert_eq!(alias, "alice"),
            other => panic!("seed {seed}: rekey: {other:?}"),
        }
        // Shown again before Bob's answer arrived: the same key, not a new one.
        let again = show(&mut net);
        assert_eq!(again.dh_key, first.dh_key, "seed {seed}");
        assert!(
            scan(&mut net, again).is_err(),
            "seed {seed}: one re-key at a time"
        );
        net.settle(5_000);
        for n in 0..3 {
            send(&mut net, ALICE, "bob", &format!("a{n}"));
            net.settle(5_000);
            send(&mut net, BOB, "alice", &format!("b{n}"));
            net.settle(5_000);
        }
        assert_eq!(net.shown(BOB, "alice"), ["a0", "a1", "a2"], "seed {seed}");
        assert_eq!(net.shown(ALICE, "bob"), ["b0", "b1", "b2"], "seed {seed}");
        let dropped = net.clients.iter().flat_map(|c| &c.events).any(
            |e| matches!(e, Event::Notice(n) if n.contains("dropped") || n.contains("no code")),
        );
        assert!(!dropped, "seed {seed}: {}", net.report());
    }
}

#[test]
fn rekey_codes_shown_by_both_sides_are_answered_one_at_a_time() {
    let (mut net, _) = alice_and_bob(3);
    let mut codes = Vec::new();
    for (c, contact) in [(ALICE, "bob"), (BOB, "alice")] {
        let op = net.request(
            c,
            Request::InviteRekey {
                contact: contact.into(),
            },
        );
        match net.take_done(c, op) {
            Ok(Reply::Invitation(code)) => codes.push(code),
            other => panic!("invite_rekey: {other:?}"),
        }
    }
    // Each scans the other's code: the one that showed a code of its own waits for its
    // answer instead of leading a second re-key.
    for (c, code) in [(BOB, codes[0].clone()), (ALICE, codes[1].clone())] {
        let op = net.request(
            c,
            Request::Connect {
                invitation: code,
                provenance: Provenance::Scanned,
                alias: None,
            },
        );
        assert!(net.take_done(c, op).is_err(), "both re-keys were started");
    }
    net.settle(5_000);
    send(&mut net, ALICE, "bob", "still");
    net.settle(5_000);
    send(&mut net, BOB, "alice", "readable");
    net.settle(5_000);
    assert_eq!(net.shown(BOB, "alice"), ["still"]);
    assert_eq!(net.shown(ALICE, "bob"), ["readable"]);
}

#[test]
fn messages_keep_their_order_across_a_rotation_while_the_old_queue_is_unreachable() {
    for seed in 0..4 {
        let (mut net, r) = alice_and_bob(seed);
        let rotate = |net: &mut Net| {
            let op = net.request(
                BOB,
                Request::Rotate {
                    contact: "alice".into(),
                },
            );
            net.settle(5_000);
            assert!(
                matches!(net.take_done(BOB, op), Ok(Reply::Done)),
                "seed {seed}: rotate"
            );
            net.settle(5_000);
        };
        // Bob's queue for Alice moves from his own relay r1 to r2.
        rotate(&mut net);
        let queue = &net.engine_contact(BOB, "alice").inbound;
        assert_eq!(queue.len(), 1);
        assert_eq!(queue[0].relay.key(), r[2].key(), "seed {seed}");
        // r2 goes down with Alice's first messages on their way to it (held by r0).
        let r2 = *r[2].key();
        net.set_relay_up(r2, false);
        send(&mut net, ALICE, "bob", "1 before the switch");
        send(&mut net, ALICE, "bob", "2 before the switch");
        net.settle(2_000);
        // Bob rotates back to r1: Alice answers Switched into r2 (held too) and sends the
        // next messages to the new queue, which Bob can read at once.
        let op = net.request(
            BOB,
            Request::Rotate {
                contact: "alice".into(),
            },
        );
        net.settle(2_000);
        assert!(matches!(net.take_done(BOB, op), Ok(Reply::Done)));
        send(&mut net, ALICE, "bob", "3 after the switch");
        send(&mut net, ALICE, "bob", "4 after the switch");
        net.settle(2_000);
        assert_eq!(
            net.shown(BOB, "alice"),
            Vec::<String>::new(),
            "seed {seed}: the new queue was read before the old one ended"
        );
        net.set_relay_up(r2, true);
        net.settle(120_000);
        assert_eq!(
            net.shown(BOB, "alice"),
            [
                "1 before the switch",
                "2 before the switch",
                "3 after the switch",
                "4 after the switch"
            ],
            "seed {seed}\n{}",
            net.report()
        );
        let rotated = net.clients[BOB]
            .events
            .iter()
            .filter(|e| matches!(e, Event::RotationDone { .. }))
            .count();
        assert_eq!(rotated, 2, "seed {seed}");
        assert_eq!(net.engine_contact(BOB, "alice").inbound.len(), 1);
    }
}
