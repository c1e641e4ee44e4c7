//! `torchfit serve` in tests: the real binary on 127.0.0.1 (a free port), and a minimal
//! HTTP/1.1 client over a plain TCP stream, as curl would talk to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::{assert_ok, repo_file, stdout, torchfit, BIN};

pub struct Server {
    child: Child,
    pub port: u16,
    /// Everything the server wrote on standard error so far.
    pub log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `torchfit serve MODEL --port 0 ARGS...` in `dir` and waits (at most a minute)
    /// for its start-up line.
    pub fn start(dir: &Path, model: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg(model)
            .args(["--port", "0"])
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("torchfit serve starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Logged before the port is sent, so that the start-up line is in the log
                // once `start` returns.
                if let Ok(mut log) = sink.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
                if let Some(rest) = line.split("on http://127.0.0.1:").nth(1) {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let _ = port_tx.send(port.parse::<u16>().unwrap());
                }
            }
        });
        match port_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(port) => Server { child, port, log },
            Err(_) => {
                let _ = child.kill();
                panic!("torchfit serve did not start: {}", log.lock().unwrap());
            }
        }
    }

    /// Sends one request on a fresh connection and returns the status, the headers (names
    /// in lower case) and the body.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        request(self.port, method, path, headers, body)
    }

    /// A JSON request; the answer's status and JSON body.
    pub fn json(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let response = self.request(method, path, &[("Content-Type", "application/json")], body.as_bytes());
        let value = serde_json::from_slice(&response.body)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {}", String::from_utf8_lossy(&response.body)));
        (response.status, value)
    }

    /// SIGTERM, then the exit status (within a minute).
    pub fn terminate(mut self) -> ExitStatus {
        signal(self.child.id(), "TERM");
        wait(&mut self.child, Duration::from_secs(60))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait(mut self, limit: Duration) -> ExitStatus {
        wait(&mut self.child, limit)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status().unwrap();
    assert!(status.success());
}

fn wait(child: &mut Child, limit: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < limit, "torchfit serve did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head += &format!("{name}: {value}\r\n");
    }
    head += "\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) and close before taking the whole body.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Response { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..line_end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 2 + size + 2..];
    }
    out
}

/// Trains `config` (a repository file) into `dir/out` on the CPU.
pub fn train(dir: &Path, out: &str, config: &str, sets: &[&str]) {
    let config = repo_file(config);
    let mut args = vec!["train", config.to_str().unwrap(), "--device", "cpu", "--quiet", "--out", out];
    for s in sets {
        args.extend(["--set", s]);
    }
    assert_ok(&torchfit(dir, &args));
}

/// `torchfit predict` on CSV text: the header and the rows' cells.
pub fn predict_csv(dir: &Path, run: &str, csv: &str, proba: bool) -> Vec<Vec<String>> {
    let input = dir.join(format!("{run}-input.csv"));
    std::fs::write(&input, csv).unwrap();
    let mut args = vec!["predict", run, input.to_str().unwrap()];
    if proba {
        args.push("--proba");
    }
    let out = torchfit(dir, &args);
    assert_ok(&out);
    stdout(&out).lines().skip(1).map(|l| l.split(',').map(String::from).collect()).collect()
}
