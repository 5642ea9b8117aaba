//! Shared code of the example programs: the hand-written SQL baselines the benchmarks compare
//! idem against (sqlx, and pgbench for PostgreSQL), and the benchmark driver's workload.
pub mod baseline;
pub mod http_bench;
#[cfg(feature = "postgres")]
pub mod nested_bench;
pub mod pgbench;
pub mod stream_bench;
pub mod workload;
