//! registrar: REGISTER processing (RFC 3261 section 10.3, RFC 3327 Path, RFC 5626 outbound keys) over the location service.
#![forbid(unsafe_code)]
