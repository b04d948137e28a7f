//! Exactly-once delivery (`--delivery exactly-once`): Kafka transactions,
//! and a marks topic that fences masters from each other.
//!
//! The master publishes through one transactional producer
//! (`transactional.id`, by default `smesh-<topic>-<id>`: a master restarted
//! with the same id fences its earlier incarnation, whose open transaction
//! Kafka aborts). Batches of every stream go into the open transaction; it
//! is committed every `--transaction-interval` or `--transaction-max-events`,
//! and only then are its batches acknowledged to their sidecars.
//!
//! **Marks.** In the same transaction the master writes, per client
//! identity (client id, incarnation) it published, the highest sequence
//! number committed: a record keyed `<client>/<incarnation as 16 hex>` in
//! the compacted marks topic (default `<topic>.smesh-marks`), value
//! `{"through":N,"master":"<id>","written_unix_nanos":T}`. An event at or
//! below its identity's mark is acknowledged as delivered without being
//! written again.
//!
//! **Claims.** Before a master publishes an identity it has not published
//! lately, it *claims* it: a plain (not transactional) record keyed
//! `<client>/<incarnation>/claim` in the marks topic, value
//! `{"master":"<id>","nonce":N}`. The marks topic has one partition, so its
//! log orders every claim and every mark:
//! - The claimer then reads the marks topic with `read_committed` until it
//!   sees its own claim. Kafka delivers it only once every transaction that
//!   wrote to the topic before it is committed or aborted, so the claimer
//!   knows every mark written before its claim, including those of a
//!   master that was killed in the middle of a commit (its transaction is
//!   aborted after `--transaction-timeout`, or when it restarts).
//! - A master about to commit reads the topic with `read_uncommitted` up to
//!   its own marks. If another master's claim of one of the transaction's
//!   identities is the latest claim there, it aborts instead of committing:
//!   that master may already publish those events. Otherwise the other
//!   master's claim comes after these marks, and it waits for this commit.
//!
//! So whichever master a client's events reach, after any single crash, an
//! event is written by at most one committed transaction. Order: a
//! stream's batches go into transactions in order; when a transaction is
//! aborted, every later batch of its streams fails too (the stream ends and
//! its sidecar resends from the oldest unacknowledged batch).
//!
//! The transactor runs on a thread of its own: librdkafka's transactional
//! calls block.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use smesh_core::ratelimit::LogEvery;
use smesh_core::session::{ConnId, Settled};
use smesh_core::time::now_unix_nanos;
use smesh_proto::mesh::{Event, Placement, Rejected};
use tokio::sync::{oneshot, watch};
use tonic::Status;
use tracing::{debug, info, warn};

use crate::counters::Counters;
use crate::kafka::{self, KafkaConfig, PublishError, QuietContext};
use crate::placement::Placements;

/// What `--delivery exactly-once` needs besides the Kafka settings.
#[derive(Clone, Debug)]
pub struct ExactlyOnceSettings {
    /// `--marks-topic`: the compacted topic of marks and claims.
    pub marks_topic: String,
    /// `--transactional-id`.
    pub transactional_id: String,
    /// `--transaction-interval`: the longest a transaction stays open.
    pub interval: Duration,
    /// `--transaction-max-events`: events after which it is committed early.
    pub max_events: usize,
    /// `--transaction-timeout`: Kafka aborts a transaction its producer left
    /// open this long (a killed master's), which is also how long another
    /// master may wait to learn what it committed.
    pub timeout: Duration,
}

/// One batch for the open transaction: the events to publish (checked
/// already) and the ones refused, for the acknowledgement.
#[derive(Debug)]
pub struct Work {
    /// The stream it came on: after a failure, its later batches fail too.
    pub stream: ConnId,
    /// Valid events, in the stream's order.
    pub events: Vec<Event>,
    /// Events refused before they got here.
    pub rejected: Vec<Rejected>,
    /// Answered once the transaction holding the batch is committed.
    pub reply: oneshot::Sender<Result<Settled, Status>>,
}

