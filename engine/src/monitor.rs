//! The NVIDIA GPU's state during a run, sampled through NVML (the library behind `nvidia-smi`):
//! power, energy, utilization, device memory used, temperature and SM clock, summarised as a
//! [`DeviceReport`] for `run.json` and `fum bench`.
//!
//! NVML (`libnvidia-ml.so.1`, part of the NVIDIA driver) is loaded when a [`Monitor`] starts, so
//! fum builds and runs without it; [`Monitor::start`] then returns an error naming NVML.
//!
//! The device is the one a run uses, named by its CUDA ordinal. NVML numbers devices in PCI
//! order and ignores `CUDA_VISIBLE_DEVICES`, CUDA numbers the visible ones fastest first, so
//! with the `cuda` feature the ordinal is resolved through the device's UUID (which both report);
//! without it, or where the CUDA driver library is absent, the ordinal is taken as NVML's index.
//!
//! NVML reports the whole device: memory used and utilization include other processes on the
//! same GPU, and energy is the board's.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use serde::{Deserialize, Serialize};

/// Why a [`Monitor`] could not start. The reason is part of the message (not a `source`, which
/// would print it twice).
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// NVML could not be loaded or initialised: no NVIDIA driver, or no GPU.
    #[error("NVML is not available, so the GPU cannot be monitored (libnvidia-ml.so.1 comes with the NVIDIA driver): {error}")]
    Nvml { error: NvmlError },
    /// NVML is there, but not the device asked for.
    #[error("NVML: no device for CUDA device {ordinal}: {message}")]
    Device { ordinal: u32, message: String },
    /// The sampling thread could not be started.
    #[error("cannot start the NVML monitor thread: {message}")]
    Thread { message: String },
}

/// Mean and maximum of one quantity over the samples that reported it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    pub mean: f64,
    pub max: f64,
}

/// Where [`DeviceReport::energy_j`] comes from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnergySource {
    /// NVML's total energy counter of the device (Volta and newer), last sample minus first.
    #[serde(rename = "counter")]
    Counter,
    /// The power samples integrated over their times (trapezoids).
    #[serde(rename = "power samples")]
    PowerSamples,
}

/// A device's state over a run. A quantity the device does not report (NVML answers "not
/// supported", as some boards do for utilization or energy) is `None` (`null` in JSON).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DeviceReport {
    pub name: String,
    /// NVML's UUID of the device (`GPU-…`), which tells the cards of one host apart.
    pub uuid: String,
    /// The driver's version.
    pub driver: String,
    /// Samples taken, counting the one at start and the one at finish.
    pub samples: u64,
    /// The sampling interval asked for.
    pub interval_ms: f64,
    /// From the first sample to the last.
    pub duration_s: f64,
    /// Board power draw, watts.
    pub power_w: Option<Stat>,
    /// Energy drawn between the first sample and the last, joules.
    pub energy_j: Option<f64>,
    pub energy_from: Option<EnergySource>,
    /// Percent of the time a kernel ran, over NVML's last sample period.
    pub utilization_gpu_pct: Option<Stat>,
    /// Percent of the time device memory was read or written, over NVML's last sample period.
    pub utilization_memory_pct: Option<Stat>,
    /// Device memory allocated on the whole device (all processes); `max` is the peak seen.
    pub memory_used_bytes: Option<Stat>,
    pub temperature_c: Option<Stat>,
    pub sm_clock_mhz: Option<Stat>,
}

impl DeviceReport {
    /// Joules per event (a spike, a synaptic event: whatever `events` counts), where the
    /// energy is known and `events` is not zero.
    pub fn energy_per_event_j(&self, events: u64) -> Option<f64> {
        self.energy_j.filter(|_| events > 0).map(|j| j / events as f64)
    }
}

/// Samples a GPU on a background thread every `interval` until [`Monitor::finish`]; dropping it
/// without `finish` stops the thread too (at once, without a last sample).
///
/// Concurrency contract: the sampling thread shares no memory and no lock with the simulation
/// (it owns its NVML handle and its running summary, and only hears a stop message on a
/// channel), and NVML queries do not touch CUDA contexts or streams, so between `start` and
/// `finish` the simulation never waits for it; `start` waits for NVML to open and the first
/// sample (about 0.2 s the first time in a process, 25 ms after, on an H200), `finish` for the
/// last sample and the thread's end (10 to 20 ms). The thread runs at a lowered priority,
/// giving way to the simulation's threads.
///
/// One sample is seven NVML queries, about 5 ms on an H200 with driver 580: an interval shorter
/// than that samples back to back (one CPU core busy); 50 to 100 ms costs next to nothing.
pub struct Monitor {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<Summary>,
    device: Identity,
    interval: Duration,
}

