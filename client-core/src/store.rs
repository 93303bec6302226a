//! The client's store: one redb file, every record encrypted.
//!
//! Opening: the passphrase goes through Argon2id with the salt and costs kept in the file's
//! `meta` table, giving a key-encryption key that unwraps a random 32-byte data key. A wrong
//! passphrase fails that unwrap and yields [`StoreError::WrongPassphrase`] before anything
//! is written; a file that is not a Petrel store, or is damaged, yields
//! [`StoreError::Corrupt`] — never a panic.
//!
//! Records: a record is `(table, key) → value`. On disk the redb key is
//! `BLAKE3-keyed(index key, table ‖ 0 ‖ key)` — so not even contact aliases or profile names
//! are visible — and the value is `nonce(24) ‖ XChaCha20-Poly1305(data key, nonce,
//! aad = "petrel v1 store record" ‖ redb key, postcard((table, key, postcard(value))))`. Both sub-keys are
//! derived from the data key with their own labels; `specs/client-store.md` is the contract.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::path::Path;
use zeroize::{Zeroize, Zeroizing};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const RECORDS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("records");

/// Label: AEAD associated data prefix of a record.
pub const RECORD_AAD: &[u8] = b"petrel v1 store record\0";
/// Label: associated data of the wrapped data key.
pub const KEY_WRAP_AAD: &[u8] = b"petrel v1 store key wrap\0";
/// Label: BLAKE3 context deriving the record encryption key from the data key.
pub const RECORD_KEY: &str = "petrel v1 store record key";
/// Label: BLAKE3 context deriving the record index key from the data key.
pub const INDEX_KEY: &str = "petrel v1 store index key";

/// What a record's plaintext holds: its table, its key and the postcard of its value.
type RecordPlain = (String, Vec<u8>, Vec<u8>);

/// The store format version written in `meta`.
const FORMAT: u8 = 1;

/// Argon2id costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// The default for new stores: 64 MiB, 3 passes, 1 lane (about a quarter second here).
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };
    /// Cheap parameters for tests only.
    pub const DANGEROUS_TESTING: KdfParams = KdfParams {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };
}

#[derive(Serialize, Deserialize)]
struct Meta {
    format: u8,
    salt: [u8; 16],
    kdf: KdfParams,
    /// nonce(24) ‖ AEAD(kek, nonce, KEY_WRAP_AAD, data key)
    #[serde(with = "serde_bytes")]
    wrapped: Vec<u8>,
}

/// Why the store could not be opened or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The passphrase does not open this store. Nothing was changed.
    #[error("wrong passphrase for {0}")]
    WrongPassphrase(String),
    /// The file is not a Petrel store, or is damaged.
    #[error("the store {path} is damaged or not a Petrel store: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The file is locked by another process or cannot be read or written.
    #[error("cannot use the store {path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        reason: String,
    },
}

/// An open, unlocked store.
pub struct Store {
    db: Database,
    path: String,
    record_key: Zeroizing<[u8; 32]>,
    index_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn kek(passphrase: &[u8], salt: &[u8; 16], kdf: KdfParams) -> Result<Zeroizing<[u8; 32]>, String> {
    let params = argon2::Params::new(kdf.m_cost, kdf.t_cost, kdf.p_cost, Some(32))
        .map_err(|e| e.to_string())?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase, salt, out.as_mut())
        .map_err(|e| e.to_string())?;
    Ok(out)
}

