//! The master's Kafka side: an idempotent producer and a readiness probe.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use smesh_proto::admin::KafkaStatus;
use smesh_proto::mesh::Event;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::cloudevents;
use crate::counters::Counters;

/// What the master needs to know to publish. Its `Debug` hides the values
/// of secret settings ([`is_secret_setting`]).
#[derive(Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Where events are published.
    pub topic: String,
    /// `compression.type`: none, gzip, snappy, lz4 or zstd.
    pub compression: String,
    /// How long a batch may wait for Kafka's acknowledgement, while Kafka
    /// answers the readiness probe, before the master ends its stream so the
    /// sidecar resends it (here or to another master). librdkafka itself
    /// never gives up on a record.
    pub delivery_timeout: Duration,
    /// Kafka counts as unavailable after this long without a successful probe.
    pub unavailable_after: Duration,
    /// Extra librdkafka properties, applied last (the operator has the last word).
    pub overrides: Vec<(String, String)>,
    /// `client.id`, so brokers' logs name the master.
    pub client_id: String,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let overrides: Vec<(&str, &str)> = self
            .overrides
            .iter()
            .map(|(key, value)| {
                let shown = if is_secret_setting(key) {
                    "<hidden>"
                } else {
                    value.as_str()
                };
                (key.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("compression", &self.compression)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("unavailable_after", &self.unavailable_after)
            .field("overrides", &overrides)
            .field("client_id", &self.client_id)
            .finish()
    }
}

/// librdkafka settings whose values are secrets (`sasl.password`,
/// `ssl.key.password`, `ssl.key.pem`, OAuth client secrets …): never shown.
pub fn is_secret_setting(key: &str) -> bool {
    key.contains("password")
        || key.contains("secret")
        || key == "ssl.key.pem"
        || key == "sasl.oauthbearer.config"
}

/// Why an event could not be handed to the producer.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The event can never be published (too large, invalid): reject it.
    #[error("Kafka refused the event: {0}")]
    Permanent(String),
    /// The producer's queue is full: try again shortly.
    #[error("producer queue full")]
    QueueFull,
    /// Anything else: the stream fails and the sidecar resends.
    #[error("Kafka producer error: {0}")]
    Transient(String),
}

/// Errors that mean "this record can never be written", as opposed to
/// "Kafka is not reachable right now".
pub fn is_permanent(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidTimestamp
            | RDKafkaErrorCode::BadMessage
    )
}

/// Classifies a failed delivery or enqueue.
pub fn classify(err: &KafkaError) -> PublishError {
    match err.rdkafka_error_code() {
        Some(RDKafkaErrorCode::QueueFull) => PublishError::QueueFull,
        Some(code) if is_permanent(code) => PublishError::Permanent(err.to_string()),
        _ => PublishError::Transient(err.to_string()),
    }
}

/// How often the same librdkafka error may be logged as a warning.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

/// Routes librdkafka's own logging into `tracing` without flooding it.
///
/// While Kafka is down librdkafka reports every failed connection attempt,
/// several times a second. The readiness probe already logs the state change
/// once ("Kafka unreachable"), so transport noise goes to debug, and any
/// other error (a failed TLS handshake, a refused SASL password) is logged
/// as a warning at most once a minute per message. librdkafka ends each
/// message with how long the attempt took (`(after 138ms in state …)`),
/// which is left out when messages are compared ([`same_failure`]).
#[derive(Debug, Default)]
pub struct QuietContext {
    last_logged: Mutex<HashMap<String, Instant>>,
    /// Where librdkafka's statistics go, and which producer this is.
    stats: Option<(Arc<KafkaStats>, ProducerRole)>,
}

/// `statistics.interval.ms` unless `--kafka-config` says otherwise: how
/// often librdkafka hands over its statistics (for `/metrics`).
pub const STATISTICS_INTERVAL_MS: &str = "5000";

/// Most brokers whose round trip `/metrics` reports (a label each).
pub const MAX_BROKERS_REPORTED: usize = 64;

/// Which of a generation's two producers a context belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProducerRole {
    /// The pipelined producer (most traffic).
    Pipelined = 0,
    /// The one-at-a-time producer.
    Alone = 1,
}

