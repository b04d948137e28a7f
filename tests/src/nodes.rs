//! Real node processes for end-to-end tests.
//!
//! Each node runs its release-or-debug binary from the workspace's target
//! directory, in the test's own directory (so `files/…` defaults land there),
//! logging JSON to a file. Nodes listen on `127.0.0.1:0` unless a port is
//! given; the fixture reads the bound address from the node's log. Killing a
//! node is a real SIGKILL; stopping it is a real SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The directory holding the node binaries.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SMESH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug")
}

/// Path of a node binary; fails the test with instructions if it is missing.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the node binaries first (`cargo build --workspace --bins`, as scripts/test does)",
        path.display()
    );
    path
}

/// A free loopback port, for a node that must start later on a known port.
pub fn reserve_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A running node process.
#[derive(Debug)]
pub struct Process {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
    /// The data-plane port it listens on (masters and sidecars).
    pub port: u16,
}

impl Process {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal by name (`TERM`, `USR1`, …) with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.to_string())
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -{signal} {pid} failed");
        }
    }

    /// Waits for the process to exit by itself.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    self.child = None;
                    return status;
                }
            } else {
                panic!("{} was already reaped", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}; log:\n{}",
                self.name,
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn stop(&mut self, within: Duration) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(within).await
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The port in the `address` field of the first log line saying `message`.
    pub fn logged_port(&self, message: &str) -> Option<u16> {
        self.log_events(message).iter().find_map(|event| {
            event["fields"]["address"]
                .as_str()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
        })
    }

    /// Waits (at most `within`) until a log line's message contains `needle`.
    pub async fn wait_logged(&self, needle: &str, within: Duration) {
        let what = format!("{} to log {needle:?}", self.name);
        crate::eventually(&what, within, || async {
            (!self.log_events(needle).is_empty()).then_some(())
        })
        .await;
    }

    /// Waits (at most `within`) until the log, anywhere in a line (a field
    /// as well as a message), contains `text`.
    pub async fn wait_logged_text(&self, text: &str, within: Duration) {
        let what = format!("{} to log {text:?}", self.name);
        crate::eventually(&what, within, || async {
            self.log().contains(text).then_some(())
        })
        .await;
    }

    /// JSON log lines whose message contains `needle`.
    pub fn log_events(&self, needle: &str) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|v| {
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(needle))
            })
            .collect()
    }

    /// The field `field` of every JSON log line whose message contains
    /// `needle`, in order (empty for a line without it): e.g. the peers a
    /// node connected to.
    pub fn logged_values(&self, needle: &str, field: &str) -> Vec<String> {
        self.log_events(needle)
            .iter()
            .map(|e| e["fields"][field].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- last log lines of {} ----\n{}",
                self.name,
                self.log_tail(30)
            );
        }
        self.kill();
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    binary: &'static str,
    name: String,
    dir: PathBuf,
    args: Vec<String>,
    stdin: Option<PathBuf>,
    /// Wait for this log message (with an `address` field) before returning.
    ready_message: Option<&'static str>,
    /// A command the binary is started through (e.g. `nsenter …`), if any.
    wrapper: Vec<String>,
}

impl NodeSpec {
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets `flag` to `value`, replacing the value it had.
    pub fn with_flag(mut self, flag: &str, value: impl Into<String>) -> Self {
        let value = value.into();
        match self.args.iter().position(|a| a == flag) {
            Some(at) if at + 1 < self.args.len() => self.args[at + 1] = value,
            _ => self.args.extend([flag.to_string(), value]),
        }
        self
    }

    /// Starts the binary through `command` (which must exec it), e.g. to
    /// run it in another mount namespace ([`crate::smallfs::SmallFs::enter`]).
    pub fn wrapped(mut self, command: Vec<String>) -> Self {
        self.wrapper = command;
        self
    }

    /// Feeds the file to the node's standard input.
    pub fn stdin_from(mut self, path: PathBuf) -> Self {
        self.stdin = Some(path);
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts the process; for servers, waits until it listens.
    pub async fn spawn(self) -> Process {
        std::fs::create_dir_all(&self.dir).expect("create node dir");
        let log = self.dir.join(format!("{}.log", self.name));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open log");
        let stdin = match &self.stdin {
            Some(path) => Stdio::from(std::fs::File::open(path).expect("open stdin file")),
            None => Stdio::null(),
        };
        let offset = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary(self.binary));
                command
            }
            None => Command::new(binary(self.binary)),
        };
        let child = command
            .args(&self.args)
            .args(["--log-format", "json", "--log", "info,smesh_core=debug"])
            .current_dir(&self.dir)
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary));
        let mut process = Process {
            name: self.name.clone(),
            child: Some(child),
            log,
            port: 0,
        };
        if let Some(message) = self.ready_message {
            process.port = wait_listening(&mut process, message, offset).await;
        }
        process
    }
}

