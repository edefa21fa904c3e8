//! The one error type of the storage layer.

/// What went wrong talking to a store. `is_unavailable` tells outages (retry later) from bad data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL or an option cannot be used.
    #[error("store configuration: {0}")]
    Config(String),
    /// The call did not finish within the configured timeout.
    #[error("store call timed out after {0} ms")]
    Timeout(u64),
    /// An SQL backend reported an error (connection refused, constraint, syntax...).
    #[error("sql: {0}")]
    Sql(#[from] sqlx::Error),
    /// Redis reported an error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A value cannot be stored in this backend (e.g. non-UTF-8 bytes in a PostgreSQL TEXT column).
    #[error("value cannot be stored: {0}")]
    InvalidValue(String),
    /// No database can take the call right now (e.g. a partitioning layer whose databases for
    /// this AOR are all turned off or in maintenance).
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// True when the call ran out of time (ours, the pool's, or the client's response timeout).
    pub fn is_timeout(&self) -> bool {
        match self {
            StoreError::Timeout(_) => true,
            StoreError::Sql(e) => matches!(e, sqlx::Error::PoolTimedOut),
            StoreError::Redis(e) => e.is_timeout(),
            _ => false,
        }
    }

    /// True when the store is (probably) down or slow rather than the request being wrong; such
    /// an operation may succeed when retried later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Timeout(_) | StoreError::Unavailable(_) => true,
            StoreError::Sql(e) => matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
                    | sqlx::Error::Tls(_)
            ),
            StoreError::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
            }
            StoreError::Config(_) | StoreError::InvalidValue(_) => false,
        }
    }
}

/// Result alias of this crate.
pub type StoreResult<T> = Result<T, StoreError>;
