//! c10d for real, between processes: each test is rank 0 and runs rank 1 as a second process,
//! this test binary itself re-run on just the `child` test with the scenario in an
//! environment variable. Every wait is bounded: the children's own c10d timeouts, and a
//! deadline after which a child is killed.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// Set in a child's environment to the scenario it plays; absent in a normal test run.
const CHILD_ENV: &str = "TORCHFIT_C10D_TEST_CHILD";
const PORT_ENV: &str = "TORCHFIT_C10D_TEST_PORT";
const HOST: &str = "127.0.0.1";
/// For the waits that should succeed: long enough for a loaded machine, and still a bound.
const PATIENT: Duration = Duration::from_secs(20);

/// A port that was free a moment ago (the OS picks it; nothing else on this machine is
/// likely to take it before the test's store does).
fn free_port() -> u16 {
    TcpListener::bind((HOST, 0)).unwrap().local_addr().unwrap().port()
}

/// Rank 1, running in its own process; killed if still running when dropped.
struct Peer {
    child: std::process::Child,
}

impl Peer {
    fn spawn(scenario: &str, port: u16) -> Peer {
        let exe = std::env::current_exe().unwrap();
        let child = Command::new(exe)
            .args(["--exact", "c10d::tests::child", "--nocapture", "--test-threads=1", "--quiet"])
            .env(CHILD_ENV, scenario)
            .env(PORT_ENV, port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Peer { child }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `limit` for the child to exit: its status and what it printed.
    fn finish(mut self, limit: Duration) -> (ExitStatus, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(start.elapsed() < limit, "rank 1 still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut output = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = out.read_to_string(&mut output);
        }
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut output);
        }
        (status, output)
    }

    fn assert_succeeds(self) {
        let (status, output) = self.finish(PATIENT);
        assert!(status.success(), "rank 1 failed ({status}):\n{output}");
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What rank 1 does, in the child process; a normal test run passes over it.
#[test]
fn child() {
    let Ok(scenario) = std::env::var(CHILD_ENV) else { return };
    let port: u16 = std::env::var(PORT_ENV).unwrap().parse().unwrap();
    let store = Store::tcp(HOST, port, 2, false, PATIENT).unwrap();
    match scenario.as_str() {
        "collectives" => collectives_rank1(&store),
        // Joins the store, then never joins the group: the parent is killed or gives up first.
        "store_only" => std::thread::sleep(PATIENT),
        "allreduce_forever" => {
            let pg = ProcessGroup::new(&store, 1, 2, Backend::Gloo, PATIENT).unwrap();
            let mut t = Tensor::ones([1 << 20], (tch::Kind::Float, tch::Device::Cpu));
            // Until the parent kills this process, or (should it die first) errors.
            while pg.allreduce_sum(&mut t).is_ok() {}
        }
        other => panic!("unknown scenario {other}"),
    }
}

fn collectives_rank1(store: &Store) {
    store.set("from1", b"one").unwrap();
    assert_eq!(store.get("from0").unwrap(), b"zero");
    store.add("count", 1).unwrap();
    // The parent set "k" through a prefixed view: here it is, under its full name.
    assert_eq!(store.get("/worker/attempt_0/k").unwrap(), b"v");
    let view = store.prefixed("/worker/attempt_0").unwrap();
    let pg = ProcessGroup::new(&view, 1, 2, Backend::Gloo, PATIENT).unwrap();
    collectives(&pg);
    // After the barrier, both ranks have added.
    assert_eq!(store.add("count", 0).unwrap(), 2);
}

/// The same calls on both ranks, each checking the result.
fn collectives(pg: &ProcessGroup) {
    let rank = pg.rank() as f64;
    let mut t = Tensor::from_slice(&[1.0f32, 2.0, 3.0]) * (rank + 1.0);
    pg.allreduce_sum(&mut t).unwrap();
    assert_eq!(Vec::<f32>::try_from(&t).unwrap(), [3.0, 6.0, 9.0]);
    // Another kind and shape, and a larger buffer.
    let mut big = Tensor::full([1000, 3], rank + 0.5, (tch::Kind::Double, tch::Device::Cpu));
    pg.allreduce_sum(&mut big).unwrap();
    assert_eq!(Vec::<f64>::try_from(big.flatten(0, -1)).unwrap(), vec![2.0; 3000]);
    // Started, then waited for: a tensor the pending collective borrows, and two parts of one
    // buffer that the pending collectives own (as dist::GradientSum's buckets), waited for in
    // the other order than started.
    let mut s = Tensor::from_slice(&[1.0f32, 2.0]) * (rank + 1.0);
    let pending = pg.start_allreduce_sum(&mut s).unwrap();
    pending.wait().unwrap();
    assert_eq!(Vec::<f32>::try_from(&s).unwrap(), [3.0, 6.0]);
    let buffer = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0]) * (rank + 1.0);
    let last = pg.start_allreduce_sum_part(buffer.narrow(0, 3, 2)).unwrap();
    let first = pg.start_allreduce_sum_part(buffer.narrow(0, 0, 3)).unwrap();
    first.wait().unwrap();
    last.wait().unwrap();
    assert_eq!(Vec::<f32>::try_from(&buffer).unwrap(), [3.0, 6.0, 9.0, 12.0, 15.0]);
    // From rank 1, so the result is not what rank 0 already had.
    let mut b = Tensor::from_slice(&[10.0f32, 20.0]) * (rank + 1.0);
    pg.broadcast(&mut b, 1).unwrap();
    assert_eq!(Vec::<f32>::try_from(&b).unwrap(), [20.0, 40.0]);
    pg.barrier().unwrap();
}

