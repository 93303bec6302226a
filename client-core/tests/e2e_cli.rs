//! Issue 5, "Done when": two real `petrel-relay` processes and `petrel` homes, driven
//! through the CLI only.
//!
//! Bob (relay R2) shows `invite --png`, Alice (relay R1) answers with `connect --image`,
//! both `sync`; messages go both ways (exactly once on screen, receipts); a forced
//! `rotate`, a periodic rotation (application clock moved forward) and two rotations at
//! once happen mid-conversation with messages in flight and one side offline; a re-key by
//! a fresh QR code; a third person (Eve) and a second profile of Alice's get nothing in and
//! nothing out, and Mallory, who answers an invitation in the window before its owner has
//! read the first answer, is ignored; every FORWARD the two clients sent is replayed to their relays and the
//! users see nothing new. Then the relays stop and every file in their data directories
//! is scanned for message plaintexts, display names and connection public keys.
//!
//! The test itself uses the library only to look (open the stores after the CLI has
//! exited, decode links) and to attack (replay captured frames). It also measures pairing
//! time end to end (`connect` + Bob's `sync` + Alice's `sync`, each a process) and prints
//! it: `cargo test -p petrel-client --test e2e_cli -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Relay;
use petrel_client::contact::{CONTACTS, Contact, INVITATIONS, PendingInvitation};
use petrel_client::store::{KdfParams, Store};
use petrel_federation::RelayAddress;
use petrel_federation::client::{Command as RelayCommand, Response};
use petrel_federation::transport::connection::RelayConnection;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PASSPHRASE: &str = "pw";
/// Failure guard for one CLI run (none takes more than a few seconds when things work).
const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// What `sync --wait` may wait for a message still in a forwarding relay's outbox.
const SYNC_WAIT: &str = "20";

const ALICE_NAME: &str = "Alice Liddell";
const BOB_NAME: &str = "Bob Cratchit";
const CAROL_NAME: &str = "Carol Danvers";
const EVE_NAME: &str = "Eve Dropwhistle";
const MALLORY_NAME: &str = "Mallory Quillfeather";
const ALT_NAME: &str = "Alt Persona Ninety";

// ---------------------------------------------------------------------------------------
// Relays
// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// Users (one `petrel` home each)
// ---------------------------------------------------------------------------------------

struct Out {
    stdout: String,
    stderr: String,
}

impl Out {
    fn lines(&self) -> Vec<String> {
        self.stdout.lines().map(str::to_string).collect()
    }
}

struct User {
    label: &'static str,
    home: PathBuf,
    /// `--profile` for every command.
    profile: Option<&'static str>,
    /// `PETREL_DANGEROUS_CAPTURE_DIR` for every command.
    capture: Option<PathBuf>,
}

impl User {
    fn new(label: &'static str, home: PathBuf) -> User {
        std::fs::create_dir_all(&home).unwrap();
        User {
            label,
            home,
            profile: None,
            capture: None,
        }
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_petrel"));
        cmd.arg("--home").arg(&self.home);
        if let Some(p) = self.profile {
            cmd.args(["--profile", p]);
        }
        cmd.args(args)
            .env("PETREL_PASSPHRASE", PASSPHRASE)
            .env("PETREL_DANGEROUS_TEST_KDF", "1")
            .env_remove("PETREL_HOME")
            .env_remove("PETREL_DANGEROUS_CLOCK_SKIP_SECS")
            .env_remove("PETREL_DANGEROUS_CAPTURE_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &self.capture {
            cmd.env("PETREL_DANGEROUS_CAPTURE_DIR", dir);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let start = Instant::now();
        let child = cmd.spawn().expect("spawn petrel");
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(CLI_TIMEOUT) {
            Ok(out) => {
                let took = start.elapsed();
                if took > Duration::from_secs(2) {
                    eprintln!(
                        "{}: `petrel {}` took {:.1} s",
                        self.label,
                        args.join(" "),
                        took.as_secs_f64()
                    );
                }
                out.unwrap()
            }
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                if let Ok(Ok(out)) = rx.recv() {
                    let err = String::from_utf8_lossy(&out.stderr);
                    let tail: String = err
                        .chars()
                        .rev()
                        .take(3000)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    eprintln!(
                        "{}: stderr of the killed command, its end:\n{tail}",
                        self.label
                    );
                }
                panic!(
                    "{}: `petrel {}` did not finish within {CLI_TIMEOUT:?}",
                    self.label,
                    args.join(" ")
                );
            }
        }
    }

