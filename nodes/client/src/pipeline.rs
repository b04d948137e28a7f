//! The client's core: one task that owns the spool, the events in flight and
//! the link to a sidecar.
//!
//! Every reading gets a sequence number and becomes an event. Where it goes
//! next depends on the spool mode and the moment:
//!
//! - `always`: appended to `safeData.csv` first (write-ahead), synced in small
//!   groups before it is sent: one fdatasync per loop turn covers everything
//!   appended in it, and the turn sends nothing until it returned.
//! - `on-failure`: kept in memory and sent directly while a sidecar answers
//!   and the spool holds nothing older; otherwise appended to the spool. When
//!   the link is lost or the client stops, events held only in memory are
//!   appended to the spool, in order, before anything newer.
//!
//! Sending takes events oldest first: those held in memory, then unsent spool
//! rows. At most `window` events are unacknowledged. An ack from the sidecar
//! means Kafka has the events; only then are they settled (their rows
//! reclaimed, their sequence recorded as delivered). When the link dies,
//! everything unacknowledged is sent again from the spool on the next link.
//!
//! Waiting for the disk (fdatasync, state saves, reclaiming spool rows) runs
//! on the blocking pool; the task awaits each piece where it used to do it in
//! line, so the order of writes, syncs, sends and saves is what it was.
//!
//! # A full filesystem
//!
//! A write that fails because the filesystem is full (`spool::is_full`)
//! never stops the client. The pipeline enters the *spool full* state
//! ([`DiskFull`]): it keeps sending what is completely in the spool file and
//! settling acks; readings that would have to be spooled are held back
//! (`--on-spool-full hold`: the one taken waits here, the sources wait on
//! the channel) or dropped and counted (`drop`); writes are retried with
//! backoff. Acknowledged rows are reclaimed by truncation, which frees
//! space, so a mesh that comes back ends the state by itself. A state save
//! that fails is retried; when it fails for lack of space, the spool's
//! acknowledged rows are reclaimed first to make room and the save follows
//! at once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smesh_core::backoff::Backoff;
use smesh_core::event::{self, SPEC_VERSION};
use smesh_core::link::{Link, LinkEvent};
use smesh_core::ratelimit::LogEvery;
use smesh_proto::mesh::uplink::Frame as Up;
use smesh_proto::mesh::{Event, Rejected, Report};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::{Config, SpoolFull, SpoolMode};
use crate::counters::Counters;
use crate::oversized::Oversized;
use crate::placed::{self, PlacedLog, placed_path};
use crate::source::Reading;
use crate::spool::{Origin, RejectedFile, RowEncoder, Spool, encode_row, is_full};
use crate::state::StateFile;
use crate::stats::{SpoolFullStats, Stats, Timings};

/// Least time between two "spool full" warnings.
const FULL_WARN_EVERY: Duration = Duration::from_secs(30);

/// The spool's filesystem has no room: what the pipeline does meanwhile.
#[derive(Debug)]
struct DiskFull {
    /// When it started.
    since: Instant,
    /// When to try writing again.
    retry_at: tokio::time::Instant,
    /// Delays between tries: 100 ms doubling to 5 s.
    backoff: Backoff,
    /// Readings dropped meanwhile (`--on-spool-full drop`).
    dropped: u64,
    /// Whether this episode was announced (warnings are rate-limited).
    warned: bool,
}

/// What waits for room on a full filesystem (`--on-spool-full hold`).
#[derive(Debug)]
enum Held {
    /// A reading not numbered yet.
    Reading(Reading),
    /// A reading larger than `--max-event-bytes`, numbered, on its way from
    /// its spill file to the rejected file.
    Oversized {
        event: Box<Event>,
        origin: Option<Origin>,
        oversized: Arc<Oversized>,
    },
}

