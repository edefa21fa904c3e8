//! rr: Record-Route insertion and loose routing (RFC 3261 section 16.12, RFC 5658 double record-routing).
#![forbid(unsafe_code)]
