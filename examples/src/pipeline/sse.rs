//! A small server-sent events parser for the streaming client: bytes in as they arrive from the
//! network (an event may be split across reads, even inside a character), the `data` of each
//! complete event out.

/// Collects bytes until a blank line ends an event.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    pending: Vec<u8>,
}

impl SseParser {
    /// Feeds the next bytes of the body and returns the data of the events they completed.
    /// Comments (`: ...`) and fields other than `data` (`event`, `id`, `retry`) are skipped:
    /// the model server does not use them.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        // Only whole events are decoded, so a read that stopped inside a character is harmless.
        while let Some((end, blank)) = event_end(&self.pending) {
            let block: Vec<u8> = self.pending.drain(..end + blank).collect();
            let block = String::from_utf8_lossy(&block[..end]);
            let data: Vec<&str> = block
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|value| value.strip_prefix(' ').unwrap_or(value))
                .collect();
            if !data.is_empty() {
                events.push(data.join("\n"));
            }
        }
        events
    }
}

/// Where the first event in `bytes` ends, and the length of the blank line that ends it.
fn event_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}
