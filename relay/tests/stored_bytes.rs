//! What a relay keeps on disk (issue 3, "What is stored").
//!
//! A real relay process gets queues with known recipient keys (Ed25519 and X25519), a
//! known sender key, and messages whose padded bodies carry distinctive random markers.
//! Some messages are ACKed, some are left, one queue is deleted. After SIGTERM every file in
//! the data directory except the two relay secrets is scanned byte by byte: no queue public
//! key (raw or hex), no per-queue relay DH key, no marker, and not the creation password may
//! appear. Queue IDs may: they key the tables, and the scan must find them (a positive
//! control on the real store file), as it must find every needle planted in a file the
//! test writes itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Owner, RelayProcess, connect};
use petrel_federation::client::{Command, RelayFrame, Response};
use petrel_federation::delivery::DeliveryKind;
use petrel_federation::transport::connection::RelayConnection;
use petrel_federation::{KeyHash, padding};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const SEED: u64 = 0x7065_7472_656c_0005;
const PASSWORD: &str = "stored-bytes-password-5b0e9c1d7a3f";
const QUEUES: usize = 3;
const MESSAGES: usize = 5;
/// Messages ACKed per queue (the rest stay stored).
const ACKED: usize = 2;

/// A named byte string that must not (or must) be found.
struct Needle {
    name: String,
    bytes: Vec<u8>,
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Every offset at which `needle` occurs in `haystack`.
fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    assert!(!needle.is_empty());
    let first = needle[0];
    let mut hits = Vec::new();
    let last_start = haystack.len().saturating_sub(needle.len());
    let mut i = 0;
    while i <= last_start && haystack.len() >= needle.len() {
        match haystack[i..=last_start].iter().position(|&b| b == first) {
            None => break,
            Some(p) => {
                let at = i + p;
                if &haystack[at..at + needle.len()] == needle {
                    hits.push(at);
                }
                i = at + 1;
            }
        }
    }
    hits
}

/// (file, needle name, offsets) for every needle found in the files.
fn scan(files: &[PathBuf], needles: &[Needle]) -> Vec<(PathBuf, String, Vec<usize>)> {
    let mut found = Vec::new();
    for file in files {
        let bytes = std::fs::read(file).unwrap();
        for needle in needles {
            let hits = find_all(&bytes, &needle.bytes);
            if !hits.is_empty() {
                found.push((file.clone(), needle.name.clone(), hits));
            }
        }
    }
    found
}

