"""SONATA import against the model file it stands for: a circuit written here with h5py, csv
and json, following the SONATA spec (not with fum's code), from the synapses a TOML model
builds, gives the same spikes, bit for bit, as the TOML model; also on 2 shards and 2 threads,
and stopped at a checkpoint and resumed.

`fum run` is the binary at $FUM_BIN, else target/release/fum; tests that need it, h5py or
numpy are skipped, saying so, where they are missing."""

import csv
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

import fum
from support import ROOT, fum_binary, h5py

DURATION_MS = 300.0

# Two node types of one node population "E" (their nodes interleaved: Ea has the even ids, Eb
# the odd ones) and a population "I". NEST's iaf_psc_exp parameters, in NEST's units.
NEST_PARAMS = {
    "Ea": dict(C_m=250.0, tau_m=20.0, t_ref=2.0, E_L=-65.0, V_th=-50.0, V_reset=-65.0, tau_syn_ex=2.0, tau_syn_in=5.0, I_e=220.0, V_m=-65.0),
    "Eb": dict(C_m=200.0, tau_m=15.0, t_ref=2.5, E_L=-65.0, V_th=-52.0, V_reset=-66.0, tau_syn_ex=2.0, tau_syn_in=5.0, I_e=260.0, V_m=-60.0),
    "I": dict(C_m=250.0, tau_m=10.0, t_ref=1.0, E_L=-70.0, V_th=-55.0, V_reset=-70.0, tau_syn_ex=1.0, tau_syn_in=3.0, I_e=400.0, V_m=-70.0),
}
SIZES = {"Ea": 120, "Eb": 120, "I": 60}
FIELDS = dict(C_m="c_m_pf", tau_m="tau_m_ms", t_ref="t_ref_ms", E_L="e_l_mv", V_th="v_th_mv", V_reset="v_reset_mv",
              tau_syn_ex="tau_syn_ex_ms", tau_syn_in="tau_syn_in_ms", I_e="i_e_pa", V_m="v_init_mv")
EXC_DELAY_MS, INH_DELAY_MS = 1.5, 0.8
INH_WEIGHT = 60.0


def model_toml():
    text = f"[simulation]\ndt_ms = 0.1\nduration_ms = {DURATION_MS}\nseed = 11\n\n"
    for name, params in NEST_PARAMS.items():
        text += f'[[populations]]\nname = "{name}"\nsize = {SIZES[name]}\nmodel = "lif_cuba"\n'
        text += "".join(f"{FIELDS[k]} = {v}\n" for k, v in params.items()) + "\n"
    for src in ("Ea", "Eb"):
        for tgt in ("Ea", "Eb", "I"):
            text += (f'[[projections]]\nname = "{src}_{tgt}"\nsource = "{src}"\ntarget = "{tgt}"\n'
                     f'rule = {{ fixed_probability = 0.1 }}\nweight = {{ uniform = [20.0, 45.0] }}\ndelay_ms = {EXC_DELAY_MS}\n\n')
    for tgt in ("Ea", "Eb", "I"):
        text += (f'[[projections]]\nname = "I_{tgt}"\nsource = "I"\ntarget = "{tgt}"\nreceptor = "inhibitory"\n'
                 f'rule = {{ fixed_indegree = 10 }}\nweight = {INH_WEIGHT}\ndelay_ms = {INH_DELAY_MS}\n\n')
    text += '[recording]\nspikes = ["Ea", "Eb", "I"]\n'
    return text


def sonata_id(population, local):
    """The SONATA (node population, node_id) of a TOML neuron."""
    local = np.asarray(local, dtype=np.int64)
    if population == "Ea":
        return "E", 2 * local
    if population == "Eb":
        return "E", 2 * local + 1
    return "I", local


