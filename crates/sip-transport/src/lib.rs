//! SIP transports: UDP workers with batched receive and SO_REUSEPORT, TCP connection table; hands framed messages to the core.
#![forbid(unsafe_code)]
