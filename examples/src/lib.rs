//! Shared code of the example programs: the hand-written SQL baselines the benchmarks compare
//! idem against (sqlx, pgbench for PostgreSQL, redis-benchmark for Redis), the benchmark
//! driver's workload, and the seeded numbers of the fault and crash schedules.
pub mod baseline;
pub mod http_bench;
#[cfg(feature = "postgres")]
pub mod nested_bench;
pub mod pgbench;
pub mod prefill;
pub mod prefill_bench;
#[cfg(feature = "redis")]
pub mod redis_benchmark;
pub mod seeded;
pub mod stream_bench;
pub mod workload;
