//! `sensor`: synthetic readings, for demos and load.
//!
//! Produces the prototype's flat sensor message as JSON:
//! `{"Timestamp", "Location", "Sensortyp", "SensorID", "SensorData"}`, one
//! random walk per sensor, at `rate` readings per second in total.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smesh_core::time::{now_unix_nanos, rfc3339_millis};
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::options::{Options, SourceOption, event_type, parsed, text};
use super::{Reading, Source, SourceContext, SourceKind};

/// The slowest sensor: one reading every 1000 s (a rate near zero would
/// mean a period no timer can hold).
const MIN_RATE: f64 = 0.001;

pub const DEFAULT_TYPE: &str = "dev.smesh.sensor.reading";

/// `sensor` in `--source`.
pub(super) const KIND: SourceKind = SourceKind {
    name: "sensor",
    options: &[
        SourceOption::value(
            "rate",
            "1",
            "readings per second in total, or `max`: as fast as the client takes them",
        ),
        SourceOption::value(
            "sensors",
            "1",
            "sensors taking turns, each its own random walk",
        ),
        SourceOption::value("kind", "temperature", "the `Sensortyp` of every reading"),
        SourceOption::value("location", "Vienna", "the `Location` of every reading"),
        SourceOption::absent("count", "stop after this many readings (without it: never)"),
        SourceOption::absent(
            "size",
            "pad each reading's JSON to at least this many bytes",
        ),
        event_type(DEFAULT_TYPE),
    ],
    example: "sensor:rate=50,sensors=3,kind=humidity,location=Graz,count=100,size=256,type=dev.example.reading",
    build: |options| Ok(Arc::new(SensorSpec::parse(options)?)),
};

/// A `sensor` source as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorSpec {
    /// Readings per second in total; `None` = as fast as the client takes them.
    pub rate: Option<f64>,
    /// How many sensors take turns (each gets its own id and subject).
    pub sensors: u32,
    /// The `Sensortyp` field of every reading.
    pub kind: String,
    /// The `Location` field of every reading.
    pub location: String,
    /// Stop after this many readings.
    pub count: Option<u64>,
    /// Pad each reading's JSON to at least this many bytes.
    pub size: Option<usize>,
    /// CloudEvents `type` of every reading.
    pub event_type: String,
}

impl SensorSpec {
    fn parse(options: &mut Options) -> Result<Self, String> {
        let rate = options.value("rate", |text| match text {
            "max" => Ok(None),
            text => match text.parse::<f64>() {
                Ok(rate) if (MIN_RATE..=f64::MAX).contains(&rate) => Ok(Some(rate)),
                _ => Err(format!(
                    " (readings per second, at least {MIN_RATE}, or max)"
                )),
            },
        })?;
        let sensors = options.value("sensors", parsed::<u32>)?;
        if sensors == 0 {
            return Err("sensor source: sensors must be at least 1".to_string());
        }
        let count = options.optional("count", parsed::<u64>)?;
        let size = options.optional("size", parsed::<usize>)?;
        Ok(Self {
            rate,
            sensors,
            kind: options.value("kind", text)?,
            location: options.value("location", text)?,
            count,
            size,
            event_type: options.value("type", text)?,
        })
    }
}

impl Source for SensorSpec {
    fn spawn(&self, context: SourceContext, tasks: &TaskTracker) {
        tasks.spawn(run(self.clone(), context));
    }
}

struct Sensor {
    id: String,
    source: Arc<str>,
    value: f64,
}

async fn run(spec: SensorSpec, context: SourceContext) {
    let kind: Arc<str> = Arc::from(spec.event_type.as_str());
    let content_type: Arc<str> = Arc::from("application/json");
    let mut rng = StdRng::from_os_rng();
    let mut sensors: Vec<Sensor> = (1..=spec.sensors)
        .map(|i| {
            let id = format!("{}-s{i}", context.client_id);
            Sensor {
                source: Arc::from(format!("smesh://{}/sensor/{id}", context.client_id)),
                id,
                value: rng.random_range(15.0..25.0),
            }
        })
        .collect();
    let started = Instant::now();
    let mut emitted: u64 = 0;
    let mut tick = tokio::time::interval(match spec.rate {
        Some(rate) if rate < 100.0 => Duration::from_secs_f64(1.0 / rate),
        _ => Duration::from_millis(10),
    });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Without a rate the source only waits for the client to take readings.
        if spec.rate.is_some() {
            tokio::select! {
                () = context.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
        } else if context.shutdown.is_cancelled() {
            break;
        }
        let due = match spec.rate {
            Some(rate) => (started.elapsed().as_secs_f64() * rate).floor() as u64 + 1,
            None => emitted + 1024,
        };
        while emitted < due {
            if spec.count.is_some_and(|count| emitted >= count) {
                debug!(emitted, "sensor source finished");
                return;
            }
            let index = (emitted % u64::from(spec.sensors)) as usize;
            let sensor = &mut sensors[index];
            sensor.value += rng.random_range(-0.5..0.5);
            let now = now_unix_nanos();
            let mut document = serde_json::json!({
                "Timestamp": rfc3339_millis(now),
                "Location": spec.location,
                "Sensortyp": spec.kind,
                "SensorID": sensor.id,
                "SensorData": (sensor.value * 100.0).round() / 100.0,
            });
            let mut data = serde_json::to_vec(&document).unwrap_or_default();
            if let Some(size) = spec.size.filter(|size| *size > data.len() + 16) {
                document["Padding"] = serde_json::Value::String("x".repeat(size - data.len() - 14));
                data = serde_json::to_vec(&document).unwrap_or_default();
            }
            let reading = Reading {
                source: Arc::clone(&sensor.source),
                kind: Arc::clone(&kind),
                content_type: Arc::clone(&content_type),
                subject: Some(sensor.id.clone()),
                data: Bytes::from(data),
                time_unix_nanos: now,
                origin: None,
                oversized: None,
            };
            tokio::select! {
                () = context.shutdown.cancelled() => return,
                sent = context.readings.send(reading) => if sent.is_err() { return },
            }
            emitted += 1;
        }
    }
}
