//! Mutual TLS on every link: a mesh over mTLS delivers everything, and a
//! peer that cannot prove who it is is refused with a reason on both
//! sides. Real processes on 127.0.0.1, certificates made by rcgen in the
//! test, a real Kafka broker.

// Test helpers fail loudly, like the tests they serve.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use smesh_core::peers::Peer;
use smesh_core::tls::Tier;
use smesh_proto::mesh::uplink::Frame as Up;
use smesh_proto::mesh::{Hello, NodeKind};
use smesh_testkit::{Next, RawPeer};
use smesh_tests::kafka::KafkaBroker;
use smesh_tests::nodes::{self, Feeder, Process};
use smesh_tests::pki::{NodeCerts, Pki};
use smesh_tests::records::{judge, read_topic, read_until_complete};
use smesh_tests::unique_topic;

const EVENTS: u64 = 2000;

/// A master and a sidecar, both on mutual TLS from `pki`.
async fn secure_master_and_sidecar(
    dir: &Path,
    pki: &Pki,
    kafka: &str,
    topic: &str,
) -> (Process, Process) {
    let master = nodes::master(dir, "M1", kafka, topic, 0)
        .args(pki.issue(Tier::Master, "M1").flags())
        .spawn()
        .await;
    let sidecar = nodes::sidecar(dir, "S1", &[("M1", master.port)], 0)
        .args(pki.issue(Tier::Sidecar, "S1").flags())
        .spawn()
        .await;
    (master, sidecar)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_over_mutual_tls_delivers_everything() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("tls");
    let pki = Pki::new(dir.path(), "ops");
    let (master, sidecar) =
        secure_master_and_sidecar(dir.path(), &pki, &kafka.bootstrap(), &topic).await;
    assert!(
        master.log().contains("\"tls\":true"),
        "the master serves TLS"
    );

    let input = dir.path().join("c1.jsonl");
    let mut sent = BTreeMap::new();
    sent.insert(
        "c1".to_string(),
        nodes::write_lines(&input, "c1", 0..EVENTS, 40),
    );
    let mut client = nodes::client(
        dir.path(),
        "c1",
        &[("S1", sidecar.port)],
        &[nodes::file_source(&input, false)],
    )
    .args(pki.issue(Tier::Client, "c1").flags())
    .spawn()
    .await;
    let status = client.wait_exit(Duration::from_secs(120)).await;
    assert!(status.success(), "the client exited with {status}");
    let records = read_topic(
        &kafka.bootstrap(),
        &topic,
        EVENTS as usize,
        Duration::from_secs(30),
    );
    let verdict = judge(&records, &sent);
    verdict.assert_complete("over mutual TLS");
    assert_eq!(verdict.duplicates, 0);
    // The sidecar knew its client by the certificate it checked.
    sidecar
        .wait_logged("client connected", Duration::from_secs(1))
        .await;

    // The console reaches the admin API over mutual TLS, with a console's
    // certificate; a client's certificate (same CA) is refused.
    let admin = master
        .logged_port("admin API listening")
        .expect("admin port");
    let console = pki.issue(Tier::Console, "ops");
    let output = console_status(admin, &console);
    assert!(
        output.status.success(),
        "status over mTLS: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("S1"));
    // Test certificates live for a day: `check` warns of every one the
    // master knows, its own and its sidecar's, and not with a shorter
    // warning period.
    let check = |warn_days: &str| {
        std::process::Command::new(nodes::binary("smesh-console"))
            .args(["check", "--json", "--master", &format!("127.0.0.1:{admin}")])
            .args(["--cert-warn-days", warn_days])
            .args(console.flags())
            .output()
            .expect("run smesh-console check")
    };
    let output = check("14");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let document: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let problems: Vec<&str> = document["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["message"].as_str())
        .collect();
    for holder in ["master M1", "sidecar S1"] {
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(&format!("{holder} certificate expires in "))),
            "{problems:?}"
        );
    }
    let output = check("0");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    let output = console_status(admin, &pki.issue(Tier::Client, "c9"));
    assert_eq!(output.status.code(), Some(69));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("the admin API answers consoles only"),
        "{stdout}"
    );
}

