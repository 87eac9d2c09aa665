//! `fum run --serve` end to end: a headless client attached over TCP receives the spikes the
//! run writes to spikes.h5, steers it with the token (pause, checkpoint, resume), and clients that disconnect, send
//! garbage or steer without the token neither stop nor change the run. Slow and surplus
//! connections are closed, each viewer traces its own neurons, a flood of requests changes no
//! spike, and an address other than loopback is warned about. Under structural plasticity, a
//! client reading all the time while commits happen sees every read whole and is sent the
//! commits.

mod common;
use common::{BALANCED, SMALL_NETWORK, Served};

use std::io::{Read, Write};
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
    serve_run_with(dir, out, &[])
}

fn serve_run_with(dir: &Path, out: &str, more: &[&str]) -> Served {
    let model = dir.join("model.toml");
    std::fs::write(&model, model_text()).unwrap();
    let out = dir.join(out);
    let args = [&[model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "1", "--quiet"], more].concat();
    common::serve_run(Path::new(env!("CARGO_BIN_EXE_fum")), &args)
}

fn plain_run(dir: &Path, out: &str) {
    let model = dir.join("model.toml");
    let status = Command::new(env!("CARGO_BIN_EXE_fum")).args(["run", model.to_str().unwrap(), "--out", dir.join(out).to_str().unwrap(), "--threads", "1", "--quiet"]).status().unwrap();
    assert!(status.success());
}

/// Spikes of the test network's spikes.h5 as (step, global id), sorted.
fn spikes_h5(path: &Path) -> Vec<(u64, u32)> {
    common::spikes_h5(path, &[("exc", 0), ("inh", 300)], 0.1)
}

#[test]
fn an_attached_client_receives_the_spikes_of_the_output_file_and_steers() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = serve_run(dir.path(), "run");
    // The token is also in a file only its owner reads, for `fum view --attach --token-file`.
    let token_file = dir.path().join("run/serve-token");
    let token = serve::client_token(None, Some(&token_file), None).unwrap();
    assert_eq!(token.as_deref(), Some(served.token.as_str()));
    #[cfg(unix)]
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&token_file).unwrap().permissions()) & 0o777, 0o600);
    let (link, steering) = serve::attach(&served.addr, token).unwrap();
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
    assert!(!token_file.exists(), "the token file goes with the run");

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
    plain_run(dir.path(), "plain");
    let (served, plain) = (spikes_h5(&dir.path().join("served/spikes.h5")), spikes_h5(&dir.path().join("plain/spikes.h5")));
    assert!(plain.len() > 1000);
    assert!(served == plain, "a served run with misbehaving clients wrote different spikes");
}

/// Whether the server has closed `stream` (end of stream or reset) rather than the read
/// timing out.
fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    }
}

#[test]
fn a_hello_sent_slowly_is_cut_off_at_the_deadline_and_connections_beyond_the_cap_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = serve_run_with(dir.path(), "run", &["--duration", "600s"]);
    let addr = served.addr.clone();

    // A client that sends a byte of a long Hello every 100 ms: no read waits long, yet the
    // Hello never ends.
    let mut trickler = raw_client(&addr);
    let mut writing = trickler.try_clone().unwrap();
    let sent = std::thread::spawn(move || {
        let mut sent = 0;
        while writing.write_all(if sent == 0 { &[200, 0, 0, 0] } else { &[0] }).is_ok() && sent < 300 {
            sent += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        sent
    });
    // The cap: connections that say nothing fill it; the next one is closed at once, and logged.
    let idle: Vec<TcpStream> = (1..serve::MAX_CONNECTIONS).map(|_| raw_client(&addr)).collect();
    let mut surplus = raw_client(&addr);
    assert!(closed_by_server(&mut surplus, Duration::from_secs(3)), "a connection beyond the cap is closed before the deadline");
    let line = served.stderr.recv_timeout(Duration::from_secs(10)).expect("a refusal is logged");
    assert!(line.contains("refused a connection") && line.contains(&serve::MAX_CONNECTIONS.to_string()), "{line}");

    assert!(closed_by_server(&mut trickler, serve::HANDSHAKE_DEADLINE * 3), "a Hello that takes too long ends its connection");
    let sent = sent.join().unwrap();
    assert!(sent > 20 && sent < 300, "the client kept sending until it was cut off ({sent} writes)");
    drop(idle);
    // With the slow ones gone, there is room again (once their threads have seen them go).
    let welcome = |_| {
        std::thread::sleep(Duration::from_millis(100));
        let mut c = raw_client(&addr);
        serve::write_message(&mut c, &ClientMessage::Hello { protocol: fum::engine::observe::PROTOCOL_VERSION, token: None }).is_ok() && matches!(serve::read_message::<ServerMessage>(&mut c), Ok(ServerMessage::Hello { .. }))
    };
    assert!((0..50).any(welcome), "a client is served again");
    served.child.kill().unwrap();
    served.child.wait().unwrap();
}

