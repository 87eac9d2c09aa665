//! The GPU side of the kernels: the CUDA twins of the CPU kernels (`kernels/cuda/fum.cu`), the
//! GPU they run on, and NVRTC compiling them for it.
//!
//! - [`gpus`] lists the devices (`fum info`); [`Gpu::open`] opens one and compiles the kernels
//!   with NVRTC for its architecture, once per process ([`Kernels`]).
//! - The device buffers live in the engine's column layer (`fum_engine::device`); the step that
//!   launches these kernels, captured as one CUDA graph, is `fum_systems::cuda`.
//!
//! Without a usable GPU every entry point returns [`CudaError`], never a panic: cudarc panics
//! when libcuda or libnvrtc cannot be loaded, so their presence is checked first.

mod compile;

use std::sync::Arc;

use cudarc::driver::{CudaContext, DriverError};

pub use compile::Kernels;

/// Why the CUDA backend cannot run.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("no CUDA driver: libcuda could not be loaded (is an NVIDIA driver installed?)")]
    NoDriver,
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    #[error("NVRTC (the CUDA runtime compiler, libnvrtc) could not be loaded")]
    NoNvrtc,
    #[error("compiling the CUDA kernels failed: {0}")]
    Compile(String),
    #[error("CUDA: {0}")]
    Driver(#[from] DriverError),
    #[error(
        "the network needs {needed} of device memory but {device} has {free} free; run it on the CPU backend, with fewer neurons or synapses, or with `weights = \"f16\"`"
    )]
    OutOfMemory { needed: String, free: String, device: String },
    #[error("the CUDA backend cannot run this model: {0}")]
    Unsupported(String),
    /// The host's memory tier (`--host-memory`) could not take the network while it was placed.
    #[error(transparent)]
    HostTier(Box<dyn std::error::Error + Send + Sync>),
}

/// One GPU as `fum info` describes it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    pub total_memory_bytes: usize,
    pub free_memory_bytes: usize,
    pub compute_capability: (i32, i32),
    /// CUDA driver API version, e.g. 13000 for 13.0.
    pub driver_version: i32,
}

impl std::fmt::Display for GpuInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
        write!(
            f,
            "GPU {}: {}, {:.1} GiB ({:.1} GiB free), compute capability {}.{}, CUDA driver {}.{}",
            self.ordinal,
            self.name,
            gib(self.total_memory_bytes),
            gib(self.free_memory_bytes),
            self.compute_capability.0,
            self.compute_capability.1,
            self.driver_version / 1000,
            self.driver_version % 1000 / 10
        )
    }
}

fn driver_present() -> Result<(), CudaError> {
    // SAFETY: only probes whether the shared library can be loaded.
    if unsafe { cudarc::driver::sys::is_culib_present() } { Ok(()) } else { Err(CudaError::NoDriver) }
}

/// How many CUDA devices this machine has (at least one); an error when there is no driver or
/// no device.
pub fn device_count() -> Result<usize, CudaError> {
    driver_present()?;
    let count = CudaContext::device_count().map_err(|e| CudaError::NoDevice(e.to_string()))?;
    if count == 0 {
        return Err(CudaError::NoDevice("the driver reports no device".into()));
    }
    Ok(count as usize)
}

/// Every CUDA device of this machine; an error when there is no driver or no device.
pub fn gpus() -> Result<Vec<GpuInfo>, CudaError> {
    (0..device_count()?).map(|ordinal| Gpu::context(ordinal).and_then(|ctx| describe(&ctx))).collect()
}

fn describe(ctx: &Arc<CudaContext>) -> Result<GpuInfo, CudaError> {
    let (free, total) = ctx.mem_get_info()?;
    let mut version = 0;
    // SAFETY: writes one integer.
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) }.result()?;
    Ok(GpuInfo {
        ordinal: ctx.ordinal(),
        name: ctx.name()?,
        total_memory_bytes: total,
        free_memory_bytes: free,
        compute_capability: ctx.compute_capability()?,
        driver_version: version,
    })
}

/// An opened GPU with the kernels compiled for it.
pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub info: GpuInfo,
    pub kernels: Kernels,
}

impl Gpu {
    fn context(ordinal: usize) -> Result<Arc<CudaContext>, CudaError> {
        driver_present()?;
        CudaContext::new(ordinal).map_err(|e| CudaError::NoDevice(e.to_string()))
    }