/// What names a device in a report.
struct Identity {
    name: String,
    uuid: String,
    driver: String,
}

impl Monitor {
    /// Starts sampling the device of CUDA ordinal `index` (the one the run uses) every
    /// `interval` (at least 1 ms), taking the first sample before it returns. Errs, without
    /// panicking, where NVML or the device is missing.
    pub fn start(index: u32, interval: Duration) -> Result<Monitor, MonitorError> {
        let interval = interval.max(Duration::from_millis(1));
        let (stop, stopped) = mpsc::channel();
        let (ready, opened) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("fum-monitor".into())
            .spawn(move || sample_until_stopped(index, interval, ready, stopped))
            .map_err(|e| MonitorError::Thread { message: e.to_string() })?;
        match opened.recv() {
            Ok(Ok(device)) => Ok(Monitor { stop, thread, device, interval }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            // The thread ended without a word: it panicked. Say so rather than panic here.
            Err(_) => {
                let message = match thread.join() {
                    Err(panic) => panic_message(&*panic),
                    Ok(_) => "it ended before opening the device".into(),
                };
                Err(MonitorError::Thread { message })
            }
        }
    }

    /// Stops the thread, after a last sample, and summarises the samples.
    pub fn finish(self) -> DeviceReport {
        let _ = self.stop.send(());
        let summary = self.thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        summary.report(self.device, self.interval)
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
    format!("it panicked: {}", what.unwrap_or_default())
}

/// The sampling thread: opens NVML and the device, says so through `ready` (or why not), then
/// samples every `interval` until a stop message (or the `Monitor`'s drop), and once more then.
fn sample_until_stopped(
    index: u32,
    interval: Duration,
    ready: mpsc::SyncSender<Result<Identity, MonitorError>>,
    stopped: mpsc::Receiver<()>,
) -> Summary {
    crate::yield_to_simulation();
    let mut summary = Summary::default();
    let nvml = match Nvml::init() {
        Ok(nvml) => nvml,
        Err(error) => {
            let _ = ready.send(Err(MonitorError::Nvml { error }));
            return summary;
        }
    };
    let (device, identity) = match open(&nvml, index) {
        Ok(opened) => opened,
        Err(e) => {
            let _ = ready.send(Err(e));
            return summary;
        }
    };
    let t0 = Instant::now();
    summary.push(read(&device, t0));
    if ready.send(Ok(identity)).is_err() {
        return summary;
    }
    let mut next = t0 + interval;
    loop {
        match stopped.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => {
                summary.push(read(&device, t0));
                // On a fixed cadence; after a stall (a slow query, a busy host) restart it
                // instead of sampling in a burst to catch up.
                next += interval;
                let now = Instant::now();
                if next < now {
                    next = now + interval;
                }
            }
            Ok(()) => {
                summary.push(read(&device, t0));
                return summary;
            }
            Err(RecvTimeoutError::Disconnected) => return summary,
        }
    }
}

/// The NVML device of CUDA ordinal `ordinal`, with its name, UUID and the driver's version.
fn open(nvml: &Nvml, ordinal: u32) -> Result<(Device<'_>, Identity), MonitorError> {
    let fail = |message: String| MonitorError::Device { ordinal, message };
    let index = nvml_index(nvml, ordinal)?;
    let device = nvml.device_by_index(index).map_err(|e| fail(format!("NVML device {index}: {e}")))?;
    let name = device.name().map_err(|e| fail(format!("its name: {e}")))?;
    let uuid = device.uuid().unwrap_or_default();
    let driver = nvml.sys_driver_version().unwrap_or_default();
    Ok((device, Identity { name, uuid, driver }))
}

/// NVML's index of the device of CUDA ordinal `ordinal`: the one with the same UUID.
#[cfg(feature = "cuda")]
fn nvml_index(nvml: &Nvml, ordinal: u32) -> Result<u32, MonitorError> {
    use cudarc::driver::{result, sys};
    let fail = |message: String| MonitorError::Device { ordinal, message };
    // SAFETY: only loads the CUDA driver library (if it is there) and looks its symbols up.
    if !unsafe { sys::is_culib_present() } {
        return Ok(ordinal);
    }
    let cuda = i32::try_from(ordinal).map_err(|_| fail("not a CUDA ordinal".into()))?;
    let uuid = result::init()
        .and_then(|()| result::device::get(cuda))
        .and_then(result::device::get_uuid)
        .map_err(|e| fail(format!("its UUID from the CUDA driver: {e}")))?;
    let hex: String = uuid.bytes.iter().map(|&b| format!("{:02x}", b as u8)).collect();
    // NVML writes it `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    let digits = |s: &str| -> String {
        let s = s.split_once('-').map_or(s, |(_, rest)| rest);
        s.chars().filter(char::is_ascii_hexdigit).map(|c| c.to_ascii_lowercase()).collect()
    };
    let count = nvml.device_count().map_err(|e| fail(format!("counting devices: {e}")))?;
    (0..count)
        .find(|&i| nvml.device_by_index(i).and_then(|d| d.uuid()).is_ok_and(|u| digits(&u) == hex))
        .ok_or_else(|| fail(format!("none of its {count} devices has the UUID of this CUDA device (GPU-{hex})")))
}

