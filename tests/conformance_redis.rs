//! The store conformance suite on the Redis store (`IDEM_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`), each test under its own key prefix.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

idem_tests::conformance_suite!(idem_tests::backends::redis());