    /// Opens device `ordinal` and compiles the kernels for it.
    pub fn open(ordinal: usize) -> Result<Gpu, CudaError> {
        let ctx = Gpu::context(ordinal)?;
        // Buffers are used from one stream in order; cudarc's per-buffer events would only
        // cost time and are not allowed inside graph capture.
        // SAFETY: no buffer is shared between streams.
        unsafe { ctx.disable_event_tracking() };
        keep_freed_memory(&ctx)?;
        let info = describe(&ctx)?;
        let kernels = Kernels::compile(&ctx, info.compute_capability)?;
        Ok(Gpu { ctx, info, kernels })
    }

    /// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)".
    pub fn label(&self) -> String {
        let (major, minor) = self.info.compute_capability;
        format!("{} (sm_{major}{minor}, {:.1} GiB)", self.info.name, self.info.total_memory_bytes as f64 / (1u64 << 30) as f64)
    }
}

/// Keeps memory freed into the device's stream-ordered pool there for the next allocation,
/// instead of returning it to the driver at the next synchronisation (the pool's default).
/// A structural plan allocates and frees gigabytes of scratch beside the steps: returning it
/// held the steps' graph launches for up to 28 ms at a time, about 130 ms a plan (1M-neuron
/// STDP network, H200, measured). The idle part still counts as free where the engine asks
/// ([`free_bytes`]).
fn keep_freed_memory(ctx: &Arc<CudaContext>) -> Result<(), CudaError> {
    use cudarc::driver::sys;
    let mut keep = u64::MAX;
    // SAFETY: the pool is the device's own; the attribute takes a u64.
    unsafe { sys::cuMemPoolSetAttribute(default_pool(ctx)?, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, (&raw mut keep).cast()) }.result()?;
    Ok(())
}

fn default_pool(ctx: &Arc<CudaContext>) -> Result<cudarc::driver::sys::CUmemoryPool, CudaError> {
    let mut pool = std::ptr::null_mut();
    // SAFETY: writes one handle.
    unsafe { cudarc::driver::sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) }.result()?;
    Ok(pool)
}

/// Bytes the device can still allocate: the driver's free memory and what the pool holds idle.
pub fn free_bytes(ctx: &Arc<CudaContext>) -> Result<u64, CudaError> {
    use cudarc::driver::sys::CUmemPool_attribute::{CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, CU_MEMPOOL_ATTR_USED_MEM_CURRENT};
    let pool = default_pool(ctx)?;
    let attribute = |a| -> Result<u64, CudaError> {
        let mut v = 0u64;
        // SAFETY: both attributes are u64s.
        unsafe { cudarc::driver::sys::cuMemPoolGetAttribute(pool, a, (&raw mut v).cast()) }.result()?;
        Ok(v)
    };
    let idle = attribute(CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)?.saturating_sub(attribute(CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?);
    Ok(ctx.mem_get_info()?.0 as u64 + idle)
}

/// Device-to-device copy bandwidth (bytes read + written per second) of a plain copy kernel
/// over two buffers of `bytes` each: the ceiling that memory-bound kernels are quoted against.
pub fn copy_bandwidth(gpu: &Gpu, bytes: usize) -> Result<f64, CudaError> {
    use cudarc::driver::{LaunchConfig, PushKernelArg};
    let stream = gpu.ctx.new_stream()?;
    let words = (bytes / 16) as u64;
    let src = stream.alloc_zeros::<u8>(bytes)?;
    let mut dst = stream.alloc_zeros::<u8>(bytes)?;
    let sms = gpu.ctx.attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32;
    let cfg = LaunchConfig { grid_dim: (sms * 8, 1, 1), block_dim: (512, 1, 1), shared_mem_bytes: 0 };
    let launch = |dst: &mut cudarc::driver::CudaSlice<u8>| -> Result<(), CudaError> {
        // SAFETY: both buffers hold `words` 16-byte words.
        unsafe { stream.launch_builder(&gpu.kernels.copy_words).arg(&src).arg(dst).arg(&words).launch(cfg) }?;
        Ok(())
    };
    launch(&mut dst)?;
    stream.synchronize()?;
    let iterations = 20;
    let t = std::time::Instant::now();
    for _ in 0..iterations {
        launch(&mut dst)?;
    }
    stream.synchronize()?;
    Ok(2.0 * (words * 16) as f64 * iterations as f64 / t.elapsed().as_secs_f64())
}
