//! `--metrics-listen`: every node serves Prometheus metrics that parse,
//! move with traffic, and include every metric the sample Grafana
//! dashboard and alert rules in `deploy/` reference. Real processes, a
//! real Kafka broker.

// Test helpers fail loudly, like the tests they serve.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use smesh_tests::kafka::KafkaBroker;
use smesh_tests::nodes::{self, Process, reserve_port};
use smesh_tests::{eventually, unique_topic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const EVENTS: u64 = 500;

/// One scrape: sample name → (labels, value) of each of its samples.
type Scrape = BTreeMap<String, Vec<(String, f64)>>;

/// GETs `/metrics` of a node and parses the exposition (OpenMetrics text):
/// every sample line is `name[{labels}] value`, the value a number, and the
/// text ends with `# EOF`.
async fn scrape(port: u16) -> Scrape {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to /metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .expect("an answer within 10s")
        .unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("HTTP head and body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    parse(body)
}

fn parse(body: &str) -> Scrape {
    assert!(body.trim_end().ends_with("# EOF"), "no # EOF:\n{body}");
    let mut samples = Scrape::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => {
                assert!(labels.ends_with('}'), "bad labels in {line:?}");
                (name, labels.trim_end_matches('}').to_string())
            }
            None => (series, String::new()),
        };
        assert!(
            name.starts_with("smesh_")
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "metric name {name:?} breaks the smesh_<tier>_<what>_<unit> convention"
        );
        samples
            .entry(name.to_string())
            .or_default()
            .push((labels, value));
    }
    samples
}

/// The value of an unlabelled sample.
fn value(scrape: &Scrape, name: &str) -> f64 {
    let samples = scrape
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing; have {:?}", scrape.keys()));
    assert_eq!(samples.len(), 1, "{name} has labels: {samples:?}");
    samples[0].1
}

fn metrics_port(process: &Process) -> u16 {
    process
        .logged_port("metrics listening")
        .unwrap_or_else(|| panic!("{} logged no metrics port", process.name))
}

/// Waits until `check` holds on a scrape of `port`; returns that scrape.
async fn scraped_until(what: &str, port: u16, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let check = &check;
    eventually(what, Duration::from_secs(60), || async move {
        let scrape = scrape(port).await;
        check(&scrape).then_some(scrape)
    })
    .await
}

/// Metric names (`smesh_…`) in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("smesh_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// Every `expr` of the dashboard (any depth of its JSON).
fn dashboard_exprs(json: &serde_json::Value, out: &mut Vec<String>) {
    match json {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => dashboard_exprs(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| dashboard_exprs(i, out)),
        _ => {}
    }
}

/// Every `expr:` of the alert rules. The file is read as simple YAML: one
/// rule per `- alert:` line, each with an `expr:` on one line.
fn alert_exprs(yaml: &str) -> Vec<String> {
    assert!(!yaml.contains('\t'), "tabs in YAML");
    assert!(
        yaml.lines().any(|l| l.trim_end() == "groups:"),
        "alert rules start with groups:"
    );
    let alerts = yaml
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    let exprs: Vec<String> = yaml
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("expr:"))
        .map(|e| e.trim().to_string())
        .collect();
    assert!(alerts > 0, "no alert rules");
    assert_eq!(alerts, exprs.len(), "every alert has one expr: line");
    exprs
}

