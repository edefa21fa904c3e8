//! auth and auth_db: digest authentication (RFC 3261 section 22, RFC 7616, RFC 8760) with stateless nonces, and the subscriber table.
#![forbid(unsafe_code)]
