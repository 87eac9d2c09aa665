//! Serving a run over TCP, the server side: `fum run --serve ADDR` serves a run, `fum view
//! --attach ADDR` (or any client of this format) watches and steers it. The wire format and
//! the client side ([`attach`]) are in `fum_protocol::wire` (re-exported here).
//!
//! Threads: one accepts connections; one takes the run's frames and merges them into each
//! client's own slot; each client has a reader (requests in) and a writer (frames and replies
//! out, with a write timeout so that a stalled client cannot hold the process at exit).

use std::io::{BufReader, BufWriter, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use fum_protocol::wire::{ClientMessage, MAX_MESSAGE_BYTES, ServerMessage, WireError, attach, read_message, write_message};

use crate::observe::{PROTOCOL_VERSION, Reply, Slot, Taken, ViewerLink};

/// How long the server waits for a client's `Hello`, and for a write to a client to progress.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ() {
        assert_ne!(new_token(), new_token());
        assert_eq!(new_token().len(), 32);
    }
}
