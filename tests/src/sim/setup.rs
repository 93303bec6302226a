//! Building the network: relay processes, one cuttable proxy per relay path, and clients
//! that have made contact the way real ones do.
//!
//! For each client: a session with its home relay and a queue there (CREATE, subscribed).
//! For each stream, in both directions of a pair: the sender fetches the destination's
//! RelayInfo through its own relay (RELAY_INFO, verified against the key in the address),
//! sends its unsigned Hello — carrying its public key — with FORWARD, and the recipient,
//! on receiving it, SECUREs its queue with that key and ACKs. Every later message is signed.
//! All of this happens before anything breaks.

use super::client::{Parts, connect_home};
use super::ledger::{Ledger, Seen};
use super::live::Shared;
use super::message::{Kind, Message};
use super::outbox::{Action, Answer, Outbox};
use super::plan::Topology;
use super::proxy::PathProxy;
use super::relays::SimRelay;
use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;
use futures::{StreamExt, TryStreamExt};
use petrel_federation::client::{Command, RelayFrame, Response};
use petrel_federation::delivery::DeliveryKey;
use petrel_federation::peer::SignedRelayInfo;
use petrel_federation::transport::connection::RelayConnection;
use petrel_federation::{Endpoint, ErrorCode, Host, KeyHash, QueueId, RelayAddress, TransportKind};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;
use x25519_dalek::{PublicKey, StaticSecret};

/// Longest wait for any one setup step (a debug relay on a busy machine).
const SETUP_WAIT: Duration = Duration::from_secs(60);
/// Setup steps in flight at once.
const PARALLEL: usize = 8;

/// The relays and the proxies on the paths between them.
#[derive(Debug)]
pub struct Network {
    /// The relays, by index.
    pub relays: Vec<SimRelay>,
    /// (forwarding relay, destination relay) → the proxy on that path.
    pub proxies: BTreeMap<(usize, usize), PathProxy>,
}

impl Network {
    /// Starts `relays` relays in `dir` and a proxy on each of `paths`.
    pub async fn start(
        bin: &Path,
        dir: &Path,
        relays: usize,
        paths: &BTreeSet<(usize, usize)>,
    ) -> anyhow::Result<Network> {
        let relays: Vec<SimRelay> = futures::stream::iter(0..relays)
            .map(|i| SimRelay::start(i, bin, dir))
            .buffered(4)
            .try_collect()
            .await?;
        let mut proxies = BTreeMap::new();
        for &(f, d) in paths {
            proxies.insert((f, d), PathProxy::start(relays[d].upstream()).await?);
        }
        Ok(Network { relays, proxies })
    }

    /// How senders homed on `f` name relay `d`: its key, at the proxy on the path.
    pub fn route(&self, f: usize, d: usize) -> anyhow::Result<RelayAddress> {
        let proxy = self
            .proxies
            .get(&(f, d))
            .with_context(|| format!("no proxy on the path R{f} → R{d}"))?;
        let endpoint = Endpoint {
            transport: TransportKind::Tcp,
            host: Host::Ipv4([127, 0, 0, 1]),
            port: proxy.port(),
        };
        Ok(RelayAddress::new(self.relays[d].key()?, vec![endpoint])?)
    }

    /// Stops every relay with SIGTERM; returns what went wrong (a relay that did not exit
    /// cleanly).
    pub async fn stop(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for relay in &mut self.relays {
            if let Err(e) = relay.stop().await {
                errors.push(format!("{e:#}"));
            }
        }
        errors
    }
}

/// 32 bytes of key material for `client` and `label`, from the run's seed.
fn key_seed(seed: u64, client: usize, label: &str) -> [u8; 32] {
    let mut material = Vec::with_capacity(16 + label.len());
    material.extend_from_slice(&seed.to_le_bytes());
    material.extend_from_slice(&(client as u64).to_le_bytes());
    material.extend_from_slice(label.as_bytes());
    blake3::derive_key("petrel-sim v1 client key", &material)
}

/// A client with its queue, before contact.
struct Half {
    index: usize,
    home: usize,
    conn: RelayConnection,
    recipient_key: SigningKey,
    recipient_id: QueueId,
    sender_id: QueueId,
    delivery: DeliveryKey,
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(SETUP_WAIT, f)
        .await
        .with_context(|| format!("{what}: no answer within {SETUP_WAIT:?}"))
}