/// What librdkafka last said about itself, per producer: written by its
/// statistics callback (on librdkafka's thread, every
/// [`STATISTICS_INTERVAL_MS`]), read by `/metrics`. Never on the data path.
#[derive(Debug, Default)]
pub struct KafkaStats {
    latest: Mutex<[Option<ProducerStats>; 2]>,
}

/// One producer's statistics, as `/metrics` shows them.
#[derive(Clone, Debug, Default)]
pub struct ProducerStats {
    /// Messages in the producer's queue (`msg_cnt`).
    pub queued_messages: u64,
    /// Their bytes (`msg_size`).
    pub queued_bytes: u64,
    /// (broker name, average round trip in seconds) of brokers learned from
    /// the cluster, at most [`MAX_BROKERS_REPORTED`].
    pub broker_rtt_seconds: Vec<(String, f64)>,
}

impl KafkaStats {
    fn record(&self, role: ProducerRole, statistics: &rdkafka::Statistics) {
        let mut brokers: Vec<(String, f64)> = statistics
            .brokers
            .values()
            .filter(|b| b.nodeid >= 0)
            .filter_map(|b| {
                let rtt = b.rtt.as_ref()?;
                Some((b.name.clone(), rtt.avg as f64 / 1e6))
            })
            .collect();
        brokers.sort_by(|a, b| a.0.cmp(&b.0));
        brokers.truncate(MAX_BROKERS_REPORTED);
        let stats = ProducerStats {
            queued_messages: statistics.msg_cnt,
            queued_bytes: statistics.msg_size,
            broker_rtt_seconds: brokers,
        };
        let mut latest = match self.latest.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        latest[role as usize] = Some(stats);
    }

    /// The last statistics of the pipelined and the one-at-a-time producer.
    pub fn latest(&self) -> [Option<ProducerStats>; 2] {
        match self.latest.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl QuietContext {
    fn first_in_a_while(&self, message: &str) -> bool {
        let message = same_failure(message);
        let mut seen = match self.last_logged.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        if seen.len() > 1000 {
            seen.retain(|_, at| now.duration_since(*at) < ERROR_LOG_EVERY);
        }
        match seen.get(message) {
            Some(at) if now.duration_since(*at) < ERROR_LOG_EVERY => false,
            _ => {
                seen.insert(message.to_string(), now);
                true
            }
        }
    }
}

/// A librdkafka error message without its trailing `(after …)`, which
/// differs from one attempt of the same failure to the next.
fn same_failure(message: &str) -> &str {
    match message.rfind(" (after ") {
        Some(at) => &message[..at],
        None => message,
    }
}

impl ClientContext for QuietContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Some((stats, role)) = &self.stats {
            stats.record(*role, &statistics);
        }
    }

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                if self.first_in_a_while(message) {
                    warn!(target: "librdkafka", facility, "{message}");
                }
            }
            _ => debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let transport = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::AllBrokersDown
                    | RDKafkaErrorCode::BrokerTransportFailure
                    | RDKafkaErrorCode::Resolve
                    | RDKafkaErrorCode::MessageTimedOut
            )
        );
        if transport || !self.first_in_a_while(reason) {
            debug!(target: "librdkafka", %error, reason, "librdkafka error");
        } else {
            warn!(target: "librdkafka", %error, reason, "Kafka client error");
        }
    }
}

/// The librdkafka producer type the master uses.
type SinkProducer = FutureProducer<QuietContext>;

/// The producers every stream of this master shares.
///
/// Two producers, both idempotent, neither ever expiring a record on its own
/// (`message.timeout.ms` = 0): librdkafka expiring the oldest queued record
/// of a client while a younger one is still delivered is how a stall used
/// to reorder a client's events.
///
/// - The pipelined producer carries the traffic. It runs with
///   `enable.gapless.guarantee`: when Kafka refuses a produce batch for good,
///   nothing produced after it is written either; the producer fails for
///   good instead, and is replaced (see [`watch_readiness`]).
/// - The one-at-a-time producer (`batch.num.messages` = 1) carries the
///   events of a refused produce batch again, each alone, so only an event
///   Kafka refuses on its own is ever rejected.
///
/// Both are replaced together, as a new [`Producers`] generation.
#[derive(Clone)]
pub struct KafkaSink {
    /// The producers in use; replaced when one has failed for good.
    current: Arc<RwLock<Arc<Producers>>>,
    /// The pipelined producer's settings, to build replacements.
    pipelined: Arc<ClientConfig>,
    /// The one-at-a-time producer's settings.
    alone: Arc<ClientConfig>,
    /// Wakes the readiness task when a producer may have failed for good.
    failed: Arc<Notify>,
    topic: Arc<str>,
    /// Most records librdkafka queues (`queue.buffering.max.messages`).
    max_queued: usize,
    /// librdkafka's statistics, for `/metrics`; every generation writes here.
    stats: Arc<KafkaStats>,
}

