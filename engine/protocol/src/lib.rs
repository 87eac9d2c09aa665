//! The fum observation protocol: what a viewer (or any client) of a running simulation needs,
//! and nothing of the simulation itself. The messages ([`messages`]), the in-process link that
//! carries them ([`link`]), and their encoding on a socket with the client side ([`wire`]).
//! The simulation's side (building frames from the world, answering requests, serving a run)
//! is in the engine: `fum_engine::observe` and `fum_engine::serve`.

pub mod link;
pub mod messages;
pub mod wire;

pub use link::{Envelope, RequestSender, SimulationEnd, Slot, Taken, ViewerLink, channel};
pub use messages::{
    CommitInfo, Frame, Info, InputInfo, MAX_FRAME_SPIKES, MAX_STRUCTURE_COMMITS, PROTOCOL_VERSION, PopulationInfo, ProjectionInfo, Reply, Request, ShardInfo, Speed, StructureInfo, WeightHistogram, merge_structure,
};
pub use wire::{ClientMessage, MAX_CLIENT_MESSAGE_BYTES, MAX_MESSAGE_BYTES, ServerMessage, WireError, attach, read_message, read_message_within, write_message};
