//! Storage backends (embedded SQLite, PostgreSQL, MySQL/MariaDB, Redis) for location, subscribers and the location cluster table.
#![forbid(unsafe_code)]
