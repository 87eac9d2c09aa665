//! Fuzzing of the two readers of untrusted files: model files (`Model::parse`, and what
//! `fum check` does after it) and checkpoints (`Checkpoint::open`, `section`, `model_text`,
//! `restore`). Nothing may panic, loop without end or allocate more than the input warrants;
//! model errors name the file and a line; a failed restore leaves the world untouched.
//!
//! Property cases default to a size that keeps this file fast (256 per model property, 64 per
//! checkpoint property); `PROPTEST_CASES=100000 cargo test --release --test fuzz` runs long.
//! The plain `#[test]`s at the end are regressions: inputs that crashed before a fix, and hostile
//! shapes worth keeping pinned.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fum::Model;
use fum::engine::checkpoint::{self, Checkpoint, FIXED_PREFIX, Snapshot};
use fum::engine::components::{Clock, NeuronBlock, Plasticity, Shard, StdpHistoryOverflows, SynapseBlocks};
use fum::engine::recording::Recorder;
use proptest::prelude::*;
use proptest::test_runner::Config;

mod common;

// ---------------------------------------------------------------------------------------------
// A per-thread allocation meter: the peak of live bytes allocated by this thread between
// `meter_start` and `meter_peak`. Checkpoint reading is single-threaded, so this bounds what a
// hostile file can make `open` / `restore` allocate (zstd's own buffers live in C malloc and are
// not counted).

struct Metered;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now)
            }
        });
    });
}

unsafe impl GlobalAlloc for Metered {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static METERED: Metered = Metered;

fn meter_start() -> isize {
    let live = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(live));
    live
}

/// Peak bytes allocated above the level at `meter_start`.
fn meter_peak(start: isize) -> usize {
    (PEAK.with(Cell::get) - start).max(0) as usize
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn config(default_cases: u32) -> Config {
    // Crashes found become plain #[test]s below, not a regressions file.
    Config { cases: cases(default_cases), failure_persistence: None, ..Config::default() }
}

// ---------------------------------------------------------------------------------------------
// Model files.

const ASSETS: [(&str, &str); 5] = [
    ("brunel.toml", include_str!("../assets/models/brunel.toml")),
    ("poisson_drive.toml", include_str!("../assets/models/poisson_drive.toml")),
    ("stdp_balanced.toml", include_str!("../assets/models/stdp_balanced.toml")),
    ("vogels_abbott_coba.toml", include_str!("../assets/models/vogels_abbott_coba.toml")),
    ("vogels_abbott_cuba.toml", include_str!("../assets/models/vogels_abbott_cuba.toml")),
];

const MODEL_PATH: &str = "fuzzed/model.toml";

/// Parses `text`; it must not panic, an error must start `fuzzed/model.toml:LINE:COLUMN:` with
/// a line inside the text, and a model that parses must survive what `fum check` does with it.
fn check_parse(text: &str) {
    match Model::parse(text, Path::new(MODEL_PATH)) {
        Ok(mut model) => {
            model.revalidate().expect("a parsed model revalidates");
            check_summary(&model);
        }
        Err(e) => {
            let msg = e.to_string();
            let rest = msg.strip_prefix(&format!("{MODEL_PATH}:")).unwrap_or_else(|| panic!("error without the path: {msg}"));
            let mut parts = rest.splitn(3, ':');
            let line: usize = parts.next().and_then(|l| l.parse().ok()).unwrap_or_else(|| panic!("error without a line: {msg}"));
            let column: usize = parts.next().and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("error without a column: {msg}"));
            let lines = text.matches('\n').count() + 1;
            assert!((1..=lines).contains(&line) && column >= 1, "line {line} column {column} outside a text of {lines} lines: {msg}");
        }
    }
}

/// What `fum check` computes from a valid model: a synapse estimate per projection and in all,
/// each a finite count (a valid model's probabilities lie in [0, 1], its sizes and degrees are
/// 32-bit), the total their sum; the steps and the hash.
fn check_summary(model: &Model) -> f64 {
    let mut total = 0.0;
    for p in &model.spec.projections {
        let n = model.expected_synapses_of(p);
        assert!(n.is_finite() && n >= 0.0, "projection {}: ~{n} synapses", p.name);
        total += n;
    }
    let all = model.expected_synapses();
    assert_eq!(all.to_bits(), total.to_bits(), "the total is the sum of the projections");
    let _ = format!("{all:.0}");
    let _ = model.steps();
    let _ = model.hash();
    all
}

/// Values worth trying wherever a value goes: extremes of every type the format uses.
const ODD_VALUES: &[&str] = &[
    "nan", "+nan", "-nan", "inf", "+inf", "-inf", "0", "-0", "0.0", "-0.0", "1", "-1", "5e-324", "1e-320", "1e-300", "1e-12",
    "1e300", "1.7976931348623157e308", "1023", "1024", "1025", "4194303", "4194304", "2147483647", "2147483648", "4294967294",
    "4294967295", "4294967296", "9223372036854775807", "-9223372036854775808", "18446744073709551615", "0x7fffffff",
    "0xffffffff", "1_000_000_000", "true", "false", "\"\"", "\"E\"", "\"I\"", "\"a/b\"", "\"lif_cuba\"", "\"lif_coba\"", "\"lif_psc_alpha\"",
    "\"poisson\"", "\"dc\"", "\"f32\"", "\"f16\"", "\"weight\"", "\"v\"", "\"one_to_one\"", "\"all_to_all\"", "\"inhibitory\"", "[]", "[0]",
    "[4294967295]", "[[0, 4294967295]]", "{}", "{ uniform = [nan, 1.0] }", "{ uniform = [1.0, nan] }",
    "{ uniform = [-inf, inf] }", "{ uniform = [0.0, inf] }", "{ uniform = [1.0, 1e300] }", "{ uniform = [5e-324, 5e-324] }",
    "{ normal = [nan, 1.0] }", "{ normal = [1.0, nan] }", "{ normal = [inf, 1.0] }", "{ normal = [1.0, inf] }",
    "{ normal = [1e300, 1e300] }", "{ fixed_indegree = 4294967295 }", "{ fixed_outdegree = 4294967295 }",
    "{ fixed_indegree = 0 }", "{ fixed_probability = nan }", "{ fixed_probability = 1.0 }", "{ fixed_probability = inf }",
    "{ fixed_total_number = 0 }", "{ fixed_total_number = 9223372036854775807 }",
    "1979-05-27T07:32:00Z", "'''\nmulti\n'''", "\"\\u00e9\"", "\"é\"", "\"\u{1F600}\"",
];