/// One generation of the master's two producers. A stream takes it once
/// per batch: every event of a batch goes through the same generation.
pub struct Producers {
    /// Counts replacements; a stream that used an older generation ends.
    generation: u64,
    pipelined: SinkProducer,
    alone: SinkProducer,
    topic: Arc<str>,
}

impl std::fmt::Debug for Producers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producers")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.topic)
            .finish()
    }
}

/// The settings every producer of the master starts from: idempotent,
/// `acks=all`, records never expire, the operator's `--kafka-config` last.
pub fn producer_settings(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("client.id", &config.client_id)
        // Exactly-once per partition across retries, and in order.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", &config.compression)
        .set("linger.ms", "5")
        // Never expire a record: a stall holds the queue (the mesh
        // windows push back) instead of punching holes into it.
        .set("message.timeout.ms", "0")
        // Flow control lives in the mesh windows; this only has to hold them.
        .set(
            "queue.buffering.max.messages",
            DEFAULT_MAX_QUEUED.to_string(),
        )
        .set("queue.buffering.max.kbytes", "1048576")
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
    for (key, value) in &config.overrides {
        client.set(key, value);
    }
    client
}

/// Settings for a consumer of the master's (the marks topic in
/// exactly-once mode): the brokers, and of the operator's settings those
/// that say how to reach and authenticate to them.
pub fn consumer_settings(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("client.id", &config.client_id)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let connection = [
        "security.",
        "ssl.",
        "sasl.",
        "socket.",
        "broker.",
        "client.dns",
        "reconnect.",
        "enable.ssl",
    ];
    for (key, value) in &config.overrides {
        if connection.iter().any(|prefix| key.starts_with(prefix)) {
            client.set(key, value);
        }
    }
    client
}

/// librdkafka's queue when the operator does not say otherwise.
const DEFAULT_MAX_QUEUED: usize = 1_000_000;

impl KafkaSink {
    /// Creates the producers (no network I/O yet). Fails on invalid settings.
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaError> {
        let mut client = producer_settings(config);
        let max_queued = config
            .overrides
            .iter()
            .rev()
            .find(|(key, _)| key == "queue.buffering.max.messages")
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(DEFAULT_MAX_QUEUED);
        let mut alone = client.clone();
        alone.set("linger.ms", "0").set("batch.num.messages", "1");
        client.set("enable.gapless.guarantee", "true");
        let topic: Arc<str> = Arc::from(config.topic.as_str());
        let stats = Arc::new(KafkaStats::default());
        let producers = Producers::new(0, &client, &alone, &topic, &stats)?;
        Ok(Self {
            stats,
            current: Arc::new(RwLock::new(Arc::new(producers))),
            pipelined: Arc::new(client),
            alone: Arc::new(alone),
            failed: Arc::new(Notify::new()),
            topic,
            max_queued,
        })
    }

    /// The producers in use now.
    pub fn producers(&self) -> Arc<Producers> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Why a producer in use failed for good, if one has.
    pub fn fatal_error(&self) -> Option<String> {
        let producers = self.producers();
        [&producers.pipelined, &producers.alone]
            .into_iter()
            .find_map(|p| p.client().fatal_error())
            .map(|(code, reason)| format!("{code}: {reason}"))
    }

    /// Puts a new generation of producers in place of one that failed for
    /// good. Returns the old one, to be dropped off the runtime's threads
    /// (dropping purges and waits for librdkafka's threads).
    pub fn replace(&self) -> Result<Arc<Producers>, KafkaError> {
        let mut current = match self.current.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let fresh = Producers::new(
            current.generation + 1,
            &self.pipelined,
            &self.alone,
            &self.topic,
            &self.stats,
        )?;
        Ok(std::mem::replace(&mut *current, Arc::new(fresh)))
    }

    /// librdkafka's statistics of the producers in use.
    pub fn stats(&self) -> Arc<KafkaStats> {
        Arc::clone(&self.stats)
    }

