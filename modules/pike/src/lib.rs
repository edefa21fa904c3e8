//! pike, ratelimit and overload control: per-source flood detection, per-method token buckets, failed-auth blocking, load shedding.
#![forbid(unsafe_code)]
