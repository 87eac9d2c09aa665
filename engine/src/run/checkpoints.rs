//! Checkpoints during a run: periodic ones, one on a viewer's request, a last one where a run
//! ends early.
//!
//! Concurrency contract: snapshots are copied at a step boundary on the simulation thread and
//! compressed and written by a background thread, so the simulation pauses only for the copy.
//! It never waits for the disk: the channel to the writer holds one snapshot, so memory stays
//! bounded if the disk is slow; a snapshot that finds it full is kept and handed over at a later
//! step, and if the next one is due first, it supersedes the waiting one
//! (`checkpoints_superseded`). Across ranks every rank snapshots at the same steps and rank 0
//! gathers and writes (`crate::ranks`).

use std::path::PathBuf;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Instant;

use bevy_ecs::prelude::*;

use super::RunError;
use crate::Model;
use crate::backend::{HostView, sync_to_host};
use crate::checkpoint::{self, CheckpointError, Snapshot};

/// The checkpoint writer of a run with an output folder, held as a resource while it runs.
#[derive(Resource)]
pub struct Checkpoints {
    dir: PathBuf,
    model_text: String,
    model_hash: u64,
    /// The run's settings, stored in every checkpoint for `fum resume`.
    settings: serde_json::Value,
    /// Steps between periodic checkpoints, if any.
    every: Option<u64>,
    end_step: u64,
    /// The writer thread (rank 0 only, across ranks: `crate::ranks`).
    tx: Option<SyncSender<Snapshot>>,
    writer: Option<JoinHandle<Result<u64, CheckpointError>>>,
    /// A snapshot that found the writer busy.
    waiting: Option<Snapshot>,
    totals: CheckpointTotals,
}

/// What the checkpoints of a run cost and came to.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckpointTotals {
    pub written: u64,
    pub superseded: u64,
    /// Time the simulation waited for periodic snapshots (copies) and hand-over.
    pub pause_s: f64,
}

impl Checkpoints {
    /// Starts the writer thread for `dir`, which keeps the newest `keep` checkpoints of run
    /// `run_id` (and leaves any other run's alone).
    pub fn start(dir: PathBuf, keep: usize, every: Option<u64>, end_step: u64, model: &Model, run_id: u64, settings: serde_json::Value) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Snapshot>(1);
        let writer_dir = dir.clone();
        let writer = crate::ranks::writes().then(|| {
            std::thread::Builder::new()
                .name("fum-checkpoint".into())
                .spawn(move || -> Result<u64, CheckpointError> {
                    let mut written = 0;
                    for snap in rx {
                        snap.write(&writer_dir, 1)?;
                        checkpoint::prune(&writer_dir, keep, run_id);
                        written += 1;
                    }
                    Ok(written)
                })
                .expect("a thread for the checkpoint writer")
        });
        let tx = writer.is_some().then_some(tx);
        let (model_text, model_hash) = (model.source.clone(), model.hash());
        Checkpoints { dir, model_text, model_hash, settings, every, end_step, tx, writer, waiting: None, totals: CheckpointTotals::default() }
    }

    /// The state of `world`; across ranks every rank's shards, gathered at rank 0 (`None` on
    /// the others: they only take part).
    fn snapshot(&self, world: &mut World) -> Result<Option<Snapshot>, String> {
        sync_to_host(world, HostView::Everything)?;
        let snap = Snapshot::take(world, &self.model_text, self.model_hash, self.settings.clone()).map_err(|e| format!("synapse pages: {e}"))?;
        Ok(match crate::ranks::transport() {
            Some(transport) => snap.gather(transport),
            None => Some(snap),
        })
    }

    /// Hands a checkpoint of `world` to the writer, waiting until it takes it (a run's first).
    pub fn write_now(&mut self, world: &mut World) -> Result<(), RunError> {
        if let (Some(snap), Some(tx)) = (self.snapshot(world).map_err(RunError::Sync)?, &self.tx) {
            tx.send(snap).ok();
        }
        Ok(())
    }

    /// A checkpoint on request, handed over at once so that a paused run writes it too; says
    /// where it goes.
    pub fn request(&mut self, world: &mut World, done: u64) -> Result<String, String> {
        if let Some(snap) = self.snapshot(world)? {
            let snap = self.replace_waiting(snap);
            self.hand_over(snap);
        }
        Ok(format!("checkpoint of step {done} goes to {}", self.dir.display()))
    }

    /// Whether [`Checkpoints::between_steps`] has anything to do after `done` steps.
    pub fn has_work(&self, done: u64) -> bool {
        self.due(done) || self.waiting.is_some()
    }

    fn due(&self, done: u64) -> bool {
        self.every.is_some_and(|every| done.is_multiple_of(every) && done != self.end_step)
    }

    /// Takes the periodic checkpoint if due after `done` steps, and hands over the waiting one.
    pub fn between_steps(&mut self, world: &mut World, done: u64) -> Result<(), String> {
        let t = Instant::now();
        let due = self.due(done);
        if due {
            if let Some(snap) = self.snapshot(world)? {
                self.waiting = Some(self.replace_waiting(snap));
            }
        }
        if let Some(snap) = self.waiting.take() {
            self.hand_over(snap);
        }
        if due {
            self.totals.pause_s += t.elapsed().as_secs_f64();
        }
        Ok(())
    }

    /// Writes a last checkpoint if `last` and waits for the writer to finish.
    pub fn finish(mut self, world: &mut World, last: bool) -> Result<CheckpointTotals, RunError> {
        if last {
            if let Some(snap) = self.snapshot(world).map_err(RunError::Sync)? {
                let snap = self.replace_waiting(snap);
                if let Some(tx) = &self.tx {
                    tx.send(snap).ok();
                }
            }
        }
        let Checkpoints { tx, writer, mut totals, .. } = self;
        drop(tx);
        if let Some(writer) = writer {
            totals.written = writer.join().expect("the checkpoint writer does not panic")?;
        }
        Ok(totals)
    }

    /// Offers `snap` to the writer; kept waiting if the writer is busy.
    fn hand_over(&mut self, snap: Snapshot) {
        let Some(tx) = &self.tx else { return };
        if let Err(TrySendError::Full(snap)) = tx.try_send(snap) {
            self.waiting = Some(snap);
        }
    }

    /// `newer`, having taken over the snapshot still waiting for the writer, if any (counted).
    fn replace_waiting(&mut self, newer: Snapshot) -> Snapshot {
        match self.waiting.take() {
            Some(older) => {
                self.totals.superseded += 1;
                newer.supersede(older)
            }
            None => newer,
        }
    }
}
