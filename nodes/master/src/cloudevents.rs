//! The CloudEvents Kafka protocol binding, binary content mode.
//!
//! Attributes travel as record headers named `ce_<attribute>`, the data
//! content type as `content-type`, and the record value is the event data,
//! byte for byte. Any CloudEvents-aware Kafka consumer (or a plain one that
//! reads headers) understands the records smesh writes.
//!
//! Three headers are smesh's own: `smesh-previous`, the sequence number of
//! the event its client handed over just before this one (`0`: none known;
//! see `Event.previous_sequence`), which `smesh-console audit` follows; and
//! the hops `smesh-sidecar` and `smesh-master`, `<node id> <RFC 3339 time>`
//! of when each received the event, which `smesh-console trace` shows.

/// The header of [`Event::previous_sequence`].
pub const PREVIOUS_HEADER: &str = "smesh-previous";
/// The header of the sidecar's hop.
pub const SIDECAR_HEADER: &str = "smesh-sidecar";
/// The header of the master's hop.
pub const MASTER_HEADER: &str = "smesh-master";

use smesh_core::time::{rfc3339, rfc3339_micros};
use smesh_proto::mesh::Event;

/// Calls `header(name, value)` for each record header of an event, in a
/// stable order, without building them first (this runs once per event).
pub fn for_each_header(event: &Event, mut header: impl FnMut(&str, &[u8])) {
    header("ce_id", event.id.as_bytes());
    header("ce_source", event.source.as_bytes());
    header("ce_specversion", event.specversion.as_bytes());
    header("ce_type", event.r#type.as_bytes());
    if event.time_unix_nanos > 0 {
        header("ce_time", rfc3339(event.time_unix_nanos).as_bytes());
    }
    if let Some(subject) = &event.subject {
        header("ce_subject", subject.as_bytes());
    }
    if !event.datacontenttype.is_empty() {
        header("content-type", event.datacontenttype.as_bytes());
    }
    header(
        PREVIOUS_HEADER,
        event.previous_sequence.to_string().as_bytes(),
    );
    for (name, node, at) in [
        (
            SIDECAR_HEADER,
            &event.sidecar_id,
            event.sidecar_received_unix_nanos,
        ),
        (
            MASTER_HEADER,
            &event.master_id,
            event.master_received_unix_nanos,
        ),
    ] {
        if !node.is_empty() {
            header(name, format!("{node} {}", rfc3339_micros(at)).as_bytes());
        }
    }
    if !event.extensions.is_empty() {
        let mut extensions: Vec<_> = event.extensions.iter().collect();
        extensions.sort();
        for (name, value) in extensions {
            header(&format!("ce_{name}"), value.as_bytes());
        }
    }
}

/// Record headers for an event, in a stable order, as owned pairs.
pub fn headers(event: &Event) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    for_each_header(event, |name, value| {
        headers.push((
            name.to_string(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    });
    headers
}

/// Record key: the client id, so that one client's events share a partition.
pub fn key(event: &Event) -> &str {
    &event.client_id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        let mut event = Event {
            id: "edge-7-42".into(),
            source: "smesh://edge-7/sensor/t1".into(),
            r#type: "dev.smesh.sensor.reading".into(),
            specversion: "1.0".into(),
            time_unix_nanos: 1_795_000_000_123_456_789,
            datacontenttype: "application/json".into(),
            subject: Some("t1".into()),
            data: bytes::Bytes::from_static(b"{\"SensorData\":21.5}"),
            client_id: "edge-7".into(),
            sequence: 42,
            previous_sequence: 41,
            sidecar_id: "S1".into(),
            sidecar_received_unix_nanos: 1_795_000_000_223_000_000,
            master_id: "M1".into(),
            master_received_unix_nanos: 1_795_000_000_224_500_000,
            ..Event::default()
        };
        event.extensions.insert("location".into(), "vienna".into());
        event.extensions.insert("building".into(), "b2".into());
        event
    }

    #[test]
    fn binary_mode_puts_attributes_in_ce_headers() {
        let headers = headers(&event());
        let expected: Vec<(String, String)> = [
            ("ce_id", "edge-7-42"),
            ("ce_source", "smesh://edge-7/sensor/t1"),
            ("ce_specversion", "1.0"),
            ("ce_type", "dev.smesh.sensor.reading"),
            ("ce_time", "2026-11-18T11:06:40.123456789Z"),
            ("ce_subject", "t1"),
            ("content-type", "application/json"),
            ("smesh-previous", "41"),
            ("smesh-sidecar", "S1 2026-11-18T11:06:40.223000Z"),
            ("smesh-master", "M1 2026-11-18T11:06:40.224500Z"),
            ("ce_building", "b2"),
            ("ce_location", "vienna"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(headers, expected);
    }

    #[test]
    fn unset_optional_attributes_have_no_header() {
        let mut e = event();
        e.subject = None;
        e.datacontenttype.clear();
        e.time_unix_nanos = 0;
        e.extensions.clear();
        e.sidecar_id.clear();
        e.master_id.clear();
        let names: Vec<String> = headers(&e).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            names,
            [
                "ce_id",
                "ce_source",
                "ce_specversion",
                "ce_type",
                "smesh-previous"
            ]
        );
    }

    #[test]
    fn the_key_is_the_client_id() {
        let e = event();
        assert_eq!(key(&e), "edge-7");
    }
}
