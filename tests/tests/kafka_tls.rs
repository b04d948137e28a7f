//! The master's link to Kafka over TLS: a real broker serving, beside its
//! plaintext listener, an `SSL` listener that requires client certificates
//! and a `SASL_SSL` listener with SASL/PLAIN (`KafkaBroker::start_secure`),
//! and masters configured only through `--kafka-config` and
//! `--kafka-config-file`, as an operator would. What arrived is read back
//! over the plaintext listener and judged with `records::judge`.

// Test helpers fail loudly, like the tests they serve.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use smesh_core::tls::Tier;
use smesh_tests::kafka::{KafkaBroker, SecureListeners};
use smesh_tests::nodes::{self, Process};
use smesh_tests::pki::{NodeCerts, Pki};
use smesh_tests::records::{judge, read_all, read_topic};
use smesh_tests::{health_of, unique_topic};
use tonic_health::pb::health_check_response::ServingStatus;

const EVENTS: u64 = 2000;
const USER: &str = "smesh";
const PASSWORD: &str = "correct-horse";

/// One broker with TLS listeners for every test of this file.
fn broker() -> &'static (KafkaBroker, SecureListeners) {
    static BROKER: OnceLock<(KafkaBroker, SecureListeners)> = OnceLock::new();
    BROKER.get_or_init(|| {
        KafkaBroker::start_secure(&[(USER, PASSWORD)]).expect("a Kafka broker with TLS listeners")
    })
}

/// `--kafka-config KEY=VALUE` for each setting.
fn kafka_config(settings: &[(&str, &str)]) -> Vec<String> {
    settings
        .iter()
        .flat_map(|(key, value)| ["--kafka-config".to_string(), format!("{key}={value}")])
        .collect()
}

/// The settings for the broker's `SSL` listener: trust `ca`, present `client`.
fn mutual_tls(ca: &Path, client: &NodeCerts) -> Vec<String> {
    kafka_config(&[
        ("security.protocol", "SSL"),
        ("ssl.ca.location", &ca.display().to_string()),
        (
            "ssl.certificate.location",
            &client.cert.display().to_string(),
        ),
        ("ssl.key.location", &client.key.display().to_string()),
    ])
}

/// `--kafka-config-file` with SASL/PLAIN as `USER` with `password` for the
/// broker's `SASL_SSL` listener, trusting `ca`; only its owner may read it.
fn sasl_file(dir: &Path, ca: &Path, password: &str) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("kafka-{password}.conf"));
    let text = format!(
        "# librdkafka settings for the SASL_SSL listener\n\
         security.protocol=SASL_SSL\n\
         sasl.mechanisms=PLAIN\n\
         sasl.username={USER}\n\
         sasl.password={password}\n\
         ssl.ca.location={}\n",
        ca.display()
    );
    std::fs::write(&path, text).expect("write the Kafka config file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    vec!["--kafka-config-file".into(), path.display().to_string()]
}

/// A sidecar on `master_port` and a client sending `events` lines through
/// it; the sidecar, the client and what the client sent.
async fn sidecar_and_client(
    dir: &Path,
    master_port: u16,
    events: u64,
) -> (Process, Process, BTreeMap<String, Vec<Vec<u8>>>) {
    let sidecar = nodes::sidecar(dir, "S1", &[("M1", master_port)], 0)
        .spawn()
        .await;
    let input = dir.join("c1.jsonl");
    let mut sent = BTreeMap::new();
    sent.insert(
        "c1".to_string(),
        nodes::write_lines(&input, "c1", 0..events, 40),
    );
    let client = nodes::client(
        dir,
        "c1",
        &[("S1", sidecar.port)],
        &[nodes::file_source(&input, false)],
    )
    .spawn()
    .await;
    (sidecar, client, sent)
}

/// Waits for the client to deliver everything and exit, then judges the topic.
async fn everything_arrives(
    client: &mut Process,
    topic: &str,
    sent: &BTreeMap<String, Vec<Vec<u8>>>,
    how: &str,
) {
    let (kafka, _) = broker();
    let status = client.wait_exit(Duration::from_secs(120)).await;
    assert!(status.success(), "the client exited with {status}");
    let expected: usize = sent.values().map(Vec::len).sum();
    let records = read_topic(&kafka.bootstrap(), topic, expected, Duration::from_secs(30));
    let verdict = judge(&records, sent);
    verdict.assert_complete(how);
    assert_eq!(verdict.duplicates, 0, "{how}: duplicates");
}