    /// Resolves when a stream saw a producer fail, maybe for good.
    pub async fn failed(&self) {
        self.failed.notified().await;
    }

    /// Classifies an error of a producer, and wakes the readiness task if
    /// it may mean the producer is gone for good (a fatal error, or a
    /// refused produce batch, which the gap-less guarantee turns into one);
    /// that task looks and replaces it.
    pub fn classify(&self, err: &KafkaError) -> PublishError {
        let classified = classify(err);
        let fatal = matches!(
            err.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Fatal | RDKafkaErrorCode::GaplessGuarantee)
        );
        if fatal || matches!(classified, PublishError::Permanent(_)) {
            self.failed.notify_one();
        }
        classified
    }

    /// Whether `records` more fit librdkafka's queue now (a batch larger
    /// than the whole queue fits an empty one). Checked before a batch is
    /// taken, so a full queue holds batches back instead of failing them.
    pub fn has_room(&self, records: usize) -> bool {
        let queued = usize::try_from(self.producers().pipelined.in_flight_count()).unwrap_or(0);
        queued == 0 || queued + records <= self.max_queued
    }

    /// The topic events go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Hands one event to the pipelined producer in use (for callers that
    /// publish single events; streams take [`Self::producers`] per batch).
    pub fn publish(&self, event: &Event) -> Result<DeliveryFuture, PublishError> {
        self.producers()
            .publish(event)
            .map_err(|err| self.classify(&err))
    }

    /// Waits (blocking) for everything queued to be delivered or to time out.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producers = self.producers();
        let alone = producers.alone.flush(timeout);
        producers.pipelined.flush(timeout).and(alone)
    }

    /// Asks the cluster for the topic's metadata (blocking, bounded by `timeout`).
    /// Returns the number of brokers and partitions on success.
    pub fn probe(&self, timeout: Duration) -> Result<(usize, usize), KafkaError> {
        let metadata = self
            .producers()
            .pipelined
            .client()
            .fetch_metadata(Some(&self.topic), timeout)?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == &*self.topic)
            .map_or(0, |t| t.partitions().len());
        Ok((metadata.brokers().len(), partitions))
    }
}

impl Producers {
    fn new(
        generation: u64,
        pipelined: &ClientConfig,
        alone: &ClientConfig,
        topic: &Arc<str>,
        stats: &Arc<KafkaStats>,
    ) -> Result<Self, KafkaError> {
        let context = |role| QuietContext {
            stats: Some((Arc::clone(stats), role)),
            ..QuietContext::default()
        };
        Ok(Self {
            generation,
            pipelined: pipelined.create_with_context(context(ProducerRole::Pipelined))?,
            alone: alone.create_with_context(context(ProducerRole::Alone))?,
            topic: Arc::clone(topic),
        })
    }

    /// Which generation these are.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Hands one event to the pipelined producer; the future resolves when
    /// Kafka acknowledged (or finally refused) it. Errors are raw: classify
    /// them with [`KafkaSink::classify`].
    pub fn publish(&self, event: &Event) -> Result<DeliveryFuture, KafkaError> {
        self.pipelined
            .send_result(self.record(event))
            .map_err(|(err, _record)| err)
    }

    /// Hands one event to the one-at-a-time producer: a refusal of its
    /// request is a refusal of this event alone.
    pub fn publish_alone(&self, event: &Event) -> Result<DeliveryFuture, KafkaError> {
        self.alone
            .send_result(self.record(event))
            .map_err(|(err, _record)| err)
    }

    /// The Kafka record of `event`: key, CloudEvents headers, data.
    fn record<'a>(&'a self, event: &'a Event) -> FutureRecord<'a, str, [u8]> {
        event_record(&self.topic, event)
    }
}

/// The Kafka record of `event` for `topic`: key, CloudEvents headers, data.
pub fn event_record<'a>(topic: &'a str, event: &'a Event) -> FutureRecord<'a, str, [u8]> {
    let mut headers = Some(OwnedHeaders::new_with_capacity(10 + event.extensions.len()));
    cloudevents::for_each_header(event, |key, value| {
        headers = headers.take().map(|h| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        });
    });
    let headers = headers.unwrap_or_default();
    // No record timestamp of the event's: a peer's clock is not to be
    // trusted (Kafka refuses records dated too far ahead, and with them
    // whatever shares their batch). The record carries the time it was
    // produced; the event's own time travels in `ce_time`.
    FutureRecord::to(topic)
        .key(cloudevents::key(event))
        .payload(event.data.as_ref())
        .headers(headers)
}

