//! The relay's durable store: one redb file, written through a single group-commit writer.
//!
//! Tables (all values are postcard):
//!
//! | table | key | value |
//! |---|---|---|
//! | `queues` | recipient ID (16 bytes) | [`QueueRecord`]: key hashes, delivery key, status, counters |
//! | `senders` | sender ID (16 bytes) | recipient ID |
//! | `messages` | (recipient ID, sequence number) | [`StoredMessage`]: already re-encrypted for delivery |
//! | `outbox` | forward ID | [`OutboxEntry`]: a sealed envelope waiting for its destination |
//! | `forward_results` | forward ID | [`ForwardResult`]: how an accepted forward ended |
//! | `replay_tags` | replay tag of a stored forwarded SEND | expiry (Unix seconds) |
//!
//! Nothing else is stored: no public key (only BLAKE3 hashes), no SEND body (a message is
//! sealed with the queue's delivery key before it is written), no address, no log.
//!
//! Every mutation is a closure sent to one writer thread. The writer takes every closure
//! that is waiting, runs them all in one write transaction, commits it with
//! `Durability::Immediate` (one fsync) and only then answers each caller. So a SEND is
//! answered OK only once it is durable, and a burst of SENDs from many sessions pays one
//! fsync per batch rather than one per message. Reads use their own read transactions and
//! see every write that has been answered.

use petrel_federation::{KeyHash, MsgId, QueueId};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

const QUEUES: TableDefinition<[u8; 16], &[u8]> = TableDefinition::new("queues");
const SENDERS: TableDefinition<[u8; 16], [u8; 16]> = TableDefinition::new("senders");
const MESSAGES: TableDefinition<([u8; 16], u64), &[u8]> = TableDefinition::new("messages");
const OUTBOX: TableDefinition<[u8; 16], &[u8]> = TableDefinition::new("outbox");
const RESULTS: TableDefinition<[u8; 16], &[u8]> = TableDefinition::new("forward_results");
const REPLAY: TableDefinition<[u8; 32], u64> = TableDefinition::new("replay_tags");

/// Most closures committed in one transaction.
const MAX_BATCH: usize = 1024;

/// A store failure. The relay answers `INTERNAL` and changes nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// redb reported an error (I/O, corruption, a lock held by another process).
    #[error("store error: {0}")]
    Redb(String),
    /// A record could not be decoded: the file is damaged or from an incompatible version.
    #[error("store record is corrupt: {0}")]
    Corrupt(String),
    /// The writer thread has stopped.
    #[error("store writer has stopped")]
    Closed,
    /// Another process has the store open.
    #[error(
        "another relay process is using it (each relay needs its own data directory: give \
         the second one its own --data-dir)"
    )]
    InUse,
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Redb(e.to_string())
    }
}
macro_rules! redb_from {
    ($($t:ty),*) => {$(impl From<$t> for StoreError {
        fn from(e: $t) -> Self { StoreError::Redb(e.to_string()) }
    })*};
}
redb_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// Whether a queue accepts SENDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueStatus {
    /// Accepting messages.
    Active,
    /// SUSPENDed by its recipient.
    Suspended,
}

/// What the relay keeps per queue.
#[derive(Clone, Serialize, Deserialize)]
pub struct QueueRecord {
    /// The queue's sender ID.
    pub sender_id: QueueId,
    /// Hash of the recipient's Ed25519 key.
    pub recipient_key_hash: KeyHash,
    /// Hash of the sender's Ed25519 key, once SECUREd.
    pub sender_key_hash: Option<KeyHash>,
    /// The layer-3 delivery key.
    pub delivery_key: [u8; 32],
    /// Active or suspended.
    pub status: QueueStatus,
    /// Sequence number the next message gets.
    pub next_seq: u64,
    /// Messages currently stored (quota marker included).
    pub count: u32,
    /// A quota marker is queued and not yet acknowledged.
    pub marker_queued: bool,
    /// Hashes of the relays allowed to hand SENDs to this queue (empty: any).
    pub forwarders: Vec<KeyHash>,
}

/// A sealed envelope the forwarding relay keeps until its destination takes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Where it goes.
    pub destination: petrel_federation::RelayAddress,
    /// The envelope, as the client sealed it.
    pub envelope: petrel_federation::seal::SealedEnvelope,
    /// When it was accepted (relay clock, Unix seconds).
    pub accepted_at: u64,
    /// Attempts so far.
    pub attempts: u32,
    /// Arrival order at this relay: the outbox delivers per destination in this order.
    pub seq: u64,
}

