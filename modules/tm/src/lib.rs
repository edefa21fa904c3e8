//! tm: transaction-stateful proxying (forking, CANCEL, timers, failure routes) and sl stateless replies/forwarding.
#![forbid(unsafe_code)]
