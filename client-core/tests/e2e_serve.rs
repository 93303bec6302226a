//! `petrel serve` end to end: two real relay processes, two real `petrel serve` processes,
//! pairing through the local API, then 1,000 messages each way while a third program (a
//! second API client) and the `petrel` CLI send at the same time, the receiving side's
//! relay is killed and restarted, and both sides rotate their queues. Every message is
//! shown exactly once, in the order its sender's server numbered it, and every one is
//! confirmed by a receipt. Both servers stop cleanly on SIGTERM.
//!
//! Nothing is synchronised by time: the test waits on the servers' notifications and API
//! answers, each wait bounded so a bug fails the test instead of hanging it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Relay, Serve, petrel_ok};
use petrel_client::api::{ApiClient, Notification};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Messages each side's main program sends.
const MAIN: usize = 900;
/// Messages the third program (another API client of Alice's server) sends.
const THIRD: usize = 80;
/// Messages sent by `petrel send` processes while the server runs.
const CLI: usize = 20;
/// The longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(180);

/// Every notification a server sent on one WebSocket, in order.
#[derive(Clone, Default)]
struct Log {
    seen: Arc<Mutex<Vec<Notification>>>,
    changed: Arc<Notify>,
}

impl Log {
    async fn follow(api: &ApiClient) -> Log {
        let log = Log::default();
        let mut sub = api.subscribe().await.unwrap();
        let l = log.clone();
        tokio::spawn(async move {
            while let Some(n) = sub.next_notification().await {
                assert_ne!(n.method, "event.lagged", "the test fell behind the server");
                l.seen.lock().unwrap().push(n);
                l.changed.notify_waiters();
            }
        });
        log
    }

    /// Waits until `done` holds for the notifications so far; fails after [`WAIT`].
    async fn until(&self, what: &str, done: impl Fn(&[Notification]) -> bool) {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                if done(&self.seen.lock().unwrap()) {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(WAIT, wait).await.is_err() {
            let seen = self.seen.lock().unwrap();
            let tail: Vec<_> = seen.iter().rev().take(10).collect();
            panic!("timed out waiting for {what}; last notifications: {tail:?}");
        }
    }

    fn texts_from(&self, contact: &str) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|n| n.method == "event.message" && n.params["contact"] == contact)
            .map(|n| n.params["text"].as_str().unwrap().to_string())
            .collect()
    }

    fn count(&self, method: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|n| n.method == method)
            .count()
    }
}

async fn history(api: &ApiClient, contact: &str) -> Vec<Value> {
    match api
        .call("message.history", json!({"contact": contact}))
        .await
        .unwrap()
    {
        Value::Array(rows) => rows,
        other => panic!("history is not a list: {other}"),
    }
}

/// Sends `texts` one after another through `api`, calling `at(i)` before the i-th.
async fn send_all(api: &ApiClient, contact: &str, texts: &[String]) {
    for text in texts {
        let answer = api
            .call("message.send", json!({"contact": contact, "text": text}))
            .await
            .unwrap();
        assert!(answer["seq"].as_u64().is_some(), "{answer}");
    }
}

