//! Test helpers (feature `testutil`): fresh databases / key prefixes on the shared services and
//! throwaway servers on free ports that a test may kill and restart.
//!
//! Shared services: PostgreSQL 127.0.0.1:5432 (user postgres, trust), MariaDB 127.0.0.1:3306
//! (root, empty password), Redis 127.0.0.1:6379. When one is missing, the helper returns `None`
//! after a loud message, or panics when `CI=true`. The shared servers are never stopped.

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// True when running under CI (`CI=true`): missing services fail tests instead of skipping them.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Reports a missing prerequisite: panics under CI, otherwise prints a loud skip message.
pub fn missing(what: &str) {
    if ci() {
        panic!("{what} is required (CI=true)");
    }
    eprintln!("\n**********************************************************************");
    eprintln!("*** SKIPPED: {what}");
    eprintln!("**********************************************************************\n");
}

/// A random lowercase hex string of 16 characters.
pub fn random_name() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:016x}",
        RandomState::new().hash_one((t, std::process::id()))
    )
}

fn reachable(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .is_ok_and(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok())
}

/// Runs a future to completion on a private runtime in a new thread (works inside or outside a
/// tokio runtime, and from `Drop`).
pub fn run_detached<F, T>(fut: F) -> T
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let h = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test runtime");
        rt.block_on(fut)
    });
    h.join().expect("detached test future panicked")
}

/// A fresh database on the shared PostgreSQL, dropped when this value is dropped.
pub struct FreshPostgres {
    /// URL of the new database.
    pub url: String,
    name: String,
    admin: String,
}

/// Creates `geosip_test_<random>` on 127.0.0.1:5432; `None` (skip) if PostgreSQL is missing.
pub fn fresh_postgres() -> Option<FreshPostgres> {
    fresh_postgres_at("127.0.0.1", 5432)
}

/// Same as [`fresh_postgres`] on another server (e.g. a [`ThrowawayPostgres`]).
pub fn fresh_postgres_at(host: &str, port: u16) -> Option<FreshPostgres> {
    if !reachable(&format!("{host}:{port}")) {
        missing(&format!("PostgreSQL on {host}:{port}"));
        return None;
    }
    let name = format!("geosip_test_{}", random_name());
    let admin = format!("postgres://postgres@{host}:{port}/postgres");
    let (a, n) = (admin.clone(), name.clone());
    run_detached(async move {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&a)
            .await
            .expect("connect to PostgreSQL as postgres");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {n}")))
            .execute(&mut c)
            .await
            .expect("CREATE DATABASE");
    });
    Some(FreshPostgres {
        url: format!("postgres://postgres@{host}:{port}/{name}"),
        name,
        admin,
    })
}

impl Drop for FreshPostgres {
    fn drop(&mut self) {
        let (a, n) = (self.admin.clone(), self.name.clone());
        run_detached(async move {
            use sqlx::Connection;
            if let Ok(mut c) = sqlx::PgConnection::connect(&a).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {n} WITH (FORCE)"
                )))
                .execute(&mut c)
                .await;
            }
        });
    }
}

/// A fresh database on the shared MariaDB, dropped when this value is dropped.
pub struct FreshMariadb {
    /// URL of the new database.
    pub url: String,
    name: String,
    admin: String,
}

/// Creates `geosip_test_<random>` on 127.0.0.1:3306; `None` (skip) if MariaDB is missing.
pub fn fresh_mariadb() -> Option<FreshMariadb> {
    fresh_mariadb_at("127.0.0.1", 3306)
}

/// Same as [`fresh_mariadb`] on another server (e.g. a [`ThrowawayMariadb`]).
pub fn fresh_mariadb_at(host: &str, port: u16) -> Option<FreshMariadb> {
    if !reachable(&format!("{host}:{port}")) {
        missing(&format!("MariaDB on {host}:{port}"));
        return None;
    }
    let name = format!("geosip_test_{}", random_name());
    let admin = format!("mysql://root@{host}:{port}/mysql");
    let (a, n) = (admin.clone(), name.clone());
    run_detached(async move {
        use sqlx::Connection;
        let mut c = sqlx::MySqlConnection::connect(&a)
            .await
            .expect("connect to MariaDB as root");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {n}")))
            .execute(&mut c)
            .await
            .expect("CREATE DATABASE");
    });
    Some(FreshMariadb {
        url: format!("mysql://root@{host}:{port}/{name}"),
        name,
        admin,
    })
}

impl Drop for FreshMariadb {
    fn drop(&mut self) {
        let (a, n) = (self.admin.clone(), self.name.clone());
        run_detached(async move {
            use sqlx::Connection;
            if let Ok(mut c) = sqlx::MySqlConnection::connect(&a).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {n}")))
                    .execute(&mut c)
                    .await;
            }
        });
    }
}

