//! `fum run --serve` end to end: a headless client attached over TCP receives the spikes the
//! run writes to spikes.h5, steers it with the token (pause, checkpoint, resume), and clients that disconnect, send
//! garbage or steer without the token neither stop nor change the run.

mod common;
use common::{SMALL_NETWORK, Served};

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fum::engine::observe::{Reply, Request, Taken};
use fum::engine::serve::{self, ClientMessage, ServerMessage};

/// The test network, long enough (3 s) for a client to attach while it runs.
fn model_text() -> String {
    SMALL_NETWORK.replace("duration_ms = 200.0", "duration_ms = 3000.0")
}

fn serve_run(dir: &Path, out: &str) -> Served {
    let model = dir.join("model.toml");
    std::fs::write(&model, model_text()).unwrap();
    common::serve_run(Path::new(env!("CARGO_BIN_EXE_fum")), &[model.to_str().unwrap(), "--out", dir.join(out).to_str().unwrap(), "--threads", "1", "--quiet"])
}

/// Spikes of the test network's spikes.h5 as (step, global id), sorted.
fn spikes_h5(path: &Path) -> Vec<(u64, u32)> {
    common::spikes_h5(path, &[("exc", 0), ("inh", 300)], 0.1)
}

#[test]
fn an_attached_client_receives_the_spikes_of_the_output_file_and_steers() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = serve_run(dir.path(), "run");
    let (link, steering) = serve::attach(&served.addr, Some(served.token.clone())).unwrap();
    assert!(steering, "the printed token steers");

    let mut received = Vec::new();
    let mut next_step = None;
    let mut pause_sent = false;
    let mut paused_seen = 0;
    loop {
        let frame = match link.frames.take_timeout(Duration::from_millis(50)) {
            Taken::Frame(frame) => frame,
            Taken::Nothing => continue,
            Taken::Closed => break,
        };
        assert_eq!(frame.spikes_dropped, 0, "a reading client gets every spike");
        if frame.steps > 0 {
            if let Some(next) = next_step {
                assert_eq!(frame.first_step, next, "frames follow each other without gaps");
            }
            next_step = Some(frame.first_step + frame.steps);
            for k in 0..frame.steps as usize {
                received.extend(frame.step_spikes(k).iter().map(|&id| (frame.first_step + k as u64, id)));
            }
        }
        // Pause once, see heartbeats that do not advance, then resume.
        if !pause_sent && next_step.is_some_and(|s| s > 2000) {
            assert!(link.send(Request::Pause));
            pause_sent = true;
        }
        if frame.paused && frame.steps == 0 {
            paused_seen += 1;
            if paused_seen == 5 {
                assert!(link.send(Request::Checkpoint));
                assert!(link.send(Request::Resume));
            }
        }
    }
    assert!(paused_seen >= 5, "the run paused (heartbeats seen: {paused_seen})");
    let replies: Vec<Reply> = std::iter::from_fn(|| link.try_reply()).collect();
    assert!(replies.iter().any(|r| matches!(r, Reply::Done(t) if t.starts_with("paused"))), "{replies:?}");
    assert!(replies.iter().any(|r| matches!(r, Reply::Done(t) if t.starts_with("checkpoint of step"))), "{replies:?}");
    assert!(served.child.wait().unwrap().success());
    assert_eq!(std::fs::read_dir(dir.path().join("run/checkpoints")).unwrap().count(), 1, "the checkpoint asked for");

    let first = received.first().map_or(u64::MAX, |s| s.0);
    let written: Vec<(u64, u32)> = spikes_h5(&dir.path().join("run/spikes.h5")).into_iter().filter(|s| s.0 >= first).collect();
    assert!(received.len() > 1000, "the client saw the run ({} spikes)", received.len());
    assert!(next_step == Some(30_000), "the client saw the run to its end ({next_step:?})");
    assert!(received == written, "the spikes received differ from spikes.h5 ({} received, {} written)", received.len(), written.len());
}

fn raw_client(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

fn hello(stream: &mut TcpStream, token: Option<String>) -> bool {
    serve::write_message(stream, &ClientMessage::Hello { protocol: fum::engine::observe::PROTOCOL_VERSION, token }).unwrap();
    match serve::read_message::<ServerMessage>(stream).unwrap() {
        ServerMessage::Hello { steering, .. } => steering,
        other => panic!("{other:?}"),
    }
}

/// Reads until a reply arrives.
fn next_reply(stream: &mut TcpStream) -> Reply {
    loop {
        if let ServerMessage::Reply(r) = serve::read_message::<ServerMessage>(stream).unwrap() {
            return r;
        }
    }
}

#[test]
fn disconnecting_and_malformed_clients_neither_stop_nor_change_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = serve_run(dir.path(), "served");
    let addr = served.addr.clone();

    // Garbage before any Hello, then gone.
    raw_client(&addr).write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    // A malformed message after Hello is answered and the session goes on.
    let mut c = raw_client(&addr);
    assert!(!hello(&mut c, None), "no token, no steering");
    c.write_all(&[3, 0, 0, 0, 0xff, 0xff, 0xff]).unwrap();
    assert!(matches!(next_reply(&mut c), Reply::Error(e) if e.contains("malformed")));
    // Steering without the token is refused; reading is open.
    serve::write_message(&mut c, &ClientMessage::Request(Request::Pause)).unwrap();
    assert!(matches!(next_reply(&mut c), Reply::Error(e) if e.contains("token")));
    serve::write_message(&mut c, &ClientMessage::Request(Request::Info)).unwrap();
    assert!(matches!(next_reply(&mut c), Reply::Info(i) if i.populations.len() == 2));
    // A wrong token does not steer either.
    let mut wrong = raw_client(&addr);
    assert!(!hello(&mut wrong, Some("0123".into())));
    // An oversized length ends that session only.
    c.write_all(&u32::MAX.to_le_bytes()).unwrap();
    // A client that stops reading, and one that leaves in the middle of a message.
    let mut stalled = raw_client(&addr);
    hello(&mut stalled, None);
    let mut leaving = raw_client(&addr);
    hello(&mut leaving, None);
    leaving.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
    drop(leaving);
    drop(c);
    drop(wrong);

    let status = served.child.wait().unwrap();
    drop(stalled);
    assert!(status.success(), "the run finished");
    let model = dir.path().join("model.toml");
    let status = Command::new(env!("CARGO_BIN_EXE_fum")).args(["run", model.to_str().unwrap(), "--out", dir.path().join("plain").to_str().unwrap(), "--threads", "1", "--quiet"]).status().unwrap();
    assert!(status.success());
    let (served, plain) = (spikes_h5(&dir.path().join("served/spikes.h5")), spikes_h5(&dir.path().join("plain/spikes.h5")));
    assert!(plain.len() > 1000);
    assert!(served == plain, "a served run with misbehaving clients wrote different spikes");
}