/// Reads frames until one with `steps > 0` carries membrane rows of `watched` only, all sampled.
fn frame_tracing(stream: &mut TcpStream, watched: &[u32]) -> fum::engine::observe::Frame {
    for _ in 0..10_000 {
        if let ServerMessage::Frame(frame) = serve::read_message::<ServerMessage>(stream).unwrap() {
            assert!(frame.steps == 0 || frame.membrane_mv.len() == frame.steps as usize * frame.watched.len());
            if frame.steps > 0 && frame.watched == watched && frame.membrane_mv.iter().all(|v| v.is_finite()) {
                return frame;
            }
        }
    }
    panic!("no frame traced {watched:?}");
}

#[test]
fn each_viewer_traces_its_own_neurons() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = serve_run_with(dir.path(), "run", &["--duration", "600s"]);
    let (mut a, mut b) = (raw_client(&served.addr), raw_client(&served.addr));
    hello(&mut a, None);
    hello(&mut b, None);
    serve::write_message(&mut a, &ClientMessage::Request(Request::Watch(vec![5, 0]))).unwrap();
    serve::write_message(&mut b, &ClientMessage::Request(Request::Watch(vec![7]))).unwrap();
    assert!(matches!(next_reply(&mut a), Reply::Done(_)) && matches!(next_reply(&mut b), Reply::Done(_)));
    // B's second list replaces its own only, and none may trace more than the server's bound.
    serve::write_message(&mut b, &ClientMessage::Request(Request::Watch((0..serve::MAX_WATCHED as u32 + 1).collect()))).unwrap();
    assert!(matches!(next_reply(&mut b), Reply::Error(e) if e.contains("at most")));
    serve::write_message(&mut b, &ClientMessage::Request(Request::Watch(vec![7, 300]))).unwrap();
    assert!(matches!(next_reply(&mut b), Reply::Done(_)));
    frame_tracing(&mut a, &[5, 0]);
    frame_tracing(&mut b, &[7, 300]);
    // A's traces stay A's after B's change.
    let frame = frame_tracing(&mut a, &[5, 0]);
    assert_eq!(frame.watched, [5, 0]);
    served.child.kill().unwrap();
    served.child.wait().unwrap();
}