/// A fresh key prefix on a Redis server; its keys are deleted when this value is dropped.
pub struct FreshRedisPrefix {
    /// `redis://127.0.0.1:6379`.
    pub url: String,
    /// `geosip_test_<random>:`.
    pub prefix: String,
}

/// A fresh prefix on the shared Redis 127.0.0.1:6379; `None` (skip) if Redis is missing.
pub fn fresh_redis_prefix() -> Option<FreshRedisPrefix> {
    if !reachable("127.0.0.1:6379") {
        missing("Redis on 127.0.0.1:6379");
        return None;
    }
    Some(FreshRedisPrefix {
        url: "redis://127.0.0.1:6379".into(),
        prefix: format!("geosip_test_{}:", random_name()),
    })
}

impl Drop for FreshRedisPrefix {
    fn drop(&mut self) {
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        run_detached(async move {
            let Ok(client) = redis::Client::open(url.as_str()) else {
                return;
            };
            let Ok(mut c) = client.get_multiplexed_async_connection().await else {
                return;
            };
            let mut cursor = 0u64;
            loop {
                let r: redis::RedisResult<(u64, Vec<Vec<u8>>)> = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{prefix}*"))
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut c)
                    .await;
                let Ok((next, keys)) = r else { return };
                if !keys.is_empty() {
                    let _: redis::RedisResult<i64> =
                        redis::cmd("DEL").arg(keys).query_async(&mut c).await;
                }
                if next == 0 {
                    return;
                }
                cursor = next;
            }
        });
    }
}

/// A TCP port that was free a moment ago (and, for Redis Cluster, whose +10000 bus port too).
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let Ok(l) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = l.local_addr() else { continue };
        let port = addr.port();
        if port < 50000 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

