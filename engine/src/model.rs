//! Model files: the TOML description of a network (populations, projections, plasticity,
//! inputs, recording, simulation settings), parsed with serde and validated.
//!
//! Every mistake is reported as `file:line:column: field: message`. Syntax and type errors come
//! from the TOML parser with their span; semantic checks (a negative time constant, a delay
//! shorter than dt, a population that does not exist) name a field path such as
//! `projections[2].delay_ms`, which is mapped back to its line through the spanned document.
//! The format is described field by field in `docs/model-format.md`.

use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use fum_kernels::delivery::{MAX_DELAY_STEPS, NARROW_SHARD_NEURONS};

/// A field path of segments (`Seg`), e.g. `path!("projections", 2, "delay_ms")`.
macro_rules! path {
    ($($seg:expr),* $(,)?) => { vec![$($crate::model::Seg::from($seg)),*] };
}

/// A model file that parsed and passed validation.
#[derive(Clone, Debug)]
pub struct Model {
    pub spec: ModelSpec,
    /// Where it was read from, for messages and run metadata.
    pub path: PathBuf,
    /// The file's text, kept for run metadata and checkpoints.
    pub source: String,
    /// The SONATA circuit its `[sonata]` section imports: where each population and projection
    /// came from, and the synapses of `ConnectionRule::Explicit` projections.
    pub circuit: Option<std::sync::Arc<crate::sonata::Circuit>>,
    /// What a model given with lists beside its text carries ([`Model::parse_listed`]: a model
    /// built in Python with `fum.FromList` or arrays of values per neuron).
    pub listed: Option<std::sync::Arc<Listed>>,
}

/// The lists a model's text cannot hold, given beside it ([`Model::parse_listed`]).
#[derive(Clone, Debug, Default)]
pub struct Listed {
    /// The synapses of the `ConnectionRule::Explicit` projections, one list per projection
    /// (empty for the others).
    pub synapses: Vec<crate::sonata::SynapseList>,
    /// The values of the fields each population lists per neuron (its `listed`), one entry per
    /// population (empty for the others).
    pub neurons: Vec<crate::sonata::NeuronValues>,
    /// The rates each Poisson input lists per target neuron (its `listed`), one entry per input
    /// (empty for the others).
    pub inputs: Vec<crate::sonata::NeuronValues>,
}

/// Errors in a model file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The reason is part of the message (not a `source`, which would print it twice).
    #[error("{path}: cannot read the model file: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{file}:{line}:{column}: {field}{message}")]
    Invalid { file: String, line: usize, column: usize, field: String, message: String },
    /// A mistake in a SONATA circuit's files or in a spikes file: the file, where in it (a
    /// population and type id, a dataset, a line) and the field.
    #[error("{file}: {place}{}{message}", if place.is_empty() { "" } else { ": " })]
    Sonata { file: String, place: String, message: String },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub simulation: SimulationSpec,
    #[serde(default)]
    pub populations: Vec<PopulationSpec>,
    #[serde(default)]
    pub projections: Vec<ProjectionSpec>,
    #[serde(default)]
    pub plasticity: Vec<PlasticitySpec>,
    #[serde(default)]
    pub inputs: Vec<InputSpec>,
    #[serde(default)]
    pub recording: RecordingSpec,
    /// Structural plasticity: pruning and regrowth while running (see `crate::structural`).
    #[serde(default)]
    pub structural: Vec<StructuralSpec>,
    /// Populations and projections read from a SONATA circuit (see `crate::sonata`).
    pub sonata: Option<SonataSpec>,
}

/// A `[sonata]` section: the circuit whose nodes and edges are the model's populations and
/// projections. Paths are relative to the model file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SonataSpec {
    pub circuit_config: PathBuf,
    /// Read for its `inputs` (spike files into the circuit's virtual nodes); `fum run
    /// --sonata` takes `run.dt` and `run.tstop` from it into `[simulation]`.
    pub simulation_config: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulationSpec {
    #[serde(default = "default_dt")]
    pub dt_ms: f64,
    pub duration_ms: f64,
    #[serde(default)]
    pub seed: u64,
    /// Worker threads; 0 or absent: one per core.
    #[serde(default)]
    pub threads: usize,
    /// Shards; 0 or absent: one per thread and at least one per 65,536 neurons
    /// (`crate::build::default_shards`).
    #[serde(default)]
    pub shards: usize,
    /// How synaptic weights are stored.
    #[serde(default)]
    pub weights: WeightPrecision,
}

/// How synaptic weights are stored (`simulation.weights`). Arithmetic is `f32` either way;
/// `f16` rounds a weight (to nearest, ties to even) each time it is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightPrecision {
    #[default]
    F32,
    F16,
}

impl WeightPrecision {
    /// The name used in model files and checkpoints.
    pub fn name(self) -> &'static str {
        match self {
            WeightPrecision::F32 => "f32",
            WeightPrecision::F16 => "f16",
        }
    }
}

fn default_dt() -> f64 {
    0.1
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NeuronModel {
    /// Current-based exponential synapses, exact integration (NEST `iaf_psc_exp`).
    LifCuba,
    /// Conductance-based exponential synapses, exponential Euler (Brian2's COBA).
    LifCoba,
    /// Current-based alpha-shaped synapses, exact integration (NEST `iaf_psc_alpha`).
    LifPscAlpha,
    /// No membrane: fires at listed times (NEST's `spike_generator`, SONATA's `virtual` nodes;
    /// see `crate::spike_trains`).
    SpikeSource,
}

impl NeuronModel {
    /// The name used in model files.
    pub fn name(self) -> &'static str {
        match self {
            NeuronModel::LifCuba => "lif_cuba",
            NeuronModel::LifCoba => "lif_coba",
            NeuronModel::LifPscAlpha => "lif_psc_alpha",
            NeuronModel::SpikeSource => "spike_source",
        }
    }

    /// Whether synapses are currents (pA), not conductances.
    pub fn current_based(self) -> bool {
        self != NeuronModel::LifCoba
    }
}

/// How `lif_coba` integrates its membrane over a step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Integrator {
    /// Exact for the conductances frozen over the step (Brian2's `exponential_euler`).
    #[default]
    ExponentialEuler,
    /// Forward Euler (Brian2's `euler`, the integrator of its COBA reference script): no
    /// exponential per neuron and step, less accurate.
    Euler,
}

/// A population of identical neurons. Defaults are NEST's `iaf_psc_exp` / `iaf_cond_exp`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopulationSpec {
    pub name: String,
    pub size: u32,
    pub model: NeuronModel,
    #[serde(default = "d::tau_m")]
    pub tau_m_ms: f64,
    #[serde(default = "d::c_m")]
    pub c_m_pf: f64,
    #[serde(default = "d::e_l")]
    pub e_l_mv: f64,
    #[serde(default = "d::v_th")]
    pub v_th_mv: f64,
    #[serde(default = "d::e_l")]
    pub v_reset_mv: f64,
    #[serde(default = "d::t_ref")]
    pub t_ref_ms: f64,
    #[serde(default = "d::tau_syn")]
    pub tau_syn_ex_ms: f64,
    #[serde(default = "d::tau_syn")]
    pub tau_syn_in_ms: f64,
    /// Constant bias current, pA: one for all neurons, or drawn per neuron (keyed by the
    /// population and neuron, like `v_init_mv`).
    #[serde(default = "d::i_e")]
    pub i_e_pa: Distribution,
    /// Reversal potentials of `lif_coba` (mV).
    pub e_ex_mv: Option<f64>,
    pub e_in_mv: Option<f64>,
    /// The membrane integrator of `lif_coba` (default exponential Euler).
    pub integrator: Option<Integrator>,
    /// Initial membrane potential; default: the resting potential.
    pub v_init_mv: Option<Distribution>,
    /// Fields whose values are given per neuron beside the text (from Python), which then
    /// become the range the values span, as a listed projection's `weight` does. The text
    /// alone is refused.
    #[serde(default)]
    pub listed: Vec<ListedField>,
    /// Initial synaptic variables (pA for `lif_cuba` and `lif_psc_alpha`, nS for `lif_coba`);
    /// default 0.
    pub syn_ex_init: Option<Distribution>,
    pub syn_in_init: Option<Distribution>,
    /// `spike_source`: a spikes file (SONATA HDF5 `/spikes/<population>/node_ids` and
    /// `timestamps`, or CSV), relative to the model file; its node ids are this population's
    /// neurons.
    pub spikes: Option<PathBuf>,
    /// `spike_source`: the population of `spikes` to read (default: the file's only one).
    pub spikes_population: Option<String>,
    /// `spike_source`: the spike times of each neuron, ms (one list per neuron).
    pub spike_times_ms: Option<Vec<Vec<f64>>>,
    /// `spike_source`: the spikes listed by `spikes` or `spike_times_ms`, or by a SONATA
    /// simulation config's inputs; read when the model is loaded.
    #[serde(skip)]
    pub trains: Option<std::sync::Arc<crate::spike_trains::SpikeTrains>>,
}

/// A field that may be given per neuron: a population's (`listed = ["v_init_mv", "i_e_pa"]`)
/// or a Poisson input's, per target neuron (`listed = ["rate_hz"]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum ListedField {
    #[serde(rename = "v_init_mv")]
    VInitMv,
    #[serde(rename = "i_e_pa")]
    IEPa,
    #[serde(rename = "rate_hz")]
    RateHz,
}

impl ListedField {
    pub const ALL: [ListedField; 3] = [ListedField::VInitMv, ListedField::IEPa, ListedField::RateHz];

    /// Whether the field is a Poisson input's (else a population's).
    pub fn of_input(self) -> bool {
        self == ListedField::RateHz
    }

    /// The field's name in model files.
    pub fn name(self) -> &'static str {
        match self {
            ListedField::VInitMv => "v_init_mv",
            ListedField::IEPa => "i_e_pa",
            ListedField::RateHz => "rate_hz",
        }
    }

    /// The values of this field in `values`.
    pub fn values(self, values: &crate::sonata::NeuronValues) -> Option<&[f64]> {
        match self {
            ListedField::VInitMv => values.v_init_mv.as_deref(),
            ListedField::IEPa => values.i_e_pa.as_deref(),
            ListedField::RateHz => values.rate_hz.as_deref(),
        }
    }

    /// Why `value` cannot be this field's (membrane values are stored as f32; rates as f64
    /// means, which must not be negative).
    fn refuses(self, value: f64) -> Option<&'static str> {
        match self {
            ListedField::VInitMv | ListedField::IEPa => (!(value.is_finite() && value.abs() <= F32_MAX)).then_some("must be a finite 32-bit float"),
            ListedField::RateHz => (!(value.is_finite() && value >= 0.0)).then_some("must be a finite rate, not negative"),
        }
    }
}

mod d {
    pub fn tau_m() -> f64 {
        10.0
    }
    pub fn c_m() -> f64 {
        250.0
    }
    pub fn e_l() -> f64 {
        -70.0
    }
    pub fn v_th() -> f64 {
        -55.0
    }
    pub fn t_ref() -> f64 {
        2.0
    }
    pub fn i_e() -> super::Distribution {
        super::Distribution::Constant(0.0)
    }
    pub fn tau_syn() -> f64 {
        2.0
    }
}

impl PopulationSpec {
    pub fn reversal_ex_mv(&self) -> f64 {
        self.e_ex_mv.unwrap_or(0.0)
    }
    pub fn reversal_in_mv(&self) -> f64 {
        self.e_in_mv.unwrap_or(-85.0)
    }
    pub fn lif(&self) -> fum_kernels::lif::LifParameters {
        fum_kernels::lif::LifParameters {
            tau_m_ms: self.tau_m_ms,
            c_m_pf: self.c_m_pf,
            e_l_mv: self.e_l_mv,
            v_th_mv: self.v_th_mv,
            v_reset_mv: self.v_reset_mv,
            t_ref_ms: self.t_ref_ms,
            tau_syn_ex_ms: self.tau_syn_ex_ms,
            tau_syn_in_ms: self.tau_syn_in_ms,
        }
    }
}

