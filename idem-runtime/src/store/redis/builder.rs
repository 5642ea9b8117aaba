//! Opening a [`RedisStore`]: the builder, the URL's store options (`idem_prefix`,
//! `idem_connections`, `idem_cluster`, ...), the first connection (failing fast with its cause:
//! refused, a password required or refused), the server version check, and the format marker.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::conn::{Conn, Connections};
use super::layout::{Layout, DEFAULT_PREFIX, FORMAT_VERSION, UPGRADABLE_FORMAT};
use super::listen::Notifier;
use super::scripts::Scripts;
use super::{Inner, RedisStore};
use crate::error::Error;
use crate::store::redact_url;

/// The oldest server the store runs on: `SCAN ... TYPE` (6.0) and scripts whose writes follow
/// `TIME` (effects replication, the default since 5.0).
pub const MIN_SERVER_VERSION: (u32, u32) = (6, 0);

/// Options for opening a [`RedisStore`].
#[derive(Clone)]
pub struct RedisStoreBuilder {
    url: String,
    prefix: Option<String>,
    connections: Option<usize>,
    cluster: Option<bool>,
    connect_timeout: Option<Duration>,
    response_timeout: Option<Duration>,
    notifications: bool,
    create: bool,
    replicas: Option<Replicas>,
    tls_root_certificate: Option<Vec<u8>>,
}

/// How many replicas must acknowledge a decision's writes before it counts (`WAIT`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Replicas {
    pub(super) count: u32,
    pub(super) timeout: Duration,
}

impl std::fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("connections", &self.connections)
            .field("cluster", &self.cluster)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("notifications", &self.notifications)
            .field("create", &self.create)
            .field("replicas", &self.replicas)
            .field("tls_root_certificate", &self.tls_root_certificate.is_some())
            .finish()
    }
}

/// The store options a URL may carry (removed before the URL reaches the driver).
#[derive(Debug, Default)]
struct UrlOptions {
    prefix: Option<String>,
    connections: Option<usize>,
    cluster: Option<bool>,
    connect_timeout: Option<Duration>,
    response_timeout: Option<Duration>,
    wait_replicas: Option<u32>,
    wait_timeout: Option<Duration>,
    tls_ca: Option<String>,
}

