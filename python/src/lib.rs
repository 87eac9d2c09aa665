//! `fum._fum`: the engine's public API for Python. The `fum` package (fum/__init__.py) builds
//! models and wraps these classes; this module parses models with the engine's own parser,
//! runs them with `fum_engine::run` (the GIL released), or builds them once and runs them in
//! several calls (`NativeSimulation`), and hands recorded spikes, probes and learned weights to
//! Python as numpy arrays that own the vectors they were computed into.
//!
//! Ids (spiking neurons, probed neurons, synapses' pre and post) reach Python as int64. SONATA
//! stores node_ids as uint64 (spikes.h5 keeps that type), but numpy refuses to cast uint64 to
//! its index type where it cannot do so safely (`np.bincount`, `np.add.at`, mixing with signed
//! ints gives float64), and unsigned differences wrap; int64 is numpy's and pandas' default
//! integer, and fum's ids are below 2^32, so the conversion is exact.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use fum_engine::backend::BackendChoice;
use fum_engine::components::{Clock, Shard, SynapseBlocks};
use fum_engine::recording::Recorder;
use fum_engine::report::RunReport;
use fum_engine::run::{Phase, RunOptions, RunProgress, interrupt_flag};
use fum_engine::{Model, Simulation};
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

fum_engine::use_jemalloc!();

create_exception!(_fum, FumError, PyException, "A run failed: the message is the one `fum run` prints.");
create_exception!(_fum, ModelError, FumError, "A model was refused: `file:line:column: field: message`, as `fum check` prints it.");

/// The message the CLI prints for an error (`error: {e:#}`): the error and its sources.
fn message(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text += &format!(": {e}");
        source = e.source();
    }
    text
}

fn model_error(e: &fum_engine::ModelError) -> PyErr {
    ModelError::new_err(message(e))
}

fn run_error(e: &fum_engine::run::RunError) -> PyErr {
    match e {
        fum_engine::run::RunError::Model(e) => model_error(e),
        e => FumError::new_err(message(e)),
    }
}

/// A TOML value from a Python value: a dict, list or tuple of dicts, lists, strings, bools,
/// ints and floats (numpy scalars included: they convert through `__index__`/`__float__`).
/// `at` names the value in a type error.
fn toml_value(value: &Bound<'_, PyAny>, at: &str) -> PyResult<toml::Value> {
    if let Ok(dict) = value.cast::<PyDict>() {
        let mut table = toml::Table::new();
        for (key, item) in dict.iter() {
            let key: String = key.extract().map_err(|_| PyTypeError::new_err(format!("{at}: keys must be strings")))?;
            if item.is_none() {
                continue;
            }
            let inner = if at.is_empty() { key.clone() } else { format!("{at}.{key}") };
            table.insert(key, toml_value(&item, &inner)?);
        }
        return Ok(toml::Value::Table(table));
    }
    if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        let items = value.try_iter()?.enumerate().map(|(i, item)| toml_value(&item?, &format!("{at}[{i}]"))).collect::<PyResult<Vec<_>>>()?;
        return Ok(toml::Value::Array(items));
    }
    if value.is_instance_of::<PyBool>() {
        return Ok(toml::Value::Boolean(value.extract()?));
    }
    if value.is_instance_of::<PyString>() {
        return Ok(toml::Value::String(value.extract()?));
    }
    if value.is_instance_of::<PyInt>() || (!value.is_instance_of::<PyFloat>() && value.hasattr("__index__")?) {
        return Ok(toml::Value::Integer(value.extract()?));
    }
    if let Ok(x) = value.extract::<f64>() {
        return Ok(toml::Value::Float(x));
    }
    Err(PyTypeError::new_err(format!("{at}: a model value is a number, string, bool, list or dict, not {}", value.get_type().name()?)))
}