/// Without the CUDA backend, the ordinal is taken as NVML's index.
#[cfg(not(feature = "cuda"))]
fn nvml_index(_nvml: &Nvml, ordinal: u32) -> Result<u32, MonitorError> {
    Ok(ordinal)
}

/// One reading of the device; a query the device does not answer leaves its field `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Sample {
    /// Seconds since the monitor's first sample.
    t_s: f64,
    power_w: Option<f64>,
    /// NVML's total energy counter, millijoules since the driver loaded.
    energy_mj: Option<u64>,
    utilization_gpu_pct: Option<f64>,
    utilization_memory_pct: Option<f64>,
    memory_used_bytes: Option<f64>,
    temperature_c: Option<f64>,
    sm_clock_mhz: Option<f64>,
}

fn read(device: &Device, t0: Instant) -> Sample {
    let t_s = t0.elapsed().as_secs_f64();
    let energy_mj = device.total_energy_consumption().ok();
    let power_w = device.power_usage().ok().map(|mw| f64::from(mw) / 1e3);
    let utilization = device.utilization_rates().ok();
    Sample {
        t_s,
        power_w,
        energy_mj,
        utilization_gpu_pct: utilization.as_ref().map(|u| f64::from(u.gpu)),
        utilization_memory_pct: utilization.as_ref().map(|u| f64::from(u.memory)),
        memory_used_bytes: device.memory_info().ok().map(|m| m.used as f64),
        temperature_c: device.temperature(TemperatureSensor::Gpu).ok().map(f64::from),
        sm_clock_mhz: device.clock_info(Clock::SM).ok().map(f64::from),
    }
}

/// Running mean and maximum of one quantity.
#[derive(Clone, Copy, Debug, Default)]
struct Accumulator {
    n: u64,
    sum: f64,
    max: f64,
}

impl Accumulator {
    fn push(&mut self, value: Option<f64>) {
        if let Some(v) = value {
            self.max = if self.n == 0 { v } else { self.max.max(v) };
            self.n += 1;
            self.sum += v;
        }
    }

    fn stat(&self) -> Option<Stat> {
        (self.n > 0).then(|| Stat { mean: self.sum / self.n as f64, max: self.max })
    }
}

/// The samples folded as they come (constant memory, however long the run): the pure
/// arithmetic of a [`DeviceReport`].
#[derive(Clone, Debug, Default)]
struct Summary {
    samples: u64,
    first: Option<Sample>,
    last: Option<Sample>,
    power: Accumulator,
    /// The latest sample that had a power reading: (time, watts).
    last_power: Option<(f64, f64)>,
    /// ∫ power dt over the samples so far, by trapezoids between consecutive power readings (a
    /// sample without one is bridged by a straight line), joules.
    power_integral_j: f64,
    utilization_gpu: Accumulator,
    utilization_memory: Accumulator,
    memory_used: Accumulator,
    temperature: Accumulator,
    sm_clock: Accumulator,
}

