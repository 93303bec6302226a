//! Issue 6 ("Done when"), against real `petrel-relay` processes on loopback:
//!
//! * [`five_relays_four_clients_exactly_once_in_order`]: five relays, four clients in
//!   different combinations of forwarding and destination relay — two share a forwarding
//!   relay and a destination, so their forwards are mixed on one peer session; one sends
//!   to a queue on its own relay, so it SENDs directly (that relay runs with forwarding
//!   off, so a FORWARD could not have passed). Every numbered message arrives exactly once
//!   and in order per queue.
//! * [`cut_path_loses_nothing_and_forwarding_relay_learns_nothing`]: a TCP proxy in the
//!   test sits between a forwarding relay and the destination; cutting it turns forwards
//!   into `ACCEPTED` outbox entries, and once it passes bytes again each arrives exactly
//!   once and FORWARD_STATUS reports the sealed `OK`. The same run searches the bytes the
//!   forwarding relay receives (FORWARD frames) and stores (its data directory) for queue
//!   IDs and for delivered ciphertext, with positive controls on the destination.
//! * [`killed_destination_loses_nothing_and_stores_nothing_twice`]: the destination is
//!   SIGKILLed with forwards in flight and restarted on its port.
//! * [`latency_and_throughput_two_relays_vs_one`]: printed, not asserted.
//! * [`outbox_keeps_send_order_across_an_outage`] (ignored): documents that messages
//!   accepted into the outbox during an outage are delivered out of order.
//!
//! Synchronisation is by events only (deliveries, replies, FORWARD_STATUS long polls, the
//! proxy's own state); every wait has a generous timeout that fails the test rather than
//! hanging it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Owner, RelayProcess, auth_for, body, connect};
use ed25519_dalek::SigningKey;
use petrel_federation::auth::Auth;
use petrel_federation::client::{ClientFrame, Command, RelayFrame, Response};
use petrel_federation::delivery::DeliveryKind;
use petrel_federation::peer::SignedRelayInfo;
use petrel_federation::seal::{EnvelopeKey, ForwardedRequest, ResponseOpener};
use petrel_federation::transport::connection::RelayConnection;
use petrel_federation::{
    Endpoint, Host, KeyHash, MsgId, QueueId, RelayAddress, RelayKey, TransportKind, frame,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// Longest wait for any single event; reaching it is a failure, never a synchronisation.
const WAIT: Duration = Duration::from_secs(30);

/// The protocol version `RelayConnection` encodes its frames for.
const VERSION: u8 = 1;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------------------------------
// Relays
// ---------------------------------------------------------------------------------------

/// A config file shared by the test's relays: outbox retries back off to at most one
/// second, so a destination that comes back is retried promptly.
fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("relay.toml");
    std::fs::write(&path, "[limits]\nforward_retry_max_secs = 1\n").unwrap();
    path
}

