//! The clear header and the byte layout of an envelope, version 1.
//!
//! ```text
//! offset        size  field
//! 0             3     magic "FQE"
//! 3             1     layout version (1)
//! 4             2     header length h, big-endian, 1..=MAX_HEADER_LEN
//! 6             h     header: MessagePack map (see Header)
//! 6+h           32    HPKE encapsulated key (X25519)
//! 38+h          n     ciphertext of payload ‖ padding, n ≥ 1
//! 38+h+n        16    AEAD tag (ChaCha20-Poly1305)
//! 54+h+n        64    Ed25519 signature of the sender
//! ```
//!
//! The *header block* (bytes `0..6+h`) is the AEAD's associated data, so no header byte can
//! change without the payload failing to open; the signature covers every byte before it.
//! Everything here is untrusted input: parsing checks lengths before slicing and never panics.

use serde::{Deserialize, Serialize};

use crate::ids::{CollaborationId, MessageId, OrgId, RunId, TaskId};
use crate::keys::KeyId;
use crate::protocol::{JobStatus, Kind};
use crate::time::Timestamp;

/// The first three bytes of every envelope.
pub const MAGIC: &[u8; 3] = b"FQE";
/// The layout version this module reads and writes.
pub const VERSION: u8 = 1;
/// Bytes before the MessagePack header: magic, version, header length.
pub const PREFIX_LEN: usize = 6;
/// The largest header accepted. A real header is about 300 bytes.
pub const MAX_HEADER_LEN: usize = 2048;
/// Length of the HPKE encapsulated key.
pub const ENC_LEN: usize = 32;
/// Length of the AEAD tag.
pub const TAG_LEN: usize = 16;
/// Length of the Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// The smallest possible envelope: an empty header cannot decode, but lengths are checked first.
pub const MIN_LEN: usize = PREFIX_LEN + 1 + ENC_LEN + 1 + TAG_LEN + SIGNATURE_LEN;

/// The routing header, readable by the server and the broker.
///
/// It carries exactly what routing and bookkeeping need; everything else is sealed. Field names
/// are spelled out on the wire (a MessagePack map) so that operators and other implementations
/// can read a dead-lettered header without this code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The header format version; equals the layout version.
    pub version: u8,
    /// 128 random bits; unique per envelope, used against replays and duplicates.
    pub id: MessageId,
    /// What the envelope is for.
    pub kind: Kind,
    /// The organization that sealed and signed it.
    pub sender: OrgId,
    /// The fingerprint of the sender's key that signed it.
    pub sender_key: KeyId,
    /// The organization it is sealed for.
    pub recipient: OrgId,
    /// The fingerprint of the recipient's key it is sealed to.
    pub recipient_key: KeyId,
    /// The collaboration whose membership the router checks.
    pub collaboration: CollaborationId,
    /// The task it belongs to.
    pub task: TaskId,
    /// The run it belongs to.
    pub run: RunId,
    /// When it was sealed, by the sender's clock.
    pub created_at: Timestamp,
    /// After this it must not be opened.
    pub expires_at: Timestamp,
    /// The job status it reports, for `job_status` and `job_result` envelopes only: the server
    /// must know job states without reading results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
}

/// Why bytes are not a well-formed version 1 envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Larger than the receiver accepts.
    #[error("envelope of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Shorter than the fixed parts.
    #[error("envelope of {len} bytes is shorter than the minimum of {MIN_LEN} bytes")]
    TooShort {
        /// Its length.
        len: usize,
    },
    /// Does not start with `FQE`.
    #[error("not a fedq envelope (bad magic bytes)")]
    BadMagic,
    /// A layout version this code does not know.
    #[error("unsupported envelope version {0} (this build reads version {VERSION})")]
    UnsupportedVersion(u8),
    /// The header length is zero, too large, or runs past the end.
    #[error("header length {0} is invalid for this envelope")]
    BadHeaderLength(usize),
    /// The header is not a valid MessagePack header.
    #[error("header does not decode: {0}")]
    BadHeader(String),
    /// The header's version field disagrees with the layout version.
    #[error("header version {header} does not match layout version {layout}")]
    VersionMismatch {
        /// The header's field.
        header: u8,
        /// The prefix's byte.
        layout: u8,
    },
    /// A status is missing where the kind needs one, or present where it must not be.
    #[error("a {kind} envelope {}", if *.status_present { "must not carry a status" } else { "must carry a status" })]
    StatusMismatch {
        /// The header's kind.
        kind: Kind,
        /// Whether the header has a status.
        status_present: bool,
    },
}