fn console_status(admin_port: u16, certs: &NodeCerts) -> std::process::Output {
    std::process::Command::new(nodes::binary("smesh-console"))
        .args(["status", "--master", &format!("127.0.0.1:{admin_port}")])
        .args(certs.flags())
        .output()
        .expect("run smesh-console status")
}

/// Starts client `id` of `sidecar_port` with `flags`, waits for it to log
/// `client_says`, then stops it.
async fn refused_client(
    dir: &Path,
    id: &str,
    sidecar_port: u16,
    flags: Vec<String>,
    client_says: &str,
) {
    let input = dir.join(format!("{id}.jsonl"));
    nodes::write_lines(&input, id, 0..10, 40);
    let mut client = nodes::client(
        dir,
        id,
        &[("S1", sidecar_port)],
        &[nodes::file_source(&input, false)],
    )
    .args(flags)
    .spawn()
    .await;
    client
        .wait_logged_text(client_says, Duration::from_secs(20))
        .await;
    client.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_cannot_prove_who_they_are_are_refused_with_a_reason_on_both_sides() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("tls-refused");
    let pki = Pki::new(dir.path(), "ops");
    let rogue = Pki::new(dir.path(), "rogue");
    let (_master, sidecar) =
        secure_master_and_sidecar(dir.path(), &pki, &kafka.bootstrap(), &topic).await;

    // A certificate from another CA.
    refused_client(
        dir.path(),
        "wrong-ca",
        sidecar.port,
        rogue.issue(Tier::Client, "wrong-ca").trusting(&pki).flags(),
        "UnknownCA",
    )
    .await;
    sidecar
        .wait_logged_text("not signed by this node's --tls-ca", Duration::from_secs(5))
        .await;

    // An expired certificate from the right CA.
    let now = time::OffsetDateTime::now_utc();
    let expired = pki.issue_valid(
        Tier::Client,
        "expired",
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    );
    refused_client(
        dir.path(),
        "expired",
        sidecar.port,
        expired.flags(),
        "CertificateExpired",
    )
    .await;
    sidecar
        .wait_logged_text("outside its validity period", Duration::from_secs(5))
        .await;

    // A plaintext client.
    refused_client(
        dir.path(),
        "plaintext",
        sidecar.port,
        Vec::new(),
        "if it requires TLS, give this node --tls-cert",
    )
    .await;
    sidecar
        .wait_logged_text("speaks plaintext to a TLS listener", Duration::from_secs(5))
        .await;

    // The server side of the wrong CA: a sidecar certificate the client's CA did not sign.
    // (The client's own log says the sidecar's certificate is unknown.)
    let other = nodes::sidecar(dir.path(), "S2", &[("M1", 1)], 0)
        .args(rogue.issue(Tier::Sidecar, "S2").trusting(&pki).flags())
        .spawn()
        .await;
    refused_client(
        dir.path(),
        "rogue-server",
        other.port,
        pki.issue(Tier::Client, "rogue-server").flags(),
        "UnknownIssuer",
    )
    .await;

    // A sidecar with a good certificate, but for another id than the
    // client's peer list gives it: the client refuses to send it anything.
    let misnamed = nodes::sidecar(dir.path(), "S3", &[("M1", 1)], 0)
        .args(pki.issue(Tier::Sidecar, "S3").flags())
        .spawn()
        .await;
    refused_client(
        dir.path(),
        "misnamed",
        misnamed.port,
        pki.issue(Tier::Client, "misnamed").flags(),
        "is for smesh://sidecar/S3, not smesh://sidecar/S1 or smesh://master/S1",
    )
    .await;

    // A device whose certificate names c2 saying Hello as c1: the sidecar
    // refuses the stream, the peer reads why.
    let c2 = pki.issue(Tier::Client, "c2").load();
    let peer = Peer::new("S1", "127.0.0.1", sidecar.port);
    let hello = |id: &str| {
        Some(Up::Hello(Hello {
            node_id: id.into(),
            kind: NodeKind::Client as i32,
            version: "test".into(),
            incarnation: "1".into(),
        }))
    };
    let Err(refused) = RawPeer::open_with(&peer, hello("c1"), Some(&c2.client_config())).await
    else {
        panic!("c2's certificate cannot say Hello as c1");
    };
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains(
            "Hello as smesh://client/c1, but the peer's certificate is for smesh://client/c2"
        ),
        "{refused:?}"
    );
    sidecar
        .wait_logged_text(
            "but the peer's certificate is for smesh://client/c2",
            Duration::from_secs(5),
        )
        .await;
    // Nor as a sidecar of the same id: the tier is bound too.
    let as_sidecar = Some(Up::Hello(Hello {
        node_id: "c2".into(),
        kind: NodeKind::Sidecar as i32,
        version: "test".into(),
        incarnation: "1".into(),
    }));
    let Err(refused) = RawPeer::open_with(&peer, as_sidecar, Some(&c2.client_config())).await
    else {
        panic!("a client's certificate cannot say Hello as a sidecar");
    };
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    // Its own id is welcome.
    RawPeer::open_with(&peer, hello("c2"), Some(&c2.client_config()))
        .await
        .expect("c2 as c2");

    // And a client process started with another id's certificate refuses
    // to start, saying why.
    let output = std::process::Command::new(nodes::binary("smesh-client"))
        .args(["--id", "c1", "--sidecars"])
        .arg(dir.path().join("wrong-ca").join("clientCon.csv"))
        .args(pki.issue(Tier::Client, "c2").flags())
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run smesh-client");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not for smesh://client/c1"), "{stderr}");
}

