//! What is recorded of a response: a stream of frames, the head first, then the body (one frame
//! for an ordinary response, one per body frame for a streamed one). The head is a chunk of its
//! own, so a duplicate following a live stream gets it before the body has ended.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{response, HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

/// One recorded chunk of a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Frame {
    /// The status and the allowed headers (values that are not UTF-8 are not kept), and
    /// whether the body is a stream (replayed frame by frame) or one frame (replayed whole).
    Head {
        status: u16,
        headers: Vec<(String, String)>,
        #[serde(default)]
        stream: bool,
    },
    /// Body bytes that are UTF-8 (JSON, SSE, HTML: most bodies), kept readable in the store.
    Text(String),
    /// Other body bytes.
    Bytes(Vec<u8>),
}

impl Frame {
    /// The head of `parts`, keeping the headers in `allowed`.
    pub(crate) fn head(parts: &response::Parts, allowed: &[HeaderName], stream: bool) -> Self {
        let headers = parts
            .headers
            .iter()
            .filter(|(name, _)| allowed.contains(name))
            .filter_map(|(name, value)| {
                let value = std::str::from_utf8(value.as_bytes()).ok()?;
                Some((name.as_str().to_owned(), value.to_owned()))
            })
            .collect();
        Frame::Head {
            status: parts.status.as_u16(),
            headers,
            stream,
        }
    }

    /// A body frame.
    pub(crate) fn data(bytes: Bytes) -> Self {
        match String::from_utf8(bytes.into()) {
            Ok(text) => Frame::Text(text),
            Err(e) => Frame::Bytes(e.into_bytes()),
        }
    }

    /// A body frame's bytes (`None` for a head).
    pub(crate) fn into_bytes(self) -> Option<Bytes> {
        match self {
            Frame::Head { .. } => None,
            Frame::Text(text) => Some(Bytes::from(text)),
            Frame::Bytes(bytes) => Some(Bytes::from(bytes)),
        }
    }
}

/// A recorded head as a status and header map; `None` when it does not parse (a corrupt row).
pub(crate) fn head_of(
    status: u16,
    headers: &[(String, String)],
) -> Option<(StatusCode, HeaderMap)> {
    let status = StatusCode::from_u16(status).ok()?;
    let mut map = HeaderMap::with_capacity(headers.len() + 1);
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(value.as_bytes()).ok()?;
        map.append(name, value);
    }
    Some((status, map))
}
