//! `pgbench -M prepared` with the same minimal statements as the hand-written baseline
//! (`examples/pgbench/*.sql`), run by the `bench` binary in the same run as idem, so that all
//! three sides meet the same server in the same state.

use std::process::Command;
use std::str::FromStr;

use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;

/// The table and the 10,000 completed keys the scripts use.
const SETUP: &str = include_str!("../pgbench/setup.sql");
/// Claim insert + fenced complete update of a fresh key.
const MISS: &str = include_str!("../pgbench/miss.sql");
/// One indexed read of a completed key.
const HIT: &str = include_str!("../pgbench/hit.sql");
/// The miss's two statements in one transaction.
const STEP: &str = include_str!("../pgbench/step.sql");

/// Which work pgbench repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// Claim insert + fenced complete update of a fresh key, each its own transaction.
    Miss,
    /// The same two statements in one transaction.
    Step,
    /// One indexed read of a completed key.
    Hit,
}

/// What pgbench reports for one run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PgbenchStats {
    /// Transactions (calls) run.
    pub calls: u64,
    /// Transactions per second, without connection set-up.
    pub calls_per_s: f64,
    /// Mean latency of a transaction, microseconds.
    pub mean_us: f64,
}

impl PgbenchStats {
    /// Adds another run (weighted by its calls).
    pub fn absorb(&mut self, other: PgbenchStats) {
        let calls = self.calls + other.calls;
        if calls == 0 {
            return;
        }
        let mean_us =
            (self.mean_us * self.calls as f64 + other.mean_us * other.calls as f64) / calls as f64;
        // Throughput: total calls over total time.
        let seconds = self.seconds() + other.seconds();
        self.mean_us = mean_us;
        self.calls = calls;
        self.calls_per_s = if seconds > 0.0 {
            calls as f64 / seconds
        } else {
            0.0
        };
    }

    fn seconds(&self) -> f64 {
        if self.calls_per_s > 0.0 {
            self.calls as f64 / self.calls_per_s
        } else {
            0.0
        }
    }
}

/// A pgbench runner on one database.
pub struct Pgbench {
    /// libpq connection string (`host=... port=... user=... dbname=...`), without the password:
    /// it is an argument of psql and pgbench, which any user of the machine can read (`ps`).
    conninfo: String,
    /// The password, for psql and pgbench through `PGPASSWORD` (their environment is private).
    password: Option<String>,
    script: tempfile::NamedTempFile,
}

/// Never prints the password.
impl std::fmt::Debug for Pgbench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pgbench")
            .field("conninfo", &self.conninfo)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("script", &self.script.path())
            .finish()
    }
}

/// The libpq connection string of a PostgreSQL URL (host, port, user, database; never the
/// password) and its password apart, for `PGPASSWORD`. Idem's own query parameters are ignored.
fn conninfo_of(url: &str) -> Result<(String, Option<String>), String> {
    let base = url.split('?').next().unwrap_or(url);
    let options =
        PgConnectOptions::from_str(base).map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
    // `sslmode=disable`: the sqlx sides speak plain TCP (idem is built without TLS), while
    // libpq's default (`prefer`) would encrypt when the server offers it, costing pgbench
    // 20-25% of its throughput here and making it a weaker reference than it is.
    let mut conninfo = format!(
        "sslmode=disable host={} port={} user={}",
        options.get_host(),
        options.get_port(),
        options.get_username()
    );
    if let Some(db) = options.get_database() {
        conninfo.push_str(&format!(" dbname={db}"));
    }
    // The `url` crate keeps the password's `%XX` escapes; libpq wants it as it is.
    let password = options.to_url_lossy().password().map(|p| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .into_owned()
    });
    Ok((conninfo, password))
}

