//! sanity and maxfwd: request validation (RFC 3261 section 16.3) and Max-Forwards processing.
#![forbid(unsafe_code)]