/// Why the pipeline stopped early.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading, writing or syncing the spool or its state failed.
    #[error("spool {path}: {source}")]
    Spool {
        /// `safeData.csv`.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// An event read and not yet sent.
#[derive(Debug)]
struct Item {
    event: Event,
    /// Logical byte range of its spool row, if it has one.
    row: Option<(u64, u64)>,
    origin: Option<Origin>,
}

/// An event sent and not yet acknowledged.
#[derive(Debug)]
struct SentItem {
    sequence: u64,
    /// When the source produced it (ns since the epoch), for ack latency.
    time: i64,
    id: String,
    row: Option<(u64, u64)>,
    origin: Option<Origin>,
    /// Kept only while the event exists nowhere else (not in the spool).
    event: Option<Event>,
}

/// One batch sent on the current stream, in sending order.
#[derive(Debug)]
struct SentBatch {
    items: Vec<SentItem>,
}

enum Step {
    Link(LinkEvent),
    Reading(Option<Reading>),
    Maintain,
    RetryDisk,
    Report,
    Stop,
    DrainTimeout,
}

/// The pipeline task's state.
pub struct Pipeline {
    config: Arc<Config>,
    counters: Arc<Counters>,
    spool: Spool,
    state: StateFile,
    readings: mpsc::Receiver<Reading>,
    sources_done: bool,
    /// The link to a sidecar (failover, window, acks).
    link: Link,
    fresh: VecDeque<Item>,
    /// Logical spool offset: rows before it are sent, settled or in `fresh`.
    cursor: u64,
    inflight: VecDeque<SentBatch>,
    inflight_events: usize,
    /// Whether `fresh` or `inflight` may hold events the spool lacks
    /// (on-failure mode). Keeps [`Pipeline::spill`] O(1) when there are none.
    memory_only: bool,
    dropped_unlogged: u64,
    /// First read, last ack and ack latencies, for `--stats-file`.
    timings: Timings,
    /// Encodes the start of oversized readings' rejected rows.
    encoder: RowEncoder,
    /// Keeps the warning about oversized readings to one per interval.
    oversized_log: LogEvery,
    /// Set while the spool's filesystem has no room.
    full: Option<DiskFull>,
    /// A reading taken while the spool had no room, waiting for it
    /// (`--on-spool-full hold`); while it waits, no reading is taken.
    held: Option<Held>,
    /// Keeps the "spool full" warning to one per [`FULL_WARN_EVERY`].
    full_log: LogEvery,
    /// Spool-full episodes and their time, for `--stats-file`.
    full_stats: SpoolFullStats,
    /// The newest event handed to the mesh (spooled, or sent from memory):
    /// the next one links to it. 0: none yet in this incarnation.
    last_handed: u64,
    /// Where acknowledged events went in Kafka (`safeData.placed.csv`).
    placed: PlacedLog,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("inflight_events", &self.inflight_events)
            .field("fresh", &self.fresh.len())
            .finish()
    }
}

impl Pipeline {
    /// The task over an opened spool and state; readings come from the
    /// sources, the link dials the sidecars.
    pub fn new(
        config: Arc<Config>,
        counters: Arc<Counters>,
        spool: Spool,
        state: StateFile,
        readings: mpsc::Receiver<Reading>,
        link: Link,
    ) -> Self {
        let cursor = spool.head();
        let placed = PlacedLog::new(placed_path(&config.spool_file), placed::MAX_BYTES);
        Self {
            config,
            counters,
            spool,
            state,
            readings,
            sources_done: false,
            link,
            fresh: VecDeque::new(),
            cursor,
            inflight: VecDeque::new(),
            inflight_events: 0,
            memory_only: false,
            dropped_unlogged: 0,
            timings: Timings::default(),
            encoder: RowEncoder::default(),
            oversized_log: LogEvery::default(),
            full: None,
            held: None,
            full_log: LogEvery::new(FULL_WARN_EVERY),
            full_stats: SpoolFullStats::default(),
            last_handed: 0,
            placed,
        }
    }

    /// Links the first event this run hands over to `sequence`, the newest
    /// a previous run of this incarnation handed over (0: none).
    pub fn handed_after(mut self, sequence: u64) -> Self {
        self.last_handed = sequence;
        self
    }

    /// Records `sequence` as the newest event handed to the mesh; returns
    /// the one handed over before it (its `previous_sequence`).
    fn hand_over(&mut self, sequence: u64) -> u64 {
        std::mem::replace(&mut self.last_handed, sequence)
    }

    fn spool_error(&self, source: std::io::Error) -> PipelineError {
        PipelineError::Spool {
            path: self.spool.path().display().to_string(),
            source,
        }
    }

    fn fresh_cap(&self) -> usize {
        self.config.window as usize
    }

    /// Whether the next reading has to go to the spool file.
    fn must_spool(&self) -> bool {
        self.config.spool_mode == SpoolMode::Always
            || !self.link.is_up()
            || self.fresh.len() >= self.fresh_cap()
            || self.cursor < self.spool.end()
    }

