//! DC inputs that start and stop (`start_ms`, `stop_ms` of `kind = "dc"`, SONATA's
//! `current_clamp`): the current flows in exactly the steps of its window, so a neuron at rest
//! before it traces the always-on run shifted by the window's start, bit for bit; windows that
//! overlap add up; a resume inside a window continues one run.

mod common;
use common::*;

use fum::Simulation;
use fum::engine::components::Populations;
use fum::engine::recording::Recorder;

/// Unconnected neurons at rest (no bias, no input but the pulse) under a current that makes
/// them fire every few milliseconds from 20 ms to 60 ms.
const PULSE: &str = r#"
[simulation]
dt_ms = 0.1
duration_ms = 100.0
seed = 3

[[populations]]
name = "N"
size = 6
model = "lif_cuba"
tau_m_ms = 10.0
c_m_pf = 250.0
e_l_mv = -70.0

[[inputs]]
name = "pulse"
kind = "dc"
target = "N"
amplitude_pa = 1000.0
start_ms = 20.0
stop_ms = 60.0

[recording]
spikes = ["N"]

[[recording.probes]]
name = "v"
variable = "v"
population = "N"
neurons = [0, 5]
"#;

const START: u32 = 200;
const STOP: u32 = 600;

fn v_samples(sim: &Simulation) -> Vec<u32> {
    let (_, values) = sim.world.resource::<Recorder>().probe_samples(0).unwrap();
    values.into_iter().map(f32::to_bits).collect()
}

#[test]
fn a_pulse_is_the_always_on_current_shifted_to_its_start_and_nothing_outside_it() {
    let pulse = simulate(&parse(PULSE), 1, 1);
    let always = simulate(&parse(&PULSE.replace("start_ms = 20.0\nstop_ms = 60.0\n", "")), 1, 1);
    let (p, a) = (spikes(&pulse), spikes(&always));
    assert!(p.len() > 20, "the pulse makes the neurons fire: {} spikes", p.len());
    let shifted: Vec<_> = a.iter().filter(|s| s.1 < STOP - START).map(|&(pop, step, id)| (pop, step + START, id)).collect();
    assert_eq!(p, shifted, "spikes in the window are the always-on run's, shifted by its start; none outside it");
    // Two probed neurons a step: at rest (the bits of e_l) before the start, then the always-on
    // trace; after the stop the membrane relaxes toward rest, below threshold.
    let (pv, av) = (v_samples(&pulse), v_samples(&always));
    let rest = (-70.0f32).to_bits();
    assert!(pv[..2 * START as usize].iter().all(|&v| v == rest), "at rest before the start");
    assert_eq!(pv[2 * START as usize..2 * STOP as usize], av[..2 * (STOP - START) as usize], "the always-on trace, shifted");
    let after: Vec<f32> = pv[2 * STOP as usize + 2..].iter().step_by(2).map(|&b| f32::from_bits(b)).collect();
    assert!(after.windows(2).all(|w| w[1] <= w[0] && w[1] >= -70.0), "relaxing toward rest after the stop");
}

#[test]
fn overlapping_windows_add_up_and_an_open_window_runs_to_the_end() {
    let model = parse(&PULSE.replace(
        "[recording]",
        "[[inputs]]\nname = \"step\"\nkind = \"dc\"\ntarget = \"N\"\namplitude_pa = 200.0\nstart_ms = 40.0\n\n[[inputs]]\nname = \"bias\"\nkind = \"dc\"\ntarget = \"N\"\namplitude_pa = 10.0\n\n[recording]",
    ));
    let sim = Simulation::from_model(&model, 1, 1).unwrap();
    let pop = &sim.world.resource::<Populations>().0[0];
    assert_eq!(pop.current_pa, 10.0);
    assert_eq!(pop.current_changes[..], [(200, 1010.0), (400, 1210.0), (600, 210.0)]);
    let at: Vec<f32> = [0, 199, 200, 399, 400, 599, 600, 999].iter().map(|&s| pop.current_at(s)).collect();
    assert_eq!(at, [10.0, 10.0, 1010.0, 1010.0, 1210.0, 1210.0, 210.0, 210.0]);
}

#[test]
fn a_run_resumed_inside_the_window_or_after_it_is_one_run_on_any_shards() {
    let model = parse(&PULSE.replace("size = 6", "size = 60"));
    let whole = simulate(&model, 1, 1);
    for (split, threads, shards) in [(350, 1, 1), (650, 2, 3)] {
        let second = resumed_at(&model, split, threads, shards);
        let resumed: Vec<_> = spikes(&second).into_iter().filter(|s| s.1 >= split as u32).collect();
        let expected: Vec<_> = spikes(&whole).into_iter().filter(|s| s.1 >= split as u32).collect();
        assert_eq!(resumed, expected, "resumed at step {split} on {threads} threads and {shards} shards");
    }
}