const KEYS: &[&str] = &[
    "dt_ms", "duration_ms", "seed", "threads", "shards", "name", "size", "model", "tau_m_ms", "c_m_pf", "e_l_mv", "v_th_mv",
    "v_reset_mv", "t_ref_ms", "tau_syn_ex_ms", "tau_syn_in_ms", "i_e_pa", "e_ex_mv", "e_in_mv", "v_init_mv", "syn_ex_init",
    "syn_in_init", "source", "target", "rule", "receptor", "weight", "delay_ms", "plasticity", "allow_autapses",
    "allow_multapses", "tau_plus_ms", "tau_minus_ms", "a_plus", "a_minus", "w_min", "w_max", "weight_dependence", "pairing", "lambda", "alpha", "mu",
    "kind", "rate_hz", "amplitude_pa", "spikes", "probes", "variable", "population", "neurons", "projection", "synapses",
    "interval_ms", "weights", "post_history", "integrator", "listed", "unknown",
];

const HEADERS: &[&str] = &[
    "[simulation]", "[[populations]]", "[[projections]]", "[[plasticity]]", "[[inputs]]", "[recording]",
    "[[recording.probes]]", "[populations]", "[[simulation]]", "[recording.probes]", "[a.b.c]", "[[", "]]",
];

fn toml_float(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{v:?}")
    }
}

fn value() -> impl Strategy<Value = String> {
    let num = prop_oneof![
        prop::sample::select(ODD_VALUES).prop_map(String::from),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<u32>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(toml_float),
        (-1e4f64..1e4).prop_map(toml_float),
    ];
    let num = num.boxed();
    prop_oneof![
        4 => num.clone(),
        1 => "[a-zA-Z_/ ]{0,6}".prop_map(|s| format!("{s:?}")),
        1 => (num.clone(), num.clone()).prop_map(|(a, b)| format!("{{ uniform = [{a}, {b}] }}")),
        1 => (num.clone(), num.clone()).prop_map(|(a, b)| format!("{{ normal = [{a}, {b}] }}")),
        1 => (prop::sample::select(&["fixed_indegree", "fixed_outdegree", "fixed_probability", "fixed_total_number"][..]), num.clone())
            .prop_map(|(r, k)| format!("{{ {r} = {k} }}")),
        1 => prop::collection::vec(num.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
        1 => (num.clone(), num).prop_map(|(a, b)| format!("[[{a}, {b}]]")),
        1 => any::<String>().prop_map(|s| s.chars().take(12).collect()),
    ]
}

#[derive(Clone, Debug)]
enum TextEdit {
    FlipBit { at: usize, bit: u8 },
    SetByte { at: usize, byte: u8 },
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    ReplaceValue { line: usize, value: String },
    InsertLine { at: usize, line: String },
    Truncate(usize),
}

fn text_edit() -> impl Strategy<Value = TextEdit> {
    let line = prop_oneof![
        3 => (prop::sample::select(KEYS), value()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => prop::sample::select(HEADERS).prop_map(String::from),
    ];
    prop_oneof![
        2 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| TextEdit::FlipBit { at, bit }),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| TextEdit::SetByte { at, byte }),
        2 => any::<usize>().prop_map(TextEdit::DeleteLine),
        2 => any::<usize>().prop_map(TextEdit::DuplicateLine),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| TextEdit::SwapLines(a, b)),
        6 => (any::<usize>(), value()).prop_map(|(line, value)| TextEdit::ReplaceValue { line, value }),
        2 => (any::<usize>(), line).prop_map(|(at, line)| TextEdit::InsertLine { at, line }),
        1 => any::<usize>().prop_map(TextEdit::Truncate),
    ]
}

fn apply_text_edit(text: &str, edit: &TextEdit) -> String {
    let mut lines: Vec<String> = text.split('\n').map(String::from).collect();
    let n = lines.len();
    let bytes = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = text.as_bytes().to_vec();
        if !b.is_empty() {
            f(&mut b);
        }
        String::from_utf8_lossy(&b).into_owned()
    };
    match edit {
        TextEdit::FlipBit { at, bit } => return bytes(&|b| {
            let i = at % b.len();
            b[i] ^= 1 << bit
        }),
        TextEdit::SetByte { at, byte } => return bytes(&|b| {
            let i = at % b.len();
            b[i] = *byte
        }),
        TextEdit::Truncate(at) => return bytes(&|b| b.truncate(at % (b.len() + 1))),
        TextEdit::DeleteLine(i) => {
            lines.remove(i % n);
        }
        TextEdit::DuplicateLine(i) => {
            let l = lines[i % n].clone();
            lines.insert(i % n, l);
        }
        TextEdit::SwapLines(a, b) => lines.swap(a % n, b % n),
        TextEdit::ReplaceValue { line, value } => {
            // The `line`-th (cyclically) line holding `key = value`.
            let with_value: Vec<usize> = (0..n).filter(|&i| lines[i].contains('=') && !lines[i].trim_start().starts_with('#')).collect();
            if let Some(&i) = with_value.get(line % with_value.len().max(1)) {
                let key = lines[i].split('=').next().unwrap_or("").to_string();
                lines[i] = format!("{key}= {value}");
            }
        }
        TextEdit::InsertLine { at, line } => lines.insert(at % (n + 1), line.clone()),
    }
    lines.join("\n")
}

