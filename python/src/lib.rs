//! `fum._fum`: the engine's public API for Python. The `fum` package (fum/__init__.py) builds
//! models and wraps these classes; this module parses models with the engine's own parser,
//! runs them with `fum_engine::run` (the GIL released) and hands recorded spikes, probes and
//! learned weights to Python as numpy arrays that own the vectors they were computed into.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use fum_engine::backend::BackendChoice;
use fum_engine::components::{Shard, SynapseBlocks};
use fum_engine::recording::Recorder;
use fum_engine::report::RunReport;
use fum_engine::run::{RunOptions, RunProgress, interrupt_flag};
use fum_engine::{Model, Simulation};
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

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

    /// Parses and validates model text; `name` names it in messages.
    #[staticmethod]
    fn parse(text: &str, name: &str) -> PyResult<Self> {
        Model::parse(text, Path::new(name)).map(|model| NativeModel { model }).map_err(|e| model_error(&e))
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
        let options = RunOptions { out, overwrite, threads, shards, duration_ms, seed, backend: backend_choice(backend)?, checkpoint_every_ms, keep_checkpoints, stop_after_ms, ..RunOptions::default() };
        let mut model = self.model.clone();
        options.apply(&mut model).map_err(|e| model_error(&e))?;
        let watch = Watch::new(progress);
        let result = py.detach(|| fum_engine::run::run_keeping(&model, &options, fum_systems::backend_for, None, |p| watch.progress(p)));
        NativeRun::finish(py, Some(model), result.map_err(|e| run_error(&e)), watch)
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
    let result = result.map_err(|e| run_error(&e));
    // The model the run resumed with is in its checkpoints (every one of the run holds it).
    let model = result.as_ref().ok().and_then(|_| fum_engine::checkpoint::list(&out.join("checkpoints")).into_iter().find_map(|path| {
        let text = fum_engine::checkpoint::Checkpoint::open(&path).and_then(|c| c.model_text()).ok()?;
        Model::parse(&text, Path::new("model.toml")).ok()
    }));
    NativeRun::finish(py, model, result, watch)
}

/// What a running simulation tells Python at each progress report (every 100 steps): the
/// callback gets (steps done, last step). SIGINT (Ctrl-C), or an exception in the callback, sets
/// the engine's interrupt flag, so the run stops after the step and writes its outputs; then the
/// exception (KeyboardInterrupt) is raised. The run loop does not call back on Python's main
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
                if let Err(e) = callback.call1(py, (p.done, p.end_step)) {
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

/// A finished run: its report, what it recorded and the network as it ended.
#[pyclass(module = "fum._fum", frozen)]
struct NativeRun {
    /// The model run (none where a resumed run's checkpoints could not be read again).
    model: Option<Model>,
    report: RunReport,
    recorder: Recorder,
    /// For `weights`: the synapses as the run left them.
    sim: Mutex<Simulation>,
}

impl NativeRun {
    fn finish(py: Python<'_>, model: Option<Model>, result: PyResult<(RunReport, Simulation)>, watch: Watch) -> PyResult<NativeRun> {
        watch.finish(py)?;
        let (report, mut sim) = result?;
        let recorder = sim.world.remove_resource::<Recorder>().unwrap_or_default();
        Ok(NativeRun { model, report, recorder, sim: Mutex::new(sim) })
    }
}

#[pymethods]
impl NativeRun {
    /// run.json's content, as JSON text.
    fn report_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.report).map_err(|e| FumError::new_err(e.to_string()))
    }

    /// Names of the populations whose spikes were recorded.
    fn spike_populations(&self) -> Vec<String> {
        self.recorder.spikes.iter().map(|s| s.name.clone()).collect()
    }

    /// The spikes of recorded population `index`: (node_ids uint64, timestamps_ms float64),
    /// sorted by time, as spikes.h5 holds them.
    #[allow(clippy::type_complexity)]
    fn spikes<'py>(&self, py: Python<'py>, index: usize) -> PyResult<(Bound<'py, PyArray1<u64>>, Bound<'py, PyArray1<f64>>)> {
        let (times, ids) = self.recorder.spike_train(index).map_err(|e| FumError::new_err(message(&e)))?;
        Ok((PyArray1::from_vec(py, ids), PyArray1::from_vec(py, times)))
    }

    /// (name, variable) of every probe.
    fn probe_names(&self) -> Vec<(String, String)> {
        self.recorder.probes.iter().map(|p| (p.name.clone(), format!("{:?}", p.variable).to_lowercase())).collect()
    }

    /// The samples of probe `index`: (time_ms, values samples x sites, labels): labels are
    /// neuron ids (sites) or [pre, post] pairs (sites x 2) for weights.
    #[allow(clippy::type_complexity)]
    fn probe<'py>(&self, py: Python<'py>, index: usize) -> PyResult<(Bound<'py, PyArray1<f64>>, Bound<'py, PyArray2<f32>>, Bound<'py, PyAny>)> {
        let probe = &self.recorder.probes[index];
        let (times, values) = self.recorder.probe_samples(index).map_err(|e| FumError::new_err(message(&e)))?;
        let sites = probe.sites.len();
        let samples = values.len().checked_div(sites).unwrap_or(0);
        let values = PyArray1::from_vec(py, values).reshape([samples, sites])?;
        let labels = if probe.variable == fum_engine::model::ProbeVariable::Weight {
            PyArray1::from_vec(py, probe.labels.iter().flatten().copied().collect::<Vec<u32>>()).reshape([sites, 2])?.into_any()
        } else {
            PyArray1::from_vec(py, probe.labels.iter().map(|l| u64::from(l[0])).collect::<Vec<u64>>()).into_any()
        };
        Ok((PyArray1::from_vec(py, times), values, labels))
    }

    /// Every synapse of projection `name` as the run left it: (pre, post, weight), pre and post
    /// population-local ids, in order of target shard, then source, then place in the row.
    /// A plastic weight lacks the potentiation still pending since its source's last spike
    /// (docs/model-format.md).
    #[allow(clippy::type_complexity)]
    fn weights<'py>(&self, py: Python<'py>, name: &str) -> PyResult<(Bound<'py, PyArray1<u32>>, Bound<'py, PyArray1<u32>>, Bound<'py, PyArray1<f32>>)> {
        let model = self.model.as_ref().ok_or_else(|| FumError::new_err("the model of this run could not be read back from its checkpoints"))?;
        let projection = model.projection_index(name).ok_or_else(|| FumError::new_err(format!("no projection named \"{name}\"")))?;
        let mut sim = self.sim.lock().expect("not poisoned");
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
                    pre.extend(std::iter::repeat_n(row as u32, synapses.len()));
                    post.extend(block.target[synapses.clone()].iter().map(|&t| shard.neurons.start + u32::from(t) - target_first));
                    weight.extend_from_slice(&weights[synapses]);
                }
            }
        }
        drop(sim);
        Ok((PyArray1::from_vec(py, pre), PyArray1::from_vec(py, post), PyArray1::from_vec(py, weight)))
    }
}

#[pymodule]
fn _fum(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeModel>()?;
    m.add_class::<NativeRun>()?;
    m.add_function(wrap_pyfunction!(to_toml, m)?)?;
    m.add_function(wrap_pyfunction!(resume, m)?)?;
    m.add("FumError", m.py().get_type::<FumError>())?;
    m.add("ModelError", m.py().get_type::<ModelError>())?;
    Ok(())
}
