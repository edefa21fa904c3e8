//! p_usrloc: location partitioned over groups of databases, with consistent hashing, failover, spares and maintenance drain.
#![forbid(unsafe_code)]
