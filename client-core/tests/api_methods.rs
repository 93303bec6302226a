//! The API's methods (`specs/api.md` §Methods, §Events) against real processes: two
//! `petrel-relay`s and two `petrel serve`s (homes `alice` and `bob`, one relay each), all
//! on 127.0.0.1 with port 0.
//!
//! * `spec_examples_replay`: every example of the spec, in order, sent as written to the
//!   server it names; answers and notifications must match (see "How the examples are
//!   written" in the spec).
//! * `error_cases`: every error code the spec names for a method, that a test can bring
//!   about without breaking a disk, at least once; and `kill -TERM` of a server.
//! * `created_profile_pins_a_relay_and_pairs`: a profile made through the API pins a
//!   second relay (both show in `relay.status`), pairs by QR image and exchanges messages.
//!
//! Nothing is synchronised by time: tests wait for answers and notifications, with a
//! deadline that only bounds a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Relay;
use common::serve::{GUARD, Log, Serve, make_home};
use serde_json::{Value, json};
use std::collections::HashMap;

const CODE_NO_PROFILE: i64 = 2001;
const CODE_NO_CONTACT: i64 = 2002;
const CODE_NOT_CONNECTED: i64 = 2003;
const CODE_BAD_IMAGE: i64 = 2007;
const CODE_RELAY_UNREACHABLE: i64 = 2008;
const CODE_BUSY: i64 = 2010;
const CODE_TOO_LONG: i64 = 2011;
const CODE_UNKNOWN_REKEY: i64 = 2013;
const CODE_INVALID_ARGUMENT: i64 = 2014;
const CODE_PROFILE_EXISTS: i64 = 2015;
const CODE_INVALID_PARAMS: i64 = -32602;

/// Two relays, Alice's home on the first and Bob's on the second, both served, both
/// connected, with their notification logs.
struct World {
    dir: tempfile::TempDir,
    relay_a: Relay,
    relay_b: Relay,
    alice: Serve,
    bob: Serve,
    alice_log: Log,
    bob_log: Log,
}

impl World {
    async fn start() -> World {
        let dir = tempfile::tempdir().unwrap();
        let relay_a = Relay::start(&dir.path().join("relay-a"), "127.0.0.1:0");
        let relay_b = Relay::start(&dir.path().join("relay-b"), "127.0.0.1:0");
        let alice_home = make_home(dir.path(), "alice", "Alice", &relay_a.address);
        let bob_home = make_home(dir.path(), "bob", "Bob", &relay_b.address);
        let alice = Serve::start(&alice_home);
        let bob = Serve::start(&bob_home);
        let alice_log = alice.log().await;
        let bob_log = bob.log().await;
        alice.relays_up("alice").await;
        bob.relays_up("bob").await;
        World {
            dir,
            relay_a,
            relay_b,
            alice,
            bob,
            alice_log,
            bob_log,
        }
    }

    /// Alice invites, Bob answers by link; both see the pairing complete.
    async fn pair(&self) {
        let invitation = self
            .alice
            .ok("invite.create", json!({"alias": "bob"}))
            .await;
        let answer = self
            .bob
            .ok(
                "connect",
                json!({"link": invitation["link"], "alias": "alice"}),
            )
            .await;
        assert_eq!(answer["contact"], "alice");
        self.alice_log
            .wait_event(
                "event.contact_connected",
                json!({"profile": "alice", "contact": "bob"}),
            )
            .await;
        self.bob_log
            .wait_event(
                "event.contact_connected",
                json!({"profile": "bob", "contact": "alice"}),
            )
            .await;
    }
}

// --- the spec's examples -----------------------------------------------------------------

/// One example of the spec: the server it runs on, the request (none for a
/// notification), and the answer or notification expected.
#[derive(Debug)]
struct Example {
    line: usize,
    home: String,
    request: Option<Value>,
    expected: Value,
}

/// The next ```json block at or after `*at`; moves `*at` past it.
fn next_json_block(lines: &[&str], at: &mut usize) -> Option<(usize, Value)> {
    while *at < lines.len() && lines[*at].trim() != "```json" {
        if lines[*at].trim_start().starts_with("<!-- example:") || lines[*at].starts_with('#') {
            return None;
        }
        *at += 1;
    }
    let start = *at + 1;
    let mut end = start;
    while end < lines.len() && lines[end].trim() != "```" {
        end += 1;
    }
    if end >= lines.len() {
        return None;
    }
    *at = end + 1;
    let text = lines[start..end].join("\n");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("specs/api.md line {}: not JSON ({e}):\n{text}", start));
    Some((start, value))
}

