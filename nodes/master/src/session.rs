//! What a master does with the streams its sidecars open: events into
//! Kafka, settlements once Kafka has them.
//!
//! The stream protocol itself lives in [`smesh_core::session`]; here are the
//! master's parts of it. Each batch is handed to the producer as it
//! arrives; its settlement waits for Kafka's delivery report of every event
//! in it, so the cumulative ack for batch `n` goes out only when batches
//! `1..=n` are all settled. Events refused for good (too large, invalid)
//! come back as rejected. Kafka's answers are awaited on a task per batch,
//! which records them in the resend memory even when the stream ended
//! first. A delivery that fails for a transient reason
//! (Kafka unreachable past the delivery timeout) ends the stream: the
//! sidecar then resends everything unacknowledged, here or to another
//! master.

use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;

use smesh_core::event;
use smesh_core::ratelimit::LogEvery;
use smesh_core::session::{
    Caller, Handler, SessionCommand, SessionView, Settled, Settlement, Tier,
};
use smesh_core::time::now_unix_nanos;
use smesh_core::tls::{self, PeerIdentity};
use smesh_proto::admin::{HeartbeatSample, KafkaStatus, Tier as PeerTier};
use smesh_proto::mesh::{Batch, Event, Rejected, Report};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, oneshot, watch};
use tonic::Status;
use tracing::warn;

use smesh_core::metrics::Held;

use crate::counters::Counters;
use crate::dedupe::Delivered;
use crate::kafka::{KafkaSink, Producers, PublishError};
use crate::placement::Placements;
use crate::registry::{ConnId, RegistryEvent};
use crate::suspects::Suspects;
use crate::transactions::{Transactions, Work};

/// How long to wait before offering an event again when librdkafka's queue
/// is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(2);

/// The master as the accepting tier of its sidecars' streams (each session
/// holds a clone: every field is a handle).
#[derive(Clone, Debug)]
pub struct SidecarStreams {
    /// This master's id, in heartbeat samples.
    pub node_id: String,
    /// The producer.
    pub sink: KafkaSink,
    /// Whether Kafka answers (Welcome and pings say so).
    pub kafka: watch::Receiver<KafkaStatus>,
    /// The registry task.
    pub registry: mpsc::Sender<RegistryEvent>,
    /// RTT samples for the admin API's heartbeat stream.
    pub heartbeats: broadcast::Sender<HeartbeatSample>,
    /// Totals since start.
    pub counters: Arc<Counters>,
    /// Resends already published through this master.
    pub delivered: Arc<Delivered>,
    /// Events of produce batches Kafka refused, to produce alone next time.
    pub suspects: Arc<Suspects>,
    /// Largest event published.
    pub max_event_bytes: usize,
    /// How long a batch may wait for Kafka before the stream ends.
    pub delivery_timeout: Duration,
    /// The transactor, in `--delivery exactly-once`: batches go through it.
    pub transactions: Option<Transactions>,
}

impl Tier for SidecarStreams {
    type Handler = SidecarSession;

    fn ready(&self) -> bool {
        self.kafka.borrow().ready && self.transactions.as_ref().is_none_or(Transactions::ready)
    }

    async fn connected(
        &self,
        caller: &Caller,
        commands: mpsc::Sender<SessionCommand>,
    ) -> Result<SidecarSession, Status> {
        self.registry
            .send(RegistryEvent::Connected {
                conn: caller.conn,
                hello: caller.hello.clone(),
                address: caller.address.clone(),
                certificate_not_after_unix_nanos: caller
                    .certified_until
                    .map_or(0, smesh_core::time::unix_nanos),
                commands,
            })
            .await
            .map_err(|_| Status::unavailable("master is shutting down"))?;
        Ok(SidecarSession {
            _connected: Held::new(Arc::clone(&self.counters), |c| &c.sidecars_connected),
            conn: caller.conn,
            peer: caller.hello.node_id.clone(),
            address: caller.address.clone(),
            identity: caller.identity.clone(),
            rejections: Arc::new(Mutex::new(LogEvery::default())),
            streams: self.clone(),
            unsettled: Arc::new(Semaphore::new(MAX_UNSETTLED as usize)),
            after_careful: false,
            reserved: None,
            generation: None,
        })
    }
}

