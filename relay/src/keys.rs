//! The relay's two long-term secrets, each in its own file in the data directory.
//!
//! * `identity.key` — the Ed25519 seed of the relay's identity. Its public key is the key in
//!   the relay address and the libp2p peer ID; losing it means a new address.
//! * `sealing.key` — the X25519 secret that sealed envelopes are encrypted to. It is
//!   published in the relay info, signed by the identity key.
//!
//! Both are 32 raw bytes, created on first start with mode 0600, and never logged.

use ed25519_dalek::SigningKey;
use petrel_federation::RelayKey;
use std::io::Write;
use std::path::{Path, PathBuf};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

/// Why the keys could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file exists but is not 32 bytes.
    #[error("{path} is damaged: expected 32 bytes, found {len}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No identity exists in the data directory (for `petrel-relay address`).
    #[error("no relay identity in {0}; start the relay once to create one")]
    Missing(PathBuf),
}

/// The relay's secrets.
pub struct RelayKeys {
    /// Identity (Ed25519).
    pub identity: SigningKey,
    /// Sealing key (X25519).
    pub sealing: StaticSecret,
}

impl std::fmt::Debug for RelayKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayKeys")
            .field("identity", &self.relay_key())
            .finish_non_exhaustive()
    }
}

impl RelayKeys {
    /// The public identity key.
    pub fn relay_key(&self) -> RelayKey {
        RelayKey(self.identity.verifying_key().to_bytes())
    }

    /// The identity as a libp2p keypair.
    pub fn libp2p_keypair(&self) -> Option<petrel_federation::transport::Keypair> {
        petrel_federation::transport::Keypair::ed25519_from_bytes(self.identity.to_bytes()).ok()
    }

    /// Loads the keys from `dir`, creating missing ones with `rng`.
    pub fn load_or_create<R: rand_core::CryptoRng + ?Sized>(
        dir: &Path,
        rng: &mut R,
    ) -> Result<Self, KeyError> {
        let identity = load_or_create(&dir.join("identity.key"), rng)?;
        let sealing = load_or_create(&dir.join("sealing.key"), rng)?;
        Ok(Self {
            identity: SigningKey::from_bytes(&identity),
            sealing: StaticSecret::from(*sealing),
        })
    }

    /// Loads the identity only, without creating anything.
    pub fn load_identity(dir: &Path) -> Result<SigningKey, KeyError> {
        let path = dir.join("identity.key");
        if !path.exists() {
            return Err(KeyError::Missing(dir.to_path_buf()));
        }
        Ok(SigningKey::from_bytes(&*read_key(&path)?))
    }
}

fn read_key(path: &Path) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?);
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(KeyError::Damaged {
            path: path.to_path_buf(),
            len: bytes.len(),
        });
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

fn load_or_create<R: rand_core::CryptoRng + ?Sized>(
    path: &Path,
    rng: &mut R,
) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    if path.exists() {
        return read_key(path);
    }
    let mut key = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(key.as_mut());
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(key.as_ref()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(key)
}