fn wait_for(addr: &str, up: bool, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if reachable(addr) == up {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn temp_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("geosip-{kind}-{}", random_name()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A private PostgreSQL server (`initdb` + `pg_ctl`) on a free port, removed on drop. Killing and
/// restarting it simulates an outage.
pub struct ThrowawayPostgres {
    /// Port it listens on (127.0.0.1).
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl ThrowawayPostgres {
    /// Starts one; `None` (skip, or panic under CI) when the PostgreSQL binaries are missing.
    pub fn start() -> Option<ThrowawayPostgres> {
        Self::start_on(free_port())
    }

    /// Starts one on `port` (which must be free).
    pub fn start_on(port: u16) -> Option<ThrowawayPostgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max();
        let Some(bin) = bin else {
            missing("PostgreSQL server binaries under /usr/lib/postgresql/*/bin");
            return None;
        };
        let dir = temp_dir("pg");
        let pg = ThrowawayPostgres { port, dir, bin };
        if is_root() {
            let _ = Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(&pg.dir)
                .status();
        }
        let data = pg.dir.join("data");
        let ok = quiet(
            pg.as_pg_user(&pg.bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-A", "trust", "-U", "postgres", "--no-sync"]),
        );
        if !ok {
            missing("a throwaway PostgreSQL (initdb failed)");
            return None;
        }
        if !pg.start_server() {
            missing("a throwaway PostgreSQL (pg_ctl start failed)");
            return None;
        }
        Some(pg)
    }

    fn as_pg_user(&self, program: &Path) -> Command {
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn start_server(&self) -> bool {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.display()
        );
        let started = quiet(
            self.as_pg_user(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .arg("-o")
                .arg(opts)
                .arg("-l")
                .arg(self.dir.join("log"))
                .args(["-w", "-t", "30", "start"]),
        );
        started
            && wait_for(
                &format!("127.0.0.1:{}", self.port),
                true,
                Duration::from_secs(10),
            )
    }

    /// URL of the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server abruptly (`pg_ctl stop -m immediate`): connections die mid-flight.
    pub fn kill(&self) {
        let _ = quiet(
            self.as_pg_user(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "immediate", "-w", "stop"]),
        );
        wait_for(
            &format!("127.0.0.1:{}", self.port),
            false,
            Duration::from_secs(10),
        );
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&self) {
        assert!(self.start_server(), "throwaway PostgreSQL did not restart");
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private MariaDB server (`mariadb-install-db` + `mariadbd`) on a free port, removed on drop.
pub struct ThrowawayMariadb {
    /// Port it listens on (127.0.0.1).
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl ThrowawayMariadb {
    /// Starts one; `None` (skip, or panic under CI) when the MariaDB binaries are missing.
    pub fn start() -> Option<ThrowawayMariadb> {
        let dir = temp_dir("mariadb");
        let ok = quiet(
            Command::new("mariadb-install-db")
                .arg("--no-defaults")
                .arg(format!("--datadir={}", dir.join("data").display()))
                .args([
                    "--user=root",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ]),
        );
        if !ok {
            missing("a throwaway MariaDB (mariadb-install-db failed)");
            return None;
        }
        let mut m = ThrowawayMariadb {
            port: free_port(),
            dir,
            child: None,
        };
        if !m.start_server() {
            missing("a throwaway MariaDB (mariadbd did not start)");
            return None;
        }
        Some(m)
    }

    fn start_server(&mut self) -> bool {
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--socket={}", self.dir.join("sock").display()))
            .arg(format!("--port={}", self.port))
            .args([
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-log-bin",
                "--innodb-flush-log-at-trx-commit=0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        self.child = Some(child);
        wait_for(
            &format!("127.0.0.1:{}", self.port),
            true,
            Duration::from_secs(30),
        )
    }

    /// URL of the `mysql` database as root.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/mysql", self.port)
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        wait_for(
            &format!("127.0.0.1:{}", self.port),
            false,
            Duration::from_secs(10),
        );
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        assert!(self.start_server(), "throwaway MariaDB did not restart");
    }
}

impl Drop for ThrowawayMariadb {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn_redis(port: u16, dir: &Path, cluster: bool) -> Option<Child> {
    let mut cmd = Command::new("redis-server");
    cmd.arg("--port")
        .arg(port.to_string())
        .args([
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ])
        .arg("--dir")
        .arg(dir);
    if cluster {
        cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
            .arg("--cluster-config-file")
            .arg(dir.join(format!("nodes-{port}.conf")));
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_for(&format!("127.0.0.1:{port}"), true, Duration::from_secs(10)).then_some(child)
}

/// A private `redis-server` on a free port (no persistence), killed on drop.
pub struct ThrowawayRedis {
    /// Port it listens on (127.0.0.1).
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl ThrowawayRedis {
    /// Starts one; `None` (skip, or panic under CI) when `redis-server` is missing.
    pub fn start() -> Option<ThrowawayRedis> {
        let dir = temp_dir("redis");
        let port = free_port();
        let Some(child) = spawn_redis(port, &dir, false) else {
            missing("a throwaway redis-server");
            return None;
        };
        Some(ThrowawayRedis {
            port,
            dir,
            child: Some(child),
        })
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its data is gone: it keeps nothing on disk).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        wait_for(
            &format!("127.0.0.1:{}", self.port),
            false,
            Duration::from_secs(10),
        );
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing answers, so calls
    /// time out. Data is kept.
    pub fn pause(&self) {
        if let Some(c) = &self.child {
            let _ = quiet(Command::new("kill").arg("-STOP").arg(c.id().to_string()));
        }
    }

    /// Undoes [`pause`](Self::pause) (SIGCONT).
    pub fn resume(&self) {
        if let Some(c) = &self.child {
            let _ = quiet(Command::new("kill").arg("-CONT").arg(c.id().to_string()));
        }
    }

    /// Starts an empty server again on the same port.
    pub fn restart(&mut self) {
        self.child = spawn_redis(self.port, &self.dir, false);
        assert!(
            self.child.is_some(),
            "throwaway redis-server did not restart"
        );
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        self.resume();
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private 3-master Redis Cluster on free ports, killed on drop.
pub struct ThrowawayRedisCluster {
    /// Ports of the three masters.
    pub ports: Vec<u16>,
    dir: PathBuf,
    children: Vec<Child>,
}

impl ThrowawayRedisCluster {
    /// Starts three cluster-enabled servers and joins them with `redis-cli --cluster create`.
    pub fn start() -> Option<ThrowawayRedisCluster> {
        let dir = temp_dir("redis-cluster");
        let mut c = ThrowawayRedisCluster {
            ports: Vec::new(),
            dir,
            children: Vec::new(),
        };
        for _ in 0..3 {
            let port = free_port();
            let Some(child) = spawn_redis(port, &c.dir, true) else {
                missing("a throwaway Redis Cluster (redis-server)");
                return None;
            };
            c.ports.push(port);
            c.children.push(child);
        }
        let nodes: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let ok = quiet(
            Command::new("redis-cli")
                .args(["--cluster", "create"])
                .args(&nodes)
                .args(["--cluster-replicas", "0", "--cluster-yes"]),
        );
        if !ok || !c.wait_ok(Duration::from_secs(20)) {
            missing("a throwaway Redis Cluster (redis-cli --cluster create failed)");
            return None;
        }
        Some(c)
    }

    fn wait_ok(&self, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            let all_ok = self.ports.iter().all(|p| {
                Command::new("redis-cli")
                    .args(["-p", &p.to_string(), "cluster", "info"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
            });
            if all_ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// `redis+cluster://127.0.0.1:a,127.0.0.1:b,127.0.0.1:c`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }
}

impl Drop for ThrowawayRedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