/// An envelope split into its parts, without any cryptographic check yet.
#[derive(Debug, Clone)]
pub struct Parsed<'a> {
    /// The decoded header.
    pub header: Header,
    /// Bytes `0..6+h`: the AEAD's associated data.
    pub header_block: &'a [u8],
    /// The HPKE encapsulated key.
    pub enc: &'a [u8],
    /// The ciphertext.
    pub ciphertext: &'a [u8],
    /// The AEAD tag.
    pub tag: &'a [u8],
    /// The signed bytes: everything before the signature.
    pub signed: &'a [u8],
    /// The signature.
    pub signature: &'a [u8],
}

/// Splits and decodes an envelope of at most `max_len` bytes. Reads only the clear parts: this
/// is what the router uses, and it is the first step of opening.
pub fn parse(bytes: &[u8], max_len: usize) -> Result<Parsed<'_>, FormatError> {
    let len = bytes.len();
    if len > max_len {
        return Err(FormatError::TooLarge { len, max: max_len });
    }
    if len < MIN_LEN {
        return Err(FormatError::TooShort { len });
    }
    if &bytes[..3] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    if bytes[3] != VERSION {
        return Err(FormatError::UnsupportedVersion(bytes[3]));
    }
    let header_len = usize::from(u16::from_be_bytes([bytes[4], bytes[5]]));
    let header_end = PREFIX_LEN + header_len;
    // At least one ciphertext byte follows the header: the padding marker is always sealed.
    if header_len == 0
        || header_len > MAX_HEADER_LEN
        || header_end + ENC_LEN + 1 + TAG_LEN + SIGNATURE_LEN > len
    {
        return Err(FormatError::BadHeaderLength(header_len));
    }
    let header = decode_header(&bytes[PREFIX_LEN..header_end])?;
    if header.version != VERSION {
        return Err(FormatError::VersionMismatch { header: header.version, layout: VERSION });
    }
    if header.kind.carries_status() != header.status.is_some() {
        return Err(FormatError::StatusMismatch {
            kind: header.kind,
            status_present: header.status.is_some(),
        });
    }
    let sig_start = len - SIGNATURE_LEN;
    let tag_start = sig_start - TAG_LEN;
    let ct_start = header_end + ENC_LEN;
    Ok(Parsed {
        header,
        header_block: &bytes[..header_end],
        enc: &bytes[header_end..ct_start],
        ciphertext: &bytes[ct_start..tag_start],
        tag: &bytes[tag_start..sig_start],
        signed: &bytes[..sig_start],
        signature: &bytes[sig_start..],
    })
}

/// Reads only the header of an envelope: for logs, dead letters and `fedq envelope inspect`.
pub fn peek_header(bytes: &[u8], max_len: usize) -> Result<Header, FormatError> {
    parse(bytes, max_len).map(|p| p.header)
}

fn decode_header(mut bytes: &[u8]) -> Result<Header, FormatError> {
    let header: Header =
        rmp_serde::from_read(&mut bytes).map_err(|e| FormatError::BadHeader(e.to_string()))?;
    if !bytes.is_empty() {
        return Err(FormatError::BadHeader(format!("{} bytes after the header", bytes.len())));
    }
    Ok(header)
}

/// Writes the header block (prefix and MessagePack header) into `out`.
pub(crate) fn write_header_block(header: &Header, out: &mut Vec<u8>) {
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&[0, 0]);
    let start = out.len();
    rmp_serde::encode::write_named(out, header).expect("writing a header into a Vec cannot fail");
    let header_len = out.len() - start;
    assert!(header_len <= MAX_HEADER_LEN, "a header has fixed-size fields and stays far below the limit");
    out[start - 2..start].copy_from_slice(&(header_len as u16).to_be_bytes());
}
