//! The observation API ([`crate::observe`]) over TCP: `fum run --serve ADDR` serves a run,
//! `fum view --attach ADDR` (or any client of this format) watches and steers it.
//!
//! Wire format, version [`PROTOCOL_VERSION`]: each message is a little-endian `u32` byte
//! length followed by that many bytes of a [postcard](https://docs.rs/postcard)-encoded
//! [`ClientMessage`] (client to server) or [`ServerMessage`] (server to client); enums are
//! encoded as a varint variant index, integers as varints. The client opens with
//! `ClientMessage::Hello`; the server answers with `ServerMessage::Hello` (its version, and
//! whether the client may steer: only with the token `fum run` prints), then sends frames as
//! the run produces them and one reply per request. A steering request without the token is
//! answered with `Reply::Error`; so is a message that does not decode. A length above
//! [`MAX_MESSAGE_BYTES`] or a broken connection ends that client's session only: the run goes
//! on, and a client that reads slowly gets fewer, larger frames (see [`crate::observe`]).
//!
//! Threads: one accepts connections; one takes the run's frames and merges them into each
//! client's own slot; each client has a reader (requests in) and a writer (frames and replies
//! out, with a write timeout so that a stalled client cannot hold the process at exit).

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::observe::{Frame, PROTOCOL_VERSION, Reply, Request, Slot, Taken, ViewerLink};

/// The largest message either side accepts, bytes.
pub const MAX_MESSAGE_BYTES: u32 = 64 << 20;

/// How long the server waits for a client's `Hello`, and for a write to a client to progress.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

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
    #[error("message of {0} bytes is larger than the {MAX_MESSAGE_BYTES} bytes allowed")]
    TooLarge(u32),
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
    let len = u32::try_from(bytes.len()).ok().filter(|&l| l <= MAX_MESSAGE_BYTES).ok_or(WireError::TooLarge(u32::MAX))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(&bytes)?;
    Ok(())
}

/// Reads one length-prefixed message. After `Malformed` the stream is still in step (the
/// whole message was read); after any other error it is not.
pub fn read_message<T: DeserializeOwned>(r: &mut impl Read) -> Result<T, WireError> {
    let mut len = [0; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len);
    if len > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge(len));
    }
    let mut bytes = vec![0; len as usize];
    r.read_exact(&mut bytes)?;
    Ok(postcard::from_bytes(&bytes)?)
}

/// A run being served.
pub struct Server {
    /// The address bound (with the port chosen when 0 was asked for).
    pub addr: SocketAddr,
    /// What a client must present to steer.
    pub token: String,
    broadcaster: JoinHandle<()>,
    writers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Server {
    /// Waits until every client has been sent the run's last frame (or timed out); call after
    /// the run's [`crate::observe::Observer`] is dropped.
    pub fn finish(self) {
        self.broadcaster.join().ok();
        let writers = std::mem::take(&mut *self.writers.lock().unwrap_or_else(|e| e.into_inner()));
        for writer in writers {
            writer.join().ok();
        }
    }
}

/// A fresh token of 128 bits. `RandomState` keys come from the operating system's random
/// source, so hashing with two of them gives unguessable bits without another dependency.
pub fn new_token() -> String {
    use std::hash::BuildHasher;
    let pid = std::process::id();
    let a = std::hash::RandomState::new().hash_one(pid);
    let b = std::hash::RandomState::new().hash_one((pid, std::time::SystemTime::now()));
    format!("{a:016x}{b:016x}")
}

/// Serves `link` (the viewer end of a run's observer) on `addr`, in background threads.
pub fn serve(addr: impl ToSocketAddrs, link: ViewerLink) -> std::io::Result<Server> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let token = new_token();
    let clients: Arc<Mutex<Vec<Arc<Slot>>>> = Arc::default();
    let writers: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
    let run_frames = link.frames.clone();
    run_frames.set_watching(false);

    let broadcaster = {
        let clients = clients.clone();
        std::thread::Builder::new().name("fum-serve-frames".into()).spawn(move || {
            loop {
                let taken = run_frames.take_timeout(Duration::from_millis(50));
                let mut clients = clients.lock().unwrap_or_else(|e| e.into_inner());
                clients.retain(|c| !c.is_closed());
                run_frames.set_watching(!clients.is_empty());
                match taken {
                    Taken::Frame(frame) => {
                        for client in clients.iter() {
                            client.put(frame.clone());
                        }
                    }
                    Taken::Nothing => {}
                    Taken::Closed => {
                        for client in clients.iter() {
                            client.close();
                        }
                        return;
                    }
                }
            }
        })?
    };

