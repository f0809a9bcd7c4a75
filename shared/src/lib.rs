//! The crate every component uses, split by concern. Logic that does not
//! touch the host is plain Rust with unit tests that run natively.

pub mod http;