#[test]
fn a_request_flood_and_slow_connections_change_no_spike() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = serve_run(dir.path(), "served");
    let addr = served.addr.clone();
    // 50 connections that never finish their Hello, reconnecting when cut off.
    let slow: Vec<_> = (0..50)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                while let Ok(mut s) = TcpStream::connect(&addr) {
                    if s.write_all(&[100, 0, 0]).is_err() || !closed_by_server(&mut s, Duration::from_secs(60)) {
                        break;
                    }
                }
            })
        })
        .collect();
    // A client without the token sending every kind of read and refused command, as fast as
    // the server takes them, and reading everything.
    let mut flood = raw_client(&addr);
    hello(&mut flood, None);
    let mut reading = flood.try_clone().unwrap();
    reading.set_read_timeout(None).unwrap();
    let replies = std::thread::spawn(move || {
        let mut infos = 0;
        while let Ok(message) = serve::read_message::<ServerMessage>(&mut reading) {
            infos += usize::from(matches!(message, ServerMessage::Reply(Reply::Info(_))));
        }
        infos
    });
    let requests = [
        Request::Info,
        Request::Membrane((0..375).collect()),
        Request::Watch((0..serve::MAX_WATCHED as u32).collect()),
        Request::WeightHistogram { projection: 0, bins: 1024 },
        Request::Pause,
        Request::SetPoissonRate { input: 0, rate_hz: 0.0 },
    ];
    for request in requests.iter().cycle() {
        if serve::write_message(&mut flood, &ClientMessage::Request(request.clone())).is_err() {
            break;
        }
    }
    assert!(served.child.wait().unwrap().success(), "the run finished");
    assert!(replies.join().unwrap() > 0, "the flooding client was answered");
    for s in slow {
        s.join().unwrap();
    }
    plain_run(dir.path(), "plain");
    let (served, plain) = (spikes_h5(&dir.path().join("served/spikes.h5")), spikes_h5(&dir.path().join("plain/spikes.h5")));
    assert!(plain.len() > 1000);
    assert!(served == plain, "a flooded run wrote different spikes");
}

#[test]
fn serving_beyond_loopback_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.toml");
    std::fs::write(&model, model_text()).unwrap();
    let stderr = |addr: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_fum")).args(["run", model.to_str().unwrap(), "--duration", "1ms", "--quiet", "--serve", addr]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let exposed = stderr("0.0.0.0:0");
    assert!(exposed.contains("not loopback") && exposed.contains("anyone who can reach this port can watch"), "{exposed}");
    assert!(!stderr("0").contains("warning"));
}

#[cfg(feature = "viewer")]
#[test]
fn a_token_file_that_cannot_be_read_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_fum")).args(["view", "--attach", "127.0.0.1:9", "--token-file", "/nonexistent/serve-token"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot read the token file /nonexistent/serve-token"), "{stderr}");
}

/// Structural plasticity at every millisecond (committed 0.7 ms after its snapshot): E->E only
/// prunes (a fiftieth of each in-degree, so that its count falls at each commit for a while)
/// and I->E prunes and regrows.
const STRUCTURAL_EVERY_MS: &str = r#"
[[structural]]
projection = "EE"
every_ms = 1.0
commit_after_ms = 0.7
prune = { lowest_priority_fraction = 0.02 }

[[structural]]
projection = "IE"
every_ms = 1.0
commit_after_ms = 0.7
prune = { lowest_priority_fraction = 0.05 }
regrow = { to_indegree = 26 }
"#;

/// One projection's commits from run.json: (step applied at, pruned, grown).
fn commits_of(report: &serde_json::Value, projection: &str) -> Vec<(u64, u64, u64)> {
    let commits = report["structural"][projection]["commits"].as_array().unwrap();
    commits.iter().map(|c| (c["step"].as_u64().unwrap(), c["pruned"].as_u64().unwrap(), c["grown"].as_u64().unwrap())).collect()
}

/// Synapses of a projection of `built` synapses after the commits applied before `done` steps
/// (a commit applies at the start of its step), and how many commits those are.
fn after_commits(built: u64, commits: &[(u64, u64, u64)], done: u64) -> (u64, usize) {
    let applied = commits.iter().take_while(|c| c.0 < done).collect::<Vec<_>>();
    (applied.iter().fold(built, |n, c| n + c.2 - c.1), applied.len())
}