/// The kubelet's `grpc:` probe speaks plaintext without a certificate: a
/// TLS node answers it on `--health-listen` (health only), with the same
/// status as its TLS port, and nothing else there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_health_door_answers_probes_of_a_tls_node_and_serves_nothing_else() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("tls-health");
    let pki = Pki::new(dir.path(), "ops");
    let door = ["--health-listen", "127.0.0.1:0"];
    let mut master = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, 0)
        .args(pki.issue(Tier::Master, "M1").flags())
        .args(door)
        .spawn()
        .await;
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], 0)
        .args(pki.issue(Tier::Sidecar, "S1").flags())
        .args(door)
        .spawn()
        .await;
    let health_port = |node: &Process| node.logged_port("health listening").expect("health port");
    let (master_door, sidecar_door) = (health_port(&master), health_port(&sidecar));
    assert_ne!(master_door, master.port);

    // The TLS ports refuse a plaintext probe; the doors answer it.
    assert_eq!(smesh_tests::health_of(master.port).await, None);
    assert_eq!(smesh_tests::health_of(sidecar.port).await, None);
    for (name, port) in [("master", master_door), ("sidecar", sidecar_door)] {
        smesh_tests::eventually(
            &format!("the {name}'s health door says SERVING"),
            Duration::from_secs(30),
            || async {
                (smesh_tests::health_of(port).await == Some(ServingStatus::Serving)).then_some(())
            },
        )
        .await;
        assert_eq!(
            smesh_tests::health_of_service(port, "").await,
            Some(ServingStatus::Serving),
            "the {name} as a whole"
        );
    }

    // Health only: the mesh service is not on the door.
    let peer = Peer::new("door", "127.0.0.1", sidecar_door);
    let hello = Up::Hello(Hello {
        node_id: "probe".into(),
        kind: NodeKind::Client.into(),
        ..Default::default()
    });
    let Err(refused) = RawPeer::open(&peer, Some(hello)).await else {
        panic!("the health door serves the mesh");
    };
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused}");

    // It follows readiness: without its master the sidecar cannot deliver.
    master.kill();
    smesh_tests::eventually(
        "the sidecar's health door says NOT_SERVING",
        Duration::from_secs(30),
        || async {
            (smesh_tests::health_of(sidecar_door).await == Some(ServingStatus::NotServing))
                .then_some(())
        },
    )
    .await;
}

