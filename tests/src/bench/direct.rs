//! The limit: the master's own producer (same settings, same record shape)
//! driven straight from this process, with no mesh in front of it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use smesh_master::kafka::{KafkaConfig, KafkaSink, PublishError};
use smesh_proto::mesh::Event;

use super::Latency;

/// The master's defaults, so the comparison is like for like.
pub async fn sink(bootstrap: &str, topic: &str) -> Result<KafkaSink, String> {
    let sink = KafkaSink::new(&KafkaConfig {
        brokers: bootstrap.to_string(),
        topic: topic.to_string(),
        compression: "lz4".to_string(),
        delivery_timeout: Duration::from_secs(60),
        unavailable_after: Duration::from_secs(5),
        overrides: Vec::new(),
        client_id: "smesh-bench-direct".to_string(),
    })
    .map_err(|e| e.to_string())?;
    sink.probe(Duration::from_secs(10))
        .map_err(|e| format!("broker not ready: {e}"))?;
    // Create the topic and learn its leaders before anything is timed (the
    // master does the same in its readiness probe before clients connect).
    for sequence in 0..3 {
        let warm = sink
            .publish(&event("warm-up", sequence, &payload(16)))
            .map_err(|e| e.to_string())?;
        if !matches!(warm.await, Ok(Ok(_))) {
            return Err("the warm-up record was not delivered".to_string());
        }
    }
    Ok(sink)
}

/// An event like the sensor source makes: `payload` bytes of JSON-ish data.
pub fn event(client: &str, sequence: u64, payload: &Bytes) -> Event {
    Event {
        id: format!("{client}-{sequence}"),
        source: format!("smesh://{client}/sensor/{client}-s1"),
        r#type: "dev.smesh.sensor.reading".to_string(),
        specversion: "1.0".to_string(),
        time_unix_nanos: smesh_core::time::now_unix_nanos(),
        datacontenttype: "application/json".to_string(),
        subject: Some(format!("{client}-s1")),
        data: payload.clone(),
        client_id: client.to_string(),
        sequence,
        ..Event::default()
    }
}

pub fn payload(size: usize) -> Bytes {
    let mut text = String::from("{\"SensorData\":21.5,\"Padding\":\"");
    while text.len() + 2 < size {
        text.push('x');
    }
    text.push_str("\"}");
    Bytes::from(text)
}

/// Events awaited at most at once: like the master's window per sidecar.
const WINDOW: usize = 32_768;

/// Sends `n` events as fast as the producer takes them; events/s to the last ack.
pub async fn throughput(sink: &KafkaSink, n: u64, payload_size: usize) -> Result<f64, String> {
    let payload = payload(payload_size);
    let started = Instant::now();
    // Acks come back in order per partition: waiting for the oldest first
    // costs nothing and keeps the bookkeeping O(1).
    let mut pending = std::collections::VecDeque::with_capacity(WINDOW);
    for sequence in 1..=n {
        let event = event("direct", sequence, &payload);
        loop {
            match sink.publish(&event) {
                Ok(delivery) => {
                    pending.push_back(delivery);
                    break;
                }
                Err(PublishError::QueueFull) => match pending.pop_front() {
                    Some(oldest) => expect_delivered(oldest.await)?,
                    None => tokio::time::sleep(Duration::from_millis(1)).await,
                },
                Err(err) => return Err(err.to_string()),
            }
        }
        if pending.len() >= WINDOW {
            if let Some(oldest) = pending.pop_front() {
                expect_delivered(oldest.await)?;
            }
        }
    }
    while let Some(oldest) = pending.pop_front() {
        expect_delivered(oldest.await)?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

fn expect_delivered<T, E, C>(done: Result<Result<T, E>, C>) -> Result<(), String> {
    match done {
        Ok(Ok(_)) => Ok(()),
        _ => Err("a delivery failed".to_string()),
    }
}

/// Offers `rate` events/s for `secs` (in 10 ms bursts, like the sensor
/// source) and measures each event from its creation to Kafka's ack.
pub async fn latency(
    sink: &KafkaSink,
    rate: u64,
    secs: u64,
    payload_size: usize,
) -> Result<Latency, String> {
    let payload = payload(payload_size);
    let mut histogram =
        Histogram::<u64>::new_with_max(3_600_000_000, 3).map_err(|e| e.to_string())?;
    let total = rate * secs;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut pending = FuturesUnordered::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while sent < total {
        tokio::select! {
            _ = tick.tick() => {
                let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
                while sent < due {
                    sent += 1;
                    let created = Instant::now();
                    let delivery = sink.publish(&event("direct", sent, &payload)).map_err(|e| e.to_string())?;
                    pending.push(async move { (delivery.await, created) });
                }
            }
            Some((done, created)) = pending.next(), if !pending.is_empty() => {
                record(&mut histogram, done, created)?;
            }
        }
    }
    while let Some((done, created)) = pending.next().await {
        record(&mut histogram, done, created)?;
    }
    Ok(Latency::from_histogram(&histogram))
}

fn record<T, E>(
    histogram: &mut Histogram<u64>,
    done: Result<Result<T, E>, futures::channel::oneshot::Canceled>,
    created: Instant,
) -> Result<(), String> {
    match done {
        Ok(Ok(_)) => {
            histogram.saturating_record(created.elapsed().as_micros().max(1) as u64);
            Ok(())
        }
        _ => Err("a delivery failed".to_string()),
    }
}
