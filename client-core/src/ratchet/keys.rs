//! Key material of the ratchet, in forms that serialize and erase themselves.
//!
//! Secrets are held as raw bytes in types that zeroize on drop and never print, because
//! the whole [`Session`](super::Session) is serialized into the client's encrypted store:
//!
//! * [`Secret32`] — a root, chain or header key, or a shared secret;
//! * [`DhPair`] — an X25519 ratchet key pair (the scalar and its public key);
//! * [`KemSecret`] — an ML-KEM-768 decapsulation key, kept as its 64-byte FIPS 203 seed
//!   `d ‖ z` and expanded only to decapsulate;
//! * [`QrKey`] — the public face of a one-time X25519 key shown in a QR code: an invitation
//!   key (§15) or a re-key key.
//!
//! Every Diffie–Hellman output is checked: an all-zero result means the peer's key has low
//! order, and is refused as [`RatchetError::WeakKey`].

use super::error::RatchetError;
use ml_kem::kem::{Decapsulate, Encapsulate, KeyExport};
use ml_kem::ml_kem_768::{DecapsulationKey, EncapsulationKey};
use ml_kem::{Seed, array::Array};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of an ML-KEM-768 encapsulation key.
pub(crate) const KEM_EK_LEN: usize = 1184;
/// Length of an ML-KEM-768 ciphertext.
pub(crate) const KEM_CT_LEN: usize = 1088;

/// 32 secret bytes: erased on drop, never printed.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub(crate) struct Secret32(pub(crate) [u8; 32]);

impl std::fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret32(..)")
    }
}

/// An X25519 key pair.
#[derive(Clone, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub(crate) struct DhPair {
    secret: Secret32,
    #[zeroize(skip)]
    public: [u8; 32],
}

impl DhPair {
    pub(crate) fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self::from_static(&StaticSecret::random_from_rng(rng))
    }

    pub(crate) fn from_static(secret: &StaticSecret) -> Self {
        Self {
            secret: Secret32(secret.to_bytes()),
            public: PublicKey::from(secret).to_bytes(),
        }
    }

    pub(crate) fn public(&self) -> [u8; 32] {
        self.public
    }

    /// `X25519(self, peer)`, refusing a non-contributory (all-zero) result.
    pub(crate) fn dh(&self, peer: &[u8; 32]) -> Result<Secret32, RatchetError> {
        let shared = StaticSecret::from(self.secret.0).diffie_hellman(&PublicKey::from(*peer));
        if !shared.was_contributory() {
            return Err(RatchetError::WeakKey);
        }
        Ok(Secret32(*shared.as_bytes()))
    }
}

/// An ML-KEM-768 decapsulation key, as its seed `d ‖ z`.
#[derive(Clone, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub(crate) struct KemSecret {
    d: [u8; 32],
    z: [u8; 32],
}

impl KemSecret {
    /// `KEM.KeyGen()`: a fresh key and its encapsulation key (1184 bytes).
    pub(crate) fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> (Self, Vec<u8>) {
        let mut secret = Self {
            d: [0; 32],
            z: [0; 32],
        };
        rng.fill_bytes(&mut secret.d);
        rng.fill_bytes(&mut secret.z);
        let ek = secret.expand().encapsulation_key().to_bytes().to_vec();
        (secret, ek)
    }

    fn expand(&self) -> DecapsulationKey {
        let mut seed = [0u8; 64];
        seed[..32].copy_from_slice(&self.d);
        seed[32..].copy_from_slice(&self.z);
        let key = DecapsulationKey::from_seed(Seed::from(seed));
        seed.zeroize();
        key
    }

    /// `KEM.Decaps(self, ct)`. ML-KEM rejects implicitly: a bad ciphertext gives a wrong
    /// secret, which shows up later as a body that does not authenticate.
    pub(crate) fn decapsulate(&self, ct: &[u8]) -> Result<Secret32, RatchetError> {
        let mut shared = self
            .expand()
            .decapsulate_slice(ct)
            .map_err(|_| RatchetError::MalformedHeader)?;
        let mut out = Secret32([0; 32]);
        out.0.copy_from_slice(shared.as_slice());
        shared.zeroize();
        Ok(out)
    }
}

/// The FIPS 203 encapsulation-key check (length and modulus).
pub(crate) fn parse_encaps_key(ek: &[u8]) -> Result<EncapsulationKey, RatchetError> {
    let array = Array::try_from(ek).map_err(|_| RatchetError::MalformedHeader)?;
    EncapsulationKey::new(&array).map_err(|_| RatchetError::MalformedHeader)
}

/// `KEM.Encaps(ek)`: the shared secret and the ciphertext (1088 bytes).
pub(crate) fn encapsulate<R: CryptoRng + ?Sized>(
    rng: &mut R,
    ek: &[u8],
) -> Result<(Secret32, Vec<u8>), RatchetError> {
    // The key was checked when it was received; a failure here means a damaged store.
    let ek = parse_encaps_key(ek).map_err(|_| RatchetError::CorruptState)?;
    let (ct, mut shared) = ek.encapsulate_with_rng(rng);
    let mut out = Secret32([0; 32]);
    out.0.copy_from_slice(shared.as_slice());
    shared.zeroize();
    Ok((out, ct.to_vec()))
}

/// A one-time X25519 key shown in a QR code: an invitation key `IK_B` (whose holder
/// becomes the responder, [`Session::respond`](super::Session::respond)) or a re-key key
/// ([`Session::rekey`](super::Session::rekey)).
///
/// It serializes (an invitation stays pending until its confirmation arrives) and erases
/// its secret on drop; its `Debug` shows only the public key.
#[derive(Clone, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub struct QrKey(DhPair);

impl QrKey {
    /// A fresh key.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self(DhPair::generate(rng))
    }

    /// From a given X25519 scalar (for test vectors).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self(DhPair::from_static(&StaticSecret::from(secret)))
    }

    /// The public key, which goes into the QR code.
    pub fn public(&self) -> [u8; 32] {
        self.0.public()
    }

    pub(crate) fn pair(&self) -> &DhPair {
        &self.0
    }
}

impl std::fmt::Debug for QrKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QrKey")
            .field("public", &Hex(&self.public()))
            .finish_non_exhaustive()
    }
}

/// Lower-case hex for `Debug` output of public values.
pub(crate) struct Hex<'a>(pub(crate) &'a [u8]);

impl std::fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}