/// The master's half of one sidecar stream.
#[derive(Debug)]
pub struct SidecarSession {
    /// Counts this stream in `sidecars_connected` while it lives.
    _connected: Held<Counters>,
    conn: ConnId,
    /// The sidecar's id.
    peer: String,
    /// The sidecar's address, for log lines about it.
    address: String,
    /// Who the peer's certificate proved it is (`None` on plaintext): which
    /// client ids its events may carry (see [`refusal`]).
    identity: Option<PeerIdentity>,
    /// Rejected events, logged at most every 10 s: a peer decides how many.
    rejections: Arc<Mutex<LogEvery>>,
    streams: SidecarStreams,
    /// One permit per batch not settled yet, to wait for all of them.
    unsettled: Arc<Semaphore>,
    /// Whether the last batch forwarded went the careful way: the next one
    /// waits for it to settle.
    after_careful: bool,
    /// Set by `reserve` once the batch it was called for may go: whether it
    /// goes the careful way. A suspect that appears later does not make it
    /// careful after all (it would wait in `forward`, where pings stop); if
    /// it sinks a produce batch again, its next resend is.
    reserved: Option<bool>,
    /// The producers' generation the last batch went through.
    generation: Option<u64>,
}

/// Batches of one stream that may be unsettled at once: more than any window.
const MAX_UNSETTLED: u32 = 1 << 20;

impl SidecarSession {
    /// Whether `batch` holds an event of a produce batch Kafka refused.
    fn careful(&self, batch: &Batch) -> bool {
        self.streams.suspects.any(
            batch
                .events
                .iter()
                .map(|e| (e.client_id.as_str(), e.incarnation, e.sequence)),
        )
    }

    /// Waits until every batch this stream forwarded so far has settled.
    async fn settled(&self) -> Result<(), Status> {
        self.unsettled
            .acquire_many(MAX_UNSETTLED)
            .await
            .map(drop)
            .map_err(|_| Status::internal("the stream's settlement gate closed"))
    }

    /// A permit held until a batch settles.
    async fn unsettled_permit(&self) -> Result<OwnedSemaphorePermit, Status> {
        Arc::clone(&self.unsettled)
            .acquire_owned()
            .await
            .map_err(|_| Status::internal("the stream's settlement gate closed"))
    }
}

impl Handler for SidecarSession {
    /// Waits for room in librdkafka's queue, so a full queue holds batches
    /// back (the window pushes back on the sidecar) while pings and acks go
    /// on. A batch produced one event at a time, and the batch after it,
    /// also wait here until every earlier batch of the stream has settled:
    /// a client's events reach Kafka in order across the two producers.
    async fn reserve(&mut self, batch: &Batch) -> Result<(), Status> {
        while !self.streams.sink.has_room(batch.events.len()) {
            tokio::time::sleep(QUEUE_FULL_PAUSE).await;
        }
        let careful = self.careful(batch);
        if self.after_careful || careful {
            self.settled().await?;
        }
        self.reserved = Some(careful);
        Ok(())
    }

