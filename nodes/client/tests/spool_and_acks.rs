//! The client's pipeline in-process against upstreams on 127.0.0.1 whose
//! settlements the test controls: what reaches `safeData.csv` and when, when
//! rows leave it, what is resent after a lost stream, where rejected events
//! go, and that a failing file write stops the client with an error.
//!
//! That a row is *synced* before it is sent cannot be seen from outside the
//! process; the pipeline checks it with a debug assertion at the send, which
//! panics the client task in these (debug) tests if it is ever broken.
//!
//! Waits are bounded: anything that does not happen in time fails the test.
//! Time is real (a few hundred milliseconds to a second or two per test):
//! the client and its upstreams talk over loopback TCP and sync the spool on
//! the blocking pool, and a paused clock would auto-advance over that work
//! and fire heartbeat timeouts that nothing real caused.

#![allow(clippy::expect_used, clippy::panic)]

use clap::Parser;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use smesh_client::config::ClientArgs;
use smesh_client::spool::{HEADER, decode_row};
use smesh_client::{Client, ClientError, Counters};
use smesh_core::event::{LEGACY_INCARNATION, parse_event_id};
use smesh_core::peers::Peer;
use smesh_proto::mesh::{Backlog, Rejected};
use smesh_testkit::{Forwarded, Seen, Upstream, settings};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// How long any one thing may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(15);

/// A client running in-process, in its own directory.
struct Running {
    /// Holds the spool, its state and rejected files, and the sidecar list.
    dir: tempfile::TempDir,
    /// The client's totals, read while it runs.
    counters: Arc<Counters>,
    /// Stops the client as SIGTERM would.
    shutdown: CancellationToken,
    /// `Client::run`: its result is the exit code's source.
    task: JoinHandle<Result<(), ClientError>>,
}

impl Running {
    /// Starts client `c1` with `sidecars` in its list, in order, and `flags`.
    fn start(sidecars: &[&Peer], flags: &[&str]) -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"), sidecars, flags)
    }

    /// Like [`Running::start`], in a directory the test prepared.
    fn start_in(dir: tempfile::TempDir, sidecars: &[&Peer], flags: &[&str]) -> Self {
        let list = dir.path().join("clientCon.csv");
        let lines: String = sidecars
            .iter()
            .map(|p| format!("{};{}:{};\n", p.id, p.host, p.port))
            .collect();
        std::fs::write(&list, lines).expect("write the sidecar list");
        let spool = dir.path().join("safeData.csv");
        let mut args: Vec<String> = vec![
            "--id".into(),
            "c1".into(),
            "--sidecars".into(),
            list.display().to_string(),
            "--spool-file".into(),
            spool.display().to_string(),
        ];
        args.extend(flags.iter().map(|f| (*f).to_string()));
        let argv = std::iter::once("smesh-client".to_string()).chain(args);
        let config = ClientArgs::try_parse_from(argv)
            .expect("valid flags")
            .into_config()
            .expect("a valid configuration");
        let client = Client::new(config);
        let counters = client.counters();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(client.run(shutdown.clone()));
        Self {
            dir,
            counters,
            shutdown,
            task,
        }
    }

    fn spool(&self) -> PathBuf {
        self.dir.path().join("safeData.csv")
    }

    /// Event ids in the spool file now, in file order (complete rows only).
    fn spooled(&self) -> Vec<String> {
        spool_ids(&self.spool())
    }

    /// The client's result once it stopped by itself.
    async fn finished(self) -> (tempfile::TempDir, Result<(), ClientError>) {
        let result = tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the client stops in time")
            .expect("the client task does not panic");
        (self.dir, result)
    }
}

/// Event ids of the complete rows of a spool file, in file order.
fn spool_ids(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).expect("read the spool");
    let mut lines = bytes.split_inclusive(|b| *b == b'\n');
    let header = lines.next().expect("a header line");
    assert_eq!(header, format!("{HEADER}\n").as_bytes(), "spool header");
    lines
        .filter_map(|line| line.strip_suffix(b"\n"))
        .map(|line| short(&decode_row(line, "c1").expect("a spool row decodes").0.id))
        .collect()
}

