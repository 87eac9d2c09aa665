//! Serving a run over TCP, the server side: `fum run --serve ADDR` serves a run, `fum view
//! --attach ADDR` (or any client of this format) watches and steers it. The wire format and
//! the client side ([`attach`]) are in `fum_protocol::wire` (re-exported here).
//!
//! Threads: one accepts connections (at most [`MAX_CONNECTIONS`] open at once); one takes the
//! run's frames and merges them into each client's own slot, with that client's traced
//! neurons; each client has a reader (requests in) and a writer (frames and replies out, with
//! a write timeout so that a stalled client cannot hold the process at exit).
//!
//! What a client without the token costs the run is bounded: its Hello must arrive within
//! [`HANDSHAKE_DEADLINE`], its requests are read at most [`REQUESTS_PER_S`] a second, the
//! neurons all such clients trace together are at most [`MAX_WATCHED`], and the observer answers its
//! reads within a share of the run's wall time (`fum_engine::observe::READ_SHARE`).

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use fum_protocol::wire::{ClientMessage, MAX_CLIENT_MESSAGE_BYTES, MAX_MESSAGE_BYTES, ServerMessage, WireError, attach, read_message, read_message_within, write_message};

use crate::observe::{MAX_NEURONS_PER_REQUEST, PROTOCOL_VERSION, Reply, Request, RequestSender, Slot, Taken, ViewerLink};

/// The time a client has to send its whole `Hello`, however slowly its bytes come.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);
/// How long a write to a client may make no progress before the session ends.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections open at once (before and after Hello); further ones are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Requests a client without the token may send per second, and in one burst: beyond, its
/// next request is read later (TCP holds the rest), which costs the server nothing.
pub const REQUESTS_PER_S: f64 = 20.0;
const REQUESTS_BURST: f64 = 20.0;
/// Neurons traced for all clients without the token together (a viewer traces up to eight):
/// the run samples each at every step and sends it to every client that traces it. Clients
/// with the token trace up to the observer's bound on one request, all together.
pub const MAX_WATCHED: usize = 16;
/// A refused connection is logged at most this often (with the count since the last line).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

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
        let writers = std::mem::take(&mut *lock(&self.writers));
        for writer in writers {
            writer.join().ok();
        }
    }
}

/// A warning for an address that other machines may reach (not loopback), `None` otherwise.
pub fn exposure_warning(addr: &SocketAddr) -> Option<String> {
    let ip = match addr.ip() {
        IpAddr::V6(v6) => v6.to_canonical(),
        ip => ip,
    };
    (!ip.is_loopback()).then(|| {
        format!("warning: serving on {addr}, which is not loopback: anyone who can reach this port can watch the run (steering needs the token); the stream is not encrypted")
    })
}

/// The token a client presents: `--token` (`given`), else the first line of `file`, else the
/// `FUM_TOKEN` environment variable (`env`). A token in a file or the environment stays out of
/// the process list.
pub fn client_token(given: Option<String>, file: Option<&Path>, env: Option<String>) -> Result<Option<String>, String> {
    if let Some(token) = given {
        return Ok(Some(token));
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
        let token = text.lines().next().unwrap_or("").trim();
        if token.is_empty() {
            return Err(format!("the token file {} is empty", path.display()));
        }
        return Ok(Some(token.to_string()));
    }
    Ok(env.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()))
}

/// Writes `token` to `path`, readable by its owner only (mode 0600 on Unix), for
/// `fum view --attach ADDR --token-file PATH`.
pub fn write_token_file(path: &Path, token: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    writeln!(file, "{token}")
}

/// The file under `--out` that holds a served run's steering token while it runs (mode 0600).
pub const TOKEN_FILE: &str = "serve-token";