    /// Publishes every event of the batch that is new and valid.
    async fn forward(&mut self, mut batch: Batch) -> Result<Settlement, Status> {
        let streams = &self.streams;
        let n = batch.events.len();
        // This master's hop, for `smesh-console trace` (whatever the
        // sidecar said of it).
        let received = smesh_core::time::now_unix_nanos();
        for event in &mut batch.events {
            event.master_id.clone_from(&streams.node_id);
            event.master_received_unix_nanos = received;
        }
        let counters = &streams.counters;
        Counters::add(&counters.events_in, n as u64);
        Counters::add(&counters.batches_in, 1);
        let bytes: usize = batch.events.iter().map(|e| e.data.len()).sum();
        Counters::add(&counters.bytes_in, bytes as u64);

        if let Some(transactions) = self.streams.transactions.clone() {
            self.reserved = None;
            let seq = batch.seq;
            let outcome = self.forward_transactional(batch, &transactions).await?;
            let timeout = self.streams.delivery_timeout;
            let kafka = self.streams.kafka.clone();
            return Ok(Box::pin(settle_within(outcome, timeout, kafka, seq)));
        }
        let careful = match self.reserved.take() {
            Some(careful) => careful,
            // Forwarded without `reserve` (the session always reserves).
            None => {
                let careful = self.careful(&batch);
                if careful || self.after_careful {
                    self.settled().await?;
                }
                careful
            }
        };
        // Every event of a batch goes through one generation of producers;
        // a stream whose earlier batches went through a replaced one ends,
        // so its sidecar resends them, in order, before anything newer.
        let producers = self.streams.sink.producers();
        if self
            .generation
            .is_some_and(|generation| generation != producers.generation())
        {
            return Err(Status::unavailable(
                "this master replaced its Kafka producer; resend from the oldest unacknowledged batch",
            ));
        }
        self.generation = Some(producers.generation());
        self.after_careful = careful;
        let permit = self.unsettled_permit().await?;
        let seq = batch.seq;
        let outcome = if careful {
            warn!(peer = %self.peer, address = %self.address, batch = seq, "Kafka refused a produce batch holding events of this batch; producing them one at a time");
            self.forward_alone(batch, producers, permit)
        } else {
            self.forward_pipelined(batch, &producers, permit).await?
        };
        let timeout = self.streams.delivery_timeout;
        let kafka = self.streams.kafka.clone();
        Ok(Box::pin(settle_within(outcome, timeout, kafka, seq)))
    }

    async fn report(&mut self, report: Report) {
        let _ = self
            .streams
            .registry
            .send(RegistryEvent::Report {
                conn: self.conn,
                report,
            })
            .await;
    }

    fn rtt(&mut self, rtt: Duration) {
        self.streams.counters.sidecar_rtt.observe(rtt);
        let _ = self.streams.heartbeats.send(HeartbeatSample {
            at_unix_nanos: now_unix_nanos(),
            checker_id: self.streams.node_id.clone(),
            tier: PeerTier::Sidecar as i32,
            peer_id: self.peer.clone(),
            rtt_us: u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX),
        });
    }

    fn heartbeat(&mut self, view: SessionView) {
        // State, not a log: skipping one when the registry is busy is fine.
        let _ = self.streams.registry.try_send(RegistryEvent::Heartbeat {
            conn: self.conn,
            rtt: view.rtt,
            status: view.status,
            last_pong_unix_nanos: view.last_pong_unix_nanos,
            events_forwarded: view.events_forwarded,
        });
    }

    async fn ended(self, _view: SessionView, reason: String) {
        let _ = self
            .streams
            .registry
            .send(RegistryEvent::Disconnected {
                conn: self.conn,
                reason,
            })
            .await;
    }
}

/// Waits for a batch's outcome. Ending the stream sends the batch to the
/// sidecar again while librdkafka keeps its copy, so that is worth it only
/// when Kafka answers and the batch is stuck all the same: the stream ends
/// once the batch has waited `timeout` with Kafka counting as reachable the
/// whole time. Every change of Kafka's state starts the wait over (after an
/// outage librdkafka gets the full time to catch up); while Kafka is
/// unreachable the master is NOT_SERVING, and the sidecar decides whether
/// another master does better.
async fn settle_within(
    mut outcome: Outcome,
    timeout: Duration,
    mut kafka: watch::Receiver<KafkaStatus>,
    seq: u64,
) -> Result<Settled, Status> {
    let mut watching = true;
    loop {
        tokio::select! {
            settled = &mut outcome => {
                return settled
                    .unwrap_or_else(|_| Err(Status::unavailable("the delivery task stopped")));
            }
            () = tokio::time::sleep(timeout) => {
                if kafka.borrow().ready {
                    return Err(Status::unavailable(format!(
                        "Kafka did not acknowledge batch {seq} within {}; resend it",
                        smesh_core::cli::duration_text(timeout)
                    )));
                }
            }
            changed = kafka.changed(), if watching => {
                // Gone (shutting down): plain timeouts from here on.
                watching = changed.is_ok();
            }
        }
    }
}

/// What a batch's delivery task answers: the events rejected and where the
/// others went, or why the batch failed.
type Outcome = oneshot::Receiver<Result<Settled, Status>>;

