//! `--config FILE` and `--check-config` on the real binaries: the sample
//! files in `files/` are complete and valid, a broken file is named with
//! its line, flag > environment > file, and a mesh started with nothing but
//! config files delivers with their settings.

// Test helpers fail loudly, like the tests they serve.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use smesh_core::tls::Tier;
use smesh_tests::kafka::KafkaBroker;
use smesh_tests::nodes;
use smesh_tests::pki::Pki;
use smesh_tests::records::{judge, read_topic};
use smesh_tests::unique_topic;

const NODES: [&str; 3] = ["client", "sidecar", "master"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

fn sample(node: &str) -> PathBuf {
    repo().join("files").join(format!("{node}.toml"))
}

/// Runs `binary` in `dir` with `args` and the variables `env` (and no
/// other `SMESH_*`), to its exit: the code and what it wrote on stdout and
/// stderr.
fn run(binary: &str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(nodes::binary(binary));
    for (name, _) in std::env::vars() {
        if name.starts_with("SMESH_") {
            command.env_remove(name);
        }
    }
    let output = command
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run binary");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn check(binary: &str, config: &Path, more: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let config = config.to_str().expect("utf8 path");
    let mut args = vec!["--config", config, "--check-config"];
    args.extend_from_slice(more);
    let (code, stdout, stderr) = run(binary, &repo(), &args, env);
    (code, format!("{stdout}{stderr}"))
}

/// The long flags of `binary`, from its `--help`, without help, version
/// and the two that only a command line may give.
fn long_flags(binary: &str) -> BTreeSet<String> {
    let (code, stdout, _) = run(binary, &repo(), &["--help"], &[]);
    assert_eq!(code, 0);
    stdout
        .lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let line = line
                .strip_prefix("-h, ")
                .or(line.strip_prefix("-V, "))
                .unwrap_or(line);
            let flag = line.strip_prefix("--")?;
            Some(flag.split([' ', '=']).next()?.to_string())
        })
        .filter(|flag| !["help", "version", "config", "check-config"].contains(&flag.as_str()))
        .collect()
}

/// The key of a line of a sample file that sets one, or shows it
/// commented out (`# key = value`).
fn setting(line: &str) -> Option<&str> {
    let (key, _) = line.strip_prefix("# ").unwrap_or(line).split_once(" = ")?;
    (!key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '-')).then_some(key)
}

/// The keys of a sample file, set or commented out.
fn sample_keys(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(setting)
        .map(str::to_string)
        .collect()
}

#[test]
fn the_sample_files_check_as_they_are() {
    for node in NODES {
        let binary = format!("smesh-{node}");
        let (code, out) = check(&binary, &sample(node), &[], &[]);
        assert_eq!(code, 0, "{node}: {out}");
        assert_eq!(
            out.trim(),
            format!(
                "{binary}: configuration OK (--config {})",
                sample(node).display()
            )
        );
    }
}