fn needle(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Needle {
    Needle {
        name: name.into(),
        bytes: bytes.into(),
    }
}

fn with_hex(needles: &mut Vec<Needle>, name: &str, key: [u8; 32]) {
    needles.push(needle(name, key));
    needles.push(needle(format!("{name} (hex)"), hex::encode(key)));
    needles.push(needle(format!("{name} (HEX)"), hex::encode_upper(key)));
}

async fn next_delivery(conn: &mut RelayConnection) -> petrel_federation::client::Delivery {
    match conn.next_event().await.expect("session ended") {
        RelayFrame::Deliver(d) => d,
        other => panic!("expected a delivery, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_holds_no_public_keys_and_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let relay = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || {
            RelayProcess::start(&data, &["--create-password", PASSWORD])
        })
        .await
        .unwrap()
    };
    let mut recipient = connect(&relay.address).await;
    let sender_conn = connect(&relay.address).await;

    let mut forbidden = vec![needle("creation password", PASSWORD.as_bytes())];
    let mut owners = Vec::new();
    let mut senders = Vec::new();
    for q in 0..QUEUES {
        let owner =
            Owner::create_with_password(&recipient, 21 + q as u8, true, Some(PASSWORD.as_bytes()))
                .await
                .unwrap();
        let mut seed = [0u8; 32];
        rng.fill(&mut seed);
        let sender = ed25519_dalek::SigningKey::from_bytes(&seed);
        with_hex(
            &mut forbidden,
            &format!("queue {q} recipient Ed25519 key"),
            owner.key.verifying_key().to_bytes(),
        );
        with_hex(
            &mut forbidden,
            &format!("queue {q} recipient X25519 key"),
            x25519_dalek::PublicKey::from(&owner.dh).to_bytes(),
        );
        with_hex(
            &mut forbidden,
            &format!("queue {q} relay X25519 key"),
            owner.created.relay_dh,
        );
        with_hex(
            &mut forbidden,
            &format!("queue {q} sender Ed25519 key"),
            sender.verifying_key().to_bytes(),
        );
        owners.push(owner);
        senders.push(sender);
    }

    // Messages: the first one unsigned before SECURE (as a handshake's first message is),
    // the rest signed by the sender key; one in the larger 16 KiB class.
    let mut sent: HashMap<(usize, usize), Vec<u8>> = HashMap::new();
    for q in 0..QUEUES {
        for m in 0..MESSAGES {
            let mut marker = format!("petrel-stored-bytes-marker q{q} m{m} ").into_bytes();
            marker.extend((0..32).map(|_| rng.random::<u8>()));
            forbidden.push(needle(
                format!("plaintext marker q{q} m{m}"),
                marker.clone(),
            ));
            let mut text: Vec<u8> = (0..rng.random_range(0..64))
                .map(|_| rng.random::<u8>())
                .collect();
            text.extend_from_slice(&marker);
            text.extend((0..rng.random_range(0..64)).map(|_| rng.random::<u8>()));
            let class = if m == 3 { 16_384 } else { 2_048 };
            let body = padding::pad(&text, class).unwrap();
            let command = Command::Send {
                sender_id: owners[q].created.sender_id,
                body: body.clone(),
            };
            let key = (m > 0).then_some(&senders[q]);
            assert_eq!(
                sender_conn.request(key, command).await.unwrap(),
                Response::Ok
            );
            sent.insert((q, m), body);
            if m == 0 {
                let secure = Command::Secure {
                    recipient_id: owners[q].created.recipient_id,
                    sender_key_hash: KeyHash::of(&senders[q].verifying_key().to_bytes()),
                };
                assert_eq!(
                    recipient
                        .request(Some(&owners[q].key), secure)
                        .await
                        .unwrap(),
                    Response::Ok
                );
            }
        }
    }

    // Receive: ACK the first ACKED messages of each queue, then leave the next one pushed
    // and unacknowledged (and the rest queued behind it).
    let mut received = [0usize; QUEUES];
    while received.iter().any(|&n| n <= ACKED) {
        let d = next_delivery(&mut recipient).await;
        let q = owners
            .iter()
            .position(|o| o.created.recipient_id == d.recipient_id)
            .unwrap();
        let opened = owners[q].open(&d);
        assert_eq!(opened.kind, DeliveryKind::Message);
        assert_eq!(opened.body, sent[&(q, received[q])], "queue {q} in order");
        received[q] += 1;
        if received[q] <= ACKED {
            let ack = Command::Ack {
                recipient_id: d.recipient_id,
                msg_id: d.msg_id,
            };
            assert_eq!(
                recipient.request(Some(&owners[q].key), ack).await.unwrap(),
                Response::Ok
            );
        }
    }
    // The last queue is deleted with what it holds.
    let last = QUEUES - 1;
    let delete = Command::Delete {
        recipient_id: owners[last].created.recipient_id,
    };
    assert_eq!(
        recipient
            .request(Some(&owners[last].key), delete)
            .await
            .unwrap(),
        Response::Ok
    );
    recipient.close().await;
    sender_conn.close().await;
    let status = tokio::task::spawn_blocking(move || relay.terminate())
        .await
        .unwrap();
    assert!(status.success(), "relay exits cleanly on SIGTERM");

    // Scan the data directory.
    let all = files_under(&data);
    let scanned: Vec<PathBuf> = all
        .iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name != "identity.key" && name != "sealing.key"
        })
        .cloned()
        .collect();
    let store = data.join(petrel_relay::STORE_FILE);
    assert!(scanned.contains(&store), "the store file exists: {all:?}");
    for f in &scanned {
        println!(
            "scanned {} ({} bytes)",
            f.display(),
            std::fs::metadata(f).unwrap().len()
        );
    }
    let found = scan(&scanned, &forbidden);
    assert!(
        found.is_empty(),
        "found in the data directory: {:#?}",
        found
            .iter()
            .map(|(f, n, at)| format!("{n} in {} at {at:?}", f.display()))
            .collect::<Vec<_>>()
    );
    println!(
        "none of {} forbidden byte strings found in {} files",
        forbidden.len(),
        scanned.len()
    );

    // Positive control on the real store: the IDs of the queues that still exist are its
    // table keys, and the same scan finds them.
    let mut ids = Vec::new();
    for (q, owner) in owners.iter().enumerate().take(last) {
        ids.push(needle(
            format!("queue {q} recipient ID"),
            owner.created.recipient_id.0,
        ));
        ids.push(needle(
            format!("queue {q} sender ID"),
            owner.created.sender_id.0,
        ));
    }
    let found_ids = scan(std::slice::from_ref(&store), &ids);
    assert_eq!(
        found_ids.len(),
        ids.len(),
        "the scan must find every live queue ID in the store: {found_ids:?}"
    );

    // Positive control on the scan itself: a file holding every needle between random
    // bytes yields each needle at the offset it was written at.
    let control = dir.path().join("control.bin");
    let mut bytes: Vec<u8> = Vec::new();
    let mut planted = Vec::new();
    for n in &forbidden {
        bytes.extend((0..rng.random_range(1..4096)).map(|_| rng.random::<u8>()));
        planted.push((n.name.clone(), bytes.len()));
        bytes.extend_from_slice(&n.bytes);
    }
    bytes.extend((0..4096).map(|_| rng.random::<u8>()));
    std::fs::write(&control, &bytes).unwrap();
    let found_control = scan(std::slice::from_ref(&control), &forbidden);
    assert_eq!(
        found_control.len(),
        forbidden.len(),
        "every planted needle is found"
    );
    for ((_, name, at), (planted_name, offset)) in found_control.iter().zip(&planted) {
        assert_eq!(name, planted_name);
        assert!(
            at.contains(offset),
            "{name} found at {at:?}, planted at {offset}"
        );
    }
}