impl SidecarSession {
    /// The normal path: every event handed to the pipelined producer now,
    /// Kafka's answers awaited on a task of their own.
    async fn forward_pipelined(
        &mut self,
        batch: Batch,
        producers: &Producers,
        permit: OwnedSemaphorePermit,
    ) -> Result<Outcome, Status> {
        let streams = &self.streams;
        let seen = streams.delivered.published(
            batch
                .events
                .iter()
                .map(|e| (e.client_id.as_str(), e.incarnation, e.sequence)),
        );
        // Per event only a sequence and an index into `clients` (client id
        // and incarnation) are kept (batches come from one client): no
        // string copies on the hot path.
        let mut clients: Vec<(String, u64)> = Vec::with_capacity(1);
        let mut deliveries = Vec::with_capacity(batch.events.len());
        let mut rejected = Vec::new();
        let mut duplicates = 0u64;
        for (event, seen) in batch.events.iter().zip(seen) {
            if let Some(reason) = refusal(self.identity.as_ref(), event, streams.max_event_bytes) {
                log_rejection(&self.rejections, &self.peer, &self.address, event, &reason);
                rejected.push(Rejected {
                    event_id: event.id.clone(),
                    reason,
                });
                continue;
            }
            if seen {
                duplicates += 1;
                continue;
            }
            loop {
                match producers
                    .publish(event)
                    .map_err(|err| streams.sink.classify(&err))
                {
                    Ok(delivery) => {
                        if clients
                            .last()
                            .is_none_or(|(c, i)| *c != event.client_id || *i != event.incarnation)
                        {
                            clients.push((event.client_id.clone(), event.incarnation));
                        }
                        deliveries.push((clients.len() - 1, event.sequence, delivery));
                        break;
                    }
                    Err(PublishError::QueueFull) => tokio::time::sleep(QUEUE_FULL_PAUSE).await,
                    // Refused before it was queued: about this event alone.
                    Err(PublishError::Permanent(reason)) => {
                        log_rejection(&self.rejections, &self.peer, &self.address, event, &reason);
                        rejected.push(Rejected {
                            event_id: event.id.clone(),
                            reason,
                        });
                        break;
                    }
                    Err(PublishError::Transient(reason)) => {
                        return Err(Status::unavailable(format!(
                            "cannot publish to Kafka: {reason}"
                        )));
                    }
                }
            }
        }
        Counters::add(&streams.counters.duplicates, duplicates);
        let seq = batch.seq;
        let sink = streams.sink.clone();
        let delivered = Arc::clone(&streams.delivered);
        let suspects = Arc::clone(&streams.suspects);
        let counters = Arc::clone(&streams.counters);
        let topic = streams.sink.topic().to_string();
        let master = streams.node_id.clone();
        // Kafka's answers are awaited and recorded on a task of their own:
        // if the stream ends first, what Kafka still acknowledges is
        // remembered, so the sidecar's resend of it is not published again.
        let (outcome_tx, outcome) = oneshot::channel();
        tokio::spawn(async move {
            let mut published = Vec::with_capacity(deliveries.len());
            let mut placements = Placements::new(&topic, &master);
            let mut failed = None;
            for (client, sequence, delivery) in deliveries {
                match delivery.await {
                    Ok(Ok(delivery)) => {
                        published.push((client, sequence));
                        if let Some((id, incarnation)) = clients.get(client) {
                            placements.push(
                                id,
                                *incarnation,
                                sequence,
                                delivery.partition,
                                delivery.offset,
                            );
                        }
                    }
                    Ok(Err((err, _message))) => match sink.classify(&err) {
                        // The whole produce batch was refused, and with it
                        // events of other clients maybe: none is rejected
                        // now; each goes again alone.
                        PublishError::Permanent(reason) => {
                            if let Some((client, incarnation)) = clients.get(client) {
                                suspects.insert(client, *incarnation, sequence);
                            }
                            failed.get_or_insert_with(|| {
                                format!("Kafka refused a produce batch ({reason}); its events go again one at a time")
                            });
                        }
                        other => {
                            failed.get_or_insert_with(|| other.to_string());
                        }
                    },
                    Err(_canceled) => {
                        failed.get_or_insert_with(|| "the producer went away".to_string());
                    }
                }
            }
            // What Kafka has is recorded even when the batch as a whole
            // failed: its resend is then acknowledged without publishing.
            delivered.record(
                published
                    .iter()
                    .filter_map(|(c, s)| clients.get(*c).map(|(c, i)| (c.as_str(), *i, *s))),
            );
            Counters::add(&counters.published, published.len() as u64);
            Counters::add(&counters.failed, rejected.len() as u64);
            drop(permit);
            let _ = outcome_tx.send(match failed {
                Some(reason) => Err(Status::unavailable(format!(
                    "Kafka did not acknowledge batch {seq}: {reason}"
                ))),
                None => Ok(Settled {
                    rejected,
                    placed: placements.into_vec(),
                }),
            });
        });
        Ok(outcome)
    }

