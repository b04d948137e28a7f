//! A full disk never strands data (issue 9, item 5): the client's spool on
//! a small filesystem that fills while the mesh is down, with real
//! processes and a real broker.
//!
//! The spool lives on a tmpfs of 1 MiB ([`SmallFs`]); the clients read a
//! file of several MiB of lines. With the mesh down the spool fills the
//! filesystem; the client must neither exit nor lose what it read, must
//! deliver everything once the mesh is back (`hold`) or count what it
//! dropped (`drop`), and must open a spool with a torn last row on a
//! filesystem that is still full.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use smesh_tests::kafka::KafkaBroker;
use smesh_tests::nodes::{self, NodeSpec, Process, reserve_port};
use smesh_tests::records::{judge, read_all};
use smesh_tests::smallfs::SmallFs;
use smesh_tests::unique_topic;

const DELIVERY: Duration = Duration::from_secs(180);
const FS_BYTES: u64 = 1 << 20;
/// Lines per client: about 4 MiB of spool rows, four times the filesystem.
const LINES: u64 = 8000;
const PAD: usize = 300;
const FULL: &str = "spool full: the filesystem has no room";

/// A client whose spool is on `fs`, reading `input`, with its stats file
/// outside the small filesystem.
fn client_on(
    fs: &SmallFs,
    dir: &Path,
    id: &str,
    sidecar_port: u16,
    input: &Path,
) -> (NodeSpec, PathBuf) {
    let stats = dir.join(format!("{id}-stats.json"));
    let spec = nodes::client(
        dir,
        id,
        &[("S1", sidecar_port)],
        &[nodes::file_source(input, false)],
    );
    let cwd = spec.dir().to_path_buf();
    let spec = spec
        .with_flag(
            "--spool-file",
            fs.dir().join("safeData.csv").display().to_string(),
        )
        .with_flag("--stats-file", stats.display().to_string())
        .wrapped(fs.enter(&cwd));
    (spec, stats)
}

async fn start_mesh(
    dir: &Path,
    kafka: &KafkaBroker,
    topic: &str,
    sidecar_port: u16,
) -> (Process, Process) {
    let master = nodes::master(dir, "M1", &kafka.bootstrap(), topic, 0)
        .spawn()
        .await;
    let sidecar = nodes::sidecar(dir, "S1", &[("M1", master.port)], sidecar_port)
        .spawn()
        .await;
    (master, sidecar)
}

