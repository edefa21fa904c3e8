//! htable: a shared key-value table with TTL, usable from every worker's script.
#![forbid(unsafe_code)]