/// How an accepted forward ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ForwardResult {
    /// When it ended (relay clock); results are kept for a day.
    pub done_at: u64,
    /// The destination's sealed answer, or why it was given up.
    pub outcome: Result<petrel_federation::seal::SealedResponse, petrel_federation::ErrorCode>,
}

impl std::fmt::Debug for QueueRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueRecord")
            .field("status", &self.status)
            .field("secured", &self.sender_key_hash.is_some())
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

/// A stored message, sealed for delivery before it was written.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredMessage {
    /// The message ID (also the delivery nonce).
    pub msg_id: MsgId,
    /// Relay clock when accepted, Unix seconds (for TTL).
    pub received_at: u64,
    /// True for a quota marker.
    pub is_marker: bool,
    /// The delivery ciphertext, exactly as it will be sent.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// The oldest message of `rid` in a messages table (read or write transaction alike).
fn first_message_in<T>(
    messages: &T,
    rid: &QueueId,
) -> Result<Option<(u64, StoredMessage)>, StoreError>
where
    T: ReadableTable<([u8; 16], u64), &'static [u8]>,
{
    let mut range = messages.range((rid.0, 0)..=(rid.0, u64::MAX))?;
    match range.next() {
        Some(entry) => {
            let (k, v) = entry?;
            Ok(Some((k.value().1, decode(v.value())?)))
        }
        None => Ok(None),
    }
}

fn decode<T: for<'a> Deserialize<'a>>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}
fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Tables open inside one write transaction, handed to write closures.
pub struct Tables<'txn> {
    queues: redb::Table<'txn, [u8; 16], &'static [u8]>,
    senders: redb::Table<'txn, [u8; 16], [u8; 16]>,
    messages: redb::Table<'txn, ([u8; 16], u64), &'static [u8]>,
    outbox: redb::Table<'txn, [u8; 16], &'static [u8]>,
    results: redb::Table<'txn, [u8; 16], &'static [u8]>,
    replay: redb::Table<'txn, [u8; 32], u64>,
}

impl std::fmt::Debug for Tables<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tables(..)")
    }
}

impl std::fmt::Debug for ReadTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadTables(..)")
    }
}

impl Tables<'_> {
    /// A queue by recipient ID.
    pub fn queue(&self, rid: &QueueId) -> Result<Option<QueueRecord>, StoreError> {
        self.queues
            .get(&rid.0)?
            .map(|v| decode(v.value()))
            .transpose()
    }
    /// Writes a queue record.
    pub fn put_queue(&mut self, rid: &QueueId, record: &QueueRecord) -> Result<(), StoreError> {
        self.queues.insert(&rid.0, encode(record)?.as_slice())?;
        Ok(())
    }
    /// True when either ID is taken (as a recipient or a sender ID).
    pub fn id_taken(&self, id: &QueueId) -> Result<bool, StoreError> {
        Ok(self.queues.get(&id.0)?.is_some() || self.senders.get(&id.0)?.is_some())
    }
    /// Maps a sender ID to its recipient ID.
    pub fn put_sender(&mut self, sid: &QueueId, rid: &QueueId) -> Result<(), StoreError> {
        self.senders.insert(&sid.0, &rid.0)?;
        Ok(())
    }
    /// The recipient ID of a sender ID.
    pub fn recipient_of(&self, sid: &QueueId) -> Result<Option<QueueId>, StoreError> {
        Ok(self.senders.get(&sid.0)?.map(|v| QueueId(v.value())))
    }
    /// Appends a message at sequence `seq`.
    pub fn put_message(
        &mut self,
        rid: &QueueId,
        seq: u64,
        msg: &StoredMessage,
    ) -> Result<(), StoreError> {
        self.messages
            .insert(&(rid.0, seq), encode(msg)?.as_slice())?;
        Ok(())
    }
    /// The oldest message of a queue with its sequence number.
    pub fn first_message(&self, rid: &QueueId) -> Result<Option<(u64, StoredMessage)>, StoreError> {
        first_message_in(&self.messages, rid)
    }
    /// Removes one message.
    pub fn remove_message(&mut self, rid: &QueueId, seq: u64) -> Result<(), StoreError> {
        self.messages.remove(&(rid.0, seq))?;
        Ok(())
    }
    /// True when a replay tag is recorded (and not expired at `now`).
    pub fn replay_seen(&self, tag: &[u8; 32], now: u64) -> Result<bool, StoreError> {
        Ok(self.replay.get(tag)?.is_some_and(|v| v.value() > now))
    }
    /// Records a replay tag until `expires`.
    pub fn put_replay(&mut self, tag: &[u8; 32], expires: u64) -> Result<(), StoreError> {
        self.replay.insert(tag, expires)?;
        Ok(())
    }
    /// Removes replay tags and forward results that expired before `now`.
    pub fn purge_forwarding(&mut self, now: u64, result_ttl: u64) -> Result<usize, StoreError> {
        let mut n = 0;
        self.replay.retain(|_, expires| {
            let keep = expires > now;
            n += usize::from(!keep);
            keep
        })?;
        let mut old = Vec::new();
        for entry in self.results.iter()? {
            let (k, v) = entry?;
            let r: ForwardResult = decode(v.value())?;
            if r.done_at + result_ttl <= now {
                old.push(k.value());
            }
        }
        for k in old {
            self.results.remove(&k)?;
            n += 1;
        }
        Ok(n)
    }
    /// Adds an outbox entry.
    pub fn put_outbox(&mut self, id: &MsgId, entry: &OutboxEntry) -> Result<(), StoreError> {
        self.outbox.insert(&id.0, encode(entry)?.as_slice())?;
        Ok(())
    }
    /// Removes an outbox entry and records its result.
    pub fn finish_outbox(&mut self, id: &MsgId, result: &ForwardResult) -> Result<(), StoreError> {
        self.outbox.remove(&id.0)?;
        self.results.insert(&id.0, encode(result)?.as_slice())?;
        Ok(())
    }
    /// Entries in the outbox.
    pub fn outbox_len(&self) -> Result<u64, StoreError> {
        Ok(self.outbox.len()?)
    }

    /// Removes a queue, its sender index and all its messages.
    pub fn remove_queue(&mut self, rid: &QueueId, sid: &QueueId) -> Result<(), StoreError> {
        self.queues.remove(&rid.0)?;
        self.senders.remove(&sid.0)?;
        self.messages
            .retain_in((rid.0, 0)..=(rid.0, u64::MAX), |_, _| false)?;
        Ok(())
    }
}

