//! usrloc: the location service; an in-memory AOR table sharded by hash, expiry, storage modes (db_mode) and change events.
#![forbid(unsafe_code)]