#[test]
fn two_processes_share_a_store_and_allreduce_broadcast_and_barrier() {
    let port = free_port();
    let peer = Peer::spawn("collectives", port);
    let store = Store::tcp(HOST, port, 2, true, PATIENT).unwrap();
    store.set("from0", b"zero").unwrap();
    assert_eq!(store.get("from1").unwrap(), b"one");
    store.add("count", 1).unwrap();
    let view = store.prefixed("/worker/attempt_0").unwrap();
    view.set("k", b"v").unwrap();
    let pg = ProcessGroup::new(&view, 0, 2, Backend::Gloo, PATIENT).unwrap();
    assert_eq!((pg.rank(), pg.world_size()), (0, 2));
    collectives(&pg);
    assert_eq!(store.add("count", 0).unwrap(), 2);
    peer.assert_succeeds();
}

#[test]
fn a_store_of_one_process_sets_gets_and_adds() {
    let store = Store::tcp(HOST, free_port(), 1, true, PATIENT).unwrap();
    store.set("empty", b"").unwrap();
    assert_eq!(store.get("empty").unwrap(), b"");
    store.set("bytes", &[0, 255, 7]).unwrap();
    assert_eq!(store.get("bytes").unwrap(), [0, 255, 7]);
    assert_eq!(store.add("n", 5).unwrap(), 5);
    assert_eq!(store.add("n", -2).unwrap(), 3);
    let a = store.prefixed("a").unwrap();
    a.set("x", b"1").unwrap();
    assert_eq!(store.get("a/x").unwrap(), b"1");
    // A group of one is a group: its collectives leave tensors as they are.
    let pg = ProcessGroup::new(&a, 0, 1, Backend::Gloo, PATIENT).unwrap();
    let mut t = Tensor::from_slice(&[1.5f32, -2.0]);
    pg.allreduce_sum(&mut t).unwrap();
    pg.broadcast(&mut t, 0).unwrap();
    pg.barrier().unwrap();
    assert_eq!(Vec::<f32>::try_from(&t).unwrap(), [1.5, -2.0]);
}

#[test]
fn bad_arguments_are_errors() {
    assert!(Store::tcp(HOST, free_port(), 0, true, PATIENT).is_err());
    let store = Store::tcp(HOST, free_port(), 1, true, PATIENT).unwrap();
    assert!(store.set("nul\0key", b"").is_err());
    let err = ProcessGroup::new(&store, 1, 1, Backend::Gloo, PATIENT).err().unwrap();
    assert!(err.to_string().contains("rank 1"), "{err}");
    let pg = ProcessGroup::new(&store, 0, 1, Backend::Gloo, PATIENT).unwrap();
    let mut t = Tensor::zeros([2, 3], (tch::Kind::Float, tch::Device::Cpu)).transpose(0, 1);
    let err = pg.allreduce_sum(&mut t).unwrap_err().to_string();
    assert!(err.contains("contiguous"), "{err}");
    let mut t = Tensor::zeros([2], (tch::Kind::Float, tch::Device::Cpu));
    assert!(pg.broadcast(&mut t, 1).is_err());
}

/// Runs `f`, which must fail: its message and how long it took.
fn timed_error<T>(f: impl FnOnce() -> Result<T>) -> (String, Duration) {
    let start = Instant::now();
    let result = f();
    let elapsed = start.elapsed();
    match result {
        Ok(_) => panic!("succeeded after {elapsed:?}, expected an error"),
        Err(e) => (format!("{e:#}"), elapsed),
    }
}

const SHORT: Duration = Duration::from_secs(2);
/// A timeout of SHORT must fail by then; this leaves room for a loaded machine.
const SHORT_BOUND: Duration = Duration::from_secs(6);

