//! The cluster table (Kamailio's `locdb`) and the layout history, in any SQL database.
//!
//! `location_cluster` has one row per location database: group id, number in the group, URL,
//! status (1 on, 0 off, 2 maintenance: Kamailio's codes), error counter, failover time (unix
//! seconds), spare flag and risk group. `location_layout` records each set of groups users were
//! placed over, so that during a migration reads can fall back to where the previous layout put
//! a user.
//!
//! Every status change is a compare-and-set `UPDATE ... WHERE ... AND status = <expected>`, so
//! two nodes that notice the same failure at once do not both act; a spare is claimed inside a
//! transaction by such an update on the spare's row (the second claimer matches no row and tries
//! the next spare). Queries go through sqlx's `Any` driver with `?` placeholders rewritten to
//! `$n` for PostgreSQL.

use std::path::Path;
use std::sync::Once;

use geosip_store::location::schema::Dialect;
use geosip_store::{StoreError, StoreResult, StoreUrl};
use sqlx::AnyPool;
use sqlx::Row;
use sqlx::any::AnyPoolOptions;

/// Status of a database in the cluster table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// 1: in use.
    On,
    /// 0: turned off after errors (or by an operator); the watcher brings it back.
    Off,
    /// 2: drained by an operator; nobody uses or touches it until it is set on.
    Maintenance,
}

impl Status {
    /// The integer stored in the table.
    pub fn code(self) -> i64 {
        match self {
            Status::Off => 0,
            Status::On => 1,
            Status::Maintenance => 2,
        }
    }

    /// From the stored integer; unknown codes read as off (not used, but probed by the watcher).
    pub fn from_code(c: i64) -> Status {
        match c {
            1 => Status::On,
            2 => Status::Maintenance,
            _ => Status::Off,
        }
    }

    /// Name as in `location.set_status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::On => "on",
            Status::Off => "off",
            Status::Maintenance => "maintenance",
        }
    }

    /// Parses `on`, `off`, `maintenance` (also `1`, `0`, `2`).
    pub fn parse(s: &str) -> Option<Status> {
        match s.trim().to_ascii_lowercase().as_str() {
            "on" | "1" => Some(Status::On),
            "off" | "0" => Some(Status::Off),
            "maintenance" | "2" => Some(Status::Maintenance),
            _ => None,
        }
    }
}

/// One row of `location_cluster`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterRow {
    /// Group id (spares: any id, 0 by convention).
    pub id: u32,
    /// Number of the database in its group.
    pub no: u32,
    /// Database URL.
    pub url: String,
    /// Status.
    pub status: Status,
    /// Errors counted by all nodes since the database was last (re)activated.
    pub errors: u64,
    /// When it last failed over or came back, unix seconds (0 = never).
    pub failover: u64,
    /// Spare flag.
    pub spare: bool,
    /// Risk group.
    pub risk_group: u32,
}

/// One row of `location_layout`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutRow {
    /// Increasing version.
    pub version: u64,
    /// Group ids users are placed over.
    pub groups: Vec<u32>,
    /// When this layout took effect, unix seconds.
    pub created: u64,
    /// When a migration away from it finished (0 = not finished).
    pub finished: u64,
}