/// Starts a relay that forwards to loopback and retries its outbox quickly.
fn start_relay(dir: &Path, config: &Path, extra: &[&str]) -> RelayProcess {
    let mut args = vec![
        "--forward-to-private",
        "--forward-retry-min-ms",
        "50",
        "--config",
        config.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    RelayProcess::start(dir, &args)
}

fn loopback(port: u16) -> Endpoint {
    Endpoint {
        transport: TransportKind::Tcp,
        host: Host::Ipv4([127, 0, 0, 1]),
        port,
    }
}

fn port_of(address: &RelayAddress) -> u16 {
    address.endpoints()[0].port
}

/// SIGTERM, and check the relay stopped cleanly (its store is complete on disk).
fn stop(relay: RelayProcess) {
    let status = relay.terminate();
    assert!(status.success(), "relay exited with {status}");
}

// ---------------------------------------------------------------------------------------
// Recipients
// ---------------------------------------------------------------------------------------

/// A queue owner's session with the queue's relay, subscribed.
struct Recipient {
    conn: RelayConnection,
    owner: Owner,
    /// Messages whose ACK the relay confirmed: they must never be delivered again.
    acked: HashSet<MsgId>,
}

/// One delivery, opened.
struct Received {
    text: String,
    msg_id: MsgId,
    ciphertext: Vec<u8>,
    /// When the delivery frame reached the recipient.
    at: Instant,
}

impl Recipient {
    async fn create(relay: &RelayAddress, seed: u8) -> Recipient {
        let conn = connect(relay).await;
        let owner = Owner::create(&conn, seed, true).await;
        Recipient {
            conn,
            owner,
            acked: HashSet::new(),
        }
    }

    fn rid(&self) -> QueueId {
        self.owner.created.recipient_id
    }

    fn sid(&self) -> QueueId {
        self.owner.created.sender_id
    }

    async fn command(&self, command: Command) {
        let response =
            tokio::time::timeout(WAIT, self.conn.request(Some(&self.owner.key), command))
                .await
                .expect("no answer from the recipient's relay")
                .unwrap();
        assert_eq!(response, Response::Ok);
    }

    /// Only the holder of `sender`'s key may send from now on.
    async fn secure(&self, sender: &SigningKey) {
        self.command(Command::Secure {
            recipient_id: self.rid(),
            sender_key_hash: KeyHash::of(&sender.verifying_key().to_bytes()),
        })
        .await;
    }

    /// Accept SENDs only through these relays.
    async fn restrict(&self, forwarders: &[RelayKey]) {
        self.command(Command::Restrict {
            recipient_id: self.rid(),
            forwarders: forwarders.to_vec(),
        })
        .await;
    }

    /// The next delivery, opened, without acknowledging it.
    async fn peek(&mut self) -> Received {
        let event = tokio::time::timeout(WAIT, self.conn.next_event())
            .await
            .expect("no delivery in time")
            .expect("the recipient's session ended");
        let at = Instant::now();
        let RelayFrame::Deliver(d) = event else {
            panic!("expected a delivery, got {event:?}");
        };
        assert!(
            !self.acked.contains(&d.msg_id),
            "the relay delivered a message again after confirming its ACK"
        );
        let opened = self.owner.open(&d);
        assert_eq!(opened.kind, DeliveryKind::Message);
        let text = petrel_federation::padding::unpad(&opened.body).unwrap();
        Received {
            text: String::from_utf8(text.to_vec()).unwrap(),
            msg_id: d.msg_id,
            ciphertext: d.ciphertext,
            at,
        }
    }

    /// The next delivery, opened and acknowledged (the ACK confirmed by the relay).
    async fn next(&mut self) -> Received {
        let received = self.peek().await;
        self.command(Command::Ack {
            recipient_id: self.rid(),
            msg_id: received.msg_id,
        })
        .await;
        self.acked.insert(received.msg_id);
        received
    }

    /// A new session with the (restarted) relay, subscribed again.
    async fn reconnect(&mut self, relay: &RelayAddress) {
        self.conn = connect(relay).await;
        self.command(Command::Subscribe {
            recipient_id: self.rid(),
        })
        .await;
    }
}

// ---------------------------------------------------------------------------------------
// Senders
// ---------------------------------------------------------------------------------------

/// How a sender reaches the queue's relay.
enum Route {
    /// Its own relay is the destination: a plain SEND, nothing forwarded.
    Direct,
    /// FORWARD through its own relay, sealed to the destination's key.
    Forward {
        destination: RelayAddress,
        sealing: [u8; 32],
    },
}

/// A sender's session with its own (forwarding) relay.
struct Sender {
    conn: RelayConnection,
    key: SigningKey,
    sid: QueueId,
    route: Route,
    /// The `corr` `RelayConnection` gives its next command (it counts from 1).
    next_corr: u32,
    /// Every FORWARD frame sent, encoded exactly as `RelayConnection::submit` encodes it.
    frames: Vec<Vec<u8>>,
}

/// A command on its way.
enum Pending {
    Direct(oneshot::Receiver<Response>),
    Forward(oneshot::Receiver<Response>, ResponseOpener),
}

/// How a SEND ended for the sender.
enum Outcome {
    /// `OK` (for a forward: the destination's sealed `OK`).
    Ok,
    /// Accepted into the forwarding relay's outbox.
    Accepted(MsgId, ResponseOpener),
}

async fn reply(rx: oneshot::Receiver<Response>) -> Response {
    tokio::time::timeout(WAIT, rx)
        .await
        .expect("no answer in time")
        .expect("the session ended before the answer")
}

fn open_ok(opener: &ResponseOpener, response: Response) {
    match response {
        Response::Forwarded(sealed) => assert_eq!(opener.open(&sealed).unwrap(), Response::Ok),
        other => panic!("expected the destination's sealed answer, got {other:?}"),
    }
}

impl Pending {
    async fn outcome(self) -> Outcome {
        match self {
            Pending::Direct(rx) => {
                assert_eq!(reply(rx).await, Response::Ok);
                Outcome::Ok
            }
            Pending::Forward(rx, opener) => match reply(rx).await {
                Response::Accepted { forward_id } => Outcome::Accepted(forward_id, opener),
                other => {
                    open_ok(&opener, other);
                    Outcome::Ok
                }
            },
        }
    }
}

impl Outcome {
    fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }
}

impl Sender {
    /// Connects to `own` and, when the queue lives elsewhere, fetches the destination's
    /// sealing key through `own` (verified against the destination's address key).
    async fn new(own: &RelayAddress, destination: &RelayAddress, sid: QueueId, seed: u8) -> Sender {
        let mut sender = Sender {
            conn: connect(own).await,
            key: SigningKey::from_bytes(&[seed; 32]),
            sid,
            route: Route::Direct,
            next_corr: 1,
            frames: Vec::new(),
        };
        if own.key() != destination.key() {
            let info = Command::RelayInfo {
                relay: destination.clone(),
            };
            let rx = sender.submit_command(None, info).await;
            let info: SignedRelayInfo = match reply(rx).await {
                Response::RelayInfo(info) => info,
                other => panic!("RELAY_INFO: {other:?}"),
            };
            let sealing = info.verify(destination.key(), now()).unwrap().sealing_key;
            sender.route = Route::Forward {
                destination: destination.clone(),
                sealing,
            };
        }
        sender
    }

