//! Reads the runtime's counters from a Prometheus text endpoint (for `idem stats --metrics`):
//! fetched with `reqwest`, parsed with `prometheus-parse`.

use std::error::Error as _;
use std::time::Duration;

use prometheus_parse::{Scrape, Value};

/// How long the whole scrape (connect, request, body) may take.
const TIMEOUT: Duration = Duration::from_secs(5);

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

/// Fetches `url` (plain `http://host:port/path`; `/metrics` when it has no path) and sums the
/// idem counters in it.
pub(crate) async fn counters(url: &str) -> Result<Counters, String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err("only plain http:// endpoints are supported".to_owned());
    };
    let url = if rest.contains('/') {
        url.to_owned()
    } else {
        format!("{url}/metrics")
    };
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| chain(&e))?;
    let response = client
        .get(&url)
        .header(reqwest::header::ACCEPT, "text/plain")
        .send()
        .await
        .map_err(|e| chain(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("answered `{status}`"));
    }
    let body = response.text().await.map_err(|e| chain(&e))?;
    parse(&body)
}

/// Sums `idem_executions_total` and `idem_replays_total` over their label sets. A sample's
/// optional timestamp is the parser's business, never read as its value.
fn parse(body: &str) -> Result<Counters, String> {
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .map_err(|e| format!("not the Prometheus text format: {e}"))?;
    let mut c = Counters::default();
    for sample in &scrape.samples {
        let value = match sample.value {
            Value::Counter(v) | Value::Untyped(v) | Value::Gauge(v) => v,
            Value::Histogram(_) | Value::Summary(_) => continue,
        };
        match sample.metric.as_str() {
            "idem_executions_total" => c.executions += value,
            "idem_replays_total" => c.replays += value,
            _ => {}
        }
    }
    Ok(c)
}

/// An error with its causes (`reqwest` puts "connection refused" in a source, not in the
/// top-level message).
fn chain(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn sums_label_sets() {
        let c = super::parse(
            "# TYPE idem_replays_total counter\nidem_replays_total{op=\"a\",source=\"cache\"} 3\nidem_replays_total{op=\"b\",source=\"store\"} 1\nidem_executions_total{op=\"a\"} 4\n",
        )
        .unwrap();
        assert!((c.replays - 4.0).abs() < 1e-9);
        assert!((c.executions - 4.0).abs() < 1e-9);
        assert_eq!(c.replay_ratio(), Some(0.5));
    }

    /// A sample line may end with a timestamp in milliseconds: it is not the value.
    #[test]
    fn timestamps_are_not_values() {
        let c = super::parse(
            "# HELP idem_replays_total Calls answered from a recorded outcome.\n# TYPE idem_replays_total counter\nidem_replays_total{op=\"send mail\",source=\"cache\"} 6 1764522000000\nidem_executions_total{op=\"send mail\"} 2 1764522000000\nidem_executions_total 1\nother_total 99 1764522000000\n",
        )
        .unwrap();
        assert!((c.replays - 6.0).abs() < 1e-9, "{c:?}");
        assert!((c.executions - 3.0).abs() < 1e-9, "{c:?}");
        assert_eq!(c.replay_ratio(), Some(6.0 / 9.0));
    }
}