def write_circuit(d: Path, net, h5):
    """The circuit of the TOML model `net` (its synapses from a one-step run), as BMTK lays
    one out: network/*.h5 and *_types.csv, components/ with dynamics_params JSON, a circuit
    config with a manifest, and a simulation config with run.tstop and run.dt."""
    (d / "network").mkdir(parents=True)
    (d / "components" / "point_neuron_models").mkdir(parents=True)
    (d / "components" / "synaptic_models").mkdir(parents=True)
    type_ids = {"Ea": 100, "Eb": 101, "I": 200}
    for name, params in NEST_PARAMS.items():
        (d / "components" / "point_neuron_models" / f"{name}.json").write_text(json.dumps(params))
    (d / "components" / "synaptic_models" / "static.json").write_text("{}")
    with open(d / "network" / "node_types.csv", "w", newline="") as f:
        w = csv.writer(f, delimiter=" ")
        w.writerow(["node_type_id", "model_type", "model_template", "dynamics_params", "pop_name"])
        for name, t in type_ids.items():
            w.writerow([t, "point_neuron", "nest:iaf_psc_exp", f"{name}.json", name])
    with h5.File(d / "network" / "nodes.h5", "w") as f:
        for pop, members in (("E", ("Ea", "Eb")), ("I", ("I",))):
            ids = np.concatenate([sonata_id(m, np.arange(SIZES[m]))[1] for m in members])
            types = np.concatenate([np.full(SIZES[m], type_ids[m]) for m in members])
            order = np.argsort(ids)
            g = f.create_group(f"nodes/{pop}")
            g.create_dataset("node_id", data=ids[order].astype(np.uint64))
            g.create_dataset("node_type_id", data=types[order].astype(np.uint64))
            g.create_dataset("node_group_id", data=np.zeros(len(ids), dtype=np.uint32))
            g.create_dataset("node_group_index", data=np.arange(len(ids), dtype=np.uint64))
            g.create_group("0").create_dataset("x", data=np.zeros(len(ids)))  # a position: ignored
    # Excitatory edges: syn_weight per edge, delay per edge type; inhibitory edges: delay per
    # edge, syn_weight (negative: inhibitory in NEST) per edge type.
    with open(d / "network" / "edge_types.csv", "w", newline="") as f:
        w = csv.writer(f, delimiter=" ")
        w.writerow(["edge_type_id", "model_template", "dynamics_params", "delay", "syn_weight"])
        w.writerow([1, "static_synapse", "static.json", EXC_DELAY_MS, "NULL"])
        w.writerow([2, "static_synapse", "static.json", "NULL", -INH_WEIGHT])
    rng = np.random.default_rng(5)
    synapses = 0
    with h5.File(d / "network" / "edges.h5", "w") as f:
        for source_pop, target_pop in (("E", "E"), ("E", "I"), ("I", "E"), ("I", "I")):
            pop = f"{source_pop}_to_{target_pop}"
            inhibitory = source_pop == "I"
            pre, post, weight = [], [], []
            for src in (("Ea", "Eb") if source_pop == "E" else ("I",)):
                for tgt in (("Ea", "Eb") if target_pop == "E" else ("I",)):
                    s = net.weights(f"{src}_{tgt}")
                    pre.append(sonata_id(src, s.pre)[1])
                    post.append(sonata_id(tgt, s.post)[1])
                    weight.append(np.asarray(s.weight, dtype=np.float64))
            pre, post, weight = np.concatenate(pre), np.concatenate(post), np.concatenate(weight)
            # Edges in an order of their own: the import must not depend on it.
            order = rng.permutation(len(pre))
            pre, post, weight = pre[order], post[order], weight[order]
            synapses += len(pre)
            g = f.create_group(f"edges/{pop}")
            g.create_dataset("source_node_id", data=pre.astype(np.uint64)).attrs["node_population"] = source_pop
            g.create_dataset("target_node_id", data=post.astype(np.uint64)).attrs["node_population"] = target_pop
            g.create_dataset("edge_group_id", data=np.zeros(len(pre), dtype=np.uint32))
            g.create_dataset("edge_group_index", data=np.arange(len(pre), dtype=np.uint64))
            g0 = g.create_group("0")
            if inhibitory:
                g.create_dataset("edge_type_id", data=np.full(len(pre), 2, dtype=np.uint32))
                g0.create_dataset("delay", data=np.full(len(pre), INH_DELAY_MS))
            else:
                g.create_dataset("edge_type_id", data=np.full(len(pre), 1, dtype=np.uint32))
                g0.create_dataset("syn_weight", data=weight)
                g0.create_dataset("nsyns", data=np.ones(len(pre), dtype=np.uint32))
    circuit = {
        "manifest": {"$BASE_DIR": "${configdir}", "$NETWORK_DIR": "$BASE_DIR/network", "$COMPONENTS_DIR": "$BASE_DIR/components"},
        "components": {"point_neuron_models_dir": "$COMPONENTS_DIR/point_neuron_models", "synaptic_models_dir": "$COMPONENTS_DIR/synaptic_models"},
        "networks": {
            "nodes": [{"nodes_file": "$NETWORK_DIR/nodes.h5", "node_types_file": "$NETWORK_DIR/node_types.csv"}],
            "edges": [{"edges_file": "$NETWORK_DIR/edges.h5", "edge_types_file": "$NETWORK_DIR/edge_types.csv"}],
        },
    }
    (d / "circuit_config.json").write_text(json.dumps(circuit, indent=2))
    simulation = {"manifest": {"$OUTPUT_DIR": "./output"}, "run": {"tstop": DURATION_MS, "dt": 0.1}, "network": "circuit_config.json"}
    (d / "simulation_config.json").write_text(json.dumps(simulation, indent=2))
    return synapses