/// A value that is constant or drawn per neuron / synapse.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(untagged, expecting = "a number, { uniform = [low, high] }, { normal = [mean, std] } or { lognormal = [mu, sigma] }")]
pub enum Distribution {
    Constant(f64),
    Uniform {
        uniform: [f64; 2],
    },
    Normal {
        normal: [f64; 2],
    },
    /// exp of a normal draw of mean `mu` and standard deviation `sigma` (NumPy's and NEST's
    /// parameters): median e^mu, mean e^(mu + sigma^2 / 2).
    LogNormal {
        lognormal: [f64; 2],
    },
}

impl Distribution {
    /// One draw; `stream` supplies the randomness (untouched for a constant).
    pub fn sample(&self, stream: &mut fum_kernels::rng::Stream) -> f64 {
        match *self {
            Distribution::Constant(v) => v,
            Distribution::Uniform { uniform: [lo, hi] } => lo + (hi - lo) * stream.uniform(),
            Distribution::Normal { normal: [mean, std] } => mean + std * stream.normal(),
            Distribution::LogNormal { lognormal: [mu, sigma] } => (mu + sigma * stream.normal()).exp(),
        }
    }

    /// Whether draws are unbounded (normal, lognormal): where a range is required they are
    /// clipped to it instead.
    pub fn unbounded(&self) -> bool {
        matches!(self, Distribution::Normal { .. } | Distribution::LogNormal { .. })
    }

    /// The smallest and largest value a draw can take.
    pub fn range(&self) -> (f64, f64) {
        match *self {
            Distribution::Constant(v) => (v, v),
            Distribution::Uniform { uniform: [lo, hi] } => (lo, hi),
            Distribution::Normal { .. } => (f64::NEG_INFINITY, f64::INFINITY),
            Distribution::LogNormal { .. } => (0.0, f64::INFINITY),
        }
    }

    pub fn mean(&self) -> f64 {
        match *self {
            Distribution::Constant(v) => v,
            Distribution::Uniform { uniform: [lo, hi] } => 0.5 * (lo + hi),
            Distribution::Normal { normal: [mean, _] } => mean,
            Distribution::LogNormal { lognormal: [mu, sigma] } => (mu + 0.5 * sigma * sigma).exp(),
        }
    }
}

/// How a projection picks its synapses.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionRule {
    /// Each (pre, post) pair independently with this probability.
    FixedProbability(f64),
    /// Each postsynaptic neuron receives this many synapses from random sources.
    FixedIndegree(u32),
    /// Each presynaptic neuron sends this many synapses to random targets.
    FixedOutdegree(u32),
    /// This many synapses in all, each from a source and onto a target drawn uniformly (NEST's
    /// `fixed_total_number`): in-degrees are multinomial around total / targets.
    FixedTotalNumber(u64),
    /// Neuron i to neuron i (populations of equal size).
    OneToOne,
    /// Every pair.
    AllToAll,
    /// Synapses listed one by one: this many, the SONATA edges of `Model::circuit` or the lists
    /// of `Model::listed`. A model file says `rule = { explicit = N }` only with its lists given
    /// beside it ([`Model::parse_listed`]); the text alone is refused.
    Explicit(u64),
}