/// The TOML text of a model document (a dict laid out as the model file: `simulation`,
/// `populations`, ...); `None` values are left out, as fields not written.
#[pyfunction]
fn to_toml(document: &Bound<'_, PyDict>) -> PyResult<String> {
    let value = toml_value(document.as_any(), "")?;
    toml::to_string(&value).map_err(|e| PyValueError::new_err(format!("cannot write the model as TOML: {e}")))
}

/// {name: {field: float64 array}} as the engine's values per neuron, by name (the field names
/// the engine checks against the population's or input's kind).
fn neuron_values(given: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, fum_engine::sonata::NeuronValues)>> {
    let mut all = Vec::new();
    for (name, fields) in given.into_iter().flat_map(|d| d.iter()) {
        let mut values = fum_engine::sonata::NeuronValues::default();
        for (field, array) in fields.cast::<PyDict>()?.iter() {
            let array = Some(array.extract::<PyReadonlyArray1<f64>>()?.to_vec()?);
            match field.extract::<String>()?.as_str() {
                "v_init_mv" => values.v_init_mv = array,
                "i_e_pa" => values.i_e_pa = array,
                "rate_hz" => values.rate_hz = array,
                other => return Err(PyValueError::new_err(format!("{other}: only v_init_mv, i_e_pa and rate_hz take a value per neuron"))),
            }
        }
        all.push((name.extract()?, values));
    }
    Ok(all)
}

/// A parsed and validated model (`fum_engine::Model`).
#[pyclass(module = "fum._fum", frozen)]
struct NativeModel {
    model: Model,
}

#[pymethods]
impl NativeModel {
    /// Reads, parses and validates a model file.
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<Self> {
        Model::load(&path).map(|model| NativeModel { model }).map_err(|e| model_error(&e))
    }

    /// Parses and validates model text; `name` names it in messages. `listed` gives the
    /// synapses of its `explicit` projections (`fum.FromList`): {projection name: (pre uint32,
    /// post uint32, weight float32, delay_ms float64)}, population-local ids; `values` the
    /// fields its populations list per neuron: {population name: {"v_init_mv" or "i_e_pa":
    /// float64 array}}; `inputs` the rates its Poisson inputs list per target neuron: {input
    /// name: {"rate_hz": float64 array}}.
    #[staticmethod]
    #[pyo3(signature = (text, name, listed=None, values=None, inputs=None))]
    fn parse(text: &str, name: &str, listed: Option<&Bound<'_, PyDict>>, values: Option<&Bound<'_, PyDict>>, inputs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let mut lists = Vec::new();
        for (projection, columns) in listed.into_iter().flat_map(|d| d.iter()) {
            let projection: String = projection.extract()?;
            let (pre, post, weight, delay_ms): (PyReadonlyArray1<u32>, PyReadonlyArray1<u32>, PyReadonlyArray1<f32>, PyReadonlyArray1<f64>) = columns.extract()?;
            let list = fum_engine::sonata::SynapseList { pre: pre.to_vec()?, post: post.to_vec()?, weight: weight.to_vec()?, delay_ms: delay_ms.to_vec()? };
            lists.push((projection, list));
        }
        let (neurons, rates) = (neuron_values(values)?, neuron_values(inputs)?);
        Model::parse_listed(text, Path::new(name), lists, neurons, rates).map(|model| NativeModel { model }).map_err(|e| model_error(&e))
    }

    /// Names of the projections whose synapses were listed with the model (`fum.FromList`),
    /// which its text cannot hold.
    fn listed(&self) -> Vec<String> {
        let Some(lists) = &self.model.listed else { return Vec::new() };
        self.model.spec.projections.iter().zip(&lists.synapses).filter(|(p, _)| matches!(p.rule, fum_engine::model::ConnectionRule::Explicit(_))).map(|(p, _)| p.name.clone()).collect()
    }

