//! `Checkpoint::open`, `section`, `model_text` and `restore` on hostile files: no panic; a
//! failed restore leaves the world as it was; after a restore the outputs can be written.
//!
//! The first byte picks how the rest is read. Even: the rest is the file. Odd: bytes 1..3 are the
//! header length (u16 LE), then the header JSON, then the section data; the harness writes a valid
//! prefix (magic, version, length, header CRC) and, where the header parses, recomputes every
//! in-range section's CRC, so that mutations reach past the checksums to the fields behind them.
//!
//! RUSTC_BOOTSTRAP=1 cargo fuzz run -s none checkpoint_open fuzz/corpus/checkpoint_open \
//!     fuzz/seeds/checkpoint_open -- -max_len=65536
//!
//! The seeds and ckpt_model.toml come from `cargo test --release --test fuzz -- --ignored`
//! (tests/fuzz.rs `write_fuzz_seeds`): rerun it when the checkpoint layout changes.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fum::Model;
use fum::engine::checkpoint::{self, Checkpoint, FIXED_PREFIX};
use fum::engine::components::{Clock, NeuronBlock, Plasticity, Shard, SynapseBlocks};
use fum::engine::recording::Recorder;
use libfuzzer_sys::fuzz_target;

/// The model of the seed checkpoints (fuzz/seeds/checkpoint_open), from tests/fuzz.rs.
pub const MODEL: &str = include_str!("../ckpt_model.toml");

struct State {
    model: Model,
    sim: Option<fum::Simulation>,
    dir: tempfile::TempDir,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn sim(model: &Model) -> fum::Simulation {
    let mut sim = fum::Simulation::from_model(model, 1, 2).expect("the fuzz model builds");
    sim.add_plugins(fum::DefaultPlugins);
    sim
}

fn fingerprint(world: &mut bevy_ecs::world::World) -> String {
    let mut q = world.query::<(&Shard, &NeuronBlock, &SynapseBlocks)>();
    let mut shards: Vec<_> = q.iter(world).collect();
    shards.sort_by_key(|(s, _, _)| s.index);
    format!("{shards:?}{:?}{:?}{:?}", world.resource::<Plasticity>(), world.resource::<Recorder>(), world.resource::<Clock>())
}

fn file_bytes(data: &[u8]) -> Option<Vec<u8>> {
    let (&mode, rest) = data.split_first()?;
    if mode & 1 == 0 {
        return Some(rest.to_vec());
    }
    if rest.len() < 2 {
        return None;
    }
    let h = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
    let (mut header, body) = (rest[2..2 + h].to_vec(), &rest[2 + h..]);
    if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&header) {
        if let Some(sections) = v.get_mut("sections").and_then(|s| s.as_array_mut()) {
            for s in sections {
                let (Some(off), Some(len)) = (s.get("offset").and_then(|x| x.as_u64()), s.get("stored_len").and_then(|x| x.as_u64())) else { continue };
                if let Some(end) = off.checked_add(len).filter(|&e| e <= body.len() as u64) {
                    s["crc32"] = serde_json::json!(crc32fast::hash(&body[off as usize..end as usize]));
                }
            }
            header = serde_json::to_vec(&v).ok()?;
        }
    }
    let mut out = Vec::with_capacity(FIXED_PREFIX + header.len() + body.len());
    checkpoint::encode(&mut out, &header, body).expect("writes to memory");
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let Some(bytes) = file_bytes(data) else { return };
    let mut guard = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let state = guard.get_or_insert_with(|| {
        let model = Model::parse(MODEL, Path::new("ckpt.toml")).expect("the fuzz model parses");
        State { sim: None, model, dir: tempfile::tempdir().expect("a temporary folder") }
    });
    let path: PathBuf = state.dir.path().join("ckpt-000000001");
    std::fs::write(&path, &bytes).expect("writes the input");
    let Ok(ckpt) = Checkpoint::open(&path) else { return };
    let _ = ckpt.model_text();
    for s in &ckpt.header.sections {
        let _ = ckpt.section(&s.name);
    }
    let model = &state.model;
    let sim = state.sim.get_or_insert_with(|| sim(model));
    let before = fingerprint(&mut sim.world);
    match ckpt.restore(&mut sim.world, model.hash()) {
        // The outputs of a resumed run can be written; the world now holds the file's state:
        // build a fresh one for the next input.
        Ok(_) => {
            let rec = sim.world.resource::<Recorder>();
            let _ = rec.write_spikes(&state.dir.path().join("spikes.h5"), model);
            let _ = rec.write_probes(&state.dir.path().join("probes.h5"));
            state.sim = None;
        }
        Err(_) => assert!(fingerprint(&mut sim.world) == before, "a failed restore changed the world"),
    }
});
