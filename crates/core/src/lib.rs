//! The geosip engine core: per-message context, outbound sending, stateless replies and forwarding, statistics, shared configuration types.
#![forbid(unsafe_code)]