/// The master is not serving, says `reason` in its log, never said Kafka
/// was reachable, and nothing reached `topic` while the client waited.
async fn publishes_nothing(master: &Process, client: &mut Process, topic: &str, reason: &str) {
    let (kafka, _) = broker();
    master
        .wait_logged_text(reason, Duration::from_secs(30))
        .await;
    smesh_tests::eventually(
        "the master to report NOT_SERVING",
        Duration::from_secs(15),
        || async {
            (health_of(master.port).await == Some(ServingStatus::NotServing)).then_some(())
        },
    )
    .await;
    // Long enough for the sidecar to have handed its batches on, had the
    // master taken them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        read_all(&kafka.bootstrap(), topic).is_empty(),
        "nothing may reach Kafka through a master that cannot"
    );
    assert!(
        master.log_events("Kafka reachable").is_empty(),
        "the master never reached Kafka:\n{}",
        master.log_tail(20)
    );
    assert!(client.is_running(), "the client still holds its events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_publishes_over_mutual_tls_to_kafka() {
    let (_, tls) = broker();
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("kafka-ssl");
    let certs = tls.pki.issue(Tier::Master, "M1");
    let master = nodes::master(dir.path(), "M1", &tls.ssl, &topic, 0)
        .args(mutual_tls(&tls.pki.ca_path(), &certs))
        .spawn()
        .await;
    let (_sidecar, mut client, sent) = sidecar_and_client(dir.path(), master.port, EVENTS).await;
    everything_arrives(&mut client, &topic, &sent, "over SSL to Kafka").await;
    let reached = master.log_events("Kafka reachable");
    assert_eq!(
        reached.first().map(|e| e["fields"]["brokers"].as_str()),
        Some(Some(tls.ssl.as_str())),
        "the master published through the SSL listener"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_does_not_trust_the_broker_publishes_nothing_and_says_why() {
    let (_, tls) = broker();
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("kafka-ssl-wrong-ca");
    let rogue = Pki::new(dir.path(), "rogue");
    let certs = tls.pki.issue(Tier::Master, "M1");
    let port = nodes::reserve_port();
    let mut master = nodes::master(dir.path(), "M1", &tls.ssl, &topic, port)
        .args(mutual_tls(&rogue.ca_path(), &certs))
        .spawn()
        .await;
    let (_sidecar, mut client, sent) = sidecar_and_client(dir.path(), port, 200).await;
    publishes_nothing(&master, &mut client, &topic, "certificate verify failed").await;

    // The same master with the right CA, on the same port, delivers what
    // the client held.
    master.kill();
    let _master = nodes::master(dir.path(), "M1", &tls.ssl, &topic, port)
        .args(mutual_tls(&tls.pki.ca_path(), &certs))
        .spawn()
        .await;
    everything_arrives(&mut client, &topic, &sent, "after the CA was fixed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_ssl_takes_the_password_from_a_file_and_a_wrong_one_publishes_nothing() {
    let (_, tls) = broker();
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("kafka-sasl");
    let port = nodes::reserve_port();
    let mut master = nodes::master(dir.path(), "M1", &tls.sasl_ssl, &topic, port)
        .args(sasl_file(dir.path(), &tls.pki.ca_path(), "wrong-password"))
        .spawn()
        .await;
    let (_sidecar, mut client, sent) = sidecar_and_client(dir.path(), port, EVENTS).await;
    publishes_nothing(&master, &mut client, &topic, "Authentication failed").await;
    assert!(
        !master.log().contains("wrong-password"),
        "the password is never logged"
    );

    master.kill();
    let master = nodes::master(dir.path(), "M1", &tls.sasl_ssl, &topic, port)
        .args(sasl_file(dir.path(), &tls.pki.ca_path(), PASSWORD))
        .spawn()
        .await;
    everything_arrives(&mut client, &topic, &sent, "over SASL_SSL").await;
    assert!(
        !master.log().contains(PASSWORD),
        "the password is never logged"
    );
}