fn texts(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// `part`'s elements appear in `whole` in the same order.
fn in_order(whole: &[String], part: &[String]) -> bool {
    let mut it = whole.iter();
    part.iter().all(|p| it.any(|w| w == p))
}

/// The receiving side shows exactly the texts the sending server numbered, once each, in
/// its order; and the sender has a receipt for every one.
async fn check_direction(
    sender: &ApiClient,
    sender_sees: &str,
    receiver: &ApiClient,
    receiver_log: &Log,
    receiver_sees: &str,
) {
    let sent = history(sender, sender_sees).await;
    let sent_texts: Vec<String> = sent
        .iter()
        .filter(|m| m["from"] == "you")
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect();
    let shown = receiver_log.texts_from(receiver_sees);
    let unique: BTreeSet<&String> = shown.iter().collect();
    assert_eq!(unique.len(), shown.len(), "a message was shown twice");
    assert_eq!(
        shown, sent_texts,
        "the messages shown differ from those sent, or their order"
    );
    let stored: Vec<String> = history(receiver, receiver_sees)
        .await
        .iter()
        .filter(|m| m["from"] == receiver_sees)
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(stored, sent_texts, "the receiver's history differs");
}

async fn all_delivered(api: &ApiClient, contact: &str, n: usize) -> bool {
    let rows = history(api, contact).await;
    let out: Vec<&Value> = rows.iter().filter(|m| m["from"] == "you").collect();
    out.len() == n && out.iter().all(|m| m["delivered"] == true)
}

async fn until_delivered(api: &ApiClient, log: &Log, contact: &str, n: usize) {
    // Every receipt is a notification; re-check the history after each one.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let receipts = log.count("event.receipt");
        if all_delivered(api, contact, n).await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every message to {contact} got a receipt"
        );
        let _ = tokio::time::timeout_at(
            deadline,
            log.until("a receipt", |seen| {
                seen.iter().filter(|n| n.method == "event.receipt").count() > receipts
            }),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serves_exchange_a_thousand_messages_each_way_through_restarts_and_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let r1 = Relay::start(&dir.path().join("r1"), "127.0.0.1:0");
    let mut r2 = Relay::start(&dir.path().join("r2"), "127.0.0.1:0");
    let (a_home, b_home) = (dir.path().join("alice"), dir.path().join("bob"));
    petrel_ok(
        &a_home,
        &["profile", "create", "alice", "--relay", &r1.address],
    );
    petrel_ok(
        &b_home,
        &["profile", "create", "bob", "--relay", &r2.address],
    );
    let mut sa = Serve::start(&a_home);
    let mut sb = Serve::start(&b_home);
    let (alice, bob) = (sa.api(), sb.api());
    let (alog, blog) = (Log::follow(&alice).await, Log::follow(&bob).await);

    // Pairing through the API: Bob's invitation, Alice answers it.
    let invitation = bob
        .call("invite.create", json!({"alias": "alice"}))
        .await
        .unwrap();
    assert_eq!(invitation["one_time"], true);
    let link = invitation["link"].as_str().unwrap();
    let answer = alice
        .call("connect", json!({"link": link, "alias": "bob"}))
        .await
        .unwrap();
    assert_eq!(answer["contact"], "bob");
    for (log, other) in [(&alog, "bob"), (&blog, "alice")] {
        log.until("the contact connected", |seen| {
            seen.iter()
                .any(|n| n.method == "event.contact_connected" && n.params["contact"] == other)
        })
        .await;
    }
    let contacts = alice.call("contacts.list", json!({})).await.unwrap();
    assert_eq!(contacts[0]["state"], "connected", "{contacts}");

    // Both main programs send at once; a third program and the CLI join Alice's side.
    let a_main = texts("alice", MAIN);
    let b_main = texts("bob", MAIN + THIRD + CLI);
    let third = texts("third", THIRD);
    let cli = texts("cli", CLI);
    let half = MAIN / 2;
    let third_task = {
        let api = ApiClient::new(sa.addr, sa.token.clone());
        let texts = third.clone();
        tokio::spawn(async move { send_all(&api, "bob", &texts).await })
    };
    let cli_task = {
        let home = a_home.clone();
        let texts = cli.clone();
        tokio::task::spawn_blocking(move || {
            for t in &texts {
                petrel_ok(&home, &["send", "bob", t]);
            }
        })
    };
    let b_task = {
        let api = ApiClient::new(sb.addr, sb.token.clone());
        let texts = b_main.clone();
        tokio::spawn(async move { send_all(&api, "alice", &texts).await })
    };
    send_all(&alice, "bob", &a_main[..half]).await;

    // Bob's relay dies mid-stream and comes back on the same port; both rotate.
    let listen = r2.listen();
    r2.kill();
    send_all(&alice, "bob", &a_main[half..half + 50]).await;
    r2 = Relay::start(&dir.path().join("r2"), &listen);
    alice
        .call("contact.rotate", json!({"contact": "bob"}))
        .await
        .unwrap();
    send_all(&alice, "bob", &a_main[half + 50..]).await;
    bob.call("contact.rotate", json!({"contact": "alice"}))
        .await
        .unwrap();
    third_task.await.unwrap();
    cli_task.await.unwrap();
    b_task.await.unwrap();

    let a_total = MAIN + THIRD + CLI;
    blog.until("every message from Alice", |seen| {
        seen.iter()
            .filter(|n| n.method == "event.message" && n.params["contact"] == "alice")
            .count()
            >= a_total
    })
    .await;
    alog.until("every message from Bob", |seen| {
        seen.iter()
            .filter(|n| n.method == "event.message" && n.params["contact"] == "bob")
            .count()
            >= b_main.len()
    })
    .await;
    for (log, contact) in [(&alog, "bob"), (&blog, "alice")] {
        log.until("the rotation", |seen| {
            seen.iter()
                .any(|n| n.method == "event.rotation_done" && n.params["contact"] == contact)
        })
        .await;
    }
    until_delivered(&alice, &alog, "bob", a_total).await;
    until_delivered(&bob, &blog, "alice", b_main.len()).await;

    check_direction(&alice, "bob", &bob, &blog, "alice").await;
    check_direction(&bob, "alice", &alice, &alog, "bob").await;
    let shown = blog.texts_from("alice");
    for part in [&a_main, &third, &cli] {
        assert!(
            in_order(&shown, part),
            "one sender's messages were reordered"
        );
    }
    assert!(in_order(&alog.texts_from("bob"), &b_main));
    // Bob's server saw his relay go and come back (the first `relay_up` may precede the
    // subscription).
    let methods: Vec<String> = blog
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|n| n.method.clone())
        .collect();
    let down = methods
        .iter()
        .position(|m| m == "event.relay_down")
        .expect("Bob never saw his relay go");
    assert!(
        methods[down..].iter().any(|m| m == "event.relay_up"),
        "Bob never saw his relay return"
    );

    // SIGTERM: both servers exit 0 and remove their discovery files.
    for (s, home) in [(&mut sa, &a_home), (&mut sb, &b_home)] {
        let status = s.terminate();
        assert!(status.success(), "petrel serve exited with {status}");
        assert!(!home.join("serve.json").exists(), "serve.json left behind");
    }
    // The stores are intact: the offline CLI reads the same history.
    let out = petrel_ok(&b_home, &["history", "alice", "--json"]);
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(
        rows.iter().filter(|m| m["from"] == "alice").count(),
        a_total
    );
    drop(r1);
    drop(r2);
}