impl RedisStoreBuilder {
    pub(super) fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            prefix: None,
            connections: None,
            cluster: None,
            connect_timeout: None,
            response_timeout: None,
            notifications: true,
            create: true,
            replicas: None,
            tls_root_certificate: None,
        }
    }

    /// The PEM certificate of the authority that signed the server's TLS certificate, for
    /// `rediss://` servers with a private CA (URL `idem_tls_ca=/path/to/ca.pem`). Without it,
    /// the system's root certificates are trusted. Needs the `redis-tls` feature.
    #[must_use]
    pub fn tls_root_certificate(mut self, pem: Vec<u8>) -> Self {
        self.tls_root_certificate = Some(pem);
        self
    }

    /// Makes every claim, completion, renewal, stream append, release and forget wait until `count` replicas
    /// acknowledged its writes (`WAIT count timeout`, on the connection that wrote them), so a
    /// failover to one of those replicas loses no decision (URL `idem_wait_replicas` and
    /// `idem_wait_timeout_ms`, default 1 s). Fewer acknowledgements in time fail the operation
    /// closed with [`Error::Store`]: a claim's body does not run. Default: no waiting (a failover
    /// may lose the last writes the primary had not yet sent; see the README).
    #[must_use]
    pub fn wait_replicas(mut self, count: u32, timeout: Duration) -> Self {
        self.replicas = (count > 0).then_some(Replicas { count, timeout });
        self
    }

    /// The prefix of every Redis key the store writes (default `idem:`; URL `idem_prefix`):
    /// 1 to 64 ASCII letters, digits or `_ - : . /`; anything else is [`Error::Config`]. Stores
    /// with different prefixes on one server never see each other's records.
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Some(prefix.to_owned());
        self
    }

    /// How many multiplexed connections requests are spread over (default 2; URL
    /// `idem_connections`). Each carries any number of concurrent requests.
    #[must_use]
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = Some(n.max(1));
        self
    }

    /// Whether the URL names a node of a Redis Cluster (default false; URL `idem_cluster=true`).
    /// The other nodes are discovered from it.
    #[must_use]
    pub fn cluster(mut self, cluster: bool) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// How long connecting may take before it fails (default 2 s; URL
    /// `idem_connect_timeout_ms`).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// How long a request may wait for its reply before it fails closed with [`Error::Store`]
    /// (default 5 s; URL `idem_response_timeout_ms`; at least the `wait_replicas` timeout plus
    /// 1 s).
    #[must_use]
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = Some(timeout);
        self
    }

    /// Whether waiters and caches hear of changes through pub/sub (default true). Without it,
    /// waiters poll and caches rely on their time bound.
    #[must_use]
    pub fn notifications(mut self, on: bool) -> Self {
        self.notifications = on;
        self
    }

    /// Whether opening writes the format marker of a new store (default true). `false` opens
    /// only a store that exists (for operators' tools): no marker under the prefix is
    /// [`Error::Open`] saying `no idem store`.
    #[must_use]
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    fn open_error(&self, reason: impl Into<String>, source: Option<redis::RedisError>) -> Error {
        Error::Open {
            url: redact_url(&self.url),
            reason: reason.into(),
            source: source.map(|e| Box::new(e) as crate::error::BoxError),
        }
    }

    /// Splits the URL into the driver's URL and the store's options.
    fn parse_url(&self) -> Result<(String, UrlOptions), Error> {
        let scheme = self.url.split(':').next().unwrap_or_default();
        match scheme {
            "redis" => {}
            "rediss" if cfg!(feature = "redis-tls") => {}
            "rediss" => {
                return Err(self.open_error(
                    "`rediss://` needs idem-runtime's `redis-tls` cargo feature",
                    None,
                ))
            }
            _ => return Err(self.open_error("expected a `redis://` or `rediss://` URL", None)),
        }
        let mut parsed = url::Url::parse(&self.url)
            .map_err(|e| self.open_error(format!("not a valid URL: {e}"), None))?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(self.open_error("the URL names no host (`redis://host:6379`)", None));
        }
        let mut options = UrlOptions::default();
        let mut kept = Vec::new();
        for (name, value) in parsed.query_pairs() {
            let bad = |what: &str| self.open_error(format!("`{name}={value}`: {what}"), None);
            let ms = |v: &str| v.parse::<u64>().map(Duration::from_millis);
            match name.as_ref() {
                "idem_prefix" => options.prefix = Some(value.into_owned()),
                "idem_connections" => {
                    options.connections =
                        Some(value.parse().map_err(|_| bad("expected a number"))?);
                }
                "idem_cluster" => {
                    options.cluster = Some(match value.as_ref() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(bad("expected true or false")),
                    });
                }
                "idem_connect_timeout_ms" => {
                    options.connect_timeout = Some(ms(&value).map_err(|_| bad("expected ms"))?);
                }
                "idem_response_timeout_ms" => {
                    options.response_timeout = Some(ms(&value).map_err(|_| bad("expected ms"))?);
                }
                "idem_wait_replicas" => {
                    options.wait_replicas =
                        Some(value.parse().map_err(|_| bad("expected a number"))?);
                }
                "idem_tls_ca" => options.tls_ca = Some(value.into_owned()),
                "idem_wait_timeout_ms" => {
                    options.wait_timeout = Some(ms(&value).map_err(|_| bad("expected ms"))?);
                }
                other if other.starts_with("idem_") => {
                    return Err(bad(
                        "unknown store option (idem_prefix, idem_connections, idem_cluster, \
                         idem_connect_timeout_ms, idem_response_timeout_ms, idem_wait_replicas, \
                         idem_wait_timeout_ms, idem_tls_ca)",
                    ))
                }
                _ => kept.push((name.into_owned(), value.into_owned())),
            }
        }
        if kept.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(kept);
        }
        Ok((parsed.to_string(), options))
    }

    /// Connects, checks the server and the format, and returns the store.
    pub async fn open(self) -> Result<RedisStore, Error> {
        let (driver_url, options) = self.parse_url()?;
        let prefix = self
            .prefix
            .clone()
            .or(options.prefix)
            .unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
        let layout = Layout::new(&prefix)?;
        let replicas = self.replicas.or_else(|| {
            options
                .wait_replicas
                .filter(|n| *n > 0)
                .map(|count| Replicas {
                    count,
                    timeout: options.wait_timeout.unwrap_or(Duration::from_secs(1)),
                })
        });
        let connections = self.connections.or(options.connections).unwrap_or(2).max(1);
        let cluster = self.cluster.or(options.cluster).unwrap_or(false);
        let connect_timeout = self
            .connect_timeout
            .or(options.connect_timeout)
            .unwrap_or(Duration::from_secs(2));
        let response_timeout = self
            .response_timeout
            .or(options.response_timeout)
            .unwrap_or(Duration::from_secs(5));
        // A `WAIT` may block for its whole timeout: the reply must be allowed that long.
        let response_timeout = response_timeout
            .max(replicas.map_or(Duration::ZERO, |r| r.timeout + Duration::from_secs(1)));

        #[cfg(feature = "redis-tls")]
        if driver_url.starts_with("rediss:") {
            // rustls needs a process-wide crypto provider; keep one installed before this.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let root_certificate = match (&self.tls_root_certificate, &options.tls_ca) {
            (Some(pem), _) => Some(pem.clone()),
            (None, Some(path)) => Some(std::fs::read(path).map_err(|e| {
                self.open_error(format!("cannot read `idem_tls_ca` file {path}: {e}"), None)
            })?),
            (None, None) => None,
        };
        if root_certificate.is_some() && !cfg!(feature = "redis-tls") {
            return Err(self.open_error(
                "a TLS root certificate needs idem-runtime's `redis-tls` cargo feature",
                None,
            ));
        }
        let tls = Tls(root_certificate);
        let client = tls
            .client(&driver_url)
            .map_err(|e| self.open_error(format!("not a valid Redis URL: {e}"), Some(e)))?;
        let connect = |e: redis::RedisError| {
            let reason = describe_connect_error(&e);
            self.open_error(reason, Some(e))
        };
        // Reconnects happen in the background after a failure, with a short backoff; the
        // request that saw the failure fails closed.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(500));
        let mut first = if cluster {
            let cluster_client = tls
                .cluster(redis::cluster::ClusterClientBuilder::new(vec![
                    driver_url.clone()
                ]))
                .connection_timeout(connect_timeout)
                .response_timeout(response_timeout)
                .retries(3)
                .build()
                .map_err(connect)?;
            let conn =
                tokio::time::timeout(connect_timeout * 2, cluster_client.get_async_connection())
                    .await
                    .map_err(|_| self.open_error("cannot connect: timed out", None))?
                    .map_err(connect)?;
            Conn::Cluster(conn)
        } else {
            let manager =
                ConnectionManager::new_with_config(client.clone(), manager_config.clone())
                    .await
                    .map_err(connect)?;
            Conn::Single(manager)
        };

        self.check_server(&mut first).await?;
        self.check_format(&mut first, &layout).await?;

        // A cluster connection already multiplexes over one connection per node.
        let mut more = Vec::new();
        if matches!(first, Conn::Single(_)) {
            for _ in 1..connections {
                let manager =
                    ConnectionManager::new_with_config(client.clone(), manager_config.clone())
                        .await
                        .map_err(connect)?;
                more.push(Conn::Single(manager));
            }
        }

        let notifier = if self.notifications {
            let mut nodes = vec![client];
            if cluster {
                nodes.extend(cluster_nodes(&mut first, &driver_url, &tls).await);
            }
            Some(Notifier::new(nodes, layout.channel()))
        } else {
            None
        };
        Ok(RedisStore {
            inner: Arc::new(Inner {
                conns: Connections::new(first, more),
                layout,
                scripts: Scripts::new(),
                notifier,
                replicas,
                url: redact_url(&self.url),
            }),
        })
    }

    /// Refuses a server too old for the scripts (a typed error naming both versions).
    async fn check_server(&self, conn: &mut Conn) -> Result<(), Error> {
        let info: String = conn
            .on_node(&None, redis::cmd("INFO").arg("server").clone())
            .await
            .and_then(|v| redis::from_redis_value(v).map_err(Into::into))
            .map_err(|e| {
                let reason = describe_connect_error(&e);
                self.open_error(reason, Some(e))
            })?;
        let version = server_version(&info)
            .ok_or_else(|| self.open_error("`INFO server` gives no redis_version", None))?;
        if version < MIN_SERVER_VERSION {
            return Err(self.open_error(
                format!(
                    "the server runs Redis {}.{}; the store needs {}.{} or later \
                     (`SCAN ... TYPE`, scripts that read `TIME`)",
                    version.0, version.1, MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
                ),
                None,
            ));
        }
        Ok(())
    }

    /// Writes the format marker (if `create` and absent) and checks it. With `create`, a
    /// format-1 marker is upgraded to format 2 (the scripts handle records of both, see
    /// `layout.rs`); a read-only open reads a format-1 store as it is.
    async fn check_format(&self, conn: &mut Conn, layout: &Layout) -> Result<(), Error> {
        let key = layout.format_key();
        let failed =
            |e: redis::RedisError| self.open_error(format!("cannot read `{key}`: {e}"), Some(e));
        let found: Option<String> = if self.create {
            // Writes the marker of a new store, upgrades a format-1 one, and answers the
            // marker now there, in one step.
            redis::Script::new(
                r"
                redis.call('SET', KEYS[1], ARGV[1], 'NX')
                if redis.call('GET', KEYS[1]) == ARGV[2] then redis.call('SET', KEYS[1], ARGV[1]) end
                return redis.call('GET', KEYS[1])
                ",
            )
            .key(&key)
            .arg(FORMAT_VERSION)
            .arg(UPGRADABLE_FORMAT)
            .invoke_async(conn)
            .await
            .map_err(failed)?
        } else {
            redis::cmd("GET")
                .arg(&key)
                .query_async(conn)
                .await
                .map_err(failed)?
        };
        let readable = [FORMAT_VERSION.to_string(), UPGRADABLE_FORMAT.to_string()];
        match found {
            None => Err(self.open_error(
                format!(
                    "no idem store under the key prefix `{}` (no `{key}`)",
                    layout.prefix()
                ),
                None,
            )),
            Some(v) if readable.contains(&v) => Ok(()),
            Some(v) => Err(self.open_error(
                format!(
                    "the store under `{}` has format {v}, not one this build reads (format \
                     {FORMAT_VERSION}, or {UPGRADABLE_FORMAT}, which it upgrades); upgrade idem",
                    layout.prefix()
                ),
                None,
            )),
        }
    }
}