    /// Runs `petrel ARGS`, which must succeed.
    fn ok_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let out = self.run_env(args, env);
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            out.status.success(),
            "{}: `petrel {}` failed ({}):\nstderr:\n{stderr}\nstdout:\n{stdout}",
            self.label,
            args.join(" "),
            out.status
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        Out { stdout, stderr }
    }

    fn ok(&self, args: &[&str]) -> Out {
        self.ok_env(args, &[])
    }

    /// Runs `petrel ARGS`, which must fail cleanly; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run_env(args, &[]);
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            !out.status.success(),
            "{}: `petrel {}` should have failed:\nstdout:\n{stdout}\nstderr:\n{stderr}",
            self.label,
            args.join(" ")
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    }

    fn create_profile(&self, name: &str, relay: &str, display_name: &str) {
        self.ok(&[
            "profile",
            "create",
            name,
            "--relay",
            relay,
            "--display-name",
            display_name,
        ]);
    }

    fn send(&self, contact: &str, text: &str, sent: &mut Vec<String>) {
        self.ok(&["send", contact, text]);
        sent.push(text.to_string());
    }

    /// One plain `sync`: its stdout lines.
    fn sync(&self) -> Vec<String> {
        self.ok(&["sync"]).lines()
    }

    /// Syncs until `expected` lines were printed (with `--wait`, for messages still in a
    /// forwarding relay's outbox), checks they are exactly those, in order, then checks a
    /// second sync prints nothing (exactly-once display).
    fn sync_expect(&self, expected: &[String]) -> String {
        let mut got: Vec<String> = Vec::new();
        let mut stderr = String::new();
        if expected.is_empty() {
            let out = self.ok(&["sync"]);
            got.extend(out.lines());
            stderr.push_str(&out.stderr);
        } else {
            for _ in 0..4 {
                let out = self.ok(&["sync", "--wait", SYNC_WAIT]);
                got.extend(out.lines());
                stderr.push_str(&out.stderr);
                if got.len() >= expected.len() {
                    break;
                }
            }
        }
        assert_eq!(
            got, expected,
            "{}: sync printed other lines than expected; stderr:\n{stderr}",
            self.label
        );
        let again = self.sync();
        assert!(
            again.is_empty(),
            "{}: a second sync printed again: {again:?}",
            self.label
        );
        stderr
    }

    fn contacts(&self) -> Vec<Value> {
        let out = self.ok(&["contacts", "--json"]);
        match serde_json::from_str(&out.stdout).unwrap() {
            Value::Array(rows) => rows,
            other => panic!("contacts --json is not a list: {other}"),
        }
    }

    fn contact(&self, alias: &str) -> Value {
        self.contacts()
            .into_iter()
            .find(|c| c["alias"] == alias)
            .unwrap_or_else(|| panic!("{}: no contact {alias}", self.label))
    }

    fn history(&self, contact: &str) -> Vec<Value> {
        let out = self.ok(&["history", contact, "--json"]);
        match serde_json::from_str(&out.stdout).unwrap() {
            Value::Array(rows) => rows,
            other => panic!("history --json is not a list: {other}"),
        }
    }

    /// The texts of the history in one direction (`"you"` or the contact's alias).
    fn texts(&self, contact: &str, from: &str) -> Vec<String> {
        self.history(contact)
            .iter()
            .filter(|m| m["from"] == from)
            .map(|m| m["text"].as_str().unwrap().to_string())
            .collect()
    }

    /// Waits (with `sync --wait`) until every message sent to `contact` is marked
    /// delivered; the contact has synced since the last one was sent.
    fn until_delivered(&self, contact: &str) {
        for _ in 0..4 {
            let history = self.history(contact);
            let pending: Vec<&Value> = history
                .iter()
                .filter(|m| m["from"] == "you" && m["delivered"] != true)
                .collect();
            if pending.is_empty() {
                return;
            }
            let out = self.ok(&["sync", "--wait", SYNC_WAIT]);
            assert!(out.stdout.is_empty(), "unexpected messages: {}", out.stdout);
        }
        panic!(
            "{}: receipts from {contact} did not arrive: {:#?}",
            self.label,
            self.history(contact)
        );
    }

    fn security_code(&self, contact: &str) -> String {
        let out = self.ok(&["verify", contact]);
        let code = out.lines().into_iter().nth(1).unwrap_or_default();
        let digits: String = code.chars().filter(char::is_ascii_digit).collect();
        assert_eq!(digits.len(), 60, "not a 60-digit code: {code:?}");
        code
    }
}

/// The last stdout line of `invite`: the link.
fn link_of(out: &Out) -> String {
    let link = out
        .stdout
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    assert!(link.starts_with("PETREL:"), "no link in {:?}", out.stdout);
    link
}

