//! NVRTC compilation of `kernels/cuda/fum.cu` and the handles of its kernels.

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{CudaContext, CudaFunction};
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};

use super::CudaError;

/// The kernel source, next to the CPU kernels it mirrors.
pub const SOURCE: &str = include_str!("../../cuda/fum.cu");

/// Every kernel of `fum.cu`.
pub struct Kernels {
    pub neurons: CudaFunction,
    pub scan_counts: CudaFunction,
    pub write_spikes: CudaFunction,
    pub pack_fired: CudaFunction,
    pub count_bits: CudaFunction,
    pub write_bit_spikes: CudaFunction,
    pub compact_rows: CudaFunction,
    pub plan_count: CudaFunction,
    pub plan_below: CudaFunction,
    pub plan_bucket: CudaFunction,
    pub plan_select: CudaFunction,
    pub plan_regrow: CudaFunction,
    pub deliver: CudaFunction,
    pub deliver_full: CudaFunction,
    pub count_sources: CudaFunction,
    pub move_rows: CudaFunction,
    pub post_spikes: CudaFunction,
    pub pre_spikes: CudaFunction,
    pub weights_outside: CudaFunction,
    pub state_outside: CudaFunction,
    pub record: CudaFunction,
    pub copy_words: CudaFunction,
    /// Seconds NVRTC took.
    pub compile_s: f64,
}

impl Kernels {
    /// Compiles for the device's architecture with `--fmad=false` (see fum.cu).
    pub fn compile(ctx: &Arc<CudaContext>, (major, minor): (i32, i32)) -> Result<Kernels, CudaError> {
        // SAFETY: only probes whether the shared library can be loaded.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(CudaError::NoNvrtc);
        }
        let t = Instant::now();
        let options = CompileOptions {
            fmad: Some(false),
            options: vec![format!("--gpu-architecture=sm_{major}{minor}"), "--std=c++17".into()],
            name: Some("fum.cu".into()),
            ..Default::default()
        };
        // FUM_CUDA_SOURCE names a variant of fum.cu to compile instead of the built-in one: a
        // kernel change can be measured on a GPU machine without rebuilding the binary. Its
        // structs and kernel signatures must be this binary's.
        let source = match std::env::var_os("FUM_CUDA_SOURCE") {
            Some(path) => std::fs::read_to_string(&path).map_err(|e| CudaError::Compile(format!("FUM_CUDA_SOURCE={}: {e}", path.to_string_lossy())))?,
            None => SOURCE.to_string(),
        };
        let ptx = compile_ptx_with_opts(source, options).map_err(|e| CudaError::Compile(e.to_string()))?;
        let module = ctx.load_module(ptx)?;
        let f = |name: &str| module.load_function(name);
        Ok(Kernels {
            neurons: f("neurons")?,
            scan_counts: f("scan_counts")?,
            write_spikes: f("write_spikes")?,
            pack_fired: f("pack_fired")?,
            count_bits: f("count_bits")?,
            write_bit_spikes: f("write_bit_spikes")?,
            compact_rows: f("compact_rows")?,
            plan_count: f("plan_count")?,
            plan_below: f("plan_below")?,
            plan_bucket: f("plan_bucket")?,
            plan_select: f("plan_select")?,
            plan_regrow: f("plan_regrow")?,
            deliver: f("deliver")?,
            deliver_full: f("deliver_full")?,
            count_sources: f("count_sources")?,
            move_rows: f("move_rows")?,
            post_spikes: f("post_spikes")?,
            pre_spikes: f("pre_spikes")?,
            weights_outside: f("weights_outside")?,
            state_outside: f("state_outside")?,
            record: f("record")?,
            copy_words: f("copy_words")?,
            compile_s: t.elapsed().as_secs_f64(),
        })
    }
}