/// An id of this run's events as `c1-<sequence>`: each run numbers under
/// an incarnation of its own, which these tests compare nothing by.
fn short(id: &str) -> String {
    let (incarnation, sequence) = parse_event_id("c1", id).expect("an id smesh made");
    assert_ne!(
        incarnation, LEGACY_INCARNATION,
        "{id} carries an incarnation"
    );
    format!("c1-{sequence}")
}

/// `c1-first` ..= `c1-last` (see [`short`]).
fn ids(first: u64, last: u64) -> Vec<String> {
    (first..=last).map(|seq| format!("c1-{seq}")).collect()
}

/// The ids of a batch, as [`short`] gives them.
fn batch_ids(forwarded: &Forwarded) -> Vec<String> {
    forwarded
        .batch
        .events
        .iter()
        .map(|e| short(&e.id))
        .collect()
}

/// Waits (at most [`PATIENCE`]) until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(PATIENCE, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "gave up waiting: {what}");
}

/// The backlog in the client's next report.
async fn next_backlog(upstream: &mut Upstream) -> Backlog {
    upstream
        .seen(|seen| match seen {
            Seen::Report(report) => Some(report.backlog.expect("clients report a backlog")),
            _ => None,
        })
        .await
}

/// The `acked_through` recorded in the client's state file.
fn acked_through(spool: &Path) -> u64 {
    let Ok(text) = std::fs::read_to_string(spool.with_extension("state")) else {
        return 0;
    };
    let state: serde_json::Value = serde_json::from_str(&text).expect("state file is JSON");
    state["acked_through"].as_u64().expect("acked_through")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_mode_spools_before_sending_and_reclaims_only_after_the_ack() {
    let mut s1 = Upstream::start("S1", settings()).await;
    // Paced, so that most readings arrive while the link is up.
    let client = Running::start(
        &[&s1.peer],
        &["--source", "sensor:rate=200,count=50", "--batch-max", "10"],
    );

    // Every event is in the spool file before the upstream sees it.
    let mut held = Vec::new();
    let mut seen = Vec::new();
    while seen.len() < 50 {
        let forwarded = s1.batch().await;
        let spooled = client.spooled();
        for id in batch_ids(&forwarded) {
            assert!(
                spooled.contains(&id),
                "{id} reached the upstream before the spool"
            );
            seen.push(id);
        }
        held.push(forwarded);
    }
    assert_eq!(seen, ids(1, 50), "sent once each, oldest first");

    // While nothing is settled, nothing leaves the spool. Reports travel
    // with the batches, so those queued now were sent before the last one;
    // the next two were sent after it and are a maintenance round apart
    // (both run every second).
    while s1.seen.try_recv().is_ok() {}
    for _ in 0..2 {
        assert_eq!(next_backlog(&mut s1).await.rows, 50, "backlog while held");
    }
    assert_eq!(client.spooled(), ids(1, 50), "rows while unsettled");
    assert_eq!(acked_through(&client.spool()), 0);

    // Settling the first batch records it, and leaves the others' rows.
    let mut held = held.into_iter();
    let first = held.next().expect("a first batch");
    let first_last = first.batch.events.len() as u64;
    first.settle.send(Ok(Vec::new())).expect("session waits");
    let spool = client.spool();
    eventually("the first batch reaches the state file", || {
        acked_through(&spool) == first_last
    })
    .await;
    let spooled = client.spooled();
    for id in ids(first_last + 1, 50) {
        assert!(spooled.contains(&id), "{id} left the spool unsettled");
    }
    assert_eq!(client.counters.acked.load(Relaxed), first_last);

    // Settling the rest empties the spool and the finite client exits cleanly.
    for forwarded in held {
        forwarded
            .settle
            .send(Ok(Vec::new()))
            .expect("session waits");
    }
    let counters = Arc::clone(&client.counters);
    let (dir, result) = client.finished().await;
    result.expect("the client delivered everything and exits 0");
    let spool = dir.path().join("safeData.csv");
    assert_eq!(spool_ids(&spool), Vec::<String>::new(), "spool emptied");
    assert_eq!(acked_through(&spool), 50);
    assert_eq!(counters.acked.load(Relaxed), 50);
    assert_eq!(counters.resent.load(Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_stream_is_resent_to_the_next_sidecar_oldest_first() {
    let mut s1 = Upstream::start("S1", settings()).await;
    let mut s2 = Upstream::start("S2", settings()).await;
    let client = Running::start(
        &[&s1.peer, &s2.peer],
        &["--source", "sensor:rate=max,count=40", "--batch-max", "10"],
    );

    // S1 delivers the first batch and loses the second.
    let first = s1.batch().await;
    let delivered = batch_ids(&first);
    first.settle.send(Ok(Vec::new())).expect("session waits");
    let counters = Arc::clone(&client.counters);
    eventually("the first ack", || {
        counters.acked.load(Relaxed) == delivered.len() as u64
    })
    .await;
    let second = s1.batch().await;
    let lost_from = second.batch.events[0].sequence;
    let _ = second.settle.send(Err(Status::unavailable("broker gone")));

    // S2 gets everything unacknowledged, oldest first, then the rest.
    let mut resent = Vec::new();
    while resent.last() != Some(&"c1-40".to_string()) {
        let forwarded = s2.batch().await;
        resent.extend(batch_ids(&forwarded));
        forwarded
            .settle
            .send(Ok(Vec::new()))
            .expect("session waits");
    }
    assert_eq!(
        lost_from,
        delivered.len() as u64 + 1,
        "the lost batch followed the first"
    );
    assert_eq!(resent, ids(lost_from, 40), "resent in order, nothing lost");
    let mut all = delivered;
    all.extend(resent);
    assert_eq!(all, ids(1, 40), "every event delivered once");

    let (dir, result) = client.finished().await;
    result.expect("the client delivered everything");
    assert_eq!(
        spool_ids(&dir.path().join("safeData.csv")),
        Vec::<String>::new()
    );
    assert!(
        counters.resent.load(Relaxed) >= 10,
        "the lost batch counts as resent"
    );
    assert_eq!(counters.acked.load(Relaxed), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_events_go_to_the_rejected_file_and_are_not_resent() {
    let mut s1 = Upstream::start("S1", settings()).await;
    let mut s2 = Upstream::start("S2", settings()).await;
    let client = Running::start(
        &[&s1.peer, &s2.peer],
        &["--source", "sensor:rate=max,count=20", "--batch-max", "5"],
    );
    let reason = "refused by Kafka: MSG_SIZE_TOO_LARGE";

    // The upstream refuses one event of the first batch for good.
    let first = s1.batch().await;
    let first_ids = batch_ids(&first);
    let victim = first.batch.events[first_ids.len() / 2].id.clone();
    first
        .settle
        .send(Ok(vec![Rejected {
            event_id: victim.clone(),
            reason: reason.to_string(),
        }]))
        .expect("session waits");
    let counters = Arc::clone(&client.counters);
    eventually("the rejection is recorded", || {
        counters.rejected.load(Relaxed) == 1
    })
    .await;
    assert_eq!(
        counters.acked.load(Relaxed),
        first_ids.len() as u64 - 1,
        "the rest of the batch is delivered"
    );

    // The stream is lost; what is resent on the next one skips the rejected.
    let second = s1.batch().await;
    let lost_from = second.batch.events[0].sequence;
    let _ = second.settle.send(Err(Status::unavailable("broker gone")));
    let mut sent = Vec::new();
    while sent.last() != Some(&"c1-20".to_string()) {
        let forwarded = s2.batch().await;
        sent.extend(batch_ids(&forwarded));
        forwarded
            .settle
            .send(Ok(Vec::new()))
            .expect("session waits");
    }
    assert_eq!(lost_from, first_ids.len() as u64 + 1);
    assert_eq!(sent, ids(lost_from, 20), "resent from the lost batch on");

    let (dir, result) = client.finished().await;
    result.expect("the client delivered everything else");
    assert_eq!(counters.acked.load(Relaxed), 19);
    assert_eq!(
        spool_ids(&dir.path().join("safeData.csv")),
        Vec::<String>::new()
    );
    let rejected = dir.path().join("safeData.rejected.csv");
    let mut reader = csv::Reader::from_path(&rejected).expect("a rejected file");
    assert_eq!(
        reader.headers().expect("header"),
        vec!["time", "reason", "row"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(&rows[0][1], reason);
    let (event, _) = decode_row(rows[0][2].as_bytes(), "c1").expect("the event's spool row");
    assert_eq!(event.id, victim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_mode_spools_only_what_a_lost_link_or_a_shutdown_leaves_in_memory() {
    let mut s1 = Upstream::start("S1", settings()).await;
    let mut s2 = Upstream::start("S2", settings()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "").expect("create the input");
    let source = format!("file:path={},format=lines,poll=20ms", input.display());
    let client = Running::start(
        &[&s1.peer, &s2.peer],
        &[
            "--spool",
            "on-failure",
            "--source",
            &source,
            "--batch-max",
            "5",
            "--grace",
            "300ms",
        ],
    );
    let append = |from: u64, to: u64| {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&input)
            .expect("open the input");
        for n in from..=to {
            writeln!(file, "line {n}").expect("append a line");
        }
    };
    // The first report comes once the pipeline knows the link is up.
    next_backlog(&mut s1).await;

    // Acknowledged as they come: nothing touches the spool.
    append(1, 10);
    let mut acked = Vec::new();
    while acked.len() < 10 {
        let forwarded = s1.batch().await;
        assert_eq!(
            client.spooled(),
            Vec::<String>::new(),
            "spooled while linked"
        );
        acked.extend(batch_ids(&forwarded));
        forwarded
            .settle
            .send(Ok(Vec::new()))
            .expect("session waits");
    }
    assert_eq!(acked, ids(1, 10));
    assert_eq!(client.counters.spooled.load(Relaxed), 0);

    // Held, then the stream is lost: the events held only in memory reach
    // the spool before they are resent to S2.
    append(11, 20);
    let mut held = Vec::new();
    let mut sent = Vec::new();
    while sent.len() < 10 {
        let forwarded = s1.batch().await;
        sent.extend(batch_ids(&forwarded));
        held.push(forwarded);
    }
    assert_eq!(sent, ids(11, 20));
    assert_eq!(
        client.spooled(),
        Vec::<String>::new(),
        "held only in memory"
    );
    let lost = held.remove(0);
    let _ = lost.settle.send(Err(Status::unavailable("broker gone")));
    drop(held);
    let mut resent = Vec::new();
    while resent.len() < 10 {
        let forwarded = s2.batch().await;
        let spooled = client.spooled();
        for id in batch_ids(&forwarded) {
            assert!(spooled.contains(&id), "{id} resent without being spooled");
            resent.push(id);
        }
        forwarded
            .settle
            .send(Ok(Vec::new()))
            .expect("session waits");
    }
    assert_eq!(resent, ids(11, 20), "resent in order");
    let spool = client.spool();
    eventually("acknowledged rows leave the spool", || {
        spool_ids(&spool).is_empty()
    })
    .await;

    // Held at shutdown: written to the spool before the client stops.
    append(21, 30);
    let mut held = Vec::new();
    let mut sent = Vec::new();
    while sent.len() < 10 {
        let forwarded = s2.batch().await;
        sent.extend(batch_ids(&forwarded));
        held.push(forwarded);
    }
    assert_eq!(sent, ids(21, 30));
    assert_eq!(
        client.spooled(),
        Vec::<String>::new(),
        "held only in memory"
    );
    client.shutdown.cancel();
    let (dir, result) = client.finished().await;
    result.expect("a clean stop");
    assert_eq!(
        spool_ids(&dir.path().join("safeData.csv")),
        ids(21, 30),
        "the unacknowledged events wait in the spool, in order"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_state_write_stops_the_client_with_an_error_not_a_panic() {
    let s1 = Upstream::start("S1", settings()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The state file is written through this temporary name, so the first
    // reservation of sequence numbers fails.
    std::fs::create_dir(dir.path().join("safeData.state.tmp")).expect("block the state file");
    let client = Running::start_in(dir, &[&s1.peer], &["--source", "sensor:rate=max,count=5"]);
    let (_dir, result) = client.finished().await;
    let err = result.expect_err("the client cannot record its state");
    let text = err.to_string();
    assert!(text.contains("safeData.csv"), "names the spool: {text}");
}
