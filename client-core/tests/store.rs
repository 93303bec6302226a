//! The encrypted store: round trips, a wrong passphrase, damaged files, and what is on disk.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use petrel_client::store::{KdfParams, Store, StoreError};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const KDF: KdfParams = KdfParams::DANGEROUS_TESTING;

#[test]
fn records_round_trip_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("petrel.redb");
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    {
        let store = Store::open(&path, b"correct horse", KDF, &mut rng).unwrap();
        store
            .put(
                &mut rng,
                "contacts",
                b"alice",
                &("Alice Liddell".to_string(), 7u32),
            )
            .unwrap();
        store
            .put(&mut rng, "contacts", b"bob", &("Bob".to_string(), 9u32))
            .unwrap();
        store.put(&mut rng, "profiles", b"alice", &42u64).unwrap();
        assert!(store.delete("contacts", b"bob").unwrap());
        assert!(!store.delete("contacts", b"bob").unwrap());
    }
    let store = Store::open(&path, b"correct horse", KDF, &mut rng).unwrap();
    assert_eq!(
        store.get::<(String, u32)>("contacts", b"alice").unwrap(),
        Some(("Alice Liddell".to_string(), 7))
    );
    assert_eq!(
        store.get::<(String, u32)>("contacts", b"bob").unwrap(),
        None
    );
    assert_eq!(store.get::<u64>("profiles", b"alice").unwrap(), Some(42));
    let contacts = store.list::<(String, u32)>("contacts").unwrap();
    assert_eq!(
        contacts,
        vec![(b"alice".to_vec(), ("Alice Liddell".to_string(), 7))]
    );

    // Nothing readable on disk: names, keys and values are all sealed.
    drop(store);
    let bytes = std::fs::read(&path).unwrap();
    for needle in [
        b"Alice Liddell".as_slice(),
        b"alice",
        b"contacts",
        b"profiles",
    ] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{:?} on disk",
            String::from_utf8_lossy(needle)
        );
    }
}

#[test]
fn a_wrong_passphrase_is_one_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("petrel.redb");
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    Store::open(&path, b"right", KDF, &mut rng)
        .unwrap()
        .put(&mut rng, "t", b"k", &1u8)
        .unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = Store::open(&path, b"wrong", KDF, &mut rng).unwrap_err();
    assert!(matches!(err, StoreError::WrongPassphrase(_)), "{err:?}");
    assert!(err.to_string().contains("wrong passphrase"));
    assert!(
        std::fs::read(&path).unwrap() == before,
        "a failed open must not touch the file"
    );
    assert_eq!(
        Store::open(&path, b"right", KDF, &mut rng)
            .unwrap()
            .get::<u8>("t", b"k")
            .unwrap(),
        Some(1)
    );
}

#[test]
fn damaged_and_foreign_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // Not a redb file at all.
    let junk = dir.path().join("junk.redb");
    std::fs::write(&junk, vec![0x5a; 10_000]).unwrap();
    let err = Store::open(&junk, b"p", KDF, &mut rng).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    // Truncated store.
    let path = dir.path().join("petrel.redb");
    Store::open(&path, b"p", KDF, &mut rng)
        .unwrap()
        .put(&mut rng, "t", b"k", &1u8)
        .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.redb");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let result = Store::open(&cut, b"p", KDF, &mut rng).and_then(|s| s.get::<u8>("t", b"k"));
    assert!(
        result.is_err(),
        "a truncated store must not read back as valid"
    );
    // Every single flipped byte: an error or the right value, never a panic or a wrong value.
    for i in (0..bytes.len()).step_by(bytes.len() / 200 + 1) {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0x40;
        let p = dir.path().join(format!("flip{i}.redb"));
        std::fs::write(&p, &flipped).unwrap();
        if let Ok(store) = Store::open(&p, b"p", KDF, &mut rng)
            && let Ok(value) = store.get::<u8>("t", b"k")
        {
            assert!(value.is_none() || value == Some(1), "byte {i}: {value:?}");
        }
    }
}

/// An independent model of `specs/client-store.md`: opens a real store file with redb,
/// Argon2id, XChaCha20-Poly1305 and BLAKE3 directly, and finds the record the store wrote.
#[test]
fn the_file_matches_the_spec() {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use chacha20poly1305::{XChaCha20Poly1305, XNonce};
    use redb::{ReadableDatabase, TableDefinition};

    #[derive(serde::Deserialize)]
    struct Meta {
        format: u8,
        salt: [u8; 16],
        kdf: (u32, u32, u32),
        #[serde(with = "serde_bytes")]
        wrapped: Vec<u8>,
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("petrel.redb");
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let store = Store::open(&path, b"pass phrase", KDF, &mut rng).unwrap();
    store
        .put(&mut rng, "contacts", b"alice", &"Alice".to_string())
        .unwrap();
    drop(store);

    let db = redb::ReadOnlyDatabase::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta_table = txn
        .open_table(TableDefinition::<&str, &[u8]>::new("meta"))
        .unwrap();
    let meta: Meta =
        postcard::from_bytes(meta_table.get("meta").unwrap().unwrap().value()).unwrap();
    assert_eq!(meta.format, 1);
    assert_eq!(meta.kdf, (KDF.m_cost, KDF.t_cost, KDF.p_cost));

    let params = argon2::Params::new(meta.kdf.0, meta.kdf.1, meta.kdf.2, Some(32)).unwrap();
    let mut kek = [0u8; 32];
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(b"pass phrase", &meta.salt, &mut kek)
        .unwrap();
    let (nonce, ct) = meta.wrapped.split_at(24);
    let data_key = XChaCha20Poly1305::new(&kek.into())
        .decrypt(
            &XNonce::from(<[u8; 24]>::try_from(nonce).unwrap()),
            Payload {
                msg: ct,
                aad: b"petrel v1 store key wrap\0",
            },
        )
        .unwrap();
    let record_key = blake3::derive_key("petrel v1 store record key", &data_key);
    let index_key = blake3::derive_key("petrel v1 store index key", &data_key);
    let mut h = blake3::Hasher::new_keyed(&index_key);
    h.update(b"contacts\0alice");
    let index = *h.finalize().as_bytes();

    let records = txn
        .open_table(TableDefinition::<[u8; 32], &[u8]>::new("records"))
        .unwrap();
    let stored = records
        .get(&index)
        .unwrap()
        .expect("record filed under the spec's index")
        .value()
        .to_vec();
    let (nonce, ct) = stored.split_at(24);
    let mut aad = b"petrel v1 store record\0".to_vec();
    aad.extend_from_slice(&index);
    let plain = XChaCha20Poly1305::new(&record_key.into())
        .decrypt(
            &XNonce::from(<[u8; 24]>::try_from(nonce).unwrap()),
            Payload { msg: ct, aad: &aad },
        )
        .unwrap();
    let (table, key, value): (String, Vec<u8>, Vec<u8>) = postcard::from_bytes(&plain).unwrap();
    assert_eq!(
        (table.as_str(), key.as_slice()),
        ("contacts", b"alice".as_slice())
    );
    assert_eq!(postcard::from_bytes::<String>(&value).unwrap(), "Alice");
}