fn lines(contact: &str, texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| format!("{contact}: {t}")).collect()
}

// ---------------------------------------------------------------------------------------
// What the relays must not hold
// ---------------------------------------------------------------------------------------

/// Connection public keys seen in the users' stores, with what they are.
#[derive(Default)]
struct Keys(BTreeMap<[u8; 32], String>);

impl Keys {
    fn add(&mut self, key: [u8; 32], what: String) {
        self.0.entry(key).or_insert(what);
    }

    /// Opens the store of `user` (no CLI process runs) and records every queue key, the
    /// sender keys the contacts minted, and invitation and re-key public keys.
    fn collect(&mut self, user: &User) {
        let store = open_store(user);
        let who = user.label;
        for (_, c) in store.list::<Contact>(CONTACTS).unwrap() {
            let queues = c.inbound.iter().map(|q| ("inbound", q));
            for (kind, q) in queues.chain(c.retired.iter().map(|q| ("retired", q))) {
                self.add(
                    q.recipient_key.signing_key().verifying_key().to_bytes(),
                    format!("{who}'s {kind} recipient key for {}", c.alias),
                );
            }
            self.add(
                ed25519_dalek::SigningKey::from_bytes(&c.outbound.sender_key)
                    .verifying_key()
                    .to_bytes(),
                format!("{who}'s sender key towards {}", c.alias),
            );
            if let Some(k) = &c.pending_rekey {
                self.add(k.public(), format!("{who}'s re-key key for {}", c.alias));
            }
        }
        for (_, inv) in store.list::<PendingInvitation>(INVITATIONS).unwrap() {
            self.add(
                inv.queue
                    .recipient_key
                    .signing_key()
                    .verifying_key()
                    .to_bytes(),
                format!("{who}'s invitation queue recipient key"),
            );
            self.add(inv.key.public(), format!("{who}'s invitation key"));
        }
    }
}

fn open_store(user: &User) -> Store {
    Store::open(
        &user.home.join("petrel.redb"),
        PASSPHRASE.as_bytes(),
        KdfParams::DANGEROUS_TESTING,
        &mut rand::rng(),
    )
    .unwrap()
}

/// The inbound queues of `user`'s contacts: their IDs and relay addresses.
fn inbound_queues(user: &User) -> Vec<([u8; 16], String)> {
    open_store(user)
        .list::<Contact>(CONTACTS)
        .unwrap()
        .into_iter()
        .flat_map(|(_, c)| {
            c.inbound
                .into_iter()
                .map(|q| (*q.recipient_id.as_bytes(), q.relay.to_string()))
        })
        .collect()
}

/// The relays of `user`'s inbound queues, oldest first.
fn queue_relays(user: &User) -> Vec<String> {
    inbound_queues(user).into_iter().map(|(_, r)| r).collect()
}

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

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------
// The replay attack
// ---------------------------------------------------------------------------------------

/// Sends every captured FORWARD in `dir` again to `relay` from a fresh session; an
/// accepted one is followed until its forward ends. Returns how many were replayed.
async fn replay_captured(dir: &Path, relay: &RelayAddress) -> usize {
    let conn = RelayConnection::connect(relay)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the relay to replay: {e}"));
    let mut count = 0;
    for path in files_under(dir) {
        let bytes = std::fs::read(&path).unwrap();
        let command: RelayCommand = postcard::from_bytes(&bytes).unwrap();
        assert!(matches!(command, RelayCommand::Forward { .. }), "{path:?}");
        let response = tokio::time::timeout(Duration::from_secs(60), conn.request(None, command))
            .await
            .expect("the relay answers a replayed FORWARD")
            .unwrap();
        match response {
            // The destination's sealed answer (the replay tag answers OK without storing).
            Response::Forwarded(_) | Response::Error(_) => {}
            Response::Accepted { forward_id } => loop {
                let status = RelayCommand::ForwardStatus {
                    forward_id,
                    wait_secs: 10,
                };
                let r = tokio::time::timeout(Duration::from_secs(60), conn.request(None, status))
                    .await
                    .expect("the relay answers FORWARD_STATUS")
                    .unwrap();
                if !matches!(r, Response::Pending) {
                    break;
                }
            },
            other => panic!("unexpected answer to a replayed FORWARD: {other:?}"),
        }
        count += 1;
    }
    conn.close().await;
    count
}

// ---------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------