#[test]
fn a_store_server_whose_peer_never_comes_fails_within_its_timeout() {
    let port = free_port();
    let (message, elapsed) = timed_error(|| Store::tcp(HOST, port, 2, true, SHORT));
    println!("server without its peer, after {elapsed:?}: {message}");
    assert!(elapsed < SHORT_BOUND, "{elapsed:?}");
    assert!(message.contains(&format!("{HOST}:{port}")), "{message}");
}

#[test]
fn a_store_client_without_a_server_fails_within_its_timeout_naming_the_address() {
    let port = free_port();
    let (message, elapsed) = timed_error(|| Store::tcp(HOST, port, 2, false, SHORT));
    println!("client without a server, after {elapsed:?}: {message}");
    assert!(elapsed < SHORT_BOUND, "{elapsed:?}");
    assert!(message.contains(&format!("{HOST}:{port}")), "{message}");
}

#[test]
fn getting_a_key_nobody_sets_fails_within_the_timeout_naming_the_key() {
    let store = Store::tcp(HOST, free_port(), 1, true, SHORT).unwrap();
    let (message, elapsed) = timed_error(|| store.prefixed("/p").unwrap().get("never_set"));
    println!("missing key, after {elapsed:?}: {message}");
    assert!(elapsed >= Duration::from_millis(1500) && elapsed < SHORT_BOUND, "{elapsed:?}");
    assert!(message.contains("never_set"), "{message}");
}

#[test]
fn a_peer_that_never_joins_the_group_fails_its_creation_within_the_timeout() {
    let port = free_port();
    let _peer = Peer::spawn("store_only", port);
    let store = Store::tcp(HOST, port, 2, true, PATIENT).unwrap();
    let (message, elapsed) = timed_error(|| ProcessGroup::new(&store, 0, 2, Backend::Gloo, SHORT));
    println!("group without its peer, after {elapsed:?}: {message}");
    assert!(elapsed < SHORT_BOUND, "{elapsed:?}");
    assert!(message.contains("Gloo process group"), "{message}");
}

#[test]
fn a_peer_killed_mid_allreduce_makes_the_survivor_fail_promptly() {
    let port = free_port();
    let mut peer = Peer::spawn("allreduce_forever", port);
    let store = Store::tcp(HOST, port, 2, true, PATIENT).unwrap();
    // A timeout far longer than the failure may take: the error must come from the closed
    // connection, not from the timeout.
    let pg = ProcessGroup::new(&store, 0, 2, Backend::Gloo, PATIENT).unwrap();
    let mut t = Tensor::ones([1 << 20], (tch::Kind::Float, tch::Device::Cpu));
    pg.allreduce_sum(&mut t).unwrap();
    // Killed from another thread while this one is inside allreduces.
    let (sent, killed_at) = std::sync::mpsc::channel();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        // SIGKILL: the peer gets no chance to close anything itself.
        peer.child.kill().unwrap();
        sent.send(Instant::now()).unwrap();
        peer
    });
    let start = Instant::now();
    let message = loop {
        if let Err(e) = pg.allreduce_sum(&mut t) {
            break format!("{e:#}");
        }
        assert!(start.elapsed() < PATIENT, "allreduce kept succeeding after the peer was killed");
    };
    let killed_at = killed_at.recv_timeout(PATIENT).unwrap();
    let after_kill = killed_at.elapsed();
    println!("peer killed mid-allreduce, error {after_kill:?} after the kill: {message}");
    assert!(after_kill < Duration::from_secs(5), "{after_kill:?}");
    assert!(message.contains("allreduce on rank 0"), "{message}");
    drop(killer.join().unwrap());
}

#[test]
fn nccl_needs_cuda() {
    let store = Store::tcp(HOST, free_port(), 1, true, PATIENT).unwrap();
    let result = ProcessGroup::new(&store, 0, 1, Backend::Nccl, PATIENT);
    if cfg!(torchfit_nccl) && tch::Cuda::is_available() {
        // A machine with a GPU: a group of one works like any other.
        let pg = result.unwrap();
        let mut t = Tensor::from_slice(&[1.0f32, 2.0]).to_device(tch::Device::Cuda(0));
        pg.allreduce_sum(&mut t).unwrap();
        pg.broadcast(&mut t, 0).unwrap();
        pg.barrier().unwrap();
        assert_eq!(Vec::<f32>::try_from(&t.to_device(tch::Device::Cpu)).unwrap(), [1.0, 2.0]);
        return;
    }
    let message = format!("{:#}", result.err().unwrap());
    println!("NCCL here: {message}");
    let expected = if cfg!(torchfit_nccl) { "needs a CUDA device" } else { "built without NCCL" };
    assert!(message.contains(expected), "{message}");
}