#[test]
fn the_sample_files_name_every_flag_and_check_with_every_key_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "config");
    let token = dir.path().join("admin-token");
    let kafka_file = dir.path().join("kafka.properties");
    std::fs::write(&token, "a-token-of-more-than-sixteen-bytes\n").expect("token");
    std::fs::write(&kafka_file, "client.id=smesh-config-test\n").expect("kafka file");
    for secret in [&token, &kafka_file] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let path = |p: &Path| p.display().to_string();
    for (node, tier, id) in [
        ("client", Tier::Client, "client-1"),
        ("sidecar", Tier::Sidecar, "sidecar-1"),
        ("master", Tier::Master, "master-1"),
    ] {
        let binary = format!("smesh-{node}");
        let text = std::fs::read_to_string(sample(node)).expect("sample");
        assert_eq!(
            sample_keys(&text),
            long_flags(&binary),
            "files/{node}.toml must show every flag of {binary} as a key"
        );
        // Every commented key set to its shown value, files where they exist here.
        let certs = pki.issue(tier, id);
        let here: BTreeMap<&str, String> = [
            ("sidecars", path(&repo().join("files/clientCon.csv"))),
            ("masters", path(&repo().join("files/sidecarCon.csv"))),
            ("spool-file", path(&dir.path().join("safeData.csv"))),
            ("stats-file", path(&dir.path().join("stats.json"))),
            ("health-report", path(&dir.path().join("health.csv"))),
            ("tls-cert", path(&certs.cert)),
            ("tls-key", path(&certs.key)),
            ("tls-ca", path(&certs.ca)),
            ("admin-token-file", path(&token)),
            ("kafka-config-file", path(&kafka_file)),
        ]
        .into_iter()
        .collect();
        let full: String = text
            .lines()
            .map(|line| match setting(line) {
                Some(key) if here.contains_key(key) => format!("{key} = {:?}\n", here[key]),
                Some(_) => format!("{}\n", line.strip_prefix("# ").unwrap_or(line)),
                None => format!("{line}\n"),
            })
            .collect();
        let file = dir.path().join(format!("{node}.toml"));
        std::fs::write(&file, &full).expect("write full sample");
        let (code, out) = check(&binary, &file, &[], &[]);
        assert_eq!(code, 0, "{node} with every key set: {out}\n{full}");
    }
}

#[test]
fn a_broken_file_exits_64_with_one_line_naming_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (node, line, expected) in [
        (
            "client",
            "max-event-bytes = \"lots\"",
            "invalid value 'lots' for '--max-event-bytes",
        ),
        (
            "sidecar",
            "heartbeat-interval = \"soon\"",
            "invalid value 'soon' for '--heartbeat-interval",
        ),
        (
            "master",
            "kafka-brokerz = \"k:9092\"",
            "unknown key `kafka-brokerz`",
        ),
        (
            "master",
            "compression = \"brotli\"",
            "invalid value 'brotli' for '--compression",
        ),
        (
            "master",
            "admin-token-file = \"/nonexistent/admin-token\"",
            "/nonexistent/admin-token",
        ),
    ] {
        let text = std::fs::read_to_string(sample(node)).expect("sample");
        let at = text.lines().count() + 1;
        let file = dir.path().join(format!("{node}.toml"));
        std::fs::write(&file, format!("{text}{line}\n")).expect("write broken");
        let binary = format!("smesh-{node}");
        let (code, out) = check(&binary, &file, &[], &[]);
        assert_eq!((code, out.lines().count()), (64, 1), "{node}: {out}");
        assert!(out.contains(expected), "{node}: {out}");
        if !expected.starts_with('/') {
            // A value a later check refuses (a token file) is named
            // by the flag's own message; a key or a value clap refuses, by line.
            assert!(
                out.contains(&format!("{} line {at}: ", file.display())),
                "{node}: {out}"
            );
        }
    }
}

#[test]
fn a_flag_beats_the_environment_which_beats_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("client.toml");
    let text = std::fs::read_to_string(sample("client")).expect("sample");
    // The file's id is good; a variable with a bad one wins over it, and a
    // good flag over the variable.
    std::fs::write(
        &file,
        text.replace("id = \"client-1\"", "id = \"from-file\""),
    )
    .expect("write");
    let (code, out) = check("smesh-client", &file, &[], &[("SMESH_ID", "bad id")]);
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("invalid --id \"bad id\""), "{out}");
    let (code, out) = check(
        "smesh-client",
        &file,
        &["--id", "from-flag"],
        &[("SMESH_ID", "bad id")],
    );
    assert_eq!(code, 0, "{out}");
    // A bad id in the file, with a good variable: the variable wins.
    std::fs::write(&file, text.replace("id = \"client-1\"", "id = \"bad id\"")).expect("write");
    let (code, out) = check("smesh-client", &file, &[], &[("SMESH_ID", "from-env")]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = check("smesh-client", &file, &[], &[]);
    assert_eq!(code, 64, "{out}");
    // The file may be named by SMESH_CONFIG too.
    let (code, stdout, stderr) = run(
        "smesh-client",
        &repo(),
        &["--check-config"],
        &[("SMESH_CONFIG", file.to_str().expect("utf8"))],
    );
    assert_eq!(code, 64, "{stdout}{stderr}");
    assert!(stderr.contains("invalid --id \"bad id\""), "{stderr}");
}