    /// Exactly once: the batch's valid events go to the open transaction;
    /// the outcome comes once that transaction is committed (or aborted).
    async fn forward_transactional(
        &mut self,
        batch: Batch,
        transactions: &Transactions,
    ) -> Result<Outcome, Status> {
        let mut rejected = Vec::new();
        let mut events = Vec::with_capacity(batch.events.len());
        for event in batch.events {
            match refusal(self.identity.as_ref(), &event, self.streams.max_event_bytes) {
                Some(reason) => {
                    log_rejection(&self.rejections, &self.peer, &self.address, &event, &reason);
                    Counters::add(&self.streams.counters.failed, 1);
                    rejected.push(Rejected {
                        event_id: event.id.clone(),
                        reason,
                    });
                }
                None => events.push(event),
            }
        }
        let (reply, outcome) = oneshot::channel();
        transactions
            .submit(Work {
                stream: self.conn,
                events,
                rejected,
                reply,
            })
            .await?;
        Ok(outcome)
    }

    /// The careful path, for a batch that holds events of a refused produce
    /// batch: one event per request, each awaited before the next, so a
    /// refusal is about that event alone and rejects only it. Stops at the
    /// first transient failure: nothing after it is produced.
    fn forward_alone(
        &mut self,
        batch: Batch,
        producers: Arc<Producers>,
        permit: OwnedSemaphorePermit,
    ) -> Outcome {
        let streams = self.streams.clone();
        let peer = self.peer.clone();
        let address = self.address.clone();
        let identity = self.identity.clone();
        let rejections = Arc::clone(&self.rejections);
        let seq = batch.seq;
        let (outcome_tx, outcome) = oneshot::channel();
        tokio::spawn(async move {
            let mut rejected = Vec::new();
            let topic = streams.sink.topic().to_string();
            let mut placements = Placements::new(&topic, &streams.node_id);
            let mut failed = None;
            for event in &batch.events {
                let key = (event.client_id.as_str(), event.incarnation, event.sequence);
                let refused = refusal(identity.as_ref(), event, streams.max_event_bytes);
                if refused.is_none() && streams.delivered.published(std::iter::once(key)) == [true]
                {
                    Counters::add(&streams.counters.duplicates, 1);
                    continue;
                }
                let refused = match refused {
                    Some(reason) => Some(reason),
                    None => match producers
                        .publish_alone(event)
                        .map_err(|err| streams.sink.classify(&err))
                    {
                        Ok(delivery) => match delivery.await {
                            Ok(Ok(delivery)) => {
                                placements.push(
                                    &event.client_id,
                                    event.incarnation,
                                    event.sequence,
                                    delivery.partition,
                                    delivery.offset,
                                );
                                None
                            }
                            Ok(Err((err, _message))) => match streams.sink.classify(&err) {
                                PublishError::Permanent(reason) => Some(reason),
                                other => {
                                    failed = Some(other.to_string());
                                    break;
                                }
                            },
                            Err(_canceled) => {
                                failed = Some("the producer went away".to_string());
                                break;
                            }
                        },
                        Err(PublishError::Permanent(reason)) => Some(reason),
                        Err(other) => {
                            failed = Some(other.to_string());
                            break;
                        }
                    },
                };
                streams.suspects.clear(key.0, key.1, key.2);
                match refused {
                    None => {
                        streams.delivered.record(std::iter::once(key));
                        Counters::add(&streams.counters.published, 1);
                    }
                    Some(reason) => {
                        log_rejection(&rejections, &peer, &address, event, &reason);
                        Counters::add(&streams.counters.failed, 1);
                        rejected.push(Rejected {
                            event_id: event.id.clone(),
                            reason,
                        });
                    }
                }
            }
            drop(permit);
            let _ = outcome_tx.send(match failed {
                Some(reason) => Err(Status::unavailable(format!(
                    "Kafka did not acknowledge batch {seq}: {reason}"
                ))),
                None => Ok(Settled {
                    rejected,
                    placed: placements.into_vec(),
                }),
            });
        });
        outcome
    }
}

