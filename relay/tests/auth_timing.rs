//! AUTH failures take one path for "no such queue" and "wrong key" (issue 3, "Limits and
//! abuse"; `specs/protocol.md` §Command authentication).
//!
//! * Over a real relay process, on a raw session: every recipient command and SEND answer
//!   an unknown queue, a wrong key, and a missing signature with byte-identical frames.
//! * In process, against [`Relay::prepare`]: the medians of many interleaved timings of
//!   GET on an unknown queue and GET on an existing queue signed by a wrong key are within
//!   30% of each other. This is the one timing ratio the suite asserts, because the issue
//!   requires it; medians over interleaved samples keep it robust against a busy machine.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Owner, RawSession, RelayProcess, connect};
use ed25519_dalek::SigningKey;
use petrel_federation::client::{Command, RelayFrame, Response};
use petrel_federation::{Auth, ErrorCode, KeyHash, MsgId, QueueId, SessionId, frame};
use petrel_relay::clock::Clock;
use petrel_relay::config::{Config, Limits};
use petrel_relay::forward::ForwardingMode;
use petrel_relay::keys::RelayKeys;
use petrel_relay::metrics::Metrics;
use petrel_relay::service::{Prepared, Relay, SessionLimits};
use petrel_relay::store::Store;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SEED: u64 = 0x7065_7472_656c_0007;