impl Store {
    /// Opens the store at `path`, creating it (with `kdf` costs) if it does not exist.
    pub fn open<R: rand_core::CryptoRng + ?Sized>(
        path: &Path,
        passphrase: &[u8],
        kdf: KdfParams,
        rng: &mut R,
    ) -> Result<Store, StoreError> {
        let name = path.display().to_string();
        let corrupt = |reason: String| StoreError::Corrupt {
            path: name.clone(),
            reason,
        };
        let io = |reason: String| StoreError::Io {
            path: name.clone(),
            reason,
        };
        let existed = path.exists();
        let classify = |e: redb::DatabaseError| match e {
            // redb reports a file that is not a database as invalid data.
            redb::DatabaseError::Storage(redb::StorageError::Io(e))
                if e.kind() == std::io::ErrorKind::InvalidData =>
            {
                corrupt(e.to_string())
            }
            redb::DatabaseError::Storage(redb::StorageError::Io(e)) => io(e.to_string()),
            redb::DatabaseError::DatabaseAlreadyOpen => {
                io("already open in another process".into())
            }
            other => corrupt(other.to_string()),
        };
        // An existing store is first read through a read-only handle, so that a wrong
        // passphrase or a damaged header is reported without writing a byte.
        let meta: Option<Meta> = if existed {
            let db = redb::ReadOnlyDatabase::open(path).map_err(classify)?;
            let txn = db.begin_read().map_err(|e| corrupt(e.to_string()))?;
            let table = txn.open_table(META).map_err(|e| corrupt(e.to_string()))?;
            let bytes = table
                .get("meta")
                .map_err(|e| corrupt(e.to_string()))?
                .ok_or_else(|| corrupt("no store header".into()))?;
            Some(postcard::from_bytes(bytes.value()).map_err(|e| corrupt(e.to_string()))?)
        } else {
            None
        };
        let mut db = None;
        let data_key: Zeroizing<[u8; 32]> = match meta {
            Some(meta) => {
                if meta.format != FORMAT {
                    return Err(corrupt(format!("unsupported store format {}", meta.format)));
                }
                let kek = kek(passphrase, &meta.salt, meta.kdf).map_err(corrupt)?;
                let (nonce, ct) = meta
                    .wrapped
                    .split_at_checked(24)
                    .ok_or_else(|| corrupt("short wrapped key".into()))?;
                let nonce: [u8; 24] = nonce.try_into().map_err(|_| corrupt("bad nonce".into()))?;
                let plain = XChaCha20Poly1305::new(&(*kek).into())
                    .decrypt(
                        &XNonce::from(nonce),
                        Payload {
                            msg: ct,
                            aad: KEY_WRAP_AAD,
                        },
                    )
                    .map_err(|_| StoreError::WrongPassphrase(name.clone()))?;
                let plain = Zeroizing::new(plain);
                let key: [u8; 32] = plain
                    .as_slice()
                    .try_into()
                    .map_err(|_| corrupt("bad key length".into()))?;
                Zeroizing::new(key)
            }
            None => {
                let mut salt = [0u8; 16];
                rng.fill_bytes(&mut salt);
                let mut key = Zeroizing::new([0u8; 32]);
                rng.fill_bytes(key.as_mut());
                let mut nonce = [0u8; 24];
                rng.fill_bytes(&mut nonce);
                let kek = kek(passphrase, &salt, kdf).map_err(corrupt)?;
                let ct = XChaCha20Poly1305::new(&(*kek).into())
                    .encrypt(
                        &XNonce::from(nonce),
                        Payload {
                            msg: key.as_ref(),
                            aad: KEY_WRAP_AAD,
                        },
                    )
                    .map_err(|_| corrupt("key wrap failed".into()))?;
                let mut wrapped = nonce.to_vec();
                wrapped.extend(ct);
                let meta = Meta {
                    format: FORMAT,
                    salt,
                    kdf,
                    wrapped,
                };
                let bytes = postcard::to_stdvec(&meta).map_err(|e| corrupt(e.to_string()))?;
                let created = Database::create(path).map_err(classify)?;
                let txn = created.begin_write().map_err(|e| io(e.to_string()))?;
                {
                    let mut table = txn.open_table(META).map_err(|e| io(e.to_string()))?;
                    table
                        .insert("meta", bytes.as_slice())
                        .map_err(|e| io(e.to_string()))?;
                    txn.open_table(RECORDS).map_err(|e| io(e.to_string()))?;
                }
                txn.commit().map_err(|e| io(e.to_string()))?;
                db = Some(created);
                key
            }
        };
        let db = match db {
            Some(db) => db,
            None => Database::open(path).map_err(classify)?,
        };
        Ok(Store {
            db,
            path: name,
            record_key: Zeroizing::new(blake3::derive_key(RECORD_KEY, data_key.as_ref())),
            index_key: Zeroizing::new(blake3::derive_key(INDEX_KEY, data_key.as_ref())),
        })
    }