    let accepted_token = token.clone();
    let writers_of_clients = writers.clone();
    std::thread::Builder::new().name("fum-serve-accept".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            let frames = Slot::new(true);
            let client = link.branch(frames.clone());
            let (clients, run_frames, token) = (clients.clone(), link.frames.clone(), accepted_token.clone());
            let writers = writers_of_clients.clone();
            std::thread::Builder::new()
                .name("fum-serve-client".into())
                .spawn(move || {
                    // An error ends that session only.
                    let _ = session(stream, client, &token, |writer| {
                        // The writer is known before any frame reaches it: `Server::finish`
                        // waits for it to send the run's last frame.
                        writers.lock().unwrap_or_else(|e| e.into_inner()).push(writer);
                        clients.lock().unwrap_or_else(|e| e.into_inner()).push(frames);
                        run_frames.set_watching(true);
                    });
                })
                .ok();
        }
    })?;
    Ok(Server { addr, token, broadcaster, writers })
}

/// One client: handshake, then a writer thread (handed to `register`, which starts the
/// client's frames) and this thread reading requests until the client goes.
fn session(stream: TcpStream, link: ViewerLink, token: &str, register: impl FnOnce(JoinHandle<()>)) -> Result<(), WireError> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = BufWriter::new(stream.try_clone()?);
    let (protocol, steering) = match read_message::<ClientMessage>(&mut reader) {
        Ok(ClientMessage::Hello { protocol, token: given }) => (protocol, given.as_deref() == Some(token)),
        _ => {
            stream.shutdown(Shutdown::Both).ok();
            return Err(WireError::NoHello);
        }
    };
    write_message(&mut out, &ServerMessage::Hello { protocol: PROTOCOL_VERSION, fum_version: env!("CARGO_PKG_VERSION").into(), steering })?;
    if protocol != PROTOCOL_VERSION {
        write_message(&mut out, &ServerMessage::Reply(Reply::Error(WireError::Version { theirs: protocol }.to_string())))?;
        out.flush()?;
        stream.shutdown(Shutdown::Both).ok();
        return Err(WireError::Version { theirs: protocol });
    }
    out.flush()?;
    stream.set_read_timeout(None)?;

    let requests = link.sender();
    let frames = link.frames.clone();
    let writer = std::thread::Builder::new().name("fum-serve-writer".into()).spawn(move || {
        // Ends at the run's end (after its last frame) or at the first failed write.
        let _ = (|| -> Result<(), WireError> {
            loop {
                let closed = match link.frames.take_timeout(Duration::from_millis(10)) {
                    Taken::Frame(frame) => {
                        write_message(&mut out, &ServerMessage::Frame(frame))?;
                        false
                    }
                    Taken::Nothing => false,
                    Taken::Closed => true,
                };
                while let Some(reply) = link.try_reply() {
                    write_message(&mut out, &ServerMessage::Reply(reply))?;
                }
                out.flush()?;
                if closed {
                    return Ok(());
                }
            }
        })();
        link.frames.close();
        stream.shutdown(Shutdown::Both).ok();
    })?;
    register(writer);

    loop {
        match read_message::<ClientMessage>(&mut reader) {
            Ok(ClientMessage::Request(request)) if request.is_steering() && !steering => {
                requests.reply(Reply::Error(format!("{request:?} steers the run: it needs the token that `fum run --serve` printed")));
            }
            Ok(ClientMessage::Request(request)) => {
                if !requests.send(request) {
                    break;
                }
            }
            Ok(ClientMessage::Hello { .. }) => requests.reply(Reply::Error("Hello was already received".into())),
            Err(e @ WireError::Malformed(_)) => requests.reply(Reply::Error(e.to_string())),
            Err(_) => break,
        }
    }
    frames.close();
    Ok(())
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
    let (requests_tx, requests) = std::sync::mpsc::channel::<crate::observe::Envelope>();
    let link = ViewerLink::new(Slot::new(true), requests_tx);
    let (frames, replies) = (link.frames.clone(), link.sender());
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
        assert!(matches!(read_message::<ClientMessage>(&mut huge.as_slice()), Err(WireError::TooLarge(_))));
        let garbage = [3, 0, 0, 0, 0xff, 0xff, 0xff];
        assert!(matches!(read_message::<ClientMessage>(&mut garbage.as_slice()), Err(WireError::Malformed(_))));
    }

    #[test]
    fn tokens_differ() {
        assert_ne!(new_token(), new_token());
        assert_eq!(new_token().len(), 32);
    }
}