impl Pgbench {
    /// Prepares the table and writes the script of `script`. `url` may carry idem's own query
    /// parameters; only host, port, user, password and database reach libpq.
    pub fn new(url: &str, script: Script) -> Result<Self, String> {
        let (conninfo, password) = conninfo_of(url)?;
        let mut psql = Command::new("psql");
        if let Some(password) = &password {
            psql.env("PGPASSWORD", password);
        }
        let setup = psql
            .args(["-q", "-v", "ON_ERROR_STOP=1", "-c", SETUP, &conninfo])
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if !setup.status.success() {
            return Err(format!(
                "psql setup failed: {}",
                String::from_utf8_lossy(&setup.stderr)
            ));
        }
        let text = match script {
            Script::Miss => MISS,
            Script::Step => STEP,
            Script::Hit => HIT,
        };
        let file = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        std::fs::write(file.path(), text).map_err(|e| e.to_string())?;
        Ok(Self {
            conninfo,
            password,
            script: file,
        })
    }

    /// Runs about `calls` transactions on `clients` connections.
    pub fn run(&self, calls: u64, clients: usize) -> Result<PgbenchStats, String> {
        let clients = clients.max(1);
        let per_client = (calls / clients as u64).max(1);
        let mut pgbench = Command::new("pgbench");
        if let Some(password) = &self.password {
            pgbench.env("PGPASSWORD", password);
        }
        let out = pgbench
            .args(["-n", "-M", "prepared", "-f"])
            .arg(self.script.path())
            .args(["-c", &clients.to_string()])
            .args(["-j", &clients.min(2).to_string()])
            .args(["-t", &per_client.to_string()])
            .arg(&self.conninfo)
            .output()
            .map_err(|e| format!("cannot run pgbench: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "pgbench failed: {}{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        parse(&text, per_client * clients as u64)
    }
}

/// Reads `latency average = X ms` and `tps = Y` from pgbench's report.
fn parse(report: &str, calls: u64) -> Result<PgbenchStats, String> {
    let number_after = |label: &str| {
        report
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
            .ok_or_else(|| format!("no `{label}` in pgbench's report:\n{report}"))
    };
    Ok(PgbenchStats {
        calls,
        calls_per_s: number_after("tps =")?,
        mean_us: number_after("latency average =")? * 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::{conninfo_of, parse, PgbenchStats};

    #[test]
    fn the_password_never_reaches_the_command_line() {
        let (conninfo, password) =
            conninfo_of("postgres://bench:s3cr%40t@db.example:5433/prod?idem_schema=x")
                .unwrap_or_default();
        assert!(!conninfo.contains("s3cr"), "{conninfo}");
        assert!(conninfo.contains("host=db.example port=5433 user=bench dbname=prod"));
        assert_eq!(password.as_deref(), Some("s3cr@t"));
        let (_, none) = conninfo_of("postgres://bench@db/prod").unwrap_or_default();
        assert_eq!(none, None);
    }

    #[test]
    fn reads_pgbench_reports() {
        let report = "transaction type: miss.sql\nnumber of clients: 16\n\
                      latency average = 2.426 ms\ninitial connection time = 40.2 ms\n\
                      tps = 6594.501623 (without initial connection time)\n";
        let s = parse(report, 1600).unwrap_or_default();
        assert_eq!(s.calls, 1600);
        assert!((s.mean_us - 2426.0).abs() < 1e-6);
        assert!((s.calls_per_s - 6594.501623).abs() < 1e-6);
        assert!(parse("no numbers", 1).is_err());
    }

    #[test]
    fn absorbs_runs_by_total_time() {
        let mut a = PgbenchStats {
            calls: 100,
            calls_per_s: 100.0,
            mean_us: 10.0,
        };
        a.absorb(PgbenchStats {
            calls: 300,
            calls_per_s: 100.0,
            mean_us: 30.0,
        });
        assert_eq!(a.calls, 400);
        assert!((a.calls_per_s - 100.0).abs() < 1e-9);
        assert!((a.mean_us - 25.0).abs() < 1e-9);
    }
}
