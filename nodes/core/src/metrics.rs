//! Prometheus metrics: the `/metrics` door every node may open
//! (`--metrics-listen`), and the pieces each tier's collector is made of.
//!
//! A node keeps its numbers where it always did (relaxed atomics bumped on
//! the hot path); a tier's [`Collector`] reads them only when Prometheus
//! scrapes, through an [`Exposition`]. Names follow Prometheus conventions
//! (`smesh_<tier>_<what>_<unit>`, `_total` for counters, added by the
//! encoder) and label sets stay bounded: per-client detail stays in the
//! admin API.
//!
//! Like every server here, [`serve`] is handed its listener and a
//! cancellation token; the binary binds. It is a bounded door: at most
//! [`MAX_CONNECTIONS`] at once (more are closed at once), headers within
//! [`HEADER_TIMEOUT`] and [`MAX_REQUEST_BYTES`], a whole connection within
//! [`CONNECTION_TIMEOUT`], one request per connection, and only
//! `GET /metrics`. Nothing it does waits on the data path.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::encoding::NoLabelSet;
use prometheus_client::metrics::MetricType;
pub use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::ratelimit::LogEvery;

/// Most scrapes served at once; a connection beyond it is closed at once.
pub const MAX_CONNECTIONS: usize = 8;
/// A request's headers must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole connection (request and answer) must be done within this.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of a request hyper buffers (headers included).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// The content type of the exposition (OpenMetrics text, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A registry holding one tier's collector.
pub fn registry(collector: impl Collector) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    registry
}

/// One registry for several nodes in one process (the demo), each node's
/// metrics under a `node` label: bounded, as such a process runs few.
pub fn labelled_registry(nodes: Vec<(String, Box<dyn Collector>)>) -> Registry {
    let mut registry = Registry::default();
    for (node, collector) in nodes {
        registry
            .sub_registry_with_label(("node".into(), node.into()))
            .register_collector(collector);
    }
    registry
}

/// The registry's exposition, as `/metrics` answers it.
pub fn render(registry: &Registry) -> Result<String, fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

/// Serves `GET /metrics` from `registry` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut refused = LogEvery::new(Duration::from_secs(60));
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    debug!(%err, "metrics: accept failed");
                    // Out of descriptors, for instance: do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if refused.tick().is_some() {
                warn!(peer = %peer, max = MAX_CONNECTIONS, "metrics: too many scrapes at once; connection closed");
            }
            continue;
        };
        let registry = Arc::clone(&registry);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |request| {
                let registry = Arc::clone(&registry);
                async move { Ok::<_, Infallible>(answer(&request, &registry)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_REQUEST_BYTES)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = shutdown.cancelled() => {}
                served = tokio::time::timeout(CONNECTION_TIMEOUT, connection) => match served {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => debug!(peer = %peer, %err, "metrics: connection failed"),
                    Err(_) => debug!(peer = %peer, "metrics: connection timed out"),
                },
            }
        });
    }
}

fn answer(request: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "try /metrics\n".into());
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET /metrics\n".into(),
        );
    }
    match render(registry) {
        Ok(text) => reply(StatusCode::OK, CONTENT_TYPE, text),
        Err(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "cannot encode the metrics\n".into(),
        ),
    }
}

/// Writes metric families from a collector: names without the `_total` of
/// counters (the encoder adds it) and without the unit (given as a [`Unit`]).
#[derive(Debug)]
pub struct Exposition<'a>(pub DescriptorEncoder<'a>);

impl Exposition<'_> {
    /// A counter, `<name>_total`.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        let mut metric = self
            .0
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        metric.encode_counter::<NoLabelSet, u64, u64>(&value, None)
    }

    /// A gauge, `<name>[_<unit>]`.
    pub fn gauge(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        value: f64,
    ) -> fmt::Result {
        let mut metric = self
            .0
            .encode_descriptor(name, help, unit, MetricType::Gauge)?;
        metric.encode_gauge(&value)
    }

    /// A gauge with one label, one sample per `(label value, value)`.
    pub fn gauge_by(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        label: &str,
        values: &[(String, f64)],
    ) -> fmt::Result {
        let mut metric = self
            .0
            .encode_descriptor(name, help, unit, MetricType::Gauge)?;
        for (key, value) in values {
            let labels = [(label, key.as_str())];
            metric.encode_family(&labels)?.encode_gauge(value)?;
        }
        Ok(())
    }

    /// A histogram in seconds, `<name>_seconds_{bucket,sum,count}`.
    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) -> fmt::Result {
        let mut metric =
            self.0
                .encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
        let buckets = histogram.buckets();
        let count = buckets.iter().map(|(_, n)| n).sum();
        metric.encode_histogram::<NoLabelSet>(histogram.sum_seconds(), count, &buckets, None)
    }
}

