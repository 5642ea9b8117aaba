//! Checks the SQL stores share when they read a row back: a column that must hold 32 bytes (a
//! key, a fingerprint), a count that must not be negative (an attempt number). A bad value is
//! a reason string for `Error::Corrupt`, never a panic.

/// The 32 bytes of a key or fingerprint column.
pub(crate) fn bytes32(bytes: Vec<u8>, what: &str) -> Result<[u8; 32], String> {
    <[u8; 32]>::try_from(bytes).map_err(|b| format!("{what} has {} bytes, not 32", b.len()))
}

/// A non-negative integer column (SQL integers are signed).
pub(crate) fn u64_of(v: i64, what: &str) -> Result<u64, String> {
    u64::try_from(v).map_err(|_| format!("{what} is negative ({v})"))
}
