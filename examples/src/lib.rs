//! Shared code of the example programs: the hand-written SQL baselines the benchmarks compare
//! idem against, and the benchmark driver's workload.
pub mod baseline;
pub mod workload;
