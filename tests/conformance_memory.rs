//! The store conformance suite on the memory store.
idem_tests::conformance_suite!(idem_tests::backends::memory());
