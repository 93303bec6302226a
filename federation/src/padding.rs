//! Size classes: the only thing a relay learns about a message's length.
//!
//! A SEND body must be exactly one of [`SIZE_CLASSES`] bytes long; the end-to-end layer
//! pads its plaintext so that its ciphertext fills the class. Every chat message and every
//! handshake message fits the smallest class, so a relay cannot tell them apart.
//!
//! Padding format (`specs/protocol.md` §"Padding"): `len: u32 big-endian ‖ data ‖ zeros`.

/// The allowed SEND body lengths, smallest first.
pub const SIZE_CLASSES: [usize; 3] = [2_048, 16_384, 61_440];

/// Bytes the padding header takes.
pub const PAD_HEADER_LEN: usize = 4;

/// Why padding or unpadding failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PaddingError {
    /// The data does not fit the requested length.
    #[error("{len} bytes do not fit in {target} padded bytes")]
    TooLong {
        /// Length of the data.
        len: usize,
        /// Requested padded length.
        target: usize,
    },
    /// The padded buffer is shorter than its header or than its declared length.
    #[error("padded buffer is damaged: declared length {declared}, buffer {actual}")]
    Damaged {
        /// Length the header declares.
        declared: usize,
        /// Bytes available after the header.
        actual: usize,
    },
}

/// The smallest class whose body can hold `len` bytes once `overhead` bytes are added.
pub fn class_for(len: usize, overhead: usize) -> Option<usize> {
    SIZE_CLASSES
        .into_iter()
        .find(|&class| len + overhead + PAD_HEADER_LEN <= class)
}

/// True when `len` is a valid SEND body length.
pub fn is_class(len: usize) -> bool {
    SIZE_CLASSES.contains(&len)
}

/// Pads `data` to exactly `target` bytes.
pub fn pad(data: &[u8], target: usize) -> Result<Vec<u8>, PaddingError> {
    if data.len() + PAD_HEADER_LEN > target || data.len() > u32::MAX as usize {
        return Err(PaddingError::TooLong {
            len: data.len(),
            target,
        });
    }
    let mut out = Vec::with_capacity(target);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out.resize(target, 0);
    Ok(out)
}

/// Removes padding, returning the original data.
pub fn unpad(padded: &[u8]) -> Result<&[u8], PaddingError> {
    let (header, rest) =
        padded
            .split_first_chunk::<PAD_HEADER_LEN>()
            .ok_or(PaddingError::Damaged {
                declared: 0,
                actual: padded.len(),
            })?;
    let declared = u32::from_be_bytes(*header) as usize;
    let damaged = PaddingError::Damaged {
        declared,
        actual: rest.len(),
    };
    let (data, zeros) = (
        rest.get(..declared).ok_or(damaged.clone())?,
        &rest[declared..],
    );
    // The padding must be zeros: one valid padded form per message.
    if zeros.iter().any(|&b| b != 0) {
        return Err(damaged);
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn classes() {
        assert_eq!(class_for(100, 0), Some(2_048));
        assert_eq!(class_for(2_044, 0), Some(2_048));
        assert_eq!(class_for(2_045, 0), Some(16_384));
        assert_eq!(class_for(61_437, 0), None);
        assert!(is_class(16_384) && !is_class(16_383));
        assert!(matches!(
            pad(&[0; 10], 13),
            Err(PaddingError::TooLong { .. })
        ));
        assert!(matches!(
            unpad(&[0, 0, 0, 9, 1]),
            Err(PaddingError::Damaged {
                declared: 9,
                actual: 1
            })
        ));
        assert!(matches!(unpad(&[0, 0]), Err(PaddingError::Damaged { .. })));
        assert!(matches!(
            unpad(&[0, 0, 0, 1, 7, 0, 1]),
            Err(PaddingError::Damaged { .. })
        ));
        assert_eq!(unpad(&[0, 0, 0, 1, 7, 0, 0]), Ok(&[7u8][..]));
    }

    proptest! {
        #[test]
        fn pad_round_trip(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let class = class_for(data.len(), 0).unwrap();
            let padded = pad(&data, class).unwrap();
            prop_assert_eq!(padded.len(), class);
            prop_assert_eq!(unpad(&padded).unwrap(), &data[..]);
        }

        #[test]
        fn unpad_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = unpad(&data);
        }
    }
}
