//! RFC 3261 section 17 transaction state machines (client/server, INVITE/non-INVITE), sans-I/O: driven by events and a clock.
#![forbid(unsafe_code)]