/// A record handed to the producer in the open transaction.
struct Written {
    /// Index of its batch in [`Open::work`].
    work: usize,
    id: String,
    client: String,
    incarnation: u64,
    sequence: u64,
    delivery: DeliveryFuture,
}

/// The way into the transactor (each stream holds a clone).
#[derive(Clone, Debug)]
pub struct Transactions {
    queue: SyncSender<Work>,
    /// Whether the transactional producer is initialised.
    ready: watch::Receiver<bool>,
    stop: Arc<AtomicBool>,
}

/// Batches waiting for the transactor before streams wait.
const QUEUE: usize = 1024;

/// How long `submit` waits before offering a batch again to a full queue.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(2);

/// Event ids refused by Kafka on their own, remembered to reject their resend.
const MAX_REFUSED: usize = 100_000;

/// Streams remembered as failed, so that their later batches fail too.
const MAX_POISONED: usize = 100_000;

impl Transactions {
    /// Creates the marks topic if needed and starts the transactor thread.
    /// The producer is initialised on that thread (`ready` until then is
    /// false); a failure there is retried, not fatal.
    pub fn start(
        kafka: &KafkaConfig,
        settings: &ExactlyOnceSettings,
        master: &str,
        counters: Arc<Counters>,
    ) -> Result<Self, KafkaError> {
        let mut producer = kafka::producer_settings(kafka);
        producer
            .set("transactional.id", &settings.transactional_id)
            .set(
                "transaction.timeout.ms",
                settings.timeout.as_millis().to_string(),
            )
            // A transaction's records must settle within it.
            .set(
                "message.timeout.ms",
                settings.timeout.as_millis().to_string(),
            );
        let claimer = kafka::producer_settings(kafka);
        let mut committed = kafka::consumer_settings(kafka);
        committed
            .set("group.id", format!("smesh-marks-{master}"))
            .set("isolation.level", "read_committed");
        let mut uncommitted = committed.clone();
        uncommitted.set("isolation.level", "read_uncommitted");
        let transactor = Transactor {
            me: master.to_string(),
            settings: settings.clone(),
            data_topic: kafka.topic.clone(),
            producer: producer.create_with_context(QuietContext::default())?,
            producer_settings: producer,
            claimer: claimer.create_with_context(QuietContext::default())?,
            committed_reader: committed.create()?,
            claims_reader: uncommitted.create()?,
            admin: kafka::consumer_settings(kafka).create()?,
            marks: HashMap::new(),
            claims: HashMap::new(),
            owned: HashSet::new(),
            poisoned: Bounded::new(MAX_POISONED),
            refused: HashMap::new(),
            refused_order: VecDeque::new(),
            counters,
            open: None,
            nonce: rand::random(),
            failures: LogEvery::default(),
        };
        let (queue, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let (thread_ready, ready) = watch::channel(false);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("smesh-transactor".into())
            .spawn(move || transactor.run(rx, thread_ready, thread_stop))
            .map_err(|err| {
                KafkaError::ClientCreation(format!("cannot start the transactor: {err}"))
            })?;
        Ok(Self { queue, ready, stop })
    }

    /// Whether the transactional producer is ready to take batches.
    pub fn ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Follows [`Self::ready`] (for the health service).
    pub fn readiness(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }

    /// Hands a batch to the open transaction, waiting while the queue is full.
    pub async fn submit(&self, mut work: Work) -> Result<(), Status> {
        loop {
            match self.queue.try_send(work) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) => {
                    work = back;
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err(TrySendError::Disconnected(_)) => {
                    return Err(Status::unavailable("the master's transactions stopped"));
                }
            }
        }
    }

    /// Commits what is open and stops the thread once every stream has let
    /// go of its handle.
    pub fn stop(&self) {
        self.stop.store(true, Relaxed);
    }
}

/// A client's events as the marks know them: (client id, incarnation).
type Identity = (String, u64);

/// The key of an identity's mark.
fn mark_key(identity: &Identity) -> String {
    format!("{}/{:016x}", identity.0, identity.1)
}

/// The key of an identity's claims.
fn claim_key(identity: &Identity) -> String {
    format!("{}/{:016x}/claim", identity.0, identity.1)
}