#[test]
fn two_people_pair_talk_rotate_and_rekey_through_two_relays() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut r1 = Relay::start(&root.join("r1"), "127.0.0.1:0");
    let mut r2 = Relay::start(&root.join("r2"), "127.0.0.1:0");
    let (a1, a2) = (r1.address.clone(), r2.address.clone());

    let mut alice = User::new("alice", root.join("alice"));
    let mut bob = User::new("bob", root.join("bob"));
    let carol = User::new("carol", root.join("carol"));
    let eve = User::new("eve", root.join("eve"));
    let mallory = User::new("mallory", root.join("mallory"));
    alice.capture = Some(root.join("capture-alice"));
    bob.capture = Some(root.join("capture-bob"));
    for d in [&alice.capture, &bob.capture].into_iter().flatten() {
        std::fs::create_dir_all(d).unwrap();
    }
    alice.create_profile("alice", &a1, ALICE_NAME);
    bob.create_profile("bob", &a2, BOB_NAME);
    carol.create_profile("carol", &a2, CAROL_NAME);
    eve.create_profile("eve", &a1, EVE_NAME);
    mallory.create_profile("mallory", &a1, MALLORY_NAME);

    let mut keys = Keys::default();
    let mut dh_keys: Vec<([u8; 32], &str)> = Vec::new();
    let mut alice_sent: Vec<String> = Vec::new();
    let mut bob_sent: Vec<String> = Vec::new();

    // --- 1. Pairing: Bob shows a QR image, Alice scans it, both sync. --------------------
    let inv_png = root.join("inv.png");
    let invite = bob.ok(&[
        "invite",
        "--png",
        inv_png.to_str().unwrap(),
        "--no-terminal",
    ]);
    let link = link_of(&invite);
    let invitation = petrel_qr::parse_pasted(&link)
        .unwrap()
        .invitation()
        .unwrap()
        .clone();
    dh_keys.push((invitation.dh_key, "Bob's invitation key"));
    keys.collect(&bob);

    let t0 = Instant::now();
    let connect = alice.ok(&["connect", "--image", inv_png.to_str().unwrap()]);
    let t_connect = t0.elapsed();
    let bob_sync = bob.ok(&["sync", "--wait", SYNC_WAIT]);
    let t_bob = t0.elapsed();
    let alice_sync = alice.ok(&["sync", "--wait", SYNC_WAIT]);
    let pairing = t0.elapsed();
    eprintln!(
        "pairing on loopback, end to end: {:.0} ms (connect {:.0} ms, + Bob's sync {:.0} ms, \
         + Alice's sync {:.0} ms; each a process incl. start-up)",
        pairing.as_secs_f64() * 1e3,
        t_connect.as_secs_f64() * 1e3,
        (t_bob - t_connect).as_secs_f64() * 1e3,
        (pairing - t_bob).as_secs_f64() * 1e3,
    );
    assert!(
        connect.stdout.contains("(scanned)"),
        "connect: {}",
        connect.stdout
    );
    assert!(
        bob_sync
            .stderr
            .contains(&format!("connected with {ALICE_NAME}")),
        "bob sync: {}",
        bob_sync.stderr
    );
    assert!(
        alice_sync
            .stderr
            .contains(&format!("connected with {BOB_NAME}")),
        "alice sync: {}",
        alice_sync.stderr
    );
    assert!(bob_sync.stdout.is_empty() && alice_sync.stdout.is_empty());
    keys.collect(&alice);
    keys.collect(&bob);

    let a_view = alice.contacts();
    assert_eq!(a_view.len(), 1, "{a_view:?}");
    assert_eq!(a_view[0]["alias"], BOB_NAME);
    assert_eq!(a_view[0]["display_name"], BOB_NAME);
    assert_eq!(a_view[0]["state"], "connected");
    assert_eq!(a_view[0]["trust"], "scanned");
    assert_eq!(a_view[0]["inbound_queues"], 1);
    let b_view = bob.contacts();
    assert_eq!(b_view.len(), 1, "{b_view:?}");
    assert_eq!(b_view[0]["alias"], ALICE_NAME);
    assert_eq!(b_view[0]["display_name"], ALICE_NAME);
    assert_eq!(b_view[0]["state"], "connected");
    assert_eq!(b_view[0]["trust"], "invited");

    // The invitation is one-time: Alice herself cannot answer it again, nor can Eve, who
    // got hold of the link.
    let again = alice.fails(&["connect", "--image", inv_png.to_str().unwrap()]);
    assert!(again.contains("already used"), "{again}");
    let eve_try = eve.fails(&["connect", &link]);
    assert!(eve_try.contains("already used"), "{eve_try}");
    assert_eq!(eve.contacts().len(), 0);
    assert_eq!(alice.contacts().len(), 1);

    // A pasted link is recorded as such (Carol, on Bob's relay: direct SENDs, no forward).
    let invite_carol = bob.ok(&["invite", "--no-terminal"]);
    let carol_link = link_of(&invite_carol);
    dh_keys.push((
        petrel_qr::parse_pasted(&carol_link)
            .unwrap()
            .invitation()
            .unwrap()
            .dh_key,
        "Bob's second invitation key",
    ));
    keys.collect(&bob);
    let carol_connect = carol.ok(&["connect", &carol_link]);
    assert!(
        carol_connect.stdout.contains("(pasted link)"),
        "{}",
        carol_connect.stdout
    );
    // Mallory got the link too and answers it in the window before Bob has read Carol's
    // answer (the queue is not secured yet, so the relay takes it): Bob keeps only the
    // first answer, and Mallory is left waiting for a reply that never comes.
    let mallory_connect = mallory.ok(&["connect", &carol_link]);
    assert!(mallory_connect.stdout.contains("invitation answered"));
    let bob_carol = bob.ok(&["sync", "--wait", SYNC_WAIT]);
    assert!(bob_carol.stdout.is_empty(), "{}", bob_carol.stdout);
    assert!(
        bob_carol
            .stderr
            .contains(&format!("connected with {CAROL_NAME}")),
        "{}",
        bob_carol.stderr
    );
    assert!(
        bob_carol.stderr.contains("more than once"),
        "{}",
        bob_carol.stderr
    );
    assert!(carol.ok(&["sync", "--wait", SYNC_WAIT]).stdout.is_empty());
    let names: Vec<Value> = bob.contacts().iter().map(|c| c["alias"].clone()).collect();
    assert_eq!(names, [ALICE_NAME, CAROL_NAME]);
    assert!(mallory.sync().is_empty());
    let m_view = mallory.contacts();
    assert_eq!(m_view.len(), 1, "{m_view:?}");
    assert_eq!(m_view[0]["state"], "awaiting_reply");
    let m_alias = m_view[0]["alias"].as_str().unwrap().to_string();
    let m_send = mallory.fails(&["send", &m_alias, "mallory tries to talk to bob"]);
    assert!(m_send.contains("has not answered"), "{m_send}");
    keys.collect(&mallory);
    let c_view = carol.contact(BOB_NAME);
    assert_eq!(c_view["trust"], "pasted");
    assert_eq!(c_view["state"], "connected");
    let mut carol_sent = Vec::new();
    carol.send(BOB_NAME, "carol here, same relay as you", &mut carol_sent);
    bob.sync_expect(&lines(CAROL_NAME, &["carol here, same relay as you"]));
    keys.collect(&carol);
    keys.collect(&bob);

    // --- Messages both ways, exactly once, with receipts. --------------------------------
    let a1_texts = [
        "hello bob, this is alice speaking",
        "Grüße aus Köln — ☕ 🐦 你好, Bob!",
        "a third one: «ünïcödé» ✓ Привет",
    ];
    for t in a1_texts {
        alice.send(BOB_NAME, t, &mut alice_sent);
    }
    let b1_texts = ["hi alice, bob answering here", "مرحبا Alice — 🌍 done"];
    for t in b1_texts {
        bob.send(ALICE_NAME, t, &mut bob_sent);
    }
    // Not delivered before Bob has read them.
    let before = alice.history(BOB_NAME);
    assert_eq!(before.len(), 3, "{before:?}");
    assert!(
        before
            .iter()
            .all(|m| m["sent"] == true && m["delivered"] == false),
        "{before:?}"
    );
    bob.sync_expect(&lines(ALICE_NAME, &a1_texts));
    alice.sync_expect(&lines(BOB_NAME, &b1_texts));
    alice.until_delivered(BOB_NAME);
    bob.until_delivered(ALICE_NAME);
    assert_eq!(alice.texts(BOB_NAME, "you"), alice_sent);
    assert_eq!(alice.texts(BOB_NAME, BOB_NAME), bob_sent);
    assert_eq!(bob.texts(ALICE_NAME, "you"), bob_sent);
    assert_eq!(bob.texts(ALICE_NAME, ALICE_NAME), alice_sent);

    // --- 2a. Bob forces a rotation; both send while it is under way. ---------------------
    let rot = bob.ok(&["rotate", ALICE_NAME]);
    assert!(rot.stdout.contains("rotation started"), "{}", rot.stdout);
    assert_eq!(bob.contact(ALICE_NAME)["inbound_queues"], 2);
    keys.collect(&bob);
    let busy = bob.fails(&["rotate", ALICE_NAME]);
    assert!(busy.contains("under way"), "{busy}");
    bob.send(ALICE_NAME, "bob writes during his rotation", &mut bob_sent);
    // Alice has not synced: this goes to Bob's old queue.
    alice.send(
        BOB_NAME,
        "alice writes before syncing (old queue)",
        &mut alice_sent,
    );
    alice.sync_expect(&lines(BOB_NAME, &["bob writes during his rotation"]));
    keys.collect(&alice);
    // Now Alice sends to the new queue.
    alice.send(
        BOB_NAME,
        "alice writes after the switch (new queue)",
        &mut alice_sent,
    );
    let done = bob.sync_expect(&lines(
        ALICE_NAME,
        &[
            "alice writes before syncing (old queue)",
            "alice writes after the switch (new queue)",
        ],
    ));
    assert!(done.contains("rotation with"), "bob's sync: {done}");
    assert_eq!(bob.contact(ALICE_NAME)["inbound_queues"], 1);
    keys.collect(&bob);

    // --- 2b. Alice's periodic rotation (clock 2 h on), while Bob stays offline. ----------
    // Alice also pins R2: her rotations alternate between her pinned relays (R1 stays
    // her first, the one she forwards through).
    alice.ok(&["relay", "pin", &a2]);
    alice.ok(&["profile", "rotation", "1h"]);
    let periodic = alice.ok_env(&["sync"], &[("PETREL_DANGEROUS_CLOCK_SKIP_SECS", "7200")]);
    assert!(periodic.stdout.is_empty(), "{}", periodic.stdout);
    assert!(
        periodic.stderr.contains("rotating the queue"),
        "{}",
        periodic.stderr
    );
    assert_eq!(alice.contact(BOB_NAME)["inbound_queues"], 2);
    keys.collect(&alice);
    assert_eq!(queue_relays(&alice), [a1.as_str(), a2.as_str()]);
    let offline_texts = [
        "alice while bob is offline, one",
        "alice while bob is offline, two 🛰",
        "alice while bob is offline, three",
    ];
    for t in offline_texts {
        alice.send(BOB_NAME, t, &mut alice_sent);
    }
    assert!(alice.sync().is_empty());
    assert_eq!(alice.contact(BOB_NAME)["inbound_queues"], 2);
    // Bob, still not having read anything, writes to Alice's old queue.
    bob.send(
        ALICE_NAME,
        "bob before reading (alice's old queue)",
        &mut bob_sent,
    );
    bob.sync_expect(&lines(ALICE_NAME, &offline_texts));
    keys.collect(&bob);
    bob.send(
        ALICE_NAME,
        "bob after reading (alice's new queue)",
        &mut bob_sent,
    );
    alice.sync_expect(&lines(
        BOB_NAME,
        &[
            "bob before reading (alice's old queue)",
            "bob after reading (alice's new queue)",
        ],
    ));
    assert_eq!(alice.contact(BOB_NAME)["inbound_queues"], 1);
    assert_eq!(queue_relays(&alice), [a2.as_str()]);
    keys.collect(&alice);

    // --- 2c. Both rotate at once, each sends before reading the other's announcement. ---
    alice.ok(&["rotate", BOB_NAME]);
    bob.ok(&["rotate", ALICE_NAME]);
    keys.collect(&alice);
    keys.collect(&bob);
    alice.send(BOB_NAME, "alice amid two rotations", &mut alice_sent);
    bob.send(ALICE_NAME, "bob amid two rotations", &mut bob_sent);
    alice.sync_expect(&lines(BOB_NAME, &["bob amid two rotations"]));
    bob.sync_expect(&lines(ALICE_NAME, &["alice amid two rotations"]));
    alice.sync_expect(&[]);
    bob.sync_expect(&[]);
    keys.collect(&alice);
    keys.collect(&bob);
    assert_eq!(alice.contact(BOB_NAME)["inbound_queues"], 1);
    assert_eq!(bob.contact(ALICE_NAME)["inbound_queues"], 1);
    assert_eq!(queue_relays(&alice), [a1.as_str()]);

    // --- 3. Re-key by a fresh QR code; messages keep flowing. -----------------------------
    // Bob shows it in the middle of a rotation: the code names his new queue, which Alice
    // learns only by reading his announcement (`connect` reads it when the code matches
    // nothing yet).
    bob.ok(&["rotate", ALICE_NAME]);
    let rk_png = root.join("rekey.png");
    let rekey = bob.ok(&[
        "invite",
        "--rekey",
        ALICE_NAME,
        "--png",
        rk_png.to_str().unwrap(),
        "--no-terminal",
    ]);
    dh_keys.push((
        petrel_qr::parse_pasted(&link_of(&rekey))
            .unwrap()
            .invitation()
            .unwrap()
            .dh_key,
        "Bob's re-key key",
    ));
    keys.collect(&bob);
    // Eve cannot use it.
    let eve_rekey = eve.fails(&["connect", "--image", rk_png.to_str().unwrap()]);
    assert!(eve_rekey.contains("no contact"), "{eve_rekey}");
    let answered = alice.ok(&["connect", "--image", rk_png.to_str().unwrap()]);
    assert!(answered.stdout.contains("re-keying"), "{}", answered.stdout);
    let rekeyed = bob.ok(&["sync", "--wait", SYNC_WAIT]);
    assert!(rekeyed.stdout.is_empty(), "{}", rekeyed.stdout);
    assert!(rekeyed.stderr.contains("re-keyed"), "{}", rekeyed.stderr);
    bob.send(ALICE_NAME, "bob after the re-key ✓", &mut bob_sent);
    alice.sync_expect(&lines(BOB_NAME, &["bob after the re-key ✓"]));
    alice.send(BOB_NAME, "alice after the re-key ✓✓", &mut alice_sent);
    bob.sync_expect(&lines(ALICE_NAME, &["alice after the re-key ✓✓"]));
    bob.send(ALICE_NAME, "bob again after the re-key", &mut bob_sent);
    alice.sync_expect(&lines(BOB_NAME, &["bob again after the re-key"]));
    let code_a = alice.security_code(BOB_NAME);
    let code_b = bob.security_code(ALICE_NAME);
    assert_eq!(code_a, code_b);
    keys.collect(&alice);
    keys.collect(&bob);

    // Receipts for everything, and the full histories.
    alice.until_delivered(BOB_NAME);
    bob.until_delivered(ALICE_NAME);
    alice.sync_expect(&[]);
    let alice_history = alice.history(BOB_NAME);
    let bob_history = bob.history(ALICE_NAME);
    assert_eq!(alice.texts(BOB_NAME, "you"), alice_sent);
    assert_eq!(alice.texts(BOB_NAME, BOB_NAME), bob_sent);
    assert_eq!(bob.texts(ALICE_NAME, "you"), bob_sent);
    assert_eq!(bob.texts(ALICE_NAME, ALICE_NAME), alice_sent);
    assert_eq!(
        alice_history.len(),
        alice_sent.len() + bob_sent.len(),
        "{alice_history:#?}"
    );
    for m in alice_history.iter().chain(&bob_history) {
        assert!(m["sent"] == true && m["delivered"] == true, "{m}");
    }
    for (user, contact) in [(&alice, BOB_NAME), (&bob, ALICE_NAME)] {
        let c = user.contact(contact);
        assert_eq!(c["state"], "connected", "{c}");
        assert_eq!(c["inbound_queues"], 1, "{c}");
        assert_eq!(c["gaps"], 0, "{c}");
    }

    // --- 4. Eve gets nothing in or out; Alice's second profile sees nothing. -------------
    let eve_late = eve.fails(&["connect", &link]);
    assert!(eve_late.contains("already used"), "{eve_late}");
    assert_eq!(eve.contacts().len(), 0);
    assert!(eve.sync().is_empty());
    let reuse = alice.fails(&["connect", &link]);
    assert!(reuse.contains("already used"), "{reuse}");
    alice.create_profile("alt", &a1, ALT_NAME);
    let mut alt = User::new("alice/alt", alice.home.clone());
    alt.profile = Some("alt");
    assert_eq!(alt.contacts().len(), 0);
    let no_contact = alt.fails(&["history", BOB_NAME]);
    assert!(no_contact.contains("no contact"), "{no_contact}");
    assert!(alt.sync().is_empty());
    let profiles: Value =
        serde_json::from_str(&alice.ok(&["profile", "list", "--json"]).stdout).unwrap();
    let current: Vec<&Value> = profiles
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["current"] == true)
        .collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["name"], "alice");
    alice.sync_expect(&[]);
    bob.sync_expect(&[]);
    assert_eq!(alice.contacts().len(), 1);
    assert_eq!(bob.contacts().len(), 2);

    // --- 5. Replay every captured FORWARD to the relay it went through. ------------------
    alice.capture = None;
    bob.capture = None;
    // Quiet before: nothing at all arrives (not even a receipt) ...
    for user in [&alice, &bob] {
        let out = user.ok(&["sync"]);
        assert!(
            out.stdout.is_empty() && out.stderr.contains("nothing new"),
            "{}",
            out.stderr
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let replayed_a = rt.block_on(replay_captured(&root.join("capture-alice"), &r1.address()));
    let replayed_b = rt.block_on(replay_captured(&root.join("capture-bob"), &r2.address()));
    eprintln!("replayed {replayed_a} FORWARD(s) of Alice's to R1 and {replayed_b} of Bob's to R2");
    assert!(replayed_a >= alice_sent.len(), "only {replayed_a} captured");
    assert!(replayed_b >= bob_sent.len(), "only {replayed_b} captured");
    drop(rt);
    // ... and after: the relays stored none of the replayed SENDs (a stored one would
    // count as received even though the ratchet would drop it as a duplicate).
    for user in [&alice, &bob] {
        let out = user.ok(&["sync"]);
        assert!(
            out.stdout.is_empty() && out.stderr.contains("nothing new"),
            "{}",
            out.stderr
        );
    }
    bob.sync_expect(&[]);
    alice.sync_expect(&[]);
    carol.sync_expect(&[]);
    assert_eq!(alice.history(BOB_NAME), alice_history);
    assert_eq!(bob.history(ALICE_NAME), bob_history);
    for (user, contact) in [(&alice, BOB_NAME), (&bob, ALICE_NAME)] {
        let c = user.contact(contact);
        assert_eq!(c["gaps"], 0, "{c}");
    }
    keys.collect(&alice);
    keys.collect(&bob);
    keys.collect(&carol);
    keys.collect(&eve);
    keys.collect(&mallory);

    // --- 6. Stop the relays and scan their files. ----------------------------------------
    // Positive control for the scan: the live queue IDs, which relays do keep.
    let positive: Vec<([u8; 16], PathBuf)> = [&alice, &bob, &carol]
        .into_iter()
        .flat_map(inbound_queues)
        .map(|(id, relay)| {
            let r = [&r1, &r2].into_iter().find(|r| r.address == relay).unwrap();
            (id, r.data_dir.clone())
        })
        .collect();
    assert_eq!(positive.len(), 4);
    for relay in [&mut r1, &mut r2] {
        let status = relay.stop();
        assert!(status.success(), "relay exit: {status}");
    }
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for t in alice_sent.iter().chain(&bob_sent).chain(&carol_sent) {
        needles.push((format!("message text {t:?}"), t.as_bytes().to_vec()));
    }
    for name in [
        ALICE_NAME,
        BOB_NAME,
        CAROL_NAME,
        EVE_NAME,
        MALLORY_NAME,
        ALT_NAME,
    ] {
        needles.push((format!("display name {name:?}"), name.as_bytes().to_vec()));
    }
    let mut all_keys = keys.0;
    for (k, what) in dh_keys {
        all_keys.insert(k, what.to_string());
    }
    assert!(
        all_keys.len() >= 12,
        "too few keys collected: {}",
        all_keys.len()
    );
    for (k, what) in &all_keys {
        needles.push((what.clone(), k.to_vec()));
        needles.push((format!("{what} (hex)"), hex::encode(k).into_bytes()));
    }
    let mut found = Vec::new();
    let mut scanned = 0;
    for relay_dir in [&r1.data_dir, &r2.data_dir] {
        for file in files_under(relay_dir) {
            let bytes = std::fs::read(&file).unwrap();
            scanned += bytes.len();
            for (what, needle) in &needles {
                if contains(&bytes, needle) {
                    found.push(format!("{what} in {}", file.display()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "found in relay files:\n{}",
        found.join("\n")
    );
    // Positive control: the scan does find what a relay must keep (the queue IDs).
    for (id, data_dir) in &positive {
        let hit = files_under(data_dir)
            .iter()
            .any(|f| contains(&std::fs::read(f).unwrap(), id));
        assert!(hit, "a live queue ID is not in {}", data_dir.display());
    }
    // The homes are encrypted at rest too.
    for user in [&alice, &bob, &carol, &eve, &mallory] {
        let bytes = std::fs::read(user.home.join("petrel.redb")).unwrap();
        for (what, needle) in needles.iter().filter(|(w, _)| !w.contains("key")) {
            assert!(
                !contains(&bytes, needle),
                "{what} in {}'s store",
                user.label
            );
        }
    }
    eprintln!(
        "scanned {scanned} bytes of relay files for {} needles ({} keys); whole test {:.1} s",
        needles.len(),
        all_keys.len(),
        started.elapsed().as_secs_f64()
    );
}