impl ConnectionRule {
    /// Synapses the rule draws between `sources` and `targets` neurons: the mean for
    /// `fixed_probability`, and counting the autapses that `allow_autapses = false` leaves out.
    pub fn expected_synapses(self, sources: u32, targets: u32) -> f64 {
        let (src, tgt) = (f64::from(sources), f64::from(targets));
        match self {
            ConnectionRule::FixedProbability(q) => q * src * tgt,
            ConnectionRule::FixedIndegree(k) => f64::from(k) * tgt,
            ConnectionRule::FixedOutdegree(k) => f64::from(k) * src,
            ConnectionRule::FixedTotalNumber(n) => n as f64,
            ConnectionRule::OneToOne => src,
            ConnectionRule::AllToAll => src * tgt,
            ConnectionRule::Explicit(n) => n as f64,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Receptor {
    #[default]
    Excitatory,
    Inhibitory,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionSpec {
    pub name: String,
    pub source: String,
    pub target: String,
    pub rule: ConnectionRule,
    #[serde(default)]
    pub receptor: Receptor,
    /// Weight magnitude: pA for `lif_cuba` targets, nS for `lif_coba`.
    pub weight: Distribution,
    /// Axonal delay, rounded to whole steps; default one step.
    pub delay_ms: Option<Distribution>,
    /// Name of a `[[plasticity]]` rule, for plastic synapses.
    pub plasticity: Option<String>,
    #[serde(default)]
    pub allow_autapses: bool,
    #[serde(default = "yes")]
    pub allow_multapses: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightDependence {
    #[default]
    Additive,
    Multiplicative,
    /// NEST's `stdp_pl_synapse_hom`: `lambda`, `alpha`, `mu` instead of `a_plus`, `a_minus`.
    PowerLaw,
}

impl WeightDependence {
    /// The name used in model files.
    pub fn name(self) -> &'static str {
        match self {
            WeightDependence::Additive => "additive",
            WeightDependence::Multiplicative => "multiplicative",
            WeightDependence::PowerLaw => "power_law",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pairing {
    #[default]
    AllToAll,
    Nearest,
}

/// A `[[structural]]` section: which synapses of a projection are pruned and regrown, and when.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructuralSpec {
    pub projection: String,
    /// A plan is made from the state every `every_ms` of biological time.
    pub every_ms: f64,
    /// The plan is applied this long after its snapshot (default: 10 ms, or `every_ms` if
    /// shorter); meanwhile it is computed beside the simulation.
    pub commit_after_ms: Option<f64>,
    pub prune: Prune,
    pub regrow: Option<RegrowSpec>,
}

impl StructuralSpec {
    pub fn commit_after_ms(&self) -> f64 {
        self.commit_after_ms.unwrap_or(self.every_ms.min(10.0))
    }
}

/// Which synapses go, decided per target neuron (see `crate::structural::plan_block`).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prune {
    /// Every synapse whose stored weight magnitude is below this.
    WeightBelow(f64),
    /// This fraction (rounded) of each target's synapses, lowest priority = |w| x co-activity first.
    LowestPriorityFraction(f64),
    /// All but this many strongest synapses of each target.
    KeepStrongest(u32),
}

/// New random synapses toward an in-degree.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegrowSpec {
    pub to_indegree: u32,
    /// Default: the projection's weight.
    pub weight: Option<Distribution>,
}

/// A pair-based STDP rule (see `fum_kernels::stdp`).
///
/// The additive and multiplicative rules take `a_plus`, `a_minus` and `w_max`; the power law
/// (NEST's `stdp_pl_synapse_hom`) takes NEST's `lambda`, `alpha` and `mu`, and `w_max` only
/// if the user wants an upper bound (NEST has none).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlasticitySpec {
    pub name: String,
    #[serde(default = "d_tau_stdp")]
    pub tau_plus_ms: f64,
    #[serde(default = "d_tau_stdp")]
    pub tau_minus_ms: f64,
    pub a_plus: Option<f64>,
    pub a_minus: Option<f64>,
    #[serde(default)]
    pub w_min: f64,
    pub w_max: Option<f64>,
    #[serde(default)]
    pub weight_dependence: WeightDependence,
    /// Power law: the learning rate (potentiation `w += lambda w^mu x`).
    pub lambda: Option<f64>,
    /// Power law: the asymmetry (depression `w -= lambda alpha w y`).
    pub alpha: Option<f64>,
    /// Power law: the exponent of the weight in potentiation, in [0, 1].
    pub mu: Option<f64>,
    #[serde(default)]
    pub pairing: Pairing,
    /// The whole synaptic delay is dendritic, as in NEST's STDP synapses: a postsynaptic spike
    /// pairs at the synapse one delay late. Default: spikes pair at the neurons.
    #[serde(default)]
    pub dendritic_delay: bool,
    /// Postsynaptic spikes each target neuron remembers for potentiation applied at the next
    /// presynaptic spike (see `fum_kernels::stdp`).
    #[serde(default = "d_post_history")]
    pub post_history: u32,
}

fn d_tau_stdp() -> f64 {
    20.0
}

fn d_post_history() -> u32 {
    64
}

/// Largest `post_history` accepted (4 bytes per neuron and entry).
pub const MAX_POST_HISTORY: u32 = 4096;

impl PlasticitySpec {
    /// The upper weight bound: `w_max`, or the largest `f32` for a power law without one.
    pub fn w_max(&self) -> f64 {
        self.w_max.unwrap_or(F32_MAX)
    }

    /// The kernels' rule (of a validated spec: the fields its weight dependence needs are set).
    pub fn rule(&self) -> fum_kernels::stdp::StdpRule {
        use fum_kernels::stdp;
        let given = |v: Option<f64>| v.unwrap_or_else(|| unreachable!("validated: {} has the fields of {:?}", self.name, self.weight_dependence));
        let (a_plus, a_minus, dependence) = match self.weight_dependence {
            WeightDependence::Additive => (given(self.a_plus), given(self.a_minus), stdp::WeightDependence::Additive),
            WeightDependence::Multiplicative => (given(self.a_plus), given(self.a_minus), stdp::WeightDependence::Multiplicative),
            WeightDependence::PowerLaw => {
                let lambda = given(self.lambda);
                (lambda, lambda * given(self.alpha), stdp::WeightDependence::PowerLaw { mu: given(self.mu) as f32 })
            }
        };
        stdp::StdpRule {
            a_plus: a_plus as f32,
            a_minus: a_minus as f32,
            w_min: self.w_min as f32,
            w_max: self.w_max() as f32,
            dependence,
            pairing: match self.pairing {
                Pairing::AllToAll => stdp::Pairing::AllToAll,
                Pairing::Nearest => stdp::Pairing::Nearest,
            },
            dendritic: self.dendritic_delay,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// An independent Poisson spike train into every neuron of the target.
    Poisson,
    /// A constant current into every neuron of the target, for the whole run or from
    /// `start_ms` to `stop_ms` (NEST's `dc_generator`, SONATA's `current_clamp`).
    Dc,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    pub kind: InputKind,
    pub target: String,
    /// Poisson: rate of the train each neuron receives, Hz: one for all, or drawn per neuron
    /// (or, where `listed` names it, the range of rates given per neuron).
    pub rate_hz: Option<Distribution>,
    /// Poisson: `["rate_hz"]` where the rates are given per target neuron beside the text (from
    /// Python), as a population's `listed`. The text alone is refused.
    #[serde(default)]
    pub listed: Vec<ListedField>,
    /// Poisson: weight magnitude of each input spike.
    pub weight: Option<f64>,
    #[serde(default)]
    pub receptor: Receptor,
    /// DC: amplitude, pA.
    pub amplitude_pa: Option<f64>,
    /// DC: the current flows in the steps from `start_ms` (default 0) up to, not including,
    /// `stop_ms` (default: the run's end), both rounded to steps.
    pub start_ms: Option<f64>,
    pub stop_ms: Option<f64>,
}

impl InputSpec {
    /// A DC input's steps `[start, stop)` (`stop` `u64::MAX` for the run's end).
    pub fn window_steps(&self, dt_ms: f64) -> (u64, u64) {
        let step = |ms: f64| (ms / dt_ms).round() as u64;
        (self.start_ms.map_or(0, step), self.stop_ms.map_or(u64::MAX, step))
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingSpec {
    /// Populations whose spikes are written to `spikes.h5`.
    #[serde(default)]
    pub spikes: Vec<String>,
    #[serde(default)]
    pub probes: Vec<ProbeSpec>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeVariable {
    /// Membrane potential, mV.
    V,
    /// Excitatory / inhibitory synaptic variable (pA or nS).
    SynEx,
    SynIn,
    /// Synaptic weight of chosen synapses of a projection.
    Weight,
}

/// Sampled state: `v`/`syn_ex`/`syn_in` of `neurons` of `population`, or `weight` of
/// `synapses` (pairs of population-local [pre, post] ids) of `projection`, or of the first
/// `count` synapses it has (whatever the seed; see [`Model::choose_probed_synapses`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec {
    pub name: String,
    pub variable: ProbeVariable,
    pub population: Option<String>,
    #[serde(default)]
    pub neurons: Vec<u32>,
    pub projection: Option<String>,
    #[serde(default)]
    pub synapses: Vec<[u32; 2]>,
    pub count: Option<u32>,
    pub interval_ms: Option<f64>,
    /// `synapses` were chosen by `count` for the model's seed, not listed in the file.
    #[serde(skip)]
    pub synapses_chosen: bool,
}

impl Model {
    /// Reads, parses and validates a model file.
    pub fn load(path: impl AsRef<Path>) -> Result<Model, ModelError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|error| ModelError::Io { path: path.display().to_string(), error })?;
        let source = String::from_utf8(bytes).map_err(|e| {
            let valid = std::str::from_utf8(&e.as_bytes()[..e.utf8_error().valid_up_to()]).expect("the valid prefix");
            let (line, column) = line_column(valid, valid.len());
            ModelError::Invalid { file: path.display().to_string(), line, column, field: String::new(), message: "invalid UTF-8: a model file is UTF-8 text".into() }
        })?;
        Model::parse(&source, path)
    }

    /// Parses and validates model text; `path` names it in messages.
    pub fn parse(source: &str, path: &Path) -> Result<Model, ModelError> {
        Model::parse_listed(source, path, Vec::new(), Vec::new(), Vec::new())
    }

    /// Parses and validates model text whose `explicit` projections (`rule = { explicit = N }`)
    /// have their synapses in `synapses`, by projection name, whose populations' `listed`
    /// fields have their values per neuron in `neurons`, by population name, and whose Poisson
    /// inputs' `listed` rates have theirs per target neuron in `inputs`, by input name: what a
    /// model built in Python with `fum.FromList` or arrays of values is, since a model file
    /// cannot hold them. A listed projection's `weight` and `delay_ms`, and a listed field, become the range
    /// the values span, as for SONATA edges (the checks of weights and delays, STDP's bounds
    /// included, and of a distribution's range apply to it).
    pub fn parse_listed(
        source: &str,
        path: &Path,
        synapses: Vec<(String, crate::sonata::SynapseList)>,
        neurons: Vec<(String, crate::sonata::NeuronValues)>,
        inputs: Vec<(String, crate::sonata::NeuronValues)>,
    ) -> Result<Model, ModelError> {
        let spec: ModelSpec = toml::from_str(source).map_err(|e| toml_error(source, path, &e))?;
        let mut model = Model { spec, path: path.to_path_buf(), source: source.to_string(), circuit: None, listed: None };
        if !synapses.is_empty() || !neurons.is_empty() || !inputs.is_empty() {
            model.attach(synapses, neurons, inputs)?;
        }
        if let Some(section) = model.spec.sonata.clone() {
            for (key, given) in [("populations", !model.spec.populations.is_empty()), ("projections", !model.spec.projections.is_empty())] {
                if given {
                    return Err(model.invalid(path!(key), "a model with a [sonata] section takes its populations and projections from the circuit".into()));
                }
            }
            let imported = crate::sonata::import(&section, path)?;
            model.spec.populations = imported.populations;
            model.spec.projections = imported.projections;
            model.spec.inputs.extend(imported.inputs);
            if model.spec.recording.spikes.is_empty() {
                model.spec.recording.spikes = model.spec.populations.iter().map(|p| p.name.clone()).collect();
            }
            model.circuit = Some(std::sync::Arc::new(imported.circuit));
        }
        crate::spike_trains::load(&mut model)?;
        model.revalidate()?;
        Ok(model)
    }

    /// Gives the `explicit` projections named in `synapses` their synapses, the populations
    /// named in `neurons` and the inputs named in `inputs` their values (see
    /// [`Model::parse_listed`]).
    fn attach(
        &mut self,
        synapses: Vec<(String, crate::sonata::SynapseList)>,
        neurons: Vec<(String, crate::sonata::NeuronValues)>,
        inputs: Vec<(String, crate::sonata::NeuronValues)>,
    ) -> Result<(), ModelError> {
        if self.spec.sonata.is_some() {
            return Err(self.invalid(path!("sonata"), "a model with a [sonata] section takes its synapses and neurons from the circuit, not from lists".into()));
        }
        let mut values = vec![crate::sonata::NeuronValues::default(); self.spec.populations.len()];
        for (name, given) in neurons {
            let Some(pi) = self.population_index(&name) else {
                return Err(self.invalid(path!("populations"), format!("values are listed per neuron for a population named {name:?}, which the model does not have")));
            };
            let p = &mut self.spec.populations[pi];
            if let Some(v) = &given.v_init_mv {
                p.v_init_mv = Some(crate::sonata::span(v.iter().copied()));
            }
            if let Some(i_e) = &given.i_e_pa {
                p.i_e_pa = crate::sonata::span(i_e.iter().copied());
            }
            values[pi] = given;
        }
        let mut rates = vec![crate::sonata::NeuronValues::default(); self.spec.inputs.len()];
        for (name, given) in inputs {
            let Some(ii) = self.spec.inputs.iter().position(|i| i.name == name) else {
                return Err(self.invalid(path!("inputs"), format!("values are listed per neuron for an input named {name:?}, which the model does not have")));
            };
            if let Some(r) = &given.rate_hz {
                self.spec.inputs[ii].rate_hz = Some(crate::sonata::span(r.iter().copied()));
            }
            rates[ii] = given;
        }
        let mut lists = vec![crate::sonata::SynapseList::default(); self.spec.projections.len()];
        for (name, list) in synapses {
            let Some(pi) = self.projection_index(&name) else {
                return Err(self.invalid(path!("projections"), format!("synapses are listed for a projection named {name:?}, which the model does not have")));
            };
            if !matches!(self.spec.projections[pi].rule, ConnectionRule::Explicit(_)) {
                return Err(self.invalid(path!("projections", pi, "rule"), "its synapses are listed: its rule must be { explicit = N }".into()));
            }
            let n = list.pre.len();
            if list.post.len() != n || list.weight.len() != n || list.delay_ms.len() != n {
                let lens = format!("pre {n}, post {}, weight {}, delay_ms {}", list.post.len(), list.weight.len(), list.delay_ms.len());
                return Err(self.invalid(path!("projections", pi, "rule", "explicit"), format!("a synapse list's columns differ in length ({lens})")));
            }
            let p = &mut self.spec.projections[pi];
            p.weight = crate::sonata::span(list.weight.iter().map(|&w| f64::from(w)));
            p.delay_ms = (!list.is_empty()).then(|| crate::sonata::span(list.delay_ms.iter().copied()));
            lists[pi] = list;
        }
        self.listed = Some(std::sync::Arc::new(Listed { synapses: lists, neurons: values, inputs: rates }));
        Ok(())
    }

    /// Number of steps of the run.
    pub fn steps(&self) -> u64 {
        (self.spec.simulation.duration_ms / self.spec.simulation.dt_ms).round() as u64
    }

    pub fn population_index(&self, name: &str) -> Option<usize> {
        self.spec.populations.iter().position(|p| p.name == name)
    }

    pub fn plasticity_index(&self, name: &str) -> Option<usize> {
        self.spec.plasticity.iter().position(|p| p.name == name)
    }

    pub fn projection_index(&self, name: &str) -> Option<usize> {
        self.spec.projections.iter().position(|p| p.name == name)
    }

    /// Synapses `projection`, one of this model's, draws (`ConnectionRule::expected_synapses`
    /// for the sizes of its populations): the estimate `fum check` prints per projection.
    pub fn expected_synapses_of(&self, projection: &ProjectionSpec) -> f64 {
        let size = |name: &str| self.spec.populations[self.population_index(name).expect("a valid model names populations that exist")].size;
        projection.rule.expected_synapses(size(&projection.source), size(&projection.target))
    }

    /// Synapses the whole model draws: the sum over its projections in file order, as `fum
    /// check` prints it. Sizes are looked up by hash, so this stays linear in the projections.
    pub fn expected_synapses(&self) -> f64 {
        let at = index(self.spec.populations.iter().map(|p| p.name.as_str()));
        let size = |name: &str| self.spec.populations[*at.get(name).expect("a valid model names populations that exist")].size;
        // A fold from +0.0, not `sum` (which starts from -0.0): no projections print as "0".
        self.spec.projections.iter().map(|p| p.rule.expected_synapses(size(&p.source), size(&p.target))).fold(0.0, |total, n| total + n)
    }

    /// A hash of the model text (FNV-1a 64), recorded with every output.
    pub fn hash(&self) -> u64 {
        let text = self.source.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        let fold = |h: u64, bytes: &[u8]| bytes.iter().fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        // A SONATA circuit's files, listed synapses and spike files are part of the model.
        let circuit = match &self.circuit {
            Some(c) => fold(text, &c.digest.to_le_bytes()),
            None => text,
        };
        let synapses = self.listed.iter().flat_map(|l| &l.synapses).fold(circuit, |h, l| {
            let h = fold(fold(h, bytemuck::cast_slice(&l.pre)), bytemuck::cast_slice(&l.post));
            fold(fold(h, bytemuck::cast_slice(&l.weight)), bytemuck::cast_slice(&l.delay_ms))
        });
        // Which fields a population or input lists is in the text; their values are here.
        let values = self.listed.iter().flat_map(|l| l.neurons.iter().chain(&l.inputs)).flat_map(|n| n.fields()).flatten();
        let listed = values.fold(synapses, |h, v| fold(h, bytemuck::cast_slice(v)));
        self.spec.populations.iter().filter_map(|p| p.trains.as_ref()).fold(listed, |h, t| fold(fold(h, bytemuck::cast_slice(&t.neurons)), bytemuck::cast_slice(&t.times_ms)))
    }

    /// The listed synapses of projection `pi`, where its rule is `ConnectionRule::Explicit`.
    pub fn explicit_synapses(&self, pi: usize) -> Option<&crate::sonata::SynapseList> {
        match self.spec.projections[pi].rule {
            ConnectionRule::Explicit(_) => match (&self.circuit, &self.listed) {
                (Some(c), _) => Some(&c.edges[pi].synapses),
                (None, Some(l)) => Some(&l.synapses[pi]),
                (None, None) => None,
            },
            _ => None,
        }
    }

    /// The values population `pi` gives neuron by neuron (a SONATA circuit's per-node `V_m`, or
    /// the fields it lists), which the builder takes in place of its draws.
    pub fn neuron_values(&self, pi: usize) -> Option<&crate::sonata::NeuronValues> {
        match (&self.circuit, &self.listed) {
            (Some(c), _) => Some(&c.nodes[pi].values),
            (None, Some(l)) => Some(&l.neurons[pi]),
            (None, None) => None,
        }
    }

    /// The rates Poisson input `i` (an index into `spec.inputs`) lists per target neuron, which
    /// the builder takes in place of its draws.
    pub fn input_rates_hz(&self, i: usize) -> Option<&[f64]> {
        self.listed.as_ref().and_then(|l| l.inputs.get(i)?.rate_hz.as_deref())
    }

    /// Re-checks the model after command-line overrides of its simulation settings, and
    /// chooses the synapses of `count` weight probes for its seed.
    pub fn revalidate(&mut self) -> Result<(), ModelError> {
        self.validate()?;
        self.choose_probed_synapses()
    }

    /// Fills the `synapses` of each weight probe given by `count`: the first `count` synapses
    /// of its projection in row order (targets ascending, or sources for `fixed_outdegree`),
    /// each row drawn alone as the builder draws it (see [`crate::build::synapse_row`]).
    pub fn choose_probed_synapses(&mut self) -> Result<(), ModelError> {
        for i in 0..self.spec.recording.probes.len() {
            let probe = &self.spec.recording.probes[i];
            let (Some(count), Some(name)) = (probe.count, &probe.projection) else { continue };
            let pi = self.projection_index(name).expect("validated");
            let proj = &self.spec.projections[pi];
            let rows = self.row_count(proj);
            if self.expected_row_len(proj) > MAX_ROW_DRAWN {
                return Err(self.invalid(path!("recording", "probes", i, "count"), format!("rows of projection {name:?} are too long to draw before building; list synapses = [[pre, post], ...]")));
            }
            let expected = self.expected_synapses_of(proj);
            if f64::from(count) > expected {
                return Err(self.invalid(path!("recording", "probes", i, "count"), format!("projection {name:?} has about {expected:.0} synapses, fewer than {count}")));
            }
            let mut chosen = Vec::new();
            for row in 0..rows {
                chosen.extend(crate::build::synapse_row(self, pi, row).into_iter().take(count as usize - chosen.len()));
                if chosen.len() == count as usize {
                    break;
                }
            }
            if chosen.len() < count as usize {
                let found = chosen.len();
                return Err(self.invalid(path!("recording", "probes", i, "count"), format!("projection {name:?} has only {found} synapses for seed {}", self.spec.simulation.seed)));
            }
            let probe = &mut self.spec.recording.probes[i];
            probe.synapses = chosen;
            probe.synapses_chosen = true;
        }
        Ok(())
    }

    /// Rows `synapse_row` draws for `projection`: its targets, or its sources for `fixed_outdegree`.
    fn row_count(&self, projection: &ProjectionSpec) -> u32 {
        let name = if matches!(projection.rule, ConnectionRule::FixedOutdegree(_)) { &projection.source } else { &projection.target };
        self.spec.populations[self.population_index(name).expect("validated")].size
    }

    /// Synapses expected in one row of `projection`.
    fn expected_row_len(&self, projection: &ProjectionSpec) -> f64 {
        self.expected_synapses_of(projection) / f64::from(self.row_count(projection).max(1))
    }

    /// An error at the field `path` of this model's file.
    pub(crate) fn invalid(&self, path: Vec<Seg>, message: String) -> ModelError {
        Validator { model: self, doc: None, populations: HashMap::new() }.error(path, message)
    }

    fn validate(&self) -> Result<(), ModelError> {
        let mut v = Validator { model: self, doc: None, populations: index(self.spec.populations.iter().map(|p| p.name.as_str())) };
        v.run().map_err(|e| self.in_circuit(e))
    }

    /// An error at an imported population or projection, told in the circuit's terms: its
    /// file, node or edge type and NEST field (`V_reset`, `delay`), not the model's.
    fn in_circuit(&self, e: ModelError) -> ModelError {
        let (Some(circuit), ModelError::Invalid { field, message, .. }) = (&self.circuit, &e) else { return e };
        let parse = |prefix: &str| -> Option<(usize, String)> {
            let rest = field.strip_prefix(prefix)?.strip_prefix('[')?;
            let (i, rest) = rest.split_once(']')?;
            Some((i.parse().ok()?, rest.trim_start_matches('.').trim_end_matches(": ").to_string()))
        };
        if let Some((i, key)) = parse("populations") {
            let nodes = &circuit.nodes[i];
            let nest = crate::sonata::NEST_NAMES.iter().find(|(_, f)| *f == key).map_or(key.as_str(), |(n, _)| *n);
            let file = nodes.params_file.as_ref().unwrap_or(&nodes.types_file);
            // The message may name another field (`must be below v_th_mv`): NEST's name too.
            let message = crate::sonata::NEST_NAMES.iter().fold(message.clone(), |m, (nest, field)| m.replace(field, nest));
            return crate::sonata::error(file, format!("population \"{}\", node_type_id {}", nodes.population, nodes.node_type_id), format!("{nest}: {message}"));
        }
        if let Some((i, key)) = parse("projections") {
            let edges = &circuit.edges[i];
            let name = match key.as_str() {
                "weight" => "syn_weight",
                "delay_ms" => "delay",
                "target" => "target_node_id",
                other => other,
            };
            return crate::sonata::error(&edges.edges_file, format!("population \"{}\" (projection \"{}\")", edges.population, self.spec.projections[i].name), format!("{name}: {message}"));
        }
        e
    }
}

/// Rows longer than this (synapses) are not drawn before building: a weight probe's listed
/// synapses are then found (or not) when the network is built, and `count` is refused.
const MAX_ROW_DRAWN: f64 = 1e7;

/// Synapses drawn in advance to check one weight probe's list; a longer job is left to the build.
const MAX_PROBE_DRAWS: f64 = 1e8;

/// Largest `count` of a weight probe.
pub const MAX_PROBED_SYNAPSES: u32 = 10_000_000;

/// Largest magnitude of an `f32`, the type weights, currents and initial state are stored in.
const F32_MAX: f64 = f32::MAX as f64;

/// Draws of a normal distribution lie within this many standard deviations of the mean (the
/// uniforms behind them have 53 bits: `sqrt(-2 ln 2^-53)` = 8.6).
const NORMAL_REACH: f64 = 9.0;

/// A parser error as `file:line:column: field: message`; the field is found from the error's
/// position in the document where the text is valid TOML (a type or value error).
fn toml_error(source: &str, path: &Path, e: &toml::de::Error) -> ModelError {
    let mut message = e.message().trim().to_string();
    let (offset, field) = match e.span() {
        Some(span) => {
            if message == "duplicate key" {
                message = format!("duplicate key `{}`", source.get(span.clone()).unwrap_or_default().trim());
            }
            let field = toml::de::DeTable::parse(source).map(|doc| field_at(&doc, span.start)).unwrap_or_default();
            (span.start, field)
        }
        // The parser gives no position for keys dotted too deeply; the line with the most
        // nesting is where they are.
        None => {
            let deepest = source.lines().enumerate().max_by_key(|(_, l)| l.matches(['.', '[', '{']).count()).map_or(0, |(i, _)| i);
            (source.lines().take(deepest).map(|l| l.len() + 1).sum(), String::new())
        }
    };
    let (line, column) = line_column(source, offset);
    let field = if field.is_empty() { field } else { format!("{field}: ") };
    ModelError::Invalid { file: path.display().to_string(), line, column, field, message }
}

/// The path (`populations[0].size`) of the deepest value whose span holds `offset`, or empty.
fn field_at(doc: &toml::Spanned<toml::de::DeTable<'_>>, offset: usize) -> String {
    use toml::de::DeValue;
    let mut field = String::new();
    let mut value = None;
    let mut table = Some(doc.get_ref());
    loop {
        let mut next = None;
        if let Some(t) = table {
            // The key the offset falls in or after (a table's span may hold only its header).
            next = t.iter().filter(|(k, v)| k.span().start <= offset && (v.span().contains(&offset) || k.span().contains(&offset) || matches!(v.get_ref(), DeValue::Table(_) | DeValue::Array(_)))).max_by_key(|(k, _)| k.span().start).map(|(k, v)| {
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(k.get_ref());
                v
            });
        } else if let Some(DeValue::Array(a)) = value.map(toml::Spanned::get_ref) {
            next = a.iter().enumerate().filter(|(_, v)| v.span().start <= offset).max_by_key(|(_, v)| v.span().start).map(|(i, v)| {
                field.push_str(&format!("[{i}]"));
                v
            });
        }
        let Some(v) = next else { return field };
        value = Some(v);
        table = match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
        if !matches!(v.get_ref(), DeValue::Table(_) | DeValue::Array(_)) {
            return field;
        }
    }
}

/// 1-based line and column of a byte offset.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

#[derive(Clone, Debug)]
pub(crate) enum Seg {
    Key(&'static str),
    Index(usize),
}

struct Validator<'a> {
    model: &'a Model,
    doc: Option<toml::Spanned<toml::de::DeTable<'a>>>,
    /// Populations by name. Names are checked and looked up through hash maps and sets: linear
    /// scans made validation quadratic in the number of entries (a 6 MB model of 40,000
    /// populations and projections took 16 s to parse).
    populations: HashMap<&'a str, usize>,
}

/// Position of each name (the first, where one repeats).
fn index<'a>(names: impl Iterator<Item = &'a str>) -> HashMap<&'a str, usize> {
    let mut index = HashMap::new();
    for (i, name) in names.enumerate() {
        index.entry(name).or_insert(i);
    }
    index
}

impl From<&'static str> for Seg {
    fn from(k: &'static str) -> Self {
        Seg::Key(k)
    }
}
impl From<usize> for Seg {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

impl<'a> Validator<'a> {
    fn error(&mut self, path: Vec<Seg>, message: String) -> ModelError {
        let doc = self.doc.get_or_insert_with(|| {
            toml::de::DeTable::parse(&self.model.source).expect("the model parsed once already")
        });
        let offset = span_of(doc, &path);
        let (line, column) = line_column(&self.model.source, offset);
        let mut field = String::new();
        for seg in &path {
            match seg {
                Seg::Key(k) if field.is_empty() => field.push_str(k),
                Seg::Key(k) => {
                    field.push('.');
                    field.push_str(k)
                }
                Seg::Index(i) => field.push_str(&format!("[{i}]")),
            }
        }
        ModelError::Invalid { file: self.model.path.display().to_string(), line, column, field: format!("{field}: "), message }
    }

    fn run(&mut self) -> Result<(), ModelError> {
        let m = self.model;
        let s = &m.spec;
        let rules = index(s.plasticity.iter().map(|p| p.name.as_str()));
        let projections = index(s.projections.iter().map(|p| p.name.as_str()));
        let sim = &s.simulation;
        self.positive(path!("simulation", "dt_ms"), sim.dt_ms)?;
        self.positive(path!("simulation", "duration_ms"), sim.duration_ms)?;
        if sim.duration_ms / sim.dt_ms > f64::from(u32::MAX - 1) {
            return Err(self.error(path!("simulation", "duration_ms"), "more than 2^32 steps; use a larger dt_ms or a shorter run".into()));
        }
        if s.populations.is_empty() {
            return Err(self.error(path!("simulation"), "the model has no [[populations]]".into()));
        }
        let mut total: u64 = 0;
        let mut names = HashSet::new();
        for (i, p) in s.populations.iter().enumerate() {
            self.name(path!("populations", i, "name"), &p.name, &mut names)?;
            if p.size == 0 {
                return Err(self.error(path!("populations", i, "size"), "must be at least 1".into()));
            }
            total += u64::from(p.size);
            self.listed_values("populations", i, &p.listed, p.size, self.model.listed.as_ref().map(|l| &l.neurons[i]))?;
            if p.model == NeuronModel::SpikeSource {
                self.spike_source(i)?;
                continue;
            }
            self.positive(path!("populations", i, "tau_m_ms"), p.tau_m_ms)?;
            self.positive(path!("populations", i, "c_m_pf"), p.c_m_pf)?;
            self.positive(path!("populations", i, "tau_syn_ex_ms"), p.tau_syn_ex_ms)?;
            self.positive(path!("populations", i, "tau_syn_in_ms"), p.tau_syn_in_ms)?;
            self.non_negative(path!("populations", i, "t_ref_ms"), p.t_ref_ms)?;
            if p.v_reset_mv >= p.v_th_mv {
                return Err(self.error(path!("populations", i, "v_reset_mv"), format!("must be below v_th_mv ({} mV)", p.v_th_mv)));
            }
            if p.model.current_based() {
                let model = p.model.name();
                for (key, value) in [("e_ex_mv", p.e_ex_mv), ("e_in_mv", p.e_in_mv)] {
                    if value.is_some() {
                        return Err(self.error(path!("populations", i, key), format!("reversal potentials belong to model \"lif_coba\"; \"{model}\" synapses are currents")));
                    }
                }
                if p.integrator.is_some() {
                    return Err(self.error(path!("populations", i, "integrator"), format!("an integrator is chosen for model \"lif_coba\"; \"{model}\" is integrated exactly")));
                }
            }
            for (key, dist) in [("v_init_mv", p.v_init_mv), ("syn_ex_init", p.syn_ex_init), ("syn_in_init", p.syn_in_init)] {
                if let Some(dist) = dist {
                    self.distribution(path!("populations", i, key), &dist)?;
                    self.fits_f32(path!("populations", i, key), &dist)?;
                }
            }
            self.distribution(path!("populations", i, "i_e_pa"), &p.i_e_pa)?;
            self.fits_f32(path!("populations", i, "i_e_pa"), &p.i_e_pa)?;
        }
        if total > u64::from(u32::MAX) {
            return Err(self.error(path!("populations"), format!("{total} neurons: at most 2^32 - 1 are supported")));
        }
        let mut names = HashSet::new();
        for (i, p) in s.plasticity.iter().enumerate() {
            self.name(path!("plasticity", i, "name"), &p.name, &mut names)?;
            self.positive(path!("plasticity", i, "tau_plus_ms"), p.tau_plus_ms)?;
            self.positive(path!("plasticity", i, "tau_minus_ms"), p.tau_minus_ms)?;
            self.weight_dependence(i, p)?;
            self.non_negative(path!("plasticity", i, "w_min"), p.w_min)?;
            if p.w_max() <= p.w_min {
                return Err(self.error(path!("plasticity", i, "w_max"), format!("must be above w_min ({})", p.w_min)));
            }
            self.fits_f32(path!("plasticity", i, "w_max"), &Distribution::Constant(p.w_max()))?;
            if !(1..=MAX_POST_HISTORY).contains(&p.post_history) {
                return Err(self.error(path!("plasticity", i, "post_history"), format!("must lie in [1, {MAX_POST_HISTORY}] (got {})", p.post_history)));
            }
        }
        let mut names = HashSet::new();
        for (i, p) in s.projections.iter().enumerate() {
            self.name(path!("projections", i, "name"), &p.name, &mut names)?;
            let src = self.population(path!("projections", i, "source"), &p.source)?;
            let tgt = self.population(path!("projections", i, "target"), &p.target)?;
            self.not_a_spike_source(path!("projections", i, "target"), tgt, "receives no synapses")?;
            let (n_src, n_tgt) = (s.populations[src].size, s.populations[tgt].size);
            match p.rule {
                ConnectionRule::FixedProbability(q) if !(0.0..=1.0).contains(&q) => {
                    return Err(self.error(path!("projections", i, "rule", "fixed_probability"), format!("a probability must lie in [0, 1] (got {q})")));
                }
                ConnectionRule::FixedIndegree(k) if !p.allow_multapses && k > n_src => {
                    return Err(self.error(path!("projections", i, "rule", "fixed_indegree"), format!("{k} distinct sources requested from a population of {n_src} (set allow_multapses = true)")));
                }
                ConnectionRule::FixedOutdegree(k) if !p.allow_multapses && k > n_tgt => {
                    return Err(self.error(path!("projections", i, "rule", "fixed_outdegree"), format!("{k} distinct targets requested in a population of {n_tgt} (set allow_multapses = true)")));
                }
                ConnectionRule::FixedTotalNumber(_) if !p.allow_multapses => {
                    return Err(self.error(path!("projections", i, "allow_multapses"), "fixed_total_number draws every synapse's source and target independently, as NEST does: it cannot exclude multapses".into()));
                }
                ConnectionRule::FixedTotalNumber(n) if n > 0 && src == tgt && n_src == 1 && !p.allow_autapses => {
                    return Err(self.error(path!("projections", i, "rule", "fixed_total_number"), format!("{n} synapses requested within a population of one neuron without autapses (set allow_autapses = true)")));
                }
                ConnectionRule::FixedTotalNumber(n) if n / u64::from(n_tgt) >= u64::from(u32::MAX) => {
                    return Err(self.error(path!("projections", i, "rule", "fixed_total_number"), format!("{n} synapses onto {n_tgt} neurons: a neuron's in-degree must stay below 2^32 - 1")));
                }
                ConnectionRule::OneToOne if n_src != n_tgt => {
                    return Err(self.error(path!("projections", i, "rule"), format!("one_to_one needs populations of equal size ({n_src} and {n_tgt})")));
                }
                ConnectionRule::Explicit(n) => self.listed(i, n, n_src, n_tgt)?,
                _ => {}
            }
            self.distribution(path!("projections", i, "weight"), &p.weight)?;
            self.fits_f32(path!("projections", i, "weight"), &p.weight)?;
            if p.weight.range().0 < 0.0 && !matches!(p.weight, Distribution::Normal { .. }) {
                return Err(self.error(path!("projections", i, "weight"), "weights are magnitudes: give a positive weight and receptor = \"inhibitory\" for inhibition".into()));
            }
            if let Some(delay) = p.delay_ms {
                self.distribution(path!("projections", i, "delay_ms"), &delay)?;
                let (lo, hi) = delay.range();
                if delay.unbounded() {
                    // Draws are clipped to [dt, max delay]; the mean must lie inside.
                    let mean = delay.mean();
                    if mean < sim.dt_ms || mean > f64::from(MAX_DELAY_STEPS) * sim.dt_ms {
                        return Err(self.error(path!("projections", i, "delay_ms"), format!("mean delay {mean} ms lies outside [dt = {} ms, {} ms]", sim.dt_ms, f64::from(MAX_DELAY_STEPS) * sim.dt_ms)));
                    }
                } else if (lo / sim.dt_ms).round() < 1.0 {
                    return Err(self.error(path!("projections", i, "delay_ms"), format!("a delay of {lo} ms is shorter than one step (dt = {} ms)", sim.dt_ms)));
                } else if (hi / sim.dt_ms).round() > f64::from(MAX_DELAY_STEPS) {
                    return Err(self.error(path!("projections", i, "delay_ms"), format!("a delay of {hi} ms is longer than {MAX_DELAY_STEPS} steps")));
                }
            }
            if let Some(name) = &p.plasticity {
                let Some(&k) = rules.get(name.as_str()) else {
                    return Err(self.error(path!("projections", i, "plasticity"), format!("no [[plasticity]] named {name:?}")));
                };
                let rule = &s.plasticity[k];
                let (lo, hi) = p.weight.range();
                if p.weight.unbounded() {
                    // Draws are clipped to the rule's bounds.
                } else if lo < rule.w_min || hi > rule.w_max() {
                    return Err(self.error(path!("projections", i, "weight"), format!("initial weights must lie within the bounds of rule \"{name}\" [{}, {}]", rule.w_min, rule.w_max())));
                }
            }
        }
        self.structural(&projections)?;
        let mut names = HashSet::new();
        for (i, input) in s.inputs.iter().enumerate() {
            self.name(path!("inputs", i, "name"), &input.name, &mut names)?;
            let target = self.population(path!("inputs", i, "target"), &input.target)?;
            self.not_a_spike_source(path!("inputs", i, "target"), target, "takes no input")?;
            match input.kind {
                InputKind::Poisson => {
                    let size = s.populations[target].size;
                    self.listed_values("inputs", i, &input.listed, size, self.model.listed.as_ref().map(|l| &l.inputs[i]))?;
                    let Some(rate) = input.rate_hz else {
                        return Err(self.error(path!("inputs", i), "a poisson input needs rate_hz".into()));
                    };
                    match rate {
                        Distribution::Constant(r) => self.non_negative(path!("inputs", i, "rate_hz"), r)?,
                        Distribution::Normal { .. } => return Err(self.error(path!("inputs", i, "rate_hz"), "rates are not negative: draw them from a uniform or lognormal distribution".into())),
                        _ => {
                            self.distribution(path!("inputs", i, "rate_hz"), &rate)?;
                            self.non_negative(path!("inputs", i, "rate_hz"), rate.range().0)?;
                        }
                    }
                    let Some(w) = input.weight else {
                        return Err(self.error(path!("inputs", i), "a poisson input needs weight".into()));
                    };
                    self.non_negative(path!("inputs", i, "weight"), w)?;
                    self.fits_f32(path!("inputs", i, "weight"), &Distribution::Constant(w))?;
                    for (key, present) in [("amplitude_pa", input.amplitude_pa.is_some()), ("start_ms", input.start_ms.is_some()), ("stop_ms", input.stop_ms.is_some())] {
                        if present {
                            return Err(self.error(path!("inputs", i, key), "belongs to kind = \"dc\"".into()));
                        }
                    }
                }
                InputKind::Dc => {
                    let Some(amplitude) = input.amplitude_pa else {
                        return Err(self.error(path!("inputs", i), "a dc input needs amplitude_pa".into()));
                    };
                    self.fits_f32(path!("inputs", i, "amplitude_pa"), &Distribution::Constant(amplitude))?;
                    for (key, present) in [("rate_hz", input.rate_hz.is_some()), ("weight", input.weight.is_some()), ("listed", !input.listed.is_empty())] {
                        if present {
                            return Err(self.error(path!("inputs", i, key), "belongs to kind = \"poisson\"".into()));
                        }
                    }
                    if let Some(start) = input.start_ms {
                        self.non_negative(path!("inputs", i, "start_ms"), start)?;
                    }
                    if let Some(stop) = input.stop_ms {
                        self.positive(path!("inputs", i, "stop_ms"), stop)?;
                        let (start, stop_step) = input.window_steps(s.simulation.dt_ms);
                        if stop_step <= start {
                            return Err(self.error(path!("inputs", i, "stop_ms"), format!("must come at least a step after start_ms ({} ms; got {stop} ms, a step {} ms)", input.start_ms.unwrap_or(0.0), s.simulation.dt_ms)));
                        }
                    }
                }
            }
        }
        for (i, name) in s.recording.spikes.iter().enumerate() {
            self.population(path!("recording", "spikes", i), name)?;
        }
        let mut names = HashSet::new();
        for (i, probe) in s.recording.probes.iter().enumerate() {
            self.name(path!("recording", "probes", i, "name"), &probe.name, &mut names)?;
            if let Some(interval) = probe.interval_ms {
                self.positive(path!("recording", "probes", i, "interval_ms"), interval)?;
            }
            if probe.variable == ProbeVariable::Weight {
                let Some(name) = &probe.projection else {
                    return Err(self.error(path!("recording", "probes", i), "a weight probe needs projection".into()));
                };
                let Some(&k) = projections.get(name.as_str()) else {
                    return Err(self.error(path!("recording", "probes", i, "projection"), format!("no projection named {name:?}")));
                };
                let proj = &s.projections[k];
                let n_src = s.populations[self.populations.get(proj.source.as_str()).copied().unwrap_or(0)].size;
                let n_tgt = s.populations[self.populations.get(proj.target.as_str()).copied().unwrap_or(0)].size;
                match (probe.count, probe.synapses.is_empty() || probe.synapses_chosen) {
                    (None, true) => return Err(self.error(path!("recording", "probes", i), "a weight probe needs synapses = [[pre, post], ...] or count = N".into())),
                    (Some(_), false) => return Err(self.error(path!("recording", "probes", i, "count"), "give synapses or count, not both".into())),
                    (Some(n), _) if !(1..=MAX_PROBED_SYNAPSES).contains(&n) => {
                        return Err(self.error(path!("recording", "probes", i, "count"), format!("must lie in [1, {MAX_PROBED_SYNAPSES}] (got {n})")));
                    }
                    (Some(_), true) => continue,
                    (None, false) => {}
                }
                let mut seen = HashSet::new();
                for (j, &[pre, post]) in probe.synapses.iter().enumerate() {
                    if pre >= n_src || post >= n_tgt {
                        return Err(self.error(path!("recording", "probes", i, "synapses", j), format!("synapse [{pre}, {post}] is outside the populations ({n_src} x {n_tgt})")));
                    }
                    if !seen.insert([pre, post]) {
                        return Err(self.error(path!("recording", "probes", i, "synapses", j), format!("synapse [{pre}, {post}] is listed twice")));
                    }
                }
                self.synapses_exist(i, k)?;
            } else {
                let Some(name) = &probe.population else {
                    return Err(self.error(path!("recording", "probes", i), "a state probe needs population".into()));
                };
                let k = self.population(path!("recording", "probes", i, "population"), name)?;
                self.not_a_spike_source(path!("recording", "probes", i, "population"), k, "has no state to probe (its spikes are recorded with [recording] spikes)")?;
                if probe.neurons.is_empty() {
                    return Err(self.error(path!("recording", "probes", i), "a state probe needs neurons = [ids]".into()));
                }
                let mut seen = HashSet::new();
                for (j, &n) in probe.neurons.iter().enumerate() {
                    if n >= s.populations[k].size {
                        return Err(self.error(path!("recording", "probes", i, "neurons", j), format!("neuron {n} is outside population {name:?} of size {}", s.populations[k].size)));
                    }
                    if !seen.insert(n) {
                        return Err(self.error(path!("recording", "probes", i, "neurons", j), format!("neuron {n} is listed twice")));
                    }
                }
            }
        }
        Ok(())
    }

    /// A `spike_source` population sets none of the membrane's fields, which it does not have
    /// (its spikes were read and checked by `crate::spike_trains::load`).
    fn spike_source(&mut self, i: usize) -> Result<(), ModelError> {
        const MEMBRANE: [&str; 16] = [
            "tau_m_ms", "c_m_pf", "e_l_mv", "v_th_mv", "v_reset_mv", "t_ref_ms", "tau_syn_ex_ms", "tau_syn_in_ms", "i_e_pa",
            "e_ex_mv", "e_in_mv", "integrator", "v_init_mv", "syn_ex_init", "syn_in_init", "listed",
        ];
        for key in MEMBRANE {
            if self.given(&path!("populations", i, key)) {
                return Err(self.error(path!("populations", i, key), "a spike_source has no membrane: it fires at its listed times only".into()));
            }
        }
        Ok(())
    }

    /// Refuses population `k` where it is a `spike_source` (as a target: it `does` nothing).
    fn not_a_spike_source(&mut self, path: Vec<Seg>, k: usize, does: &str) -> Result<(), ModelError> {
        let p = &self.model.spec.populations[k];
        if p.model == NeuronModel::SpikeSource {
            return Err(self.error(path, format!("population {:?} is a spike_source: it {does}", p.name)));
        }
        Ok(())
    }

    /// Whether the model file itself gives the field at `path` (not a default).
    fn given(&mut self, path: &[Seg]) -> bool {
        use toml::de::DeValue;
        let doc = self.doc.get_or_insert_with(|| toml::de::DeTable::parse(&self.model.source).expect("the model parsed once already"));
        let mut value: Option<&DeValue<'_>> = None;
        for (depth, seg) in path.iter().enumerate() {
            let next = match (seg, value) {
                (Seg::Key(k), None) if depth == 0 => doc.get_ref().get(*k).map(|v| v.get_ref()),
                (Seg::Key(k), Some(DeValue::Table(t))) => t.get(*k).map(|v| v.get_ref()),
                (Seg::Index(i), Some(DeValue::Array(a))) => a.get(*i).map(|v| v.get_ref()),
                _ => None,
            };
            let Some(next) = next else { return false };
            value = Some(next);
        }
        value.is_some()
    }

    /// The `[[structural]]` sections: an existing projection each, at most one per projection,
    /// and what regrowth needs.
    fn structural(&mut self, projections: &HashMap<&str, usize>) -> Result<(), ModelError> {
        let s = &self.model.spec;
        let dt = s.simulation.dt_ms;
        let mut seen = HashSet::new();
        for (i, st) in s.structural.iter().enumerate() {
            let Some(&k) = projections.get(st.projection.as_str()) else {
                let known: Vec<&str> = s.projections.iter().map(|p| p.name.as_str()).collect();
                return Err(self.error(path!("structural", i, "projection"), format!("no projection named {:?} (projections: {})", st.projection, known.join(", "))));
            };
            if !seen.insert(k) {
                return Err(self.error(path!("structural", i, "projection"), format!("projection {:?} already has a [[structural]] section (one per projection for now)", st.projection)));
            }
            self.positive(path!("structural", i, "every_ms"), st.every_ms)?;
            if (st.every_ms / dt).round() < 1.0 {
                return Err(self.error(path!("structural", i, "every_ms"), format!("{} ms is shorter than one step (dt = {dt} ms)", st.every_ms)));
            }
            if st.every_ms / dt > f64::from(u32::MAX - 1) {
                return Err(self.error(path!("structural", i, "every_ms"), "more than 2^32 steps".into()));
            }
            if let Some(lag) = st.commit_after_ms {
                self.non_negative(path!("structural", i, "commit_after_ms"), lag)?;
                if lag > st.every_ms {
                    return Err(self.error(path!("structural", i, "commit_after_ms"), format!("must not exceed every_ms ({} ms): a plan is applied before the next one is made", st.every_ms)));
                }
            }
            match st.prune {
                Prune::WeightBelow(w) => self.non_negative(path!("structural", i, "prune", "weight_below"), w)?,
                Prune::LowestPriorityFraction(f) if !(0.0..=1.0).contains(&f) => {
                    return Err(self.error(path!("structural", i, "prune", "lowest_priority_fraction"), format!("a fraction must lie in [0, 1] (got {f})")));
                }
                _ => {}
            }
            let p = &s.projections[k];
            let Some(regrow) = &st.regrow else { continue };
            if p.rule == ConnectionRule::OneToOne {
                return Err(self.error(path!("structural", i, "regrow"), format!("projection {:?} is one_to_one: it has no other sources to regrow from", p.name)));
            }
            let n_src = s.populations[self.populations.get(p.source.as_str()).copied().unwrap_or(0)].size;
            let available = n_src - u32::from(p.source == p.target && !p.allow_autapses);
            if !p.allow_multapses && regrow.to_indegree > available {
                return Err(self.error(path!("structural", i, "regrow", "to_indegree"), format!("{} distinct sources requested from {available} available (the projection has allow_multapses = false)", regrow.to_indegree)));
            }
            let n_tgt = s.populations[self.populations.get(p.target.as_str()).copied().unwrap_or(0)].size;
            // Shards as large as the default's (`crate::build::default_shards`); the build checks
            // larger ones.
            if u64::from(regrow.to_indegree) * u64::from(n_tgt.min(NARROW_SHARD_NEURONS as u32)) >= u64::from(u32::MAX) {
                return Err(self.error(path!("structural", i, "regrow", "to_indegree"), format!("{} synapses into each of up to {} neurons of a shard exceed the 2^32 - 1 a block holds", regrow.to_indegree, n_tgt.min(NARROW_SHARD_NEURONS as u32))));
            }
            if available == 0 && regrow.to_indegree > 0 {
                return Err(self.error(path!("structural", i, "regrow", "to_indegree"), "the source population has no neuron to regrow from".into()));
            }
            if let Some(w) = &regrow.weight {
                self.distribution(path!("structural", i, "regrow", "weight"), w)?;
                self.fits_f32(path!("structural", i, "regrow", "weight"), w)?;
                if w.range().0 < 0.0 && !matches!(w, Distribution::Normal { .. }) {
                    return Err(self.error(path!("structural", i, "regrow", "weight"), "weights are magnitudes: give a positive weight".into()));
                }
            }
        }
        Ok(())
    }

    /// The amplitudes of `[[plasticity]]` rule `i`: `a_plus`, `a_minus` and `w_max` for the
    /// additive and multiplicative rules; `lambda`, `alpha` and `mu` (NEST's names) for the
    /// power law, whose `w_max` is optional. A field of the other kind is refused, not ignored.
    fn weight_dependence(&mut self, i: usize, p: &PlasticitySpec) -> Result<(), ModelError> {
        let dependence = p.weight_dependence.name();
        let (needed, refused, hint) = match p.weight_dependence {
            WeightDependence::Additive | WeightDependence::Multiplicative => (
                vec![("a_plus", p.a_plus), ("a_minus", p.a_minus), ("w_max", p.w_max)],
                vec![("lambda", p.lambda), ("alpha", p.alpha), ("mu", p.mu)],
                "belongs to weight_dependence = \"power_law\" (NEST's stdp_pl_synapse_hom); this rule takes a_plus and a_minus",
            ),
            WeightDependence::PowerLaw => (
                vec![("lambda", p.lambda), ("alpha", p.alpha), ("mu", p.mu)],
                vec![("a_plus", p.a_plus), ("a_minus", p.a_minus)],
                "belongs to the additive and multiplicative rules; the power law takes lambda (potentiation: w += lambda w^mu x) and alpha (depression: w -= lambda alpha w y)",
            ),
        };
        for (key, value) in refused {
            if value.is_some() {
                return Err(self.error(path!("plasticity", i, key), hint.into()));
            }
        }
        for (key, value) in needed {
            let Some(value) = value else {
                return Err(self.error(path!("plasticity", i), format!("a rule with weight_dependence = \"{dependence}\" needs {key}")));
            };
            self.non_negative(path!("plasticity", i, key), value)?;
            self.fits_f32(path!("plasticity", i, key), &Distribution::Constant(value))?;
        }
        if let (Some(lambda), Some(alpha)) = (p.lambda, p.alpha) {
            self.fits_f32(path!("plasticity", i, "alpha"), &Distribution::Constant(lambda * alpha))?;
        }
        if let Some(mu) = p.mu.filter(|mu| !(0.0..=1.0).contains(mu)) {
            return Err(self.error(path!("plasticity", i, "mu"), format!("must lie in [0, 1] (got {mu}): 0 is additive potentiation, 1 multiplicative")));
        }
        Ok(())
    }

    fn positive(&mut self, path: Vec<Seg>, value: f64) -> Result<(), ModelError> {
        if value > 0.0 && value.is_finite() {
            Ok(())
        } else {
            Err(self.error(path, format!("must be positive and finite (got {value})")))
        }
    }

    fn non_negative(&mut self, path: Vec<Seg>, value: f64) -> Result<(), ModelError> {
        if !value.is_finite() {
            Err(self.error(path, format!("must be a finite number (got {value})")))
        } else if value < 0.0 {
            Err(self.error(path, format!("must not be negative (got {value})")))
        } else {
            Ok(())
        }
    }

    /// Every draw of `d` fits an `f32` (where it is stored): a larger one would be infinite.
    fn fits_f32(&mut self, path: Vec<Seg>, d: &Distribution) -> Result<(), ModelError> {
        let largest = match *d {
            Distribution::Normal { normal: [mean, std] } => mean.abs() + NORMAL_REACH * std,
            Distribution::LogNormal { lognormal: [mu, sigma] } => (mu + NORMAL_REACH * sigma).exp(),
            _ => d.range().0.abs().max(d.range().1.abs()),
        };
        if !largest.is_finite() {
            Err(self.error(path, format!("must be a finite number (got {largest})")))
        } else if largest <= F32_MAX {
            Ok(())
        } else {
            Err(self.error(path, format!("draws up to {largest:e} do not fit the 32-bit floats values are stored in (at most {F32_MAX:e})")))
        }
    }

    /// The listed synapses of weight probe `i` (of projection `pi`) exist for the model's
    /// seed: each row is drawn alone, as the builder draws it.
    fn synapses_exist(&mut self, i: usize, pi: usize) -> Result<(), ModelError> {
        let m = self.model;
        let proj = &m.spec.projections[pi];
        let listed = m.spec.recording.probes[i].synapses.len() as f64;
        if m.expected_row_len(proj) > MAX_ROW_DRAWN || m.expected_row_len(proj) * listed > MAX_PROBE_DRAWS {
            return Ok(());
        }
        let outdegree = matches!(proj.rule, ConnectionRule::FixedOutdegree(_));
        let mut rows: HashMap<u32, Vec<[u32; 2]>> = HashMap::new();
        for (j, &[pre, post]) in m.spec.recording.probes[i].synapses.iter().enumerate() {
            let row = if outdegree { pre } else { post };
            let synapses = rows.entry(row).or_insert_with(|| crate::build::synapse_row(m, pi, row));
            if synapses.binary_search(&[pre, post]).is_err() {
                let seed = m.spec.simulation.seed;
                return Err(self.error(
                    path!("recording", "probes", i, "synapses", j),
                    format!("projection {:?} has no synapse [{pre}, {post}] for seed {seed} (its synapses are drawn from the seed; count = N picks existing ones for any seed)", proj.name),
                ));
            }
        }
        Ok(())
    }

    /// The synapses listed for `explicit` projection `i`: `n` of them, between neurons of its
    /// populations (`n_src` and `n_tgt` neurons), of finite, non-negative weights and finite
    /// delays (the range of weights and delays is checked as the projection's `weight` and
    /// `delay_ms`).
    fn listed(&mut self, i: usize, n: u64, n_src: u32, n_tgt: u32) -> Result<(), ModelError> {
        let m = self.model;
        let at = || path!("projections", i, "rule", "explicit");
        let Some(list) = m.explicit_synapses(i) else {
            return Err(self.error(at(), "synapses listed one by one come with the model from Python (fum.FromList) or from a SONATA circuit: a model file cannot list them".into()));
        };
        if list.len() as u64 != n {
            return Err(self.error(at(), format!("{n} synapses declared, {} listed", list.len())));
        }
        let (source, target) = (&m.spec.projections[i].source, &m.spec.projections[i].target);
        for k in 0..list.len() {
            let message = if list.pre[k] >= n_src {
                format!("synapse {k}: pre = {} is not a neuron of population {source:?} ({n_src} neurons)", list.pre[k])
            } else if list.post[k] >= n_tgt {
                format!("synapse {k}: post = {} is not a neuron of population {target:?} ({n_tgt} neurons)", list.post[k])
            } else if !list.weight[k].is_finite() || list.weight[k] < 0.0 {
                format!("synapse {k}: weight {} must be finite and not negative (a magnitude: receptor = \"inhibitory\" for inhibition)", list.weight[k])
            } else if !list.delay_ms[k].is_finite() {
                format!("synapse {k}: delay_ms {} must be finite", list.delay_ms[k])
            } else {
                continue;
            };
            return Err(self.error(at(), message));
        }
        Ok(())
    }

    /// The values population or input `i` (`table` "populations" or "inputs") lists per neuron
    /// (of its own or its target's `size`): given beside the text for exactly the fields its
    /// `listed` names, fields of its kind, one per neuron, each one the field can hold.
    fn listed_values(&mut self, table: &'static str, i: usize, listed: &[ListedField], size: u32, given: Option<&crate::sonata::NeuronValues>) -> Result<(), ModelError> {
        let of_input = table == "inputs";
        let (kind, python) = if of_input { ("input", "fum.Model.poisson(...,") } else { ("population", "fum.Model.population(...,") };
        if let Some(other) = listed.iter().find(|f| f.of_input() != of_input) {
            let whose = if of_input { "a population's field, not an input's" } else { "a Poisson input's field, not a population's" };
            return Err(self.error(path!(table, i, "listed"), format!("{} is {whose}", other.name())));
        }
        for field in ListedField::ALL {
            let values = given.and_then(|g| field.values(g));
            match (listed.contains(&field), values) {
                (false, None) => continue,
                (true, None) => {
                    let message = format!("{} listed per neuron comes with the model from Python ({python} {}=array)): a model file cannot list it", field.name(), field.name());
                    return Err(self.error(path!(table, i, "listed"), message));
                }
                (false, Some(_)) => return Err(self.error(path!(table, i, field.name()), format!("values are listed per neuron, but the {kind}'s `listed` does not name the field"))),
                (true, Some(values)) => {
                    if values.len() != size as usize {
                        return Err(self.error(path!(table, i, field.name()), format!("{} values listed for {size} neurons", values.len())));
                    }
                    if let Some((k, why)) = values.iter().enumerate().find_map(|(k, &v)| Some((k, field.refuses(v)?))) {
                        return Err(self.error(path!(table, i, field.name()), format!("neuron {k}: {why} (got {})", values[k])));
                    }
                }
            }
        }
        Ok(())
    }

    fn distribution(&mut self, path: Vec<Seg>, d: &Distribution) -> Result<(), ModelError> {
        match *d {
            Distribution::Constant(v) if !v.is_finite() => Err(self.error(path, "must be finite".into())),
            Distribution::Uniform { uniform: [lo, hi] } if !(lo.is_finite() && hi.is_finite()) => Err(self.error(path, format!("uniform = [{lo}, {hi}]: bounds must be finite"))),
            Distribution::Normal { normal: [mean, std] } if !(mean.is_finite() && std.is_finite()) => Err(self.error(path, format!("normal = [{mean}, {std}]: mean and standard deviation must be finite"))),
            Distribution::Uniform { uniform: [lo, hi] } if !(lo <= hi) => Err(self.error(path, format!("uniform = [{lo}, {hi}]: low must not exceed high"))),
            Distribution::Normal { normal: [_, std] } if !(std >= 0.0) => Err(self.error(path, format!("normal standard deviation must not be negative (got {std})"))),
            Distribution::LogNormal { lognormal: [mu, sigma] } if !(mu.is_finite() && sigma.is_finite()) => Err(self.error(path, format!("lognormal = [{mu}, {sigma}]: mu and sigma must be finite"))),
            Distribution::LogNormal { lognormal: [_, sigma] } if !(sigma >= 0.0) => Err(self.error(path, format!("lognormal sigma must not be negative (got {sigma})"))),
            _ => Ok(()),
        }
    }

    /// Checks a name and adds it to `seen`, the names of the entries before it. Names become
    /// HDF5 group names (spikes.h5, probes.h5) and are printed: no `/`, not `.` or `..`, no
    /// control or bidirectional-override characters.
    fn name(&mut self, path: Vec<Seg>, name: &'a str, seen: &mut HashSet<&'a str>) -> Result<(), ModelError> {
        let unprintable = |c: char| c.is_control() || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains(unprintable) {
            return Err(self.error(path, format!("{name:?} is not a valid name (non-empty, not . or .., no '/', no control or bidirectional characters)")));
        }
        if !seen.insert(name) {
            return Err(self.error(path, format!("the name {name:?} is used twice")));
        }
        Ok(())
    }

    fn population(&mut self, path: Vec<Seg>, name: &str) -> Result<usize, ModelError> {
        match self.populations.get(name).copied() {
            Some(i) => Ok(i),
            None => {
                let known: Vec<&str> = self.model.spec.populations.iter().map(|p| p.name.as_str()).collect();
                Err(self.error(path, format!("no population named {name:?} (populations: {})", known.join(", "))))
            }
        }
    }
}

/// Byte offset of the value at `path` (or of the deepest part of it that exists).
fn span_of(doc: &toml::Spanned<toml::de::DeTable<'_>>, path: &[Seg]) -> usize {
    use toml::de::DeValue;
    let mut best = doc.span().start;
    let mut table = Some(doc.get_ref());
    let mut array: Option<&[toml::Spanned<DeValue<'_>>]> = None;
    for seg in path {
        let value = match (seg, table, array) {
            (Seg::Key(k), Some(t), _) => t.get(*k),
            (Seg::Index(i), _, Some(a)) => a.get(*i),
            _ => None,
        };
        let Some(value) = value else { break };
        best = value.span().start;
        table = None;
        array = None;
        match value.get_ref() {
            DeValue::Table(t) => table = Some(t),
            DeValue::Array(a) => array = Some(a.as_ref()),
            _ => {}
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: &str = r#"
[simulation]
duration_ms = 1.0

[[populations]]
name = "E"
size = 80
model = "lif_cuba"

[[populations]]
name = "I"
size = 20
model = "lif_cuba"

[[projections]]
name = "p"
source = "E"
target = "I"
rule = { fixed_probability = 0.25 }
weight = 1.0

[[projections]]
name = "in"
source = "E"
target = "I"
rule = { fixed_indegree = 7 }
weight = 1.0

[[projections]]
name = "out"
source = "I"
target = "E"
rule = { fixed_outdegree = 3 }
weight = 1.0

[[projections]]
name = "one"
source = "I"
target = "I"
rule = "one_to_one"
weight = 1.0

[[projections]]
name = "all"
source = "I"
target = "E"
rule = "all_to_all"
weight = 1.0

[[projections]]
name = "total"
source = "E"
target = "E"
rule = { fixed_total_number = 1234 }
weight = 1.0
"#;

    #[test]
    fn expected_synapses_per_rule_and_in_all() {
        let model = Model::parse(MODEL, Path::new("m.toml")).unwrap();
        let per: Vec<f64> = model.spec.projections.iter().map(|p| model.expected_synapses_of(p)).collect();
        assert_eq!(per, [0.25 * 80.0 * 20.0, 7.0 * 20.0, 3.0 * 20.0, 20.0, 20.0 * 80.0, 1234.0]);
        assert_eq!(model.expected_synapses(), 400.0 + 140.0 + 60.0 + 20.0 + 1600.0 + 1234.0);
    }

    #[test]
    fn expected_synapses_at_the_limits_and_of_none() {
        let max = f64::from(u32::MAX);
        assert_eq!(ConnectionRule::AllToAll.expected_synapses(u32::MAX, u32::MAX), max * max);
        assert_eq!(ConnectionRule::FixedIndegree(u32::MAX).expected_synapses(1, u32::MAX), max * max);
        assert_eq!(ConnectionRule::FixedProbability(0.0).expected_synapses(u32::MAX, u32::MAX), 0.0);
        assert_eq!(ConnectionRule::FixedTotalNumber(u64::MAX).expected_synapses(1, 1), u64::MAX as f64);
        let text = "[simulation]\nduration_ms = 1.0\n[[populations]]\nname = \"A\"\nsize = 1\nmodel = \"lif_cuba\"\n";
        let model = Model::parse(text, Path::new("m.toml")).unwrap();
        assert!(model.expected_synapses().is_sign_positive(), "no projections: +0, printed as 0");
    }

    /// Populations A (3 neurons) and B (4), and projection "ab" from A to B of `rule`.
    fn two(rule: &str) -> String {
        format!(
            "[simulation]\nduration_ms = 5.0\n[[populations]]\nname = \"A\"\nsize = 3\nmodel = \"lif_cuba\"\n[[populations]]\nname = \"B\"\nsize = 4\nmodel = \"lif_cuba\"\n\
             [[projections]]\nname = \"ab\"\nsource = \"A\"\ntarget = \"B\"\nrule = {rule}\nweight = 2.0\ndelay_ms = 1.0\n"
        )
    }

    /// Every (pre, post) of A onto B, pre-major, weight 2 and delay 1 ms (all_to_all's synapses).
    fn all_pairs() -> crate::sonata::SynapseList {
        let mut list = crate::sonata::SynapseList::default();
        for pre in 0..3 {
            for post in 0..4 {
                list.pre.push(pre);
                list.post.push(post);
                list.weight.push(2.0);
                list.delay_ms.push(1.0);
            }
        }
        list
    }

    fn refused(result: Result<Model, ModelError>) -> String {
        result.expect_err("refused").to_string()
    }

    #[test]
    fn listed_synapses_count_and_take_their_range_as_weight_and_delay() {
        let mut list = all_pairs();
        list.weight[5] = 3.5;
        list.delay_ms[0] = 2.0;
        let model = Model::parse_listed(&two("{ explicit = 12 }"), Path::new("m.toml"), vec![("ab".into(), list.clone())], vec![], vec![]).unwrap();
        assert_eq!(model.expected_synapses(), 12.0);
        assert_eq!(model.explicit_synapses(0), Some(&list));
        let p = &model.spec.projections[0];
        assert_eq!(p.weight, Distribution::Uniform { uniform: [2.0, 3.5] });
        assert_eq!(p.delay_ms, Some(Distribution::Uniform { uniform: [1.0, 2.0] }));
        // The lists are part of the model's hash (a checkpoint of other synapses is refused).
        list.weight[5] = 3.0;
        let other = Model::parse_listed(&two("{ explicit = 12 }"), Path::new("m.toml"), vec![("ab".into(), list)], vec![], vec![]).unwrap();
        assert_ne!(model.hash(), other.hash());
    }

    #[test]
    fn listed_synapses_build_the_blocks_of_the_rule_they_spell_out() {
        let drawn = Model::parse(&two("\"all_to_all\""), Path::new("m.toml")).unwrap();
        let listed = Model::parse_listed(&two("{ explicit = 12 }"), Path::new("m.toml"), vec![("ab".into(), all_pairs())], vec![], vec![]).unwrap();
        for shards in [1, 2] {
            let blocks = |model: &Model| {
                let mut world = crate::build::build_world(model, shards).unwrap();
                let mut q = world.query::<(&crate::components::Shard, &crate::components::SynapseBlocks)>();
                let mut found: Vec<(usize, Vec<u32>, Vec<u32>, Vec<f32>)> =
                    q.iter(&world).flat_map(|(s, b)| b.0.iter().map(move |b| (s.index, b.row_ptr.to_vec(), b.target.to_vec(), b.weight.to_f32()))).collect();
                found.sort_by_key(|b| b.0);
                found
            };
            assert_eq!(blocks(&drawn), blocks(&listed), "{shards} shards");
        }
    }

    #[test]
    fn listed_synapses_are_refused_naming_what_is_wrong() {
        let text = two("{ explicit = 12 }");
        let at = |e: String, what: &str| assert!(e.contains("projections[0].rule.explicit: ") && e.contains(what), "{e}");
        at(refused(Model::parse(&text, Path::new("m.toml"))), "a model file cannot list them");
        let mut list = all_pairs();
        list.pre[7] = 3;
        at(refused(Model::parse_listed(&text, Path::new("m.toml"), vec![("ab".into(), list)], vec![], vec![])), "synapse 7: pre = 3 is not a neuron of population \"A\" (3 neurons)");
        let mut list = all_pairs();
        list.post[2] = 9;
        at(refused(Model::parse_listed(&text, Path::new("m.toml"), vec![("ab".into(), list)], vec![], vec![])), "synapse 2: post = 9 is not a neuron of population \"B\" (4 neurons)");
        let mut list = all_pairs();
        list.weight[4] = f32::NAN;
        at(refused(Model::parse_listed(&text, Path::new("m.toml"), vec![("ab".into(), list)], vec![], vec![])), "synapse 4: weight NaN must be finite");
        let mut list = all_pairs();
        list.delay_ms[1] = f64::INFINITY;
        at(refused(Model::parse_listed(&text, Path::new("m.toml"), vec![("ab".into(), list)], vec![], vec![])), "synapse 1: delay_ms inf must be finite");
        let mut list = all_pairs();
        list.post.pop();
        at(refused(Model::parse_listed(&text, Path::new("m.toml"), vec![("ab".into(), list)], vec![], vec![])), "columns differ in length (pre 12, post 11");
        at(refused(Model::parse_listed(&two("{ explicit = 11 }"), Path::new("m.toml"), vec![("ab".into(), all_pairs())], vec![], vec![])), "11 synapses declared, 12 listed");
        // A delay below half a step rounds to none, as for a drawn projection.
        let mut list = all_pairs();
        list.delay_ms[3] = 0.01;
        let e = refused(Model::parse_listed(&text, Path::new("m.toml"), vec![("ab".into(), list)], vec![], vec![]));
        assert!(e.contains("projections[0].delay_ms: a delay of 0.01 ms is shorter than one step"), "{e}");
        let e = refused(Model::parse_listed(&two("\"all_to_all\""), Path::new("m.toml"), vec![("ab".into(), all_pairs())], vec![], vec![]));
        assert!(e.contains("projections[0].rule: its synapses are listed"), "{e}");
        let e = refused(Model::parse_listed(&text, Path::new("m.toml"), vec![("ba".into(), all_pairs())], vec![], vec![]));
        assert!(e.contains("no projection") || e.contains("which the model does not have"), "{e}");
    }

    /// Populations A and B of [`two`] with `fields` added to A, which lists them per neuron.
    fn listing(fields: &str) -> String {
        two("\"all_to_all\"").replacen("model = \"lif_cuba\"\n", &format!("model = \"lif_cuba\"\n{fields}\n"), 1)
    }

    fn values(v_init_mv: Option<Vec<f64>>, i_e_pa: Option<Vec<f64>>) -> Vec<(String, crate::sonata::NeuronValues)> {
        vec![("A".into(), crate::sonata::NeuronValues { v_init_mv, i_e_pa, rate_hz: None })]
    }

    #[test]
    fn values_listed_per_neuron_take_their_range_and_are_part_of_the_hash() {
        let text = listing("listed = [\"v_init_mv\", \"i_e_pa\"]");
        let model = Model::parse_listed(&text, Path::new("m.toml"), vec![], values(Some(vec![-70.0, -60.0, -65.0]), Some(vec![100.0, 300.0, 200.0])), vec![]).unwrap();
        let p = &model.spec.populations[0];
        assert_eq!(p.v_init_mv, Some(Distribution::Uniform { uniform: [-70.0, -60.0] }));
        assert_eq!(p.i_e_pa, Distribution::Uniform { uniform: [100.0, 300.0] });
        assert_eq!(model.neuron_values(0).and_then(|v| v.i_e_pa.clone()), Some(vec![100.0, 300.0, 200.0]));
        let other = Model::parse_listed(&text, Path::new("m.toml"), vec![], values(Some(vec![-70.0, -60.0, -65.0]), Some(vec![100.0, 300.0, 201.0])), vec![]).unwrap();
        assert_ne!(model.hash(), other.hash(), "models that differ only in a listed value");
        // The builder takes them: initial v and the bias column, in neuron order.
        let mut world = crate::build::build_world(&model, 2).unwrap();
        let mut q = world.query::<(&crate::components::Shard, &crate::components::NeuronBlock)>();
        let mut found: Vec<(u32, f32, f32)> = q.iter(&world).flat_map(|(s, b)| s.neurons.clone().zip(b.v.to_vec()).zip(b.bias_pa.as_ref().unwrap().to_vec()).map(|((n, v), i)| (n, v, i))).collect();
        found.sort_by_key(|f| f.0);
        assert_eq!(&found[..3], &[(0, -70.0, 100.0), (1, -60.0, 300.0), (2, -65.0, 200.0)]);
    }

    #[test]
    fn values_listed_per_neuron_are_refused_naming_what_is_wrong() {
        let both = listing("listed = [\"v_init_mv\", \"i_e_pa\"]");
        let at = |e: String, field: &str, what: &str| assert!(e.contains(&format!("populations[0].{field}: ")) && e.contains(what), "{e}");
        at(refused(Model::parse(&both, Path::new("m.toml"))), "listed", "v_init_mv listed per neuron comes with the model from Python");
        let good = || Some(vec![-70.0, -60.0, -65.0]);
        at(refused(Model::parse_listed(&both, Path::new("m.toml"), vec![], values(good(), None), vec![])), "listed", "i_e_pa listed per neuron comes with the model from Python");
        at(refused(Model::parse_listed(&both, Path::new("m.toml"), vec![], values(good(), Some(vec![1.0, 2.0])), vec![])), "i_e_pa", "2 values listed for 3 neurons");
        at(refused(Model::parse_listed(&both, Path::new("m.toml"), vec![], values(Some(vec![-70.0, f64::NAN, -65.0]), good()), vec![])), "v_init_mv", "neuron 1: must be a finite 32-bit float (got NaN)");
        at(refused(Model::parse_listed(&both, Path::new("m.toml"), vec![], values(good(), Some(vec![0.0, 0.0, 1e39])), vec![])), "i_e_pa", "neuron 2: must be a finite 32-bit float (got 1000000000000000000000000000000000000000)");
        let v_only = listing("listed = [\"v_init_mv\"]");
        at(refused(Model::parse_listed(&v_only, Path::new("m.toml"), vec![], values(good(), good()), vec![])), "i_e_pa", "the population's `listed` does not name the field");
        let e = refused(Model::parse_listed(&v_only, Path::new("m.toml"), vec![], vec![("C".into(), crate::sonata::NeuronValues { v_init_mv: good(), ..Default::default() })], vec![]));
        assert!(e.contains("populations: values are listed per neuron for a population named \"C\", which the model does not have"), "{e}");
        let e = refused(Model::parse(&listing("listed = [\"tau_m_ms\"]"), Path::new("m.toml")));
        assert!(e.contains("unknown variant `tau_m_ms`, expected one of `v_init_mv`, `i_e_pa`, `rate_hz`"), "{e}");
        let source = listing("").replace("model = \"lif_cuba\"\n\n", "model = \"spike_source\"\nspike_times_ms = [[], [], []]\nlisted = [\"v_init_mv\"]\n");
        at(refused(Model::parse_listed(&source, Path::new("m.toml"), vec![], values(good(), None), vec![])), "listed", "a spike_source has no membrane");
        at(refused(Model::parse(&listing("listed = [\"rate_hz\"]"), Path::new("m.toml"))), "listed", "rate_hz is a Poisson input's field, not a population's");
    }

    /// [`two`] with a Poisson input into B (4 neurons) whose `fields` follow its kind.
    fn driven(fields: &str) -> String {
        format!("{}[[inputs]]\nname = \"drive\"\nkind = \"poisson\"\ntarget = \"B\"\nweight = 1.0\n{fields}\n", two("\"all_to_all\""))
    }

    fn rates(rate_hz: Vec<f64>) -> Vec<(String, crate::sonata::NeuronValues)> {
        vec![("drive".into(), crate::sonata::NeuronValues { rate_hz: Some(rate_hz), ..Default::default() })]
    }

    #[test]
    fn rates_listed_per_target_neuron_take_their_range_are_built_and_are_part_of_the_hash() {
        let text = driven("listed = [\"rate_hz\"]");
        let model = Model::parse_listed(&text, Path::new("m.toml"), vec![], vec![], rates(vec![10.0, 0.0, 30.0, 20.0])).unwrap();
        assert_eq!(model.spec.inputs[0].rate_hz, Some(Distribution::Uniform { uniform: [0.0, 30.0] }));
        assert_eq!(model.input_rates_hz(0), Some(&[10.0, 0.0, 30.0, 20.0][..]));
        let other = Model::parse_listed(&text, Path::new("m.toml"), vec![], vec![], rates(vec![10.0, 0.0, 20.0, 30.0])).unwrap();
        assert_ne!(model.hash(), other.hash(), "models that differ only in a listed rate");
        // The builder takes them as a drawn rate's per-neuron means (dt 0.1 ms), in target order.
        let world = crate::build::build_world(&model, 2).unwrap();
        let source = &world.resource::<crate::components::PoissonSources>().0[0];
        let means: Vec<f64> = source.per_neuron.as_ref().unwrap().iter().map(|m| m[0]).collect();
        assert_eq!(means, [10.0, 0.0, 30.0, 20.0].map(|r| r * 0.1 * 1e-3));
        assert_eq!(source.mean_per_step, means.iter().sum::<f64>() / 4.0);
    }

    #[test]
    fn rates_listed_per_target_neuron_are_refused_naming_what_is_wrong() {
        let text = driven("listed = [\"rate_hz\"]");
        let at = |e: String, field: &str, what: &str| assert!(e.contains(&format!("inputs[0].{field}: ")) && e.contains(what), "{e}");
        at(refused(Model::parse(&text, Path::new("m.toml"))), "listed", "rate_hz listed per neuron comes with the model from Python (fum.Model.poisson(..., rate_hz=array))");
        at(refused(Model::parse_listed(&text, Path::new("m.toml"), vec![], vec![], rates(vec![1.0, 2.0, 3.0]))), "rate_hz", "3 values listed for 4 neurons");
        at(refused(Model::parse_listed(&text, Path::new("m.toml"), vec![], vec![], rates(vec![1.0, -2.0, 3.0, 4.0]))), "rate_hz", "neuron 1: must be a finite rate, not negative (got -2)");
        at(refused(Model::parse_listed(&text, Path::new("m.toml"), vec![], vec![], rates(vec![1.0, 2.0, 3.0, f64::INFINITY]))), "rate_hz", "neuron 3: must be a finite rate, not negative (got inf)");
        at(refused(Model::parse_listed(&driven("rate_hz = 5.0"), Path::new("m.toml"), vec![], vec![], rates(vec![1.0; 4]))), "rate_hz", "the input's `listed` does not name the field");
        at(refused(Model::parse(&driven("rate_hz = 5.0\nlisted = [\"i_e_pa\"]"), Path::new("m.toml"))), "listed", "i_e_pa is a population's field, not an input's");
        let dc = driven("listed = [\"rate_hz\"]").replace("kind = \"poisson\"\ntarget = \"B\"\nweight = 1.0", "kind = \"dc\"\ntarget = \"B\"\namplitude_pa = 1.0");
        at(refused(Model::parse(&dc, Path::new("m.toml"))), "listed", "belongs to kind = \"poisson\"");
        let e = refused(Model::parse_listed(&text, Path::new("m.toml"), vec![], vec![], vec![("noise".into(), crate::sonata::NeuronValues::default())]));
        assert!(e.contains("inputs: values are listed per neuron for an input named \"noise\", which the model does not have"), "{e}");
    }
}
