//! The engine's property test: three profiles on three model relays pair by invitation,
//! then a seeded schedule interleaves sends, frames in every order, killed sessions,
//! relay restarts, duplicated pushes, forced and periodic rotations and re-keys. When the
//! network heals, every message sent is shown exactly once, in order, to its recipient,
//! and every one of them is confirmed by a receipt.
//!
//! 20 seeds × 520 steps = 10,400 seeded steps in the suite (about 7 s in a debug build).
//! A failure prints its seed and the end state of every profile and relay;
//! `PETREL_ENGINE_SEED=N` replays one seed alone, and `PETREL_ENGINE_TRACE=1` (with
//! `--nocapture`) prints every step of it. A network that does not settle fails within
//! `engine_model::SETTLE_BUDGET` steps, showing what it keeps doing, instead of hanging.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod engine_model;

use engine_model::{Net, profile};
use petrel_client::engine::{Event, OpId, Reply, Request};
use petrel_federation::RelayAddress;
use petrel_qr::Provenance;
use rand::{RngExt as _, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

const SEEDS: u64 = 20;
const STEPS: usize = 520;
const NAMES: [&str; 3] = ["alice", "bob", "carol"];

/// One seed's whole run; returns how many messages were sent.
fn run(seed: u64) -> usize {
    let mut net = Net::new(ChaCha8Rng::seed_from_u64(seed), 1_800_000_000_000);
    let r: Vec<RelayAddress> = (0..3).map(|i| net.add_relay(5000 + i)).collect();
    let pins = [
        vec![r[0].clone(), r[1].clone()],
        vec![r[1].clone(), r[2].clone()],
        vec![r[2].clone(), r[0].clone()],
    ];
    for (name, relays) in NAMES.iter().zip(pins) {
        net.add_client(profile(name, relays));
    }
    net.settle(1_000);
    net.pair(0, 1);
    net.pair(1, 2);
    net.pair(2, 0);

    // (from, to) → texts sent, in order; send op → (from, to, text).
    let mut sent: BTreeMap<(usize, usize), Vec<String>> = BTreeMap::new();
    let mut ops: BTreeMap<(usize, OpId), (usize, String)> = BTreeMap::new();
    let mut down: Option<petrel_federation::RelayKey> = None;
    let mut counter = 0;
    for _ in 0..STEPS {
        let roll = net.rng.random_range(0..100u32);
        match roll {
            0..=44 => {
                if !net.step() {
                    net.advance(500);
                }
            }
            45..=64 => {
                let from = net.rng.random_range(0..3usize);
                let to = (from + net.rng.random_range(1..3usize)) % 3;
                counter += 1;
                let text = format!("m{seed}-{counter} {}→{}", NAMES[from], NAMES[to]);
                let op = net.request(
                    from,
                    Request::Send {
                        contact: NAMES[to].into(),
                        text: text.clone(),
                    },
                );
                sent.entry((from, to)).or_default().push(text.clone());
                ops.insert((from, op), (to, text));
            }
            65..=74 => {
                let ms = net.rng.random_range(1..3_000);
                net.advance(ms)
            }
            75..=79 => {
                let ids: Vec<u64> = net.sessions.keys().copied().collect();
                if !ids.is_empty() {
                    let id = ids[net.rng.random_range(0..ids.len())];
                    net.kill_session(id);
                }
            }
            80..=83 => match down.take() {
                Some(key) => net.set_relay_up(key, true),
                None => {
                    let keys: Vec<_> = net.relays.keys().copied().collect();
                    let key = keys[net.rng.random_range(0..keys.len())];
                    net.set_relay_up(key, false);
                    down = Some(key);
                }
            },
            84..=87 => {
                let ids: Vec<u64> = net.sessions.keys().copied().collect();
                if !ids.is_empty() {
                    let id = ids[net.rng.random_range(0..ids.len())];
                    let relay_key = net.sessions[&id].relay;
                    let mut relay = net.relays.remove(&relay_key).unwrap();
                    let mut outs = Vec::new();
                    relay.repush(id, &mut outs);
                    net.relays.insert(relay_key, relay);
                    net.route_pushes(outs);
                }
            }
            88..=90 => {
                let from = net.rng.random_range(0..3usize);
                let to = (from + net.rng.random_range(1..3usize)) % 3;
                let op = net.request(
                    from,
                    Request::Rotate {
                        contact: NAMES[to].into(),
                    },
                );
                let _ = op; // Busy and unreachable relays are fine answers.
            }
            91..=92 => {
                // A re-key by a fresh code, shown by `from`, scanned by `to`.
                let from = net.rng.random_range(0..3usize);
                let to = (from + net.rng.random_range(1..3usize)) % 3;
                let op = net.request(
                    from,
                    Request::InviteRekey {
                        contact: NAMES[to].into(),
                    },
                );
                if let Some(Ok(Reply::Invitation(code))) = net.clients[from].done.remove(&op) {
                    net.request(
                        to,
                        Request::Connect {
                            invitation: code,
                            provenance: Provenance::Scanned,
                            alias: None,
                        },
                    );
                }
            }
            93..=95 => {
                // Ten to thirty minutes pass at once: rotations fall due.
                let ms = net.rng.random_range(600_000..1_800_000);
                net.jump(ms)
            }
            _ => {
                for _ in 0..20 {
                    net.step();
                }
            }
        }
    }

    // Heal: every relay up, time enough for backoffs, forwards, receipts and rotations.
    if let Some(key) = down.take() {
        net.set_relay_up(key, true);
    }
    for _ in 0..4 {
        net.settle(120_000);
    }

    let mut total = 0;
    for ((from, to), texts) in &sent {
        let shown = net.shown(*to, NAMES[*from]);
        assert_eq!(
            &shown,
            texts,
            "seed {seed}: {} → {}: shown ≠ sent\n{}",
            NAMES[*from],
            NAMES[*to],
            net.report()
        );
        total += texts.len();
    }
    // Every send finished, and every message sent was confirmed by a receipt.
    for ((from, op), (to, text)) in &ops {
        let seq = match net.clients[*from].done.get(op) {
            Some(Ok(Reply::Sent { seq, .. })) => *seq,
            other => panic!(
                "seed {seed}: send of {text:?} ended {other:?}\n{}",
                net.report()
            ),
        };
        let confirmed = net.clients[*from].events.iter().any(|e| {
            matches!(e, Event::Delivered { contact, seqs } if contact == NAMES[*to] && seqs.contains(&seq))
        });
        assert!(
            confirmed,
            "seed {seed}: no receipt for {text:?}\n{}",
            net.report()
        );
    }
    // Nothing is left in any outbox or queue.
    for c in &net.clients {
        let state = c.engine.outbox_state();
        assert_eq!(
            state.waiting + state.at_relay,
            0,
            "seed {seed}: {} outbox {state:?}\n{}",
            c.name,
            net.report()
        );
    }
    let left: usize = net.relays.values().map(|r| r.queued_messages()).sum();
    assert_eq!(
        left,
        0,
        "seed {seed}: messages left at relays\n{}",
        net.report()
    );
    total
}

#[test]
fn three_profiles_see_every_message_once_in_order_through_faults() {
    let seeds: Vec<u64> = match std::env::var("PETREL_ENGINE_SEED") {
        Ok(s) => vec![s.parse().expect("PETREL_ENGINE_SEED is a number")],
        Err(_) => (1..=SEEDS).collect(),
    };
    let mut messages = 0;
    for seed in &seeds {
        messages += run(*seed);
    }
    println!(
        "{} seeds × {STEPS} steps, {messages} messages, all shown once in order",
        seeds.len()
    );
    assert!(
        messages > seeds.len() * 50,
        "too few messages to mean anything"
    );
}
