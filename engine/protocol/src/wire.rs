//! The wire format: the observation messages ([`crate::messages`]) over TCP, and the client
//! side ([`attach`]). The server side lives in the engine (`fum_engine::serve`).
//!
//! Wire format, version [`PROTOCOL_VERSION`]: each message is a little-endian `u32` byte
//! length followed by that many bytes of a [postcard](https://docs.rs/postcard)-encoded
//! [`ClientMessage`] (client to server) or [`ServerMessage`] (server to client); enums are
//! encoded as a varint variant index, integers as varints. The client opens with
//! `ClientMessage::Hello`; the server answers with `ServerMessage::Hello` (its version, and
//! whether the client may steer: only with the token `fum run` prints), then sends frames as
//! the run produces them and one reply per request. A steering request without the token is
//! answered with `Reply::Error`; so is a message that does not decode. A length above
//! [`MAX_MESSAGE_BYTES`] ([`MAX_CLIENT_MESSAGE_BYTES`] from a client) or a broken connection
//! ends that client's session only: the run goes on, and a client that reads slowly gets
//! fewer, larger frames (see [`crate::link`]).

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::link::{SimulationEnd, ViewerLink, channel};
use crate::messages::{Frame, PROTOCOL_VERSION, Reply, Request};

/// The largest message either side accepts, bytes.
pub const MAX_MESSAGE_BYTES: u32 = 64 << 20;

/// The largest message a server accepts from a client, bytes: requests are small, and a
/// client that has not yet said Hello must not make the server allocate much.
pub const MAX_CLIENT_MESSAGE_BYTES: u32 = 64 << 10;

/// What a client sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// First message: the client's protocol version and, to steer, the run's token.
    Hello { protocol: u32, token: Option<String> },
    Request(Request),
}

/// What the server sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// First message: the server's protocol version and whether this client may steer.
    Hello { protocol: u32, fum_version: String, steering: bool },
    Frame(Frame),
    Reply(Reply),
}

/// Errors of the wire protocol.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("message of {len} bytes is larger than the {max} bytes allowed")]
    TooLarge { len: u32, max: u32 },
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("protocol version {theirs} (this side speaks {PROTOCOL_VERSION}): use the same fum version on both sides")]
    Version { theirs: u32 },
    #[error("the server did not open with Hello")]
    NoHello,
}

/// Writes one length-prefixed message.
pub fn write_message<T: Serialize>(w: &mut impl Write, message: &T) -> Result<(), WireError> {
    let bytes = postcard::to_stdvec(message)?;
    let len = u32::try_from(bytes.len()).ok().filter(|&l| l <= MAX_MESSAGE_BYTES).ok_or(WireError::TooLarge { len: u32::MAX, max: MAX_MESSAGE_BYTES })?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(&bytes)?;
    Ok(())
}

/// Reads one length-prefixed message. After `Malformed` the stream is still in step (the
/// whole message was read); after any other error it is not.
pub fn read_message<T: DeserializeOwned>(r: &mut impl Read) -> Result<T, WireError> {
    read_message_within(r, MAX_MESSAGE_BYTES)
}

/// As [`read_message`], refusing messages longer than `max` bytes.
pub fn read_message_within<T: DeserializeOwned>(r: &mut impl Read, max: u32) -> Result<T, WireError> {
    let mut len = [0; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len);
    if len > max {
        return Err(WireError::TooLarge { len, max });
    }
    let mut bytes = vec![0; len as usize];
    r.read_exact(&mut bytes)?;
    Ok(postcard::from_bytes(&bytes)?)
}

/// Connects to a served run. Returns the link and whether it may steer (`token` was right).
pub fn attach(addr: impl ToSocketAddrs, token: Option<String>) -> Result<(ViewerLink, bool), WireError> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut out = BufWriter::new(stream.try_clone()?);
    write_message(&mut out, &ClientMessage::Hello { protocol: PROTOCOL_VERSION, token })?;
    out.flush()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let steering = match read_message::<ServerMessage>(&mut reader)? {
        ServerMessage::Hello { protocol, steering, .. } if protocol == PROTOCOL_VERSION => steering,
        ServerMessage::Hello { protocol, .. } => return Err(WireError::Version { theirs: protocol }),
        _ => return Err(WireError::NoHello),
    };
    let (SimulationEnd { frames, requests }, link) = channel();
    let replies = link.sender();
    std::thread::Builder::new().name("fum-attach-reader".into()).spawn(move || {
        loop {
            match read_message::<ServerMessage>(&mut reader) {
                Ok(ServerMessage::Frame(frame)) => frames.put(frame),
                Ok(ServerMessage::Reply(reply)) => replies.reply(reply),
                Ok(ServerMessage::Hello { .. }) => {}
                Err(WireError::Malformed(e)) => replies.reply(Reply::Error(format!("malformed message from the server: {e}"))),
                Err(_) => break,
            }
        }
        frames.close();
    })?;
    std::thread::Builder::new().name("fum-attach-writer".into()).spawn(move || {
        for envelope in requests {
            if write_message(&mut out, &ClientMessage::Request(envelope.request)).and_then(|()| Ok(out.flush()?)).is_err() {
                break;
            }
        }
        stream.shutdown(Shutdown::Both).ok();
    })?;
    Ok((link, steering))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_oversized_lengths_are_refused() {
        let mut bytes = Vec::new();
        let message = ClientMessage::Request(Request::SetPoissonRate { input: 2, rate_hz: 15.5 });
        write_message(&mut bytes, &message).unwrap();
        assert_eq!(u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize, bytes.len() - 4);
        assert_eq!(read_message::<ClientMessage>(&mut bytes.as_slice()).unwrap(), message);
        let huge = (MAX_MESSAGE_BYTES + 1).to_le_bytes();
        assert!(matches!(read_message::<ClientMessage>(&mut huge.as_slice()), Err(WireError::TooLarge { .. })));
        let long = (MAX_CLIENT_MESSAGE_BYTES + 1).to_le_bytes();
        assert!(matches!(read_message_within::<ClientMessage>(&mut long.as_slice(), MAX_CLIENT_MESSAGE_BYTES), Err(WireError::TooLarge { .. })));
        // Structural plasticity in a frame and in Info survives the trip.
        let structure = crate::StructureInfo {
            projection: "EE".into(),
            synapses: 63_200,
            bytes_now: 500_000,
            bytes_at_start: 512_000,
            commits: 2,
            pruned: 800,
            grown: 0,
            planning_s: 0.25,
            snapshot_s: 0.125,
            commit_s: 0.01,
            wait_s: 0.0,
            recent: vec![crate::CommitInfo { step: 550, pruned: 800, grown: 0, synapses: 63_200 }],
        };
        for message in [ServerMessage::Frame(Frame { structure: vec![structure.clone()], ..Frame::default() }), ServerMessage::Reply(Reply::Info(crate::Info { structure: vec![structure], ..crate::Info::default() }))] {
            let mut bytes = Vec::new();
            write_message(&mut bytes, &message).unwrap();
            assert_eq!(read_message::<ServerMessage>(&mut bytes.as_slice()).unwrap(), message);
        }
        let garbage = [3, 0, 0, 0, 0xff, 0xff, 0xff];
        assert!(matches!(read_message::<ClientMessage>(&mut garbage.as_slice()), Err(WireError::Malformed(_))));
    }
}