/// What a failed first connection or command means, in words.
fn describe_connect_error(e: &redis::RedisError) -> String {
    let text = e.to_string();
    if text.contains("NOAUTH") {
        format!("the server requires a password and the URL gives none (`redis://:password@host`): {text}")
    } else if text.contains("WRONGPASS")
        || matches!(e.kind(), redis::ErrorKind::AuthenticationFailed)
    {
        format!("the server refused the URL's user name or password: {text}")
    } else {
        format!("cannot connect: {text}")
    }
}

/// `redis_version` from `INFO server`, as (major, minor).
pub(super) fn server_version(info: &str) -> Option<(u32, u32)> {
    let line = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("redis_version:"))?;
    let mut parts = line.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Clients of a cluster's other primaries, for the subscriber to fall back on: the seed URL
/// with each node's host and port.
async fn cluster_nodes(conn: &mut Conn, seed: &str, tls: &Tls) -> Vec<redis::Client> {
    let Ok(nodes) = conn.key_nodes().await else {
        return Vec::new();
    };
    nodes
        .into_iter()
        .flatten()
        .filter_map(|(host, port)| {
            let mut url = url::Url::parse(seed).ok()?;
            url.set_host(Some(&host)).ok()?;
            url.set_port(Some(port)).ok()?;
            tls.client(url.as_str()).ok()
        })
        .collect()
}