/// A fresh token of 128 bits. `RandomState` keys come from the operating system's random
/// source, so hashing with two of them gives unguessable bits without another dependency.
pub fn new_token() -> String {
    format!("{:016x}{:016x}", crate::random_u64(), crate::random_u64())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The clients receiving frames, each with the neurons it traces, and the union of those,
/// which the observer samples.
struct Watchers {
    clients: Vec<Watcher>,
    /// The union as last sent to the observer.
    union: Vec<u32>,
    /// Sends the union (its replies are dropped).
    observer: RequestSender,
    /// Neurons in the network: watch lists are checked against it.
    neurons: u32,
}

struct Watcher {
    frames: Arc<Slot>,
    watched: Vec<u32>,
    steering: bool,
}

impl Watchers {
    /// Sets the watch list of the client receiving `frames`, if every id exists and the
    /// clients without the token (`steering`: this one has it) trace at most [`MAX_WATCHED`]
    /// neurons together, all clients at most what the observer takes in one request.
    fn watch(&mut self, frames: &Arc<Slot>, ids: Vec<u32>, steering: bool) -> Reply {
        if let Some(bad) = ids.iter().find(|&&id| id >= self.neurons) {
            return Reply::Error(format!("neuron {bad} does not exist (the network has {} neurons)", self.neurons));
        }
        let others = |without_token: bool| {
            let lists = self.clients.iter().filter(|c| !Arc::ptr_eq(&c.frames, frames) && !(without_token && c.steering));
            union(lists.flat_map(|c| c.watched.iter().copied()))
        };
        let traced = |others: &[u32]| union(others.iter().chain(&ids).copied()).len();
        let open = others(true);
        if !steering && traced(&open) > MAX_WATCHED {
            return Reply::Error(format!("{} neurons asked for: viewers without the token trace at most {MAX_WATCHED} together ({} traced by others)", ids.len(), open.len()));
        }
        if traced(&others(false)) > MAX_NEURONS_PER_REQUEST {
            return Reply::Error(format!("{} neurons asked for: viewers of this run trace at most {MAX_NEURONS_PER_REQUEST} together", ids.len()));
        }
        let n = ids.len();
        if let Some(client) = self.clients.iter_mut().find(|c| Arc::ptr_eq(&c.frames, frames)) {
            client.watched = ids;
        }
        self.send_union();
        Reply::Done(format!("watching {n} neurons"))
    }

    /// Forgets the clients that have gone (and their neurons).
    fn retain_open(&mut self) {
        let before = self.clients.len();
        self.clients.retain(|c| !c.frames.is_closed());
        if self.clients.len() != before {
            self.send_union();
        }
    }

    fn send_union(&mut self) {
        let all = union(self.clients.iter().flat_map(|c| c.watched.iter().copied()));
        if all != self.union {
            self.observer.send(Request::Watch(all.clone()));
            self.union = all;
        }
    }
}

fn union(ids: impl IntoIterator<Item = u32>) -> Vec<u32> {
    let mut all: Vec<u32> = ids.into_iter().collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// Serves `link` (the viewer end of a run's observer, of a network of `neurons` neurons) on
/// `addr`, in background threads.
pub fn serve(addr: impl ToSocketAddrs, link: ViewerLink, neurons: u32) -> std::io::Result<Server> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let token = new_token();
    let root = link.sender();
    // A link of its own, so that the replies to the union's Watch go nowhere.
    let observer = root.branch(Slot::new(false), true).sender();
    let watchers = Arc::new(Mutex::new(Watchers { clients: Vec::new(), union: Vec::new(), observer, neurons }));
    let writers: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
    let run_frames = link.frames.clone();
    run_frames.set_watching(false);
    let frames_of_sessions = run_frames.clone();

    let broadcaster = {
        let watchers = watchers.clone();
        std::thread::Builder::new().name("fum-serve-frames".into()).spawn(move || {
            crate::yield_to_simulation();
            loop {
                let taken = run_frames.take_timeout(Duration::from_millis(50));
                let mut watchers = lock(&watchers);
                watchers.retain_open();
                run_frames.set_watching(!watchers.clients.is_empty());
                match taken {
                    Taken::Frame(frame) => {
                        for client in &watchers.clients {
                            client.frames.put(frame.clone().watching(&client.watched));
                        }
                    }
                    Taken::Nothing => {}
                    Taken::Closed => {
                        for client in &watchers.clients {
                            client.frames.close();
                        }
                        return;
                    }
                }
            }
        })?
    };

    let open = Arc::new(AtomicUsize::new(0));
    let accepted_token = token.clone();
    let writers_of_clients = writers.clone();
    std::thread::Builder::new().name("fum-serve-accept".into()).spawn(move || {
        // The run's end of the link lives as long as the server.
        let _link = link;
        crate::yield_to_simulation();
        let mut refusals = Refusals::default();
        for stream in listener.incoming().flatten() {
            if open.load(Ordering::Acquire) >= MAX_CONNECTIONS {
                refusals.log(&stream);
                stream.shutdown(Shutdown::Both).ok();
                continue;
            }
            open.fetch_add(1, Ordering::AcqRel);
            let session = Session { root: root.clone(), token: accepted_token.clone(), watchers: watchers.clone(), writers: writers_of_clients.clone(), run_frames: frames_of_sessions.clone() };
            let closing = open.clone();
            let spawned = std::thread::Builder::new().name("fum-serve-client".into()).spawn(move || {
                crate::yield_to_simulation();
                // An error ends that session only.
                let _ = session.run(stream);
                closing.fetch_sub(1, Ordering::AcqRel);
            });
            if spawned.is_err() {
                open.fetch_sub(1, Ordering::AcqRel);
            }
        }
    })?;
    Ok(Server { addr, token, broadcaster, writers })
}

/// Refused connections, logged at most every [`REFUSAL_LOG_INTERVAL`].
#[derive(Default)]
struct Refusals {
    logged: Option<Instant>,
    unlogged: u64,
}

impl Refusals {
    fn log(&mut self, stream: &TcpStream) {
        self.unlogged += 1;
        if self.logged.is_some_and(|t| t.elapsed() < REFUSAL_LOG_INTERVAL) {
            return;
        }
        let peer = stream.peer_addr().map_or_else(|_| "?".to_string(), |a| a.to_string());
        let more = if self.unlogged > 1 { format!(" ({} refused since the last message)", self.unlogged) } else { String::new() };
        eprintln!("fum serve: refused a connection from {peer}: {MAX_CONNECTIONS} connections are open, the most served at once{more}");
        self.logged = Some(Instant::now());
        self.unlogged = 0;
    }
}

/// Reads from a stream until a deadline, however slowly the bytes come (a read timeout alone
/// would let a client that sends a byte now and then hold its connection for ever).
struct Until<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl Read for Until<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut stream = self.stream;
        stream.read(buf)
    }
}