/// What a key of the marks topic names: a mark or a claim, of whom.
fn parse_key(key: &str) -> Option<(Identity, bool)> {
    let (rest, claim) = match key.strip_suffix("/claim") {
        Some(rest) => (rest, true),
        None => (key, false),
    };
    let (client, incarnation) = rest.rsplit_once('/')?;
    if incarnation.len() != 16 || client.is_empty() {
        return None;
    }
    let incarnation = u64::from_str_radix(incarnation, 16).ok()?;
    Some(((client.to_string(), incarnation), claim))
}

/// The value of a mark record.
#[derive(Debug, Serialize, Deserialize)]
struct Mark {
    through: u64,
    #[serde(default)]
    master: String,
    #[serde(default)]
    written_unix_nanos: i64,
}

/// The value of a claim record.
#[derive(Debug, Serialize, Deserialize)]
struct Claim {
    master: String,
    #[serde(default)]
    nonce: u64,
}

/// A set that forgets its oldest members beyond a bound.
#[derive(Debug)]
struct Bounded {
    members: HashSet<ConnId>,
    order: VecDeque<ConnId>,
    max: usize,
}

impl Bounded {
    fn new(max: usize) -> Self {
        Self {
            members: HashSet::new(),
            order: VecDeque::new(),
            max,
        }
    }

    fn insert(&mut self, member: ConnId) {
        if self.members.insert(member) {
            self.order.push_back(member);
            if self.order.len() > self.max
                && let Some(oldest) = self.order.pop_front()
            {
                self.members.remove(&oldest);
            }
        }
    }

    fn contains(&self, member: &ConnId) -> bool {
        self.members.contains(member)
    }
}

/// The transaction being filled.
struct Open {
    started: Instant,
    /// Batches in it, answered when it ends.
    work: Vec<Work>,
    /// Per identity, the highest sequence written in it.
    through: HashMap<Identity, u64>,
    /// Records written, with what they were: for the refusal check, and
    /// for where they went.
    deliveries: Vec<Written>,
    events: usize,
    duplicates: u64,
    /// Set when a record could not be handed to the producer: the
    /// transaction can only be aborted.
    broken: Option<String>,
}

/// The thread's state.
struct Transactor {
    me: String,
    settings: ExactlyOnceSettings,
    data_topic: String,
    producer: FutureProducer<QuietContext>,
    /// To make the transactional producer again after a fatal error.
    producer_settings: rdkafka::ClientConfig,
    claimer: FutureProducer<QuietContext>,
    committed_reader: BaseConsumer,
    claims_reader: BaseConsumer,
    admin: AdminClient<rdkafka::client::DefaultClientContext>,
    /// Highest committed sequence per identity, from the marks topic and
    /// this master's own commits.
    marks: HashMap<Identity, u64>,
    /// Who claimed each identity last, as far as read (read_uncommitted).
    claims: HashMap<Identity, String>,
    /// Identities this master claimed and has caught up on.
    owned: HashSet<Identity>,
    poisoned: Bounded,
    /// Events Kafka refused on their own: their resend is rejected.
    refused: HashMap<String, String>,
    refused_order: VecDeque<String>,
    counters: Arc<Counters>,
    open: Option<Open>,
    /// Tells this master's claims apart from an earlier run's.
    nonce: u64,
    failures: LogEvery,
}

