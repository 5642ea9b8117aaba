//! Opening a store from a URL (`memory:`, `sqlite://path`, `postgres://...`, `redis://...`), with or without
//! creating its tables, and the one function that removes passwords from a URL before it is
//! shown anywhere.

use std::sync::Arc;

use super::memory::MemoryStore;
use super::Store;
use crate::error::Error;

/// What a redacted secret is replaced with.
const HIDDEN: &str = "***";

/// Removes every password from a store URL before it appears in a message, a log line or a
/// `Debug` print: the password of the userinfo (`user:secret@host`, also when the password
/// itself contains `@`), and the values of query parameters named `password` (or ending in it,
/// such as `sslpassword`; any case). A URL the `url` crate cannot parse is redacted
/// conservatively: everything before its last `@` after the scheme, and its whole query when
/// the query mentions a password.
///
/// ```
/// use idem_runtime::store::redact_url;
/// assert_eq!(redact_url("postgres://app:s3cret@db/prod"), "postgres://app:***@db/prod");
/// assert_eq!(redact_url("postgres://app@db/prod?Password=x"), "postgres://app@db/prod?Password=***");
/// ```
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => redact_parsed(url, parsed),
        Err(_) => redact_unparsed(url),
    }
}

fn is_password_param(name: &str) -> bool {
    name.to_ascii_lowercase().ends_with("password")
}

fn redact_parsed(original: &str, mut parsed: url::Url) -> String {
    let mut changed = false;
    if parsed.password().is_some() {
        // Fails only for URLs that cannot carry userinfo, which then have no password either.
        changed |= parsed.set_password(Some(HIDDEN)).is_ok();
    }
    let has_secret_param = parsed
        .query_pairs()
        .any(|(name, _)| is_password_param(&name));
    if has_secret_param {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if is_password_param(&name) {
                    HIDDEN.to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
        changed = true;
    }
    if changed {
        parsed.to_string()
    } else {
        // Nothing secret: show exactly what the user wrote.
        original.to_owned()
    }
}

fn redact_unparsed(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let base = match base.rfind('@') {
        Some(at) => {
            let scheme_end = base.find("://").map_or(0, |i| i + 3);
            let scheme = base.get(..scheme_end.min(at)).unwrap_or_default();
            let host = base.get(at + 1..).unwrap_or_default();
            format!("{scheme}{HIDDEN}@{host}")
        }
        None => base.to_owned(),
    };
    match query {
        Some(q) if q.to_ascii_lowercase().contains("password") => format!("{base}?{HIDDEN}"),
        Some(q) => format!("{base}?{q}"),
        None => base,
    }
}

#[allow(dead_code)] // used only when a backend feature is off
fn missing_feature(url: &str, feature: &str) -> Error {
    Error::Open {
        url: redact_url(url),
        reason: format!("idem-runtime was built without its `{feature}` cargo feature"),
        source: None,
    }
}

/// Opens the store a URL names, creating or upgrading its tables:
/// - `memory:` (or `memory://`): a new in-process store;
/// - `sqlite://path/to/file.db` (created on first use), `sqlite::memory:`;
/// - `postgres://user@host/db` or `postgresql://...` (cargo feature `postgres`);
/// - `redis://[:password@]host:6379[/db]` or `rediss://...` (cargo feature `redis`, TLS with
///   `redis-tls`), a cluster with `?idem_cluster=true`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, Error> {
    open_with(url, true).await
}

/// Opens the store a URL names without creating or changing anything: no file, schema, table
/// or migration. The tables must exist at the format this build writes; otherwise it fails
/// with [`Error::Open`] saying `no idem tables in ...` (a SQLite file that does not exist is
/// never created). For operators' tools, where a typo must not create an empty store.
/// `memory:` opens a new, empty in-process store as [`open`] does.
pub async fn open_existing(url: &str) -> Result<Arc<dyn Store>, Error> {
    open_with(url, false).await
}

