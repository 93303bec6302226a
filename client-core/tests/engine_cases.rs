//! The engine's bugs that the property test (`engine_props.rs`) found, each as one fixed
//! scenario on the model network, so that each fails on its own if it comes back.
//!
//! - A request failed for want of a session, answered before the session's end is
//!   reported: the outbox resent at once, forever, with the clock standing still.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod engine_model;

use engine_model::{Net, profile};
use petrel_client::engine::Request;
use petrel_federation::RelayAddress;
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
