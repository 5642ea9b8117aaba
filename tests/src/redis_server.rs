//! Throwaway `redis-server` processes for tests that must stop, restart or misconfigure a
//! server (outages, passwords, clusters): each on a free local port, in its own temporary
//! directory, killed when dropped. The machine's shared server is never touched.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` this test started.
#[derive(Debug)]
pub struct RedisServer {
    dir: PathBuf,
    port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

/// A free local TCP port (bound, then released for the server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// Whether `redis-server` can be run; if not, says so loudly (and fails under CI).
pub fn redis_server_available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if crate::servers_required() {
            panic!("redis-server is required (CI=true) but not installed");
        }
        eprintln!("\n*** SKIPPED: Redis test: no `redis-server` binary on PATH ***\n");
    }
    found
}

impl RedisServer {
    /// Starts `redis-server --port P --dir DIR ARGS` in `dir` and waits until it answers;
    /// `None` (after a loud SKIPPED, or a panic in CI) without a `redis-server` binary.
    /// Persistence is off unless `args` turn it on (`--appendonly yes`).
    pub fn start(dir: &Path, args: &[&str]) -> Option<Self> {
        if !redis_server_available() {
            return None;
        }
        let mut server = Self {
            dir: dir.to_owned(),
            port: free_port(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
        };
        server.run();
        Some(server)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn run(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--save")
            .arg("")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("spawn redis-server"));
        self.wait_ready();
    }

    /// Waits (10 s at most) until the server answers a command (an error such as `NOAUTH`
    /// counts; `LOADING` does not).
    fn wait_ready(&self) {
        let begun = Instant::now();
        while begun.elapsed() < Duration::from_secs(10) {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200))
                {
                    match redis::cmd("PING").query::<String>(&mut conn) {
                        Ok(_) => return,
                        Err(e) if !e.to_string().contains("LOADING") && e.is_io_error() => {}
                        Err(e) if !e.to_string().contains("LOADING") => return,
                        Err(_) => {}
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    /// Kills the server with SIGKILL (no shutdown, no final save) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (reloading its AOF, if it keeps one).
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of `n` primaries (no replicas) this test started: `redis-server
/// --cluster-enabled yes` on free ports, joined by `redis-cli --cluster create`.
#[derive(Debug)]
pub struct RedisCluster {
    /// Its nodes, in creation order.
    pub nodes: Vec<RedisServer>,
    _dirs: Vec<tempfile::TempDir>,
}

impl RedisCluster {
    /// Starts `n` (at least 3) primaries and creates the cluster, waiting until every node
    /// says `cluster_state:ok`; `None` (after a loud SKIPPED, or a panic in CI) without
    /// `redis-server`.
    pub fn start(n: usize) -> Option<Self> {
        Self::start_with_replicas(n, 0)
    }

    /// Starts `primaries` primaries with `replicas` replicas each (`--cluster-replicas`).
    pub fn start_with_replicas(primaries: usize, replicas: usize) -> Option<Self> {
        let n = primaries * (replicas + 1);
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for _ in 0..n {
            let dir = tempfile::tempdir().expect("temp dir");
            let node = RedisServer::start(
                dir.path(),
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--appendonly",
                    "no",
                ],
            )?;
            nodes.push(node);
            dirs.push(dir);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes, _dirs: dirs };
        cluster.wait_ok();
        cluster.wait_replicas_online(replicas);
        Some(cluster)
    }

    /// Waits (20 s at most) until every running node says `cluster_state:ok` and knows every
    /// slot.
    pub fn wait_ok(&self) {
        let begun = Instant::now();
        'again: while begun.elapsed() < Duration::from_secs(20) {
            for node in self.nodes.iter().filter(|n| n.child.is_some()) {
                let info = self.cli(node.port(), &["cluster", "info"]);
                if !info.contains("cluster_state:ok") || !info.contains("cluster_slots_ok:16384") {
                    std::thread::sleep(Duration::from_millis(100));
                    continue 'again;
                }
            }
            return;
        }
        panic!("the cluster did not reach cluster_state:ok");
    }

    /// `redis-cli -p PORT ARGS`, its stdout.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The URL of its first node (the store discovers the others).
    pub fn url(&self) -> String {
        self.nodes.first().map(RedisServer::url).unwrap_or_default()
    }

    /// Waits (20 s at most) until every primary has `replicas` replicas online (synced).
    pub fn wait_replicas_online(&self, replicas: usize) {
        if replicas == 0 {
            return;
        }
        let begun = Instant::now();
        'again: while begun.elapsed() < Duration::from_secs(20) {
            for i in 0..self.nodes.len() {
                if self.nodes[i].child.is_none() || !self.is_primary(i) {
                    continue;
                }
                let info = self.cli(self.nodes[i].port(), &["info", "replication"]);
                if info.matches("state=online").count() < replicas {
                    std::thread::sleep(Duration::from_millis(100));
                    continue 'again;
                }
            }
            return;
        }
        panic!("the replicas did not come online");
    }

    /// Whether node `i` is a primary (by its own `ROLE`).
    pub fn is_primary(&self, i: usize) -> bool {
        self.nodes
            .get(i)
            .is_some_and(|n| self.cli(n.port(), &["role"]).starts_with("master"))
    }

    /// How many keys node `i` holds.
    pub fn keys_on(&self, i: usize) -> u64 {
        self.nodes.get(i).map_or(0, |n| {
            self.cli(n.port(), &["dbsize"]).trim().parse().unwrap_or(0)
        })
    }

    /// The cluster node id of node `i`.
    pub fn node_id(&self, i: usize) -> String {
        self.nodes.get(i).map_or_else(String::new, |n| {
            self.cli(n.port(), &["cluster", "myid"]).trim().to_owned()
        })
    }
}