async fn create(net: &Network, seed: u64, index: usize, home: usize) -> anyhow::Result<Half> {
    let conn = within("connect", connect_home(net.relays[home].watch())).await?;
    let recipient_key = SigningKey::from_bytes(&key_seed(seed, index, "recipient"));
    let dh = StaticSecret::from(key_seed(seed, index, "recipient dh"));
    let recipient_dh = PublicKey::from(&dh).to_bytes();
    let create = Command::Create {
        recipient_key: recipient_key.verifying_key().to_bytes(),
        recipient_dh,
        subscribe: true,
        password: None,
    };
    let created = match within("CREATE", conn.request(Some(&recipient_key), create)).await?? {
        Response::Created(created) => created,
        other => bail!("client {index}: CREATE answered {other:?}"),
    };
    let delivery = DeliveryKey::derive(&dh, &recipient_dh, &created.relay_dh, &created.relay_dh)
        .context("cannot derive the delivery key")?;
    Ok(Half {
        index,
        home,
        conn,
        recipient_key,
        recipient_id: created.recipient_id,
        sender_id: created.sender_id,
        delivery,
    })
}

/// Attempts at RELAY_INFO before setup gives up.
const RELAY_INFO_TRIES: u32 = 20;

/// RELAY_INFO for `destination` through the sender's relay, asked again (as a client would)
/// after a transient refusal. Every relay is up during setup, so each refusal is noted.
async fn relay_info(
    sender: &Half,
    destination: &RelayAddress,
    notes: &mut Vec<String>,
) -> anyhow::Result<SignedRelayInfo> {
    for attempt in 1..=RELAY_INFO_TRIES {
        let command = Command::RelayInfo {
            relay: destination.clone(),
        };
        match within("RELAY_INFO", sender.conn.request(None, command)).await?? {
            Response::RelayInfo(info) => return Ok(info),
            Response::Error(
                code @ (ErrorCode::Unreachable
                | ErrorCode::RateLimited
                | ErrorCode::Busy
                | ErrorCode::Internal),
            ) if attempt < RELAY_INFO_TRIES => {
                notes.push(format!(
                    "client {} (R{}): RELAY_INFO answered {code:?} during setup, with every \
                     relay up (try {attempt}); asked again",
                    sender.index, sender.home
                ));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => bail!("client {}: RELAY_INFO answered {other:?}", sender.index),
        }
    }
    bail!("client {}: RELAY_INFO kept failing", sender.index)
}

/// The sender's side of contact: fetch the destination's sealing key through its own
/// relay, and get the Hello confirmed.
async fn hello(
    sender: &Half,
    outbox_for: impl FnOnce([u8; 32]) -> Outbox,
    destination: &RelayAddress,
    rng: &mut ChaCha8Rng,
    notes: &mut Vec<String>,
) -> anyhow::Result<Outbox> {
    let info = relay_info(sender, destination, notes).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let sealing = info
        .verify(destination.key(), now)
        .map_err(|e| anyhow::anyhow!("the destination's RelayInfo does not verify: {e:?}"))?
        .sealing_key;
    let mut outbox = outbox_for(sealing);
    let seq = outbox.create(Kind::Hello([0; 32]), rng)?;
    let mut action = Action::Forward(seq);
    // A handful of rounds: FORWARD, perhaps a few status polls or retries.
    for _ in 0..100 {
        let (token, command, status) = match action {
            Action::Nothing => break,
            Action::Forward(seq) => {
                let (t, c) = outbox.forward(seq).context("the Hello vanished")?;
                (t, c, false)
            }
            Action::Status(seq) => {
                let (t, c) = outbox.status(seq).context("the Hello vanished")?;
                (t, c, true)
            }
            Action::RetryLater(seq) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let t = outbox.retry_token(seq).context("the Hello vanished")?;
                action = outbox.answer(seq, t, false, Answer::Timer);
                continue;
            }
        };
        let wait = SETUP_WAIT + Duration::from_secs(30);
        let response = tokio::time::timeout(wait, sender.conn.request(None, command))
            .await
            .context("the Hello got no answer")??;
        action = outbox.answer(seq, token, status, Answer::Response(response));
    }
    if outbox.unconfirmed() > 0 || outbox.counts().confirmed != 1 {
        bail!(
            "client {}: the Hello was not confirmed: {:?}",
            sender.index,
            outbox.refusals
        );
    }
    Ok(outbox)
}

/// The recipient's side of contact: the Hello arrives, the queue is SECUREd with the key it
/// carries, and the Hello is ACKed.
async fn welcome(recipient: &mut Half, stream: u32) -> anyhow::Result<Ledger> {
    let event = within("the Hello's delivery", recipient.conn.next_event()).await?;
    let Some(RelayFrame::Deliver(d)) = event else {
        bail!(
            "client {}: expected the Hello, got {event:?}",
            recipient.index
        );
    };
    let body = recipient
        .delivery
        .open(&d.recipient_id, &d.msg_id, &d.ciphertext)
        .context("cannot open the Hello")?;
    let message = Message::parse(&body.body)?;
    let Kind::Hello(sender_key) = message.kind else {
        bail!(
            "client {}: the first message is not a Hello",
            recipient.index
        );
    };
    let mut ledger = Ledger::new(stream);
    if !matches!(ledger.record(d.msg_id, message), Seen::New(_)) {
        bail!(
            "client {}: the Hello belongs to another stream",
            recipient.index
        );
    }
    let key = &recipient.recipient_key;
    let secure = Command::Secure {
        recipient_id: recipient.recipient_id,
        sender_key_hash: KeyHash::of(&sender_key),
    };
    let ack = Command::Ack {
        recipient_id: recipient.recipient_id,
        msg_id: d.msg_id,
    };
    for (what, command) in [("SECURE", secure), ("ACK", ack)] {
        let answer = within(what, recipient.conn.request(Some(key), command)).await??;
        if answer != Response::Ok {
            bail!("client {}: {what} answered {answer:?}", recipient.index);
        }
    }
    ledger.acked(d.msg_id);
    Ok(ledger)
}