async fn wait_listening(process: &mut Process, message: &str, offset: u64) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read(&process.log).unwrap_or_default();
        let fresh =
            String::from_utf8_lossy(&log[usize::try_from(offset).unwrap_or(0).min(log.len())..])
                .into_owned();
        for line in fresh.lines() {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if value["fields"]["message"].as_str() == Some(message) {
                let address = value["fields"]["address"].as_str().unwrap_or_default();
                if let Some(port) = address.rsplit(':').next().and_then(|p| p.parse().ok()) {
                    return port;
                }
            }
        }
        assert!(
            process.is_running(),
            "{} exited during start-up; log:\n{}",
            process.name,
            process.log_tail(40)
        );
        assert!(
            Instant::now() < deadline,
            "{} did not start listening; log:\n{}",
            process.name,
            process.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes a peer list (`<id>;127.0.0.1:<port>;` per line).
pub fn write_peers(path: &Path, peers: &[(&str, u16)]) {
    let text: String = peers
        .iter()
        .map(|(id, port)| format!("{id};127.0.0.1:{port};\n"))
        .collect();
    std::fs::write(path, text).expect("write peer list");
}

/// A master publishing to `kafka` / `topic`, listening on `port` (0 = any).
pub fn master(dir: &Path, id: &str, kafka: &str, topic: &str, port: u16) -> NodeSpec {
    NodeSpec {
        binary: "smesh-master",
        name: id.to_string(),
        dir: dir.to_path_buf(),
        args: vec![
            "--id".into(),
            id.into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--admin-listen".into(),
            "127.0.0.1:0".into(),
            "--kafka-brokers".into(),
            kafka.into(),
            "--topic".into(),
            topic.into(),
            "--health-report".into(),
            dir.join("healthCheckReport.csv").display().to_string(),
        ],
        stdin: None,
        ready_message: Some("master listening"),
        wrapper: Vec::new(),
    }
}

/// A sidecar using the given masters, listening on `port` (0 = any).
pub fn sidecar(dir: &Path, id: &str, masters: &[(&str, u16)], port: u16) -> NodeSpec {
    let list = dir.join(format!("{id}-sidecarCon.csv"));
    std::fs::create_dir_all(dir).expect("create dir");
    write_peers(&list, masters);
    NodeSpec {
        binary: "smesh-sidecar",
        name: id.to_string(),
        dir: dir.to_path_buf(),
        args: vec![
            "--id".into(),
            id.into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--masters".into(),
            list.display().to_string(),
        ],
        stdin: None,
        ready_message: Some("sidecar listening"),
        wrapper: Vec::new(),
    }
}

/// A client using the given sidecars, with its spool in `<dir>/<id>/`.
pub fn client(dir: &Path, id: &str, sidecars: &[(&str, u16)], sources: &[String]) -> NodeSpec {
    let own = client_dir(dir, id);
    std::fs::create_dir_all(&own).expect("create client dir");
    let list = own.join("clientCon.csv");
    write_peers(&list, sidecars);
    let mut args = vec![
        "--id".to_string(),
        id.to_string(),
        "--sidecars".into(),
        list.display().to_string(),
        "--spool-file".into(),
        spool_path(dir, id).display().to_string(),
    ];
    for source in sources {
        args.push("--source".into());
        args.push(source.clone());
    }
    NodeSpec {
        binary: "smesh-client",
        name: id.to_string(),
        dir: own,
        args,
        stdin: None,
        ready_message: None,
        wrapper: Vec::new(),
    }
}

/// A `--source` reading `path` as a file source.
pub fn file_source(path: &Path, follow: bool) -> String {
    format!("file:path={},follow={follow}", path.display())
}

/// Where a test client keeps its own files.
pub fn client_dir(dir: &Path, id: &str) -> PathBuf {
    dir.join(id)
}

/// A test client's spool file.
pub fn spool_path(dir: &Path, id: &str) -> PathBuf {
    client_dir(dir, id).join("safeData.csv")
}

/// Writes `n` JSON lines `{"client":…,"n":i,"pad":…}` (one event each) and
/// returns them without their newlines.
pub fn write_lines(
    path: &Path,
    client: &str,
    range: std::ops::Range<u64>,
    pad: usize,
) -> Vec<Vec<u8>> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open input");
    let lines: Vec<Vec<u8>> = range.map(|i| line(client, i, pad)).collect();
    let mut buffer = Vec::new();
    for line in &lines {
        buffer.extend_from_slice(line);
        buffer.push(b'\n');
    }
    file.write_all(&buffer).expect("append input");
    file.sync_all().expect("sync input");
    lines
}

/// Appends JSON lines to a file over time, like a live source, from a thread.
#[derive(Debug)]
pub struct Feeder {
    handle: Option<std::thread::JoinHandle<()>>,
    /// Every line the feeder will have written once done, in order.
    pub lines: Vec<Vec<u8>>,
}

impl Feeder {
    /// Writes `total` lines for `client` into `path`, `per_tick` every `tick`.
    pub fn start(path: &Path, client: &str, total: u64, per_tick: u64, tick: Duration) -> Self {
        let lines: Vec<Vec<u8>> = (0..total).map(|i| line(client, i, 40)).collect();
        std::fs::write(path, b"").expect("create input");
        let (path, client) = (path.to_path_buf(), client.to_string());
        let handle = std::thread::spawn(move || {
            let mut next = 0;
            while next < total {
                let end = (next + per_tick).min(total);
                write_lines(&path, &client, next..end, 40);
                next = end;
                std::thread::sleep(tick);
            }
        });
        Self {
            handle: Some(handle),
            lines,
        }
    }

    /// Waits until every line is written.
    pub fn finish(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.join().expect("feeder thread");
        }
    }
}

fn line(client: &str, i: u64, pad: usize) -> Vec<u8> {
    format!(
        "{{\"client\":\"{client}\",\"n\":{i},\"pad\":\"{}\"}}",
        "x".repeat(pad)
    )
    .into_bytes()
}