impl Transactor {
    fn run(mut self, rx: Receiver<Work>, ready: watch::Sender<bool>, stop: Arc<AtomicBool>) {
        if !self.prepare(&stop) {
            return;
        }
        ready.send_replace(true);
        info!(transactional_id = %self.settings.transactional_id, marks = %self.settings.marks_topic, "exactly-once delivery ready");
        loop {
            let wait = match &self.open {
                Some(open) => self
                    .settings
                    .interval
                    .saturating_sub(open.started.elapsed())
                    .max(Duration::from_millis(1)),
                None => Duration::from_millis(100),
            };
            match rx.recv_timeout(wait) {
                Ok(work) => {
                    self.take(work);
                    while self
                        .open
                        .as_ref()
                        .is_none_or(|o| o.events < self.settings.max_events)
                    {
                        match rx.try_recv() {
                            Ok(work) => self.take(work),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.finish();
                    break;
                }
            }
            let due = self.open.as_ref().is_some_and(|open| {
                open.started.elapsed() >= self.settings.interval
                    || open.events >= self.settings.max_events
                    || open.broken.is_some()
            });
            if due {
                self.finish();
            }
            if stop.load(Relaxed) && self.open.is_none() {
                // Batches still queued fail: their sidecars resend them.
                while let Ok(work) = rx.try_recv() {
                    let _ = work
                        .reply
                        .send(Err(Status::unavailable("the master is stopping")));
                }
                break;
            }
        }
        ready.send_replace(false);
    }

    /// Creates the marks topic if missing, initialises the transactional
    /// producer (fencing an earlier run with the same id) and subscribes
    /// the readers. Retries until it works or the master stops.
    fn prepare(&mut self, stop: &AtomicBool) -> bool {
        let mut pause = Duration::from_millis(200);
        loop {
            match self.try_prepare() {
                Ok(()) => return true,
                Err(reason) => {
                    if self.failures.tick().is_some() {
                        warn!(%reason, "exactly-once delivery not ready yet; retrying");
                    }
                }
            }
            if stop.load(Relaxed) {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    fn try_prepare(&mut self) -> Result<(), String> {
        let topic = NewTopic::new(&self.settings.marks_topic, 1, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact");
        let created = futures::executor::block_on(self.admin.create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(self.settings.timeout)),
        ))
        .map_err(|err| format!("cannot create the marks topic: {err}"))?;
        for result in created {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(format!("cannot create the marks topic {topic}: {code}"));
                }
            }
        }
        self.producer
            .init_transactions(self.settings.timeout)
            .map_err(|err| format!("cannot initialise transactions: {err}"))?;
        for reader in [&self.committed_reader, &self.claims_reader] {
            let mut partitions = TopicPartitionList::new();
            partitions
                .add_partition_offset(&self.settings.marks_topic, 0, Offset::Beginning)
                .map_err(|err| err.to_string())?;
            reader
                .assign(&partitions)
                .map_err(|err| format!("cannot read the marks topic: {err}"))?;
        }
        Ok(())
    }

    /// Puts a batch into the open transaction (opening one if needed).
    fn take(&mut self, mut work: Work) {
        if self.poisoned.contains(&work.stream) {
            let _ = work.reply.send(Err(Status::unavailable(
                "an earlier batch of this stream failed; resend from the oldest unacknowledged batch",
            )));
            return;
        }
        let unowned: Vec<Identity> = {
            let mut seen = HashSet::new();
            work.events
                .iter()
                .map(|e| (e.client_id.clone(), e.incarnation))
                .filter(|id| !self.owned.contains(id) && seen.insert(id.clone()))
                .collect()
        };
        if !unowned.is_empty()
            && let Err(reason) = self.claim(&unowned)
        {
            self.poisoned.insert(work.stream);
            let _ = work.reply.send(Err(Status::unavailable(reason)));
            return;
        }
        if self.open.is_none() {
            if let Err(err) = self.producer.begin_transaction() {
                self.poisoned.insert(work.stream);
                let _ = work.reply.send(Err(Status::unavailable(format!(
                    "cannot begin a Kafka transaction: {err}"
                ))));
                self.recover_producer(&err);
                return;
            }
            self.open = Some(Open {
                started: Instant::now(),
                work: Vec::new(),
                through: HashMap::new(),
                deliveries: Vec::new(),
                events: 0,
                duplicates: 0,
                broken: None,
            });
        }
        let Some(open) = self.open.as_mut() else {
            return;
        };
        for event in std::mem::take(&mut work.events) {
            if let Some(reason) = self.refused.get(&event.id) {
                work.rejected.push(Rejected {
                    event_id: event.id.clone(),
                    reason: reason.clone(),
                });
                Counters::add(&self.counters.failed, 1);
                continue;
            }
            let identity = (event.client_id.clone(), event.incarnation);
            let high = self
                .marks
                .get(&identity)
                .copied()
                .max(open.through.get(&identity).copied())
                .unwrap_or(0);
            if event.sequence <= high {
                open.duplicates += 1;
                continue;
            }
            if open.broken.is_some() {
                continue;
            }
            let mut record = kafka::event_record(&self.data_topic, &event);
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        open.deliveries.push(Written {
                            work: open.work.len(),
                            id: event.id.clone(),
                            client: event.client_id.clone(),
                            incarnation: event.incarnation,
                            sequence: event.sequence,
                            delivery,
                        });
                        open.through.insert(identity, event.sequence);
                        open.events += 1;
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        self.producer.poll(Duration::from_millis(10));
                    }
                    Err((err, _)) => {
                        open.broken = Some(format!("cannot hand an event to Kafka: {err}"));
                        break;
                    }
                }
            }
        }
        open.work.push(work);
    }

    /// Claims `identities` for this master and catches up on their marks:
    /// `Err` when another master claimed one after this one did, or the
    /// marks topic cannot be read in time.
    fn claim(&mut self, identities: &[Identity]) -> Result<(), String> {
        self.nonce = self.nonce.wrapping_add(1);
        let value = serde_json::to_string(&Claim {
            master: self.me.clone(),
            nonce: self.nonce,
        })
        .map_err(|err| err.to_string())?;
        let mut deliveries = Vec::with_capacity(identities.len());
        for identity in identities {
            let key = claim_key(identity);
            let record: FutureRecord<'_, str, str> = FutureRecord::to(&self.settings.marks_topic)
                .key(key.as_str())
                .payload(value.as_str());
            let delivery = self
                .claimer
                .send_result(record)
                .map_err(|(err, _)| format!("cannot write a claim to the marks topic: {err}"))?;
            deliveries.push(delivery);
        }
        self.claimer
            .flush(self.settings.timeout)
            .map_err(|err| format!("the marks topic did not take a claim: {err}"))?;
        for delivery in deliveries {
            match delivery.now_or_never() {
                Some(Ok(Ok(_))) => {}
                Some(Ok(Err((err, _)))) => {
                    return Err(format!("the marks topic refused a claim: {err}"));
                }
                _ => return Err("a claim's delivery report is missing".to_string()),
            }
        }
        // The committed view reaches the claim only once every transaction
        // before it has ended: then every mark before it is known.
        let deadline = Instant::now() + self.settings.timeout * 2 + Duration::from_secs(5);
        self.read_until_own_claim(true, deadline)?;
        self.read_until_own_claim(false, deadline)?;
        for identity in identities {
            match self.claims.get(identity) {
                Some(master) if *master == self.me => {
                    self.owned.insert(identity.clone());
                }
                Some(other) => {
                    return Err(format!(
                        "master {other} claimed client {} after this master did; resend",
                        identity.0
                    ));
                }
                None => return Err("the marks topic lost a claim".to_string()),
            }
        }
        Ok(())
    }

    /// Reads the marks topic (committed or uncommitted view) until this
    /// master's latest claim comes by, or `deadline`.
    fn read_until_own_claim(&mut self, committed: bool, deadline: Instant) -> Result<(), String> {
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(format!(
                    "the marks topic {} did not show this master's claim within {}",
                    self.settings.marks_topic,
                    smesh_core::cli::duration_text(self.settings.timeout * 2)
                ));
            }
            let reader = if committed {
                &self.committed_reader
            } else {
                &self.claims_reader
            };
            let Some(message) = reader.poll(remaining.min(Duration::from_millis(100))) else {
                continue;
            };
            let message = message.map_err(|err| format!("cannot read the marks topic: {err}"))?;
            let key = message.key().and_then(|k| std::str::from_utf8(k).ok());
            let Some((identity, is_claim)) = key.and_then(parse_key) else {
                continue;
            };
            let payload = message.payload().unwrap_or_default();
            if is_claim {
                let Ok(claim) = serde_json::from_slice::<Claim>(payload) else {
                    continue;
                };
                let mine = claim.master == self.me && claim.nonce == self.nonce;
                if !committed {
                    if claim.master != self.me {
                        self.owned.remove(&identity);
                    }
                    self.claims.insert(identity, claim.master);
                }
                if mine {
                    return Ok(());
                }
            } else if committed && let Ok(mark) = serde_json::from_slice::<Mark>(payload) {
                let known = self.marks.entry(identity).or_insert(0);
                *known = (*known).max(mark.through);
            }
        }
    }

    /// Ends the open transaction: writes its marks, checks no other master
    /// claimed its identities, commits, and answers its batches.
    fn finish(&mut self) {
        let Some(mut open) = self.open.take() else {
            return;
        };
        Counters::add(&self.counters.duplicates, open.duplicates);
        let outcome = self.commit(&mut open);
        match outcome {
            Ok(()) => {
                for (identity, through) in std::mem::take(&mut open.through) {
                    let known = self.marks.entry(identity).or_insert(0);
                    *known = (*known).max(through);
                }
                Counters::add(&self.counters.published, open.events as u64);
                Counters::add(&self.counters.transactions_committed, 1);
                let placed = self.placements(&mut open);
                for (work, placed) in open.work.into_iter().zip(placed) {
                    let _ = work.reply.send(Ok(Settled {
                        rejected: work.rejected,
                        placed,
                    }));
                }
            }
            Err(reason) => {
                Counters::add(&self.counters.transactions_aborted, 1);
                if self.failures.tick().is_some() {
                    warn!(%reason, batches = open.work.len(), events = open.events, "Kafka transaction aborted; its batches will be resent");
                }
                self.remember_refusals(&mut open);
                for work in open.work {
                    self.poisoned.insert(work.stream);
                    let _ = work.reply.send(Err(Status::unavailable(format!(
                        "Kafka transaction aborted ({reason}); resend"
                    ))));
                }
            }
        }
    }

    fn commit(&mut self, open: &mut Open) -> Result<(), String> {
        if let Some(reason) = open.broken.clone() {
            self.abort(&reason);
            return Err(reason);
        }
        if open.through.is_empty() {
            // Nothing written (every event a duplicate): nothing to commit,
            // but the transaction was begun.
            return self
                .producer
                .abort_transaction(self.settings.timeout)
                .map_err(|err| {
                    self.recover_producer(&err);
                    format!("cannot end an empty transaction: {err}")
                });
        }
        // Marks, in the same transaction.
        let now = now_unix_nanos();
        let mut marks = Vec::with_capacity(open.through.len());
        for (identity, through) in &open.through {
            let value = serde_json::to_string(&Mark {
                through: *through,
                master: self.me.clone(),
                written_unix_nanos: now,
            })
            .map_err(|err| err.to_string())?;
            let key = mark_key(identity);
            let record: FutureRecord<'_, str, str> = FutureRecord::to(&self.settings.marks_topic)
                .key(key.as_str())
                .payload(value.as_str());
            match self.producer.send_result(record) {
                Ok(delivery) => marks.push(delivery),
                Err((err, _)) => {
                    let reason = format!("cannot write a mark: {err}");
                    self.abort(&reason);
                    return Err(reason);
                }
            }
        }
        // Only the marks are waited for here (the commit flushes the
        // rest). Not with the producer's `flush`: rust-rdkafka's waits in
        // steps of 100 ms while its own thread serves the reports.
        let started = Instant::now();
        let deadline = started + self.settings.timeout;
        // Has another master claimed one of these identities meanwhile?
        let mut last_mark = None;
        for delivery in marks {
            match report_by(delivery, deadline) {
                Some(Ok(Ok(delivery))) => last_mark = last_mark.max(Some(delivery.offset)),
                Some(Ok(Err((err, _)))) => {
                    let reason = format!("the marks topic refused a mark: {err}");
                    self.abort(&reason);
                    return Err(reason);
                }
                _ => {
                    let reason = "a mark's delivery report is missing".to_string();
                    self.abort(&reason);
                    return Err(reason);
                }
            }
        }
        let marks_written = started.elapsed();
        if let Some(offset) = last_mark
            && let Err(reason) = self.read_claims_through(offset)
        {
            self.abort(&reason);
            return Err(reason);
        }
        let taken: Vec<&Identity> = open
            .through
            .keys()
            .filter(|id| self.claims.get(*id).is_some_and(|m| *m != self.me))
            .collect();
        if let Some(identity) = taken.first() {
            let reason = format!(
                "client {} was claimed by another master before this transaction's commit",
                identity.0
            );
            for identity in open.through.keys() {
                if self.claims.get(identity).is_some_and(|m| *m != self.me) {
                    self.owned.remove(identity);
                }
            }
            self.abort(&reason);
            return Err(reason);
        }
        let checked = started.elapsed();
        // A commit whose outcome is unknown (timed out, the broker stalled)
        // is asked again until Kafka says how it ended: nothing else can
        // happen on this producer in between.
        loop {
            match self.producer.commit_transaction(self.settings.timeout) {
                Ok(()) => {
                    debug!(
                        events = open.events,
                        open_ms = open.started.elapsed().as_secs_f64() * 1e3,
                        marks_ms = marks_written.as_secs_f64() * 1e3,
                        claims_ms = (checked - marks_written).as_secs_f64() * 1e3,
                        commit_ms = (started.elapsed() - checked).as_secs_f64() * 1e3,
                        "transaction committed"
                    );
                    return Ok(());
                }
                Err(err) if failure(&err) == Failure::Retriable => {
                    if self.failures.tick().is_some() {
                        warn!(%err, "Kafka has not confirmed the transaction's commit yet; asking again");
                    }
                }
                Err(err) => {
                    let reason = format!("commit failed: {err}");
                    self.abort(&reason);
                    return Err(reason);
                }
            }
        }
    }

    /// Reads the uncommitted view of the marks topic past `offset`.
    fn read_claims_through(&mut self, offset: i64) -> Result<(), String> {
        let deadline = Instant::now() + self.settings.timeout;
        loop {
            let position = self
                .claims_reader
                .position()
                .ok()
                .and_then(|list| {
                    list.find_partition(&self.settings.marks_topic, 0)
                        .and_then(|p| match p.offset() {
                            Offset::Offset(at) => Some(at),
                            _ => None,
                        })
                })
                .unwrap_or(-1);
            if position > offset {
                return Ok(());
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err("the marks topic could not be read back before the commit".into());
            }
            let Some(message) = self
                .claims_reader
                .poll(remaining.min(Duration::from_millis(100)))
            else {
                continue;
            };
            let message = message.map_err(|err| format!("cannot read the marks topic: {err}"))?;
            let key = message.key().and_then(|k| std::str::from_utf8(k).ok());
            if let Some((identity, true)) = key.and_then(parse_key)
                && let Ok(claim) =
                    serde_json::from_slice::<Claim>(message.payload().unwrap_or_default())
            {
                if claim.master != self.me {
                    self.owned.remove(&identity);
                }
                self.claims.insert(identity, claim.master);
            }
        }
    }

    /// Aborts the open transaction, asking again while Kafka cannot say;
    /// a producer that cannot abort at all is replaced.
    fn abort(&mut self, reason: &str) {
        loop {
            match self.producer.abort_transaction(self.settings.timeout) {
                Ok(()) => return,
                Err(err) if failure(&err) == Failure::Retriable => {
                    if self.failures.tick().is_some() {
                        warn!(%reason, %err, "Kafka has not confirmed the transaction's abort yet; asking again");
                    }
                }
                Err(err) => {
                    warn!(%reason, %err, "cannot abort the Kafka transaction");
                    self.recover_producer(&err);
                    return;
                }
            }
        }
    }

    /// After a fatal error (fenced by a newer run with the same
    /// transactional id, or an unrecoverable state), initialises again.
    fn recover_producer(&mut self, err: &KafkaError) {
        if failure(err) != Failure::Fatal && self.producer.client().fatal_error().is_none() {
            return;
        }
        // Fenced: another producer took this transactional id (this master
        // started twice, or two masters share an id); or librdkafka gave up.
        warn!(%err, transactional_id = %self.settings.transactional_id, "the transactional producer failed for good; making a new one (if another master uses this transactional id, the two fence each other: give each its own --transactional-id)");
        std::thread::sleep(Duration::from_millis(500));
        let fresh = self
            .producer_settings
            .create_with_context(QuietContext::default())
            .and_then(|producer: FutureProducer<QuietContext>| {
                producer.init_transactions(self.settings.timeout)?;
                Ok(producer)
            });
        match fresh {
            Ok(producer) => {
                self.producer = producer;
                Counters::add(&self.counters.producer_replacements, 1);
            }
            Err(err) => {
                warn!(%err, "cannot initialise transactions again; batches fail until it works");
            }
        }
    }

    /// Where each batch of a committed transaction went, from Kafka's
    /// delivery reports (all in by now: the commit flushed them).
    fn placements(&self, open: &mut Open) -> Vec<Vec<Placement>> {
        let committed = now_unix_nanos();
        let mut per_work: Vec<Placements<'_>> = (0..open.work.len())
            .map(|_| Placements::new(&self.data_topic, &self.me))
            .collect();
        // The commit waited for every report to be served; a moment's
        // grace for the thread that resolves them.
        let deadline = Instant::now() + Duration::from_secs(1);
        for written in std::mem::take(&mut open.deliveries) {
            if let Some(Ok(Ok(delivery))) = report_by(written.delivery, deadline)
                && let Some(placements) = per_work.get_mut(written.work)
            {
                placements.push(
                    &written.client,
                    written.incarnation,
                    written.sequence,
                    delivery.partition,
                    delivery.offset,
                );
            }
        }
        per_work
            .into_iter()
            .map(|mut placements| {
                placements.written_at(committed);
                placements.into_vec()
            })
            .collect()
    }

    /// Events Kafka refused on their own in an aborted transaction: their
    /// resends are rejected, each alone, instead of sinking the next one.
    fn remember_refusals(&mut self, open: &mut Open) {
        for Written { id, delivery, .. } in std::mem::take(&mut open.deliveries) {
            if let Some(Ok(Err((err, _)))) = delivery.now_or_never()
                && let PublishError::Permanent(reason) = kafka::classify(&err)
            {
                if self.refused.insert(id.clone(), reason).is_none() {
                    self.refused_order.push_back(id);
                }
                if self.refused_order.len() > MAX_REFUSED
                    && let Some(oldest) = self.refused_order.pop_front()
                {
                    self.refused.remove(&oldest);
                }
            }
        }
    }
}