/// Why `event` may not be published on a stream from `identity`, if it may
/// not: a client id the stream may not speak for, or an invalid event.
///
/// On plaintext nothing is authenticated and every id is taken as said. On
/// TLS a master takes a client id only from a sidecar that authenticated
/// that client (the sidecar marks such events), or from the client itself
/// when its own certificate is presented here. The resend memory is keyed
/// by these ids, so no peer can make another client's events look like
/// resends.
fn refusal(
    identity: Option<&PeerIdentity>,
    event: &Event,
    max_event_bytes: usize,
) -> Option<String> {
    let unproven = match identity {
        None => None,
        Some(PeerIdentity {
            tier: tls::Tier::Sidecar,
            id,
        }) => (!event.client_authenticated).then(|| {
            format!(
                "sidecar {id} did not authenticate client {}: a master on TLS takes a client id only from a sidecar that checked the client's certificate",
                smesh_core::ids::quote(&event.client_id)
            )
        }),
        Some(PeerIdentity {
            tier: tls::Tier::Client,
            id,
        }) if *id == event.client_id => None,
        Some(other) => Some(format!(
            "{other} may not publish events of client {}",
            smesh_core::ids::quote(&event.client_id)
        )),
    };
    unproven.or_else(|| {
        event::validate(event, max_event_bytes)
            .err()
            .map(|invalid| invalid.to_string())
    })
}

/// Logs a rejected event, at most once per interval per stream.
fn log_rejection(log: &Mutex<LogEvery>, peer: &str, address: &str, event: &Event, reason: &str) {
    let mut log = match log.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(unlogged) = log.tick() {
        warn!(%peer, %address, event = %smesh_core::ids::quote(&event.id), %reason, also_since_last_log = unlogged, "rejecting event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_of(client: &str, authenticated: bool) -> Event {
        Event {
            id: smesh_core::event::event_id(client, 1, 1),
            source: "test".into(),
            r#type: "dev.smesh.test".into(),
            specversion: smesh_core::event::SPEC_VERSION.into(),
            client_id: client.into(),
            sequence: 1,
            incarnation: 1,
            client_authenticated: authenticated,
            ..Event::default()
        }
    }

    #[test]
    fn a_client_id_is_taken_only_from_whom_a_certificate_proves_may_speak_for_it() {
        let sidecar = PeerIdentity::new(tls::Tier::Sidecar, "S1");
        let device = PeerIdentity::new(tls::Tier::Client, "c1");
        let master = PeerIdentity::new(tls::Tier::Master, "c1");
        let cases = [
            // Plaintext: nothing is authenticated, ids are taken as said.
            (None, event_of("c1", false), true),
            (Some(&sidecar), event_of("c1", true), true),
            (Some(&sidecar), event_of("c1", false), false),
            (Some(&device), event_of("c1", false), true),
            (Some(&device), event_of("c2", true), false),
            (Some(&master), event_of("c1", true), false),
        ];
        for (identity, event, taken) in cases {
            assert_eq!(
                refusal(identity, &event, 1000).is_none(),
                taken,
                "{identity:?} {event:?}"
            );
        }
        // An invalid event is refused whoever sends it.
        let mut invalid = event_of("c1", true);
        invalid.source = String::new();
        assert!(refusal(Some(&sidecar), &invalid, 1000).is_some());
    }
}