type Job = Box<dyn FnOnce(&mut Tables<'_>) -> Box<dyn FnOnce(bool) + Send> + Send>;

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    jobs: mpsc::UnboundedSender<Job>,
    writer: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

/// Waits for the store's writer thread to finish its last commit and close the file.
#[derive(Debug)]
pub struct StoreWriter(Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>);

impl StoreWriter {
    /// Blocks until every `Store` handle is gone and the writer has closed the database,
    /// so the next start finds a cleanly closed file (no repair pass).
    pub fn join(self) {
        let handle = self.0.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store(..)")
    }
}

impl Store {
    /// Opens (or creates) the store at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Database::builder()
            .set_cache_size(16 * 1024 * 1024)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse,
                other => StoreError::from(other),
            })?;
        {
            // Create the tables so read transactions always find them.
            let txn = db.begin_write()?;
            txn.open_table(QUEUES)?;
            txn.open_table(SENDERS)?;
            txn.open_table(MESSAGES)?;
            txn.open_table(OUTBOX)?;
            txn.open_table(RESULTS)?;
            txn.open_table(REPLAY)?;
            txn.commit()?;
        }
        let db = Arc::new(db);
        let (jobs, rx) = mpsc::unbounded_channel();
        // The writer thread owns the database: it closes it when the last `Store` is gone.
        let writer_db = db;
        let read_db = writer_db.clone();
        let handle = std::thread::Builder::new()
            .name("petrel-store-writer".into())
            .spawn(move || writer(writer_db, rx))
            .map_err(|e| StoreError::Redb(e.to_string()))?;
        Ok(Store {
            db: read_db,
            jobs,
            writer: Arc::new(std::sync::Mutex::new(Some(handle))),
        })
    }

    /// Runs `f` in the next group commit and returns its result once the commit is durable.
    /// If `f` fails, its changes are still in the transaction: closures must check before
    /// they write, so that a failing closure has written nothing.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tables<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |tables| {
            let result = f(tables);
            Box::new(move |committed: bool| {
                let _ = tx.send(if committed {
                    result
                } else {
                    Err(StoreError::Redb("commit failed".into()))
                });
            })
        });
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Reads with a fresh read transaction.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&ReadTables) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_read()?;
        let tables = ReadTables {
            queues: txn.open_table(QUEUES)?,
            senders: txn.open_table(SENDERS)?,
            messages: txn.open_table(MESSAGES)?,
            outbox: txn.open_table(OUTBOX)?,
            results: txn.open_table(RESULTS)?,
            replay: txn.open_table(REPLAY)?,
        };
        f(&tables)
    }

    /// A handle to wait for the writer thread at shutdown.
    pub fn writer_handle(&self) -> StoreWriter {
        StoreWriter(self.writer.clone())
    }

    /// (queues, messages) currently stored.
    pub fn counts(&self) -> Result<(u64, u64), StoreError> {
        self.read(|t| Ok((t.queues.len()?, t.messages.len()?)))
    }
}

