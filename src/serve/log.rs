//! The access log, written off the request path as `tracing-appender` writes: a request
//! only hands its few fields to a bounded channel; one thread formats the JSON lines into a
//! buffer and writes it to standard error when it fills, every [`FLUSH_EVERY`] while lines
//! come, and when they stop. While lines come, the thread takes them every [`POLL`] instead
//! of sleeping on the channel: a receiver asleep on it is woken by every send, a system call
//! and a switch of threads per request, which on a busy server costs more than the line. A request never waits on standard error (a slow terminal or a
//! full pipe): past [`QUEUE`] waiting lines, new ones are dropped and counted, and the count
//! is logged. The thread ends, writing out every line it was given, once every sender is
//! gone; [`AccessLog::finish`] waits for that, so graceful shutdown loses no line.

use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// Lines waiting for the writer at most.
const QUEUE: usize = 1 << 16;
/// How long a written line may wait in the buffer while more lines come.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How often the writer takes the lines queued while they come.
const POLL: Duration = Duration::from_millis(10);

/// One request, as the log line tells it.
pub struct Entry {
    pub time: SystemTime,
    pub remote: Option<SocketAddr>,
    pub method: axum::http::Method,
    pub path: String,
    pub status: u16,
    pub seconds: f64,
}

/// The sending end; clones share the writer.
#[derive(Clone)]
pub struct AccessLog {
    queue: SyncSender<Entry>,
    dropped: Arc<AtomicU64>,
}

/// The writer thread, to wait for at shutdown.
pub struct Writer(JoinHandle<()>);

impl AccessLog {
    /// Starts the writer thread on `out`.
    pub fn start(out: Box<dyn Write + Send>) -> (AccessLog, Writer) {
        let (queue, lines) = mpsc::sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = dropped.clone();
        let thread = std::thread::spawn(move || write_lines(&lines, out, &counted));
        (AccessLog { queue, dropped }, Writer(thread))
    }

    /// Queues a line; never blocks.
    pub fn log(&self, entry: Entry) {
        match self.queue.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Writer {
    /// Waits until every line sent has been written (once every [`AccessLog`] is dropped).
    pub fn finish(self) {
        let _ = self.0.join();
    }
}

fn write_lines(lines: &Receiver<Entry>, out: Box<dyn Write + Send>, dropped: &AtomicU64) {
    let mut out = BufWriter::with_capacity(64 << 10, out);
    let mut last_flush = Instant::now();
    let mut pending = false;
    loop {
        let mut taken = 0;
        let open = loop {
            match lines.try_recv() {
                Ok(entry) => {
                    write_line(&mut out, &entry);
                    taken += 1;
                }
                Err(TryRecvError::Empty) => break true,
                Err(TryRecvError::Disconnected) => break false,
            }
        };
        pending |= taken > 0;
        // Out every FLUSH_EVERY while lines come, and at once when they stop.
        if pending && (taken == 0 || last_flush.elapsed() >= FLUSH_EVERY) {
            report_dropped(&mut out, dropped);
            let _ = out.flush();
            last_flush = Instant::now();
            pending = false;
        }
        if !open {
            break;
        }
        if taken == 0 && !pending {
            // Idle: sleep on the channel until the next line, which wakes it.
            match lines.recv() {
                Ok(entry) => {
                    write_line(&mut out, &entry);
                    pending = true;
                }
                Err(_) => break,
            }
        }
        std::thread::sleep(POLL);
    }
    report_dropped(&mut out, dropped);
    let _ = out.flush();
}

fn report_dropped(out: &mut impl Write, dropped: &AtomicU64) {
    let n = dropped.swap(0, Ordering::Relaxed);
    if n > 0 {
        let _ = writeln!(out, "torchfit: the access log dropped {n} lines (standard error did not keep up)");
    }
}

/// One JSON line, serialised straight into the buffer.
fn write_line(out: &mut impl Write, entry: &Entry) {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        time: String,
        remote: Option<SocketAddr>,
        method: &'a str,
        path: &'a str,
        status: u16,
        ms: f64,
    }
    let time = chrono::DateTime::<chrono::Utc>::from(entry.time);
    let line = Line {
        time: time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        remote: entry.remote,
        method: entry.method.as_str(),
        path: &entry.path,
        status: entry.status,
        ms: (entry.seconds * 1e6).round() / 1e3,
    };
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        let _ = out.write_all(b"\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A writer whose bytes the test can read.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn entry(status: u16) -> Entry {
        Entry {
            time: SystemTime::UNIX_EPOCH,
            remote: None,
            method: axum::http::Method::POST,
            path: "/predict".into(),
            status,
            seconds: 0.00125,
        }
    }

    #[test]
    fn every_line_is_written_by_the_time_the_log_finishes() {
        let shared = Shared::default();
        let (log, writer) = AccessLog::start(Box::new(shared.clone()));
        let clone = log.clone();
        for i in 0..5000 {
            clone.log(entry(200 + (i % 3)));
        }
        drop((log, clone));
        writer.finish();
        let text = String::from_utf8(shared.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 5000, "{}", &text[..200]);
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(first["path"], "/predict");
        assert_eq!(first["ms"], 1.25);
    }

    #[test]
    fn lines_are_flushed_while_the_server_runs() {
        let shared = Shared::default();
        let (log, writer) = AccessLog::start(Box::new(shared.clone()));
        log.log(entry(200));
        let started = Instant::now();
        while shared.0.lock().unwrap().is_empty() {
            assert!(started.elapsed() < Duration::from_secs(5), "the line was never written");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(log);
        writer.finish();
    }
}
