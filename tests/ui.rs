//! Compile-time behaviour of `#[idempotent]` and `#[derive(IdemKey)]`: every supported shape
//! compiles (`ui/pass`), and each misuse fails with the pinned diagnostic (`ui/fail/*.stderr`).
//! Regenerate the pins with `TRYBUILD=overwrite`, then read each one.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