    fn can_accept(&self) -> bool {
        if self.held.is_some() {
            return false;
        }
        if !self.must_spool() {
            return true;
        }
        if self.full.is_some() {
            // Dropping takes readings to count them.
            return self.config.on_spool_full == SpoolFull::Drop;
        }
        !(self.spool.live_bytes() >= self.config.spool_max_bytes
            && self.config.on_spool_full == SpoolFull::Hold)
    }

    /// A write failed. A full filesystem starts (or prolongs) the spool-full
    /// state and is retried with backoff; anything else stops the client.
    fn write_failed(
        &mut self,
        err: std::io::Error,
        what: &'static str,
    ) -> Result<(), PipelineError> {
        if !is_full(&err) {
            return Err(self.spool_error(err));
        }
        let unwritten = self.spool.unwritten_bytes();
        match &mut self.full {
            Some(full) => {
                full.retry_at = tokio::time::Instant::now() + full.backoff.next_delay();
                debug!(%err, what, unwritten_bytes = unwritten, "spool still full");
            }
            None => {
                let mut backoff = Backoff::default();
                let retry_at = tokio::time::Instant::now() + backoff.next_delay();
                let warn_now = self.full_log.tick().is_some();
                if warn_now {
                    warn!(
                        path = %self.spool.path().display(),
                        %err,
                        what,
                        on_spool_full = ?self.config.on_spool_full,
                        unwritten_bytes = unwritten,
                        spooled = self.spool.live_rows(),
                        "spool full: the filesystem has no room; still delivering from the spool, retrying writes with backoff"
                    );
                } else {
                    debug!(%err, what, "spool full again");
                }
                self.full_stats.episodes += 1;
                self.full = Some(DiskFull {
                    since: Instant::now(),
                    retry_at,
                    backoff,
                    dropped: 0,
                    warned: warn_now,
                });
            }
        }
        Ok(())
    }

    /// A reading that has to wait for room: held, or dropped and counted.
    fn hold_or_drop(&mut self, held: Held) {
        match self.config.on_spool_full {
            SpoolFull::Hold => self.held = Some(held),
            SpoolFull::Drop => {
                Counters::bump(&self.counters.dropped, 1);
                self.dropped_unlogged += 1;
                if let Some(full) = &mut self.full {
                    full.dropped += 1;
                }
            }
        }
    }

    /// Tries the writes that failed; ends the spool-full state when they
    /// work, and takes the held reading.
    async fn retry_disk(&mut self) -> Result<(), PipelineError> {
        self.spool
            .rejected()
            .retry()
            .map_err(|e| self.spool_error(e))?;
        if let Err(err) = self.spool.sync().await {
            return self.write_failed(err, "writing the spool");
        }
        // Also the probe: a new file of the state's size fits again.
        if let Err(err) = self.state.save().await {
            return self.write_failed(err, "saving the state file");
        }
        if let Some(full) = self.full.take() {
            let lasted = full.since.elapsed();
            self.full_stats.seconds += lasted.as_secs_f64();
            let log = if full.warned {
                tracing::Level::INFO
            } else {
                tracing::Level::DEBUG
            };
            if log == tracing::Level::INFO {
                info!(lasted = ?lasted, dropped = full.dropped, "spool writable again; taking readings again");
            } else {
                debug!(lasted = ?lasted, dropped = full.dropped, "spool writable again");
            }
        }
        match self.held.take() {
            Some(Held::Reading(reading)) => self.accept(reading).await?,
            Some(Held::Oversized {
                event,
                origin,
                oversized,
            }) => self.reject_oversized(*event, origin, oversized).await?,
            None => {}
        }
        Ok(())
    }

    /// Everything read has been delivered (or rejected) and nothing more will come.
    fn finished(&self) -> bool {
        self.sources_done
            && self.fresh.is_empty()
            && self.inflight.is_empty()
            && self.spool.live_rows() == 0
            && self.cursor >= self.spool.end()
    }