/// A small, valid model whose every field is a slot; `slots` fills some with fuzzed values.
const TEMPLATE: &[(&str, &str)] = &[
    ("[simulation]", ""),
    ("dt_ms", "0.1"),
    ("duration_ms", "100.0"),
    ("seed", "1"),
    ("[[populations]]", ""),
    ("name", "\"E\""),
    ("size", "80"),
    ("model", "\"lif_cuba\""),
    ("tau_m_ms", "20.0"),
    ("v_init_mv", "{ uniform = [-70.0, -55.0] }"),
    ("[[populations]]", ""),
    ("name", "\"I\""),
    ("size", "20"),
    ("model", "\"lif_coba\""),
    ("e_ex_mv", "0.0"),
    ("syn_ex_init", "{ normal = [1.0, 0.5] }"),
    ("[[projections]]", ""),
    ("name", "\"EE\""),
    ("source", "\"E\""),
    ("target", "\"E\""),
    ("rule", "{ fixed_indegree = 10 }"),
    ("weight", "1.0"),
    ("delay_ms", "{ uniform = [0.5, 2.0] }"),
    ("plasticity", "\"stdp\""),
    ("allow_multapses", "false"),
    ("[[projections]]", ""),
    ("name", "\"EI\""),
    ("source", "\"E\""),
    ("target", "\"I\""),
    ("rule", "{ fixed_probability = 0.1 }"),
    ("receptor", "\"inhibitory\""),
    ("weight", "{ normal = [2.0, 1.0] }"),
    ("delay_ms", "{ normal = [1.5, 0.5] }"),
    ("[[plasticity]]", ""),
    ("name", "\"stdp\""),
    ("a_plus", "0.01"),
    ("a_minus", "0.01"),
    ("w_max", "5.0"),
    ("[[inputs]]", ""),
    ("name", "\"drive\""),
    ("kind", "\"poisson\""),
    ("target", "\"E\""),
    ("rate_hz", "8000.0"),
    ("weight", "1.0"),
    ("[recording]", ""),
    ("spikes", "[\"E\"]"),
    ("[[recording.probes]]", ""),
    ("name", "\"w\""),
    ("variable", "\"weight\""),
    ("projection", "\"EE\""),
    ("synapses", "[[10, 1]]"),
    ("interval_ms", "1.0"),
];

fn render_template(slots: &[(usize, String)]) -> String {
    let mut out = String::new();
    for (i, (key, value)) in TEMPLATE.iter().enumerate() {
        if value.is_empty() {
            out.push_str(key);
        } else {
            let v = slots.iter().rev().find(|(s, _)| s % TEMPLATE.len() == i).map_or(*value, |(_, v)| v.as_str());
            out.push_str(&format!("{key} = {v}"));
        }
        out.push('\n');
    }
    out
}

#[test]
fn the_template_is_valid() {
    Model::parse(&render_template(&[]), Path::new(MODEL_PATH)).unwrap();
}

proptest! {
    #![proptest_config(config(256))]

    /// Any text at all.
    #[test]
    fn parse_arbitrary_text(text in any::<String>()) {
        check_parse(&text);
    }

    /// Text made of TOML's punctuation, names and numbers.
    #[test]
    fn parse_toml_like_text(text in "([\\[\\]{}=\",.a-z0-9_ +\\-#'\n]|size|name|\\[\\[populations\\]\\]|\\[simulation\\]|nan|inf){0,120}") {
        check_parse(&text);
    }

    /// The shipped models, mutated: bytes, lines, values.
    #[test]
    fn parse_mutated_assets(asset in 0..ASSETS.len(), edits in prop::collection::vec(text_edit(), 1..6)) {
        let mut text = ASSETS[asset].1.to_string();
        for e in &edits {
            text = apply_text_edit(&text, e);
        }
        check_parse(&text);
    }

    /// A valid model with some fields replaced by odd values: reaches the semantic checks.
    #[test]
    fn parse_templated_values(slots in prop::collection::vec((any::<usize>(), value()), 1..5)) {
        check_parse(&render_template(&slots));
    }
}

#[test]
fn the_shipped_models_parse() {
    for (name, text) in ASSETS {
        Model::parse(text, Path::new(name)).unwrap_or_else(|e| panic!("{e}"));
        check_parse(text);
    }
}

// ---------------------------------------------------------------------------------------------
// Checkpoints.

/// Neurons in two populations, plastic and static projections with several delays, spike
/// recording, state and weight probes: every kind of checkpoint section.
const CKPT_MODEL: &str = r#"
[simulation]
dt_ms = 0.1
duration_ms = 10.0
seed = 5

[[populations]]
name = "E"
size = 40
model = "lif_cuba"
e_l_mv = 0.0
v_th_mv = 20.0
v_reset_mv = 10.0
v_init_mv = { uniform = [0.0, 20.0] }

[[populations]]
name = "I"
size = 10
model = "lif_coba"

[[projections]]
name = "EE"
source = "E"
target = "E"
rule = { fixed_indegree = 5 }
weight = 20.0
delay_ms = { uniform = [0.1, 1.0] }
plasticity = "stdp"

[[projections]]
name = "EI"
source = "E"
target = "I"
rule = { fixed_probability = 0.3 }
weight = 1.0
delay_ms = 0.5

[[plasticity]]
name = "stdp"
a_plus = 0.01
a_minus = 0.01
w_max = 100.0

[[inputs]]
name = "drive"
kind = "poisson"
target = "E"
rate_hz = 20000.0
weight = 30.0

[recording]
spikes = ["E", "I"]

[[recording.probes]]
name = "v"
variable = "v"
population = "E"
neurons = [0, 1, 2]

[[recording.probes]]
name = "w"
variable = "weight"
projection = "EE"
count = 1
"#;