/// Where a node reads its TLS files: one place, rewritten on rotation.
fn live_certs(dir: &Path, id: &str) -> NodeCerts {
    let live = dir.join("live");
    std::fs::create_dir_all(&live).expect("live dir");
    NodeCerts {
        cert: live.join(format!("{id}.pem")),
        key: live.join(format!("{id}.key")),
        ca: live.join(format!("{id}-ca.pem")),
    }
}

/// Writes `from`'s certificate and key over `to`'s, in place, key first, as
/// an operator's copy would (a node may look between the two).
fn install(from: &NodeCerts, to: &NodeCerts) {
    std::fs::copy(&from.key, &to.key).expect("install key");
    std::fs::copy(&from.cert, &to.cert).expect("install cert");
}

/// Writes the CA bundle `to` reads: the certificates of `cas`.
fn trust(cas: &[&Pki], to: &NodeCerts) {
    let bundle: Vec<u8> = cas
        .iter()
        .flat_map(|pki| std::fs::read(pki.ca_path()).expect("read CA"))
        .collect();
    std::fs::write(&to.ca, bundle).expect("write CA bundle");
}

/// Waits until `node` has logged `times` reloads of its certificates.
async fn reloaded(node: &Process, name: &str, times: usize) {
    smesh_tests::eventually(
        &format!("{name} reloads its certificates ({times})"),
        Duration::from_secs(20),
        || async { (node.log_events("TLS certificates reloaded").len() >= times).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_to_a_new_ca_under_load_without_losing_a_stream_or_an_event() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("tls-rotation");
    let old = Pki::new(dir.path(), "old");
    let new = Pki::new(dir.path(), "new");
    let nodes_and_tiers = [
        ("M1", Tier::Master),
        ("M2", Tier::Master),
        ("S1", Tier::Sidecar),
        ("S2", Tier::Sidecar),
        ("c1", Tier::Client),
    ];
    for (id, tier) in nodes_and_tiers {
        let live = live_certs(dir.path(), id);
        install(&old.issue(tier, id), &live);
        trust(&[&old], &live);
    }
    let flags = |id: &str| live_certs(dir.path(), id).flags();
    let m1 = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, 0)
        .args(flags("M1"))
        .spawn()
        .await;
    let mut m1 = m1;
    let m2 = nodes::master(dir.path(), "M2", &kafka.bootstrap(), &topic, 0)
        .args(flags("M2"))
        .spawn()
        .await;
    let masters = [("M1", m1.port), ("M2", m2.port)];
    let mut s1 = nodes::sidecar(dir.path(), "S1", &masters, 0)
        .args(flags("S1"))
        .spawn()
        .await;
    let s2 = nodes::sidecar(dir.path(), "S2", &masters, 0)
        .args(flags("S2"))
        .spawn()
        .await;
    let input = dir.path().join("c1.jsonl");
    let mut feeder = Feeder::start(&input, "c1", 10_000, 50, Duration::from_millis(100));
    let client = nodes::client(
        dir.path(),
        "c1",
        &[("S1", s1.port), ("S2", s2.port)],
        &[nodes::file_source(&input, true)],
    )
    .args(flags("c1"))
    // S1 first, so that S1's end is what moves it.
    .args(["--sidecar-order", "ordered"])
    .spawn()
    .await;
    client
        .wait_logged(
            "first acknowledgement from sidecar",
            Duration::from_secs(30),
        )
        .await;
    let running: [(&str, &Process); 5] = [
        ("M1", &m1),
        ("M2", &m2),
        ("S1", &s1),
        ("S2", &s2),
        ("c1", &client),
    ];

    // 1. Trust both CAs; 2. present certificates of the new one; 3. trust
    // the new one only. Every node reloads at each step, under load.
    for (id, _) in nodes_and_tiers {
        trust(&[&old, &new], &live_certs(dir.path(), id));
    }
    for (id, node) in running {
        reloaded(node, id, 1).await;
    }
    for (id, tier) in nodes_and_tiers {
        install(&new.issue(tier, id), &live_certs(dir.path(), id));
    }
    for (id, node) in running {
        reloaded(node, id, 2).await;
    }
    for (id, _) in nodes_and_tiers {
        trust(&[&new], &live_certs(dir.path(), id));
    }
    for (id, node) in running {
        reloaded(node, id, 3).await;
    }
    // The streams opened on the old certificates went on.
    assert_eq!(client.log_events("connected to sidecar").len(), 1);
    assert_eq!(s1.log_events("connected to master").len(), 1);

    // New connections are made with the new certificates only: the
    // client's to S2, S2's to M2 (M1 and S1 die).
    s1.kill();
    m1.kill();
    feeder.finish();
    let sent = BTreeMap::from([("c1".to_string(), feeder.lines.clone())]);
    let (_, verdict) =
        read_until_complete(&kafka.bootstrap(), &topic, &sent, Duration::from_secs(90)).await;
    verdict.assert_complete("certificates rotated under load");
    let connected = client.logged_values("connected to sidecar", "sidecar");
    assert!(
        connected.iter().any(|s| s.starts_with("S2")),
        "the client moved to S2 on the new certificates: {connected:?}"
    );
    let to_m2 = s2.logged_values("connected to master", "master");
    assert!(
        to_m2.iter().any(|m| m.starts_with("M2")),
        "S2 moved to M2 on the new certificates: {to_m2:?}"
    );
}

#[tokio::test]
async fn plaintext_beyond_loopback_or_unusable_certificates_stop_a_node_before_it_listens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "ops");
    let masters = dir.path().join("sidecarCon.csv");
    nodes::write_peers(&masters, &[("M1", 9010)]);
    let sidecar = |extra: &[String]| {
        let mut command = std::process::Command::new(nodes::binary("smesh-sidecar"));
        command
            .args(["--id", "S1", "--masters"])
            .arg(&masters)
            .args(extra);
        output_within(command, Duration::from_secs(10))
    };
    let refused = |extra: &[String], needle: &str| {
        let output = sidecar(extra);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(64), "{extra:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
    };
    let any = vec!["--listen".to_string(), "0.0.0.0:0".to_string()];
    refused(&any, "--listen 0.0.0.0:0 is not a loopback address");
    let certs = pki.issue(Tier::Sidecar, "S1");
    let mut unreadable = certs.flags();
    unreadable[1] = dir.path().join("missing.pem").display().to_string();
    refused(&unreadable, "cannot read the certificate");
    let mut not_pem = certs.flags();
    not_pem[5] = masters.display().to_string();
    refused(&not_pem, "holds no PEM certificate");
    refused(&certs.flags()[..2], "give all three or none");
    refused(
        &pki.issue(Tier::Sidecar, "S9").flags(),
        "not for smesh://sidecar/S1",
    );

    // With the flag that says what it gives up, it starts, and warns.
    let mut flagged = nodes::sidecar(dir.path(), "S1", &[("M1", 1)], 0)
        .with_flag("--listen", "0.0.0.0:0")
        .arg("--insecure-plaintext")
        .spawn()
        .await;
    flagged
        .wait_logged("serving plaintext beyond loopback", Duration::from_secs(5))
        .await;
    flagged.kill();
}

