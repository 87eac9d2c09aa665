//! A spike with delay d arrives exactly d steps later with its weight, through the whole
//! engine (builder, input, LIF, exchange, delivery, recording).

mod common;
use common::*;

use fum::engine::recording::Recorder;

#[test]
fn spike_arrives_after_its_delay_with_its_weight() {
    for (delay_ms, delay_steps) in [(0.1, 1u32), (2.3, 23), (7.0, 70)] {
        let model = parse(&format!(
            r#"
[simulation]
dt_ms = 0.1
duration_ms = 30.0

[[populations]]
name = "pre"
size = 1
model = "lif_cuba"
i_e_pa = 1000.0

[[populations]]
name = "post"
size = 1
model = "lif_cuba"

[[projections]]
name = "link"
source = "pre"
target = "post"
rule = "one_to_one"
weight = 123.5
delay_ms = {delay_ms}

[recording]
spikes = ["pre"]

[[recording.probes]]
name = "current"
variable = "syn_ex"
population = "post"
neurons = [0]
"#
        ));
        let sim = simulate(&model, 1, 1);
        let rec = sim.world.resource::<Recorder>();
        let first_spike = rec.spikes[0].steps.pending[0];
        let current = &rec.probes[0].values.pending;
        let arrival = current.iter().position(|&i| i != 0.0).expect("the spike arrives") as u32;
        assert_eq!(arrival, first_spike + delay_steps, "delay {delay_ms} ms");
        assert_eq!(current[arrival as usize], 123.5);
        // Afterwards it decays with tau_syn_ex = 2 ms until the next spike arrives.
        let p11 = (-0.1f64 / 2.0).exp() as f32;
        assert_eq!(current[arrival as usize + 1], 123.5 * p11);
    }
}