    async fn submit_command(
        &mut self,
        auth: Option<Auth>,
        command: Command,
    ) -> oneshot::Receiver<Response> {
        let corr = self.next_corr;
        self.next_corr += 1;
        if matches!(command, Command::Forward { .. }) {
            let frame = ClientFrame {
                corr,
                auth,
                command: command.clone(),
            };
            self.frames.push(frame::encode(VERSION, &frame).unwrap());
        }
        self.conn.submit(auth, command).await.unwrap()
    }

    /// Submits one message (signed by the sender key when `signed`) without waiting.
    async fn submit(&mut self, text: &str, signed: bool) -> Pending {
        let send = Command::Send {
            sender_id: self.sid,
            body: body(text.as_bytes()),
        };
        let (destination, sealing) = match &self.route {
            Route::Direct => {
                let auth = signed.then(|| auth_for(&self.conn, &self.key, &send));
                return Pending::Direct(self.submit_command(auth, send).await);
            }
            Route::Forward {
                destination,
                sealing,
            } => (destination.clone(), *sealing),
        };
        let eph = EnvelopeKey::generate(&mut rand::rng());
        let auth = signed.then(|| Auth::sign(&self.key, &eph.public(), &send).unwrap());
        let request = ForwardedRequest {
            sent_at: now(),
            auth,
            command: send,
        };
        let (envelope, opener) = eph.seal(&sealing, &request).unwrap();
        let forward = Command::Forward {
            destination,
            envelope,
        };
        Pending::Forward(self.submit_command(None, forward).await, opener)
    }

    async fn send(&mut self, text: &str, signed: bool) -> Outcome {
        self.submit(text, signed).await.outcome().await
    }

    /// Sends every text signed, with up to `window` commands in flight, and returns the
    /// outcomes in order.
    async fn send_all(&mut self, texts: &[String], window: usize) -> Vec<Outcome> {
        let mut in_flight = VecDeque::new();
        let mut outcomes = Vec::with_capacity(texts.len());
        for text in texts {
            if in_flight.len() >= window {
                let oldest: Pending = in_flight.pop_front().unwrap();
                outcomes.push(oldest.outcome().await);
            }
            in_flight.push_back(self.submit(text, true).await);
        }
        while let Some(pending) = in_flight.pop_front() {
            outcomes.push(pending.outcome().await);
        }
        outcomes
    }

    /// FORWARD_STATUS, long-polling up to `wait_secs`.
    async fn status(&mut self, forward_id: MsgId, wait_secs: u8) -> oneshot::Receiver<Response> {
        let status = Command::ForwardStatus {
            forward_id,
            wait_secs,
        };
        self.submit_command(None, status).await
    }

    /// Waits (long polls, all in flight at once) until every accepted forward has its
    /// final answer, and checks each is the destination's sealed `OK`.
    async fn await_accepted(&mut self, accepted: Vec<(MsgId, ResponseOpener)>) {
        let mut polls = Vec::new();
        for (id, opener) in accepted {
            polls.push((id, self.status(id, 30).await, opener));
        }
        for (id, rx, opener) in polls {
            let mut response = reply(rx).await;
            // A forward still pending after a full long poll is asked again.
            while response == Response::Pending {
                response = reply(self.status(id, 30).await).await;
            }
            open_ok(&opener, response);
        }
    }
}

fn numbered(label: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{label} #{i:04}")).collect()
}

fn accepted(outcomes: Vec<Outcome>) -> Vec<(MsgId, ResponseOpener)> {
    outcomes
        .into_iter()
        .filter_map(|o| match o {
            Outcome::Accepted(id, opener) => Some((id, opener)),
            Outcome::Ok => None,
        })
        .collect()
}

/// The unsigned first message, then SECURE with the sender's key (as a real contact
/// confirmation does). Everything after it is signed.
async fn confirm(label: &str, sender: &mut Sender, recipient: &mut Recipient) {
    let hello = format!("{label} hello");
    assert!(sender.send(&hello, false).await.is_ok());
    assert_eq!(recipient.next().await.text, hello);
    recipient.secure(&sender.key).await;
}

// ---------------------------------------------------------------------------------------
// Byte searches
// ---------------------------------------------------------------------------------------

/// What must never appear in what a forwarding relay sees or stores: queue IDs, and any
/// 32-byte window of a ciphertext the destination delivered.
///
/// Every 32-byte window of a ciphertext contains one of its 16-byte chunks at an offset
/// that is a multiple of 16, so the search indexes those chunks (and the 16-byte IDs),
/// scans each haystack position once, and confirms a chunk hit by extending it to the
/// longest common run (a hit needs 32 bytes).
struct Secrets {
    ids: HashMap<u128, String>,
    chunks: HashMap<u128, Vec<(usize, usize)>>,
    ciphertexts: Vec<(String, Vec<u8>)>,
    /// Bit per 24-bit prefix of any needle, to skip most positions cheaply.
    prefixes: Vec<u64>,
}

