//! Reads the runtime's counters from a Prometheus text endpoint (for `idem stats --metrics`).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The counters `stats` needs, summed over all label sets.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    /// `idem_executions_total`: bodies run.
    pub(crate) executions: f64,
    /// `idem_replays_total`: calls answered from a recorded outcome.
    pub(crate) replays: f64,
}

impl Counters {
    /// `replays / (replays + executions)`: the share of calls that did not run their body.
    pub(crate) fn replay_ratio(&self) -> Option<f64> {
        let all = self.replays + self.executions;
        (all > 0.0).then(|| self.replays / all)
    }
}

/// Fetches `url` (plain `http://host:port/path`) and sums the idem counters in it.
pub(crate) fn counters(url: &str) -> Result<Counters, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| "only plain http:// endpoints are supported".to_owned())?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/metrics"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("`{authority}` resolves to no address"))?;
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: text/plain\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!(
            "answered `{}`",
            head.lines().next().unwrap_or_default()
        ));
    }
    Ok(parse(body))
}

fn parse(body: &str) -> Counters {
    let mut c = Counters::default();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        match name {
            "idem_executions_total" => c.executions += value,
            "idem_replays_total" => c.replays += value,
            _ => {}
        }
    }
    c
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_label_sets() {
        let c = super::parse(
            "# TYPE idem_replays_total counter\nidem_replays_total{op=\"a\",source=\"cache\"} 3\nidem_replays_total{op=\"b\",source=\"store\"} 1\nidem_executions_total{op=\"a\"} 4\n",
        );
        assert!((c.replays - 4.0).abs() < 1e-9);
        assert!((c.executions - 4.0).abs() < 1e-9);
        assert_eq!(c.replay_ratio(), Some(0.5));
    }
}
