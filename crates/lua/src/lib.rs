//! app_lua: Lua 5.4 routing scripts (one VM per worker) over a KSR-like native API; hot reload.
#![forbid(unsafe_code)]