/// Contact in one direction: `sender`'s outbox (the Hello confirmed), `recipient`'s ledger
/// (the Hello booked), the sender's envelope randomness and what went wrong on the way.
struct Contact {
    outbox: Outbox,
    ledger: Ledger,
    rng: ChaCha8Rng,
    notes: Vec<String>,
}

async fn contact(
    net: &Network,
    topology: &Topology,
    seed: u64,
    sender: &Half,
    recipient: &mut Half,
) -> anyhow::Result<Contact> {
    let stream = topology
        .outbound(sender.index)
        .context("a client without a stream")? as u32;
    let destination = net.route(sender.home, recipient.home)?;
    let key = SigningKey::from_bytes(&key_seed(seed, sender.index, "sender"));
    let sender_id = recipient.sender_id;
    let dest = destination.clone();
    let mut rng = ChaCha8Rng::from_seed(key_seed(seed, sender.index, "envelopes"));
    let make = |sealing| Outbox::new(stream, key, sender_id, dest, sealing);
    let mut notes = Vec::new();
    let outbox = hello(sender, make, &destination, &mut rng, &mut notes).await?;
    let ledger = welcome(recipient, stream).await?;
    Ok(Contact {
        outbox,
        ledger,
        rng,
        notes,
    })
}

fn parts(net: &Network, half: Half, contact_home: usize, own: Contact, inbound: Ledger) -> Parts {
    Parts {
        index: half.index,
        home: half.home,
        path: (half.home, contact_home),
        home_state: net.relays[half.home].watch(),
        conn: half.conn,
        recipient_key: half.recipient_key,
        recipient_id: half.recipient_id,
        delivery: half.delivery,
        ledger: inbound,
        outbox: own.outbox,
        rng: own.rng,
        notes: own.notes,
    }
}

/// Makes contact in both directions of one pair and returns both clients' parts.
async fn pair(
    net: &Network,
    topology: &Topology,
    seed: u64,
    mut a: Half,
    mut b: Half,
) -> anyhow::Result<[Parts; 2]> {
    let mut a_to_b = contact(net, topology, seed, &a, &mut b).await?;
    let mut b_to_a = contact(net, topology, seed, &b, &mut a).await?;
    // Each side's own outbox, and the ledger of what its contact sends it.
    let b_ledger = std::mem::replace(&mut a_to_b.ledger, Ledger::new(u32::MAX));
    let a_ledger = std::mem::replace(&mut b_to_a.ledger, Ledger::new(u32::MAX));
    let (a_home, b_home) = (a.home, b.home);
    Ok([
        parts(net, a, b_home, a_to_b, a_ledger),
        parts(net, b, a_home, b_to_a, b_ledger),
    ])
}

/// Connects every client, creates its queue and makes contact within each pair. The
/// clients come back in index order; `shared` counts the Hellos as sent and delivered.
pub async fn clients(
    net: &Network,
    topology: &Topology,
    seed: u64,
    shared: &Shared,
) -> anyhow::Result<Vec<Parts>> {
    let halves: Vec<Half> = futures::stream::iter(topology.homes.clone().into_iter().enumerate())
        .map(|(index, home)| create(net, seed, index, home))
        .buffered(PARALLEL)
        .try_collect()
        .await?;
    let mut halves = halves.into_iter();
    let mut couples = Vec::new();
    while let (Some(a), Some(b)) = (halves.next(), halves.next()) {
        couples.push((a, b));
    }
    let pairs: Vec<[Parts; 2]> = futures::stream::iter(couples)
        .map(|(a, b)| pair(net, topology, seed, a, b))
        .buffered(PARALLEL)
        .try_collect()
        .await?;
    let streams = topology.streams.len() as u64;
    shared
        .sent
        .fetch_add(streams, std::sync::atomic::Ordering::Relaxed);
    shared
        .confirmed
        .fetch_add(streams, std::sync::atomic::Ordering::Relaxed);
    shared
        .delivered
        .fetch_add(streams, std::sync::atomic::Ordering::Relaxed);
    Ok(pairs.into_iter().flatten().collect())
}
