//! Every storage mode on every backend: save, lookup, update, delete, expire, restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Target, scenario};
use geosip_usrloc::DbMode;

macro_rules! matrix {
    ($($name:ident: $mode:expr, $target:ident;)*) => {$(
        #[test]
        fn $name() {
            let Some(t) = Target::$target() else { return };
            scenario($mode, &t);
        }
    )*};
}

matrix! {
    write_through_on_sqlite_saves_looks_up_updates_deletes_expires_and_survives_a_restart: DbMode::WriteThrough, sqlite;
    write_back_on_sqlite_saves_looks_up_updates_deletes_expires_and_survives_a_restart: DbMode::WriteBack, sqlite;
    db_only_on_sqlite_saves_looks_up_updates_deletes_expires_and_survives_a_restart: DbMode::DbOnly, sqlite;
    write_through_on_postgres_saves_looks_up_updates_deletes_expires_and_survives_a_restart: DbMode::WriteThrough, postgres;
    write_back_on_postgres_saves_looks_up_updates_deletes_expires_and_survives_a_restart: DbMode::WriteBack, postgres;
    db_only_on_postgres_saves_looks_up_updates_deletes_expires_and_survives_a_restart: DbMode::DbOnly, postgres;
    write_through_on_mariadb_saves_looks_up_updates_deletes_expires_and_survives_a_restart: DbMode::WriteThrough, mariadb;
    write_back_on_mariadb_saves_looks_up_updates_deletes_expires_and_survives_a_restart: DbMode::WriteBack, mariadb;
    db_only_on_mariadb_saves_looks_up_updates_deletes_expires_and_survives_a_restart: DbMode::DbOnly, mariadb;
    write_through_on_redis_saves_looks_up_updates_deletes_expires_and_survives_a_restart: DbMode::WriteThrough, redis;
    write_back_on_redis_saves_looks_up_updates_deletes_expires_and_survives_a_restart: DbMode::WriteBack, redis;
    db_only_on_redis_saves_looks_up_updates_deletes_expires_and_survives_a_restart: DbMode::DbOnly, redis;
    write_through_on_redis_cluster_saves_looks_up_updates_deletes_expires_and_survives_a_restart: DbMode::WriteThrough, redis_cluster;
    write_back_on_redis_cluster_saves_looks_up_updates_deletes_expires_and_survives_a_restart: DbMode::WriteBack, redis_cluster;
    db_only_on_redis_cluster_saves_looks_up_updates_deletes_expires_and_survives_a_restart: DbMode::DbOnly, redis_cluster;
}