    /// ("population" or "input", its name, field) of every field listed per neuron with the
    /// model, which its text cannot hold.
    fn listed_values(&self) -> Vec<(&'static str, String, String)> {
        let spec = &self.model.spec;
        let populations = spec.populations.iter().flat_map(|p| p.listed.iter().map(|f| ("population", p.name.clone(), f.name().to_string())));
        populations.chain(spec.inputs.iter().flat_map(|i| i.listed.iter().map(|f| ("input", i.name.clone(), f.name().to_string())))).collect()
    }

    /// The model's text.
    #[getter]
    fn source(&self) -> &str {
        &self.model.source
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.model.path.clone()
    }

    #[getter]
    fn dt_ms(&self) -> f64 {
        self.model.spec.simulation.dt_ms
    }

    #[getter]
    fn duration_ms(&self) -> f64 {
        self.model.spec.simulation.duration_ms
    }

    #[getter]
    fn seed(&self) -> u64 {
        self.model.spec.simulation.seed
    }

    /// (name, size) of every population, in id order.
    fn populations(&self) -> Vec<(String, u32)> {
        self.model.spec.populations.iter().map(|p| (p.name.clone(), p.size)).collect()
    }

    /// Names of the projections.
    fn projections(&self) -> Vec<String> {
        self.model.spec.projections.iter().map(|p| p.name.clone()).collect()
    }

    /// Builds and runs the model (`fum run`); see `fum.Model.run`.
    #[pyo3(signature = (*, duration_ms=None, seed=None, backend="cpu", threads=0, shards=0, out=None, overwrite=false, checkpoint_every_ms=None, keep_checkpoints=0, stop_after_ms=None, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        py: Python<'_>,
        duration_ms: Option<f64>,
        seed: Option<u64>,
        backend: &str,
        threads: usize,
        shards: usize,
        out: Option<PathBuf>,
        overwrite: bool,
        checkpoint_every_ms: Option<f64>,
        keep_checkpoints: usize,
        stop_after_ms: Option<f64>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<NativeRun> {
        if checkpoint_every_ms.is_some() && self.model.listed.is_some() {
            return Err(FumError::new_err(
                "checkpoints of a model with listed synapses (fum.FromList) or values per neuron (v_init_mv, i_e_pa, rate_hz arrays) could not be resumed: fum.resume rebuilds the model from its text, which cannot hold them",
            ));
        }
        let options = RunOptions { out, overwrite, threads, shards, duration_ms, seed, backend: backend_choice(backend)?, checkpoint_every_ms, keep_checkpoints, stop_after_ms, ..RunOptions::default() };
        let mut model = self.model.clone();
        options.apply(&mut model).map_err(|e| model_error(&e))?;
        let watch = Watch::new(progress);
        let result = py.detach(|| fum_engine::run::run_keeping(&model, &options, fum_systems::backend_for, None, |p| watch.progress(p)));
        watch.finish(py)?;
        let (report, sim) = result.map_err(|e| run_error(&e))?;
        Ok(NativeRun::new(model, report, sim))
    }

    /// Builds the model and puts it on its backend without running it; see `fum.Model.build`.
    #[pyo3(signature = (*, seed=None, backend="cpu", threads=0, shards=0, progress=None))]
    fn build(&self, py: Python<'_>, seed: Option<u64>, backend: &str, threads: usize, shards: usize, progress: Option<Py<PyAny>>) -> PyResult<NativeSimulation> {
        let options = RunOptions { threads, shards, seed, backend: backend_choice(backend)?, ..RunOptions::default() };
        let mut model = self.model.clone();
        options.apply(&mut model).map_err(|e| model_error(&e))?;
        let watch = Watch::new(progress);
        let started = std::time::Instant::now();
        let result = py.detach(|| fum_engine::run::build(&model, &options, fum_systems::backend_for, |p| watch.progress(p)));
        let build_s = started.elapsed().as_secs_f64();
        watch.finish(py)?;
        let sim = result.map_err(|e| run_error(&e))?;
        Ok(NativeSimulation { model, options, sim: Arc::new(Mutex::new(Some(sim))), build_s: Mutex::new(Some(build_s)) })
    }
}