/// A client with the token (its reads are answered at once, at every step boundary) asks for
/// the network description, the E->E weights and membrane potentials over and over while a
/// plan is committed every millisecond over 3 shards. Every answer holds the synapses of
/// exactly the commits applied before its step (never part of one), every frame's structural
/// figures are those of run.json's commits, and the spikes are those of the run unwatched.
#[test]
fn reads_racing_many_commits_see_whole_commits_and_change_no_spike() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("structural.toml");
    std::fs::write(&model, format!("{}{STRUCTURAL_EVERY_MS}", BALANCED.replace("duration_ms = 300.0", "duration_ms = 200.0"))).unwrap();
    let args = |out: &str| [model.to_str().unwrap().to_string(), "--out".into(), dir.path().join(out).to_str().unwrap().into(), "--threads".into(), "2".into(), "--shards".into(), "3".into(), "--quiet".into()];
    let plain = Command::new(env!("CARGO_BIN_EXE_fum")).arg("run").args(args("plain")).status().unwrap();
    assert!(plain.success());
    let served_args = args("served");
    let mut served = common::serve_run(Path::new(env!("CARGO_BIN_EXE_fum")), &served_args.iter().map(String::as_str).collect::<Vec<_>>());
    let (link, steering) = serve::attach(&served.addr, Some(served.token.clone())).unwrap();
    assert!(steering);

    let reads = [Request::Info, Request::WeightHistogram { projection: 0, bins: 16 }, Request::Membrane(vec![0, 450, 999])];
    let (mut frames, mut replies, mut outstanding) = (Vec::new(), Vec::new(), 0);
    loop {
        if outstanding == 0 {
            outstanding = reads.iter().filter(|r| link.send((*r).clone())).count();
        }
        while let Some(reply) = link.try_reply() {
            replies.push(reply);
            outstanding -= 1;
        }
        match link.frames.take_timeout(Duration::from_millis(1)) {
            Taken::Frame(frame) => frames.push(frame),
            Taken::Nothing => {}
            Taken::Closed => break,
        }
    }
    assert!(served.child.wait().unwrap().success());
    replies.extend(std::iter::from_fn(|| link.try_reply()));

    let report = |out: &str| -> serde_json::Value { serde_json::from_slice(&std::fs::read(dir.path().join(out).join("run.json")).unwrap()).unwrap() };
    let (report, unwatched) = (report("served"), report("plain"));
    let populations = [("E", 0), ("I", 800)];
    assert!(common::spikes_h5(&dir.path().join("served/spikes.h5"), &populations, 0.1) == common::spikes_h5(&dir.path().join("plain/spikes.h5"), &populations, 0.1), "reading clients changed the spikes");
    let (ee, ie) = (commits_of(&report, "EE"), commits_of(&report, "IE"));
    assert_eq!((ee.clone(), ie.clone()), (commits_of(&unwatched, "EE"), commits_of(&unwatched, "IE")));
    assert_eq!(ee.len(), 199);
    assert!(ee.iter().filter(|c| c.1 > 0).count() > 20 && ie.iter().any(|c| c.2 > 0), "E->E shrinks at many commits, I->E regrows");
    // Built: 800 E neurons with 80 E inputs each; 200 I neurons with 100 E targets each.
    let built = [("EE", 800 * 80, &ee), ("IE", 200 * 100, &ie)];
    let total_built = report["network"]["synapses"].as_u64().unwrap();

    let mut steps_read = std::collections::BTreeSet::new();
    let mut counts_seen = std::collections::BTreeSet::new();
    for reply in &replies {
        match reply {
            Reply::Info(info) => {
                let shards: u64 = info.shards.iter().map(|s| s.synapses).sum();
                let changed: i64 = built.iter().map(|(_, n, c)| after_commits(*n, c, info.step).0 as i64 - *n as i64).sum();
                assert_eq!(shards as i64, total_built as i64 + changed, "the shards' synapses at step {}", info.step);
                for s in &info.structure {
                    let (_, n, c) = built.iter().find(|b| b.0 == s.projection).unwrap();
                    let (synapses, applied) = after_commits(*n, c, info.step);
                    assert_eq!((s.synapses, s.commits as usize), (synapses, applied), "{} at step {}", s.projection, info.step);
                }
                steps_read.insert(info.step);
                counts_seen.insert(shards);
            }
            Reply::WeightHistogram(h) => {
                let (synapses, _) = after_commits(800 * 80, &ee, h.step);
                assert_eq!(h.counts.iter().sum::<u64>(), synapses, "E->E weights at step {}", h.step);
            }
            Reply::Membrane { membrane_mv, .. } => assert!(membrane_mv.iter().all(|v| v.is_finite())),
            other => panic!("{other:?}"),
        }
    }
    assert!(steps_read.len() > 20 && counts_seen.len() > 10, "reads at {} steps saw {} synapse counts: too few to race the commits", steps_read.len(), counts_seen.len());

    // Frames bring each commit once, in order, with the figures of run.json.
    let mut sent: Vec<Vec<(u64, u64, u64, u64)>> = vec![Vec::new(); 2];
    for s in frames.iter().flat_map(|f| &f.structure) {
        let k = built.iter().position(|b| b.0 == s.projection).unwrap();
        let (_, n, c) = built[k];
        let applied = &c[..s.commits as usize];
        assert_eq!((s.pruned, s.grown), (applied.iter().map(|c| c.1).sum(), applied.iter().map(|c| c.2).sum()));
        assert_eq!(s.synapses, after_commits(n, c, applied.last().unwrap().0 + 1).0);
        sent[k].extend(s.recent.iter().map(|r| (r.step, r.pruned, r.grown, r.synapses)));
    }
    for (k, (_, n, c)) in built.iter().enumerate() {
        assert!(sent[k].len() > 20, "{} commits of {} reached the client", sent[k].len(), built[k].0);
        let first = c.iter().position(|x| x.0 == sent[k][0].0).unwrap();
        let expected: Vec<_> = c[first..first + sent[k].len()].iter().map(|x| (x.0, x.1, x.2, after_commits(*n, c, x.0 + 1).0)).collect();
        assert_eq!(sent[k], expected, "{}'s commits as the client got them", built[k].0);
    }
}