/// Parses `"1,2,3"`.
pub fn parse_groups(s: &str) -> Vec<u32> {
    let mut v: Vec<u32> = s
        .split(',')
        .filter_map(|p| p.trim().parse::<u32>().ok())
        .filter(|&g| g != 0)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Formats `[1, 2, 3]` as `"1,2,3"`.
pub fn format_groups(g: &[u32]) -> String {
    g.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// The DDL of the cluster tables per dialect; `etc/sql/<dialect>/location_cluster.sql` is
/// exactly [`sql_file`] (a test compares them).
pub fn statements(dialect: Dialect) -> &'static [&'static str] {
    match dialect {
        Dialect::Sqlite => SQLITE_DDL,
        Dialect::Postgres => POSTGRES_DDL,
        Dialect::MySql => MYSQL_DDL,
    }
}

/// The text of `etc/sql/<dialect>/location_cluster.sql`.
pub fn sql_file(dialect: Dialect) -> String {
    let mut s = String::from(
        "-- geosip p_usrloc cluster tables. Generated from geosip-p-usrloc's cluster module; keep identical.\n\
         -- location_cluster: one row per location database (Kamailio p_usrloc's locdb).\n\
         --   id: group id (spares: 0); no: number of the database in its group;\n\
         --   status: 1 on, 0 off (the watcher brings it back), 2 maintenance (drained, left alone);\n\
         --   errors: errors counted by all nodes; failover: unix seconds of the last failover or\n\
         --   return (written but not read until failover + expire_window_s); spare: 1 = spare;\n\
         --   rg: risk group (databases that fail together).\n\
         -- location_layout: the sets of groups users were placed over, newest = highest version;\n\
         --   group_ids: comma-separated; created: unix seconds; finished: migration done (0 = no).\n\n",
    );
    for st in statements(dialect) {
        s.push_str(st);
        s.push_str(";\n\n");
    }
    s.truncate(s.trim_end().len());
    s.push('\n');
    s
}

const SQLITE_DDL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS location_cluster (
    id INTEGER NOT NULL,
    no INTEGER NOT NULL,
    url VARCHAR(512) NOT NULL,
    status INTEGER NOT NULL DEFAULT 1,
    errors INTEGER NOT NULL DEFAULT 0,
    failover INTEGER NOT NULL DEFAULT 0,
    spare INTEGER NOT NULL DEFAULT 0,
    rg INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (id, no)
)",
    "CREATE TABLE IF NOT EXISTS location_layout (
    version INTEGER NOT NULL PRIMARY KEY,
    group_ids VARCHAR(1024) NOT NULL,
    created INTEGER NOT NULL,
    finished INTEGER NOT NULL DEFAULT 0
)",
];

const POSTGRES_DDL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS location_cluster (
    id BIGINT NOT NULL,
    no BIGINT NOT NULL,
    url VARCHAR(512) NOT NULL,
    status BIGINT NOT NULL DEFAULT 1,
    errors BIGINT NOT NULL DEFAULT 0,
    failover BIGINT NOT NULL DEFAULT 0,
    spare BIGINT NOT NULL DEFAULT 0,
    rg BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (id, no)
)",
    "CREATE TABLE IF NOT EXISTS location_layout (
    version BIGINT NOT NULL PRIMARY KEY,
    group_ids VARCHAR(1024) NOT NULL,
    created BIGINT NOT NULL,
    finished BIGINT NOT NULL DEFAULT 0
)",
];

const MYSQL_DDL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS location_cluster (
    id BIGINT NOT NULL,
    no BIGINT NOT NULL,
    url VARCHAR(512) NOT NULL,
    status BIGINT NOT NULL DEFAULT 1,
    errors BIGINT NOT NULL DEFAULT 0,
    failover BIGINT NOT NULL DEFAULT 0,
    spare BIGINT NOT NULL DEFAULT 0,
    rg BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (id, no)
) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS location_layout (
    version BIGINT NOT NULL PRIMARY KEY,
    group_ids VARCHAR(1024) NOT NULL,
    created BIGINT NOT NULL,
    finished BIGINT NOT NULL DEFAULT 0
) ENGINE=InnoDB",
];

