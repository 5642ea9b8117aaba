//! Durations on the command line (`--older-than 10m`, `--timeout 10s`).
//!
//! The grammar is humantime's, the same as the `#[idempotent(ttl = "...")]` attribute's:
//! `500ms`, `30s`, `10m`, `1h30m`, `7d`. A bare number is refused rather than guessed at.

use std::time::Duration;

/// Parses a humantime duration (`500ms`, `30s`, `1h30m`, `7d`); a bare number is an error
/// asking for a unit.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{text}` has no unit: add one, e.g. `{text}s`, `{text}m` or `{text}h` (units: ms, s, m, h, d)"
        ));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("`{text}` is not a duration ({e}): expected e.g. 500ms, 30s, 10m, 1h30m, 7d")
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::parse_duration;

    #[test]
    fn humantime_grammar() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration(" 7d ").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
    }

    #[test]
    fn a_bare_number_asks_for_a_unit() {
        let err = parse_duration("30").unwrap_err();
        assert!(err.contains("no unit") && err.contains("30s"), "{err}");
    }

    #[test]
    fn nonsense_is_refused() {
        for text in ["", "ten minutes", "5 parsecs", "-1s"] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains("not a duration"), "{text}: {err}");
        }
    }
}
