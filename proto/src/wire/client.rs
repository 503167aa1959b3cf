//! The client side of a connection, without any I/O: the handshake request, the welcome
//! check, and request/reply framing as byte buffers. The async client (`netgpu-client`) and
//! the guest library's blocking TCP transport both speak through these, so the framing and
//! handshake exist once.

use crate::cuda::CuResult;
use crate::wire::frame::{FrameError, FrameHeader, FrameKind};
use crate::wire::ops::{self, CodecError, Reply, Request, SessionLimits};
use crate::wire::{HEADER_LEN, MAX_CTRL_LEN, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use thiserror::Error;

/// The first request of every connection.
pub fn hello(token: &str, client: &str, limits: SessionLimits) -> Request {
    Request::Hello {
        version_min: MIN_PROTOCOL_VERSION,
        version_max: PROTOCOL_VERSION,
        token: token.to_string(),
        client: client.to_string(),
        limits,
    }
}

/// What the backend granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub version: u16,
    pub session_id: u64,
    /// Largest data section the backend accepts in one frame (at least 4 KiB).
    pub max_data_len: u32,
    pub server: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HandshakeError {
    /// The backend refused the session (bad token, no common version, session limit).
    #[error("backend refused the session ({status}): {reason}")]
    Refused { status: CuResult, reason: String },
    #[error("unexpected answer to the handshake: {0}")]
    Unexpected(String),
}

/// Checks the backend's answer to [`hello`].
pub fn welcome(h: &FrameHeader, reply: Option<Reply>) -> Result<Session, HandshakeError> {
    match (h.kind, reply) {
        (
            FrameKind::Reply,
            Some(Reply::Welcome {
                version,
                session_id,
                max_data_len,
                server,
            }),
        ) if h.status.is_success() => Ok(Session {
            version,
            session_id,
            max_data_len: max_data_len.max(4096),
            server,
        }),
        (_, Some(Reply::Error(reason))) => Err(HandshakeError::Refused {
            status: h.status,
            reason,
        }),
        (_, other) => Err(HandshakeError::Unexpected(format!(
            "{:?} frame, status {}, {other:?}",
            h.kind, h.status
        ))),
    }
}

#[derive(Debug, Error)]
pub enum FramingError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("data section of {0} bytes does not fit a frame")]
    TooLarge(usize),
    #[error("the backend sent a {0:?} frame where a reply belongs")]
    NotAReply(FrameKind),
}

/// Encodes the header and control section of request `id` into `out` (cleared first); the
/// `data_len` bytes of data follow them on the wire.
pub fn encode_request(
    id: u64,
    flags: u8,
    req: &Request,
    data_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), FramingError> {
    let data_len = u32::try_from(data_len).map_err(|_| FramingError::TooLarge(data_len))?;
    out.clear();
    out.resize(HEADER_LEN, 0);
    let mut ctrl = std::mem::take(out);
    let start = ctrl.len();
    ops::encode_request_into(req, &mut ctrl)?;
    let ctrl_len = (ctrl.len() - start) as u32;
    let h = FrameHeader::request(id, flags, ctrl_len, data_len);
    ctrl[..HEADER_LEN].copy_from_slice(&h.encode());
    *out = ctrl;
    Ok(())
}

/// Decodes a reply's (or goodbye's) header against the client's data limit.
pub fn decode_header(b: &[u8; HEADER_LEN], max_data: u32) -> Result<FrameHeader, FramingError> {
    let h = FrameHeader::decode(b, MAX_CTRL_LEN, max_data)?;
    if h.kind == FrameKind::Request {
        return Err(FramingError::NotAReply(h.kind));
    }
    Ok(h)
}

/// Decodes a reply's control section (empty: no body).
pub fn decode_reply(ctrl: &[u8]) -> Result<Option<Reply>, FramingError> {
    if ctrl.is_empty() {
        return Ok(None);
    }
    Ok(Some(ops::decode::<Reply>(ctrl)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_frame_is_header_then_control_section() {
        let mut out = vec![1, 2, 3];
        let req = Request::MemAlloc { ctx: 7, size: 64 };
        encode_request(9, 1, &req, 100, &mut out).unwrap();
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&out[..HEADER_LEN]);
        let h = FrameHeader::decode(&h, MAX_CTRL_LEN, 1000).unwrap();
        assert_eq!((h.request_id, h.flags, h.data_len), (9, 1, 100));
        assert_eq!(h.ctrl_len as usize, out.len() - HEADER_LEN);
        assert_eq!(ops::decode::<Request>(&out[HEADER_LEN..]).unwrap(), req);
    }

    #[test]
    fn the_welcome_is_checked() {
        let ok = FrameHeader::reply(1, CuResult::SUCCESS, 1, 0);
        let w = Reply::Welcome {
            version: 2,
            session_id: 5,
            max_data_len: 1,
            server: "s".into(),
        };
        assert_eq!(welcome(&ok, Some(w)).unwrap().max_data_len, 4096);
        let refused = FrameHeader::reply(1, CuResult::NOT_PERMITTED, 1, 0);
        assert!(matches!(
            welcome(&refused, Some(Reply::Error("bad token".into()))),
            Err(HandshakeError::Refused {
                status: CuResult::NOT_PERMITTED,
                ..
            })
        ));
        assert!(matches!(
            welcome(&ok, None),
            Err(HandshakeError::Unexpected(_))
        ));
    }
}