/// The statements, written with `?` placeholders.
mod q {
    pub const SELECT_ROWS: &str = "SELECT id, no, url, status, errors, failover, spare, rg FROM location_cluster ORDER BY id, no";
    pub const INSERT_ROW: &str = "INSERT INTO location_cluster (id, no, url, status, errors, failover, spare, rg) VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
    pub const COUNT_ROWS: &str = "SELECT COUNT(*) FROM location_cluster";
    // MySQL evaluates SET assignments left to right with the new values, so columns that read
    // `status` come before `status` is assigned.
    pub const ADD_ERRORS: &str = "UPDATE location_cluster SET errors = errors + ?, failover = CASE WHEN failover < ? THEN ? ELSE failover END WHERE id = ? AND no = ? AND url = ?";
    pub const TURN_OFF: &str = "UPDATE location_cluster SET failover = ?, errors = errors + ?, status = 0 WHERE id = ? AND no = ? AND url = ? AND status = 1";
    pub const BRING_BACK: &str = "UPDATE location_cluster SET failover = ?, errors = 0, status = 1 WHERE id = ? AND no = ? AND url = ? AND status = 0";
    pub const SET_ON: &str = "UPDATE location_cluster SET failover = CASE WHEN status = 1 THEN failover ELSE ? END, errors = 0, status = 1 WHERE id = ? AND no = ?";
    pub const SET_OFF: &str = "UPDATE location_cluster SET failover = CASE WHEN status = 0 THEN failover ELSE ? END, status = 0 WHERE id = ? AND no = ?";
    pub const SET_MAINTENANCE: &str =
        "UPDATE location_cluster SET status = 2 WHERE id = ? AND no = ?";
    pub const SPARES: &str = "SELECT id, no, url, rg FROM location_cluster WHERE spare = 1 AND status = 1 ORDER BY id, no";
    pub const CLAIM_SPARE: &str = "UPDATE location_cluster SET url = ?, rg = ?, failover = ?, errors = 0, status = 0 WHERE id = ? AND no = ? AND url = ? AND spare = 1 AND status = 1";
    pub const TAKE_SLOT: &str = "UPDATE location_cluster SET url = ?, rg = ?, failover = ?, errors = 0, status = 1 WHERE id = ? AND no = ?";
    pub const SELECT_LAYOUTS: &str = "SELECT version, group_ids, created, finished FROM location_layout ORDER BY version DESC LIMIT 16";
    pub const INSERT_LAYOUT: &str =
        "INSERT INTO location_layout (version, group_ids, created, finished) VALUES (?, ?, ?, 0)";
    pub const FINISH_LAYOUTS: &str =
        "UPDATE location_layout SET finished = ? WHERE version < ? AND finished = 0";
}

/// `?` → `$1, $2, ...` for PostgreSQL.
pub(crate) fn placeholders(sql: &str, dialect: Dialect) -> String {
    if dialect != Dialect::Postgres {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

fn install_drivers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(sqlx::any::install_default_drivers);
}

/// What a failover did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failover {
    /// Another node (or an operator) changed the row first; nothing done.
    AlreadyDone,
    /// Turned off; no spare was available (or none configured).
    TurnedOff,
    /// Turned off and replaced by the spare at this URL, which now holds the slot.
    Replaced {
        /// URL of the spare that took the slot.
        spare_url: String,
        /// Where the spare row was (it now holds the failed database, off).
        spare_id: u32,
        /// Its number.
        spare_no: u32,
    },
}

/// Connections to the cluster database (a write master and an optional read replica).
pub struct ClusterDb {
    write: AnyPool,
    read: AnyPool,
    dialect: Dialect,
    target: String,
    sql: Sql,
}

struct Sql {
    select_rows: String,
    insert_row: String,
    count_rows: String,
    add_errors: String,
    turn_off: String,
    bring_back: String,
    set_on: String,
    set_off: String,
    set_maintenance: String,
    spares: String,
    claim_spare: String,
    take_slot: String,
    select_layouts: String,
    insert_layout: String,
    finish_layouts: String,
}

impl Sql {
    fn new(d: Dialect) -> Sql {
        let p = |s: &str| placeholders(s, d);
        Sql {
            select_rows: p(q::SELECT_ROWS),
            insert_row: p(q::INSERT_ROW),
            count_rows: p(q::COUNT_ROWS),
            add_errors: p(q::ADD_ERRORS),
            turn_off: p(q::TURN_OFF),
            bring_back: p(q::BRING_BACK),
            set_on: p(q::SET_ON),
            set_off: p(q::SET_OFF),
            set_maintenance: p(q::SET_MAINTENANCE),
            spares: p(q::SPARES),
            claim_spare: p(q::CLAIM_SPARE),
            take_slot: p(q::TAKE_SLOT),
            select_layouts: p(q::SELECT_LAYOUTS),
            insert_layout: p(q::INSERT_LAYOUT),
            finish_layouts: p(q::FINISH_LAYOUTS),
        }
    }
}

