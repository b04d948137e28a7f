//! The operator's tools against a real mesh: `smesh-console check` and
//! `status` as scripts use them, and the dashboard in a real terminal.

// Test helpers fail loudly, like the tests they serve.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use smesh_tests::kafka::KafkaBroker;
use smesh_tests::nodes::{self, Process, reserve_port};
use smesh_tests::tmux::Tmux;
use smesh_tests::{eventually, unique_topic};

fn console(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(nodes::binary("smesh-console"))
        .args(args)
        .output()
        .expect("run smesh-console");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn check_json(admin: &str) -> (i32, serde_json::Value) {
    let (code, stdout, stderr) =
        console(&["check", "--master", admin, "--json", "--timeout", "3s"]);
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"));
    (code, json)
}

struct Mesh {
    _master: Process,
    sidecars: Vec<Process>,
    _clients: Vec<Process>,
    admin: String,
}

/// A master, sidecars S1/S2 and clients c1 → S1, c2 → S2 with sensors.
async fn mesh(dir: &std::path::Path, kafka: &str, topic: &str) -> Mesh {
    let master = nodes::master(dir, "M1", kafka, topic, 0).spawn().await;
    let admin = format!(
        "127.0.0.1:{}",
        master
            .logged_port("admin API listening")
            .expect("admin port")
    );
    let s1 = nodes::sidecar(dir, "S1", &[("M1", master.port)], 0)
        .spawn()
        .await;
    let s2 = nodes::sidecar(dir, "S2", &[("M1", master.port)], 0)
        .spawn()
        .await;
    let sensor = vec!["sensor:rate=20".to_string()];
    let c1 = nodes::client(dir, "c1", &[("S1", s1.port)], &sensor)
        .spawn()
        .await;
    let c2 = nodes::client(dir, "c2", &[("S2", s2.port)], &sensor)
        .spawn()
        .await;
    Mesh {
        _master: master,
        sidecars: vec![s1, s2],
        _clients: vec![c1, c2],
        admin,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_every_peer_and_turns_critical_when_a_sidecar_dies() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mesh = mesh(dir.path(), &kafka.bootstrap(), &unique_topic("check")).await;
    let admin = mesh.admin.clone();

    let json = eventually("check OK with every peer", Duration::from_secs(40), || {
        let admin = admin.clone();
        async move {
            let (code, json) = tokio::task::spawn_blocking(move || check_json(&admin))
                .await
                .ok()?;
            let peers = json["masters"][0]["peers"].as_array()?.len();
            (code == 0 && peers == 5).then_some(json)
        }
    })
    .await;
    assert_eq!(json["status"], "OK");
    let peers = json["masters"][0]["peers"].as_array().expect("peers");
    for id in ["S1", "S2", "c1", "c2", "kafka"] {
        let peer = peers
            .iter()
            .find(|p| p["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing: {json}"));
        assert_eq!(peer["status"], "up", "{peer}");
        assert!(
            peer["rtt_ms"].as_f64().is_some_and(|ms| ms > 0.0),
            "{id} has an RTT: {peer}"
        );
    }
    let (code, line, _) = console(&["check", "--master", &admin]);
    assert_eq!(code, 0);
    assert!(
        line.starts_with("SMESH OK - 2 sidecars and 2 clients up"),
        "{line}"
    );
    let (code, line, _) = console(&["check", "--master", &admin, "--max-rtt", "1us"]);
    assert_eq!(code, 1, "an RTT threshold crossed is a WARNING: {line}");

    // Sidecars report their clients once a second; status shows them then.
    let status = eventually("status with both clients", Duration::from_secs(20), || {
        let admin = admin.clone();
        async move {
            let (code, stdout, _) = tokio::task::spawn_blocking(move || {
                console(&["status", "--master", &admin, "--json"])
            })
            .await
            .ok()?;
            let status: serde_json::Value = serde_json::from_str(&stdout).ok()?;
            (code == 0 && status["clients"].as_array().map(Vec::len) == Some(2)).then_some(status)
        }
    })
    .await;
    assert_eq!(
        status["sidecars"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
    assert!(
        status["clients"]
            .as_array()
            .expect("clients")
            .iter()
            .all(|c| c["status"] == "up"),
        "{status}"
    );

    mesh.sidecars[1].kill();
    let json = eventually("check CRITICAL", Duration::from_secs(20), || {
        let admin = admin.clone();
        async move {
            let (code, json) = tokio::task::spawn_blocking(move || check_json(&admin))
                .await
                .ok()?;
            (code == 2).then_some(json)
        }
    })
    .await;
    assert_eq!(json["status"], "CRITICAL");
    assert!(
        json["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .any(|p| p["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("sidecar S2 down"))),
        "{json}"
    );

    let unreachable = format!("127.0.0.1:{}", reserve_port());
    let (code, line, _) = console(&["check", "--master", &unreachable, "--timeout", "1s"]);
    assert_eq!(code, 3, "an unreachable master is UNKNOWN: {line}");
    assert!(
        line.starts_with("SMESH UNKNOWN - master 127.0.0.1:"),
        "{line}"
    );
}

#[test]
fn without_a_terminal_the_dashboard_points_to_the_script_commands() {
    let (code, _, stderr) = console(&["--master", "127.0.0.1:9"]);
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains("not a terminal")
            && stderr.contains("status --json")
            && stderr.contains("check"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_terminal_shows_sidecars_backlog_and_health_checks() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Kafka unreachable: events are never acknowledged, so spools fill up.
    let nowhere = format!("127.0.0.1:{}", reserve_port());
    let mesh = mesh(dir.path(), &nowhere, &unique_topic("tui")).await;
    let log = dir.path().join("console.log");
    let command = format!(
        "{} --master {} --log-file {}",
        nodes::binary("smesh-console").display(),
        mesh.admin,
        log.display()
    );
    let tui = Tmux::start(&command, 160, 40);

    tui.wait_for("the title bar", Duration::from_secs(20), |s| {
        s.contains("smesh console")
    });
    tui.send("2");
    let sidecars = tui.wait_for("both sidecars", Duration::from_secs(30), |s| {
        s.contains("S1") && s.contains("S2")
    });
    assert!(sidecars.contains("up"), "{sidecars}");

    tui.send("5");
    let backlog = tui.wait_for("a client's backlog", Duration::from_secs(30), |s| {
        s.lines().any(|l| l.contains("c1") || l.contains("c2"))
    });
    assert!(
        !backlog.contains("no client has spooled events"),
        "{backlog}"
    );

    tui.send("H");
    let health = tui.wait_for("health check results", Duration::from_secs(30), |s| {
        s.contains("kafka") && s.contains("S1") && s.contains("c2")
    });
    assert!(
        health.contains("down"),
        "Kafka is down, and the check says so:\n{health}"
    );

    tui.send("q");
    eventually("the dashboard to quit", Duration::from_secs(10), || async {
        (!tui.alive()).then_some(())
    })
    .await;
    let logged = std::fs::read_to_string(&log).expect("the dashboard logs to its file");
    assert!(logged.contains("connected to master"), "{logged}");
}

const TOKEN: &str = "test-token-0123456789abcdef";

/// A token file holding `token` and a newline, 0600 as SECURITY.md asks.
fn token_file(dir: &std::path::Path, name: &str, token: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("{token}\n")).expect("write token");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_file_the_admin_api_answers_only_calls_that_bring_the_token() {
    use smesh_proto::admin::GetStatusRequest;
    use smesh_proto::admin::admin_client::AdminClient;

    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let right = token_file(dir.path(), "admin.token", TOKEN);
    let wrong = token_file(dir.path(), "wrong.token", "not-the-token-0123456789");
    let master = nodes::master(
        dir.path(),
        "M1",
        &kafka.bootstrap(),
        &unique_topic("token"),
        0,
    )
    .args(["--admin-token-file", &right])
    .spawn()
    .await;
    let admin = format!(
        "127.0.0.1:{}",
        master
            .logged_port("admin API listening")
            .expect("admin port")
    );
    let _sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], 0)
        .spawn()
        .await;

    // A call without the token, or with another, is UNAUTHENTICATED and
    // told what to give; the token is never echoed.
    let mut raw = AdminClient::connect(format!("http://{admin}"))
        .await
        .expect("admin API");
    let refused = raw
        .get_status(GetStatusRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(
        refused.message().contains("--admin-token-file"),
        "{refused:?}"
    );
    let mut call = tonic::Request::new(GetStatusRequest::default());
    call.metadata_mut().insert(
        "authorization",
        "Bearer not-the-token-0123456789".parse().expect("ascii"),
    );
    let refused = raw.get_status(call).await.expect_err("wrong token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(!refused.message().contains(TOKEN), "{refused:?}");
    assert!(!refused.message().contains("not-the-token"), "{refused:?}");

    // check: UNKNOWN, with the master's reason on the line.
    for token in [None, Some(&wrong)] {
        let mut args = vec!["check", "--master", &admin, "--timeout", "3s"];
        if let Some(token) = token {
            args.extend(["--admin-token-file", token.as_str()]);
        }
        let (code, line, stderr) = console(&args);
        assert_eq!(code, 3, "a refused console is UNKNOWN: {line}{stderr}");
        let expected =
            format!("SMESH UNKNOWN - master {admin} refused the console: UNAUTHENTICATED: ");
        assert!(line.starts_with(&expected), "{line}");
        assert!(line.contains("--admin-token-file"), "{line}");
        assert!(!line.contains(TOKEN), "{line}");
    }
    let (code, stdout, _) = console(&["status", "--master", &admin]);
    assert_eq!(code, 69, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "master {admin}: REFUSED (refused the console: UNAUTHENTICATED"
        )),
        "{stdout}"
    );

    // With the token (flag or variable), check and status work.
    let line = eventually("check OK with the token", Duration::from_secs(40), || {
        let (admin, right) = (admin.clone(), right.clone());
        async move {
            let (code, line, _) = tokio::task::spawn_blocking(move || {
                console(&["check", "--master", &admin, "--admin-token-file", &right])
            })
            .await
            .ok()?;
            (code == 0).then_some(line)
        }
    })
    .await;
    assert!(
        line.starts_with("SMESH OK - 1 sidecars and 0 clients up"),
        "{line}"
    );
    let output = Command::new(nodes::binary("smesh-console"))
        .args(["status", "--master", &admin, "--json"])
        .env("SMESH_ADMIN_TOKEN_FILE", &right)
        .output()
        .expect("run smesh-console status");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("status --json");
    assert_eq!(status["masters"][0]["id"], "M1", "{status}");

    // The master said so, without the token.
    master
        .wait_logged("admin API call refused", Duration::from_secs(5))
        .await;
    assert!(!master.log().contains(TOKEN));
}

#[test]
fn a_master_refuses_to_start_with_an_unusable_token_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, content, says) in [
        ("empty.token", "", "the file is empty"),
        ("short.token", "abc", "at least 16"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("write token");
        let mut master = Command::new(nodes::binary("smesh-master"))
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--admin-token-file")
            .arg(&path)
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run smesh-master");
        // A master that took the file would run until stopped: bound the wait.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while master.try_wait().expect("try_wait").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = master.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = master.wait_with_output().expect("wait for smesh-master");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{name}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains("--admin-token-file") && stderr.contains(says),
            "{name}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_with_many_clients_answers_in_pages_and_the_console_says_what_it_left_out() {
    use smesh_core::peers::Peer;
    use smesh_proto::admin::GetStatusRequest;
    use smesh_proto::admin::admin_client::AdminClient;
    use smesh_proto::mesh::uplink::Frame as Up;
    use smesh_proto::mesh::{ClientInfo, Hello, NodeKind, PeerStatus, Report};
    use smesh_testkit::RawPeer;

    // More than the console fetches (20,000), in a report a real sidecar
    // could send (well under its 4 MiB).
    const CLIENTS: usize = 25_000;
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let master = nodes::master(
        dir.path(),
        "M1",
        &kafka.bootstrap(),
        &unique_topic("many"),
        0,
    )
    .spawn()
    .await;
    let admin = format!(
        "127.0.0.1:{}",
        master
            .logged_port("admin API listening")
            .expect("admin port")
    );
    let peer = Peer::new("M1", "127.0.0.1", master.port);
    let hello = Up::Hello(Hello {
        node_id: "S9".to_string(),
        kind: NodeKind::Sidecar as i32,
        version: "test".to_string(),
        incarnation: "1".to_string(),
    });
    let sidecar = RawPeer::open(&peer, Some(hello)).await.expect("stream");
    let clients = (0..CLIENTS)
        .map(|i| ClientInfo {
            client_id: format!("client-{i:05}"),
            status: PeerStatus::Up as i32,
            ..ClientInfo::default()
        })
        .collect();
    sidecar
        .send(Up::Report(Report {
            clients,
            ..Report::default()
        }))
        .await;

    // A plain GetStatus (an old console's) gets the first page, within
    // tonic's default 4 MiB decoding limit, and where the rest begins.
    let mut raw = AdminClient::connect(format!("http://{admin}"))
        .await
        .expect("admin API");
    let first = eventually("the report to arrive", Duration::from_secs(20), || {
        let mut raw = raw.clone();
        async move {
            let status = raw
                .get_status(GetStatusRequest::default())
                .await
                .ok()?
                .into_inner();
            (status.clients_total as usize == CLIENTS).then_some(status)
        }
    })
    .await;
    assert_eq!(first.clients.len(), 1_000);
    assert_eq!(first.next_page_token, "client-00999");
    assert_eq!(first.sidecars.len(), 1);
    let second = raw
        .get_status(GetStatusRequest {
            max_clients: 10,
            page_token: first.next_page_token.clone(),
        })
        .await
        .expect("second page")
        .into_inner();
    let ids: Vec<&str> = second
        .clients
        .iter()
        .filter_map(|c| c.info.as_ref())
        .map(|i| i.client_id.as_str())
        .collect();
    assert_eq!(ids.first(), Some(&"client-01000"));
    assert_eq!(ids.len(), 10);
    assert!(
        second.sidecars.is_empty(),
        "sidecars come with the first page"
    );

    // The console fetches pages up to its bound and says what it left out.
    let (code, stdout, stderr) = console(&["status", "--master", &admin, "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let status: serde_json::Value = serde_json::from_str(&stdout).expect("status --json");
    assert_eq!(status["clients"].as_array().map(Vec::len), Some(20_000));
    assert_eq!(status["masters"][0]["clients_not_shown"], 5_000);
    let (code, stdout, _) = console(&["status", "--master", &admin]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("(5000 more clients of master M1 not shown"),
        "{}",
        stdout.lines().take(3).collect::<Vec<_>>().join("\n")
    );
    drop(sidecar);
}
