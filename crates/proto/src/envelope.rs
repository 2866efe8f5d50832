//! The one envelope of ekka values in protobuf bytes fields: `RaftPayload` (Raft RPCs, forwarded
//! commands and reads, and their answers) and `SnapshotChunk.meta`. The bytes are
//! `ekka_codec` (a format byte, then MessagePack); the message's `version` says which
//! encoding the sender used. Nothing else in the workspace encodes or decodes these fields.

use ekka_codec as codec;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::pb::RaftPayload;

/// Version of the payload encoding, as sent: 2 is `ekka_codec` (MessagePack). Version 1
/// was JSON, which members still read.
pub const PAYLOAD_VERSION: u32 = 2;

/// The oldest payload version a member reads.
pub const MIN_PAYLOAD_VERSION: u32 = 1;

/// Whether a member reads payloads of `version`.
pub fn payload_version_readable(version: u32) -> bool {
    (MIN_PAYLOAD_VERSION..=PAYLOAD_VERSION).contains(&version)
}

/// A payload that could not be sealed or opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("payload version {0} is not one of {MIN_PAYLOAD_VERSION}..={PAYLOAD_VERSION}")]
    Version(u32),
    #[error("bad payload: {0}")]
    Decode(String),
    #[error("cannot encode the payload: {0}")]
    Encode(String),
}

/// `v`'s bytes, for a field sent with version [`PAYLOAD_VERSION`].
pub fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, EnvelopeError> {
    codec::encode(v).map_err(|e| EnvelopeError::Encode(e.to_string()))
}

/// The value in `data`, sent with `version`.
pub fn decode<T: DeserializeOwned>(version: u32, data: &[u8]) -> Result<T, EnvelopeError> {
    if !payload_version_readable(version) {
        return Err(EnvelopeError::Version(version));
    }
    codec::decode(data).map_err(|e| EnvelopeError::Decode(e.to_string()))
}

/// `v` as a [`RaftPayload`].
pub fn seal<T: Serialize + ?Sized>(v: &T) -> Result<RaftPayload, EnvelopeError> {
    Ok(RaftPayload {
        version: PAYLOAD_VERSION,
        data: encode(v)?,
    })
}

/// The value in a [`RaftPayload`].
pub fn open<T: DeserializeOwned>(p: &RaftPayload) -> Result<T, EnvelopeError> {
    decode(p.version, &p.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_unknown_versions() {
        let p = seal(&("k", 7u64)).unwrap();
        assert_eq!(p.version, PAYLOAD_VERSION);
        assert_eq!(open::<(String, u64)>(&p).unwrap(), ("k".to_string(), 7));
        let future = RaftPayload {
            version: PAYLOAD_VERSION + 1,
            data: p.data.clone(),
        };
        assert_eq!(
            open::<(String, u64)>(&future),
            Err(EnvelopeError::Version(PAYLOAD_VERSION + 1))
        );
        assert!(matches!(
            decode::<(String, u64)>(PAYLOAD_VERSION, &[1, 0xc1]),
            Err(EnvelopeError::Decode(_))
        ));
    }

    #[test]
    fn reads_version_one_json() {
        let v: std::collections::BTreeMap<String, u64> = decode(1, br#"{"k":7}"#).unwrap();
        assert_eq!(v["k"], 7);
    }
}