fn spec_examples(spec: &str) -> Vec<Example> {
    let lines: Vec<&str> = spec.lines().collect();
    let methods = lines
        .iter()
        .position(|l| *l == "## Methods")
        .expect("specs/api.md has a ## Methods section");
    let mut examples = Vec::new();
    let mut at = methods;
    let mut blocks = 0;
    while at < lines.len() {
        let line = lines[at].trim();
        at += 1;
        let Some(label) = line
            .strip_prefix("<!-- example:")
            .and_then(|l| l.strip_suffix("-->"))
        else {
            continue;
        };
        let home = label.trim().to_string();
        assert!(
            ["alice", "bob", "none"].contains(&home.as_str()),
            "specs/api.md line {at}: unknown server {home:?}"
        );
        let (first_line, first) = next_json_block(&lines, &mut at)
            .unwrap_or_else(|| panic!("specs/api.md line {at}: an example label without a block"));
        blocks += 1;
        let (request, expected) = if first.get("id").is_some() {
            let (_, answer) = next_json_block(&lines, &mut at).unwrap_or_else(|| {
                panic!("specs/api.md line {first_line}: a request without its answer")
            });
            blocks += 1;
            (Some(first), answer)
        } else {
            (None, first)
        };
        examples.push(Example {
            line: first_line,
            home,
            request,
            expected,
        });
    }
    // Every block of these sections belongs to an example (none is silently left out).
    let fenced = lines[methods..]
        .iter()
        .filter(|l| l.trim() == "```json")
        .count();
    assert_eq!(
        fenced, blocks,
        "specs/api.md: a ```json block after ## Methods has no <!-- example: … --> label"
    );
    examples
}

/// `"<int>"`, `"<string:name>"`, `"<name>"`… as (kind, name).
fn placeholder(value: &Value) -> Option<(&str, Option<&str>)> {
    let inner = value.as_str()?.strip_prefix('<')?.strip_suffix('>')?;
    let word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    match inner.split_once(':') {
        Some((kind, name)) if word(kind) && word(name) => Some((kind, Some(name))),
        None if word(inner) => Some((inner, None)),
        _ => None,
    }
}

fn type_matches(kind: &str, value: &Value) -> Option<bool> {
    Some(match kind {
        "int" => value.is_i64() || value.is_u64(),
        "string" => value.is_string(),
        "bool" => value.is_boolean(),
        "hex" => value.as_str().is_some_and(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        }),
        _ => return None,
    })
}

/// Checks `actual` against `expected` (placeholders as the spec describes them), recording
/// captured values in `vars`.
fn check(
    expected: &Value,
    actual: &Value,
    vars: &mut HashMap<String, Value>,
    path: &str,
) -> Result<(), String> {
    if let Some((kind, name)) = placeholder(expected) {
        return match type_matches(kind, actual) {
            Some(true) => {
                if let Some(name) = name {
                    vars.insert(name.to_string(), actual.clone());
                }
                Ok(())
            }
            Some(false) => Err(format!("{path}: {actual} is not a {kind}")),
            None => match vars.get(kind) {
                Some(value) if value == actual => Ok(()),
                Some(value) => Err(format!("{path}: {actual}, expected <{kind}> = {value}")),
                None => Err(format!("{path}: unknown placeholder <{kind}>")),
            },
        };
    }
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let mut ek: Vec<&String> = e.keys().collect();
            let mut ak: Vec<&String> = a.keys().collect();
            ek.sort();
            ak.sort();
            if ek != ak {
                return Err(format!("{path}: members {ak:?}, expected {ek:?}"));
            }
            for (k, v) in e {
                check(v, &a[k], vars, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Err(format!(
                    "{path}: {} elements, expected {}",
                    a.len(),
                    e.len()
                ));
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                check(ev, av, vars, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        _ if expected == actual => Ok(()),
        _ => Err(format!("{path}: {actual}, expected {expected}")),
    }
}

/// The request with every `"<name>"` replaced by its value.
fn substitute(request: &Value, vars: &HashMap<String, Value>) -> Value {
    if let Some((name, None)) = placeholder(request) {
        return vars
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("a request uses <{name}>, which nothing defined"));
    }
    match request {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), substitute(v, vars)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| substitute(v, vars)).collect()),
        other => other.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_examples_replay() {
    let spec =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../specs/api.md")).unwrap();
    let examples = spec_examples(&spec);
    assert!(
        examples.len() > 40,
        "only {} examples found",
        examples.len()
    );
    let world = World::start().await;
    let mut vars: HashMap<String, Value> = HashMap::new();
    vars.insert("relay_a".into(), json!(world.relay_a.address));
    vars.insert("relay_b".into(), json!(world.relay_b.address));
    let mut replayed = 0;
    for example in &examples {
        let (server, log) = match example.home.as_str() {
            "alice" => (&world.alice, &world.alice_log),
            "bob" => (&world.bob, &world.bob_log),
            _ => continue,
        };
        let at = format!("specs/api.md line {} ({})", example.line, example.home);
        match &example.request {
            Some(request) => {
                let request = substitute(request, &vars);
                let answer = server.post_raw(&request.to_string()).await;
                if let Err(why) = check(&example.expected, &answer, &mut vars, "answer") {
                    panic!(
                        "{at}: {why}\n  request: {request}\n  answer:  {answer}\n  expected: {}",
                        example.expected
                    );
                }
            }
            None => {
                let expected = &example.expected;
                let found = log
                    .wait_for(&format!("{at}: {expected}"), |n| {
                        check(expected, n, &mut vars.clone(), "").is_ok()
                    })
                    .await;
                check(expected, &found, &mut vars, "").unwrap();
            }
        }
        replayed += 1;
    }
    let shown_only = examples.iter().filter(|e| e.home == "none").count();
    assert_eq!(replayed + shown_only, examples.len());
    assert!(shown_only <= 4, "{shown_only} examples are not replayed");
    eprintln!("replayed {replayed} examples of specs/api.md ({shown_only} shown only)");
}