/// Relay gap found with this scan: DELETE removes the queue record and its messages from
/// redb's tables, but redb does not zero freed pages, so after a clean shutdown the
/// deleted queue's record — its delivery key — is still readable in `relay.redb`, and
/// depending on page reuse so is the ciphertext of a message it held (both were found in
/// one experiment), which is enough to decrypt that message's SEND body from the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "relay gap: a deleted queue's delivery key (and possibly its messages) remain in relay.redb's freed pages"]
async fn deleted_queue_leaves_no_key_or_ciphertext_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let relay = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || RelayProcess::start(&data, &[]))
            .await
            .unwrap()
    };
    let mut conn = connect(&relay.address).await;
    let owner = Owner::create(&conn, 33, true).await;
    let send = Command::Send {
        sender_id: owner.created.sender_id,
        body: common::body(b"this message is deleted with its queue"),
    };
    assert_eq!(conn.request(None, send).await.unwrap(), Response::Ok);
    let d = next_delivery(&mut conn).await;
    let delete = Command::Delete {
        recipient_id: owner.created.recipient_id,
    };
    assert_eq!(
        conn.request(Some(&owner.key), delete).await.unwrap(),
        Response::Ok
    );
    conn.close().await;
    let status = tokio::task::spawn_blocking(move || relay.terminate())
        .await
        .unwrap();
    assert!(status.success());

    let store = data.join(petrel_relay::STORE_FILE);
    let left = scan(
        &[store],
        &[
            needle("delivery key", *owner.delivery.as_bytes()),
            needle("delivery ciphertext (first 64 bytes)", &d.ciphertext[..64]),
            needle(
                "delivery ciphertext (last 64 bytes)",
                &d.ciphertext[d.ciphertext.len() - 64..],
            ),
        ],
    );
    assert!(
        left.is_empty(),
        "the deleted queue is still on disk: {:?}",
        left.iter()
            .map(|(_, n, at)| format!("{n} at {at:?}"))
            .collect::<Vec<_>>()
    );
}
