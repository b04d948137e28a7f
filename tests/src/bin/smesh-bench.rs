//! `smesh-bench`: see `smesh_tests::bench`. Run it through `scripts/bench`,
//! which builds release binaries first.

// A benchmark harness: a failed measurement should stop loudly.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::ExitCode;

use clap::Parser;
use smesh_tests::bench::{self, BenchArgs, Results, direct, failover, footprint, mesh};
use smesh_tests::kafka::KafkaBroker;
use smesh_tests::nodes;
use smesh_tests::unique_topic;

/// The same allocator as the nodes, so the direct producer compares like for like.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn machine() -> Vec<(String, String)> {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    vec![
        ("cpus".into(), cpus.to_string()),
        ("cpu".into(), model),
        ("bin_dir".into(), nodes::bin_dir().display().to_string()),
        (
            "kafka".into(),
            smesh_tests::kafka::KAFKA_VERSION.to_string(),
        ),
    ]
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = BenchArgs::parse();
    let mut results = Results::default();
    results.machine.extend(machine());
    for (k, v) in [
        ("events", args.events.to_string()),
        ("payload_bytes", args.payload.to_string()),
        ("rounds", args.rounds.to_string()),
        ("clients", args.clients.to_string()),
        ("rates", format!("{:?}", args.rates)),
        ("latency_secs", args.latency_secs.to_string()),
        ("replay_rows", args.replay_rows.to_string()),
        ("idle_clients", args.idle_clients.to_string()),
    ] {
        results.parameters.insert(k.to_string(), v);
    }
    let broker = match &args.kafka {
        Some(bootstrap) => KafkaBroker::external(bootstrap.clone()),
        None => match KafkaBroker::start() {
            Ok(broker) => broker,
            Err(err) => {
                eprintln!("smesh-bench: cannot start Kafka: {err}");
                return ExitCode::from(69);
            }
        },
    };
    let kafka = broker.bootstrap();
    eprintln!(
        "smesh-bench: Kafka at {kafka}, binaries from {}",
        nodes::bin_dir().display()
    );

    if args.wants("throughput") {
        for round in 1..=args.rounds {
            eprintln!("round {round}/{}: throughput", args.rounds);
            let topic = unique_topic("bench-direct");
            let sink = direct::sink(&kafka, &topic).await.expect("direct producer");
            let limit = direct::throughput(&sink, args.events, args.payload)
                .await
                .expect("direct throughput");
            drop(sink);
            results.record("throughput: limit, direct producer", "ev/s", limit);
            for (name, clients, mode) in [
                ("1 client, spool always", 1, "always"),
                ("1 client, spool on-failure", 1, "on-failure"),
                (
                    &*format!("{} clients, spool always", args.clients),
                    args.clients,
                    "always",
                ),
                (
                    &*format!("{} clients, spool on-failure", args.clients),
                    args.clients,
                    "on-failure",
                ),
            ] {
                mesh::settle().await;
                let rate = mesh::mesh_throughput(
                    &kafka,
                    &unique_topic("bench-mesh"),
                    clients,
                    args.events,
                    args.payload,
                    mode,
                )
                .await;
                results.record(&format!("throughput: mesh, {name}"), "ev/s", rate);
                results.record(
                    &format!("throughput ratio mesh/limit, {name}"),
                    "ratio",
                    rate / limit,
                );
            }
        }
    }
    if args.wants("latency") {
        for &rate in &args.rates {
            eprintln!("latency at {rate} ev/s");
            let topic = unique_topic("bench-latency");
            let sink = direct::sink(&kafka, &topic).await.expect("direct producer");
            let limit = direct::latency(&sink, rate, args.latency_secs, args.payload)
                .await
                .expect("direct latency");
            drop(sink);
            for (label, value) in [
                ("p50", limit.p50),
                ("p99", limit.p99),
                ("p99.9", limit.p999),
            ] {
                results.record(
                    &format!("latency {rate}/s: direct producer {label}"),
                    "µs",
                    value as f64,
                );
            }
            for mode in ["always", "on-failure"] {
                mesh::settle().await;
                let got = mesh::mesh_latency(
                    &kafka,
                    &unique_topic("bench-latency"),
                    rate,
                    args.latency_secs,
                    args.payload,
                    mode,
                )
                .await;
                for (label, value, base) in [
                    ("p50", got.p50, limit.p50),
                    ("p99", got.p99, limit.p99),
                    ("p99.9", got.p999, limit.p999),
                ] {
                    results.record(
                        &format!("latency {rate}/s: mesh, spool {mode} {label}"),
                        "µs",
                        value as f64,
                    );
                    results.record(
                        &format!("latency {rate}/s: cost of the two hops, spool {mode} {label}"),
                        "µs",
                        value as f64 - base as f64,
                    );
                }
            }
        }
    }
    if args.wants("tls") {
        let tls = mesh::Variant {
            tls: true,
            ..mesh::Variant::default()
        };
        compare(
            &args,
            &kafka,
            &mut results,
            "tls",
            [("plaintext", mesh::Variant::default()), ("mutual TLS", tls)],
        )
        .await;
    }
    if args.wants("delivery") {
        let exactly_once = mesh::Variant {
            delivery: "exactly-once",
            ..mesh::Variant::default()
        };
        compare(
            &args,
            &kafka,
            &mut results,
            "delivery",
            [
                ("at-least-once", mesh::Variant::default()),
                ("exactly-once", exactly_once),
            ],
        )
        .await;
    }
    if args.wants("failover") {
        eprintln!("failover: {} sidecar kills", args.kills);
        for ms in failover::sidecar(&kafka, &unique_topic("bench-failover"), args.kills).await {
            results.record("failover: kill -9 sidecar to next ack", "ms", ms);
        }
        eprintln!("failover: {} master kills", args.kills);
        for ms in failover::master(&kafka, &unique_topic("bench-failover"), args.kills).await {
            results.record("failover: kill -9 master to next ack", "ms", ms);
        }
    }
    if args.wants("replay") {
        eprintln!("replay: {} spooled rows", args.replay_rows);
        let rate = mesh::replay(
            &kafka,
            &unique_topic("bench-replay"),
            args.replay_rows,
            args.payload,
        )
        .await;
        results.record(
            &format!("replay: drain a {}-row safeData.csv", args.replay_rows),
            "ev/s",
            rate,
        );
    }
    if args.wants("footprint") {
        eprintln!(
            "footprint: idle nodes and {} idle clients",
            args.idle_clients
        );
        let under_test =
            mesh::MeshUnderTest::start(&kafka, &unique_topic("bench-footprint"), 1).await;
        footprint::settle().await;
        let master = footprint::rss_mib(&under_test.master);
        let sidecar = footprint::rss_mib(&under_test.sidecars[0]);
        results.record("footprint: idle master RSS", "MiB", master);
        results.record("footprint: idle sidecar RSS", "MiB", sidecar);
        let clients =
            footprint::connect_idle_clients(under_test.sidecars[0].port, args.idle_clients).await;
        footprint::settle().await;
        let loaded = footprint::rss_mib(&under_test.sidecars[0]);
        results.record(
            &format!("footprint: sidecar RSS with {} clients", args.idle_clients),
            "MiB",
            loaded,
        );
        results.record(
            "footprint: sidecar cost per connected client",
            "KiB",
            (loaded - sidecar) * 1024.0 / args.idle_clients.max(1) as f64,
        );
        for task in clients {
            task.abort();
        }
    }

    println!("{}", bench::table(&results));
    if let Some(dir) = args.out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match serde_json::to_string_pretty(&results).map(|json| std::fs::write(&args.out, json)) {
        Ok(Ok(())) => {
            eprintln!("smesh-bench: raw figures in {}", args.out.display());
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("smesh-bench: cannot write {}", args.out.display());
            ExitCode::from(70)
        }
    }
}

