//! A real Apache Kafka broker for the end-to-end tests and the benchmark.
//!
//! [`KafkaBroker::start`] runs Kafka 4.1.1 as a single KRaft node (combined
//! broker + controller) from the jars that `scripts/kafka-fetch` copies into
//! `.cache/kafka/<version>/libs`, on free 127.0.0.1 ports, with its data in a
//! fresh temporary directory. It only returns once the broker serves clients.
//! The broker can be hard-stopped and restarted on the same ports with the
//! same data, to test reconnection and redelivery.
//!
//! [`KafkaBroker::start_secure`] starts one that serves, beside its plaintext
//! listener, an `SSL` listener that requires a client certificate (mutual
//! TLS) and a `SASL_SSL` listener taking SASL/PLAIN users, both with PEM key
//! material from a CA made on the fly ([`SecureListeners`]); no keytool, no
//! JKS. The plaintext listener stays, so fixtures (the consumer in
//! [`crate::records`], topic creation) work the same on every broker.
//!
//! Environment:
//! - `SMESH_KAFKA_LIBS`: folder of Kafka jars to use instead of the cache
//!   (no download is attempted then).
//! - `SMESH_TEST_KAFKA`: bootstrap address of a broker started by someone
//!   else; [`KafkaBroker::shared`] then returns it instead of starting one.
//! - `SMESH_KEEP_KAFKA`: keep the broker's temporary directory (data,
//!   `server.properties`, `broker.log`) instead of deleting it; its path is
//!   printed on stderr.
//! - `SMESH_KAFKA_JAVA_OPTS`: whitespace-separated JVM options replacing the
//!   defaults ([`DEFAULT_JAVA_OPTS`]), e.g. to give a benchmark more heap.
//! - `JAVA_HOME`: which `java` to run (else `java` from `PATH`).
//!
//! No JVM outlives the process that started it: the JVM runs under a small
//! `sh` watchdog whose stdin is a pipe held by this process. When that pipe
//! closes (drop, `stop`, or this process dying in any way, even `kill -9`),
//! the watchdog SIGKILLs the JVM (and, unless told to keep it for a restart,
//! deletes the directory). That also covers the broker behind
//! [`KafkaBroker::shared`], which lives in a static and is never dropped.