impl Summary {
    fn push(&mut self, s: Sample) {
        self.samples += 1;
        self.first.get_or_insert(s);
        self.last = Some(s);
        if let Some(p) = s.power_w {
            if let Some((t, q)) = self.last_power {
                self.power_integral_j += (s.t_s - t) * (p + q) / 2.0;
            }
            self.last_power = Some((s.t_s, p));
        }
        self.power.push(s.power_w);
        self.utilization_gpu.push(s.utilization_gpu_pct);
        self.utilization_memory.push(s.utilization_memory_pct);
        self.memory_used.push(s.memory_used_bytes);
        self.temperature.push(s.temperature_c);
        self.sm_clock.push(s.sm_clock_mhz);
    }

    /// Energy: the counter's difference where the first and last samples both read it and it
    /// advanced (it updates every few tens of milliseconds, so a very short run may see it
    /// still), else the power samples' integral.
    fn energy(&self) -> (Option<f64>, Option<EnergySource>) {
        let counter = match (self.first.and_then(|s| s.energy_mj), self.last.and_then(|s| s.energy_mj)) {
            (Some(start), Some(end)) if end > start => Some((end - start) as f64 / 1e3),
            _ => None,
        };
        match (counter, self.power.n) {
            (Some(j), _) => (Some(j), Some(EnergySource::Counter)),
            (None, 0) => (None, None),
            (None, _) => (Some(self.power_integral_j), Some(EnergySource::PowerSamples)),
        }
    }