/// `"cpu"`, `"cuda"` or `"auto"`.
fn backend_choice(name: &str) -> PyResult<BackendChoice> {
    match name {
        "cpu" => Ok(BackendChoice::Cpu),
        "cuda" => Ok(BackendChoice::Cuda),
        "auto" => Ok(BackendChoice::Auto),
        other => Err(PyValueError::new_err(format!("backend must be \"cpu\", \"cuda\" or \"auto\", not {other:?}"))),
    }
}

/// Continues the run in `out` from its newest valid checkpoint (`fum resume`).
#[pyfunction]
#[pyo3(signature = (out, *, threads=0, backend=None, progress=None))]
fn resume(py: Python<'_>, out: PathBuf, threads: usize, backend: Option<&str>, progress: Option<Py<PyAny>>) -> PyResult<NativeRun> {
    let backend = backend.map(backend_choice).transpose()?;
    let watch = Watch::new(progress);
    let result = py.detach(|| fum_engine::run::resume_keeping(&out, threads, backend, fum_systems::backend_for, |p| watch.progress(p)));
    watch.finish(py)?;
    let (report, sim, model) = result.map_err(|e| run_error(&e))?;
    Ok(NativeRun::new(model, report, sim))
}

/// What a running simulation tells Python at each progress report: the callback gets (steps
/// done, last step, None) every 100 steps, and (steps done, 0, what) as the run starts building
/// the network, as each shard is built and as it places it on its backend, `what` the phase in words (`building 12.5k
/// neurons, 15.62M synapses (97.4 MB, 2 shards)`). SIGINT (Ctrl-C), or an exception in the
/// callback, sets the engine's interrupt flag, so the run stops after the step and writes its
/// outputs; then the exception (KeyboardInterrupt) is raised. The run loop does not call back on Python's main
/// thread, where Python's own handler would be seen, so a handler of our own stands beside
/// Python's (signal-hook calls the handler it found, too) while the run lasts.
struct Watch {
    callback: Option<Py<PyAny>>,
    raised: Mutex<Option<PyErr>>,
    interrupt: Arc<std::sync::atomic::AtomicBool>,
    sigint: Option<signal_hook::SigId>,
}

impl Watch {
    fn new(callback: Option<Py<PyAny>>) -> Self {
        let interrupt = interrupt_flag();
        interrupt.store(false, Ordering::Relaxed);
        let sigint = signal_hook::flag::register(signal_hook::consts::SIGINT, interrupt.clone()).ok();
        Watch { callback, raised: Mutex::new(None), interrupt, sigint }
    }

    fn progress(&self, p: &RunProgress) {
        if let Some(callback) = &self.callback {
            Python::attach(|py| {
                let phase = (p.phase != Phase::Simulating).then(|| p.phase.to_string());
                if let Err(e) = callback.call1(py, (p.done, p.end_step, phase)) {
                    self.interrupt.store(true, Ordering::Relaxed);
                    self.raised.lock().expect("not poisoned").get_or_insert(e);
                }
            });
        }
    }

    /// The run's end: our handler goes, and an exception the run stopped for is raised (a
    /// callback's, or KeyboardInterrupt from Python's handler, which saw the signal too).
    fn finish(mut self, py: Python<'_>) -> PyResult<()> {
        if let Some(id) = self.sigint.take() {
            signal_hook::low_level::unregister(id);
        }
        self.interrupt.store(false, Ordering::Relaxed);
        match self.raised.lock().expect("not poisoned").take() {
            Some(e) => Err(e),
            None => py.check_signals(),
        }
    }
}

/// A simulation a `NativeRun` reads and a `NativeSimulation` runs on; `None` once a run of it
/// failed. A run holds the lock with the GIL released, so readers holding the GIL only try it.
type Shared = Arc<Mutex<Option<Simulation>>>;