// --- errors ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_cases() {
    let mut world = World::start().await;
    world.pair().await;
    let (alice, bob) = (&world.alice, &world.bob);

    // -32602: params missing, of the wrong type, unknown, or not an object.
    for (method, params) in [
        ("message.send", json!({"contact": "bob"})),
        ("message.send", json!({"contact": "bob", "text": 5})),
        ("message.send", json!({"contact": "bob", "txt": "hello"})),
        ("message.send", json!(["bob", "hello"])),
        (
            "message.history",
            json!({"contact": "bob", "after_seq": "one"}),
        ),
        ("contact.verify", json!({"contact": "bob", "mark": "yes"})),
        ("profile.rotation", json!({})),
        (
            "profile.create",
            json!({"name": "x", "relays": "petrel://..."}),
        ),
        ("profile.list", json!({"profile": "alice"})),
        (
            "connect",
            json!({"link": "PETREL:A", "image_base64": "AAAA"}),
        ),
        ("relay.pin", json!({"profile": 7, "address": "x"})),
    ] {
        alice.fails(method, params, CODE_INVALID_PARAMS).await;
    }

    // 2001 NO_PROFILE.
    for (method, params) in [
        (
            "message.send",
            json!({"profile": "ghost", "contact": "bob", "text": "hi"}),
        ),
        ("profile.use", json!({"name": "ghost"})),
        ("profile.delete", json!({"name": "ghost"})),
        ("profile.edit", json!({"profile": "ghost", "bio": "x"})),
        ("relay.status", json!({"profile": "ghost"})),
    ] {
        alice.fails(method, params, CODE_NO_PROFILE).await;
    }

    // 2015 PROFILE_EXISTS, 2014 INVALID_ARGUMENT.
    let relay_a = world.relay_a.address.clone();
    alice
        .fails(
            "profile.create",
            json!({"name": "alice", "relays": [relay_a]}),
            CODE_PROFILE_EXISTS,
        )
        .await;
    for (method, params) in [
        ("profile.create", json!({"name": "", "relays": [relay_a]})),
        (
            "profile.create",
            json!({"name": "x", "relays": [relay_a], "display_name": "d".repeat(65)}),
        ),
        (
            "profile.create",
            json!({"name": "x", "relays": [relay_a], "rotation_secs": 0}),
        ),
        (
            "profile.create",
            json!({"name": "x", "relays": vec![relay_a.clone(); 17]}),
        ),
        ("profile.edit", json!({"display_name": ""})),
        ("profile.edit", json!({"bio": "b".repeat(281)})),
        ("relay.pin", json!({"address": "nonsense"})),
        ("relay.unpin", json!({"address": world.relay_b.address})),
    ] {
        alice.fails(method, params, CODE_INVALID_ARGUMENT).await;
    }
    // None of the refused creations left a profile behind.
    assert_eq!(
        alice
            .ok("profile.list", json!({}))
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // 2002 NO_CONTACT.
    for (method, params) in [
        ("message.send", json!({"contact": "nobody", "text": "hi"})),
        ("message.history", json!({"contact": "nobody"})),
        ("contact.verify", json!({"contact": "nobody"})),
        ("contact.rotate", json!({"contact": "nobody"})),
        ("invite.rekey", json!({"contact": "nobody"})),
    ] {
        alice.fails(method, params, CODE_NO_CONTACT).await;
    }

    // 2011 TOO_LONG: one byte over the limit.
    alice
        .fails(
            "message.send",
            json!({"contact": "bob", "text": "x".repeat(8193)}),
            CODE_TOO_LONG,
        )
        .await;
    alice
        .ok(
            "message.send",
            json!({"contact": "bob", "text": "x".repeat(8192)}),
        )
        .await;

    // 2007 BAD_IMAGE: not base64; base64 but no image.
    bob.fails("connect", json!({"image_base64": "%%%"}), CODE_BAD_IMAGE)
        .await;
    let not_an_image = data_encoding::BASE64.encode(b"a text file, not a picture");
    bob.fails(
        "connect",
        json!({"image_base64": not_an_image}),
        CODE_BAD_IMAGE,
    )
    .await;

    // 2003 NOT_CONNECTED: Bob answers an invitation of a profile deleted since, so the
    // pairing never completes.
    alice
        .ok(
            "profile.create",
            json!({"name": "dave", "relays": [relay_a]}),
        )
        .await;
    let dave = alice.ok("invite.create", json!({"profile": "dave"})).await;
    let removed = alice.ok("profile.delete", json!({"name": "dave"})).await;
    assert_eq!(removed, json!({"removed": 1}), "the pending invitation");
    let answer = bob
        .ok("connect", json!({"link": dave["link"], "alias": "dave"}))
        .await;
    assert_eq!(answer["delivered"], true);
    for (method, params) in [
        ("message.send", json!({"contact": "dave", "text": "hi"})),
        ("invite.rekey", json!({"contact": "dave"})),
        ("contact.rotate", json!({"contact": "dave"})),
    ] {
        bob.fails(method, params, CODE_NOT_CONNECTED).await;
    }
    let contacts = bob.ok("contacts.list", json!({})).await;
    let dave = contacts
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["alias"] == "dave")
        .unwrap();
    assert_eq!(dave["state"], "awaiting_reply");

    // 2013 UNKNOWN_REKEY: Alice's re-key code for Bob, answered by another profile.
    let rekey = alice.ok("invite.rekey", json!({"contact": "bob"})).await;
    assert_eq!(rekey["purpose"], "rekey");
    bob.ok(
        "profile.create",
        json!({"name": "carol", "relays": [world.relay_b.address]}),
    )
    .await;
    bob.fails(
        "connect",
        json!({"profile": "carol", "link": rekey["link"]}),
        CODE_UNKNOWN_REKEY,
    )
    .await;

    // 2008 RELAY_UNREACHABLE: a profile whose only relay is gone. The engine's connection
    // attempt is refused, so the call fails with a typed error instead of hanging, and the
    // server goes on answering other calls.
    let mut gone = Relay::start(&world.dir.path().join("relay-gone"), "127.0.0.1:0");
    let gone_address = gone.address.clone();
    gone.kill();
    alice
        .ok(
            "profile.create",
            json!({"name": "lost", "relays": [gone_address]}),
        )
        .await;
    let slow_client = petrel_client::api::ApiClient::new(alice.addr, alice.token.clone());
    let answer = tokio::time::timeout(
        GUARD,
        slow_client.call("invite.create", json!({"profile": "lost"})),
    )
    .await
    .unwrap();
    match answer {
        Err(petrel_client::api::ApiError::Rpc(e)) => {
            assert_eq!(e.code, CODE_RELAY_UNREACHABLE, "{}", e.message)
        }
        other => panic!("invite.create on a dead relay: {other:?}"),
    }
    assert_eq!(
        alice
            .ok(
                "profile.rotation",
                json!({"profile": "alice", "period_secs": 86400})
            )
            .await,
        json!({"rotation_secs": 86400})
    );

    // SIGTERM: Bob's server stops cleanly and removes its discovery files.
    let serve_json = world.bob.home.join("serve.json");
    let token_file = world.bob.home.join("api-token");
    assert!(serve_json.exists() && token_file.exists());
    let status = world.bob.terminate();
    assert!(status.success(), "petrel serve exited with {status}");
    assert!(!serve_json.exists(), "serve.json is left behind");
    assert!(!token_file.exists(), "api-token is left behind");
    let (alice, alice_log) = (&world.alice, &world.alice_log);

    // 2010 BUSY: with Bob gone, a rotation Alice starts cannot finish, and a second one is
    // refused while it runs.
    alice.ok("contact.rotate", json!({"contact": "bob"})).await;
    alice_log
        .wait_event(
            "event.notice",
            json!({"profile": "alice", "text": "rotating the queue of bob"}),
        )
        .await;
    alice
        .fails("contact.rotate", json!({"contact": "bob"}), CODE_BUSY)
        .await;
}