    fn index(&self, table: &str, key: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.index_key);
        h.update(table.as_bytes());
        h.update(&[0]);
        h.update(key);
        *h.finalize().as_bytes()
    }

    fn corrupt(&self, reason: impl ToString) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    fn io(&self, reason: impl ToString) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    fn seal<R: rand_core::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        index: &[u8; 32],
        plain: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; 24];
        rng.fill_bytes(&mut nonce);
        let mut aad = RECORD_AAD.to_vec();
        aad.extend_from_slice(index);
        let ct = XChaCha20Poly1305::new(&(*self.record_key).into())
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .map_err(|_| self.corrupt("record encryption failed"))?;
        let mut out = nonce.to_vec();
        out.extend(ct);
        Ok(out)
    }

    fn open_record(&self, index: &[u8; 32], sealed: &[u8]) -> Result<RecordPlain, StoreError> {
        let (nonce, ct) = sealed
            .split_at_checked(24)
            .ok_or_else(|| self.corrupt("short record"))?;
        let nonce: [u8; 24] = nonce.try_into().map_err(|_| self.corrupt("bad nonce"))?;
        let mut aad = RECORD_AAD.to_vec();
        aad.extend_from_slice(index);
        let plain = Zeroizing::new(
            XChaCha20Poly1305::new(&(*self.record_key).into())
                .decrypt(&XNonce::from(nonce), Payload { msg: ct, aad: &aad })
                .map_err(|_| self.corrupt("a record does not authenticate"))?,
        );
        postcard::from_bytes(&plain).map_err(|e| self.corrupt(e))
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, StoreError> {
        postcard::from_bytes(bytes).map_err(|e| self.corrupt(e))
    }

    /// Writes (or replaces) a record, durably.
    pub fn put<T: Serialize, R: rand_core::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        table: &str,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        let index = self.index(table, key);
        let value = Zeroizing::new(postcard::to_stdvec(value).map_err(|e| self.corrupt(e))?);
        let record: RecordPlain = (table.to_string(), key.to_vec(), value.to_vec());
        let mut plain = postcard::to_stdvec(&record).map_err(|e| self.corrupt(e))?;
        let sealed = self.seal(rng, &index, &plain);
        plain.zeroize();
        let sealed = sealed?;
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
        {
            let mut t = txn.open_table(RECORDS).map_err(|e| self.io(e))?;
            t.insert(&index, sealed.as_slice())
                .map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))
    }

    /// Applies several puts and deletes in one durable transaction: after a crash either
    /// all of them are in the store or none is.
    pub fn commit<R: rand_core::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        batch: Batch,
    ) -> Result<(), StoreError> {
        let mut sealed_ops = Vec::with_capacity(batch.ops.len());
        for op in batch.ops {
            match op {
                BatchOp::Put { table, key, value } => {
                    let index = self.index(&table, &key);
                    let record: RecordPlain = (table, key, value.to_vec());
                    let mut plain = postcard::to_stdvec(&record).map_err(|e| self.corrupt(e))?;
                    let (_, _, mut inner) = record;
                    inner.zeroize();
                    let sealed = self.seal(rng, &index, &plain);
                    plain.zeroize();
                    sealed_ops.push((index, Some(sealed?)));
                }
                BatchOp::Delete { table, key } => {
                    sealed_ops.push((self.index(&table, &key), None));
                }
            }
        }
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
        {
            let mut t = txn.open_table(RECORDS).map_err(|e| self.io(e))?;
            for (index, sealed) in &sealed_ops {
                match sealed {
                    Some(bytes) => {
                        t.insert(index, bytes.as_slice()).map_err(|e| self.io(e))?;
                    }
                    None => {
                        t.remove(index).map_err(|e| self.io(e))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| self.io(e))
    }

    /// Reads a record.
    pub fn get<T: DeserializeOwned>(
        &self,
        table: &str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        let index = self.index(table, key);
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let t = txn.open_table(RECORDS).map_err(|e| self.corrupt(e))?;
        let Some(sealed) = t.get(&index).map_err(|e| self.io(e))? else {
            return Ok(None);
        };
        let (stored_table, stored_key, value) = self.open_record(&index, sealed.value())?;
        if stored_table != table || stored_key != key {
            return Err(self.corrupt("a record is filed under another key"));
        }
        let value = Zeroizing::new(value);
        Ok(Some(self.decode(&value)?))
    }

    /// Deletes a record; true if it existed.
    pub fn delete(&self, table: &str, key: &[u8]) -> Result<bool, StoreError> {
        let index = self.index(table, key);
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
        let existed = {
            let mut t = txn.open_table(RECORDS).map_err(|e| self.io(e))?;
            t.remove(&index).map_err(|e| self.io(e))?.is_some()
        };
        txn.commit().map_err(|e| self.io(e))?;
        Ok(existed)
    }

    /// Every record of `table`, as (key, value), in no particular order.
    pub fn list<T: DeserializeOwned>(&self, table: &str) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let t = txn.open_table(RECORDS).map_err(|e| self.corrupt(e))?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(|e| self.io(e))? {
            let (k, v) = entry.map_err(|e| self.io(e))?;
            let index = k.value();
            let (stored_table, key, value) = self.open_record(&index, v.value())?;
            if stored_table == table {
                let value = Zeroizing::new(value);
                out.push((key, self.decode(&value)?));
            }
        }
        Ok(out)
    }
}

enum BatchOp {
    Put {
        table: String,
        key: Vec<u8>,
        value: Zeroizing<Vec<u8>>,
    },
    Delete {
        table: String,
        key: Vec<u8>,
    },
}

/// Puts and deletes to apply together with [`Store::commit`].
#[derive(Default)]
pub struct Batch {
    ops: Vec<BatchOp>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("ops", &self.ops.len())
            .finish()
    }
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put (the value is serialized now).
    pub fn put<T: Serialize>(
        &mut self,
        table: &str,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        let value =
            Zeroizing::new(postcard::to_stdvec(value).map_err(|e| StoreError::Corrupt {
                path: String::new(),
                reason: e.to_string(),
            })?);
        self.ops.push(BatchOp::Put {
            table: table.to_string(),
            key: key.to_vec(),
            value,
        });
        Ok(())
    }

    /// Adds a delete.
    pub fn delete(&mut self, table: &str, key: &[u8]) {
        self.ops.push(BatchOp::Delete {
            table: table.to_string(),
            key: key.to_vec(),
        });
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