@pytest.fixture(scope="module")
def circuit(tmp_path_factory):
    h5 = h5py("writes the SONATA circuit and reads spikes.h5")
    binary = fum_binary()
    d = tmp_path_factory.mktemp("sonata")
    toml = d / "model.toml"
    toml.write_text(model_toml())
    net = fum.Model.from_toml(toml).run(0.1, threads=1, progress=False)
    synapses = write_circuit(d / "circuit", net, h5)
    subprocess.run([str(binary), "run", str(toml), "--threads", "2", "--out", str(d / "toml"), "--quiet"], check=True)
    return d, synapses


def spikes(path, h5=None):
    """(node population, sorted list of (time, node_id)) of a spikes.h5."""
    h5 = h5 or h5py("writes the SONATA circuit and reads spikes.h5")
    out = {}
    with h5.File(path, "r") as f:
        for pop, g in f["spikes"].items():
            out[pop] = list(zip(g["timestamps"][()].tolist(), g["node_ids"][()].tolist()))
    return out


def toml_spikes_as_sonata(path):
    """The TOML run's spikes under the SONATA circuit's node populations and ids."""
    out = {}
    for name, train in spikes(path).items():
        pop, ids = sonata_id(name, [i for _, i in train])
        out.setdefault(pop, []).extend(zip([t for t, _ in train], ids.tolist()))
    return {pop: sorted(train) for pop, train in out.items()}


def run_sonata(d, name, *args):
    out = d / name
    subprocess.run([str(fum_binary()), "run", "--sonata", str(d / "circuit" / "simulation_config.json"), "--out", str(out), "--quiet", *args], check=True)
    return out


def test_sonata_circuit_gives_the_toml_models_spikes(circuit):
    d, _ = circuit
    expected = toml_spikes_as_sonata(d / "toml" / "spikes.h5")
    assert sum(len(t) for t in expected.values()) > 1000, "the network fires"
    got = spikes(run_sonata(d, "sonata", "--threads", "1") / "spikes.h5")
    assert sorted(got) == ["E", "I"]
    for pop in ("E", "I"):
        assert got[pop] == sorted(got[pop]), "sorted by time, then node_id"
        assert got[pop] == expected[pop], pop