struct Fixture {
    model: Model,
    /// A real checkpoint, written after some steps with spikes.
    bytes: Vec<u8>,
    header: serde_json::Value,
    /// The section data after the header.
    data: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let model = Model::parse(CKPT_MODEL, Path::new("ckpt.toml")).unwrap();
        let mut sim = fresh_sim(&model).unwrap();
        sim.run(200, |_| {});
        let dir = tempfile::tempdir().unwrap();
        let path = Snapshot::take(&mut sim.world, &model.source, model.hash(), serde_json::Value::Null).unwrap().write(dir.path(), 1).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (header, data) = split(&bytes);
        assert!(sim.world.resource::<Recorder>().spike_counts.iter().sum::<u64>() > 0, "the fixture should hold spikes");
        Fixture { model, bytes, header, data }
    })
}

fn fresh_sim(model: &Model) -> Result<fum::Simulation, fum::engine::BuildError> {
    let mut sim = fum::Simulation::from_model(model, 1, 2)?;
    sim.add_plugins(fum::DefaultPlugins);
    Ok(sim)
}

fn split(bytes: &[u8]) -> (serde_json::Value, Vec<u8>) {
    let len = u64::from_le_bytes(bytes[12..20].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[FIXED_PREFIX..FIXED_PREFIX + len]).unwrap();
    (header, bytes[FIXED_PREFIX + len..].to_vec())
}

/// A checkpoint file around `header` and `data`, with a header length and CRC that verify.
fn assemble(header: &serde_json::Value, data: &[u8]) -> Vec<u8> {
    encode(&serde_json::to_vec(header).unwrap(), data)
}

/// A checkpoint file around the header bytes `header_json` and `data`, as the engine writes it.
fn encode(header_json: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    checkpoint::encode(&mut out, header_json, data).expect("writes to memory");
    out
}

#[test]
fn the_reassembled_fixture_restores() {
    let fx = fixture();
    assert!(check_checkpoint(&assemble(&fx.header, &fx.data), 0));
}

/// Everything `restore` may change, as text (Debug prints floats exactly, and keeps this
/// independent of how each resource lays out its columns).
fn fingerprint(world: &mut bevy_ecs::world::World) -> Vec<u8> {
    let mut q = world.query::<(&Shard, &NeuronBlock, &SynapseBlocks)>();
    let mut shards: Vec<_> = q.iter(world).collect();
    shards.sort_by_key(|(s, _, _)| s.index);
    let mut out = format!("{shards:?}");
    out += &format!("{:?}", world.resource::<Plasticity>());
    out += &format!("{:?}", world.resource::<Recorder>());
    out += &format!("{:?}", world.resource::<Clock>());
    out += &format!("{:?}", world.resource::<StdpHistoryOverflows>());
    out.into_bytes()
}

/// Bytes of state a restore into the fixture's world may legitimately hold at once (twice the
/// world's restorable state).
fn world_state_bytes() -> usize {
    static BYTES: OnceLock<usize> = OnceLock::new();
    *BYTES.get_or_init(|| {
        let mut sim = fresh_sim(&fixture().model).unwrap();
        fingerprint(&mut sim.world).len()
    })
}

/// Opens, reads and restores `bytes` as a checkpoint file: no panic; an allocation peak bounded
/// by the file's size, the world's state and `content`, the decompressed size of the largest
/// section the file really holds (a section is decoded whole before its length is checked);
/// a failed restore changes nothing; after a restore, the outputs can be written (what `fum
/// resume` does at the end). Returns whether the restore succeeded.
fn check_checkpoint(bytes: &[u8], content: usize) -> bool {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("ckpt-000000001");
    std::fs::write(&path, bytes).unwrap();
    let mut sim = fresh_sim(&fx.model).unwrap();
    let before = fingerprint(&mut sim.world);
    // JSON values can take ~16x their text (Value nodes), the data is read whole, decoded
    // columns are world-sized.
    let bound = 64 * bytes.len() + 4 * world_state_bytes() + 3 * content + (1 << 20);
    let start = meter_start();
    let restored = (|| {
        let ckpt = Checkpoint::open(&path).ok()?;
        let _ = ckpt.model_text();
        for s in &ckpt.header.sections {
            let _ = ckpt.section(&s.name);
        }
        let result = ckpt.restore(&mut sim.world, fx.model.hash());
        Some(result.is_ok())
    })();
    let peak = meter_peak(start);
    assert!(peak <= bound, "reading a checkpoint of {} bytes allocated {peak} bytes (bound {bound})", bytes.len());
    match restored {
        Some(true) => {
            let rec = sim.world.resource::<Recorder>();
            let _ = rec.write_spikes(&dir.path().join("spikes.h5"), &fx.model);
            let _ = rec.write_probes(&dir.path().join("probes.h5"));
            true
        }
        _ => {
            assert!(fingerprint(&mut sim.world) == before, "a failed restore changed the world");
            false
        }
    }
}

#[test]
fn the_fixture_restores() {
    assert!(check_checkpoint(&fixture().bytes, 0));
}

#[derive(Clone, Debug)]
enum ByteEdit {
    FlipBit { at: usize, bit: u8 },
    SetByte { at: usize, byte: u8 },
    Truncate(usize),
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        4 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| ByteEdit::FlipBit { at, bit }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| ByteEdit::SetByte { at, byte }),
        1 => any::<usize>().prop_map(ByteEdit::Truncate),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(at, bytes)| ByteEdit::Insert { at, bytes }),
        1 => (any::<usize>(), 1usize..32).prop_map(|(at, len)| ByteEdit::Delete { at, len }),
    ]
}

fn apply_byte_edit(b: &mut Vec<u8>, edit: &ByteEdit) {
    if b.is_empty() {
        return;
    }
    let n = b.len();
    match edit {
        ByteEdit::FlipBit { at, bit } => b[at % n] ^= 1 << bit,
        ByteEdit::SetByte { at, byte } => b[at % n] = *byte,
        ByteEdit::Truncate(at) => b.truncate(at % n),
        ByteEdit::Insert { at, bytes } => {
            let at = at % (n + 1);
            b.splice(at..at, bytes.iter().copied());
        }
        ByteEdit::Delete { at, len } => {
            let at = at % n;
            b.drain(at..(at + len).min(n));
        }
    }
}