/// The simulation for reading, unless another thread is running it.
fn try_read(sim: &Shared) -> PyResult<std::sync::MutexGuard<'_, Option<Simulation>>> {
    let guard = sim.try_lock().map_err(|_| FumError::new_err("the simulation is running in another thread"))?;
    if guard.is_none() {
        return Err(FumError::new_err("the simulation ended with an error in a later run: its state is gone"));
    }
    Ok(guard)
}

/// A finished run: its report, what it recorded and the network as it ended. The recording
/// stays in the simulation, which a `NativeSimulation` may run on; the run reads the part of it
/// recorded up to its end.
#[pyclass(module = "fum._fum", frozen)]
struct NativeRun {
    /// The model run (with the duration it ran to).
    model: Model,
    report: RunReport,
    sim: Shared,
    /// (name, recorded spikes) of every recorded population and (name, variable, samples) of
    /// every probe, at the run's end.
    spikes: Vec<(String, usize)>,
    probes: Vec<(String, String, usize)>,
}

/// (name, recorded spikes) of every recorded population and (name, variable, samples) of every
/// probe in `sim` now.
type Recorded = (Vec<(String, usize)>, Vec<(String, String, usize)>);

fn recorded(sim: &Simulation) -> Recorded {
    let recorder = sim.world.resource::<Recorder>();
    let spikes = recorder.spikes.iter().map(|s| (s.name.clone(), s.steps.spilled as usize + s.steps.pending.len())).collect();
    let probes = recorder.probes.iter().map(|p| (p.name.clone(), format!("{:?}", p.variable).to_lowercase(), p.times_ms.spilled as usize + p.times_ms.pending.len())).collect();
    (spikes, probes)
}

impl NativeRun {
    /// The run that ended with `sim`, which it alone holds.
    fn new(model: Model, report: RunReport, sim: Simulation) -> NativeRun {
        let (spikes, probes) = recorded(&sim);
        NativeRun { model, report, sim: Arc::new(Mutex::new(Some(sim))), spikes, probes }
    }
}