/// One open thing (a stream) counted in a gauge while it lives: +1 when
/// made, -1 when dropped, however its owner ends.
pub struct Held<T: 'static> {
    owner: Arc<T>,
    gauge: fn(&T) -> &AtomicU64,
}

impl<T: 'static> Held<T> {
    /// Adds one to `gauge(&owner)` until the returned guard is dropped.
    pub fn new(owner: Arc<T>, gauge: fn(&T) -> &AtomicU64) -> Self {
        gauge(&owner).fetch_add(1, Relaxed);
        Self { owner, gauge }
    }
}

impl<T: 'static> Drop for Held<T> {
    fn drop(&mut self) {
        (self.gauge)(&self.owner).fetch_sub(1, Relaxed);
    }
}

impl<T: 'static> fmt::Debug for Held<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Held")
    }
}

/// Bucket bounds (seconds) of round trips and ack latencies: a millisecond
/// to a minute.
pub const SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// A histogram of durations without a lock: one relaxed atomic per bucket,
/// so the hot path that observes never waits for a scrape.
#[derive(Debug)]
pub struct Histogram {
    /// Observations per bucket of [`SECONDS_BUCKETS`], and the last for
    /// anything longer.
    counts: [AtomicU64; SECONDS_BUCKETS.len() + 1],
    /// The sum of every observation, in microseconds.
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let bucket = SECONDS_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(SECONDS_BUCKETS.len());
        self.counts[bucket].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
            Relaxed,
        );
    }

    /// (upper bound, observations in that bucket alone), the last bound
    /// `f64::MAX` (the encoder's `+Inf`).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        SECONDS_BUCKETS
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(self.counts.iter().map(|c| c.load(Relaxed)))
            .collect()
    }

    /// The sum of every observation, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros.load(Relaxed) as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Sample(Arc<Histogram>);

    impl Collector for Sample {
        fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
            let mut out = Exposition(encoder);
            out.counter("smesh_test_events", "Events.", 3)?;
            out.gauge("smesh_test_spool", "Spool.", Some(&Unit::Bytes), 5.0)?;
            out.gauge_by(
                "smesh_test_rtt_avg",
                "RTT.",
                Some(&Unit::Seconds),
                "broker",
                &[("b1".into(), 0.5)],
            )?;
            out.histogram("smesh_test_latency", "Latency.", &self.0)
        }
    }

    #[test]
    fn exposition_has_conventional_names_and_cumulative_buckets() {
        let histogram = Arc::new(Histogram::default());
        histogram.observe(Duration::from_millis(2));
        histogram.observe(Duration::from_millis(20));
        histogram.observe(Duration::from_secs(600));
        let text = render(&registry(Sample(Arc::clone(&histogram)))).unwrap();
        for line in [
            "smesh_test_events_total 3",
            "smesh_test_spool_bytes 5.0",
            "smesh_test_rtt_avg_seconds{broker=\"b1\"} 0.5",
            "smesh_test_latency_seconds_bucket{le=\"0.001\"} 0",
            "smesh_test_latency_seconds_bucket{le=\"0.0025\"} 1",
            "smesh_test_latency_seconds_bucket{le=\"0.025\"} 2",
            "smesh_test_latency_seconds_bucket{le=\"60.0\"} 2",
            "smesh_test_latency_seconds_bucket{le=\"+Inf\"} 3",
            "smesh_test_latency_seconds_count 3",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }

    #[tokio::test]
    async fn serves_metrics_and_nothing_else() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let token = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            Arc::new(registry(Sample(Arc::default()))),
            token.clone(),
        ));
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            stream
                .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            answer
        };
        let metrics = get("/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("smesh_test_events_total 3"), "{metrics}");
        assert!(get("/").await.starts_with("HTTP/1.1 404"));
        token.cancel();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn scrapes_beyond_the_bound_are_closed_at_once() {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let token = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            Arc::new(registry(Sample(Arc::default()))),
            token.clone(),
        ));
        // Silent connections hold every slot (until HEADER_TIMEOUT).
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            held.push(tokio::net::TcpStream::connect(address).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut extra = tokio::net::TcpStream::connect(address).await.unwrap();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf))
            .await
            .expect("closed at once, not left waiting");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        drop(held);
        token.cancel();
        server.await.unwrap();
    }
}
