//! Domain-separation labels: one per use of a key or hash.
//!
//! Every signature, KDF and keyed hash in the protocol takes one of these, so that a value
//! produced for one purpose can never be accepted for another. BLAKE3 contexts follow
//! BLAKE3's advice for `derive_key`: fixed, application-specific and unique.
//! `specs/protocol.md` §"Labels" lists the same strings.

/// Prefix of the message an Ed25519 command signature covers.
pub const COMMAND_AUTH: &[u8] = b"petrel v1 command auth\0";

/// Prefix of the message a relay's identity key signs to publish its sealing key.
pub const RELAY_INFO_SIG: &[u8] = b"petrel v1 relay info\0";

/// BLAKE3 `derive_key` context for the hash a relay stores instead of a queue public key.
pub const QUEUE_KEY_HASH: &str = "petrel v1 queue key hash";

/// BLAKE3 `derive_key` context for the per-queue delivery (re-encryption) key.
pub const DELIVERY_KEY: &str = "petrel v1 queue delivery key";

/// BLAKE3 `derive_key` context for the key and nonce of a sealed forwarding request.
pub const SEAL_REQUEST: &str = "petrel v1 sealed request";

/// BLAKE3 `derive_key` context for the key and nonce of a sealed forwarding response.
pub const SEAL_RESPONSE: &str = "petrel v1 sealed response";

/// BLAKE3 `derive_key` context for the replay-cache tag of a sealed envelope.
pub const SEAL_REPLAY_TAG: &str = "petrel v1 sealed envelope replay tag";

/// BLAKE3 `derive_key` context for the hash a relay stores of a relay key a queue owner
/// allowed to hand it SENDs (RESTRICT).
pub const FORWARDER_KEY_HASH: &str = "petrel v1 forwarder key hash";

/// BLAKE3 `derive_key` context for the 4-byte checksum of a QR or link payload
/// (`specs/qr.md`). It detects damage; it is not authentication.
pub const QR_CHECKSUM: &str = "petrel v1 qr payload checksum";