fn key16(bytes: &[u8]) -> u128 {
    u128::from_le_bytes(bytes[..16].try_into().unwrap())
}

fn prefix24(bytes: &[u8]) -> usize {
    usize::from(bytes[0]) | usize::from(bytes[1]) << 8 | usize::from(bytes[2]) << 16
}

impl Secrets {
    fn new() -> Secrets {
        Secrets {
            ids: HashMap::new(),
            chunks: HashMap::new(),
            ciphertexts: Vec::new(),
            prefixes: vec![0; (1 << 24) / 64],
        }
    }

    fn mark(&mut self, bytes: &[u8]) {
        let p = prefix24(bytes);
        self.prefixes[p / 64] |= 1 << (p % 64);
    }

    fn id(&mut self, label: &str, id: &QueueId) {
        self.mark(&id.0);
        self.ids.insert(key16(&id.0), label.to_string());
    }

    fn ciphertext(&mut self, label: &str, ciphertext: &[u8]) {
        assert!(ciphertext.len() >= 32);
        let index = self.ciphertexts.len();
        for offset in (0..=ciphertext.len() - 16).step_by(16) {
            self.mark(&ciphertext[offset..]);
            self.chunks
                .entry(key16(&ciphertext[offset..]))
                .or_default()
                .push((index, offset));
        }
        self.ciphertexts
            .push((label.to_string(), ciphertext.to_vec()));
    }

    /// Descriptions of every secret found in `haystack`.
    fn find(&self, haystack: &[u8]) -> Vec<String> {
        let mut hits = Vec::new();
        if haystack.len() < 16 {
            return hits;
        }
        for pos in 0..=haystack.len() - 16 {
            let p = prefix24(&haystack[pos..]);
            if self.prefixes[p / 64] & (1 << (p % 64)) == 0 {
                continue;
            }
            let key = key16(&haystack[pos..]);
            if let Some(label) = self.ids.get(&key) {
                hits.push(format!("{label} at byte {pos}"));
            }
            for &(index, offset) in self.chunks.get(&key).into_iter().flatten() {
                let (label, ct) = &self.ciphertexts[index];
                let back = (1..=offset.min(pos))
                    .take_while(|k| haystack[pos - k] == ct[offset - k])
                    .count();
                let forward = (0..(ct.len() - offset).min(haystack.len() - pos))
                    .take_while(|&k| haystack[pos + k] == ct[offset + k])
                    .count();
                if back + forward >= 32 {
                    hits.push(format!(
                        "{back_plus_fwd} bytes of {label} at byte {start}",
                        back_plus_fwd = back + forward,
                        start = pos - back
                    ));
                }
            }
        }
        hits
    }

    /// Hits in every file under `dir`, named by file.
    fn find_in_dir(&self, dir: &Path) -> Vec<String> {
        let mut hits = Vec::new();
        let mut files = 0;
        let mut bytes = 0;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.is_file() {
                    let data = std::fs::read(&path).unwrap();
                    files += 1;
                    bytes += data.len();
                    for hit in self.find(&data) {
                        hits.push(format!("{}: {hit}", path.display()));
                    }
                }
            }
        }
        assert!(
            files >= 3 && bytes > 0,
            "{} holds no relay files",
            dir.display()
        );
        hits
    }
}

// ---------------------------------------------------------------------------------------
// The TCP proxy
// ---------------------------------------------------------------------------------------

/// A TCP proxy on 127.0.0.1:0 in front of `upstream`, which can stop passing bytes: a cut
/// closes every spliced connection and, until restored, closes new ones as soon as they
/// are accepted.
struct Proxy {
    port: u16,
    passing: Arc<watch::Sender<bool>>,
    splices: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// Every byte passed, both directions.
    seen: Arc<Mutex<Vec<u8>>>,
    /// Connections accepted while cut (and closed at once).
    refused: Arc<watch::Sender<usize>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let passing = Arc::new(watch::channel(true).0);
        let splices: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let seen: Arc<Mutex<Vec<u8>>> = Arc::default();
        let refused = Arc::new(watch::channel(0usize).0);
        let accept = {
            let (passing, splices, seen, refused) = (
                passing.clone(),
                splices.clone(),
                seen.clone(),
                refused.clone(),
            );
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    if !*passing.borrow() {
                        refused.send_modify(|n| *n += 1);
                        drop(client);
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        continue;
                    };
                    let task =
                        tokio::spawn(splice(client, server, passing.subscribe(), seen.clone()));
                    splices.lock().unwrap().push(task);
                }
            })
        };
        Proxy {
            port,
            passing,
            splices,
            seen,
            refused,
            accept,
        }
    }

    /// Stops passing bytes; returns once every spliced connection is closed.
    async fn cut(&self) {
        self.passing.send_replace(false);
        let tasks = std::mem::take(&mut *self.splices.lock().unwrap());
        for task in tasks {
            task.await.unwrap();
        }
    }

    fn restore(&self) {
        self.passing.send_replace(true);
    }

    /// Returns once `n` connections have been refused since the proxy started.
    async fn wait_refused(&self, n: usize) {
        let mut refused = self.refused.subscribe();
        tokio::time::timeout(WAIT, refused.wait_for(|c| *c >= n))
            .await
            .expect("the forwarding relay never tried the cut path")
            .unwrap();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.splices.lock().unwrap().iter() {
            task.abort();
        }
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    seen: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        seen.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Passes bytes both ways until either side closes or the proxy is cut; then both sockets
/// are dropped (closed).
async fn splice(
    client: TcpStream,
    server: TcpStream,
    mut passing: watch::Receiver<bool>,
    seen: Arc<Mutex<Vec<u8>>>,
) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        biased;
        _ = passing.wait_for(|p| !*p) => {}
        _ = pipe(client_read, server_write, seen.clone()) => {}
        _ = pipe(server_read, client_write, seen) => {}
    }
}