fn deploy_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_exports_metrics_that_follow_traffic_and_cover_the_dashboard_and_alerts() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("metrics");
    let metrics = ["--metrics-listen", "127.0.0.1:0"];
    let master = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, 0)
        .args(metrics)
        .spawn()
        .await;
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], 0)
        .args(metrics)
        .spawn()
        .await;
    let input = dir.path().join("c1.jsonl");
    nodes::write_lines(&input, "c1", 0..EVENTS, 40);
    // Followed, so the client keeps running (and serving) once delivered.
    let source = nodes::file_source(&input, true);
    let mut client = nodes::client(dir.path(), "c1", &[("S1", sidecar.port)], &[source])
        .args(metrics)
        .spawn()
        .await;
    client
        .wait_logged("metrics listening", Duration::from_secs(20))
        .await;
    let (master_port, sidecar_port, client_port) = (
        metrics_port(&master),
        metrics_port(&sidecar),
        metrics_port(&client),
    );

    let n = EVENTS as f64;
    let client_scrape = scraped_until("the client to count every event acked", client_port, |s| {
        value(s, "smesh_client_events_acked_total") == n
            && value(s, "smesh_client_spool_rows") == 0.0
    })
    .await;
    assert_eq!(value(&client_scrape, "smesh_client_events_read_total"), n);
    assert_eq!(
        value(&client_scrape, "smesh_client_events_spooled_total"),
        n
    );
    assert_eq!(value(&client_scrape, "smesh_client_events_sent_total"), n);
    assert_eq!(
        value(&client_scrape, "smesh_client_events_resent_total"),
        0.0
    );
    assert_eq!(
        value(&client_scrape, "smesh_client_events_rejected_total"),
        0.0
    );
    assert_eq!(
        value(&client_scrape, "smesh_client_link_connects_total"),
        1.0
    );
    assert_eq!(
        value(&client_scrape, "smesh_client_oldest_unacked_age_seconds"),
        0.0
    );
    assert_eq!(
        value(&client_scrape, "smesh_client_ack_latency_seconds_count"),
        n,
        "one latency per acked event"
    );
    let inf = client_scrape["smesh_client_ack_latency_seconds_bucket"]
        .iter()
        .find(|(labels, _)| labels == "le=\"+Inf\"")
        .expect("+Inf bucket");
    assert_eq!(inf.1, n);

    let sidecar_scrape = scraped_until(
        "the sidecar to count every event acked",
        sidecar_port,
        |s| {
            value(s, "smesh_sidecar_events_acked_total") == n
                && value(s, "smesh_sidecar_client_rtt_seconds_count") > 0.0
                && value(s, "smesh_sidecar_master_rtt_seconds_count") > 0.0
        },
    )
    .await;
    // The dialing ends learn their links' round trips from the pings of
    // the ends that measure them: never more samples than were measured.
    let client_rtt = scraped_until("the client to learn its link's RTT", client_port, |s| {
        value(s, "smesh_client_sidecar_rtt_seconds_count") > 0.0
    })
    .await;
    assert!(value(&client_rtt, "smesh_client_sidecar_rtt_seconds_sum") > 0.0);
    let measured = value(
        &scrape(sidecar_port).await,
        "smesh_sidecar_client_rtt_seconds_count",
    );
    assert!(value(&client_rtt, "smesh_client_sidecar_rtt_seconds_count") <= measured);
    assert_eq!(
        value(&sidecar_scrape, "smesh_sidecar_events_forwarded_total"),
        n
    );
    assert_eq!(
        value(&sidecar_scrape, "smesh_sidecar_clients_connected"),
        1.0
    );
    assert_eq!(value(&sidecar_scrape, "smesh_sidecar_pending_events"), 0.0);
    assert_eq!(value(&sidecar_scrape, "smesh_sidecar_pending_bytes"), 0.0);
    assert_eq!(value(&sidecar_scrape, "smesh_sidecar_upstream_ready"), 1.0);
    assert!(value(&sidecar_scrape, "smesh_sidecar_pending_limit_bytes") > 0.0);

    // librdkafka's statistics come every 5s; a broker RTT once it measured one.
    let master_scrape = scraped_until(
        "the master's publishes and librdkafka statistics",
        master_port,
        |s| {
            value(s, "smesh_master_events_published_total") == n
                && value(s, "smesh_master_sidecar_rtt_seconds_count") > 0.0
                && s.contains_key("smesh_master_kafka_broker_rtt_avg_seconds")
        },
    )
    .await;
    assert_eq!(
        value(&master_scrape, "smesh_master_events_received_total"),
        n
    );
    assert_eq!(
        value(&master_scrape, "smesh_master_events_failed_total"),
        0.0
    );
    assert_eq!(
        value(&master_scrape, "smesh_master_events_duplicate_total"),
        0.0
    );
    assert_eq!(value(&master_scrape, "smesh_master_kafka_ready"), 1.0);
    assert_eq!(
        value(&master_scrape, "smesh_master_sidecars_connected"),
        1.0
    );
    assert_eq!(
        value(&master_scrape, "smesh_master_kafka_queue_messages"),
        0.0
    );
    let brokers = &master_scrape["smesh_master_kafka_broker_rtt_avg_seconds"];
    assert!(
        brokers
            .iter()
            .all(|(labels, rtt)| labels.starts_with("broker=\"") && *rtt >= 0.0),
        "{brokers:?}"
    );

    // No label per client or sidecar anywhere: only `le` and `broker`.
    for scrape in [&client_scrape, &sidecar_scrape, &master_scrape] {
        for (name, samples) in scrape {
            for (labels, _) in samples {
                assert!(
                    labels.is_empty() || labels.starts_with("le=") || labels.starts_with("broker="),
                    "{name} has an unbounded label: {labels}"
                );
            }
        }
    }

    // Everything the dashboard and the alerts reference exists.
    let exported: BTreeSet<&String> = client_scrape
        .keys()
        .chain(sidecar_scrape.keys())
        .chain(master_scrape.keys())
        .collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(&deploy_file("grafana-dashboard.json")).expect("dashboard is JSON");
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "the dashboard has panels: {exprs:?}");
    let alerts = alert_exprs(&deploy_file("prometheus-alerts.yml"));
    for (file, expr) in exprs
        .iter()
        .map(|e| ("grafana-dashboard.json", e))
        .chain(alerts.iter().map(|e| ("prometheus-alerts.yml", e)))
    {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{file}: {expr:?} names no smesh metric");
        for name in names {
            assert!(
                exported.contains(&name),
                "{file} references {name}, which no node exports ({expr})"
            );
        }
    }

    // A client gone is no longer counted as connected.
    client.kill();
    scraped_until("the sidecar to count the client gone", sidecar_port, |s| {
        value(s, "smesh_sidecar_clients_connected") == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_client_shows_its_backlog_and_its_age_growing() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A sidecar that is never there.
    let nobody = reserve_port();
    let input = dir.path().join("c1.jsonl");
    nodes::write_lines(&input, "c1", 0..20, 10);
    let source = nodes::file_source(&input, true);
    let client = nodes::client(dir.path(), "c1", &[("S1", nobody)], &[source])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .spawn()
        .await;
    client
        .wait_logged("metrics listening", Duration::from_secs(20))
        .await;
    let port = metrics_port(&client);
    let first = scraped_until("the client to spool everything", port, |s| {
        value(s, "smesh_client_spool_rows") == 20.0
            && value(s, "smesh_client_oldest_unacked_age_seconds") > 0.0
    })
    .await;
    assert!(value(&first, "smesh_client_spool_bytes") > 0.0);
    assert_eq!(value(&first, "smesh_client_events_acked_total"), 0.0);
    let age = value(&first, "smesh_client_oldest_unacked_age_seconds");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = scrape(port).await;
    assert!(
        value(&later, "smesh_client_oldest_unacked_age_seconds") >= age + 1.0,
        "the age grows while nothing is acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_metrics_address_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut client = nodes::client(dir.path(), "c1", &[("S1", reserve_port())], &[])
        .args(["--metrics-listen", "not-an-address"])
        .spawn()
        .await;
    let status = client.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(64), "{}", client.log_tail(5));
}