#[pymethods]
impl NativeRun {
    /// run.json's content, as JSON text.
    fn report_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.report).map_err(|e| FumError::new_err(e.to_string()))
    }

    /// The model run, with the duration it ran to (after `fum.resume`, the checkpoint's, its
    /// overrides applied).
    fn model(&self) -> NativeModel {
        NativeModel { model: self.model.clone() }
    }

    /// Names of the populations whose spikes were recorded.
    fn spike_populations(&self) -> Vec<String> {
        self.spikes.iter().map(|(name, _)| name.clone()).collect()
    }

    /// The spikes of recorded population `index` up to this run's end: (node_ids int64,
    /// timestamps_ms float64), sorted by time, the values spikes.h5 holds.
    #[allow(clippy::type_complexity)]
    fn spikes<'py>(&self, py: Python<'py>, index: usize) -> PyResult<(Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<f64>>)> {
        let (mut times, ids) = {
            let guard = try_read(&self.sim)?;
            let recorder = guard.as_ref().expect("checked").world.resource::<Recorder>();
            recorder.spike_train(index).map_err(|e| FumError::new_err(message(&e)))?
        };
        let recorded = self.spikes[index].1;
        times.truncate(recorded);
        let ids = ids.into_iter().take(recorded).map(|id| id as i64).collect();
        Ok((PyArray1::from_vec(py, ids), PyArray1::from_vec(py, times)))
    }

    /// (name, variable) of every probe.
    fn probe_names(&self) -> Vec<(String, String)> {
        self.probes.iter().map(|(name, variable, _)| (name.clone(), variable.clone())).collect()
    }

    /// The samples of probe `index` up to this run's end: (time_ms, values samples x sites,
    /// labels): labels are neuron ids (sites) or [pre, post] pairs (sites x 2) for weights,
    /// int64.
    #[allow(clippy::type_complexity)]
    fn probe<'py>(&self, py: Python<'py>, index: usize) -> PyResult<(Bound<'py, PyArray1<f64>>, Bound<'py, PyArray2<f32>>, Bound<'py, PyAny>)> {
        let (mut times, mut values, sites, weight, labels) = {
            let guard = try_read(&self.sim)?;
            let recorder = guard.as_ref().expect("checked").world.resource::<Recorder>();
            let probe = &recorder.probes[index];
            let (times, values) = recorder.probe_samples(index).map_err(|e| FumError::new_err(message(&e)))?;
            (times, values, probe.sites.len(), probe.variable == fum_engine::model::ProbeVariable::Weight, probe.labels.clone())
        };
        let samples = self.probes[index].2;
        times.truncate(samples);
        values.truncate(samples * sites);
        let values = PyArray1::from_vec(py, values).reshape([samples, sites])?;
        let labels = if weight {
            PyArray1::from_vec(py, labels.iter().flatten().map(|&id| i64::from(id)).collect::<Vec<i64>>()).reshape([sites, 2])?.into_any()
        } else {
            PyArray1::from_vec(py, labels.iter().map(|l| i64::from(l[0])).collect::<Vec<i64>>()).into_any()
        };
        Ok((PyArray1::from_vec(py, times), values, labels))
    }

    /// Every synapse of projection `name` as the run left it: (pre, post, weight), pre and post
    /// population-local ids (int64), in order of target shard, then source, then place in the
    /// row. A plastic weight lacks the potentiation still pending since its source's last spike
    /// (docs/model-format.md). Refused once the simulation has run on past this run's end.
    #[allow(clippy::type_complexity)]
    fn weights<'py>(&self, py: Python<'py>, name: &str) -> PyResult<(Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<f32>>)> {
        let model = &self.model;
        let projection = model.projection_index(name).ok_or_else(|| FumError::new_err(format!("no projection named \"{name}\"")))?;
        let mut guard = try_read(&self.sim)?;
        let sim = guard.as_mut().expect("checked");
        let now = sim.world.resource::<Clock>().step;
        if now != self.report.end_step {
            let dt = model.spec.simulation.dt_ms;
            return Err(FumError::new_err(format!(
                "this run ended at {} ms and its simulation has run on to {} ms: read the weights from its latest run",
                fum_engine::recording::step_time_ms(self.report.end_step, dt),
                fum_engine::recording::step_time_ms(now, dt)
            )));
        }
        let target = &model.spec.projections[projection].target;
        let target_first = sim.world.resource::<fum_engine::components::Populations>().0.iter().find(|p| &p.name == target).expect("a validated model's population").first;
        let (mut pre, mut post, mut weight) = (Vec::new(), Vec::new(), Vec::new());
        let mut shards: Vec<(&Shard, &SynapseBlocks)> = sim.world.query::<(&Shard, &SynapseBlocks)>().iter(&sim.world).collect();
        shards.sort_by_key(|(shard, _)| shard.index);
        for (shard, blocks) in shards {
            for block in blocks.0.iter().filter(|b| b.projection == projection) {
                if block.pages.is_some() {
                    return Err(FumError::new_err(format!("projection \"{name}\": its synapses were paged to disk (host_memory); weights() reads synapses in memory only")));
                }
                let weights = block.weight.to_f32();
                for row in 0..block.source_size as usize {
                    let synapses = block.row_ptr[row] as usize..block.row_ptr[row + 1] as usize;
                    pre.extend(std::iter::repeat_n(row as i64, synapses.len()));
                    post.extend(block.target.resident_to_vec(synapses.clone()).into_iter().map(|t| i64::from(shard.neurons.start + t - target_first)));
                    weight.extend_from_slice(&weights[synapses]);
                }
            }
        }
        drop(guard);
        // By source, then target (a stable sort: a pair's multapses keep the order they were
        // drawn in), so that the listing does not depend on how the network was cut into shards.
        let mut order: Vec<usize> = (0..pre.len()).collect();
        order.sort_by_key(|&k| (pre[k], post[k]));
        let (pre, post, weight) = (order.iter().map(|&k| pre[k]).collect(), order.iter().map(|&k| post[k]).collect(), order.iter().map(|&k| weight[k]).collect());
        Ok((PyArray1::from_vec(py, pre), PyArray1::from_vec(py, post), PyArray1::from_vec(py, weight)))
    }
}

