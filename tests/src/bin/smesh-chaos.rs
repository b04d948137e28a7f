//! `smesh-chaos`: a randomised fault schedule against a real mesh, then a
//! verdict read back from the topic.
//!
//! ```text
//! scripts/chaos [--duration 30m] [--seed N] [--clients 3] [--sidecars 2] [--masters 2]
//! ```
//!
//! Starts a Kafka broker, masters, sidecars (each listing every master) and
//! clients (each listing every sidecar, reading a file fed at `--rate`
//! lines/s, spool `always`). Until `--duration` is over, every few seconds
//! one fault picked at random: `kill -9` of a client, sidecar or master
//! (restarted after a moment on the same port, with the same files), a
//! broker freeze (SIGSTOP, then SIGCONT after up to `--max-freeze`), or a
//! broker crash and restart. Then it stops the faults, lets the feeds end,
//! waits for everything to arrive and judges the topic per client: lost,
//! first-occurrence order, duplicates. The seed is printed first, so a run
//! can be replayed; the exit code is 0 only when nothing was lost or
//! reordered. With `--delivery exactly-once` the masters run transactions,
//! the topic is read `read_committed`, a duplicate fails the run too, and
//! `smesh-console audit` judges it a second time.

#![allow(clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smesh_tests::audit::audit;
use smesh_tests::kafka::KafkaBroker;
use smesh_tests::nodes::{self, Feeder, NodeSpec, Process, reserve_port};
use smesh_tests::records::{Isolation, read_until_complete_as};
use smesh_tests::unique_topic;

/// Flags of `smesh-chaos`.
#[derive(Parser, Debug)]
#[command(
    name = "smesh-chaos",
    about = "A randomised fault schedule against a real mesh, then a verdict."
)]
struct Args {
    /// How long faults are injected.
    #[arg(long, default_value = "30m", value_parser = smesh_core::cli::parse_duration)]
    duration: Duration,
    /// Seed of the schedule (printed; random when not given).
    #[arg(long)]
    seed: Option<u64>,
    /// Clients, each reading its own file.
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// Sidecars; every client lists them all.
    #[arg(long, default_value_t = 2)]
    sidecars: usize,
    /// Masters; every sidecar lists them all.
    #[arg(long, default_value_t = 2)]
    masters: usize,
    /// Lines per second written to each client's file.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Longest broker freeze; by default longer than the masters'
    /// --delivery-timeout, so stalls past it are part of the schedule.
    #[arg(long, default_value = "30s", value_parser = smesh_core::cli::parse_duration)]
    max_freeze: Duration,
    /// The masters' --delivery-timeout.
    #[arg(long, default_value = "10s", value_parser = smesh_core::cli::parse_duration)]
    delivery_timeout: Duration,
    /// The masters' --delivery: `at-least-once` or `exactly-once`.
    #[arg(long, default_value = "at-least-once", value_parser = ["at-least-once", "exactly-once"])]
    delivery: String,
}

/// One node of the mesh, restartable with the same spec (port, files).
struct Node {
    name: String,
    spec: NodeSpec,
    process: Process,
}

impl Node {
    async fn start(name: String, spec: NodeSpec) -> Self {
        let process = spec.clone().spawn().await;
        Self {
            name,
            spec,
            process,
        }
    }

    /// `kill -9`, a pause, and the same node again.
    async fn crash(&mut self, down: Duration) {
        self.process.kill();
        tokio::time::sleep(down).await;
        self.process = self.spec.clone().spawn().await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(err) if !err.use_stderr() => {
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!(
                "smesh-chaos: {}",
                err.to_string().lines().next().unwrap_or("bad flags")
            );
            return ExitCode::from(64);
        }
    };
    if args.clients == 0 || args.sidecars == 0 || args.masters == 0 {
        eprintln!("smesh-chaos: --clients, --sidecars and --masters must be at least 1");
        return ExitCode::from(64);
    }
    let seed = args.seed.unwrap_or_else(|| rand::rng().random());
    println!("smesh-chaos: seed {seed} (replay with --seed {seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kafka = match KafkaBroker::start() {
        Ok(kafka) => kafka,
        Err(err) => {
            eprintln!("smesh-chaos: {err}");
            return ExitCode::from(69);
        }
    };
    let dir = tempfile::Builder::new()
        .prefix("smesh-chaos-")
        .tempdir()
        .expect("tempdir");
    let topic = unique_topic("chaos");
    let bootstrap = kafka.bootstrap();

