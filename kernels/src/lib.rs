//! Numeric kernels of fum: plain functions over slices, with no ECS and no I/O.
//!
//! Every kernel here is the CPU reference for its CUDA twin: same constants, same order of
//! operations, no fused multiply-add where Rust does not fuse. The engine's systems call these
//! per shard (in parallel over shards with rayon); tests compare them with analytic solutions.
//!
//! - [`rng`]: Philox4x32-10, the counter-based generator keyed by (seed, stream, entity, step).
//! - [`lif`]: the neuron models (`lif_cuba`, `lif_coba`) and their exact propagators.
//! - [`portable`]: `ln`, `exp` and `pow` from IEEE `f64` arithmetic alone, the same bits on every
//!   backend (the power-law STDP rule's `w^mu`).
//! - [`spikes`]: the run of a sorted spike list that belongs to a range of ids.
//! - [`source`]: spike sources, neurons that fire at listed times, looked up from the step.
//! - [`delivery`]: synapse rows (u16 targets), fixed-point delay ring buffers, spike delivery.
//! - [`stdp`]: pair-based STDP with lazily evaluated traces and lazily applied potentiation.
//! - [`weight`]: weights stored as `f32` or `f16`, computed in `f32`.

pub mod delivery;
pub mod lif;
pub mod portable;
pub mod rng;
pub mod source;
pub mod spikes;
pub mod stdp;
pub mod weight;

#[cfg(feature = "cuda")]
pub mod cuda;