    fn report(&self, device: Identity, interval: Duration) -> DeviceReport {
        let (energy_j, energy_from) = self.energy();
        let duration_s = match (self.first, self.last) {
            (Some(a), Some(b)) => b.t_s - a.t_s,
            _ => 0.0,
        };
        DeviceReport {
            name: device.name,
            uuid: device.uuid,
            driver: device.driver,
            samples: self.samples,
            interval_ms: interval.as_secs_f64() * 1e3,
            duration_s,
            power_w: self.power.stat(),
            energy_j,
            energy_from,
            utilization_gpu_pct: self.utilization_gpu.stat(),
            utilization_memory_pct: self.utilization_memory.stat(),
            memory_used_bytes: self.memory_used.stat(),
            temperature_c: self.temperature.stat(),
            sm_clock_mhz: self.sm_clock.stat(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity { name: "Test GPU".into(), uuid: "GPU-0".into(), driver: "1.0".into() }
    }

    fn summarize(samples: &[Sample]) -> DeviceReport {
        let mut summary = Summary::default();
        for &s in samples {
            summary.push(s);
        }
        summary.report(identity(), Duration::from_millis(100))
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn monitor_means_and_maxima_over_the_samples_that_report() {
        let at = |t_s: f64, gpu: f64, mem: Option<f64>| Sample {
            t_s,
            utilization_gpu_pct: Some(gpu),
            memory_used_bytes: mem,
            temperature_c: Some(40.0 + t_s),
            sm_clock_mhz: Some(1980.0),
            ..Sample::default()
        };
        let r = summarize(&[at(0.0, 10.0, Some(1e9)), at(1.0, 90.0, None), at(2.0, 50.0, Some(3e9))]);
        assert_eq!(r.samples, 3);
        assert_eq!(r.interval_ms, 100.0);
        assert_eq!(r.duration_s, 2.0);
        assert_eq!(r.utilization_gpu_pct, Some(Stat { mean: 50.0, max: 90.0 }));
        // The sample without a memory reading counts for neither the mean nor the maximum.
        assert_eq!(r.memory_used_bytes, Some(Stat { mean: 2e9, max: 3e9 }));
        assert_eq!(r.temperature_c, Some(Stat { mean: 41.0, max: 42.0 }));
        assert_eq!(r.sm_clock_mhz, Some(Stat { mean: 1980.0, max: 1980.0 }));
        // Quantities no sample reported.
        assert_eq!(r.utilization_memory_pct, None);
        assert_eq!((r.power_w, r.energy_j, r.energy_from), (None, None, None));
        assert_eq!(r.energy_per_event_j(10), None);
    }

    #[test]
    fn monitor_integrates_power_over_the_sample_times() {
        // p(t) = 100 + 50 t W from 0 to 2 s: ∫ = 200 + 100 = 300 J, exact for trapezoids on a
        // line whatever the (uneven) sample times; a sample without power is bridged.
        let times = [0.0, 0.1, 0.35, 0.5, 1.0, 1.7, 2.0];
        let samples: Vec<Sample> = times
            .iter()
            .map(|&t| Sample { t_s: t, power_w: (t != 0.5).then_some(100.0 + 50.0 * t), ..Sample::default() })
            .collect();
        let r = summarize(&samples);
        assert_eq!(r.energy_from, Some(EnergySource::PowerSamples));
        assert!(close(r.energy_j.unwrap(), 300.0), "{:?}", r.energy_j);
        let powers: Vec<f64> = samples.iter().filter_map(|s| s.power_w).collect();
        let p = r.power_w.unwrap();
        assert!(close(p.mean, powers.iter().sum::<f64>() / powers.len() as f64));
        assert_eq!(p.max, 200.0);
        assert!(close(r.energy_per_event_j(1_000_000).unwrap(), 300e-6));
        assert_eq!(r.energy_per_event_j(0), None);
    }

    #[test]
    fn monitor_prefers_the_energy_counter() {
        let s = |t_s: f64, mj: Option<u64>| Sample { t_s, power_w: Some(100.0), energy_mj: mj, ..Sample::default() };
        // The counter's difference (end - start), whatever lies between and whatever the power says.
        let r = summarize(&[s(0.0, Some(5_000_000)), s(1.0, None), s(2.0, Some(5_250_500))]);
        assert_eq!((r.energy_j, r.energy_from), (Some(250.5), Some(EnergySource::Counter)));
        // Without a reading at either end, or one that did not advance: the power samples (100 W, 2 s).
        for (a, b) in [(None, Some(9)), (Some(9), None), (Some(9), Some(9))] {
            let r = summarize(&[s(0.0, a), s(2.0, b)]);
            assert_eq!((r.energy_j, r.energy_from), (Some(200.0), Some(EnergySource::PowerSamples)));
        }
    }

    #[test]
    fn monitor_two_samples_make_a_report() {
        let r = summarize(&[
            Sample { t_s: 0.0, power_w: Some(60.0), ..Sample::default() },
            Sample { t_s: 0.5, power_w: Some(80.0), ..Sample::default() },
        ]);
        assert_eq!(r.samples, 2);
        assert_eq!(r.power_w, Some(Stat { mean: 70.0, max: 80.0 }));
        assert_eq!(r.energy_j, Some(35.0));
        let nothing = summarize(&[]);
        assert_eq!((nothing.samples, nothing.duration_s, nothing.power_w), (0, 0.0, None));
    }

    #[test]
    fn monitor_report_round_trips_through_json() {
        let r = summarize(&[
            Sample { t_s: 0.0, power_w: Some(60.0), temperature_c: Some(30.0), ..Sample::default() },
            Sample { t_s: 1.0, power_w: Some(80.0), temperature_c: Some(31.0), ..Sample::default() },
        ]);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["energy_from"], "power samples");
        assert_eq!(json["power_w"]["max"], 80.0);
        assert!(json["utilization_gpu_pct"].is_null());
        assert_eq!(serde_json::from_value::<DeviceReport>(json).unwrap(), r);
        let counter = serde_json::to_value(EnergySource::Counter).unwrap();
        assert_eq!(counter, "counter");
    }

    /// On a machine without NVML (this one, CI) `start` errs naming NVML; where a GPU is there
    /// it samples.
    #[test]
    fn monitor_start_without_nvml_errs_naming_it() {
        match Monitor::start(0, Duration::from_millis(10)) {
            Err(e) => {
                eprintln!("{e}");
                assert!(e.to_string().contains("NVML"), "{e}");
            }
            Ok(monitor) => {
                std::thread::sleep(Duration::from_millis(50));
                let r = monitor.finish();
                assert!(r.samples > 0, "{r:?}");
            }
        }
    }

    #[test]
    #[ignore = "needs an NVIDIA GPU and NVML"]
    fn monitor_samples_a_gpu() {
        let monitor = Monitor::start(0, Duration::from_millis(50)).expect("NVML and device 0");
        std::thread::sleep(Duration::from_millis(300));
        let r = monitor.finish();
        println!("{}", serde_json::to_string_pretty(&r).unwrap());
        assert!(r.samples >= 2, "{r:?}");
        assert!(!r.name.is_empty(), "{r:?}");
        assert!(r.power_w.is_some_and(|p| p.mean > 0.0), "{r:?}");
        assert!(r.energy_j.is_some_and(|j| j > 0.0), "{r:?}");
        assert!(r.duration_s > 0.2, "{r:?}");
    }
}
