//! The backends a run can choose: the CPU ([`CpuBackend`]) and, with the cargo feature `cuda`,
//! a CUDA GPU (`cuda::CudaBackend`); [`backend_for`] makes the one a `--backend` choice names.

use fum_engine::Simulation;
use fum_engine::backend::{Backend, BackendChoice, BackendError, InstallError};

use crate::DefaultPlugins;

/// The CPU backend: the systems of [`DefaultPlugins`] on the host columns, in the simulation's
/// thread pool.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend {
    /// The worker threads, known once installed.
    threads: usize,
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn device(&self) -> String {
        format!("{} CPU thread{}", self.threads, if self.threads == 1 { "" } else { "s" })
    }

    fn host_threads(&self) -> usize {
        self.threads
    }

    fn install(&mut self, sim: &mut Simulation) -> Result<(), InstallError> {
        self.threads = sim.threads();
        sim.add_plugins(DefaultPlugins);
        Ok(())
    }
}

/// The backend `choice` stands for. `cuda` without a usable GPU (or in a build without the CUDA
/// backend) is an error; `auto` says on stderr which it chose.
pub fn backend_for(choice: BackendChoice) -> Result<Box<dyn Backend>, BackendError> {
    Ok(match choice {
        BackendChoice::Cpu => Box::new(CpuBackend::default()),
        BackendChoice::Cuda => cuda().map_err(|reason| BackendError::Unavailable { choice, reason })?,
        BackendChoice::Auto => match cuda() {
            Ok(backend) => {
                eprintln!("backend: cuda ({})", backend.device());
                backend
            }
            Err(e) => {
                eprintln!("backend: cpu ({e})");
                Box::new(CpuBackend::default())
            }
        },
    })
}

/// The CUDA backend on this process's GPU, opened (and its kernels compiled) once per process:
/// the first, or across ranks the GPU of the rank's place on its host (ranks beyond the host's
/// GPUs share them, round robin).
#[cfg(feature = "cuda")]
fn cuda() -> Result<Box<dyn Backend>, String> {
    use std::sync::{Arc, OnceLock};

    use fum_kernels::cuda::{Gpu, device_count};
    static GPU: OnceLock<Result<Arc<Gpu>, String>> = OnceLock::new();
    let open = || {
        let local = fum_engine::ranks::transport().map_or(0, |t| t.local().0);
        let count = if local > 0 { device_count().map_err(|e| e.to_string())? } else { 1 };
        Gpu::open(local % count).map(Arc::new).map_err(|e| e.to_string())
    };
    let gpu = GPU.get_or_init(open).clone()?;
    Ok(Box::new(crate::cuda::CudaBackend { gpu }))
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<Box<dyn Backend>, String> {
    Err("this fum was built without the CUDA backend (cargo feature `cuda`)".into())
}

/// What `fum info` reports of the CUDA backend, an item at a time.
#[derive(Clone, Debug)]
pub enum CudaReport {
    /// Built without the cargo feature `cuda`.
    NotBuilt,
    /// No usable driver or device, and why.
    Unavailable(String),
    /// A GPU, in words.
    Gpu(String),
    /// The copy bandwidth (bytes read + written per second) of the GPU reported last.
    Bandwidth(f64),
}

/// Why describing the GPUs failed (no error is possible without the CUDA backend).
#[cfg(feature = "cuda")]
pub type GpuError = fum_kernels::cuda::CudaError;
#[cfg(not(feature = "cuda"))]
pub type GpuError = std::convert::Infallible;

/// Describes the CUDA GPUs of this machine to `report`, as it goes: with `bandwidth`, each
/// one's device-to-device copy bandwidth (2 x 1 GiB buffers), which takes a moment to measure.
#[cfg(feature = "cuda")]
pub fn cuda_report(bandwidth: bool, mut report: impl FnMut(CudaReport)) -> Result<(), GpuError> {
    use fum_kernels::cuda::{Gpu, copy_bandwidth, gpus};
    match gpus() {
        Ok(gpus) => {
            for g in gpus {
                report(CudaReport::Gpu(g.to_string()));
                if bandwidth {
                    let gpu = Gpu::open(g.ordinal)?;
                    report(CudaReport::Bandwidth(copy_bandwidth(&gpu, 1 << 30)?));
                }
            }
        }
        Err(e) => report(CudaReport::Unavailable(e.to_string())),
    }
    Ok(())
}

/// Reports that this build has no CUDA backend.
#[cfg(not(feature = "cuda"))]
pub fn cuda_report(_bandwidth: bool, mut report: impl FnMut(CudaReport)) -> Result<(), GpuError> {
    report(CudaReport::NotBuilt);
    Ok(())
}