/// Two set-ups of the mesh measured in the same rounds, alternating which
/// goes first so drift on a shared machine favours neither: throughput of
/// `--events` and latency p50/p99 at the first of `--rates`, each with the
/// ratio of the second set-up to the first.
async fn compare(
    args: &BenchArgs,
    kafka: &str,
    results: &mut Results,
    section: &str,
    variants: [(&str, mesh::Variant); 2],
) {
    let rate = args.rates.first().copied().unwrap_or(1000);
    let [(base_name, _), (other_name, _)] = variants;
    for round in 1..=args.rounds {
        eprintln!("round {round}/{}: {section}", args.rounds);
        let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        let mut measured = [(0.0, bench::Latency::default()); 2];
        for index in order {
            mesh::settle().await;
            measured[index] = mesh::variant_round(
                kafka,
                variants[index].1,
                args.events,
                rate,
                args.latency_secs,
                args.payload,
            )
            .await;
        }
        let [(base_rate, base), (other_rate, other)] = measured;
        results.record(
            &format!("{section}: throughput, {base_name}"),
            "ev/s",
            base_rate,
        );
        results.record(
            &format!("{section}: throughput, {other_name}"),
            "ev/s",
            other_rate,
        );
        results.record(
            &format!("{section}: throughput ratio {other_name}/{base_name}"),
            "ratio",
            other_rate / base_rate.max(f64::MIN_POSITIVE),
        );
        for (label, base, other) in [("p50", base.p50, other.p50), ("p99", base.p99, other.p99)] {
            results.record(
                &format!("{section}: latency {rate}/s {label}, {base_name}"),
                "µs",
                base as f64,
            );
            results.record(
                &format!("{section}: latency {rate}/s {label}, {other_name}"),
                "µs",
                other as f64,
            );
            results.record(
                &format!("{section}: latency {rate}/s {label} ratio {other_name}/{base_name}"),
                "ratio",
                other as f64 / (base as f64).max(1.0),
            );
        }
    }
}
