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
