//! Queues made the way a client makes them, over the protocol.
//!
//! A queue is CREATEd with a fresh recipient key (the CREATE is signed by it, as proof of
//! possession) and then SECUREd with the hash of a sender key, so every SEND after that is
//! signed and the relay verifies an Ed25519 signature per message, as it will for real
//! clients. Keys come from a label and an index through BLAKE3, so a run is repeatable and
//! needs no random source.
//!
//! Commands are pipelined: up to `window` requests are in flight per session, which lets
//! the relay's group commit batch them.

use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;
use futures::{StreamExt, TryStreamExt};
use petrel_federation::client::{Command, QueueCreated, Response};
use petrel_federation::delivery::DeliveryKey;
use petrel_federation::transport::connection::RelayConnection;
use petrel_federation::{KeyHash, QueueId};
use std::sync::atomic::{AtomicU64, Ordering};
use x25519_dalek::{PublicKey, StaticSecret};

/// 32 bytes of key seed for `label` and `index`.
pub fn seed(label: &str, index: u64) -> [u8; 32] {
    let mut material = Vec::with_capacity(label.len() + 8);
    material.extend_from_slice(label.as_bytes());
    material.extend_from_slice(&index.to_le_bytes());
    blake3::derive_key("petrel-bench v1 key seed", &material)
}

/// The keys behind one queue.
#[derive(Clone)]
pub struct QueueKeys {
    /// Signs the recipient's commands (CREATE, SECURE, SUB, ACK).
    pub recipient: SigningKey,
    /// The recipient's X25519 key for the delivery secret.
    pub dh: StaticSecret,
    /// Signs SENDs once the queue is secured.
    pub sender: SigningKey,
}

impl std::fmt::Debug for QueueKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueueKeys(..)")
    }
}

impl QueueKeys {
    /// The keys of queue `index`.
    pub fn derive(index: u64) -> QueueKeys {
        QueueKeys {
            recipient: SigningKey::from_bytes(&seed("recipient", index)),
            dh: StaticSecret::from(seed("recipient-dh", index)),
            sender: SigningKey::from_bytes(&seed("sender", index)),
        }
    }

    fn create_command(&self, subscribe: bool) -> Command {
        Command::Create {
            recipient_key: self.recipient.verifying_key().to_bytes(),
            recipient_dh: PublicKey::from(&self.dh).to_bytes(),
            subscribe,
            password: None,
        }
    }

    fn secure_command(&self, recipient_id: QueueId) -> Command {
        Command::Secure {
            recipient_id,
            sender_key_hash: KeyHash::of(&self.sender.verifying_key().to_bytes()),
        }
    }
}

/// A queue ready for traffic: its IDs, its keys and its delivery key.
pub struct BenchQueue {
    /// The recipient's ID.
    pub recipient_id: QueueId,
    /// The senders' ID.
    pub sender_id: QueueId,
    /// Opens deliveries.
    pub delivery: DeliveryKey,
    /// Signs ACKs.
    pub recipient: SigningKey,
    /// Signs SENDs.
    pub sender: SigningKey,
}

impl std::fmt::Debug for BenchQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BenchQueue(..)")
    }
}

async fn create(
    conn: &RelayConnection,
    keys: &QueueKeys,
    subscribe: bool,
) -> anyhow::Result<QueueCreated> {
    match conn
        .request(Some(&keys.recipient), keys.create_command(subscribe))
        .await?
    {
        Response::Created(created) => Ok(created),
        other => bail!("CREATE answered {other:?}"),
    }
}

async fn secure(
    conn: &RelayConnection,
    keys: &QueueKeys,
    recipient_id: QueueId,
) -> anyhow::Result<()> {
    match conn
        .request(Some(&keys.recipient), keys.secure_command(recipient_id))
        .await?
    {
        Response::Ok => Ok(()),
        other => bail!("SECURE answered {other:?}"),
    }
}

/// Creates and secures one queue on `conn`, subscribing this session when asked.
pub async fn create_secured(
    conn: &RelayConnection,
    keys: QueueKeys,
    subscribe: bool,
) -> anyhow::Result<BenchQueue> {
    let created = create(conn, &keys, subscribe).await?;
    secure(conn, &keys, created.recipient_id).await?;
    let recipient_dh = PublicKey::from(&keys.dh).to_bytes();
    let delivery = DeliveryKey::derive(
        &keys.dh,
        &recipient_dh,
        &created.relay_dh,
        &created.relay_dh,
    )
    .context("cannot derive the delivery key")?;
    Ok(BenchQueue {
        recipient_id: created.recipient_id,
        sender_id: created.sender_id,
        delivery,
        recipient: keys.recipient,
        sender: keys.sender,
    })
}

/// Creates and secures the queues of `indices` on `conn`, `window` at a time, in order.
pub async fn create_many(
    conn: &RelayConnection,
    indices: impl IntoIterator<Item = u64>,
    subscribe: bool,
    window: usize,
) -> anyhow::Result<Vec<BenchQueue>> {
    futures::stream::iter(indices)
        .map(|i| create_secured(conn, QueueKeys::derive(i), subscribe))
        .buffered(window.max(1))
        .try_collect()
        .await
}

/// Creates and secures `count` idle queues on `conn`, `window` at a time, adding one to
/// `done` per queue. All share one key set: the relay stores the same bytes per queue
/// either way (hashes and a fresh delivery key), and the bench saves deriving keys it
/// would never use.
pub async fn create_idle(
    conn: &RelayConnection,
    count: u64,
    window: usize,
    done: &AtomicU64,
) -> anyhow::Result<()> {
    let keys = QueueKeys::derive(u64::MAX);
    futures::stream::iter(0..count)
        .map(|_| async {
            let created = create(conn, &keys, false).await?;
            secure(conn, &keys, created.recipient_id).await?;
            done.fetch_add(1, Ordering::Relaxed);
            anyhow::Ok(())
        })
        .buffer_unordered(window.max(1))
        .try_collect::<()>()
        .await
}