// --- a profile made through the API --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_profile_pins_a_relay_and_pairs() {
    let world = World::start().await;
    let (alice, bob) = (&world.alice, &world.bob);
    let (relay_a, relay_b) = (&world.relay_a.address, &world.relay_b.address);

    let carol = alice
        .ok(
            "profile.create",
            json!({"name": "carol", "relays": [relay_a], "display_name": "Carol", "bio": "new here"}),
        )
        .await;
    assert_eq!(
        carol,
        json!({"name": "carol", "display_name": "Carol", "bio": "new here", "current": false,
               "relays": [relay_a], "rotation_secs": 604800})
    );
    let status = alice.relays_up("carol").await;
    assert_eq!(status["relays"], json!([{"relay": relay_a, "up": true}]));

    // A second relay: the engine restarts and keeps sessions with both.
    let relays = alice
        .ok("relay.pin", json!({"profile": "carol", "address": relay_b}))
        .await;
    assert_eq!(relays, json!([relay_a, relay_b]));
    let status = alice.relays_up("carol").await;
    let mut shown: Vec<&str> = status["relays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["relay"].as_str().unwrap())
        .collect();
    shown.sort_unstable();
    let mut both = vec![relay_a.as_str(), relay_b.as_str()];
    both.sort_unstable();
    assert_eq!(shown, both);

    // Carol is made current; calls without `profile` act on her.
    assert_eq!(
        alice.ok("profile.use", json!({"name": "carol"})).await,
        json!({"current": "carol"})
    );
    let invitation = alice.ok("invite.create", json!({"alias": "bob"})).await;
    let link = invitation["link"].as_str().unwrap();

    // Bob answers from a photo of the QR code.
    let payload = petrel_qr::Payload::from_link(link).unwrap();
    let png = petrel_qr::QrCode::new(&payload).unwrap().to_png(8).unwrap();
    let answer = bob
        .ok(
            "connect",
            json!({"image_base64": data_encoding::BASE64.encode(&png), "alias": "carol"}),
        )
        .await;
    assert_eq!(
        answer,
        json!({"contact": "carol", "trust": "scanned", "delivered": true})
    );
    world
        .alice_log
        .wait_event(
            "event.contact_connected",
            json!({"profile": "carol", "contact": "bob"}),
        )
        .await;
    world
        .bob_log
        .wait_event(
            "event.contact_connected",
            json!({"profile": "bob", "contact": "carol"}),
        )
        .await;

    // Messages both ways; Alice's own profile is untouched.
    bob.ok(
        "message.send",
        json!({"contact": "carol", "text": "hi Carol"}),
    )
    .await;
    world
        .alice_log
        .wait_event(
            "event.message",
            json!({"profile": "carol", "contact": "bob", "text": "hi Carol"}),
        )
        .await;
    alice
        .ok(
            "message.send",
            json!({"contact": "bob", "text": "hi Bob, Carol here"}),
        )
        .await;
    world
        .bob_log
        .wait_event(
            "event.message",
            json!({"profile": "bob", "contact": "carol", "text": "hi Bob, Carol here"}),
        )
        .await;
    let contacts = alice.ok("contacts.list", json!({})).await;
    assert_eq!(contacts[0]["alias"], "bob");
    assert_eq!(contacts[0]["display_name"], "Bob");
    assert_eq!(
        alice.ok("contacts.list", json!({"profile": "alice"})).await,
        json!([])
    );
    let bobs = bob.ok("contacts.list", json!({})).await;
    assert_eq!(bobs[0]["display_name"], "Carol");
    assert_eq!(bobs[0]["bio"], "new here");

    // Deleting her stops her engine and removes her records.
    let removed = alice.ok("profile.delete", json!({"name": "carol"})).await;
    assert!(removed["removed"].as_u64().unwrap() >= 3, "{removed}");
    alice
        .fails("relay.status", json!({"profile": "carol"}), CODE_NO_PROFILE)
        .await;
    // No profile is current now.
    alice
        .fails("contacts.list", json!({}), CODE_NO_PROFILE)
        .await;
}