async fn open_with(url: &str, create: bool) -> Result<Arc<dyn Store>, Error> {
    let scheme = url.split(':').next().unwrap_or_default();
    let _ = create; // unused when both backend features are off
    match scheme {
        "memory" => Ok(Arc::new(MemoryStore::new())),
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Arc::new(
            super::sqlite::SqliteStore::builder(url)
                .migrate(create)
                .open()
                .await?,
        )),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(Arc::new(
            super::postgres::PostgresStore::builder(url)
                .migrate(create)
                .open()
                .await?,
        )),
        #[cfg(feature = "redis")]
        "redis" | "rediss" => Ok(Arc::new(
            super::redis::RedisStore::builder(url)
                .create(create)
                .open()
                .await?,
        )),
        #[cfg(not(feature = "redis"))]
        "redis" | "rediss" => Err(missing_feature(url, "redis")),
        #[cfg(not(feature = "sqlite"))]
        "sqlite" => Err(missing_feature(url, "sqlite")),
        #[cfg(not(feature = "postgres"))]
        "postgres" | "postgresql" => Err(missing_feature(url, "postgres")),
        _ => Err(Error::Open {
            url: redact_url(url),
            reason:
                "unknown store URL scheme; expected `memory:`, `sqlite://path`, `postgres://...` \
                 or `redis://...`"
                    .into(),
            source: None,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::redact_url;
    use crate::{Error, Idem};

    #[cfg(feature = "postgres")]
    #[test]
    fn the_postgres_builder_debug_hides_passwords() {
        let builder = crate::store::postgres::PostgresStore::builder(
            "postgres://app:hunter2@db/prod?sslpassword=swordfish",
        );
        let shown = format!("{builder:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("swordfish"),
            "{shown}"
        );
        assert!(shown.contains("app:***@db/prod"), "{shown}");
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn an_empty_sqlite_path_is_refused_at_open() {
        for url in ["sqlite://", "sqlite:", "sqlite://?mode=rwc"] {
            match Idem::open(url).await {
                Err(e @ Error::Open { .. }) => {
                    let text = e.to_string();
                    assert!(text.contains("sqlite://path/to/idem.db"), "{text}");
                    assert!(text.contains("sqlite::memory:"), "{text}");
                }
                other => panic!("{url}: expected Error::Open, got {other:?}"),
            }
        }
    }

    #[cfg(feature = "postgres")]
    #[tokio::test]
    async fn a_refused_postgres_connection_fails_fast_with_its_cause() {
        let started = std::time::Instant::now();
        let opened = Idem::open("postgres://postgres:pw@127.0.0.1:1/test").await;
        let elapsed = started.elapsed();
        let Err(e @ Error::Open { .. }) = opened else {
            panic!("expected Error::Open, got {opened:?}");
        };
        assert!(elapsed < std::time::Duration::from_secs(1), "{elapsed:?}");
        let text = e.to_string().to_lowercase();
        assert!(text.contains("connection refused"), "{text}");
        assert!(!text.contains(":pw@"), "{text}");
        let source = std::error::Error::source(&e)
            .map(|s| s.to_string().to_lowercase())
            .unwrap_or_default();
        assert!(source.contains("connection refused"), "source: {source}");
    }

    #[test]
    fn userinfo_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact_url("postgresql://u:secret@h:5433/db?sslmode=require"),
            "postgresql://u:***@h:5433/db?sslmode=require"
        );
        // An `@` inside the password: the userinfo ends at the last `@`.
        let r = redact_url("postgres://user:pa@ss@host/db");
        assert_eq!(r, "postgres://user:***@host/db");
        assert!(!r.contains("pa") && !r.contains("ss@"), "{r}");
        // Percent-encoded passwords too.
        assert_eq!(
            redact_url("postgres://u:p%40ss%3Aw@h/db"),
            "postgres://u:***@h/db"
        );
    }

    #[test]
    fn password_query_parameters_are_redacted_in_any_case() {
        for name in ["password", "PASSWORD", "Password", "sslpassword"] {
            let r = redact_url(&format!(
                "postgres://u@h/db?application_name=x&{name}=hunter2&idem_schema=s"
            ));
            assert!(!r.contains("hunter2"), "{r}");
            assert!(r.contains(&format!("{name}=***")), "{r}");
            assert!(
                r.contains("application_name=x") && r.contains("idem_schema=s"),
                "{r}"
            );
        }
        let both = redact_url("postgres://u:one@h/db?password=two");
        assert!(!both.contains("one") && !both.contains("two"), "{both}");
    }

    #[test]
    fn urls_without_secrets_are_unchanged() {
        for url in [
            "postgres://u@h/db",
            "postgres://h/db?idem_schema=jobs",
            "sqlite://a.db",
            "sqlite:///abs/path/idem.db?mode=rwc",
            "sqlite::memory:",
            "memory:",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn unparsable_urls_are_redacted_conservatively() {
        // An invalid port makes the URL unparsable.
        let r = redact_url("postgres://u:secret@h:99999999/db");
        assert!(!r.contains("secret"), "{r}");
        assert!(r.starts_with("postgres://***@"), "{r}");
        let r = redact_url("postgres://u@h:bad/db?PassWord=secret");
        assert!(!r.contains("secret"), "{r}");
        let r = redact_url("not a url with u:secret@host");
        assert!(!r.contains("secret"), "{r}");
        assert_eq!(redact_url("no secrets here"), "no secrets here");
    }
}