/// Waits until `process` logs `needle` (true) or exits (false).
async fn logged_or_exited(process: &mut Process, needle: &str) -> bool {
    let deadline = std::time::Instant::now() + DELIVERY;
    loop {
        if !process.log_events(needle).is_empty() {
            return true;
        }
        if !process.is_running() {
            return false;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} neither logged {needle:?} nor exited",
            process.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stats(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("stats file")).expect("stats JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_that_fills_its_filesystem_keeps_the_client_running_and_loses_nothing() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("disk-full");
    let sidecar_port = reserve_port();
    let hold_fs = SmallFs::mount(&dir.path().join("hold-fs"), FS_BYTES);
    let drop_fs = SmallFs::mount(&dir.path().join("drop-fs"), FS_BYTES);
    let hold_input = dir.path().join("hold.jsonl");
    let hold_lines = nodes::write_lines(&hold_input, "hold", 0..LINES, PAD);
    let drop_input = dir.path().join("drop.jsonl");
    let drop_lines = nodes::write_lines(&drop_input, "drop", 0..LINES, PAD);

    let (spec, hold_stats) = client_on(&hold_fs, dir.path(), "hold", sidecar_port, &hold_input);
    let mut hold = spec.spawn().await;
    let (spec, drop_stats) = client_on(&drop_fs, dir.path(), "drop", sidecar_port, &drop_input);
    let mut dropping = spec.args(["--on-spool-full", "drop"]).spawn().await;

    // No mesh: both spools fill their filesystems.
    for client in [&mut hold, &mut dropping] {
        assert!(
            logged_or_exited(client, FULL).await,
            "{} exited when its filesystem filled:\n{}",
            client.name,
            client.log_tail(5)
        );
    }
    dropping
        .wait_logged("spool full: events dropped", DELIVERY)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        hold.is_running(),
        "the holding client exited on a full disk"
    );
    assert!(
        dropping.is_running(),
        "the dropping client exited on a full disk"
    );

    let (_master, _sidecar) = start_mesh(dir.path(), kafka, &topic, sidecar_port).await;
    for client in [&mut hold, &mut dropping] {
        let status = client.wait_exit(DELIVERY).await;
        assert!(
            status.success(),
            "{} exited with {status}:\n{}",
            client.name,
            client.log_tail(20)
        );
    }
    let records = read_all(&kafka.bootstrap(), &topic);
    let of = |key: &str| -> Vec<_> { records.iter().filter(|r| r.key == key).cloned().collect() };

    // hold: everything read reached Kafka, in order.
    let held = judge(
        &of("hold"),
        &BTreeMap::from([("hold".to_string(), hold_lines)]),
    );
    held.assert_complete("hold on a full disk");
    let hold_stats = stats(&hold_stats);
    assert_eq!(hold_stats["counters"]["dropped"], 0);
    assert!(
        hold_stats["spool_full"]["episodes"].as_u64() >= Some(1),
        "the stats say the spool was full: {hold_stats}"
    );
    assert_eq!(hold_stats["spool_full"]["at_exit"], false);

    // drop: what was not dropped arrived in order, and every drop was counted.
    let dropped_verdict = judge(
        &of("drop"),
        &BTreeMap::from([("drop".to_string(), drop_lines)]),
    );
    let drop_stats = stats(&drop_stats);
    let dropped = drop_stats["counters"]["dropped"]
        .as_u64()
        .expect("dropped count");
    eprintln!(
        "drop on a full disk: {} delivered, {dropped} dropped, {} duplicates",
        dropped_verdict.delivered, dropped_verdict.duplicates
    );
    assert!(dropped > 0, "some readings were dropped: {drop_stats}");
    assert!(
        dropped_verdict.out_of_order.is_empty(),
        "{:?}",
        dropped_verdict.out_of_order
    );
    assert!(
        dropped_verdict.unexpected.is_empty(),
        "{:?}",
        dropped_verdict.unexpected
    );
    assert_eq!(
        dropped_verdict.lost.len() as u64,
        dropped,
        "exactly the dropped readings are missing"
    );
    let logged: u64 = dropping
        .log_events("spool full: events dropped")
        .iter()
        .filter_map(|w| w["fields"]["dropped"].as_u64())
        .sum();
    assert_eq!(logged, dropped, "every drop is logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_restarted_on_a_full_disk_with_a_torn_row_opens_its_spool_and_delivers() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("disk-full-torn");
    let sidecar_port = reserve_port();
    let fs = SmallFs::mount(&dir.path().join("fs"), FS_BYTES);
    let input = dir.path().join("torn.jsonl");
    let lines = nodes::write_lines(&input, "torn", 0..LINES, PAD);

    let (spec, _) = client_on(&fs, dir.path(), "torn", sidecar_port, &input);
    let mut first = spec.clone().spawn().await;
    // (Filled, whether or not this client survives it.)
    logged_or_exited(&mut first, FULL).await;
    first.kill();

    // Tear the last row in half, as a crash mid-append would, then take
    // every byte the filesystem has left.
    let spool = fs.outside(&fs.dir().join("safeData.csv"));
    let text = std::fs::read(&spool).expect("read the spool");
    let body = &text[..text.len() - 1];
    let last_row = body.iter().rposition(|b| *b == b'\n').expect("rows") + 1;
    let cut = last_row + (text.len() - last_row) / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&spool)
        .and_then(|f| f.set_len(cut as u64))
        .expect("tear the last row");
    let filler = fs.fill("filler");
    eprintln!(
        "spool of {} bytes torn at {cut}; filler took {filler} bytes",
        text.len()
    );

    let mut second = spec.spawn().await;
    assert!(
        logged_or_exited(&mut second, "recovered the spool").await,
        "the client could not open its spool on a full disk:\n{}",
        second.log_tail(5)
    );
    let recovered = second.log_events("recovered the spool");
    assert!(
        recovered[0]["fields"]["torn_bytes"].as_u64() > Some(0),
        "the torn row was cut: {recovered:?}"
    );
    assert!(
        second.is_running(),
        "the client could not open its spool on a full disk"
    );

    let (_master, _sidecar) = start_mesh(dir.path(), kafka, &topic, sidecar_port).await;
    let status = second.wait_exit(DELIVERY).await;
    assert!(
        status.success(),
        "exited with {status}:\n{}",
        second.log_tail(20)
    );
    let records = read_all(&kafka.bootstrap(), &topic);
    judge(&records, &BTreeMap::from([("torn".to_string(), lines)]))
        .assert_complete("restart on a full disk with a torn row");
}