def test_check_counts_the_circuits_synapses(circuit):
    d, synapses = circuit
    check = subprocess.run([str(fum_binary()), "check", "--sonata", str(d / "circuit" / "circuit_config.json")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert f"synapses         ~{synapses}\n" in check.stdout, check.stdout


def test_shards_and_threads_do_not_change_the_spikes(circuit):
    d, _ = circuit
    one = spikes(run_sonata(d, "one", "--threads", "1", "--shards", "1") / "spikes.h5")
    two = spikes(run_sonata(d, "two", "--threads", "2", "--shards", "2") / "spikes.h5")
    three = spikes(run_sonata(d, "three", "--threads", "2", "--shards", "3") / "spikes.h5")
    assert one == two == three


def test_resumed_run_gives_the_spikes_of_one_run(circuit):
    d, _ = circuit
    whole = spikes(run_sonata(d, "whole", "--threads", "2") / "spikes.h5")
    out = run_sonata(d, "stopped", "--threads", "2", "--checkpoint-every", "50ms", "--stop-after", "120ms")
    subprocess.run([str(fum_binary()), "resume", str(out), "--quiet"], check=True)
    assert spikes(out / "spikes.h5") == whole


def test_current_clamps_as_bmtk_lists_them_are_the_toml_models_dc_pulses(circuit):
    """Two IClamp pulses into node population "E" (both its node types), listed as BMTK lists
    them (amp in pA, delay and duration in ms), against the TOML model with a DC input of
    start_ms and stop_ms per pulse and population."""
    d, _ = circuit
    config = json.loads((d / "circuit" / "simulation_config.json").read_text())
    config["inputs"] = {"pulses": {"input_type": "current_clamp", "module": "IClamp", "node_set": "E",
                                   "amp": [150.0, -100.0], "delay": [100.0, 200.0], "duration": [50.0, 30.5]}}
    (d / "circuit" / "simulation_clamps.json").write_text(json.dumps(config))
    out = d / "clamped-sonata"
    subprocess.run([str(fum_binary()), "run", "--sonata", str(d / "circuit" / "simulation_clamps.json"), "--out", str(out), "--quiet"], check=True)
    toml = d / "clamped.toml"
    pulses = "".join(f'[[inputs]]\nname = "p{k}_{pop}"\nkind = "dc"\ntarget = "{pop}"\namplitude_pa = {amp}\nstart_ms = {start}\nstop_ms = {stop}\n\n'
                     for k, (amp, start, stop) in enumerate([(150.0, 100.0, 150.0), (-100.0, 200.0, 230.5)]) for pop in ("Ea", "Eb"))
    toml.write_text(model_toml().replace("[recording]", pulses + "[recording]"))
    subprocess.run([str(fum_binary()), "run", str(toml), "--out", str(d / "clamped-toml"), "--quiet"], check=True)
    expected = toml_spikes_as_sonata(d / "clamped-toml" / "spikes.h5")
    assert spikes(out / "spikes.h5") == expected
    assert expected != toml_spikes_as_sonata(d / "toml" / "spikes.h5"), "the pulses change the spikes"


def test_unsupported_model_is_refused_with_file_type_and_field(circuit, tmp_path):
    d, _ = circuit
    import shutil
    c = tmp_path / "circuit"
    shutil.copytree(d / "circuit", c)
    types = (c / "network" / "node_types.csv").read_text()
    (c / "network" / "node_types.csv").write_text(types.replace("200 point_neuron nest:iaf_psc_exp", "200 point_neuron nest:iaf_cond_alpha"))
    check = subprocess.run([str(fum_binary()), "check", "--sonata", str(c / "circuit_config.json")], capture_output=True, text=True)
    assert check.returncode != 0
    assert "node_types.csv: population \"I\", node_type_id 200: model_template \"nest:iaf_cond_alpha\" is not supported (supported: nest:iaf_psc_exp, nest:iaf_psc_alpha)" in check.stderr, check.stderr


def test_virtual_nodes_fire_at_a_bmtk_spike_inputs_times_and_drive_their_targets(tmp_path):
    """BMTK's way of driving a circuit: a `virtual` node population (LGN) whose spikes come from
    the simulation config's `inputs` (a SONATA spikes file written here with h5py), its edges
    into point neurons. LGN fires at the listed times placed on the 0.1 ms grid as NEST's
    spike_generator places them (an off-grid time at the next step), and each spike, through a
    2 ms edge strong enough to fire its target in one step, fires that target 2.1 ms later
    (the current jumps at the end of the arrival step, the membrane integrates it in the next)."""
    h5 = h5py("writes the virtual nodes' spikes and reads spikes.h5")
    binary = fum_binary()
    d = tmp_path
    (d / "params").mkdir()
    (d / "params" / "V1.json").write_text(json.dumps({"tau_syn_ex": 0.1, "t_ref": 1.0}))
    with open(d / "node_types.csv", "w", newline="") as f:
        w = csv.writer(f, delimiter=" ")
        w.writerow(["node_type_id", "model_type", "model_template", "dynamics_params", "pop_name"])
        w.writerow([1, "virtual", "NULL", "NULL", "LGN"])
        w.writerow([2, "point_neuron", "nest:iaf_psc_exp", "V1.json", "V1"])
    # LGN's node ids are not 0..n-1: spikes name nodes by node_id.
    lgn_ids = np.array([10, 11, 12, 13], dtype=np.uint64)
    with h5.File(d / "nodes.h5", "w") as f:
        for pop, ids, t in (("LGN", lgn_ids, 1), ("V1", np.arange(4, dtype=np.uint64), 2)):
            g = f.create_group(f"nodes/{pop}")
            g.create_dataset("node_id", data=ids)
            g.create_dataset("node_type_id", data=np.full(len(ids), t, dtype=np.uint32))
    with open(d / "edge_types.csv", "w", newline="") as f:
        w = csv.writer(f, delimiter=" ")
        w.writerow(["edge_type_id", "model_template", "delay", "syn_weight"])
        w.writerow([1, "static_synapse", 2.0, 1.0e5])
    with h5.File(d / "edges.h5", "w") as f:
        g = f.create_group("edges/LGN_to_V1")
        g.create_dataset("source_node_id", data=lgn_ids).attrs["node_population"] = "LGN"
        g.create_dataset("target_node_id", data=np.arange(4, dtype=np.uint64)).attrs["node_population"] = "V1"
        g.create_dataset("edge_type_id", data=np.ones(4, dtype=np.uint32))
    # Node 13 never fires; node 12 at 0.25 ms (off the grid: step 3) and at 7.0 ms.
    listed = [(4.0, 10), (0.25, 12), (1.5, 11), (7.0, 12)]
    with h5.File(d / "lgn_spikes.h5", "w") as f:
        g = f.create_group("spikes/LGN")
        g.attrs["sorting"] = "none"
        g.create_dataset("timestamps", data=np.array([t for t, _ in listed])).attrs["units"] = "ms"
        g.create_dataset("node_ids", data=np.array([n for _, n in listed], dtype=np.uint64))
    circuit = {"networks": {"nodes": [{"nodes_file": "nodes.h5", "node_types_file": "node_types.csv"}],
                            "edges": [{"edges_file": "edges.h5", "edge_types_file": "edge_types.csv"}]},
               "components": {"point_neuron_models_dir": "params"}}
    (d / "circuit_config.json").write_text(json.dumps(circuit))
    simulation = {"network": "circuit_config.json", "run": {"tstop": 12.0, "dt": 0.1},
                  "inputs": {"LGN_spikes": {"input_type": "spikes", "module": "sonata", "input_file": "lgn_spikes.h5", "node_set": "LGN"}}}
    (d / "simulation_config.json").write_text(json.dumps(simulation))
    subprocess.run([str(binary), "run", "--sonata", str(d / "simulation_config.json"), "--out", str(d / "out"), "--quiet"], check=True)
    got = spikes(d / "out" / "spikes.h5", h5)
    fired = sorted((math.ceil(round(t * 10, 6)) / 10, n) for t, n in listed)  # the step at or after each time
    assert got["LGN"] == sorted(fired)
    assert got["V1"] == sorted((round(t + 2.1, 10), n - 10) for t, n in fired)