/// Numbers a hostile header may declare.
fn hostile_u64() -> impl Strategy<Value = u64> {
    let data_len = fixture().data.len() as u64;
    let file_len = fixture().bytes.len() as u64;
    prop_oneof![
        prop::sample::select(vec![
            0,
            1,
            2,
            3,
            4,
            7,
            8,
            u64::MAX,
            u64::MAX - 1,
            u64::MAX - 7,
            1 << 63,
            i64::MAX as u64,
            u64::from(u32::MAX),
            1 << 32,
            1 << 40,
            1 << 48,
            data_len,
            data_len - 1,
            data_len + 1,
            file_len,
            64 << 20,
        ]),
        any::<u64>(),
        0..4096u64,
    ]
}

#[derive(Clone, Debug)]
enum HeaderEdit {
    /// `offset`, `stored_len`, `raw_len` or `crc32` of one section.
    SectionField { section: usize, field: usize, value: u64 },
    /// A top-level number: `shards`, `step`, `model_hash`, `dt_ms`.
    TopField { field: usize, value: u64 },
    /// A field as another JSON type.
    WrongType { field: usize, section: Option<usize>, value: serde_json::Value },
    RemoveSection(usize),
    DuplicateSection(usize),
    /// Two sections swap names (their data then has the other's length and type).
    SwapNames(usize, usize),
    RenameSection { section: usize, name: String },
    /// The section's data replaced by `raw` (zstd, with a valid CRC); `declared` overrides the
    /// raw length in the header.
    ReplaceData { section: usize, raw: RawData, declared: Option<u64> },
    /// The section's stored bytes replaced by garbage, with a valid CRC.
    GarbageStored { section: usize, stored: Vec<u8> },
    /// The per-shard structure checksums rewritten.
    Structure(Vec<Vec<u32>>),
}

#[derive(Clone, Debug)]
enum RawData {
    Bytes(Vec<u8>),
    /// The section's real raw length plus `delta` bytes of `fill`.
    Resized { delta: i64, fill: u8 },
    /// Many zeros (compresses to almost nothing).
    Zeros(usize),
}

const SECTION_FIELDS: [&str; 4] = ["offset", "stored_len", "raw_len", "crc32"];
const TOP_FIELDS: [&str; 4] = ["shards", "step", "model_hash", "dt_ms"];
const ALL_FIELDS: [&str; 13] = [
    "shards", "step", "model_hash", "dt_ms", "structure", "sections", "fum_version", "run", "name", "offset", "stored_len",
    "raw_len", "crc32",
];

fn header_edit() -> impl Strategy<Value = HeaderEdit> {
    let json = prop_oneof![
        Just(serde_json::Value::Null),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(1.5)),
        Just(serde_json::json!(1e300)),
        Just(serde_json::json!("x")),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!([[u32::MAX], []])),
        Just(serde_json::json!(u64::MAX)),
    ];
    let raw = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256).prop_map(RawData::Bytes),
        (-16i64..16, any::<u8>()).prop_map(|(delta, fill)| RawData::Resized { delta, fill }),
        prop::sample::select(vec![1usize << 16, 1 << 20, 1 << 24]).prop_map(RawData::Zeros),
    ];
    prop_oneof![
        4 => (any::<usize>(), 0..4usize, hostile_u64()).prop_map(|(section, field, value)| HeaderEdit::SectionField { section, field, value }),
        2 => (0..4usize, hostile_u64()).prop_map(|(field, value)| HeaderEdit::TopField { field, value }),
        1 => (0..ALL_FIELDS.len(), prop::option::of(any::<usize>()), json).prop_map(|(field, section, value)| HeaderEdit::WrongType { field, section, value }),
        1 => any::<usize>().prop_map(HeaderEdit::RemoveSection),
        1 => any::<usize>().prop_map(HeaderEdit::DuplicateSection),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| HeaderEdit::SwapNames(a, b)),
        1 => (any::<usize>(), "(shard/[0-3]/|shard/0/block/[0-2]/|plasticity/[0-1]/|recorder/)?[a-z_/0-9]{0,12}")
            .prop_map(|(section, name)| HeaderEdit::RenameSection { section, name }),
        4 => (any::<usize>(), raw, prop::option::of(hostile_u64())).prop_map(|(section, raw, declared)| HeaderEdit::ReplaceData { section, raw, declared }),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(section, stored)| HeaderEdit::GarbageStored { section, stored }),
        1 => prop::collection::vec(prop::collection::vec(any::<u32>(), 0..3), 0..4).prop_map(HeaderEdit::Structure),
    ]
}