/// A power-law rule without `w_max` has no upper bound (the largest `f32` stands in): its
/// weight histogram spans the weights up to the largest there is, not [0, 3.4e38] in which
/// every weight would fall in the first bin.
#[test]
fn the_weight_histogram_of_an_unbounded_power_law_spans_its_weights() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("power_law.toml");
    let power_law = "weight_dependence = \"power_law\"\nlambda = 0.1\nalpha = 0.0513\nmu = 0.4";
    let text = BALANCED.replacen("a_plus = 0.01\na_minus = 0.0105\nw_max = 100.0", power_law, 1);
    assert_ne!(text, BALANCED);
    std::fs::write(&model, text).unwrap();
    let out = dir.path().join("out");
    let served = common::serve_run(Path::new(env!("CARGO_BIN_EXE_fum")), &[model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    let Served { mut child, addr, token, .. } = served;
    let (link, _) = serve::attach(&addr, Some(token)).unwrap();
    let mut histograms = Vec::new();
    let mut outstanding = false;
    loop {
        if !outstanding {
            outstanding = link.send(Request::WeightHistogram { projection: 0, bins: 16 });
        }
        while let Some(reply) = link.try_reply() {
            match reply {
                Reply::WeightHistogram(h) => histograms.push(h),
                other => panic!("{other:?}"),
            }
            outstanding = false;
        }
        if let Taken::Closed = link.frames.take_timeout(Duration::from_millis(1)) {
            break;
        }
    }
    assert!(child.wait().unwrap().success());
    assert!(!histograms.is_empty(), "no histogram came back");
    for h in &histograms {
        // Initial weights are drawn in [40, 60] pA; learning moves them by a few pA at most here.
        assert!(h.w_min == 0.0 && (40.0..1000.0).contains(&h.w_max), "histogram at step {} spans [{}, {}]", h.step, h.w_min, h.w_max);
        assert_eq!(h.counts.iter().sum::<u64>(), 800 * 80);
        assert!(h.counts.iter().filter(|&&n| n > 0).count() > 1, "every weight in one bin at step {}", h.step);
    }
}
