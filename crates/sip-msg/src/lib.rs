//! SIP message layer: zero-copy parser, typed lazy accessors, edit list (lumps), response builder and stream framer. No I/O.
#![forbid(unsafe_code)]