/// Probes Kafka once a second and publishes the outcome on `status`.
///
/// Ready after the first successful probe; not ready again once probes have
/// failed for `unavailable_after`. State changes are logged, not every probe.
/// A producer that failed for good makes the master not ready at once and
/// is replaced by a new one; streams whose batches it held have failed, so
/// their sidecars resend them.
pub async fn watch_readiness(
    sink: KafkaSink,
    config: KafkaConfig,
    status: watch::Sender<KafkaStatus>,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) {
    let probe_timeout = Duration::from_secs(2);
    let mut last_ok: Option<Instant> = None;
    let mut logged_failure = false;
    loop {
        let started = Instant::now();
        if let Some(reason) = sink.fatal_error() {
            error!(%reason, "the Kafka producer failed for good; NOT_SERVING until a new one is up");
            status.send_modify(|current| {
                current.ready = false;
                current.detail =
                    format!("the Kafka producer failed for good ({reason}); starting a new one");
                current.since_unix_nanos = smesh_core::time::now_unix_nanos();
            });
            match sink.replace() {
                Ok(old) => {
                    let _ = tokio::task::spawn_blocking(move || drop(old)).await;
                    Counters::add(&counters.producer_replacements, 1);
                    info!("a new Kafka producer is in place");
                }
                Err(err) => error!(%err, "cannot create a new Kafka producer"),
            }
            last_ok = None;
        }
        let probe_sink = sink.clone();
        let outcome = tokio::task::spawn_blocking(move || probe_sink.probe(probe_timeout)).await;
        let now = Instant::now();
        let (ready, detail) = match outcome {
            Ok(Ok((brokers, partitions))) => {
                last_ok = Some(now);
                logged_failure = false;
                (
                    true,
                    format!(
                        "{brokers} broker(s), topic {} has {partitions} partition(s)",
                        config.topic
                    ),
                )
            }
            Ok(Err(err)) => {
                let still_ready = status.borrow().ready
                    && last_ok.is_some_and(|t| now - t < config.unavailable_after);
                let detail = format!("cannot reach Kafka at {}: {err}", config.brokers);
                if !still_ready && !logged_failure {
                    warn!(brokers = %config.brokers, %err, "Kafka unreachable; reporting NOT_SERVING until it answers");
                    logged_failure = true;
                }
                (still_ready, detail)
            }
            Err(err) => (false, format!("Kafka probe task failed: {err}")),
        };
        let changed = status.borrow().ready != ready;
        if changed && ready {
            info!(brokers = %config.brokers, %detail, "Kafka reachable; SERVING");
        }
        status.send_if_modified(|current| {
            let since = if changed {
                smesh_core::time::now_unix_nanos()
            } else {
                current.since_unix_nanos
            };
            let next = KafkaStatus {
                ready,
                brokers: config.brokers.clone(),
                topic: config.topic.clone(),
                detail,
                since_unix_nanos: since,
            };
            let modified = *current != next;
            *current = next;
            modified
        });
        let pause = Duration::from_secs(1).saturating_sub(started.elapsed());
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
            () = sink.failed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_error_is_logged_once_a_minute_others_at_once() {
        let context = QuietContext::default();
        assert!(context.first_in_a_while("SASL authentication failed"));
        assert!(!context.first_in_a_while("SASL authentication failed"));
        assert!(context.first_in_a_while("topic authorization failed"));
        // The same failure, another attempt: only the timing differs.
        let attempt = |ms: u32| {
            format!(
                "ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: certificate verify failed (after {ms}ms in state SSL_HANDSHAKE)"
            )
        };
        assert!(context.first_in_a_while(&attempt(138)));
        assert!(!context.first_in_a_while(&attempt(4)));
    }

    #[test]
    fn permanent_errors_are_told_apart_from_outages() {
        assert!(is_permanent(RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(!is_permanent(RDKafkaErrorCode::AllBrokersDown));
        assert!(matches!(
            classify(&KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)),
            PublishError::QueueFull
        ));
        assert!(matches!(
            classify(&KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut
            )),
            PublishError::Transient(_)
        ));
    }
}
