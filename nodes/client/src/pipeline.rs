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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use smesh_core::event::{self, SPEC_VERSION};
use smesh_core::link::{Link, LinkEvent};
use smesh_proto::mesh::uplink::Frame as Up;
use smesh_proto::mesh::{Event, Rejected, Report};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Config, SpoolFull, SpoolMode};
use crate::counters::Counters;
use crate::source::Reading;
use crate::spool::{Origin, Spool, encode_row};
use crate::state::StateFile;
use crate::stats::{Stats, Timings};

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
        }
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
        !(self.must_spool()
            && self.spool.live_bytes() >= self.config.spool_max_bytes
            && self.config.on_spool_full == SpoolFull::Block)
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
            let step = {
                tokio::select! {
                    biased;
                    event = self.link.next() => Step::Link(event),
                    reading = self.readings.recv(), if accept => Step::Reading(reading),
                    _ = maintenance.tick() => Step::Maintain,
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
            if self.config.spool_mode == SpoolMode::Always {
                // Write-ahead, grouped: what this step appended reaches the
                // disk before any of it is sent, connected or not.
                self.spool.sync().await.map_err(|e| self.spool_error(e))?;
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
    async fn close(mut self) -> Result<(), PipelineError> {
        self.spill()?;
        self.spool.sync().await.map_err(|e| self.spool_error(e))?;
        self.state.save().await.map_err(|e| self.spool_error(e))?;
        self.spool
            .maintain()
            .await
            .map_err(|e| self.spool_error(e))?;
        let backlog = self.spool.backlog();
        if let Some(path) = &self.config.stats_file {
            Stats::new(&self.config.id, &self.counters, backlog.rows, &self.timings)
                .with_state(&self.state)
                .write(path)
                .await;
        }
        info!(
            spooled = backlog.rows,
            bytes = backlog.bytes,
            "client stopped"
        );
        Ok(())
    }

    async fn accept(&mut self, reading: Reading) -> Result<(), PipelineError> {
        let sequence = self
            .state
            .next_sequence()
            .await
            .map_err(|e| self.spool_error(e))?;
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
        };
        if let Err(invalid) = event::validate(&event, self.config.max_event_bytes) {
            warn!(event = %event.id, source = %event.source, reason = %invalid, rejected = %self.spool_rejected_path(), "event can never be delivered; moved to the rejected file");
            let row = encode_row(&event, reading.origin.as_ref());
            self.write_rejected(&invalid.to_string(), &row)?;
            return Ok(());
        }
        if !self.must_spool() {
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
        self.spill()?;
        let (start, end) = self
            .spool
            .append(&event, reading.origin.as_ref())
            .map_err(|e| self.spool_error(e))?;
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
    fn spill(&mut self) -> Result<(), PipelineError> {
        if !self.memory_only {
            return Ok(());
        }
        let at_end = self.cursor >= self.spool.end();
        let mut spilled = 0u64;
        for batch in &mut self.inflight {
            for item in &mut batch.items {
                if let Some(event) = item.event.take() {
                    let row =
                        self.spool
                            .append(&event, item.origin.as_ref())
                            .map_err(|source| PipelineError::Spool {
                                path: self.spool.path().display().to_string(),
                                source,
                            })?;
                    item.row = Some(row);
                    spilled += 1;
                }
            }
        }
        for item in &mut self.fresh {
            if item.row.is_none() {
                let row = self
                    .spool
                    .append(&item.event, item.origin.as_ref())
                    .map_err(|source| PipelineError::Spool {
                        path: self.spool.path().display().to_string(),
                        source,
                    })?;
                item.row = Some(row);
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
        Ok(())
    }

    async fn on_link(&mut self, event: LinkEvent) -> Result<(), PipelineError> {
        match event {
            LinkEvent::Up { peer, welcome } => {
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
            } => {
                warn!(sidecar = %peer, %reason, to = ?switching_to.map(|p| p.to_string()), unacknowledged = self.inflight_events, "lost the sidecar; failing over");
                self.unsend()?;
            }
            LinkEvent::Acked {
                batches, rejected, ..
            } => {
                if let Err(err) = self.on_ack(batches, &rejected) {
                    warn!(%err, "cannot record an acknowledgement");
                }
            }
            LinkEvent::Ready(_) | LinkEvent::Probe(_) => {}
        }
        Ok(())
    }

    /// The stream is gone: everything sent on it is unacknowledged. Events
    /// held only in memory go to the spool; then everything is read again
    /// from the spool, oldest first, on the next stream.
    fn unsend(&mut self) -> Result<(), PipelineError> {
        Counters::bump(&self.counters.resent, self.inflight_events as u64);
        self.spill()?;
        self.inflight.clear();
        self.inflight_events = 0;
        self.fresh.clear();
        self.cursor = self.spool.head();
        Ok(())
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
                }
                self.state.acknowledged(item.sequence);
                if let Some(origin) = &item.origin {
                    self.state.delivered_position(&origin.key, origin.position);
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
        match self.spool.read(start, 1, usize::MAX) {
            Ok(rows) => rows
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
            while events.len() < room && bytes < self.config.batch_max_bytes {
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
                let rows = self
                    .spool
                    .read(
                        self.cursor,
                        room - events.len(),
                        self.config.batch_max_bytes - bytes,
                    )
                    .map_err(|e| format!("cannot read the spool: {e}"))?;
                if rows.is_empty() {
                    // Only undecodable rows were left; they went to the rejected file.
                    self.cursor = self.spool.end();
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
            warn!(
                dropped = self.dropped_unlogged,
                max_bytes = self.config.spool_max_bytes,
                "spool full: events dropped (--on-spool-full drop)"
            );
            self.dropped_unlogged = 0;
        }
        if !self.link.is_up() {
            return;
        }
        let report = Report {
            backlog: Some(self.spool.backlog()),
            counters: Some(self.counters.snapshot()),
            clients: Vec::new(),
        };
        // A failure is reported by the link's next event.
        let _ = self.link.send(Up::Report(report)).await;
    }

    async fn maintain(&mut self) -> Result<(), PipelineError> {
        if self.config.spool_mode == SpoolMode::OnFailure {
            self.spool.sync().await.map_err(|e| self.spool_error(e))?;
        }
        // Acknowledgements reach the state file before their rows are reclaimed.
        self.state
            .save_if_dirty()
            .await
            .map_err(|e| self.spool_error(e))?;
        self.spool.maintain().await.map_err(|e| self.spool_error(e))
    }
}
