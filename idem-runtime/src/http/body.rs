//! Bodies: the layer's response body type, reading a request body under a limit, collecting a
//! response body up to the recording limit, and turning recorded frames back into a body.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::{future, stream, Stream, StreamExt};
use http_body::{Body, Frame as BodyFrame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, BodyStream, Full, LengthLimitError, Limited, StreamBody};

use crate::error::BoxError;

/// The body of every response the layer returns: the service's own, a replayed one, or a
/// problem. Any tower service can return it; axum turns it into its own body.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body of `bytes`.
pub(crate) fn full(bytes: Bytes) -> ResponseBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The service's body, boxed.
pub(crate) fn boxed<B>(body: B) -> ResponseBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A body of the frames of `stream`.
pub(crate) fn from_stream<S>(stream: S) -> ResponseBody
where
    S: Stream<Item = Result<Bytes, BoxError>> + Send + 'static,
{
    StreamBody::new(stream.map(|item| item.map(BodyFrame::data))).boxed_unsync()
}

/// Why a request body was not read.
#[derive(Debug)]
pub(crate) enum ReadError {
    TooLarge,
    Failed(BoxError),
}

/// Reads a request body of at most `limit` bytes.
pub(crate) async fn read_limited<B>(body: B, limit: usize) -> Result<Bytes, ReadError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(ReadError::TooLarge),
        Err(e) => Err(ReadError::Failed(e)),
    }
}

/// A response body read up to the recording limit.
pub(crate) enum Collected<B> {
    /// The whole body, within the limit.
    All(Bytes),
    /// Over the limit: what was read, and the rest of the body, to pass on unrecorded.
    Over(Vec<Bytes>, Pin<Box<B>>),
    /// The body failed while it was read.
    Failed(BoxError),
}

/// Reads `body` until its end, or until it is over `limit` bytes.
pub(crate) async fn collect_limited<B>(body: B, limit: usize) -> Collected<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut body = Box::pin(body);
    let mut read: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    loop {
        match body.frame().await {
            None => break,
            Some(Err(e)) => return Collected::Failed(e.into()),
            Some(Ok(frame)) => {
                // Trailers are not recorded: replays carry the body only.
                if let Ok(data) = frame.into_data() {
                    total += data.len();
                    read.push(data);
                    if total > limit {
                        return Collected::Over(read, body);
                    }
                }
            }
        }
    }
    Collected::All(match read.len() {
        0 => Bytes::new(),
        1 => read.swap_remove(0),
        _ => Bytes::from(read.concat()),
    })
}

/// A body that yields `read` and then the rest of `body`.
pub(crate) fn chained<B>(read: Vec<Bytes>, body: B) -> ResponseBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    from_stream(stream::iter(read.into_iter().map(Ok)).chain(data_frames(body)))
}

/// The data frames of a body as a stream (trailers dropped).
pub(crate) fn data_frames<B>(body: B) -> impl Stream<Item = Result<Bytes, BoxError>> + Send
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    BodyStream::new(body).filter_map(|frame| {
        future::ready(match frame {
            Ok(frame) => frame.into_data().ok().map(Ok),
            Err(e) => Some(Err(e.into())),
        })
    })
}