use std::collections::hash_map::RandomState;
use std::env;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{self, Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use smesh_core::tls::Tier;

use crate::pki::{NodeCerts, Pki};

/// The Kafka version the fixture runs; must match `<kafka.version>` in
/// `tests/kafka/pom.xml` (the jars are cached per version).
pub const KAFKA_VERSION: &str = "4.1.1";

/// JVM options used unless `SMESH_KAFKA_JAVA_OPTS` is set. Serial GC and
/// C1-only JIT start the broker about 25% faster (about 1.3 s instead of
/// 1.75 s here) and, on a small machine, leave more CPU to the code under test
/// than C2 compiling in the background.
pub const DEFAULT_JAVA_OPTS: &[&str] = &[
    "-Xms256m",
    "-Xmx768m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
];

/// The broker logs through slf4j-simple, which writes to stderr (redirected
/// into `broker.log`); these add timestamps and thread names.
const LOG_OPTS: &[&str] = &[
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
    "-Dorg.slf4j.simpleLogger.showThreadName=true",
];

/// Main class of `bin/kafka-storage.sh` in Kafka 4.x (in `kafka_2.13-*.jar`).
const STORAGE_TOOL: &str = "kafka.tools.StorageTool";
/// Main class of `bin/kafka-server-start.sh`.
const SERVER_MAIN: &str = "kafka.Kafka";
/// Logged by Kafka 4.1 as `[KafkaRaftServer nodeId=1] Kafka Server started`,
/// after the broker has been unfenced and its listeners are open.
const STARTED_LINE: &str = "Kafka Server started";

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const LOG_TAIL_LINES: usize = 40;

/// Runs `"$@"` (the JVM) in the background and SIGKILLs it as soon as its own
/// stdin (a pipe from the test process) reaches EOF. `$1` is the broker's
/// directory. If the pipe closes without the word `keep` having been written
/// (the test process died, or the broker is being dropped) the directory is
/// removed too, unless `SMESH_KEEP_KAFKA` is set. The shell exits when the JVM
/// does, with its status, so the test process notices a crashing broker.
const WATCHDOG_SH: &str = r#"
dir=$1
shift
exec 3<&0 </dev/null
"$@" 3<&- >>"$dir/broker.log" 2>&1 &
pid=$!
echo "$pid" >"$dir/broker.pid"
{
    cmd=$(cat <&3)
    # touch, not a redirection: that would end this shell if $dir is gone.
    [ "$cmd" = keep ] || touch "$dir/.remove" 2>/dev/null
    kill -9 "$pid" 2>/dev/null
} &
watcher=$!
exec 3<&-
wait "$pid"
status=$?
kill "$watcher" 2>/dev/null
if [ -e "$dir/.remove" ] && [ -z "${SMESH_KEEP_KAFKA:-}" ]; then
    rm -rf "$dir"
fi
exit "$status"
"#;

static SHARED: OnceLock<Result<KafkaBroker, String>> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A Kafka broker for tests: either one this process started (a JVM running
/// Kafka in KRaft mode on 127.0.0.1, see [`KafkaBroker::start`]) or one started
/// by someone else that is only referred to by its address (see
/// [`KafkaBroker::external`]).
///
/// Dropping a broker this process started kills its JVM and deletes its
/// directory; stopping, restarting or dropping an external one does nothing.
#[derive(Debug)]
pub struct KafkaBroker {
    bootstrap: String,
    local: Option<LocalBroker>,
}

/// The TLS listeners of a broker from [`KafkaBroker::start_secure`].
#[derive(Debug)]
pub struct SecureListeners {
    /// `bootstrap.servers` of the `SSL` listener, which requires a client
    /// certificate signed by `pki`'s CA (`ssl.client.auth=required`).
    pub ssl: String,
    /// `bootstrap.servers` of the `SASL_SSL` listener: TLS (server
    /// certificate only) and SASL/PLAIN with the users the broker was
    /// started with.
    pub sasl_ssl: String,
    /// The CA the broker's certificate (for 127.0.0.1 and localhost) comes
    /// from and client certificates must come from; its files live in the
    /// broker's directory, so they go with it.
    pub pki: Pki,
}

/// What [`LocalBroker::write_config`] puts beside the plaintext listener.
#[derive(Debug)]
struct SecureConfig {
    ssl_port: u16,
    sasl_ssl_port: u16,
    /// The broker's own certificate and key, and the CA it trusts.
    broker: NodeCerts,
    /// SASL/PLAIN users and their passwords.
    users: Vec<(String, String)>,
}

#[derive(Debug)]
struct LocalBroker {
    dir: PathBuf,
    libs: PathBuf,
    java: OsString,
    java_opts: Vec<String>,
    port: u16,
    running: Option<Running>,
    /// The TLS listeners, for a broker from [`KafkaBroker::start_secure`].
    secure: Option<SecureConfig>,
}

#[derive(Debug)]
struct Running {
    /// The `sh` watchdog; it exits when the JVM does.
    child: Child,
    /// Write end of the watchdog's stdin: closing it kills the JVM.
    stdin: Option<ChildStdin>,
}

impl KafkaBroker {
    /// Starts a fresh single-node Kafka broker (KRaft, broker + controller)
    /// on free 127.0.0.1 ports with an empty data directory, and returns once
    /// it really serves clients: its client port accepts connections and its
    /// log says `Kafka Server started` (at most 60 s; about 1.8 s here, of
    /// which 0.5 s formatting the storage and 1.3 s starting the broker).
    ///
    /// Downloads the jars first (via `scripts/kafka-fetch`) if they are not
    /// cached yet, unless `SMESH_KAFKA_LIBS` points at them. Topics are
    /// auto-created with 3 partitions; every internal topic uses replication
    /// factor 1. Always starts a new broker, even when `SMESH_TEST_KAFKA` is
    /// set, so tests that stop or restart the broker own theirs.
    ///
    /// Errors say what failed; if the broker does not come up they include
    /// the last lines of its log.
    pub fn start() -> Result<KafkaBroker, String> {
        Self::start_with_port(None)
    }

    /// [`KafkaBroker::start`] on a given client port (e.g. 9092 for a
    /// development broker), or a free one when `None`.
    pub fn start_with_port(port: Option<u16>) -> Result<KafkaBroker, String> {
        Ok(Self::start_inner(port, None)?.0)
    }

    /// [`KafkaBroker::start`], serving besides its plaintext listener an
    /// `SSL` listener that requires client certificates and a `SASL_SSL`
    /// listener (SASL/PLAIN) for `users` (name, password), with a
    /// certificate for 127.0.0.1 from a CA made for this broker. Each
    /// listener has its own port; [`SecureListeners`] says which and holds
    /// the CA, to issue client certificates from.
    pub fn start_secure(users: &[(&str, &str)]) -> Result<(KafkaBroker, SecureListeners), String> {
        let users = users
            .iter()
            .map(|(user, password)| ((*user).to_string(), (*password).to_string()))
            .collect();
        let (broker, secure) = Self::start_inner(None, Some(users))?;
        let secure = secure.ok_or("the secure broker has no TLS listeners")?;
        Ok((broker, secure))
    }

    fn start_inner(
        port: Option<u16>,
        users: Option<Vec<(String, String)>>,
    ) -> Result<(KafkaBroker, Option<SecureListeners>), String> {
        let libs = libs_dir()?;
        let java = java_binary();
        let java_opts = java_opts();
        let ports = free_ports(port, if users.is_some() { 4 } else { 2 })?;
        let (port, controller_port) = (ports[0], ports[1]);
        let dir = create_unique_dir()?;
        let keep = keep_dir();
        if keep {
            eprintln!(
                "kafka fixture: broker directory {} (kept: SMESH_KEEP_KAFKA is set)",
                dir.display()
            );
        }
        // From here on, dropping `broker` cleans up the directory (and the JVM).
        let mut broker = KafkaBroker {
            bootstrap: format!("127.0.0.1:{port}"),
            local: Some(LocalBroker {
                dir,
                libs,
                java,
                java_opts,
                port,
                running: None,
                secure: None,
            }),
        };
        let mut listeners = None;
        if let Some(local) = broker.local.as_mut() {
            if let Some(users) = users {
                // The CA lives in the broker's directory and goes with it.
                let pki = Pki::new(&local.dir, "kafka");
                // Any identity will do: Kafka reads only the host SANs.
                let certs = pki.issue(Tier::Master, "kafka-broker");
                local.secure = Some(SecureConfig {
                    ssl_port: ports[2],
                    sasl_ssl_port: ports[3],
                    broker: certs,
                    users,
                });
                listeners = Some(SecureListeners {
                    ssl: format!("127.0.0.1:{}", ports[2]),
                    sasl_ssl: format!("127.0.0.1:{}", ports[3]),
                    pki,
                });
            }
            local.write_config(controller_port)?;
            local.format_storage()?;
            local.launch()?;
        }
        Ok((broker, listeners))
    }

    /// Returns the process-wide shared broker, for tests that only need *a*
    /// broker: started on first use by [`KafkaBroker::start`] and then reused
    /// by every test in this process, which saves the JVM start per test. If
    /// `SMESH_TEST_KAFKA` is set to a bootstrap address, that broker is used
    /// instead and nothing is started.
    ///
    /// The shared broker is never stopped or dropped (it lives in a static);
    /// the stdin watchdog kills its JVM and removes its directory when this
    /// process exits. A failure to start is remembered, so every caller gets
    /// the same error at once instead of waiting again. Use unique topic and
    /// group names per test, since tests share this broker.
    pub fn shared() -> Result<&'static KafkaBroker, String> {
        SHARED
            .get_or_init(|| match env::var("SMESH_TEST_KAFKA") {
                Ok(addr) if !addr.trim().is_empty() => Ok(KafkaBroker::external(addr.trim())),
                _ => KafkaBroker::start(),
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Refers to a broker this process did not start (e.g. the address in
    /// `SMESH_TEST_KAFKA`), so code can take a `KafkaBroker` either way. Such
    /// a handle only reports its address: `stop` and drop do nothing,
    /// `restart` returns an error and `log_path` is empty.
    pub fn external(bootstrap: impl Into<String>) -> KafkaBroker {
        KafkaBroker {
            bootstrap: bootstrap.into(),
            local: None,
        }
    }

    /// The `bootstrap.servers` address of the broker, e.g. `127.0.0.1:40123`.
    /// It stays the same across [`KafkaBroker::restart`], so clients can
    /// reconnect to the restarted broker.
    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    /// Hard-stops the broker, like a crash: SIGKILLs the JVM (no controlled
    /// shutdown; records Kafka already wrote survive, since the files and the
    /// page cache outlive the process) and returns once the client port no
    /// longer accepts connections (about 10 ms). The data stays for
    /// [`KafkaBroker::restart`]. Does nothing if the broker is not running or
    /// is external.
    pub fn stop(&mut self) {
        let Some(local) = self.local.as_mut() else {
            return;
        };
        if local.running.is_none() {
            return;
        }
        local.kill(true);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while port_accepts(local.port) {
            if Instant::now() >= deadline {
                eprintln!(
                    "kafka fixture: 127.0.0.1:{} still accepts connections {:?} after the broker was killed",
                    local.port, STOP_TIMEOUT
                );
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the broker again on the same ports with the same data (stopping
    /// it first if it is running), and waits until it serves clients as
    /// [`KafkaBroker::start`] does. Used to test that clients survive a
    /// broker outage and that acknowledged records are still there.
    ///
    /// Takes about 4.3 s: after a crash the restarted controller refuses the
    /// broker's new registration until the old one's session expires
    /// (`broker.session.timeout.ms`, lowered from 9 s to 3 s for this).
    ///
    /// Fails for an external broker, or with the end of the broker log if it
    /// does not come up (the ports may have been taken meanwhile).
    pub fn restart(&mut self) -> Result<(), String> {
        if self.local.is_none() {
            return Err(format!(
                "cannot restart the external Kafka broker at {} (SMESH_TEST_KAFKA); use KafkaBroker::start() for tests that restart the broker",
                self.bootstrap
            ));
        }
        self.stop();
        match self.local.as_mut() {
            Some(local) => local.launch(),
            None => Ok(()),
        }
    }

    /// Path of the broker's log (its stdout and stderr, appended across
    /// restarts), to attach to failure messages. Empty for an external broker.
    /// It is deleted with the broker's directory unless `SMESH_KEEP_KAFKA` is
    /// set.
    pub fn log_path(&self) -> PathBuf {
        match &self.local {
            Some(local) => local.log_path(),
            None => PathBuf::new(),
        }
    }

    /// Process id of the broker's JVM while it runs (e.g. for a benchmark to
    /// sample its memory from `/proc/<pid>/status`); `None` if it is stopped
    /// or external.
    pub fn pid(&self) -> Option<u32> {
        let local = self.local.as_ref()?;
        local.running.as_ref()?;
        fs::read_to_string(local.dir.join("broker.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl KafkaBroker {
    /// Freezes the broker's JVM (SIGSTOP), like a broker stalled by a GC
    /// pause or a stuck disk: connections stay open, nothing is answered.
    /// Panics if the broker is not running here (a test that freezes the
    /// broker owns one: [`KafkaBroker::start`]).
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Lets a frozen broker run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("no broker process of ours to SIG{signal}"));
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill -{signal}: {e}"));
        assert!(status.success(), "kill -{signal} {pid} failed: {status}");
    }
}

impl Drop for KafkaBroker {
    /// Kills the JVM (if running) and removes the broker's directory, or keeps
    /// it and prints its path if `SMESH_KEEP_KAFKA` is set.
    fn drop(&mut self) {
        let Some(local) = self.local.as_mut() else {
            return;
        };
        local.kill(false);
        if keep_dir() {
            eprintln!(
                "kafka fixture: kept the broker directory {} (log: {})",
                local.dir.display(),
                local.log_path().display()
            );
        } else {
            match fs::remove_dir_all(&local.dir) {
                Ok(()) => {}
                // The watchdog removes it too.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => eprintln!(
                    "kafka fixture: could not remove {}: {e}",
                    local.dir.display()
                ),
            }
        }
    }
}

impl SecureConfig {
    /// The TLS and SASL part of `server.properties`.
    ///
    /// Key material goes in as PEM text (`ssl.keystore.type=PEM` with
    /// `ssl.keystore.certificate.chain` and `ssl.keystore.key`): Kafka takes
    /// an unencrypted PKCS#8 key that way, while a PEM keystore *file* would
    /// need an encrypted one. Newlines are written as `\u000a`, which
    /// `.properties` files read back as newlines.
    fn properties(&self) -> Result<String, String> {
        let read = |path: &Path| {
            fs::read_to_string(path).map_err(|e| format!("could not read {}: {e}", path.display()))
        };
        let chain = read(&self.broker.cert)?;
        let key = read(&self.broker.key)?;
        let ca = read(&self.broker.ca)?;
        let mut jaas =
            String::from("org.apache.kafka.common.security.plain.PlainLoginModule required");
        for (user, password) in &self.users {
            jaas.push_str(&format!(" user_{user}=\"{password}\""));
        }
        jaas.push(';');
        Ok(format!(
            "
# TLS listeners (tests/src/kafka.rs, KafkaBroker::start_secure).
ssl.keystore.type=PEM
ssl.keystore.certificate.chain={chain}
ssl.keystore.key={key}
ssl.truststore.type=PEM
ssl.truststore.certificates={ca}
# SSL: mutual TLS. SASL_SSL: the server's certificate, then SASL/PLAIN.
listener.name.ssl.ssl.client.auth=required
listener.name.sasl_ssl.ssl.client.auth=none
listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN
listener.name.sasl_ssl.plain.sasl.jaas.config={jaas}
",
            chain = escape_property_value(&chain),
            key = escape_property_value(&key),
            ca = escape_property_value(&ca),
            jaas = escape_property_value(&jaas),
        ))
    }
}

impl LocalBroker {
    fn log_path(&self) -> PathBuf {
        self.dir.join("broker.log")
    }

    fn properties_path(&self) -> PathBuf {
        self.dir.join("server.properties")
    }

    fn classpath(&self) -> OsString {
        let mut cp = self.libs.as_os_str().to_owned();
        cp.push("/*");
        cp
    }

    fn write_config(&self, controller_port: u16) -> Result<(), String> {
        let data = self.dir.join("data");
        let data = data
            .to_str()
            .ok_or_else(|| format!("the Kafka data path {} is not valid UTF-8", data.display()))?;
        let port = self.port;
        let (listeners, advertised) = match &self.secure {
            None => (
                format!("PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"),
                format!("PLAINTEXT://127.0.0.1:{port}"),
            ),
            Some(secure) => {
                let ours = format!(
                    "PLAINTEXT://127.0.0.1:{port},SSL://127.0.0.1:{},SASL_SSL://127.0.0.1:{}",
                    secure.ssl_port, secure.sasl_ssl_port
                );
                (
                    format!("{ours},CONTROLLER://127.0.0.1:{controller_port}"),
                    ours,
                )
            }
        };
        let mut config = format!(
            "# Written by the smesh test fixture (tests/src/kafka.rs).
# Single KRaft node acting as broker and controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
controller.listener.names=CONTROLLER
listeners={listeners}
advertised.listeners={advertised}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}

# Topics: auto-created with 3 partitions, everything replicated once.
num.partitions=3
auto.create.topics.enable=true
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1

# Fast and small. No delay before the first consumer group rebalance.
group.initial.rebalance.delay.ms=0
# After a kill -9 the restarted controller rejects the broker's new
# registration until the old session expires: 3 s instead of 9 s.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
# 8 MiB instead of 128 MiB compaction buffer (saves ~130 MB of RSS).
log.cleaner.dedupe.buffer.size=8388608
",
            data = escape_property_value(data),
        );
        if let Some(secure) = &self.secure {
            config.push_str(&secure.properties()?);
        }
        let path = self.properties_path();
        fs::write(&path, config).map_err(|e| format!("could not write {}: {e}", path.display()))
    }

    /// `kafka-storage.sh format` with a random cluster id.
    fn format_storage(&self) -> Result<(), String> {
        let cluster_id = random_cluster_id();
        let mut cmd = Command::new(&self.java);
        cmd.args([
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
        ])
        .arg("-cp")
        .arg(self.classpath())
        .arg(STORAGE_TOOL)
        .arg("format")
        .arg("--config")
        .arg(self.properties_path())
        .arg("--cluster-id")
        .arg(&cluster_id)
        .current_dir(&self.dir)
        .stdin(Stdio::null());
        let output = cmd.output().map_err(|e| {
            format!(
                "could not run {} to format the Kafka storage: {e} (Kafka {KAFKA_VERSION} needs Java 17+; set JAVA_HOME or put java on PATH)",
                self.java.to_string_lossy()
            )
        })?;
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        let log = self.dir.join("format.log");
        // Best effort: only for debugging a kept directory.
        let _ = fs::write(&log, &text);
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "formatting the Kafka storage failed ({}): {:?} {STORAGE_TOOL} format --config {} --cluster-id {cluster_id}\n{}",
                output.status,
                self.java,
                self.properties_path().display(),
                last_lines(&text, LOG_TAIL_LINES)
            ))
        }
    }

    /// Starts the JVM under the watchdog and waits until it serves clients.
    fn launch(&mut self) -> Result<(), String> {
        let log_path = self.log_path();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("could not open {}: {e}", log_path.display()))?;
        let offset = log
            .metadata()
            .map_err(|e| format!("could not stat {}: {e}", log_path.display()))?
            .len();
        let _ = writeln!(
            log,
            "==== kafka fixture: starting Kafka {KAFKA_VERSION} on 127.0.0.1:{} ====",
            self.port
        );
        let log_err = log.try_clone().map_err(|e| {
            format!(
                "could not duplicate the handle of {}: {e}",
                log_path.display()
            )
        })?;

        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WATCHDOG_SH)
            .arg("smesh-kafka-watchdog")
            .arg(&self.dir)
            .arg(&self.java)
            .args(&self.java_opts)
            .args(LOG_OPTS)
            .arg("-cp")
            .arg(self.classpath())
            .arg(SERVER_MAIN)
            .arg(self.properties_path())
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            // Keep terminal signals (Ctrl-C) away from the watchdog: the broker
            // goes away when this process does, through the stdin pipe.
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("could not run sh to start the Kafka broker: {e}"))?;
        let stdin = child.stdin.take();
        self.running = Some(Running { child, stdin });

        match self.wait_ready(offset) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.kill(true);
                Err(e)
            }
        }
    }

    fn wait_ready(&mut self, log_offset: u64) -> Result<(), String> {
        let started = Instant::now();
        let deadline = started + READY_TIMEOUT;
        let log_path = self.log_path();
        loop {
            if let Some(running) = self.running.as_mut() {
                match running.child.try_wait() {
                    Ok(Some(status)) => {
                        return Err(self.failure(&format!(
                            "the Kafka broker exited ({status}) before it was ready"
                        )));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        return Err(self.failure(&format!(
                            "could not check on the Kafka broker process: {e}"
                        )));
                    }
                }
            }
            if log_contains_since(&log_path, log_offset, STARTED_LINE) && port_accepts(self.port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.failure(&format!(
                    "the Kafka broker on 127.0.0.1:{} was not ready within {:?}",
                    self.port, READY_TIMEOUT
                )));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn failure(&self, what: &str) -> String {
        let log_path = self.log_path();
        let text = fs::read(&log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("(could not read {}: {e})", log_path.display()));
        let kept = if keep_dir() {
            "kept because SMESH_KEEP_KAFKA is set"
        } else {
            "deleted with the broker; set SMESH_KEEP_KAFKA=1 to keep it"
        };
        format!(
            "{what}; last {LOG_TAIL_LINES} lines of {} ({kept}):\n{}",
            log_path.display(),
            last_lines(&text, LOG_TAIL_LINES)
        )
    }

    /// Kills the JVM through the watchdog and waits for it to be gone.
    /// `keep_dir` tells the watchdog not to delete the directory (restart).
    fn kill(&mut self, keep_dir: bool) {
        let Some(mut running) = self.running.take() else {
            return;
        };
        if let Some(mut stdin) = running.stdin.take() {
            if keep_dir {
                // Fails harmlessly if the watchdog is already gone.
                let _ = stdin.write_all(b"keep\n");
            }
            drop(stdin);
        }
        if let Err(e) = running.child.wait() {
            eprintln!("kafka fixture: waiting for the broker watchdog failed: {e}");
        }
    }
}

/// The folder holding the Kafka jars, fetching them if needed.
fn libs_dir() -> Result<PathBuf, String> {
    if let Some(libs) = env::var_os("SMESH_KAFKA_LIBS") {
        let libs = PathBuf::from(libs);
        if !libs.is_dir() {
            return Err(format!(
                "SMESH_KAFKA_LIBS={} is not a directory",
                libs.display()
            ));
        }
        return Ok(libs);
    }
    let root = repo_root();
    let libs = root
        .join(".cache")
        .join("kafka")
        .join(KAFKA_VERSION)
        .join("libs");
    if download_complete(&libs, &root.join("tests").join("kafka").join("pom.xml")) {
        return Ok(libs);
    }
    fetch(&root)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Mirrors the check in `scripts/kafka-fetch`: the marker holds a copy of the
/// pom the jars were resolved from, and is written only after the copy.
fn download_complete(libs: &Path, pom: &Path) -> bool {
    match (fs::read(libs.join(".complete")), fs::read(pom)) {
        (Ok(marker), Ok(pom)) => marker == pom,
        _ => false,
    }
}

fn fetch(root: &Path) -> Result<PathBuf, String> {
    let script = root.join("scripts").join("kafka-fetch");
    eprintln!(
        "kafka fixture: Kafka {KAFKA_VERSION} jars not cached (or tests/kafka/pom.xml changed), running {}",
        script.display()
    );
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run bash {}: {e}", script.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}); set SMESH_KAFKA_LIBS to a folder of Kafka {KAFKA_VERSION} jars to skip it:\n{}",
            script.display(),
            output.status,
            last_lines(&stderr, LOG_TAIL_LINES)
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let libs = stdout
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| {
            format!(
                "{} printed no libs path; its stderr:\n{}",
                script.display(),
                last_lines(&stderr, LOG_TAIL_LINES)
            )
        })?;
    if libs.is_dir() {
        Ok(libs)
    } else {
        Err(format!(
            "{} printed {}, which is not a directory",
            script.display(),
            libs.display()
        ))
    }
}

fn java_binary() -> OsString {
    match env::var_os("JAVA_HOME") {
        Some(home) if !home.is_empty() => {
            Path::new(&home).join("bin").join("java").into_os_string()
        }
        _ => OsString::from("java"),
    }
}

fn java_opts() -> Vec<String> {
    match env::var("SMESH_KAFKA_JAVA_OPTS") {
        Ok(opts) if !opts.trim().is_empty() => opts.split_whitespace().map(str::to_owned).collect(),
        _ => DEFAULT_JAVA_OPTS.iter().map(|&o| o.to_owned()).collect(),
    }
}

fn keep_dir() -> bool {
    env::var_os("SMESH_KEEP_KAFKA").is_some_and(|v| !v.is_empty())
}

/// `n` distinct free ports (the client's first, then the controller's and
/// any TLS listeners'), found by binding port 0 (or the given client port).
/// All are held until all are known so they differ.
fn free_ports(client: Option<u16>, n: usize) -> Result<Vec<u16>, String> {
    let bind = |port: u16| {
        TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .and_then(|l| Ok((l.local_addr()?.port(), l)))
            .map_err(|e| format!("could not listen on 127.0.0.1:{port}: {e}"))
    };
    let mut held = vec![bind(client.unwrap_or(0))?];
    while held.len() < n {
        held.push(bind(0)?);
    }
    Ok(held.into_iter().map(|(port, _listener)| port).collect())
}

fn port_accepts(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

fn create_unique_dir() -> Result<PathBuf, String> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = env::temp_dir().join(format!("smesh-kafka-{}-{n}-{nanos}", process::id()));
    fs::create_dir_all(env::temp_dir())
        .and_then(|()| fs::create_dir(&dir))
        .map_err(|e| {
            format!(
                "could not create the Kafka directory {}: {e}",
                dir.display()
            )
        })?;
    Ok(dir)
}

/// 16 random bytes as 22 characters of unpadded base64url, as Kafka's
/// `Uuid.toString` (`kafka-storage.sh random-uuid`) produces.
fn random_cluster_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        // Each RandomState has fresh random keys.
        let mut h = RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u32(process::id());
        h.write_u64(n);
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    // Like Kafka's Uuid.randomUuid: never start with '-' (the id is passed as
    // a command-line argument); clearing the top bit gives 'A'..='f'.
    bytes[0] &= 0x7f;
    base64url(&bytes)
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let mut group = [0u8; 3];
        group[..chunk.len()].copy_from_slice(chunk);
        let n = (u32::from(group[0]) << 16) | (u32::from(group[1]) << 8) | u32::from(group[2]);
        for i in 0..=chunk.len() {
            let index = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(ALPHABET[index as usize]));
        }
    }
    out
}

/// Escapes a value for a Java `.properties` file, which Kafka reads as
/// ISO-8859-1: backslashes doubled, anything else outside printable ASCII as
/// `\uXXXX`.
fn escape_property_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out
}

/// Whether the file contains `needle` after byte `offset` (the log of the
/// current launch; earlier launches are before it).
fn log_contains_since(path: &Path, offset: u64, needle: &str) -> bool {
    let mut text = Vec::new();
    let read = File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(offset))?;
        f.read_to_end(&mut text)
    });
    read.is_ok() && String::from_utf8_lossy(&text).contains(needle)
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
