//! The link between a run and a viewer: frames go through a one-frame [`Slot`], requests
//! through a channel ([`Envelope`]s that say where the reply goes). [`channel`] makes a fresh
//! link; the simulation side that fills it lives in the engine (`fum_engine::observe`).
//!
//! Hand-over contract. A [`Slot`] holds one frame at a time. The simulation thread never waits
//! for a viewer: it only tries the slot's lock ([`Slot::offer`]), and if the viewer holds it,
//! the steps wait for the next hand-over. If the viewer has not taken the previous frame, the
//! new steps are merged into it, so a slow viewer receives fewer, larger frames; past
//! [`MAX_FRAME_SPIKES`](crate::MAX_FRAME_SPIKES) spike ids in one frame, further ids are
//! dropped and counted in [`Frame::spikes_dropped`] (population counts stay exact). While no viewer watches
//! ([`Slot::set_watching`]), the simulation builds no frame at all.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, TryLockError};
use std::time::Duration;

use crate::messages::{Frame, Reply, Request};

/// The hand-over slot for frames (see the module's hand-over contract).
#[derive(Debug, Default)]
pub struct Slot {
    frame: Mutex<Option<Frame>>,
    ready: Condvar,
    watching: AtomicBool,
    closed: AtomicBool,
}

impl Slot {
    /// A slot; frames are built only while it is marked as watched.
    pub fn new(watching: bool) -> Arc<Slot> {
        let slot = Slot::default();
        slot.watching.store(watching, Ordering::Relaxed);
        Arc::new(slot)
    }

    /// Adds `frame` to the one waiting, if any. Never waits: gives `frame` back when the lock
    /// is busy.
    #[expect(clippy::result_large_err, reason = "the frame goes back by value to the simulation, which keeps building it; boxing would allocate at every hand-over")]
    pub fn offer(&self, frame: Frame) -> Result<(), Frame> {
        match self.frame.try_lock() {
            Ok(guard) => self.merge(guard, frame),
            Err(TryLockError::WouldBlock) => return Err(frame),
            Err(TryLockError::Poisoned(e)) => self.merge(e.into_inner(), frame),
        }
        Ok(())
    }

    /// Adds `frame` to the one waiting, if any, waiting for the lock (not for the simulation
    /// thread: it uses [`Slot::offer`]).
    pub fn put(&self, frame: Frame) {
        self.merge(self.frame.lock().unwrap_or_else(|e| e.into_inner()), frame);
    }

    fn merge(&self, mut waiting: std::sync::MutexGuard<'_, Option<Frame>>, frame: Frame) {
        match waiting.as_mut() {
            Some(older) => older.absorb(frame),
            None => *waiting = Some(frame),
        }
        drop(waiting);
        self.ready.notify_one();
    }

