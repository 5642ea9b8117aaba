//! Opening a store from a URL: `memory:`, `sqlite://path`, `postgres://...`.

use std::sync::Arc;

use super::memory::MemoryStore;
use super::Store;
use crate::error::Error;

/// Removes a password from a URL before it appears in a message.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[allow(dead_code)] // used only when a backend feature is off
fn missing_feature(url: &str, feature: &str) -> Error {
    Error::Open {
        url: redact(url),
        reason: format!("idem-runtime was built without its `{feature}` cargo feature"),
        source: None,
    }
}

/// Opens the store a URL names:
/// - `memory:` (or `memory://`): a new in-process store;
/// - `sqlite://path/to/file.db` (created on first use), `sqlite::memory:`;
/// - `postgres://user@host/db` or `postgresql://...` (cargo feature `postgres`).
pub async fn open(url: &str) -> Result<Arc<dyn Store>, Error> {
    let scheme = url.split(':').next().unwrap_or_default();
    match scheme {
        "memory" => Ok(Arc::new(MemoryStore::new())),
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Arc::new(super::sqlite::SqliteStore::open(url).await?)),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(Arc::new(super::postgres::PostgresStore::open(url).await?)),
        #[cfg(not(feature = "sqlite"))]
        "sqlite" => Err(missing_feature(url, "sqlite")),
        #[cfg(not(feature = "postgres"))]
        "postgres" | "postgresql" => Err(missing_feature(url, "postgres")),
        _ => Err(Error::Open {
            url: redact(url),
            reason:
                "unknown store URL scheme; expected `memory:`, `sqlite://path` or `postgres://...`"
                    .into(),
            source: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://a.db"), "sqlite://a.db");
    }
}