/// Applies `edit`; returns the size of the raw data it stored (0 if none).
fn apply_header_edit(header: &mut serde_json::Value, data: &mut Vec<u8>, edit: &HeaderEdit) -> usize {
    // Edits of section entries apply while `sections` is still a list of objects (an earlier
    // WrongType edit may have replaced it).
    let sections = header["sections"].as_array().filter(|s| s.iter().all(|e| e.is_object())).map_or(0, |s| s.len());
    let section = |i: usize| i % sections.max(1);
    match edit {
        HeaderEdit::SectionField { section: s, field, value } if sections > 0 => {
            let v = if SECTION_FIELDS[*field] == "crc32" { serde_json::json!(*value as u32) } else { serde_json::json!(value) };
            header["sections"][section(*s)][SECTION_FIELDS[*field]] = v;
        }
        HeaderEdit::TopField { field, value } => {
            header[TOP_FIELDS[*field]] = if TOP_FIELDS[*field] == "dt_ms" { serde_json::json!(*value as f64) } else { serde_json::json!(value) };
        }
        HeaderEdit::WrongType { field, section: Some(s), value } if sections > 0 && *field >= 8 => {
            header["sections"][section(*s)][ALL_FIELDS[*field]] = value.clone();
        }
        HeaderEdit::WrongType { field, value, .. } => header[ALL_FIELDS[*field]] = value.clone(),
        HeaderEdit::RemoveSection(s) if sections > 0 => {
            header["sections"].as_array_mut().unwrap().remove(section(*s));
        }
        HeaderEdit::DuplicateSection(s) if sections > 0 => {
            let all = header["sections"].as_array_mut().unwrap();
            let e = all[s % all.len()].clone();
            all.insert(0, e);
        }
        HeaderEdit::SwapNames(a, b) if sections > 0 => {
            let (a, b) = (section(*a), section(*b));
            let na = header["sections"][a]["name"].clone();
            let nb = header["sections"][b]["name"].clone();
            header["sections"][a]["name"] = nb;
            header["sections"][b]["name"] = na;
        }
        HeaderEdit::RenameSection { section: s, name } if sections > 0 => {
            header["sections"][section(*s)]["name"] = serde_json::json!(name);
        }
        HeaderEdit::ReplaceData { section: s, raw, declared } if sections > 0 => {
            let s = section(*s);
            let real = header["sections"][s]["raw_len"].as_u64().unwrap_or(0);
            let raw = match raw {
                RawData::Bytes(b) => b.clone(),
                RawData::Resized { delta, fill } => vec![*fill; (real as i64 + delta).clamp(0, 1 << 20) as usize],
                RawData::Zeros(n) => vec![0; *n],
            };
            let stored = zstd::bulk::compress(&raw, 1).unwrap();
            let e = &mut header["sections"][s];
            e["offset"] = serde_json::json!(data.len());
            e["stored_len"] = serde_json::json!(stored.len());
            e["raw_len"] = serde_json::json!(declared.unwrap_or(raw.len() as u64));
            e["crc32"] = serde_json::json!(crc32fast::hash(&stored));
            data.extend_from_slice(&stored);
            return raw.len();
        }
        HeaderEdit::GarbageStored { section: s, stored } if sections > 0 => {
            let e = &mut header["sections"][section(*s)];
            e["offset"] = serde_json::json!(data.len());
            e["stored_len"] = serde_json::json!(stored.len());
            e["crc32"] = serde_json::json!(crc32fast::hash(stored));
            data.extend_from_slice(stored);
        }
        HeaderEdit::Structure(s) => header["structure"] = serde_json::json!(s),
        _ => {}
    }
    0
}