/// `examples/echo_bot.rs`, built by the test command next to the test binaries.
fn echo_bot_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap();
    let bin = target.join("examples").join("echo_bot");
    assert!(
        bin.is_file(),
        "{} is not built: run the tests with `cargo nextest run --workspace` (or build it with \
         `cargo build -p petrel-client --example echo_bot`)",
        bin.display()
    );
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_echo_bot_answers_through_the_api() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let r1 = Relay::start(&dir.path().join("r1"), "127.0.0.1:0");
    let r2 = Relay::start(&dir.path().join("r2"), "127.0.0.1:0");
    let (a_home, b_home) = (dir.path().join("alice"), dir.path().join("bot"));
    petrel_ok(
        &a_home,
        &["profile", "create", "alice", "--relay", &r1.address],
    );
    petrel_ok(
        &b_home,
        &["profile", "create", "bot", "--relay", &r2.address],
    );
    let sa = Serve::start(&a_home);
    let sb = Serve::start(&b_home);
    let alice = sa.api();
    let alog = Log::follow(&alice).await;

    let mut bot = std::process::Command::new(echo_bot_bin())
        .arg("--home")
        .arg(&b_home)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(bot.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("echo bot: listening"), "{line:?}");

    let invitation = sb.api().call("invite.create", json!({})).await.unwrap();
    let link = invitation["link"].as_str().unwrap();
    alice
        .call("connect", json!({"link": link, "alias": "bot"}))
        .await
        .unwrap();
    alog.until("the bot connected", |seen| {
        seen.iter().any(|n| n.method == "event.contact_connected")
    })
    .await;
    for text in ["ping", "second"] {
        alice
            .call("message.send", json!({"contact": "bot", "text": text}))
            .await
            .unwrap();
    }
    alog.until("both echoes", |seen| {
        seen.iter()
            .filter(|n| n.method == "event.message" && n.params["contact"] == "bot")
            .count()
            >= 2
    })
    .await;
    assert_eq!(alog.texts_from("bot"), ["echo: ping", "echo: second"]);
    let _ = bot.kill();
    let _ = bot.wait();
}