/// Waits (blocking, in steps of a millisecond) for a delivery report until
/// `deadline`; `None` if it is not in by then.
fn report_by(
    mut delivery: DeliveryFuture,
    deadline: Instant,
) -> Option<
    Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
> {
    loop {
        if let Some(report) = (&mut delivery).now_or_never() {
            return Some(report);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What a failed transactional call asks of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// Call it again: the outcome is not known yet (a timeout).
    Retriable,
    /// Abort the transaction, then go on.
    Abortable,
    /// The producer is done for: make a new one.
    Fatal,
}

fn failure(err: &KafkaError) -> Failure {
    match err {
        KafkaError::Transaction(e) if e.is_fatal() => Failure::Fatal,
        KafkaError::Transaction(e) if e.is_retriable() => Failure::Retriable,
        _ => Failure::Abortable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_marks_and_claims_of_one_identity() {
        let id: Identity = ("edge/7".into(), 0xab);
        assert_eq!(mark_key(&id), "edge/7/00000000000000ab");
        assert_eq!(parse_key(&mark_key(&id)), Some((id.clone(), false)));
        assert_eq!(parse_key(&claim_key(&id)), Some((id, true)));
        for foreign in [
            "",
            "c1",
            "c1/ab",
            "/00000000000000ab",
            "c1/zz000000000000ab",
        ] {
            assert_eq!(parse_key(foreign), None, "{foreign}");
        }
    }
}