/// A network built once and run in several calls (`fum.Model.build`): each `run` steps on from
/// where the last one stopped (`fum_engine::run::run_built`), so that runs of 100 ms and 100 ms
/// give the spikes of one run of 200 ms, bit for bit; what is recorded accumulates.
#[pyclass(module = "fum._fum", frozen)]
struct NativeSimulation {
    /// The model built (its duration is set anew for every run).
    model: Model,
    options: RunOptions,
    sim: Shared,
    /// The build's wall time, for the first run's report (`timing.build_s`; later runs' is 0).
    build_s: Mutex<Option<f64>>,
}

#[pymethods]
impl NativeSimulation {
    /// Steps on for `duration_ms` (rounded to whole steps) with the GIL released; the run's
    /// results from step 0 on. `progress` as for `NativeModel.run`.
    #[pyo3(signature = (duration_ms, *, progress=None))]
    fn run(&self, py: Python<'_>, duration_ms: f64, progress: Option<Py<PyAny>>) -> PyResult<NativeRun> {
        let dt = self.model.spec.simulation.dt_ms;
        if !(duration_ms.is_finite() && duration_ms > 0.0) {
            return Err(PyValueError::new_err(format!("duration_ms must be positive and finite (got {duration_ms})")));
        }
        let steps = ((duration_ms / dt).round() as u64).max(1);
        let watch = Watch::new(progress);
        let result = py.detach(|| {
            let mut guard = self.sim.lock().expect("not poisoned");
            let sim = guard.take().ok_or_else(|| FumError::new_err("the simulation ended with an error in an earlier run: build it again"))?;
            let mut model = self.model.clone();
            model.spec.simulation.duration_ms = (sim.world.resource::<Clock>().step + steps) as f64 * dt;
            if let Err(e) = model.revalidate() {
                *guard = Some(sim);
                return Err(model_error(&e));
            }
            let (report, sim) = fum_engine::run::run_built(&model, &self.options, sim, |p| watch.progress(p)).map_err(|e| run_error(&e))?;
            let (spikes, probes) = recorded(&sim);
            *guard = Some(sim);
            Ok(NativeRun { model, report, sim: self.sim.clone(), spikes, probes })
        });
        watch.finish(py)?;
        let mut run = result?;
        // The build's time is the first run's; later runs were built long before.
        let build_s = self.build_s.lock().expect("not poisoned").take().unwrap_or(0.0);
        run.report.timing.total_s += build_s - run.report.timing.build_s;
        run.report.timing.build_s = build_s;
        Ok(run)
    }

    /// Steps done so far.
    fn steps(&self) -> PyResult<u64> {
        let guard = try_read(&self.sim)?;
        Ok(guard.as_ref().expect("checked").world.resource::<Clock>().step)
    }

    #[getter]
    fn dt_ms(&self) -> f64 {
        self.model.spec.simulation.dt_ms
    }

    /// The model built.
    fn model(&self) -> NativeModel {
        NativeModel { model: self.model.clone() }
    }
}

#[pymodule]
fn _fum(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeModel>()?;
    m.add_class::<NativeRun>()?;
    m.add_class::<NativeSimulation>()?;
    m.add_function(wrap_pyfunction!(to_toml, m)?)?;
    m.add_function(wrap_pyfunction!(resume, m)?)?;
    m.add("FumError", m.py().get_type::<FumError>())?;
    m.add("ModelError", m.py().get_type::<ModelError>())?;
    Ok(())
}