proptest! {
    #![proptest_config(config(64))]

    /// Flipped, overwritten, inserted and deleted bytes, and truncation, anywhere in the file.
    #[test]
    fn checkpoint_mutated_bytes(edits in prop::collection::vec(byte_edit(), 1..5)) {
        let mut bytes = fixture().bytes.clone();
        for e in &edits {
            apply_byte_edit(&mut bytes, e);
        }
        check_checkpoint(&bytes, 0);
    }

    /// Byte edits confined to the section data (the header still verifies).
    #[test]
    fn checkpoint_mutated_data(edits in prop::collection::vec(byte_edit(), 1..4)) {
        let fx = fixture();
        let mut data = fx.data.clone();
        for e in &edits {
            apply_byte_edit(&mut data, e);
        }
        check_checkpoint(&assemble(&fx.header, &data), 0);
    }

    /// A rewritten header with hostile numbers, names and data, and checksums that verify.
    #[test]
    fn checkpoint_hostile_header(edits in prop::collection::vec(header_edit(), 1..5)) {
        let fx = fixture();
        let (mut header, mut data) = (fx.header.clone(), fx.data.clone());
        let mut content = 0;
        for e in &edits {
            content = content.max(apply_header_edit(&mut header, &mut data, e));
        }
        check_checkpoint(&assemble(&header, &data), content);
    }

    /// Arbitrary bytes after a valid prefix and a JSON header of arbitrary text.
    #[test]
    fn checkpoint_arbitrary_header_text(text in any::<String>(), tail in prop::collection::vec(any::<u8>(), 0..64)) {
        check_checkpoint(&encode(text.as_bytes(), &tail), 0);
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions and pinned hostile shapes.

#[test]
fn a_header_declaring_huge_lengths_is_refused_without_allocating() {
    let fx = fixture();
    for section in [0, 1] {
        for field in ["offset", "stored_len", "raw_len"] {
            for value in [u64::MAX, u64::MAX - 1, 1 << 40, fx.data.len() as u64 + 1] {
                let mut header = fx.header.clone();
                header["sections"][section][field] = serde_json::json!(value);
                let name = header["sections"][section]["name"].as_str().unwrap().to_string();
                let bytes = assemble(&header, &fx.data);
                // open checks every section's extent; restore does not read model.toml, but
                // model_text then fails.
                assert_eq!(check_checkpoint(&bytes, 0), section == 0 && field == "raw_len", "{name}: {field} = {value}");
                let dir = tempfile::tempdir().unwrap();
                std::fs::write(dir.path().join("c"), &bytes).unwrap();
                if let Ok(c) = Checkpoint::open(&dir.path().join("c")) {
                    assert!(c.section(&name).is_err(), "{name}: {field} = {value}");
                }
            }
        }
    }
}

#[test]
fn a_header_length_past_the_file_is_refused() {
    let mut bytes = fixture().bytes.clone();
    for len in [u64::MAX, 64 << 20, bytes.len() as u64] {
        bytes[12..20].copy_from_slice(&len.to_le_bytes());
        assert!(!check_checkpoint(&bytes, 0));
    }
}

#[test]
fn every_truncation_is_refused() {
    let bytes = &fixture().bytes;
    for len in (0..bytes.len()).step_by(7) {
        assert!(!check_checkpoint(&bytes[..len], 0), "{len} bytes");
    }
}

#[test]
fn every_section_with_a_wrong_length_is_refused_and_changes_nothing() {
    let fx = fixture();
    let names: Vec<String> = fx.header["sections"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    for (i, name) in names.iter().enumerate() {
        // Recorded columns have no fixed length, but must agree with their partners (spike
        // steps with node ids, probe times with values), and a resize breaks that.
        if name == "model.toml" || name == "plasticity/enabled" {
            continue;
        }
        let real = fx.header["sections"][i]["raw_len"].as_u64().unwrap() as i64;
        for delta in [-4i64, 1, 4] {
            if real + delta < 0 {
                continue;
            }
            let mut header = fx.header.clone();
            let mut data = fx.data.clone();
            let content = apply_header_edit(&mut header, &mut data, &HeaderEdit::ReplaceData { section: i, raw: RawData::Resized { delta, fill: 0x7f }, declared: None });
            assert!(!check_checkpoint(&assemble(&header, &data), content), "{name} with {delta} bytes restored");
        }
    }
}

/// Sizes near u32::MAX, huge degrees without multapses, NaN and infinite floats, tiny dt and
/// long durations: each is refused at its line with what is wrong, from the numbers alone,
/// without building anything (how long parsing at the limits takes is a figure of
/// benches/model_parse.rs).
#[test]
fn odd_numbers_in_a_model_are_refused_at_their_line() {
    const TOO_MANY: &str = "5:1: populations: 4294967315 neurons: at most 2^32 - 1 are supported";
    // (slot, value, the error alone, the error with E at 2^32 - 1 neurons without multapses)
    let cases: &[(usize, &str, &str, &str)] = &[
        (6, "4294967295", TOO_MANY, TOO_MANY),
        (6, "4294967294", "5:1: populations: 4294967314 neurons", TOO_MANY),
        (12, "4294967295", "5:1: populations: 4294967375 neurons", "5:1: populations: 8589934590 neurons"),
        (20, "{ fixed_indegree = 4294967295 }", "21:27: projections[0].rule.fixed_indegree: 4294967295 distinct sources requested from a population of 80", TOO_MANY),
        (20, "{ fixed_outdegree = 4294967295 }", "21:28: projections[0].rule.fixed_outdegree: 4294967295 distinct targets requested in a population of 80", TOO_MANY),
        (1, "5e-324", "3:15: simulation.duration_ms: more than 2^32 steps", "3:15: simulation.duration_ms: more than 2^32 steps"),
        (1, "1e-300", "3:15: simulation.duration_ms: more than 2^32 steps", "3:15: simulation.duration_ms: more than 2^32 steps"),
        (1, "nan", "2:9: simulation.dt_ms: must be positive and finite (got NaN)", "2:9: simulation.dt_ms: must be positive and finite (got NaN)"),
        (2, "1e300", "3:15: simulation.duration_ms: more than 2^32 steps", "3:15: simulation.duration_ms: more than 2^32 steps"),
        (2, "inf", "3:15: simulation.duration_ms: must be positive and finite (got inf)", "3:15: simulation.duration_ms: must be positive and finite (got inf)"),
        (2, "nan", "3:15: simulation.duration_ms: must be positive and finite (got NaN)", "3:15: simulation.duration_ms: must be positive and finite (got NaN)"),
        (22, "{ uniform = [0.0, inf] }", "23:12: projections[0].delay_ms: uniform = [0, inf]: bounds must be finite", TOO_MANY),
        (22, "{ uniform = [1e300, 1e300] }", "23:12: projections[0].delay_ms: a delay of 1000000", TOO_MANY),
        (22, "{ normal = [nan, 1.0] }", "23:12: projections[0].delay_ms: normal = [NaN, 1]: mean and standard deviation must be finite", TOO_MANY),
        (32, "{ normal = [nan, 0.5] }", "33:12: projections[1].delay_ms: normal = [NaN, 0.5]: mean and standard deviation must be finite", TOO_MANY),
        (32, "{ normal = [inf, 0.5] }", "33:12: projections[1].delay_ms: normal = [inf, 0.5]: mean and standard deviation must be finite", TOO_MANY),
        (32, "{ normal = [1.5, inf] }", "33:12: projections[1].delay_ms: normal = [1.5, inf]: mean and standard deviation must be finite", TOO_MANY),
        (9, "{ normal = [nan, nan] }", "10:13: populations[0].v_init_mv: normal = [NaN, NaN]: mean and standard deviation must be finite", "10:13: populations[0].v_init_mv: normal = [NaN, NaN]"),
        (15, "{ uniform = [-inf, inf] }", "16:15: populations[1].syn_ex_init: uniform = [-inf, inf]: bounds must be finite", "16:15: populations[1].syn_ex_init: uniform = [-inf, inf]"),
        (42, "inf", "43:11: inputs[0].rate_hz: must be a finite number (got inf)", TOO_MANY),
    ];
    for &(slot, value, alone, at_the_limit) in cases {
        let variants = [(vec![(slot, value.to_string())], alone), (vec![(slot, value.to_string()), (6, "4294967295".into()), (24, "false".into())], at_the_limit)];
        for (slots, expected) in variants {
            let text = render_template(&slots);
            check_parse(&text);
            let err = Model::parse(&text, Path::new(MODEL_PATH)).expect_err("refused").to_string();
            assert!(err.starts_with(&format!("{MODEL_PATH}:{expected}")), "{slot} = {value}: {err}");
        }
    }
}

/// One value too many for a probe's rows (or one spike step without its node id), with valid
/// checksums: `restore` accepted it, and writing probes.h5 at the end of the resumed run then
/// panicked ("rows of equal length" in recording.rs `ndarray_2d`). Now `restore` refuses it.
#[test]
fn ragged_recorded_columns_are_refused() {
    let fx = fixture();
    let names: Vec<String> = fx.header["sections"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    let mut tried = 0;
    for (i, name) in names.iter().enumerate() {
        let extra = if name.starts_with("recorder/probe-") && name.ends_with("-values") {
            4
        } else if name.starts_with("recorder/spikes-") && name.ends_with("-steps") {
            4
        } else {
            continue;
        };
        let mut header = fx.header.clone();
        let mut data = fx.data.clone();
        let content = apply_header_edit(&mut header, &mut data, &HeaderEdit::ReplaceData { section: i, raw: RawData::Resized { delta: extra, fill: 0 }, declared: None });
        assert!(!check_checkpoint(&assemble(&header, &data), content), "{name} with {extra} more bytes restored");
        tried += 1;
    }
    assert!(tried >= 3, "the fixture records spikes and probes");
}

/// Cutting a recording log back to the checkpoint's cursor used to happen while the state was
/// being applied: an I/O error there (here the log is a folder) returned an error with the
/// neurons already restored and the recorder not. Now the logs are cut before the world changes.
#[test]
fn a_log_that_cannot_be_cut_leaves_the_world_untouched() {
    let fx = fixture();
    let logs = tempfile::tempdir().unwrap();
    std::fs::create_dir(logs.path().join("spikes-0-steps.bin")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt-000000001");
    std::fs::write(&path, &fx.bytes).unwrap();
    let mut sim = fresh_sim(&fx.model).unwrap();
    sim.world.resource_mut::<Recorder>().log_dir = Some(logs.path().to_path_buf());
    let before = fingerprint(&mut sim.world);
    let err = Checkpoint::open(&path).unwrap().restore(&mut sim.world, fx.model.hash()).unwrap_err();
    assert!(err.to_string().contains("spikes-0-steps.bin"), "{err}");
    assert!(fingerprint(&mut sim.world) == before, "a failed restore changed the world");
}

/// Validation looked names up by linear scans, quadratic in the number of entries: a 6 MB
/// model of 40,000 populations and 40,000 projections took 16 s to parse (and 30 MB would take
/// minutes). It uses hash maps now; how the parse time grows with the entries is a figure of
/// benches/model_parse.rs.
#[test]
fn many_populations_and_projections_parse() {
    let n = 40_000;
    let text = common::many_populations(n);
    let model = Model::parse(&text, Path::new("many.toml")).unwrap();
    assert_eq!((model.spec.populations.len(), model.spec.projections.len()), (n, n));
    assert_eq!(model.expected_synapses(), n as f64, "one synapse per one_to_one projection of one neuron");
    // A repeated name is still found, at its line.
    let dup = text.clone() + "[[populations]]\nname = \"p7\"\nsize = 1\nmodel = \"lif_cuba\"\n";
    let err = Model::parse(&dup, Path::new("many.toml")).unwrap_err().to_string();
    let line = dup.lines().count() - 2;
    assert!(err.starts_with(&format!("many.toml:{line}:")) && err.contains("\"p7\" is used twice"), "{err}");
}

/// `fum check` itself on a model at the limits (`common::AT_THE_LIMITS`): it parses, summarises
/// and refuses it for memory without building, within 1 GiB of address space where the
/// membrane potentials alone would take 16 GiB; one step or one neuron past the limits is
/// refused at its line.
#[test]
fn fum_check_on_models_at_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::AT_THE_LIMITS;
    let path = dir.path().join("limits.toml");
    std::fs::write(&path, model).unwrap();
    let out = std::process::Command::new("sh")
        .args(["-c", "ulimit -v 1048576 && exec \"$0\" check \"$1\"", env!("CARGO_BIN_EXE_fum")])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Valid, summarised, then refused for memory (exit 2) at the largest projection, with the sizes.
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("limits.toml:17:8: projections[0].rule: the network needs about ") && stderr.contains("4294967295 neurons") && stderr.contains("available"), "{stderr}");
    assert!(stdout.contains("4294967295 neurons") && stdout.contains("4000000000 steps"), "{stdout}");
    let parsed = Model::parse(model, &path).unwrap();
    for p in &parsed.spec.projections {
        assert!(stdout.contains(&format!(": ~{:.0} synapses", parsed.expected_synapses_of(p))), "{}: {stdout}", p.name);
    }
    assert!(stdout.contains(&format!("synapses         ~{:.0}\n", parsed.expected_synapses())), "{stdout}");
    // One more step than 2^32 - 1, and one source too many: refused with the line.
    for (from, to, line) in [("duration_ms = 4e-291", "duration_ms = 4.3e-291", 4), ("size = 4294967295", "size = 4294967294", 17)] {
        std::fs::write(&path, model.replacen(from, to, 1)).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fum")).arg("check").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&format!("limits.toml:{line}:")), "{stderr}");
    }
}

/// Writes the seed corpora and the checkpoint model of the cargo-fuzz targets (fuzz/); rerun
/// after a change of the checkpoint layout: `cargo test --release --test fuzz -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let fx = fixture();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    std::fs::write(root.join("ckpt_model.toml"), &fx.model.source).unwrap();
    let c = root.join("seeds/checkpoint_open");
    std::fs::create_dir_all(&c).unwrap();
    let mut raw = vec![0u8];
    raw.extend_from_slice(&fx.bytes);
    std::fs::write(c.join("seed-raw"), raw).unwrap();
    let h = serde_json::to_vec(&fx.header).unwrap();
    let mut st = vec![1u8];
    st.extend_from_slice(&(h.len() as u16).to_le_bytes());
    st.extend_from_slice(&h);
    st.extend_from_slice(&fx.data);
    std::fs::write(c.join("seed-structured"), st).unwrap();
    let m = root.join("seeds/model_parse");
    std::fs::create_dir_all(&m).unwrap();
    for (name, text) in ASSETS {
        std::fs::write(m.join(name), text).unwrap();
    }
    std::fs::write(m.join("template.toml"), render_template(&[])).unwrap();
    std::fs::write(m.join("ckpt_model.toml"), &fx.model.source).unwrap();
}