    /// The waiting frame, if any, without waiting.
    pub fn take(&self) -> Option<Frame> {
        self.frame.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The waiting frame, waiting up to `timeout` for one. `Closed` only once the last frame
    /// has been taken: a frame is put before the slot is closed, and the flag is read under
    /// the lock.
    pub fn take_timeout(&self, timeout: Duration) -> Taken {
        let guard = self.frame.lock().unwrap_or_else(|e| e.into_inner());
        let (mut guard, _) = self.ready.wait_timeout_while(guard, timeout, |f| f.is_none() && !self.is_closed()).unwrap_or_else(|e| e.into_inner());
        match guard.take() {
            Some(frame) => Taken::Frame(frame),
            None if self.is_closed() => Taken::Closed,
            None => Taken::Nothing,
        }
    }

    /// Whether frames are wanted: the simulation builds none otherwise.
    pub fn is_watching(&self) -> bool {
        self.watching.load(Ordering::Relaxed)
    }

    /// Sets whether frames are wanted.
    pub fn set_watching(&self, watching: bool) {
        self.watching.store(watching, Ordering::Relaxed);
    }

    /// Marks the end of the frames (the simulation ended, or the connection closed).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// What [`Slot::take_timeout`] found.
#[derive(Debug)]
pub enum Taken {
    Frame(Frame),
    /// No frame within the time.
    Nothing,
    /// No frame, and none will come.
    Closed,
}

/// A request, where to send its reply, and whether its sender may steer (an in-process
/// viewer, or a socket client with the token). The reads of a viewer that may not steer are
/// answered within a time budget, so that watching cannot slow the run down.
#[derive(Debug)]
pub struct Envelope {
    pub request: Request,
    pub reply_to: Sender<Reply>,
    pub steering: bool,
}

/// Sends requests to the simulation; replies go to the [`ViewerLink`] it came from.
#[derive(Clone, Debug)]
pub struct RequestSender {
    requests: Sender<Envelope>,
    reply_to: Sender<Reply>,
    steering: bool,
}

impl RequestSender {
    /// Sends a request; false when the simulation is gone.
    pub fn send(&self, request: Request) -> bool {
        self.requests.send(Envelope { request, reply_to: self.reply_to.clone(), steering: self.steering }).is_ok()
    }

    /// Another link to the same simulation, with its own frame slot and replies (one per
    /// socket client); `steering`: whether its sender may steer.
    pub fn branch(&self, frames: Arc<Slot>, steering: bool) -> ViewerLink {
        ViewerLink::with_requests(frames, self.requests.clone(), steering)
    }

    /// Delivers a reply that did not come from the simulation (a refusal, or one read from a
    /// socket).
    pub fn reply(&self, reply: Reply) {
        self.reply_to.send(reply).ok();
    }
}

/// The viewer's end: frames, replies, and a way to send requests.
#[derive(Debug)]
pub struct ViewerLink {
    pub frames: Arc<Slot>,
    sender: RequestSender,
    replies: Receiver<Reply>,
}

impl ViewerLink {
    /// A link receiving frames from `frames` and sending requests into `requests`, as a
    /// viewer that may steer (in the simulation's process).
    pub fn new(frames: Arc<Slot>, requests: Sender<Envelope>) -> Self {
        Self::with_requests(frames, requests, true)
    }

    fn with_requests(frames: Arc<Slot>, requests: Sender<Envelope>, steering: bool) -> Self {
        let (reply_to, replies) = std::sync::mpsc::channel();
        ViewerLink { frames, sender: RequestSender { requests, reply_to, steering }, replies }
    }

    /// Another link to the same simulation, with its own frame slot and replies (one per
    /// socket client); `steering`: whether its sender may steer.
    pub fn branch(&self, frames: Arc<Slot>, steering: bool) -> ViewerLink {
        self.sender.branch(frames, steering)
    }

    /// Sends a request; false when the simulation is gone.
    pub fn send(&self, request: Request) -> bool {
        self.sender.send(request)
    }

    /// A handle that sends requests (and replies) on this link's behalf from another thread.
    pub fn sender(&self) -> RequestSender {
        self.sender.clone()
    }

    /// A reply that has arrived, if any.
    pub fn try_reply(&self) -> Option<Reply> {
        self.replies.try_recv().ok()
    }

    /// The frame waiting, if any.
    pub fn try_frame(&self) -> Option<Frame> {
        self.frames.take()
    }

    /// Whether the simulation has ended (or the connection to it closed).
    pub fn is_closed(&self) -> bool {
        self.frames.is_closed()
    }
}

impl Drop for ViewerLink {
    fn drop(&mut self) {
        self.frames.set_watching(false);
    }
}

/// The simulation's end of a link: the slot it hands frames over through, and the requests
/// of the link's viewers.
#[derive(Debug)]
pub struct SimulationEnd {
    pub frames: Arc<Slot>,
    pub requests: Receiver<Envelope>,
}

/// A fresh link and the simulation's end of it; frames are wanted from the start.
pub fn channel() -> (SimulationEnd, ViewerLink) {
    let frames = Slot::new(true);
    let (requests_tx, requests) = std::sync::mpsc::channel();
    (SimulationEnd { frames: frames.clone(), requests }, ViewerLink::new(frames, requests_tx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_step(step: u64, spikes: &[u32]) -> Frame {
        Frame { first_step: step, steps: 1, spike_ends: vec![spikes.len() as u32], spikes: spikes.to_vec(), population_spikes: vec![spikes.len() as u64], ..Frame::default() }
    }

    #[test]
    fn the_slot_merges_frames_the_viewer_has_not_taken() {
        let slot = Slot::new(true);
        slot.offer(one_step(0, &[1])).unwrap();
        slot.offer(one_step(1, &[2])).unwrap();
        let f = slot.take().unwrap();
        assert_eq!((f.steps, f.spikes), (2, vec![1, 2]));
        assert!(slot.take().is_none());
    }

    #[test]
    fn requests_reach_the_simulation_and_replies_the_link_they_came_from() {
        let (end, link) = channel();
        let other = link.branch(Slot::new(true), false);
        assert!(link.send(Request::Info) && other.send(Request::Pause));
        let envelopes: Vec<Envelope> = end.requests.try_iter().collect();
        assert_eq!(envelopes.iter().map(|e| e.steering).collect::<Vec<_>>(), [true, false], "a branch may steer only if told so");
        for (envelope, answer) in envelopes.into_iter().zip(["first", "second"]) {
            envelope.reply_to.send(Reply::Done(answer.into())).unwrap();
        }
        assert_eq!((link.try_reply(), other.try_reply()), (Some(Reply::Done("first".into())), Some(Reply::Done("second".into()))));
        drop(link);
        assert!(!end.frames.is_watching(), "a dropped link watches no more");
        drop(end);
        assert!(!other.send(Request::Resume), "the simulation is gone");
    }
}