// ---------------------------------------------------------------------------------------
// 1. Five relays, four clients
// ---------------------------------------------------------------------------------------

/// Messages per sender in the network test.
const PER_PAIR: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_relays_four_clients_exactly_once_in_order() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path());
    let dirs: Vec<PathBuf> = (0..5).map(|i| tmp.path().join(format!("r{i}"))).collect();
    // R4 refuses FORWARD altogether: the client whose queue is on its own relay can only
    // have reached it with plain SENDs.
    let relays: Vec<RelayProcess> = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let extra: &[&str] = if i == 4 {
                &["--forwarding", "off"]
            } else {
                &[]
            };
            start_relay(dir, &config, extra)
        })
        .collect();
    let addr = |i: usize| relays[i].address.clone();

    // (client, its own relay, the relay of the queue it writes to)
    //   A and B: R0 → R1, the same peer session, forwards mixed;
    //   C: R2 → R3; D: R4 is both, direct SEND.
    let plan = [("A", 0, 1), ("B", 0, 1), ("C", 2, 3), ("D", 4, 4)];
    let mut pairs = Vec::new();
    for (i, &(label, own, dest)) in plan.iter().enumerate() {
        let mut recipient = Recipient::create(&addr(dest), 10 + i as u8).await;
        let mut sender = Sender::new(&addr(own), &addr(dest), recipient.sid(), 50 + i as u8).await;
        assert_eq!(matches!(sender.route, Route::Direct), own == dest);
        confirm(label, &mut sender, &mut recipient).await;
        pairs.push((label, recipient, sender));
    }
    // A's owner pinned R0: its queue takes forwards from R0 only.
    pairs[0].1.restrict(&[*addr(0).key()]).await;

    // All four senders at once, each pipelined, each recipient acknowledging as it goes.
    let mut running = Vec::new();
    for (label, mut recipient, mut sender) in pairs {
        let texts = numbered(label, PER_PAIR);
        let expected = texts.clone();
        let receiving = tokio::spawn(async move {
            let mut ciphertexts = Vec::new();
            for want in &expected {
                let got = recipient.next().await;
                assert_eq!(&got.text, want, "queue of {label}: out of order or lost");
                ciphertexts.push(got.ciphertext);
            }
            (recipient, ciphertexts)
        });
        let sending = tokio::spawn(async move {
            let outcomes = sender.send_all(&texts, 16).await;
            // A healthy network answers every forward synchronously with the sealed OK.
            assert!(
                outcomes.iter().all(Outcome::is_ok),
                "{label}: a forward was not OK"
            );
            sender
        });
        running.push((label, sending, receiving));
    }
    let mut secrets = Secrets::new();
    let mut finished = Vec::new();
    for (label, sending, receiving) in running {
        let mut sender = sending.await.unwrap();
        let (mut recipient, ciphertexts) = receiving.await.unwrap();
        // Nothing was stored twice: the next message after the last numbered one is the
        // end marker sent now.
        let end = format!("{label} end");
        assert!(sender.send(&end, true).await.is_ok());
        let got = recipient.next().await;
        assert_eq!(
            got.text, end,
            "queue of {label}: a duplicate came before the end"
        );
        secrets.id(&format!("{label}'s sender ID"), &recipient.sid());
        secrets.id(&format!("{label}'s recipient ID"), &recipient.rid());
        for (i, ct) in ciphertexts.iter().chain([&got.ciphertext]).enumerate() {
            secrets.ciphertext(&format!("{label}'s delivery {i}"), ct);
        }
        finished.push((label, sender, recipient));
    }
    println!(
        "network: 4 clients x {PER_PAIR} messages through 5 relays in {:?}",
        started.elapsed()
    );

    // What the forwarding relays received from clients: no queue ID, no delivered bytes.
    for (label, sender, _) in &finished {
        for frame in &sender.frames {
            assert_eq!(
                secrets.find(frame),
                Vec::<String>::new(),
                "{label}'s FORWARD"
            );
        }
    }
    for (_, sender, recipient) in finished {
        sender.conn.close().await;
        recipient.conn.close().await;
    }
    // What they stored: R0 and R2 only ever forwarded.
    let mut relays = relays.into_iter().map(Some).collect::<Vec<_>>();
    for relay in &mut relays {
        stop(relay.take().unwrap());
    }
    for i in [0, 2] {
        assert_eq!(
            secrets.find_in_dir(&dirs[i]),
            Vec::<String>::new(),
            "forwarding relay R{i}"
        );
    }
    // The same search finds the queues where they live.
    for (i, labels) in [(1, &["A", "B"][..]), (3, &["C"][..]), (4, &["D"][..])] {
        let hits = secrets.find_in_dir(&dirs[i]);
        for label in labels {
            assert!(
                hits.iter()
                    .any(|h| h.contains(&format!("{label}'s sender ID"))),
                "R{i} should hold {label}'s sender ID: {hits:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 2 + 3. Cutting the path between two relays; what the forwarding relay sees and stores
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_path_loses_nothing_and_forwarding_relay_learns_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path());
    let (fwd_dir, dest_dir) = (tmp.path().join("fwd"), tmp.path().join("dest"));
    let fwd = start_relay(&fwd_dir, &config, &[]);
    let dest = start_relay(&dest_dir, &config, &[]);
    let proxy = Proxy::start(port_of(&dest.address)).await;
    // The client names the destination by its key at the proxy's port: the forwarding
    // relay reaches it only through the proxy, and still checks its key.
    let through_proxy = RelayAddress::new(*dest.address.key(), vec![loopback(proxy.port)]).unwrap();

    let mut recipient = Recipient::create(&dest.address, 31).await;
    let mut sender = Sender::new(&fwd.address, &through_proxy, recipient.sid(), 32).await;
    confirm("P", &mut sender, &mut recipient).await;
    recipient.restrict(&[*fwd.address.key()]).await;

    // Through the proxy, pipelined, in order.
    let before = numbered("before the cut", 20);
    let outcomes = sender.send_all(&before, 20).await;
    assert!(outcomes.iter().all(Outcome::is_ok));
    let mut delivered = Vec::new();
    for want in &before {
        let got = recipient.next().await;
        assert_eq!(&got.text, want);
        delivered.push(got.ciphertext);
    }

    // Cut: every forward goes into the outbox.
    proxy.cut().await;
    let during = numbered("during the cut", 20);
    let outcomes = sender.send_all(&during, 20).await;
    assert!(
        outcomes.iter().all(|o| !o.is_ok()),
        "a forward passed a cut path"
    );
    let accepted = accepted(outcomes);
    assert_eq!(accepted.len(), during.len());
    let still = reply(sender.status(accepted[0].0, 0).await).await;
    assert_eq!(still, Response::Pending);
    // The outbox keeps retrying through the cut (each dial refused by the proxy).
    proxy.wait_refused(2).await;

    // Restore: the outbox delivers each once; FORWARD_STATUS reports each sealed OK.
    proxy.restore();
    let statuses = {
        let mut polls = Vec::new();
        for (id, opener) in accepted {
            polls.push((sender.status(id, 30).await, opener));
        }
        polls
    };
    let mut arrived = HashSet::new();
    for _ in 0..during.len() {
        let got = recipient.next().await;
        assert!(during.contains(&got.text), "unexpected {:?}", got.text);
        assert!(arrived.insert(got.text.clone()), "{:?} twice", got.text);
        delivered.push(got.ciphertext);
    }
    for (rx, opener) in statuses {
        open_ok(&opener, reply(rx).await);
    }

    // The path works synchronously again, in order; then an end marker, left unacknowledged
    // at the destination for the positive control below. Anything stored twice would come
    // before it.
    let after = numbered("after the cut", 10);
    assert!(sender.send_all(&after, 10).await.iter().all(Outcome::is_ok));
    for want in &after {
        let got = recipient.next().await;
        assert_eq!(&got.text, want);
        delivered.push(got.ciphertext);
    }
    assert!(sender.send("end", true).await.is_ok());
    let end = recipient.peek().await;
    assert_eq!(end.text, "end", "a duplicate came before the end");

    // 3 (a): the FORWARD frames the forwarding relay received.
    let mut secrets = Secrets::new();
    secrets.id("the sender ID", &recipient.sid());
    secrets.id("the recipient ID", &recipient.rid());
    for (i, ct) in delivered.iter().enumerate() {
        secrets.ciphertext(&format!("delivery {i}"), ct);
    }
    secrets.ciphertext("the unacknowledged end", &end.ciphertext);
    assert_eq!(
        sender.frames.len(),
        1 + before.len() + during.len() + after.len() + 1
    );
    for frame in &sender.frames {
        assert_eq!(secrets.find(frame), Vec::<String>::new(), "a FORWARD frame");
    }
    // The search would see them: a direct SEND of the same message carries the sender ID,
    // and a delivery frame carries its ciphertext.
    let direct = ClientFrame {
        corr: 1,
        auth: None,
        command: Command::Send {
            sender_id: recipient.sid(),
            body: body(b"end"),
        },
    };
    let hits = secrets.find(&frame::encode(VERSION, &direct).unwrap());
    assert!(hits.iter().any(|h| h.contains("the sender ID")), "{hits:?}");
    let deliver = RelayFrame::Deliver(petrel_federation::client::Delivery {
        recipient_id: recipient.rid(),
        msg_id: end.msg_id,
        ciphertext: end.ciphertext.clone(),
    });
    let hits = secrets.find(&frame::encode(VERSION, &deliver).unwrap());
    assert!(hits.iter().any(|h| h.contains("the unacknowledged end")));
    assert!(hits.iter().any(|h| h.contains("the recipient ID")));
    // Between the relays the bytes are Noise-encrypted: a sanity check only.
    let wire = proxy.seen.lock().unwrap().clone();
    assert!(
        wire.len() > 50 * 2048,
        "the proxy passed only {} bytes",
        wire.len()
    );
    assert_eq!(
        secrets.find(&wire),
        Vec::<String>::new(),
        "relay-to-relay bytes"
    );

    // 3 (b): what the forwarding relay stored (after a clean stop), against the
    // destination's files, where the same search finds the queue and the waiting message.
    sender.conn.close().await;
    recipient.conn.close().await;
    stop(fwd);
    stop(dest);
    assert_eq!(
        secrets.find_in_dir(&fwd_dir),
        Vec::<String>::new(),
        "the forwarding relay's files"
    );
    let hits = secrets.find_in_dir(&dest_dir);
    for needle in [
        "the sender ID",
        "the recipient ID",
        "the unacknowledged end",
    ] {
        assert!(
            hits.iter().any(|h| h.contains(needle)),
            "the destination's files should hold {needle}: {hits:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 4. Killing the destination with forwards in flight
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_destination_loses_nothing_and_stores_nothing_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path());
    let dest_dir = tmp.path().join("dest");
    let fwd = start_relay(&tmp.path().join("fwd"), &config, &[]);
    let dest = start_relay(&dest_dir, &config, &[]);
    let dest_addr = dest.address.clone();
    let dest_port = port_of(&dest_addr);

    let mut recipient = Recipient::create(&dest_addr, 41).await;
    let mut sender = Sender::new(&fwd.address, &dest_addr, recipient.sid(), 42).await;
    confirm("K", &mut sender, &mut recipient).await;

    // Every message submitted at once; the destination works through them one by one.
    let mut flight = numbered("in flight", 60);
    let mut pending = Vec::new();
    for text in &flight {
        pending.push(sender.submit(text, true).await);
    }
    let mut seen: HashMap<String, MsgId> = HashMap::new();
    for want in &flight[..5] {
        let got = recipient.next().await;
        assert_eq!(&got.text, want);
        seen.insert(got.text, got.msg_id);
    }
    // Freeze the destination (SIGSTOP) and submit a few more: those are certainly in
    // flight when it dies, whatever the machine's load did to the first batch (of which
    // any number, even all, may have been stored and answered by now). Then SIGKILL.
    let pid = dest.child.id().to_string();
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    assert!(stopped.success());
    for text in numbered("frozen", 5) {
        pending.push(sender.submit(&text, true).await);
        flight.push(text);
    }
    dest.kill();
    let mut outcomes = Vec::new();
    for p in pending {
        outcomes.push(p.outcome().await);
    }
    let answered = outcomes.iter().filter(|o| o.is_ok()).count();
    let mut accepted = accepted(outcomes);
    assert!(
        accepted.len() >= 5,
        "the forwards submitted to the frozen destination were answered OK"
    );
    // While it is down, more go into the outbox.
    let down = numbered("while down", 10);
    let outcomes = sender.send_all(&down, 10).await;
    assert!(outcomes.iter().all(|o| !o.is_ok()));
    accepted.extend(self::accepted(outcomes));
    println!(
        "kill: {answered} forwards answered before the kill, {} accepted into the outbox",
        accepted.len()
    );

    // Back on the same port, with the same store.
    let port_arg = format!("127.0.0.1:{dest_port}");
    let dest = start_relay(&dest_dir, &config, &["--listen", &port_arg]);
    assert_eq!(dest.address.key(), dest_addr.key());
    assert!(dest.address.endpoints().contains(&dest_addr.endpoints()[0]));
    recipient.reconnect(&dest_addr).await;
    sender.await_accepted(accepted).await;
    // Every outcome is final; an end marker sent now comes after anything stored twice.
    assert!(sender.send("end", true).await.is_ok());
    loop {
        let got = recipient.next().await;
        if got.text == "end" {
            break;
        }
        if let Some(first) = seen.insert(got.text.clone(), got.msg_id) {
            panic!(
                "{:?} delivered twice ({})",
                got.text,
                if first == got.msg_id {
                    "redelivered after its ACK was confirmed"
                } else {
                    "stored twice"
                }
            );
        }
    }
    let expected: HashSet<&String> = flight.iter().chain(&down).collect();
    let lost: Vec<_> = expected
        .iter()
        .filter(|t| !seen.contains_key(t.as_str()))
        .collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert_eq!(seen.len(), expected.len());
    drop(fwd);
    drop(dest);
}

// ---------------------------------------------------------------------------------------
// Latency and throughput, two relays against one
// ---------------------------------------------------------------------------------------

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Sequential send → deliver latency for `n` messages, then a pipelined burst of
/// `burst` messages: (latencies, seconds until every SEND was answered OK, seconds until
/// every message was delivered).
async fn measure(
    label: &str,
    sender: &mut Sender,
    recipient: &mut Recipient,
    n: usize,
    burst: usize,
) -> (Vec<Duration>, f64, f64) {
    let mut latencies = Vec::with_capacity(n);
    for text in numbered(&format!("{label} latency"), n) {
        let start = Instant::now();
        let pending = sender.submit(&text, true).await;
        let got = recipient.next().await;
        assert_eq!(got.text, text);
        latencies.push(got.at - start);
        assert!(pending.outcome().await.is_ok());
    }
    latencies.sort();

    let texts = numbered(&format!("{label} burst"), burst);
    let start = Instant::now();
    // The recipient drains while the burst goes out.
    let ((outcomes, answered), (out_of_order, delivered)) = tokio::join!(
        async {
            let outcomes = sender.send_all(&texts, 64).await;
            (outcomes, start.elapsed())
        },
        async {
            let mut out_of_order = 0;
            for want in &texts {
                if &recipient.next().await.text != want {
                    out_of_order += 1;
                }
            }
            (out_of_order, start.elapsed())
        }
    );
    let accepted = accepted(outcomes);
    if !accepted.is_empty() || out_of_order > 0 {
        println!(
            "  {label}: {} of {burst} burst forwards went to the outbox, {out_of_order} delivered out of place",
            accepted.len()
        );
        sender.await_accepted(accepted).await;
    }
    (latencies, answered.as_secs_f64(), delivered.as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_throughput_two_relays_vs_one() {
    let (n, burst) = if cfg!(debug_assertions) {
        (100, 100)
    } else {
        (300, 300)
    };
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path());
    let quota = ["--queue-quota", "10000"];
    let fwd = start_relay(&tmp.path().join("fwd"), &config, &quota);
    let dest = start_relay(&tmp.path().join("dest"), &config, &quota);

    let mut one_recipient = Recipient::create(&dest.address, 61).await;
    let mut one = Sender::new(&dest.address, &dest.address, one_recipient.sid(), 62).await;
    confirm("one", &mut one, &mut one_recipient).await;
    let mut two_recipient = Recipient::create(&dest.address, 63).await;
    let mut two = Sender::new(&fwd.address, &dest.address, two_recipient.sid(), 64).await;
    confirm("two", &mut two, &mut two_recipient).await;

    let results = [
        (
            "one relay (direct SEND)",
            measure("one", &mut one, &mut one_recipient, n, burst).await,
        ),
        (
            "two relays (FORWARD)",
            measure("two", &mut two, &mut two_recipient, n, burst).await,
        ),
    ];
    println!(
        "latency send→deliver over {n} sequential messages; throughput of a burst of {burst} (64 in flight, recipient ACKing each):"
    );
    for (label, (latencies, answered, delivered)) in results {
        println!(
            "  {label:<24} p50 {:6.2} ms  p99 {:6.2} ms  max {:6.2} ms | {:7.1} msg/s stored, {:7.1} msg/s delivered",
            ms(percentile(&latencies, 50)),
            ms(percentile(&latencies, 99)),
            ms(*latencies.last().unwrap()),
            burst as f64 / answered,
            burst as f64 / delivered,
        );
    }
}

// ---------------------------------------------------------------------------------------
// Order across an outage: the outbox delivers per destination in arrival order
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_keeps_send_order_across_an_outage() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path());
    let fwd = start_relay(&tmp.path().join("fwd"), &config, &[]);
    let dest = start_relay(&tmp.path().join("dest"), &config, &[]);
    let proxy = Proxy::start(port_of(&dest.address)).await;
    let through_proxy = RelayAddress::new(*dest.address.key(), vec![loopback(proxy.port)]).unwrap();
    let mut recipient = Recipient::create(&dest.address, 71).await;
    let mut sender = Sender::new(&fwd.address, &through_proxy, recipient.sid(), 72).await;
    confirm("O", &mut sender, &mut recipient).await;

    proxy.cut().await;
    let during = numbered("during the cut", 20);
    let outcomes = sender.send_all(&during, 20).await;
    let accepted = accepted(outcomes);
    assert_eq!(accepted.len(), during.len());
    proxy.wait_refused(1).await;
    proxy.restore();
    let mut order = Vec::new();
    for _ in 0..during.len() {
        order.push(recipient.next().await.text);
    }
    sender.await_accepted(accepted).await;
    assert_eq!(
        order, during,
        "messages of one sender were reordered by the outbox"
    );
}