/// The requests a client without the token may send: a token bucket refilled at
/// [`REQUESTS_PER_S`], holding at most [`REQUESTS_BURST`].
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn new(now: Instant) -> Self {
        Bucket { tokens: REQUESTS_BURST, refilled: now }
    }

    /// Takes a request's token at `now`; returns how long to wait first (zero when one was left).
    fn take(&mut self, now: Instant) -> Duration {
        let earned = now.saturating_duration_since(self.refilled).as_secs_f64() * REQUESTS_PER_S;
        self.tokens = (self.tokens + earned).min(REQUESTS_BURST) - 1.0;
        self.refilled = now;
        Duration::from_secs_f64((-self.tokens).max(0.0) / REQUESTS_PER_S)
    }
}

/// What a client's thread needs of the server.
struct Session {
    root: RequestSender,
    token: String,
    watchers: Arc<Mutex<Watchers>>,
    writers: Arc<Mutex<Vec<JoinHandle<()>>>>,
    run_frames: Arc<Slot>,
}

impl Session {
    /// One client: handshake, then a writer thread and this thread reading requests until the
    /// client goes.
    fn run(self, stream: TcpStream) -> Result<(), WireError> {
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let hello = read_message_within::<ClientMessage>(&mut Until { stream: &stream, deadline: Instant::now() + HANDSHAKE_DEADLINE }, MAX_CLIENT_MESSAGE_BYTES);
        let (protocol, steering) = match hello {
            Ok(ClientMessage::Hello { protocol, token: given }) => (protocol, given.as_deref() == Some(self.token.as_str())),
            _ => {
                stream.shutdown(Shutdown::Both).ok();
                return Err(WireError::NoHello);
            }
        };
        stream.set_read_timeout(None)?;
        let mut out = BufWriter::new(stream.try_clone()?);
        write_message(&mut out, &ServerMessage::Hello { protocol: PROTOCOL_VERSION, fum_version: env!("CARGO_PKG_VERSION").into(), steering })?;
        if protocol != PROTOCOL_VERSION {
            write_message(&mut out, &ServerMessage::Reply(Reply::Error(WireError::Version { theirs: protocol }.to_string())))?;
            out.flush()?;
            stream.shutdown(Shutdown::Both).ok();
            return Err(WireError::Version { theirs: protocol });
        }
        out.flush()?;

        let frames = Slot::new(true);
        let link = self.root.branch(frames.clone(), steering);
        let requests = link.sender();
        let writer = spawn_writer(link, out, stream.try_clone()?)?;
        // The writer is known before any frame reaches it: `Server::finish` waits for it to
        // send the run's last frame.
        lock(&self.writers).push(writer);
        lock(&self.watchers).clients.push(Watcher { frames: frames.clone(), watched: Vec::new(), steering });
        self.run_frames.set_watching(true);
        if self.run_frames.is_closed() {
            // The run ended before the broadcaster saw this client: it will not close it.
            frames.close();
        }

        let mut reader = BufReader::new(stream);
        let mut bucket = (!steering).then(|| Bucket::new(Instant::now()));
        loop {
            if let Some(bucket) = bucket.as_mut() {
                std::thread::sleep(bucket.take(Instant::now()));
            }
            match read_message_within::<ClientMessage>(&mut reader, MAX_CLIENT_MESSAGE_BYTES) {
                Ok(ClientMessage::Request(request)) if request.is_steering() && !steering => {
                    requests.reply(Reply::Error(format!("{request:?} steers the run: it needs the token that `fum run --serve` printed")));
                }
                Ok(ClientMessage::Request(Request::Watch(ids))) => requests.reply(lock(&self.watchers).watch(&frames, ids, steering)),
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
}

/// The writer of a client: frames and replies out until the run's end (after its last frame)
/// or the first failed write.
fn spawn_writer(link: ViewerLink, mut out: BufWriter<TcpStream>, stream: TcpStream) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("fum-serve-writer".into()).spawn(move || {
        crate::yield_to_simulation();
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ() {
        assert_ne!(new_token(), new_token());
        assert_eq!(new_token().len(), 32);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn serving_threads_give_way_to_the_simulation() {
        // SAFETY: as in yield_to_simulation.
        let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        let before = nice();
        let server = std::thread::spawn(move || {
            crate::yield_to_simulation();
            nice()
        });
        assert!(server.join().unwrap() >= 10);
        assert_eq!(nice(), before, "only the calling thread");
    }

    #[test]
    fn addresses_other_than_loopback_are_warned_about() {
        for exposed in ["0.0.0.0:7878", "[::]:7878", "192.168.1.2:1", "[::ffff:10.0.0.1]:1"] {
            assert!(exposure_warning(&exposed.parse().unwrap()).is_some_and(|w| w.contains("anyone")), "{exposed}");
        }
        for local in ["127.0.0.1:7878", "127.1.2.3:1", "[::1]:7878", "[::ffff:127.0.0.1]:1"] {
            assert_eq!(exposure_warning(&local.parse().unwrap()), None, "{local}");
        }
    }

    #[test]
    fn the_token_comes_from_the_flag_then_the_file_then_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("serve-token");
        write_token_file(&file, "from-file").unwrap();
        #[cfg(unix)]
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions()) & 0o777, 0o600);
        let env = || Some("from-env".to_string());
        assert_eq!(client_token(Some("flag".into()), Some(&file), env()).unwrap().as_deref(), Some("flag"));
        assert_eq!(client_token(None, Some(&file), env()).unwrap().as_deref(), Some("from-file"));
        assert_eq!(client_token(None, None, env()).unwrap().as_deref(), Some("from-env"));
        assert_eq!(client_token(None, None, Some(" ".into())).unwrap(), None);
        assert!(client_token(None, Some(&dir.path().join("missing")), env()).unwrap_err().contains("missing"));
        std::fs::write(&file, "\n").unwrap();
        assert!(client_token(None, Some(&file), env()).unwrap_err().contains("empty"));
    }

    #[test]
    fn a_client_without_the_token_is_read_at_its_rate_after_a_burst() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(t0);
        for _ in 0..REQUESTS_BURST as usize {
            assert_eq!(bucket.take(t0), Duration::ZERO);
        }
        let wait = bucket.take(t0);
        assert!((wait.as_secs_f64() - 1.0 / REQUESTS_PER_S).abs() < 1e-9, "{wait:?}");
        // After waiting, the next one waits as long again; a quiet client earns its burst back.
        assert!((bucket.take(t0 + wait).as_secs_f64() - 1.0 / REQUESTS_PER_S).abs() < 1e-9);
        assert_eq!(bucket.take(t0 + Duration::from_secs(60)), Duration::ZERO);
    }

    #[test]
    fn watch_lists_are_per_client_and_the_observer_samples_their_union_within_a_bound() {
        let (end, link) = fum_protocol::channel();
        let mut watchers = Watchers { clients: Vec::new(), union: Vec::new(), observer: link.sender(), neurons: 10_000 };
        let (a, b, owner) = (Slot::new(true), Slot::new(true), Slot::new(true));
        for (frames, steering) in [(&a, false), (&b, false), (&owner, true)] {
            watchers.clients.push(Watcher { frames: frames.clone(), watched: Vec::new(), steering });
        }
        assert!(matches!(watchers.watch(&a, vec![5, 1], false), Reply::Done(_)));
        assert!(matches!(watchers.watch(&b, vec![1, 9], false), Reply::Done(_)));
        assert!(matches!(watchers.watch(&b, vec![10_000], false), Reply::Error(e) if e.contains("does not exist")));
        let too_many: Vec<u32> = (100..100 + MAX_WATCHED as u32).collect();
        assert!(matches!(watchers.watch(&b, too_many.clone(), false), Reply::Error(e) if e.contains("at most")));
        assert_eq!((watchers.clients[0].watched.as_slice(), watchers.clients[1].watched.as_slice()), (&[5, 1][..], &[1, 9][..]), "refused lists change nothing");
        // The token holder's neurons do not count against the others' bound, nor theirs against its.
        assert!(matches!(watchers.watch(&owner, too_many, true), Reply::Done(_)));
        assert!(matches!(watchers.watch(&b, vec![9, 2], false), Reply::Done(_)));
        assert!(matches!(watchers.watch(&owner, (100..100 + MAX_NEURONS_PER_REQUEST as u32).collect(), true), Reply::Error(e) if e.contains("at most")));
        b.close();
        watchers.retain_open();
        let sent: Vec<Vec<u32>> = end.requests.try_iter().map(|e| match e.request {
            Request::Watch(ids) => ids,
            other => panic!("{other:?}"),
        }).collect();
        let owners: Vec<u32> = (100..100 + MAX_WATCHED as u32).collect();
        assert_eq!(sent, [vec![1, 5], vec![1, 5, 9], [vec![1, 5, 9], owners.clone()].concat(), [vec![1, 2, 5, 9], owners.clone()].concat(), [vec![1, 5], owners].concat()]);
    }
}
