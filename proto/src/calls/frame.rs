//! The frames of a call connection. After the client's [`MAGIC`], each side sends frames:
//!
//! - request: `len u32 | id u64 | session u64 | method u8 | body` (a prost message)
//! - reply:   `len u32 | id u64 | outcome u8 | body` (the reply message, or a
//!   [`CallError`] when `outcome` is [`FAILED`])
//!
//! Integers are big-endian; `len` counts the bytes after itself. Method 0 is a ping, whose
//! reply is empty.

use crate::error::{DETAIL_KEY, KIND_KEY};
use crate::limits::MAX_MESSAGE;
use crate::meta::CallError;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// What a client sends first, so the master's listener can tell a call connection from
/// HTTP/2 (whose connections open with `PRI `).
pub const MAGIC: [u8; 4] = *b"ELK1";
pub const PING: u8 = 0;
pub const DONE: u8 = 0;
pub const FAILED: u8 = 1;

const REQUEST_HEAD: usize = 17;
const REPLY_HEAD: usize = 9;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes: shorter than its header or over the message limit")]
    Size(u32),
}

pub struct Request {
    pub id: u64,
    pub session: u64,
    pub method: u8,
    pub body: Bytes,
}

pub struct Reply {
    pub id: u64,
    pub outcome: Result<Bytes, Status>,
}

pub fn request(id: u64, session: u64, method: u8, body: &impl Message) -> Vec<u8> {
    let len = REQUEST_HEAD + body.encoded_len();
    let mut out = Vec::with_capacity(4 + len);
    out.put_u32(len as u32);
    out.put_u64(id);
    out.put_u64(session);
    out.put_u8(method);
    body.encode_raw(&mut out);
    out
}

pub fn reply(id: u64, outcome: Result<Bytes, Status>) -> Vec<u8> {
    let (code, body) = match outcome {
        Ok(body) => (DONE, body),
        Err(status) => (FAILED, call_error(&status).encode_to_vec().into()),
    };
    let mut out = Vec::with_capacity(4 + REPLY_HEAD + body.len());
    out.put_u32((REPLY_HEAD + body.len()) as u32);
    out.put_u64(id);
    out.put_u8(code);
    out.put_slice(&body);
    out
}

pub async fn read_request(r: &mut (impl AsyncRead + Unpin)) -> Result<Request, FrameError> {
    let mut f = read_frame(r, REQUEST_HEAD).await?;
    Ok(Request {
        id: f.get_u64(),
        session: f.get_u64(),
        method: f.get_u8(),
        body: f.freeze(),
    })
}

pub async fn read_reply(r: &mut (impl AsyncRead + Unpin)) -> Result<Reply, FrameError> {
    let mut f = read_frame(r, REPLY_HEAD).await?;
    let id = f.get_u64();
    let outcome = match f.get_u8() {
        DONE => Ok(f.freeze()),
        _ => Err(match CallError::decode(f) {
            Ok(e) => status(e),
            Err(e) => Status::internal(format!("undecodable error answer: {e}")),
        }),
    };
    Ok(Reply { id, outcome })
}

async fn read_frame(r: &mut (impl AsyncRead + Unpin), head: usize) -> Result<BytesMut, FrameError> {
    let len = r.read_u32().await?;
    if (len as usize) < head || len as usize > head + MAX_MESSAGE {
        return Err(FrameError::Size(len));
    }
    let mut f = BytesMut::zeroed(len as usize);
    r.read_exact(&mut f).await?;
    Ok(f)
}

fn call_error(s: &Status) -> CallError {
    let text = |key| {
        s.metadata()
            .get(key)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    CallError {
        code: s.code() as i32,
        message: s.message().to_owned(),
        kind: text(KIND_KEY),
        detail: text(DETAIL_KEY),
    }
}

fn status(e: CallError) -> Status {
    let mut s = Status::new(Code::from(e.code), e.message);
    for (key, value) in [(KIND_KEY, e.kind), (DETAIL_KEY, e.detail)] {
        if let Ok(v) = MetadataValue::try_from(value) {
            if !v.is_empty() {
                s.metadata_mut().insert(key, v);
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::LookupRequest;
    use crate::FsError;

    #[tokio::test]
    async fn a_request_reads_back_as_sent() {
        let msg = LookupRequest {
            parent: 7,
            name: b"x".to_vec(),
        };
        let bytes = request(3, 9, 4, &msg);
        let r = read_request(&mut &bytes[..]).await.expect("frame");
        assert_eq!((r.id, r.session, r.method), (3, 9, 4));
        assert_eq!(LookupRequest::decode(r.body).expect("body"), msg);
    }

    #[tokio::test]
    async fn an_error_keeps_its_kind_and_detail() {
        let sent = Status::from(FsError::NameTooLong);
        let bytes = reply(5, Err(sent));
        let r = read_reply(&mut &bytes[..]).await.expect("frame");
        assert_eq!(r.id, 5);
        let back = FsError::from(r.outcome.expect_err("an error"));
        assert!(matches!(back, FsError::NameTooLong), "{back:?}");
    }

    #[tokio::test]
    async fn a_length_past_the_limit_or_under_the_header_is_refused() {
        for len in [(MAX_MESSAGE + REQUEST_HEAD + 1) as u32, 3] {
            let bytes = len.to_be_bytes();
            let e = read_request(&mut &bytes[..]).await.err().expect("refused");
            assert!(matches!(e, FrameError::Size(n) if n == len), "{e}");
        }
    }
}
