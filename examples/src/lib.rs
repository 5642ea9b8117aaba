//! Shared code of the example programs: the hand-written SQL baselines the benchmarks compare
//! idem against (sqlx, pgbench for PostgreSQL, redis-benchmark for Redis), and the benchmark driver's workload.
pub mod baseline;
#[cfg(feature = "postgres")]
pub mod pgbench;
#[cfg(feature = "redis")]
pub mod redis_benchmark;
pub mod stream_bench;
pub mod workload;
