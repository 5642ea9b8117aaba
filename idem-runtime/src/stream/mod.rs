//! Streamed results: a body that returns a stream of chunks (an LLM's tokens) runs once per key.
//! Its chunks reach the caller as they are produced and are journaled in the store in batches,
//! off the caller's path; a later call replays them in order, and a duplicate that arrives while
//! the stream is still being generated follows it live instead of paying for a second one.
//!
//! - `run.rs`: the claim, and which of the three streams below a call gets.
//! - `owner.rs`: the attempt that runs the body: yields its chunks, journals them, records the end.
//! - `journal.rs`: the task that appends an owner's chunks in batches (fenced by attempt).
//! - `follow.rs`: replay of a recorded stream (from the store page by page, or from the cache),
//!   and following a live one.

mod follow;
mod journal;
mod owner;
pub(crate) mod run;

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use serde::{Deserialize, Serialize};

/// The stream an idempotent streaming call returns: chunks of type `C`, each `Ok` or ending the
/// stream with an `Err`. Build one from the body's own stream with [`Streamed::new`]; consume it
/// as any [`Stream`] (it is `Unpin`, so `StreamExt::next` works on it directly).
///
/// The caller gets the same type whether the body ran (chunks as the body yields them), the
/// key's stream was recorded before (its chunks replayed in order), or another attempt is
/// generating it right now (its chunks so far, then the live ones as they are journaled).
pub struct Streamed<C, E> {
    inner: Pin<Box<dyn Stream<Item = Result<C, E>> + Send>>,
}

impl<C, E> Streamed<C, E> {
    /// Wraps the body's stream. It must own what it uses (`'static`) and be `Send`: after the
    /// body returns, the caller polls it, and idem journals what it yields.
    pub fn new<S>(stream: S) -> Self
    where
        S: Stream<Item = Result<C, E>> + Send + 'static,
    {
        Self {
            inner: Box::pin(stream),
        }
    }
}

impl<C, E> Stream for Streamed<C, E> {
    type Item = Result<C, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl<C, E> fmt::Debug for Streamed<C, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Streamed")
    }
}

/// How a streamed result is journaled, limited and replayed. Set it per call with
/// [`Call::stream_options`](crate::Call::stream_options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamOptions {
    /// A batch of chunks is appended to the store when it holds this many (default 64)...
    pub batch_chunks: u32,
    /// ...or this long after its first chunk was produced (default 50 ms), whichever is first.
    /// A duplicate following the stream from another process sees a chunk about this much later.
    pub batch_interval: Duration,
    /// The largest encoded chunk (default 1 MiB): a larger one ends the stream with
    /// [`Error::ChunkTooLarge`](crate::Error::ChunkTooLarge).
    pub max_chunk_bytes: usize,
    /// The most chunks one stream may have (default 1,000,000): one more ends it with
    /// [`Error::StreamTooLong`](crate::Error::StreamTooLong).
    pub max_chunks: u64,
    /// The most encoded bytes one stream may have (default 256 MiB): past it the stream ends
    /// with [`Error::StreamTooLong`](crate::Error::StreamTooLong).
    pub max_bytes: u64,
    /// Replays keep the original pacing (each chunk is delayed as it was when generated)
    /// instead of going as fast as the consumer reads (default off).
    pub pacing: bool,
    /// Streams of at most this many encoded bytes (default 1 MiB) are kept in the process's
    /// snapshot cache once recorded, and replay from memory.
    pub cache_bytes: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            batch_chunks: 64,
            batch_interval: Duration::from_millis(50),
            max_chunk_bytes: 1 << 20,
            max_chunks: 1_000_000,
            max_bytes: 256 << 20,
            pacing: false,
            cache_bytes: 1 << 20,
        }
    }
}

impl StreamOptions {
    /// Batches of at most `chunks` chunks, appended at most `interval` after their first chunk.
    #[must_use]
    pub fn batch(mut self, chunks: u32, interval: Duration) -> Self {
        self.batch_chunks = chunks.max(1);
        self.batch_interval = interval;
        self
    }

    /// At most `chunks` chunks and `bytes` encoded bytes per stream, each chunk at most
    /// `chunk_bytes`.
    #[must_use]
    pub fn limits(mut self, chunks: u64, bytes: u64, chunk_bytes: usize) -> Self {
        self.max_chunks = chunks;
        self.max_bytes = bytes;
        self.max_chunk_bytes = chunk_bytes;
        self
    }

    /// Replays keep the original pacing.
    #[must_use]
    pub fn pacing(mut self, on: bool) -> Self {
        self.pacing = on;
        self
    }

    /// Streams up to `bytes` encoded bytes replay from the process cache (0: never).
    #[must_use]
    pub fn cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }
}

/// What a completed stream's record holds as its snapshot (kind `ok`): how many chunks it has
/// and their encoded size. A stream that ended with an error recorded under `cache_errors` holds
/// that error instead (kind `err`), and its chunks are read until the journal ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSummary {
    /// How many chunks the stream has.
    pub chunks: u64,
    /// Their encoded size, in bytes.
    pub bytes: u64,
}

/// How many chunks replay and following read from the store at once.
const PAGE: u32 = 1024;