    let mut masters = Vec::new();
    for i in 1..=args.masters {
        let id = format!("M{i}");
        let spec = nodes::master(dir.path(), &id, &bootstrap, &topic, reserve_port()).args([
            "--delivery-timeout".to_string(),
            smesh_core::cli::duration_text(args.delivery_timeout),
            "--delivery".to_string(),
            args.delivery.clone(),
            // A killed master's open transaction is aborted this soon.
            "--transaction-timeout".to_string(),
            "5s".to_string(),
        ]);
        masters.push(Node::start(id, spec).await);
    }
    let master_list: Vec<(String, u16)> = masters
        .iter()
        .map(|m| (m.name.clone(), m.process.port))
        .collect();
    let master_refs: Vec<(&str, u16)> = master_list
        .iter()
        .map(|(id, p)| (id.as_str(), *p))
        .collect();
    let mut sidecars = Vec::new();
    for i in 1..=args.sidecars {
        let id = format!("S{i}");
        let spec = nodes::sidecar(dir.path(), &id, &master_refs, reserve_port());
        sidecars.push(Node::start(id, spec).await);
    }
    let sidecar_list: Vec<(String, u16)> = sidecars
        .iter()
        .map(|s| (s.name.clone(), s.process.port))
        .collect();
    let sidecar_refs: Vec<(&str, u16)> = sidecar_list
        .iter()
        .map(|(id, p)| (id.as_str(), *p))
        .collect();
    let total = args.rate.saturating_mul(args.duration.as_secs()).max(1);
    let per_tick = (args.rate / 10).max(1);
    let mut feeders = BTreeMap::new();
    let mut clients = Vec::new();
    for i in 1..=args.clients {
        let id = format!("c{i}");
        let input = dir.path().join(format!("{id}.jsonl"));
        let feeder = Feeder::start(&input, &id, total, per_tick, Duration::from_millis(100));
        let spec = nodes::client(
            dir.path(),
            &id,
            &sidecar_refs,
            &[nodes::file_source(&input, true)],
        )
        .args(["--spool", "always"]);
        clients.push(Node::start(id.clone(), spec).await);
        feeders.insert(id, feeder);
    }
    println!(
        "smesh-chaos: {} masters, {} sidecars, {} clients, {} lines each, topic {topic}, for {:?}",
        args.masters, args.sidecars, args.clients, total, args.duration
    );

    let started = Instant::now();
    let mut faults = 0;
    while started.elapsed() < args.duration {
        tokio::time::sleep(Duration::from_millis(rng.random_range(2_000..8_000))).await;
        let at = started.elapsed().as_secs_f64();
        let down = Duration::from_millis(rng.random_range(200..3_000));
        faults += 1;
        match rng.random_range(0..5) {
            0 => {
                let pick = rng.random_range(0..clients.len());
                let node = &mut clients[pick];
                println!("t={at:>7.1}s kill -9 client {} for {down:?}", node.name);
                node.crash(down).await;
            }
            1 => {
                let pick = rng.random_range(0..sidecars.len());
                let node = &mut sidecars[pick];
                println!("t={at:>7.1}s kill -9 sidecar {} for {down:?}", node.name);
                node.crash(down).await;
            }
            2 => {
                let pick = rng.random_range(0..masters.len());
                let node = &mut masters[pick];
                println!("t={at:>7.1}s kill -9 master {} for {down:?}", node.name);
                node.crash(down).await;
            }
            3 => {
                let max = u64::try_from(args.max_freeze.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1_001);
                let frozen = Duration::from_millis(rng.random_range(1_000..max));
                println!("t={at:>7.1}s broker frozen for {frozen:?}");
                kafka.freeze();
                tokio::time::sleep(frozen).await;
                kafka.thaw();
            }
            _ => {
                println!("t={at:>7.1}s broker crash and restart");
                if let Err(err) = kafka.restart() {
                    eprintln!("smesh-chaos: the broker did not come back: {err}");
                    return ExitCode::from(70);
                }
            }
        }
    }
    println!("smesh-chaos: {faults} faults; waiting for the feeds and the deliveries");
    let mut sent = BTreeMap::new();
    for (id, mut feeder) in feeders {
        feeder.finish();
        sent.insert(id, feeder.lines.clone());
    }
    let exactly_once = args.delivery == "exactly-once";
    let isolation = if exactly_once {
        Isolation::ReadCommitted
    } else {
        Isolation::ReadUncommitted
    };
    let (_, verdict) = read_until_complete_as(
        &bootstrap,
        &topic,
        &sent,
        Duration::from_secs(300),
        isolation,
    )
    .await;
    println!(
        "smesh-chaos: seed {seed}: {} delivered, {} lost, {} out of order, {} duplicates, {} unexpected",
        verdict.delivered,
        verdict.lost.len(),
        verdict.out_of_order.len(),
        verdict.duplicates,
        verdict.unexpected.len()
    );
    for (what, list) in [
        ("lost", &verdict.lost),
        ("out of order", &verdict.out_of_order),
        ("unexpected", &verdict.unexpected),
    ] {
        if !list.is_empty() {
            println!("  {what}, e.g. {:?}", &list[..list.len().min(5)]);
        }
    }
    drop(clients);
    drop(sidecars);
    drop(masters);
    let mut passed =
        verdict.lost.is_empty() && verdict.out_of_order.is_empty() && verdict.unexpected.is_empty();
    if exactly_once {
        passed &= verdict.duplicates == 0;
        let output = audit(&bootstrap, &topic, &["--delivery", "exactly-once"]).await;
        print!(
            "smesh-chaos: audit: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        passed &= output.status.success();
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