    /// Runs until the sources are done and everything is delivered, or until
    /// shutdown (then drains in-flight events for at most `drain_timeout`).
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), PipelineError> {
        let mut maintenance = tokio::time::interval(Duration::from_secs(1));
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut report = tokio::time::interval(self.config.report_interval);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        let mut drain_deadline = tokio::time::Instant::now();
        loop {
            if self.finished() || (stopping && self.drained()) {
                break;
            }
            let accept = !self.sources_done && self.can_accept();
            let retry_at = self.full.as_ref().map(|f| f.retry_at);
            let step = {
                tokio::select! {
                    biased;
                    event = self.link.next() => Step::Link(event),
                    reading = self.readings.recv(), if accept => Step::Reading(reading),
                    _ = maintenance.tick() => Step::Maintain,
                    () = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)), if retry_at.is_some() => Step::RetryDisk,
                    _ = report.tick() => Step::Report,
                    () = shutdown.cancelled(), if !stopping => Step::Stop,
                    () = tokio::time::sleep_until(drain_deadline), if stopping => Step::DrainTimeout,
                }
            };
            match step {
                Step::Link(event) => self.on_link(event).await?,
                Step::Reading(Some(reading)) => {
                    self.accept(reading).await?;
                    // Take what else is waiting, so batches form under load.
                    let mut more = self.config.batch_max;
                    while more > 0 && self.can_accept() {
                        match self.readings.try_recv() {
                            Ok(reading) => self.accept(reading).await?,
                            Err(_) => break,
                        }
                        more -= 1;
                    }
                }
                Step::Reading(None) => {
                    self.sources_done = true;
                    info!("all sources finished; delivering what is left");
                }
                Step::Maintain => self.maintain().await?,
                Step::RetryDisk => self.retry_disk().await?,
                Step::Report => self.report().await,
                Step::Stop => {
                    stopping = true;
                    drain_deadline = tokio::time::Instant::now() + self.config.drain_timeout;
                    info!(
                        in_flight = self.inflight_events,
                        "stopping: waiting for in-flight events to be acknowledged"
                    );
                }
                Step::DrainTimeout => {
                    warn!(
                        in_flight = self.inflight_events,
                        "drain timeout: unacknowledged events stay in the spool for the next start"
                    );
                    break;
                }
            }
            if self.full.is_none() {
                let written = if self.config.spool_mode == SpoolMode::Always {
                    // Write-ahead, grouped: what this step appended reaches
                    // the disk before any of it is sent, connected or not.
                    self.spool.sync().await
                } else {
                    self.spool.flush_if_large()
                };
                if let Err(err) = written {
                    self.write_failed(err, "writing the spool")?;
                }
            }
            // A failed send is reported by the link's next event.
            let _ = self.pump(stopping).await;
        }
        self.close().await
    }

    /// On shutdown: done when nothing is in flight and memory holds no event
    /// that the spool lacks.
    fn drained(&self) -> bool {
        self.inflight.is_empty()
            && (!self.link.is_up() || self.fresh.iter().all(|i| i.row.is_some()))
    }

    /// Makes everything durable before exit.
    ///
    /// On a full filesystem: the state is saved if it fits (else the last
    /// acknowledgements are sent again after a restart, and no row is
    /// reclaimed); rows that cannot reach the spool file even after its
    /// acknowledged rows were reclaimed are lost, said loudly, and the
    /// client stops with an error.
    async fn close(mut self) -> Result<(), PipelineError> {
        self.spill();
        match self.held.take() {
            Some(Held::Reading(reading)) => {
                warn!(source = %reading.source, "a reading held back for lack of spool space is not kept (the source reads it again only if it is a file)");
            }
            Some(Held::Oversized { event, .. }) => {
                warn!(event = %event.id, source = %event.source, "an oversized reading held back for lack of space is not kept in the rejected file (the source reads it again only if it is a file)");
            }
            None => {}
        }
        let mut unwritten = match self.spool.sync().await {
            Ok(()) => None,
            Err(err) if is_full(&err) => Some(err),
            Err(err) => return Err(self.spool_error(err)),
        };
        let saved = match self.state.save().await {
            Ok(()) => true,
            Err(err) if is_full(&err) => {
                warn!(%err, "cannot save the state file: the filesystem is full; acknowledgements since the last save will be sent again after a restart");
                false
            }
            Err(err) => return Err(self.spool_error(err)),
        };
        if saved {
            match self.spool.maintain().await {
                Ok(()) => {}
                Err(err) if is_full(&err) => {}
                Err(err) => return Err(self.spool_error(err)),
            }
            if unwritten.is_some() {
                // Reclaiming may have made room.
                unwritten = match self.spool.sync().await {
                    Ok(()) => None,
                    Err(err) if is_full(&err) => Some(err),
                    Err(err) => return Err(self.spool_error(err)),
                };
            }
        }
        if let Some(full) = self.full.take() {
            self.full_stats.seconds += full.since.elapsed().as_secs_f64();
            self.full_stats.at_exit = true;
        }
        let backlog = self.spool.backlog();
        if let Some(path) = &self.config.stats_file {
            Stats::new(&self.config.id, &self.counters, backlog.rows, &self.timings)
                .spool_full(self.full_stats.clone())
                .with_state(&self.state)
                .with_placed(self.placed.spans())
                .write(path)
                .await;
        }
        if let Some(err) = unwritten {
            let bytes = self.spool.unwritten_bytes();
            error!(%err, bytes, "spool full at exit: events that never reached the spool file are lost");
            return Err(self.spool_error(err));
        }
        info!(
            spooled = backlog.rows,
            bytes = backlog.bytes,
            "client stopped"
        );
        Ok(())
    }

    async fn accept(&mut self, reading: Reading) -> Result<(), PipelineError> {
        if self.full.is_some() && (self.must_spool() || reading.oversized.is_some()) {
            // Before it gets a number: a dropped reading leaves no gap.
            self.hold_or_drop(Held::Reading(reading));
            return Ok(());
        }
        let sequence = match self.state.next_sequence().await {
            Ok(sequence) => sequence,
            Err(err) => {
                self.write_failed(err, "reserving sequence numbers in the state file")?;
                self.hold_or_drop(Held::Reading(reading));
                return Ok(());
            }
        };
        Counters::bump(&self.counters.read, 1);
        self.timings.read(reading.time_unix_nanos);
        let incarnation = self.state.incarnation();
        let event = Event {
            id: event::event_id(&self.config.id, incarnation, sequence),
            source: reading.source.to_string(),
            r#type: reading.kind.to_string(),
            specversion: SPEC_VERSION.to_string(),
            time_unix_nanos: reading.time_unix_nanos,
            datacontenttype: reading.content_type.to_string(),
            subject: reading.subject,
            extensions: HashMap::new(),
            data: reading.data,
            client_id: self.config.id.clone(),
            sequence,
            incarnation,
            // The sidecar's to say.
            client_authenticated: false,
            // Set once it is handed over (below): what is rejected or
            // dropped here is no link in the chain.
            previous_sequence: 0,
            // The hops are the sidecar's and the master's to say.
            sidecar_id: String::new(),
            sidecar_received_unix_nanos: 0,
            master_id: String::new(),
            master_received_unix_nanos: 0,
        };
        if let Some(oversized) = reading.oversized {
            return self
                .reject_oversized(event, reading.origin, oversized)
                .await;
        }
        if let Err(invalid) = event::validate(&event, self.config.max_event_bytes) {
            warn!(event = %event.id, source = %event.source, reason = %invalid, rejected = %self.spool_rejected_path(), "event can never be delivered; moved to the rejected file");
            let row = encode_row(&event, reading.origin.as_ref());
            self.write_rejected(&invalid.to_string(), &row)?;
            return Ok(());
        }
        let mut event = event;
        if !self.must_spool() {
            event.previous_sequence = self.hand_over(sequence);
            self.fresh.push_back(Item {
                event,
                row: None,
                origin: reading.origin,
            });
            self.memory_only = true;
            return Ok(());
        }
        if self.spool.live_bytes() >= self.config.spool_max_bytes
            && self.config.on_spool_full == SpoolFull::Drop
        {
            Counters::bump(&self.counters.dropped, 1);
            self.dropped_unlogged += 1;
            return Ok(());
        }
        self.spill();
        event.previous_sequence = self.hand_over(sequence);
        let (start, end) = self.spool.append(&event, reading.origin.as_ref());
        Counters::bump(&self.counters.spooled, 1);
        if self.cursor == start && self.fresh.len() < self.fresh_cap() {
            self.fresh.push_back(Item {
                event,
                row: Some((start, end)),
                origin: reading.origin,
            });
            self.cursor = end;
        }
        Ok(())
    }

    /// A reading the source did not hold (larger than `--max-event-bytes`):
    /// its row is streamed from the spill file into the rejected file on the
    /// blocking pool, and awaited like any rejected row.
    async fn reject_oversized(
        &mut self,
        event: Event,
        origin: Option<Origin>,
        oversized: Arc<Oversized>,
    ) -> Result<(), PipelineError> {
        let size = event::encoded_len(&event)
            .saturating_add(usize::try_from(oversized.size).unwrap_or(usize::MAX));
        let reason = event::InvalidEvent::TooLarge {
            id: event.id.clone(),
            size,
            max: self.config.max_event_bytes,
        }
        .to_string();
        if let Some(unlogged) = self.oversized_log.tick() {
            warn!(event = %event.id, source = %event.source, position = origin.as_ref().map(|o| o.position), size, reason = %reason, also_since_last_log = unlogged, rejected = %self.spool_rejected_path(), "reading larger than --max-event-bytes can never be delivered; moved to the rejected file (this warning at most every 10s)");
        }
        let head = self
            .encoder
            .encode_head(&event, origin.as_ref(), oversized.encoding())
            .to_vec();
        let rejected = self.spool.rejected();
        let mut file =
            std::mem::replace(rejected, RejectedFile::new(rejected.path().to_path_buf()));
        let spilled = Arc::clone(&oversized);
        let (file, written) = tokio::task::spawn_blocking(move || {
            let written = spilled.write_rejected(&mut file, &reason, &head);
            (file, written)
        })
        .await
        .map_err(|e| self.spool_error(std::io::Error::other(e)))?;
        *self.spool.rejected() = file;
        match written {
            Ok(()) => {
                Counters::bump(&self.counters.rejected, 1);
                Ok(())
            }
            // Too large to wait in memory like other rejected rows: it waits
            // as a reading, in the spill file, until the file has room.
            Err(err) if is_full(&err) => {
                self.write_failed(err, "writing an oversized reading to the rejected file")?;
                self.hold_or_drop(Held::Oversized {
                    event: Box::new(event),
                    origin,
                    oversized,
                });
                Ok(())
            }
            Err(err) => Err(self.spool_error(err)),
        }
    }

    fn spool_rejected_path(&mut self) -> String {
        self.spool.rejected().path().display().to_string()
    }

    fn write_rejected(&mut self, reason: &str, row: &[u8]) -> Result<(), PipelineError> {
        Counters::bump(&self.counters.rejected, 1);
        self.spool
            .rejected()
            .write(reason, row)
            .map_err(|e| self.spool_error(e))
    }

    /// Appends every event held only in memory to the spool, oldest first.
    /// They are newer than every spool row, so the file stays in order.
    /// Cannot fail: rows wait in the spool's buffer until the file takes them.
    fn spill(&mut self) {
        if !self.memory_only {
            return;
        }
        let at_end = self.cursor >= self.spool.end();
        let mut spilled = 0u64;
        for batch in &mut self.inflight {
            for item in &mut batch.items {
                if let Some(event) = item.event.take() {
                    item.row = Some(self.spool.append(&event, item.origin.as_ref()));
                    spilled += 1;
                }
            }
        }
        for item in &mut self.fresh {
            if item.row.is_none() {
                item.row = Some(self.spool.append(&item.event, item.origin.as_ref()));
                spilled += 1;
            }
        }
        self.memory_only = false;
        if spilled > 0 {
            Counters::bump(&self.counters.spooled, spilled);
            if at_end {
                self.cursor = self.spool.end();
            }
            debug!(spilled, "events held in memory written to the spool");
        }
    }

    async fn on_link(&mut self, event: LinkEvent) -> Result<(), PipelineError> {
        match event {
            LinkEvent::Up { peer, welcome } => {
                Counters::bump(&self.counters.links_opened, 1);
                let backlog = self.spool.live_rows();
                info!(sidecar = %peer, window = welcome.window, ready = welcome.ready, spooled = backlog, "connected to sidecar");
                if backlog > 0 {
                    info!(events = backlog, "replaying spooled events, oldest first");
                }
                // The sidecar learns the backlog at once, not a second later.
                self.report().await;
            }
            LinkEvent::Down {
                peer,
                reason,
                switching_to,
                drained,
            } => {
                if drained {
                    info!(sidecar = %peer, peer = %peer.id, address = %peer.address(), %reason, to = ?switching_to.map(|p| p.to_string()), "left the sidecar between batches");
                } else {
                    Counters::bump(&self.counters.links_lost, 1);
                    warn!(sidecar = %peer, peer = %peer.id, address = %peer.address(), %reason, to = ?switching_to.map(|p| p.to_string()), unacknowledged = self.inflight_events, "lost the sidecar; failing over");
                }
                self.unsend();
            }
            LinkEvent::Acked {
                batches,
                rejected,
                mut placed,
                ..
            } => {
                // Only this client's: a sidecar cannot put words in its file.
                placed.retain(|p| p.client_id == self.config.id);
                if let Err(err) = self.on_ack(batches, &rejected) {
                    warn!(%err, "cannot record an acknowledgement");
                }
                let sidecar = self.link.peer().map_or("", |peer| peer.id.as_str());
                self.placed.record(
                    smesh_core::time::now_unix_nanos(),
                    sidecar,
                    placed,
                    &self.counters,
                );
            }
            LinkEvent::RoundTrip(rtt) => self.counters.sidecar_rtt.observe(rtt),
            LinkEvent::Ready(_) | LinkEvent::Probe(_) => {}
        }
        Ok(())
    }

    /// The stream is gone: everything sent on it is unacknowledged. Events
    /// held only in memory go to the spool; then everything is read again
    /// from the spool, oldest first, on the next stream.
    fn unsend(&mut self) {
        Counters::bump(&self.counters.resent, self.inflight_events as u64);
        self.spill();
        self.inflight.clear();
        self.inflight_events = 0;
        self.fresh.clear();
        self.cursor = self.spool.head();
    }

    /// The oldest `batches` batches sent are settled end to end.
    fn on_ack(&mut self, batches: usize, rejected: &[Rejected]) -> Result<(), PipelineError> {
        let reasons: HashMap<&str, &str> = rejected
            .iter()
            .map(|r| (r.event_id.as_str(), r.reason.as_str()))
            .collect();
        let mut settled_end = None;
        let mut settled_rows = 0u64;
        let mut acked = 0u64;
        let now = smesh_core::time::now_unix_nanos();
        for _ in 0..batches {
            let Some(batch) = self.inflight.pop_front() else {
                break;
            };
            self.inflight_events -= batch.items.len();
            for item in batch.items {
                if let Some(reason) = reasons.get(item.id.as_str()) {
                    let row = match &item.event {
                        Some(event) => encode_row(event, item.origin.as_ref()),
                        None => self.row_bytes(item.row),
                    };
                    warn!(event = %item.id, %reason, "upstream rejected the event for good; moved to the rejected file");
                    self.write_rejected(reason, &row)?;
                } else {
                    acked += 1;
                    self.timings.acked(item.time, now);
                    if item.time > 0 {
                        let nanos = u64::try_from(now - item.time).unwrap_or(0);
                        self.counters
                            .ack_latency
                            .observe(std::time::Duration::from_nanos(nanos));
                    }
                }
                self.state.acknowledged(item.sequence);
                if let Some(origin) = &item.origin {
                    self.state.delivered_position(
                        &origin.key,
                        origin.position,
                        origin.file.as_ref(),
                    );
                }
                if let Some((_, end)) = item.row {
                    settled_end = Some(end);
                    settled_rows += 1;
                }
            }
        }
        Counters::bump(&self.counters.acked, acked);
        if acked > 0 {
            self.timings.ack_arrived(now);
        }
        if let Some(end) = settled_end {
            self.spool.settle(end, settled_rows);
        }
        Ok(())
    }

    /// The spool row of a rejected event, read back (rare).
    fn row_bytes(&mut self, row: Option<(u64, u64)>) -> Vec<u8> {
        let Some((start, _)) = row else {
            return Vec::new();
        };
        match self.spool.read(start, u64::MAX, 1, usize::MAX) {
            Ok((rows, _)) => rows
                .first()
                .map(|r| encode_row(&r.event, r.origin.as_ref()))
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// Sends batches while the window has room. While stopping, only events
    /// held in memory go out; spool rows wait for the next start.
    async fn pump(&mut self, stopping: bool) -> Result<(), String> {
        loop {
            let room = self.link.room().min(self.config.batch_max);
            if room == 0 {
                return Ok(());
            }
            let mut events = Vec::with_capacity(room.min(64));
            let mut items = Vec::with_capacity(room.min(64));
            let mut bytes = 0usize;
            // Always mode sends only rows already synced (write-ahead); on a
            // full filesystem some appended rows wait for the file.
            let sendable = match self.config.spool_mode {
                SpoolMode::Always => self.spool.synced_end(),
                SpoolMode::OnFailure => u64::MAX,
            };
            while events.len() < room && bytes < self.config.batch_max_bytes {
                if self
                    .fresh
                    .front()
                    .is_some_and(|item| item.row.is_some_and(|(_, end)| end > sendable))
                {
                    break;
                }
                if let Some(item) = self.fresh.pop_front() {
                    bytes += item.event.data.len();
                    let keep = item.row.is_none().then(|| item.event.clone());
                    items.push(SentItem {
                        sequence: item.event.sequence,
                        time: item.event.time_unix_nanos,
                        id: item.event.id.clone(),
                        row: item.row,
                        origin: item.origin,
                        event: keep,
                    });
                    events.push(item.event);
                    continue;
                }
                if stopping || self.cursor >= self.spool.end() {
                    break;
                }
                let (rows, next) = self
                    .spool
                    .read(
                        self.cursor,
                        sendable,
                        room - events.len(),
                        self.config.batch_max_bytes - bytes,
                    )
                    .map_err(|e| format!("cannot read the spool: {e}"))?;
                if rows.is_empty() {
                    // Past undecodable rows (now in the rejected file) and
                    // blank lines; rows not yet in the file wait.
                    self.cursor = self.cursor.max(next);
                    break;
                }
                for row in rows {
                    bytes += row.event.data.len();
                    let start = self.cursor;
                    self.cursor = row.end;
                    items.push(SentItem {
                        sequence: row.event.sequence,
                        time: row.event.time_unix_nanos,
                        id: row.event.id.clone(),
                        row: Some((start, row.end)),
                        origin: row.origin,
                        event: None,
                    });
                    events.push(row.event);
                }
                self.cursor = self.cursor.max(next);
            }
            if events.is_empty() {
                return Ok(());
            }
            let n = events.len();
            debug_assert!(
                self.config.spool_mode != SpoolMode::Always
                    || items
                        .iter()
                        .all(|i| i.row.is_some_and(|(_, end)| end <= self.spool.synced_end())),
                "always mode sends only rows already synced (write-ahead)"
            );
            // Recorded before sending: if the send fails, the batch is
            // unacknowledged like every other one in flight.
            self.inflight.push_back(SentBatch { items });
            self.inflight_events += n;
            Counters::bump(&self.counters.sent, n as u64);
            self.link
                .send_batch(events)
                .await
                .map_err(|e| e.to_string())?;
        }
    }

    async fn report(&mut self) {
        if self.dropped_unlogged > 0 {
            let why = if self.full.is_some() {
                "the filesystem has no room"
            } else {
                "--spool-max-bytes reached"
            };
            warn!(
                dropped = self.dropped_unlogged,
                why,
                max_bytes = self.config.spool_max_bytes,
                "spool full: events dropped (--on-spool-full drop)"
            );
            self.dropped_unlogged = 0;
        }
        if let Some(full) = self
            .full
            .as_ref()
            .filter(|_| self.full_log.tick().is_some())
        {
            warn!(
                path = %self.spool.path().display(),
                since = ?full.since.elapsed(),
                dropped = full.dropped,
                holding = self.held.is_some(),
                unwritten_bytes = self.spool.unwritten_bytes(),
                spooled = self.spool.live_rows(),
                "spool full: the filesystem still has no room"
            );
        }
        let backlog = self.spool.backlog();
        self.counters.publish_backlog(&backlog);
        if !self.link.is_up() {
            return;
        }
        let report = Report {
            backlog: Some(backlog),
            counters: Some(self.counters.snapshot()),
            clients: Vec::new(),
        };
        // A failure is reported by the link's next event.
        let _ = self.link.send(Up::Report(report)).await;
    }

    async fn maintain(&mut self) -> Result<(), PipelineError> {
        self.spool
            .rejected()
            .retry()
            .map_err(|e| self.spool_error(e))?;
        if self.config.spool_mode == SpoolMode::OnFailure && self.full.is_none() {
            if let Err(err) = self.spool.sync().await {
                self.write_failed(err, "writing the spool")?;
            }
        }
        // Acknowledgements reach the state file before their rows are
        // reclaimed; except when the state cannot be saved for lack of the
        // space those rows hold: then they are reclaimed to make room and
        // the state is saved right after (a crash in between re-reads, from
        // a file source, what was delivered since the last save).
        match self.state.save_if_dirty().await {
            Ok(()) => self.spool.maintain().await.map_err(|e| self.spool_error(e)),
            Err(err) => {
                self.write_failed(err, "saving the state file")?;
                self.spool
                    .maintain()
                    .await
                    .map_err(|e| self.spool_error(e))?;
                if let Err(err) = self.state.save_if_dirty().await {
                    self.write_failed(err, "saving the state file")?;
                }
                Ok(())
            }
        }
    }
}