fn sql(s: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(s.to_string())
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u32_of(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// An `Any` URL and dialect for a store URL.
fn any_url(url: &str, data_dir: &Path) -> StoreResult<(String, Dialect, bool, String)> {
    let parsed = StoreUrl::parse(url, data_dir)?;
    let target = parsed.redacted();
    Ok(match parsed {
        StoreUrl::Sqlite { path: None } => {
            ("sqlite::memory:".into(), Dialect::Sqlite, true, target)
        }
        StoreUrl::Sqlite { path: Some(p) } => {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Config(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            (
                format!("sqlite://{}?mode=rwc", p.display()),
                Dialect::Sqlite,
                false,
                target,
            )
        }
        StoreUrl::Postgres(u) => (u, Dialect::Postgres, false, target),
        StoreUrl::MySql(u) => (u, Dialect::MySql, false, target),
        StoreUrl::Redis(_) | StoreUrl::RedisCluster(_) => {
            return Err(StoreError::Config(
                "the cluster table needs an SQL database (postgres, mysql, sqlite)".into(),
            ));
        }
    })
}

fn pool(
    url: &str,
    data_dir: &Path,
    size: u32,
    timeout: std::time::Duration,
) -> StoreResult<(AnyPool, Dialect, String)> {
    install_drivers();
    let (u, dialect, memory, target) = any_url(url, data_dir)?;
    let mut opts = AnyPoolOptions::new()
        .max_connections(if memory { 1 } else { size.max(1) })
        .acquire_timeout(timeout);
    if memory {
        // Every connection of an in-memory SQLite database is a new database: keep one forever.
        opts = opts.idle_timeout(None).max_lifetime(None);
    }
    Ok((opts.connect_lazy(&u)?, dialect, target))
}

impl ClusterDb {
    /// Pools for the master (`write_url`) and the replica (`read_url`, default the master);
    /// lazily connected. [`init`](Self::init) creates the tables.
    pub fn open(
        write_url: &str,
        read_url: Option<&str>,
        data_dir: &Path,
        size: u32,
        timeout: std::time::Duration,
    ) -> StoreResult<ClusterDb> {
        let (write, dialect, target) = pool(write_url, data_dir, size, timeout)?;
        let read = match read_url {
            Some(r) if r != write_url => {
                let (read, read_dialect, _) = pool(r, data_dir, size, timeout)?;
                if read_dialect != dialect {
                    return Err(StoreError::Config(
                        "cluster_read_url must be the same kind of database as cluster_db_url"
                            .into(),
                    ));
                }
                read
            }
            _ => write.clone(),
        };
        Ok(ClusterDb {
            write,
            read,
            dialect,
            target,
            sql: Sql::new(dialect),
        })
    }

    /// The master, redacted, for logs and `location.cluster`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Creates the tables if missing (on the master).
    pub async fn init(&self) -> StoreResult<()> {
        for st in statements(self.dialect) {
            sqlx::query(*st).execute(&self.write).await?;
        }
        Ok(())
    }

    /// Every row, from the replica.
    pub async fn rows(&self) -> StoreResult<Vec<ClusterRow>> {
        self.rows_from(&self.read).await
    }

    /// Every row, from the master (after a write of our own).
    pub async fn rows_master(&self) -> StoreResult<Vec<ClusterRow>> {
        self.rows_from(&self.write).await
    }

    async fn rows_from(&self, pool: &AnyPool) -> StoreResult<Vec<ClusterRow>> {
        let rows = sqlx::query(sql(&self.sql.select_rows))
            .fetch_all(pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(ClusterRow {
                id: u32_of(r.try_get::<i64, _>(0)?),
                no: u32_of(r.try_get::<i64, _>(1)?),
                url: r.try_get::<String, _>(2)?,
                status: Status::from_code(r.try_get::<i64, _>(3)?),
                errors: u64_of(r.try_get::<i64, _>(4)?),
                failover: u64_of(r.try_get::<i64, _>(5)?),
                spare: r.try_get::<i64, _>(6)? != 0,
                risk_group: u32_of(r.try_get::<i64, _>(7)?),
            });
        }
        Ok(out)
    }

    /// Fills an empty table with `rows` (from the TOML file). Returns false when the table
    /// already had rows (or another node filled it at the same time).
    pub async fn seed(&self, rows: &[ClusterRow]) -> StoreResult<bool> {
        let n: i64 = sqlx::query(sql(&self.sql.count_rows))
            .fetch_one(&self.write)
            .await?
            .try_get(0)?;
        if n > 0 || rows.is_empty() {
            return Ok(false);
        }
        let mut tx = self.write.begin().await?;
        for r in rows {
            let res = sqlx::query(sql(&self.sql.insert_row))
                .bind(i64::from(r.id))
                .bind(i64::from(r.no))
                .bind(r.url.clone())
                .bind(r.status.code())
                .bind(i64_of(r.errors))
                .bind(i64_of(r.failover))
                .bind(i64::from(r.spare))
                .bind(i64::from(r.risk_group))
                .execute(&mut *tx)
                .await;
            if res.is_err() {
                // Another node seeded first (primary key conflict): theirs is as good.
                let _ = tx.rollback().await;
                return Ok(false);
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Adds errors counted by this node and, if `missed_at > 0`, moves the failover time to it
    /// (the database missed a write: it is written but not read for the window).
    pub async fn add_errors(
        &self,
        id: u32,
        no: u32,
        url: &str,
        errors: u64,
        missed_at: u64,
    ) -> StoreResult<()> {
        sqlx::query(sql(&self.sql.add_errors))
            .bind(i64_of(errors))
            .bind(i64_of(missed_at))
            .bind(i64_of(missed_at))
            .bind(i64::from(id))
            .bind(i64::from(no))
            .bind(url.to_string())
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Turns a database off (if it is still on with that URL), and if a spare from another
    /// risk group than `avoid_rgs` is available, moves the spare into the slot and the failed
    /// database into the spare's row (off; the watcher brings it back as a spare).
    pub async fn fail_over(
        &self,
        row: &ClusterRow,
        extra_errors: u64,
        avoid_rgs: &[u32],
        use_spares: bool,
        now: u64,
    ) -> StoreResult<Failover> {
        let mut tx = self.write.begin().await?;
        let off = sqlx::query(sql(&self.sql.turn_off))
            .bind(i64_of(now))
            .bind(i64_of(extra_errors))
            .bind(i64::from(row.id))
            .bind(i64::from(row.no))
            .bind(row.url.clone())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if off == 0 {
            tx.rollback().await?;
            return Ok(Failover::AlreadyDone);
        }
        if !use_spares || row.spare {
            tx.commit().await?;
            return Ok(Failover::TurnedOff);
        }
        let candidates = sqlx::query(sql(&self.sql.spares))
            .fetch_all(&mut *tx)
            .await?;
        for c in &candidates {
            let (sid, sno, surl, srg) = (
                u32_of(c.try_get::<i64, _>(0)?),
                u32_of(c.try_get::<i64, _>(1)?),
                c.try_get::<String, _>(2)?,
                u32_of(c.try_get::<i64, _>(3)?),
            );
            if srg == row.risk_group || avoid_rgs.contains(&srg) || surl == row.url {
                continue;
            }
            // Claim: the spare row takes the failed database (off, spare); only if it is still
            // an available spare with that URL.
            let claimed = sqlx::query(sql(&self.sql.claim_spare))
                .bind(row.url.clone())
                .bind(i64::from(row.risk_group))
                .bind(i64_of(now))
                .bind(i64::from(sid))
                .bind(i64::from(sno))
                .bind(surl.clone())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if claimed == 0 {
                continue;
            }
            sqlx::query(sql(&self.sql.take_slot))
                .bind(surl.clone())
                .bind(i64::from(srg))
                .bind(i64_of(now))
                .bind(i64::from(row.id))
                .bind(i64::from(row.no))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(Failover::Replaced {
                spare_url: surl,
                spare_id: sid,
                spare_no: sno,
            });
        }
        tx.commit().await?;
        Ok(Failover::TurnedOff)
    }

    /// The watcher found an off database answering: on, failover = now (write-only for the
    /// window), errors reset. False if someone else changed it first.
    pub async fn bring_back(&self, id: u32, no: u32, url: &str, now: u64) -> StoreResult<bool> {
        Ok(sqlx::query(sql(&self.sql.bring_back))
            .bind(i64_of(now))
            .bind(i64::from(id))
            .bind(i64::from(no))
            .bind(url.to_string())
            .execute(&self.write)
            .await?
            .rows_affected()
            > 0)
    }

    /// `location.set_status`: on (errors reset; a database that was not on comes back
    /// write-only), off (the watcher will bring it back), maintenance (left alone). False if
    /// there is no such row.
    pub async fn set_status(
        &self,
        id: u32,
        no: u32,
        status: Status,
        now: u64,
    ) -> StoreResult<bool> {
        let q = match status {
            Status::On => sqlx::query(sql(&self.sql.set_on)).bind(i64_of(now)),
            Status::Off => sqlx::query(sql(&self.sql.set_off)).bind(i64_of(now)),
            Status::Maintenance => sqlx::query(sql(&self.sql.set_maintenance)),
        };
        Ok(q.bind(i64::from(id))
            .bind(i64::from(no))
            .execute(&self.write)
            .await?
            .rows_affected()
            > 0)
    }

    /// The newest layouts (highest version first, at most 16), from the replica.
    pub async fn layouts(&self) -> StoreResult<Vec<LayoutRow>> {
        let rows = sqlx::query(sql(&self.sql.select_layouts))
            .fetch_all(&self.read)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(LayoutRow {
                version: u64_of(r.try_get::<i64, _>(0)?),
                groups: parse_groups(&r.try_get::<String, _>(1)?),
                created: u64_of(r.try_get::<i64, _>(2)?),
                finished: u64_of(r.try_get::<i64, _>(3)?),
            });
        }
        Ok(out)
    }

    /// Records layout `version`; false if that version exists already (another node won).
    pub async fn insert_layout(
        &self,
        version: u64,
        groups: &[u32],
        created: u64,
    ) -> StoreResult<bool> {
        let r = sqlx::query(sql(&self.sql.insert_layout))
            .bind(i64_of(version))
            .bind(format_groups(groups))
            .bind(i64_of(created))
            .execute(&self.write)
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Marks every layout older than `version` finished (migration done).
    pub async fn finish_layouts(&self, version: u64, now: u64) -> StoreResult<u64> {
        Ok(sqlx::query(sql(&self.sql.finish_layouts))
            .bind(i64_of(now))
            .bind(i64_of(version))
            .execute(&self.write)
            .await?
            .rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_sql_files_match_the_ddl() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/sql");
        for d in [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql] {
            let path = root.join(d.dir()).join("location_cluster.sql");
            if std::env::var_os("GEOSIP_WRITE_SQL").is_some() {
                std::fs::write(&path, sql_file(d)).unwrap();
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            assert_eq!(text, sql_file(d), "{} differs from the DDL", path.display());
        }
    }

    #[test]
    fn postgres_placeholders_are_numbered() {
        assert_eq!(
            placeholders(
                "UPDATE t SET a = ? WHERE b = ? AND c = ?",
                Dialect::Postgres
            ),
            "UPDATE t SET a = $1 WHERE b = $2 AND c = $3"
        );
        assert_eq!(placeholders("a = ?", Dialect::MySql), "a = ?");
    }

    #[test]
    fn group_lists_round_trip() {
        assert_eq!(parse_groups("3, 1,2,,x,0,2"), vec![1, 2, 3]);
        assert_eq!(format_groups(&[1, 2, 3]), "1,2,3");
        assert_eq!(Status::parse("Maintenance"), Some(Status::Maintenance));
        assert_eq!(Status::parse("2"), Some(Status::Maintenance));
        assert_eq!(Status::parse("up"), None);
        assert_eq!(Status::from_code(7), Status::Off);
    }

    fn row(id: u32, no: u32, url: &str, spare: bool, rg: u32) -> ClusterRow {
        ClusterRow {
            id,
            no,
            url: url.into(),
            status: Status::On,
            errors: 0,
            failover: 0,
            spare,
            risk_group: rg,
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_failed_database_swaps_with_a_spare_of_another_risk_group_once() {
        rt().block_on(async {
            let db = ClusterDb::open(
                "sqlite::memory:",
                None,
                Path::new("."),
                1,
                std::time::Duration::from_secs(2),
            )
            .unwrap();
            db.init().await.unwrap();
            let rows = vec![
                row(1, 1, "postgres://a/loc", false, 10),
                row(1, 2, "postgres://b/loc", false, 20),
                row(0, 1, "postgres://same-rg/loc", true, 10),
                row(0, 2, "postgres://c/loc", true, 30),
            ];
            assert!(db.seed(&rows).await.unwrap());
            assert!(!db.seed(&rows).await.unwrap(), "seeding is done once");
            let r = db.fail_over(&rows[0], 3, &[20], true, 1000).await.unwrap();
            assert_eq!(
                r,
                Failover::Replaced {
                    spare_url: "postgres://c/loc".into(),
                    spare_id: 0,
                    spare_no: 2
                }
            );
            // A second node failing the same database over finds it done.
            assert_eq!(
                db.fail_over(&rows[0], 3, &[20], true, 1001).await.unwrap(),
                Failover::AlreadyDone
            );
            let now = db.rows().await.unwrap();
            let slot = now.iter().find(|r| r.id == 1 && r.no == 1).unwrap();
            assert_eq!(slot.url, "postgres://c/loc");
            assert_eq!((slot.status, slot.failover, slot.errors, slot.risk_group), (Status::On, 1000, 0, 30));
            let spare = now.iter().find(|r| r.id == 0 && r.no == 2).unwrap();
            assert_eq!(spare.url, "postgres://a/loc");
            assert_eq!((spare.status, spare.spare), (Status::Off, true));
            // The other database of the group fails: the only spare left shares its risk group
            // with the failed one's partner... it is in risk group 10 = the new partner's? No:
            // the partner is now rg 30, the failed one rg 20, the spare rg 10: it is taken.
            let b = now.iter().find(|r| r.id == 1 && r.no == 2).unwrap().clone();
            let r = db.fail_over(&b, 0, &[30], true, 1002).await.unwrap();
            assert!(matches!(r, Failover::Replaced { ref spare_url, .. } if spare_url == "postgres://same-rg/loc"));
            // No spare left: just off.
            let now = db.rows().await.unwrap();
            let c = now.iter().find(|r| r.id == 1 && r.no == 1).unwrap().clone();
            assert_eq!(db.fail_over(&c, 0, &[], true, 1003).await.unwrap(), Failover::TurnedOff);
            // The watcher brings it back once.
            assert!(db.bring_back(1, 1, &c.url, 1004).await.unwrap());
            assert!(!db.bring_back(1, 1, &c.url, 1005).await.unwrap());
            assert!(db.set_status(1, 1, Status::Maintenance, 1006).await.unwrap());
            assert!(!db.set_status(9, 9, Status::On, 1006).await.unwrap());
            let now = db.rows().await.unwrap();
            let c = now.iter().find(|r| r.id == 1 && r.no == 1).unwrap();
            assert_eq!((c.status, c.failover), (Status::Maintenance, 1004));
            assert!(db.set_status(1, 1, Status::On, 1007).await.unwrap());
            let now = db.rows().await.unwrap();
            let c = now.iter().find(|r| r.id == 1 && r.no == 1).unwrap();
            assert_eq!((c.status, c.failover), (Status::On, 1007), "back from maintenance: write-only first");
            db.add_errors(1, 1, &c.url, 5, 0).await.unwrap();
            db.add_errors(1, 1, &c.url, 2, 1010).await.unwrap();
            let now = db.rows().await.unwrap();
            let c = now.iter().find(|r| r.id == 1 && r.no == 1).unwrap();
            assert_eq!((c.errors, c.failover), (7, 1010));
        });
    }

    #[test]
    fn layouts_are_recorded_once_per_version() {
        rt().block_on(async {
            let db = ClusterDb::open(
                "sqlite::memory:",
                None,
                Path::new("."),
                1,
                std::time::Duration::from_secs(2),
            )
            .unwrap();
            db.init().await.unwrap();
            assert!(db.insert_layout(1, &[1, 2], 100).await.unwrap());
            assert!(!db.insert_layout(1, &[1, 2, 3], 100).await.unwrap());
            assert!(db.insert_layout(2, &[1, 2, 3], 200).await.unwrap());
            let l = db.layouts().await.unwrap();
            assert_eq!(l[0].groups, vec![1, 2, 3]);
            assert_eq!(l[1].version, 1);
            assert_eq!(db.finish_layouts(2, 300).await.unwrap(), 1);
            assert_eq!(db.layouts().await.unwrap()[1].finished, 300);
        });
    }
}