/// Runs `command` to its end, or kills it and fails after `within` (a node
/// that should have refused to start would otherwise run for ever).
fn output_within(mut command: std::process::Command, within: Duration) -> std::process::Output {
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let deadline = std::time::Instant::now() + within;
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().expect("kill");
            let output = child.wait_with_output().expect("output");
            panic!(
                "{command:?} still ran after {within:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// Events of `client`'s numbering `incarnation` with sequences `first..`,
/// whose data no client ever sent.
fn forged(client: &str, incarnation: u64, first: u64, n: usize) -> Vec<smesh_proto::mesh::Event> {
    let mut events = smesh_testkit::events(client, first, n);
    for event in &mut events {
        event.incarnation = incarnation;
        event.id = smesh_core::event::event_id(client, incarnation, event.sequence);
        event.data = format!("forged {}", event.sequence).into_bytes().into();
        // What a sidecar says of a client it authenticated: a peer may lie.
        event.client_authenticated = true;
    }
    events
}

/// Opens a stream as `kind` `id` with `certs`, sends `events` as batch 1,
/// and returns the ids the upstream rejected (`Err` if it ended the stream
/// or refused the Hello instead).
async fn forge(
    peer: &Peer,
    certs: &NodeCerts,
    kind: NodeKind,
    id: &str,
    events: Vec<smesh_proto::mesh::Event>,
) -> Result<Vec<String>, tonic::Status> {
    let hello = Up::Hello(Hello {
        node_id: id.into(),
        kind: kind as i32,
        version: "test".into(),
        incarnation: "1".into(),
    });
    let mut stream =
        RawPeer::open_with(peer, Some(hello), Some(&certs.load().client_config())).await?;
    stream.send(smesh_testkit::batch(1, events)).await;
    match tokio::time::timeout(Duration::from_secs(30), stream.ack_or_end()).await {
        Ok(Next::Ack(ack)) => Ok(ack.rejected.into_iter().map(|r| r.event_id).collect()),
        Ok(Next::Ended(status)) => Err(status.unwrap_or_else(|| tonic::Status::aborted("ended"))),
        Err(_) => panic!("no answer to a forged batch within 30 s"),
    }
}

/// The attack of issue 10: a peer publishes a victim's next sequence
/// numbers so the master takes the victim's real events for resends. Over
/// mutual TLS no certificate but the victim's own (through a sidecar that
/// checked it) can speak for the victim, so every forged event is refused
/// and every real one arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_sequence_peer_cannot_make_any_real_event_disappear() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("tls-forged");
    let pki = Pki::new(dir.path(), "ops");
    let (master, sidecar) =
        secure_master_and_sidecar(dir.path(), &pki, &kafka.bootstrap(), &topic).await;
    let victim_certs = pki.issue(Tier::Client, "c1");
    let input = dir.path().join("c1.jsonl");
    let mut lines = nodes::write_lines(&input, "c1", 0..1000, 40);
    let run_victim = || async {
        let mut victim = nodes::client(
            dir.path(),
            "c1",
            &[("S1", sidecar.port)],
            &[nodes::file_source(&input, false)],
        )
        .args(victim_certs.flags())
        .spawn()
        .await;
        let status = victim.wait_exit(Duration::from_secs(120)).await;
        assert!(status.success(), "the victim exited with {status}");
    };
    run_victim().await;
    // What an attacker can learn from the topic: the victim's numbering and
    // where it stands.
    let records = read_topic(&kafka.bootstrap(), &topic, 1000, Duration::from_secs(30));
    let last = records.last().expect("the victim's first events");
    let incarnation = last.incarnation().expect("an incarnation");
    let next = last.sequence().expect("a sequence") + 1;
    let upcoming = || forged("c1", incarnation, next, 2000);
    let at_master = Peer::new("M1", "127.0.0.1", master.port);
    let at_sidecar = Peer::new("S1", "127.0.0.1", sidecar.port);

    // A sidecar's certificate, but the client was authenticated by no
    // sidecar (a sidecar only marks clients whose certificate it checked).
    let rogue_sidecar = pki.issue(Tier::Sidecar, "S666");
    let mut unmarked = upcoming();
    for event in &mut unmarked {
        event.client_authenticated = false;
    }
    let rejected = forge(
        &at_master,
        &rogue_sidecar,
        NodeKind::Sidecar,
        "S666",
        unmarked,
    )
    .await
    .expect("the master answers a sidecar");
    assert_eq!(rejected.len(), 2000, "every unvouched event is rejected");
    master
        .wait_logged_text("did not authenticate client", Duration::from_secs(5))
        .await;
    // Another device's certificate, straight to the master: it may speak
    // only for itself.
    let evil = pki.issue(Tier::Client, "evil");
    let rejected = forge(&at_master, &evil, NodeKind::Client, "evil", upcoming())
        .await
        .expect("the master answers a client");
    assert_eq!(rejected.len(), 2000, "a device speaks only for itself");
    // The same device through the sidecar: its stream ends.
    let refused = forge(&at_sidecar, &evil, NodeKind::Client, "evil", upcoming())
        .await
        .expect_err("the sidecar ends a stream that speaks for another client");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");

    // The victim goes on: every real event arrives, no forged one.
    lines.extend(nodes::write_lines(&input, "c1", 1000..3000, 40));
    run_victim().await;
    let records = read_topic(&kafka.bootstrap(), &topic, 3000, Duration::from_secs(30));
    let verdict = judge(&records, &BTreeMap::from([("c1".to_string(), lines)]));
    verdict.assert_complete("after forged sequences");
    assert!(verdict.unexpected.is_empty(), "{verdict:?}");
}

/// With a token, the admin API on TLS also answers a caller that shows no
/// certificate but brings the token (scripts); a console certificate still
/// works, and a caller with neither is refused UNAUTHENTICATED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_on_tls_takes_a_token_instead_of_a_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "ops");
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "tls-token-0123456789abcdef\n").expect("token");
    let wrong = dir.path().join("wrong.token");
    std::fs::write(&wrong, "wrong-token-0123456789abcdef\n").expect("token");
    // Kafka is not needed for the admin API.
    let nowhere = format!("127.0.0.1:{}", nodes::reserve_port());
    let master = nodes::master(dir.path(), "M1", &nowhere, &unique_topic("tls-token"), 0)
        .args(pki.issue(Tier::Master, "M1").flags())
        .arg("--admin-token-file")
        .arg(token.display().to_string())
        .spawn()
        .await;
    let admin = master
        .logged_port("admin API listening")
        .expect("admin port");
    let status = |flags: Vec<String>| {
        std::process::Command::new(nodes::binary("smesh-console"))
            .args(["status", "--master", &format!("127.0.0.1:{admin}")])
            .args(flags)
            .output()
            .expect("run smesh-console status")
    };
    let ca = pki.ca_path().display().to_string();
    let with_token = |file: &Path| {
        vec![
            "--tls-ca".to_string(),
            ca.clone(),
            "--admin-token-file".to_string(),
            file.display().to_string(),
        ]
    };

    let output = status(with_token(&token));
    assert!(
        output.status.success(),
        "the token over TLS, no certificate: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let output = status(pki.issue(Tier::Console, "ops").flags());
    assert!(output.status.success(), "a console certificate, no token");
    let output = status(with_token(&wrong));
    assert_eq!(output.status.code(), Some(69));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("REFUSED (refused the console: UNAUTHENTICATED"),
        "{stdout}"
    );
    // A device's certificate is still not a console's.
    let output = status(pki.issue(Tier::Client, "c9").flags());
    assert_eq!(output.status.code(), Some(69));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("PERMISSION_DENIED") && stdout.contains("answers consoles only"),
        "{stdout}"
    );
}
