//! Padding of the sealed plaintext, so that ciphertext sizes leak less.
//!
//! The plaintext is always `payload ‖ 0x80 ‖ 0x00*` (ISO/IEC 7816-4 padding), so the receiver
//! strips padding the same way whether or not the sender padded. With [`Padding::Padme`] the
//! total is rounded up with the Padmé scheme (Nikitin et al., PETS 2019): at most 12% overhead,
//! and a length reveals only O(log log n) bits instead of O(log n).

use serde::{Deserialize, Serialize};

const MARKER: u8 = 0x80;

/// How the sealed plaintext is padded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// Only the one-byte marker: sizes are visible to the byte.
    #[default]
    None,
    /// Round up to a Padmé size bucket.
    Padme,
}

impl Padding {
    /// The padded plaintext length for a payload of `payload_len` bytes (marker included).
    pub fn padded_len(self, payload_len: usize) -> usize {
        let len = payload_len + 1;
        match self {
            Padding::None => len,
            Padding::Padme => padme(len),
        }
    }
}

/// Padmé: keep the top `floor(log2(e)) + 1` bits of the length's exponent `e`, round the rest up.
fn padme(len: usize) -> usize {
    if len < 2 {
        return len;
    }
    let e = usize::BITS - 1 - len.leading_zeros(); // floor(log2(len))
    let s = u32::BITS - e.leading_zeros(); // floor(log2(e)) + 1
    let last_bits = e - s;
    let mask = (1usize << last_bits) - 1;
    (len + mask) & !mask
}

/// Appends the marker and zero bytes so that `buf[start..]` is `padded_len` long.
pub(crate) fn pad(buf: &mut Vec<u8>, start: usize, padded_len: usize) {
    buf.push(MARKER);
    buf.resize(start + padded_len, 0);
}

/// The payload length inside a padded plaintext, or `None` when the padding is malformed.
pub(crate) fn unpadded_len(plaintext: &[u8]) -> Option<usize> {
    let marker = plaintext.iter().rposition(|&b| b != 0)?;
    (plaintext[marker] == MARKER).then_some(marker)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn padme_matches_the_paper_examples() {
        // Lengths whose exponent keeps few bits are rounded to coarse buckets.
        assert_eq!(padme(9), 10);
        assert_eq!(padme(1000), 1024);
        assert_eq!(padme(1025), 1088);
        assert_eq!(padme(1_000_000), 1_015_808);
    }

    proptest! {
        #[test]
        fn padme_never_shrinks_and_stays_within_12_percent(len in 2usize..1 << 30) {
            let padded = padme(len);
            prop_assert!(padded >= len);
            prop_assert!((padded - len) as f64 <= 0.12 * len as f64 + 1.0);
        }

        #[test]
        fn pad_then_unpad_returns_the_payload(payload in proptest::collection::vec(any::<u8>(), 0..3000), padme in any::<bool>()) {
            let padding = if padme { Padding::Padme } else { Padding::None };
            let mut buf = payload.clone();
            pad(&mut buf, 0, padding.padded_len(payload.len()));
            prop_assert_eq!(buf.len(), padding.padded_len(payload.len()));
            prop_assert_eq!(unpadded_len(&buf), Some(payload.len()));
        }
    }

    #[test]
    fn missing_marker_is_malformed() {
        assert_eq!(unpadded_len(&[1, 2, 0, 0]), None);
        assert_eq!(unpadded_len(&[0, 0]), None);
        assert_eq!(unpadded_len(&[]), None);
        assert_eq!(unpadded_len(&[MARKER]), Some(0));
    }
}