/// The recipient commands, each naming `rid`.
fn recipient_commands(rid: QueueId) -> Vec<Command> {
    vec![
        Command::Get { recipient_id: rid },
        Command::Subscribe { recipient_id: rid },
        Command::Ack {
            recipient_id: rid,
            msg_id: MsgId([5; 16]),
        },
        Command::Secure {
            recipient_id: rid,
            sender_key_hash: KeyHash::of(&[9; 32]),
        },
        Command::Suspend { recipient_id: rid },
        Command::Delete { recipient_id: rid },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_queue_and_wrong_key_give_identical_error_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let relay = {
        let data = dir.path().join("data");
        tokio::task::spawn_blocking(move || RelayProcess::start(&data, &[]))
            .await
            .unwrap()
    };
    let conn = connect(&relay.address).await;
    let owner = Owner::create(&conn, 41, false).await;
    let sender = SigningKey::from_bytes(&[42; 32]);
    let secure = Command::Secure {
        recipient_id: owner.created.recipient_id,
        sender_key_hash: KeyHash::of(&sender.verifying_key().to_bytes()),
    };
    assert_eq!(
        conn.request(Some(&owner.key), secure).await.unwrap(),
        Response::Ok
    );
    let stranger = SigningKey::from_bytes(&[43; 32]);
    let unknown = QueueId([0x5a; 16]);

    let mut raw = RawSession::open(&relay.address).await;
    let version = raw.session.version as u8;
    const CORR: u32 = 4242;
    let expected = frame::encode(
        version,
        &RelayFrame::Reply {
            corr: CORR,
            response: Response::Error(ErrorCode::Auth),
        },
    )
    .unwrap();

    let known = recipient_commands(owner.created.recipient_id);
    let missing = recipient_commands(unknown);
    for (known, missing) in known.into_iter().zip(missing) {
        let name = known.name();
        let cases = [
            (
                "no such queue, signed by a stranger",
                Some(&stranger),
                missing.clone(),
            ),
            (
                "no such queue, signed by the owner",
                Some(&owner.key),
                missing.clone(),
            ),
            ("no such queue, unsigned", None, missing),
            ("existing queue, wrong key", Some(&stranger), known.clone()),
            ("existing queue, unsigned", None, known),
        ];
        let mut first: Option<Vec<u8>> = None;
        for (case, key, command) in cases {
            let bytes = raw.exchange(CORR, key, command).await;
            assert_eq!(bytes, expected, "{name}, {case}: not the AUTH frame");
            match &first {
                None => first = Some(bytes),
                Some(f) => assert_eq!(&bytes, f, "{name}, {case}: different bytes"),
            }
        }
        println!("{name}: every failure is {}", hex::encode(&expected));
    }

    // SEND: no such sender ID, a wrong key, no signature on a secured queue.
    let body = common::body(b"auth timing");
    let send = |sender_id| Command::Send {
        sender_id,
        body: body.clone(),
    };
    let sid = owner.created.sender_id;
    for (case, key, command) in [
        ("no such queue, signed", Some(&sender), send(unknown)),
        ("no such queue, unsigned", None, send(unknown)),
        ("secured queue, wrong key", Some(&stranger), send(sid)),
        ("secured queue, unsigned", None, send(sid)),
    ] {
        let bytes = raw.exchange(CORR, key, command).await;
        assert_eq!(bytes, expected, "SEND, {case}: different bytes");
    }

    // The owner and the sender still get through on the same session.
    let get = Command::Get {
        recipient_id: owner.created.recipient_id,
    };
    let reply = raw.exchange(7, Some(&owner.key), get).await;
    assert_eq!(
        frame::decode::<RelayFrame>(version, &reply).unwrap(),
        RelayFrame::Reply {
            corr: 7,
            response: Response::Empty
        }
    );
    let reply = raw.exchange(8, Some(&sender), send(sid)).await;
    assert_eq!(
        frame::decode::<RelayFrame>(version, &reply).unwrap(),
        RelayFrame::Reply {
            corr: 8,
            response: Response::Ok
        }
    );
    raw.close().await;
    conn.close().await;
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

#[tokio::test]
async fn missing_queue_and_wrong_key_cost_the_same() {
    const WARMUP: usize = 300;
    const SAMPLES: usize = 2000;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join(petrel_relay::STORE_FILE)).unwrap();
    let keys = RelayKeys {
        identity: SigningKey::from_bytes(&[71; 32]),
        sealing: x25519_dalek::StaticSecret::from([72; 32]),
    };
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        listen: Vec::new(),
        announce: Vec::new(),
        port: None,
        http: None,
        create_password: None,
        limits: Limits::default(),
        forwarding: ForwardingMode::Off,
        forward_to_private: false,
        clock: Clock::Fixed(1_700_000_000),
    };
    let relay = Arc::new(Relay::new(store, keys, config, Metrics::new()));
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let session_id = SessionId([73; 32]);
    let mut limits = SessionLimits::default();

    // The queue, created through the service like any other.
    let owner = SigningKey::from_bytes(&[74; 32]);
    let dh = x25519_dalek::StaticSecret::from([75; 32]);
    let create = Command::Create {
        recipient_key: owner.verifying_key().to_bytes(),
        recipient_dh: x25519_dalek::PublicKey::from(&dh).to_bytes(),
        subscribe: false,
        password: None,
    };
    let auth = Auth::sign(&owner, &session_id.0, &create).unwrap();
    let origin = relay.direct_origin();
    let rid = match relay.prepare(&mut limits, &session_id, Some(&auth), create, &origin) {
        Prepared::Pending(fut) => match fut.await.response {
            Response::Created(c) => c.recipient_id,
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    // Other queues around it, so lookups walk a real tree; created together, so they share
    // a few group commits.
    let mut creates = Vec::new();
    for _ in 0..2000 {
        let key = SigningKey::from_bytes(&rng.random());
        let dh = x25519_dalek::StaticSecret::from(rng.random::<[u8; 32]>());
        let create = Command::Create {
            recipient_key: key.verifying_key().to_bytes(),
            recipient_dh: x25519_dalek::PublicKey::from(&dh).to_bytes(),
            subscribe: false,
            password: None,
        };
        let auth = Auth::sign(&key, &session_id.0, &create).unwrap();
        let mut fresh = SessionLimits::default();
        match relay.prepare(&mut fresh, &session_id, Some(&auth), create, &origin) {
            Prepared::Pending(fut) => creates.push(fut),
            other => panic!("{other:?}"),
        }
    }
    for outcome in futures::future::join_all(creates).await {
        assert!(matches!(outcome.response, Response::Created(_)));
    }

    let stranger = SigningKey::from_bytes(&[76; 32]);
    // Signing happens outside the timed call; only `prepare` is timed.
    let mut timed = |rid: QueueId, key: Option<&SigningKey>| -> Duration {
        let command = Command::Get { recipient_id: rid };
        let auth = key.map(|k| Auth::sign(k, &session_id.0, &command).unwrap());
        let start = Instant::now();
        let prepared = relay.prepare(&mut limits, &session_id, auth.as_ref(), command, &origin);
        let elapsed = start.elapsed();
        match prepared {
            Prepared::Reply(Response::Error(ErrorCode::Auth)) => {}
            other => panic!("expected AUTH, got {other:?}"),
        }
        elapsed
    };
    let mut missing = Vec::with_capacity(SAMPLES);
    let mut wrong = Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        // Interleaved, in a random order within each pair, so drift and bursts of load
        // fall on both cases alike.
        let unknown = QueueId::random(&mut rng);
        let (m, w) = if rng.random_bool(0.5) {
            let m = timed(unknown, Some(&stranger));
            (m, timed(rid, Some(&stranger)))
        } else {
            let w = timed(rid, Some(&stranger));
            (timed(unknown, Some(&stranger)), w)
        };
        if i >= WARMUP {
            missing.push(m);
            wrong.push(w);
        }
    }
    // For scale only (not asserted): a GET without a signature stops before the signature
    // check, so this shows what a skipped verification would look like.
    let mut unsigned: Vec<Duration> = (0..SAMPLES / 4).map(|_| timed(rid, None)).collect();

    let (m, w) = (median(&mut missing), median(&mut wrong));
    let ratio = m.as_secs_f64() / w.as_secs_f64();
    println!(
        "GET AUTH failure, median of {SAMPLES} interleaved tries each: no such queue {m:?}, \
         wrong key {w:?}, ratio {ratio:.3} (for scale: unsigned GET {:?})",
        median(&mut unsigned)
    );
    assert!(
        (0.77..=1.3).contains(&ratio),
        "no such queue {m:?} vs wrong key {w:?}: ratio {ratio:.3} outside 0.77..1.3"
    );
}