/// A node started with `--config` alone; its stderr goes to `<dir>/<name>.log`.
struct Node {
    child: Child,
    log: PathBuf,
}

impl Node {
    fn start(binary: &str, dir: &Path, name: &str, config: &Path) -> Node {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(nodes::binary(binary))
            .arg("--config")
            .arg(config)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start node");
        Node { child, log }
    }

    /// The JSON log lines written so far (the file asked for JSON).
    fn log_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The port of the line logged with `message` and an `address` field.
    fn port(&mut self, message: &str) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for line in self.log_lines() {
                if line["fields"]["message"] == message {
                    let address = line["fields"]["address"].as_str().unwrap_or_default();
                    if let Some(port) = address.rsplit(':').next().and_then(|p| p.parse().ok()) {
                        return port;
                    }
                }
            }
            let exited = self.child.try_wait().expect("try_wait");
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "no {message:?} (exit {exited:?}); log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_mesh_started_with_config_files_alone_runs_with_their_settings() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let topic = unique_topic("config");
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write config");
        path
    };
    let master_file = write(
        "master.toml",
        format!(
            "id = \"M-file\"\nlisten = \"127.0.0.1:0\"\nadmin-listen = \"127.0.0.1:0\"\nkafka-brokers = \"{}\"\ntopic = \"{topic}\"\nhealth-report = \"health.csv\"\nlog-format = \"json\"\n",
            kafka.bootstrap()
        ),
    );
    let mut master = Node::start("smesh-master", dir, "master", &master_file);
    let master_port = master.port("master listening");

    nodes::write_peers(&dir.join("masters.csv"), &[("M-file", master_port)]);
    let sidecar_file = write(
        "sidecar.toml",
        "id = \"S-file\"\nlisten = \"127.0.0.1:0\"\nmasters = \"masters.csv\"\nlog-format = \"json\"\n"
            .to_string(),
    );
    let mut sidecar = Node::start("smesh-sidecar", dir, "sidecar", &sidecar_file);
    let sidecar_port = sidecar.port("sidecar listening");

    nodes::write_peers(&dir.join("sidecars.csv"), &[("S-file", sidecar_port)]);
    let input = dir.join("readings.jsonl");
    let sent = nodes::write_lines(&input, "c-file", 0..200, 20);
    let client_file = write(
        "client.toml",
        format!(
            "id = \"c-file\"\nsidecars = \"sidecars.csv\"\nsource = [\"{}\"]\nspool-file = \"spool.csv\"\nlog-format = \"json\"\n",
            nodes::file_source(&input, false)
        ),
    );
    let mut client = Node::start("smesh-client", dir, "client", &client_file);
    // A client whose sources are finished exits 0 once Kafka has everything.
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = client.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the client did not finish");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "client exited with {status}; log:\n{}",
        std::fs::read_to_string(&client.log).unwrap_or_default()
    );
    assert!(
        dir.join("spool.csv").exists(),
        "the file's spool-file is used"
    );
    assert!(
        !client.log_lines().is_empty(),
        "the file's log-format (json) is used"
    );

    let records = read_topic(
        &kafka.bootstrap(),
        &topic,
        sent.len(),
        Duration::from_secs(30),
    );
    let sent: BTreeMap<String, Vec<Vec<u8>>> = [("c-file".to_string(), sent)].into();
    judge(&records, &sent).assert_complete("a mesh configured by files");
}