/// The TLS root certificate clients trust, if one was given (else the system's roots).
// Without `redis-tls` a certificate is refused before one is built, so it is never read.
#[cfg_attr(not(feature = "redis-tls"), allow(dead_code))]
struct Tls(Option<Vec<u8>>);

impl Tls {
    #[cfg(feature = "redis-tls")]
    fn certificates(&self) -> Option<redis::TlsCertificates> {
        self.0.clone().map(|pem| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        })
    }

    /// A client of `url`.
    fn client(&self, url: &str) -> redis::RedisResult<redis::Client> {
        #[cfg(feature = "redis-tls")]
        if let Some(certs) = self.certificates() {
            return redis::Client::build_with_tls(url, certs);
        }
        redis::Client::open(url)
    }

    /// `builder` with the root certificate.
    fn cluster(
        &self,
        builder: redis::cluster::ClusterClientBuilder,
    ) -> redis::cluster::ClusterClientBuilder {
        #[cfg(feature = "redis-tls")]
        if let Some(certs) = self.certificates() {
            return builder.certs(certs);
        }
        builder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:0\r\n";
        assert_eq!(server_version(info), Some((7, 0)));
        assert_eq!(server_version("redis_version:5.0.7\n"), Some((5, 0)));
        assert!(server_version("redis_version:5.0.7\n").is_some_and(|v| v < MIN_SERVER_VERSION));
        assert_eq!(server_version("nothing"), None);
    }
}