/// Tables open in a read transaction.
pub struct ReadTables {
    queues: redb::ReadOnlyTable<[u8; 16], &'static [u8]>,
    senders: redb::ReadOnlyTable<[u8; 16], [u8; 16]>,
    messages: redb::ReadOnlyTable<([u8; 16], u64), &'static [u8]>,
    outbox: redb::ReadOnlyTable<[u8; 16], &'static [u8]>,
    results: redb::ReadOnlyTable<[u8; 16], &'static [u8]>,
    replay: redb::ReadOnlyTable<[u8; 32], u64>,
}

impl ReadTables {
    /// A queue by recipient ID.
    pub fn queue(&self, rid: &QueueId) -> Result<Option<QueueRecord>, StoreError> {
        self.queues
            .get(&rid.0)?
            .map(|v| decode(v.value()))
            .transpose()
    }
    /// A queue by sender ID, with its recipient ID.
    pub fn queue_by_sender(
        &self,
        sid: &QueueId,
    ) -> Result<Option<(QueueId, QueueRecord)>, StoreError> {
        let Some(rid) = self.senders.get(&sid.0)?.map(|v| QueueId(v.value())) else {
            return Ok(None);
        };
        Ok(self.queue(&rid)?.map(|q| (rid, q)))
    }
    /// The oldest message of a queue with its sequence number.
    pub fn first_message(&self, rid: &QueueId) -> Result<Option<(u64, StoredMessage)>, StoreError> {
        first_message_in(&self.messages, rid)
    }
    /// Every outbox entry.
    pub fn outbox(&self) -> Result<Vec<(MsgId, OutboxEntry)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.outbox.iter()? {
            let (k, v) = entry?;
            out.push((MsgId(k.value()), decode(v.value())?));
        }
        Ok(out)
    }
    /// Whether a forward ID is still in the outbox.
    pub fn in_outbox(&self, id: &MsgId) -> Result<bool, StoreError> {
        Ok(self.outbox.get(&id.0)?.is_some())
    }
    /// The result of a finished forward.
    pub fn forward_result(&self, id: &MsgId) -> Result<Option<ForwardResult>, StoreError> {
        self.results
            .get(&id.0)?
            .map(|v| decode(v.value()))
            .transpose()
    }
    /// True when a replay tag is recorded (and not expired at `now`).
    pub fn replay_seen(&self, tag: &[u8; 32], now: u64) -> Result<bool, StoreError> {
        Ok(self.replay.get(tag)?.is_some_and(|v| v.value() > now))
    }

    /// Every message older than `cutoff` (received_at < cutoff), at most `limit`.
    pub fn expired(&self, cutoff: u64, limit: usize) -> Result<Vec<(QueueId, u64)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.messages.iter()? {
            let (k, v) = entry?;
            let msg: StoredMessage = decode(v.value())?;
            if msg.received_at < cutoff {
                let (rid, seq) = k.value();
                out.push((QueueId(rid), seq));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

fn writer(db: Arc<Database>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut replies = Vec::with_capacity(batch.len());
        let committed = run_batch(&db, &mut batch, &mut replies);
        for reply in replies {
            reply(committed);
        }
        // Closures not run because the transaction could not even start fail too.
        for job in batch.drain(..) {
            drop(job);
        }
    }
}

fn run_batch(
    db: &Database,
    batch: &mut Vec<Job>,
    replies: &mut Vec<Box<dyn FnOnce(bool) + Send>>,
) -> bool {
    let txn: WriteTransaction = match db.begin_write() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "store: cannot begin a write transaction");
            return false;
        }
    };
    {
        let tables = (|| -> Result<Tables<'_>, StoreError> {
            Ok(Tables {
                queues: txn.open_table(QUEUES)?,
                senders: txn.open_table(SENDERS)?,
                messages: txn.open_table(MESSAGES)?,
                outbox: txn.open_table(OUTBOX)?,
                results: txn.open_table(RESULTS)?,
                replay: txn.open_table(REPLAY)?,
            })
        })();
        let mut tables = match tables {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "store: cannot open tables");
                return false;
            }
        };
        for job in batch.drain(..) {
            replies.push(job(&mut tables));
        }
    }
    match txn.commit() {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "store: commit failed");
            false
        }
    }
}
