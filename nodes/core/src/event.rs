//! Event ids, and checks on events that cross a node boundary.
//!
//! An id names one event of one client for good: [`event_id`] builds it from
//! the client id, the client's numbering incarnation and the sequence number,
//! and [`parse_event_id`] takes it apart again.
//!
//! Clients check what their sources produce before sending it; masters check
//! again what arrives, because a peer is not to be trusted with Kafka. An
//! event that fails here can never be delivered, so it is rejected for good
//! rather than retried.

use prost::Message;
use smesh_proto::mesh::Event;

/// CloudEvents spec version smesh produces.
pub const SPEC_VERSION: &str = "1.0";

/// Attribute names an extension may not take (CloudEvents core attributes and ours).
const RESERVED: &[&str] = &[
    "id",
    "source",
    "type",
    "specversion",
    "time",
    "datacontenttype",
    "dataschema",
    "subject",
    "data",
];

/// The CloudEvents id smesh gives the `sequence`-th event of a client's
/// numbering `incarnation`: `<client id>-<incarnation>-<sequence>`, the
/// incarnation as 16 lower-case hex digits, the sequence in decimal.
///
/// A client starts a new incarnation whenever it cannot be sure where its
/// numbering stopped (its state file is missing or unreadable), so an id is
/// never given to two events, and a resend of an event carries its id
/// unchanged. Incarnation 0 stands for events numbered before incarnations
/// existed; their ids were `<client id>-<sequence>`, and they keep them.
pub fn event_id(client_id: &str, incarnation: u64, sequence: u64) -> String {
    if incarnation == LEGACY_INCARNATION {
        format!("{client_id}-{sequence}")
    } else {
        format!("{client_id}-{incarnation:016x}-{sequence}")
    }
}

/// The incarnation of events numbered before incarnations existed (ids
/// `<client id>-<sequence>`), and of events from clients that do not send one.
pub const LEGACY_INCARNATION: u64 = 0;

/// The incarnation and sequence number in an id made by [`event_id`] for
/// `client_id`, or `None` if `id` is not one. Legacy ids give incarnation 0.
pub fn parse_event_id(client_id: &str, id: &str) -> Option<(u64, u64)> {
    let rest = id.strip_prefix(client_id)?.strip_prefix('-')?;
    let (numbering, sequence) = match rest.rsplit_once('-') {
        Some((incarnation, sequence)) => (Some(incarnation), sequence),
        None => (None, rest),
    };
    if sequence.is_empty() || !sequence.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sequence = sequence.parse().ok()?;
    let incarnation = match numbering {
        None => LEGACY_INCARNATION,
        Some(hex)
            if hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            u64::from_str_radix(hex, 16)
                .ok()
                .filter(|i| *i != LEGACY_INCARNATION)?
        }
        Some(_) => return None,
    };
    Some((incarnation, sequence))
}

/// Why an event can never be delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    /// Larger than the node accepts (Kafka would refuse it too).
    #[error("event {id} is {size} bytes, more than the limit of {max} bytes")]
    TooLarge {
        /// The event's id.
        id: String,
        /// Its encoded size.
        size: usize,
        /// The limit it broke.
        max: usize,
    },
    /// A required CloudEvents attribute is empty.
    #[error("event {id:?} has no {attribute}")]
    Missing {
        /// The event's id (may itself be the empty attribute).
        id: String,
        /// Which attribute.
        attribute: &'static str,
    },
    /// An attribute has a value Kafka headers or consumers cannot carry.
    #[error("event {id}: attribute {attribute} {reason}")]
    BadAttribute {
        /// The event's id.
        id: String,
        /// Which attribute (or extension name).
        attribute: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Size of the event as it travels on the wire.
pub fn encoded_len(event: &Event) -> usize {
    event.encoded_len()
}

/// Size of the event as its client made it: what `--max-event-bytes`
/// limits at every tier. What the tiers add in transit (the sidecar's word
/// on the client's certificate, the hop stamps) does not count, so an event
/// the client sent within the limit stays within it all the way.
pub fn limited_len(event: &Event) -> usize {
    use prost::encoding::{bool as boolean, int64, string};
    let text = |tag, value: &String| {
        if value.is_empty() {
            0
        } else {
            string::encoded_len(tag, value)
        }
    };
    let time = |tag, value: &i64| {
        if *value == 0 {
            0
        } else {
            int64::encoded_len(tag, value)
        }
    };
    let transit = if event.client_authenticated {
        boolean::encoded_len(13, &true)
    } else {
        0
    } + text(15, &event.sidecar_id)
        + time(16, &event.sidecar_received_unix_nanos)
        + text(17, &event.master_id)
        + time(18, &event.master_received_unix_nanos);
    encoded_len(event).saturating_sub(transit)
}

/// The encoded size of a batch's events: what a batch counts against a
/// stream's byte window (`Welcome.window_bytes`), the same at both ends.
pub fn batch_bytes(events: &[Event]) -> u64 {
    events.iter().map(|event| encoded_len(event) as u64).sum()
}

/// Checks required attributes, attribute syntax and size.
pub fn validate(event: &Event, max_bytes: usize) -> Result<(), InvalidEvent> {
    let id = || event.id.clone();
    for (attribute, value) in [
        ("id", &event.id),
        ("source", &event.source),
        ("type", &event.r#type),
        ("specversion", &event.specversion),
        ("client_id", &event.client_id),
    ] {
        if value.is_empty() {
            return Err(InvalidEvent::Missing {
                id: id(),
                attribute,
            });
        }
    }
    let bad = |attribute: &str, reason| InvalidEvent::BadAttribute {
        id: id(),
        attribute: attribute.to_string(),
        reason,
    };
    let strings = [
        ("id", Some(event.id.as_str())),
        ("source", Some(event.source.as_str())),
        ("type", Some(event.r#type.as_str())),
        ("specversion", Some(event.specversion.as_str())),
        ("datacontenttype", Some(event.datacontenttype.as_str())),
        ("subject", event.subject.as_deref()),
        ("client_id", Some(event.client_id.as_str())),
    ];
    for (attribute, value) in strings {
        if value.is_some_and(has_control) {
            return Err(bad(attribute, "contains control characters"));
        }
    }
    for (name, value) in &event.extensions {
        if !is_extension_name(name) {
            return Err(bad(
                name,
                "is not a valid extension name (1-20 lower-case letters or digits)",
            ));
        }
        if RESERVED.contains(&name.as_str()) {
            return Err(bad(name, "is a reserved CloudEvents attribute name"));
        }
        if has_control(value) {
            return Err(bad(name, "contains control characters"));
        }
    }
    // The master's resend memory goes by (client, incarnation, sequence),
    // consumers by id: the two must name the same event.
    if event.incarnation != LEGACY_INCARNATION
        && parse_event_id(&event.client_id, &event.id) != Some((event.incarnation, event.sequence))
    {
        return Err(bad(
            "id",
            "does not match the event's client id, incarnation and sequence",
        ));
    }
    // A link forward (or to itself) would make `audit` follow a loop.
    if event.previous_sequence != 0 && event.previous_sequence >= event.sequence {
        return Err(bad(
            "previous_sequence",
            "is not below the event's sequence",
        ));
    }
    // Stamped in transit and not counted in the size: bounded on their own.
    for (attribute, node) in [
        ("sidecar_id", &event.sidecar_id),
        ("master_id", &event.master_id),
    ] {
        if node.len() > crate::ids::MAX_ID_BYTES || has_control(node) {
            return Err(bad(attribute, "is not a node id"));
        }
    }
    let size = limited_len(event);
    if size > max_bytes {
        return Err(InvalidEvent::TooLarge {
            id: id(),
            size,
            max: max_bytes,
        });
    }
    Ok(())
}

/// CloudEvents extension names: lower-case ASCII letters and digits, at most 20.
pub fn is_extension_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 20
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn has_control(value: &str) -> bool {
    value.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            id: event_id("c1", 0xab, 7),
            source: "/sensors/t1".into(),
            r#type: "dev.smesh.sensor.reading".into(),
            specversion: SPEC_VERSION.into(),
            client_id: "c1".into(),
            sequence: 7,
            incarnation: 0xab,
            data: bytes::Bytes::from_static(b"{}"),
            ..Event::default()
        }
    }

    #[test]
    fn a_complete_event_is_valid() {
        assert_eq!(event().id, "c1-00000000000000ab-7");
        assert_eq!(validate(&event(), 1000), Ok(()));
    }

    #[test]
    fn ids_carry_the_incarnation_and_parse_back() {
        let id = event_id("edge-7", 0x0123_4567_89ab_cdef, 42);
        assert_eq!(id, "edge-7-0123456789abcdef-42");
        assert_eq!(
            parse_event_id("edge-7", &id),
            Some((0x0123_4567_89ab_cdef, 42))
        );
        // Two incarnations never share an id, whatever their sequences.
        assert_ne!(event_id("c1", 1, 5), event_id("c1", 2, 5));
        // Legacy ids keep their form and parse as incarnation 0.
        assert_eq!(event_id("edge-7", LEGACY_INCARNATION, 42), "edge-7-42");
        assert_eq!(parse_event_id("edge-7", "edge-7-42"), Some((0, 42)));
        // A client id that looks like an incarnation is still told apart.
        let odd = "dev-0123456789abcdef";
        assert_eq!(parse_event_id(odd, &format!("{odd}-5")), Some((0, 5)));
        for foreign in [
            "c2-5",
            "c1-",
            "c1-x",
            "c1-ABCDEF0123456789-5",
            "c1-12-5",
            "c1-0000000000000000-5",
        ] {
            assert_eq!(parse_event_id("c1", foreign), None, "{foreign}");
        }
    }

    #[test]
    fn what_the_tiers_stamp_in_transit_does_not_count_against_the_limit() {
        let mut e = event();
        let size = encoded_len(&e);
        assert_eq!(validate(&e, size), Ok(()));
        e.client_authenticated = true;
        e.sidecar_id = "sidecar-eu-west-1a-07".into();
        e.sidecar_received_unix_nanos = 1_795_000_000_123_456_789;
        e.master_id = "M1".into();
        e.master_received_unix_nanos = 1_795_000_000_123_456_789;
        assert!(encoded_len(&e) > size);
        assert_eq!(limited_len(&e), size);
        assert_eq!(
            validate(&e, size),
            Ok(()),
            "still within the client's limit"
        );
        // But a stamp is no place to hide data.
        e.sidecar_id = "s".repeat(crate::ids::MAX_ID_BYTES + 1);
        assert!(matches!(
            validate(&e, size),
            Err(InvalidEvent::BadAttribute { attribute, .. }) if attribute == "sidecar_id"
        ));
    }

    #[test]
    fn a_link_to_the_previous_event_must_point_back() {
        let mut e = event();
        e.previous_sequence = 6;
        assert_eq!(validate(&e, 1000), Ok(()));
        for forward in [7, 8] {
            e.previous_sequence = forward;
            assert!(
                matches!(validate(&e, 1000), Err(InvalidEvent::BadAttribute { ref attribute, .. }) if attribute == "previous_sequence"),
                "{forward}"
            );
        }
    }

    #[test]
    fn missing_attributes_are_named() {
        let mut e = event();
        e.source.clear();
        assert!(matches!(
            validate(&e, 1000),
            Err(InvalidEvent::Missing {
                attribute: "source",
                ..
            })
        ));
    }

    #[test]
    fn control_characters_and_bad_extensions_are_refused() {
        let mut e = event();
        e.subject = Some("line\nbreak".into());
        assert!(validate(&e, 1000).is_err());
        let mut e = event();
        e.extensions.insert("Bad-Name".into(), "x".into());
        assert!(validate(&e, 1000).is_err());
        let mut e = event();
        e.extensions.insert("time".into(), "x".into());
        assert!(validate(&e, 1000).is_err());
        let mut e = event();
        e.extensions.insert("sensorid".into(), "t1".into());
        assert_eq!(validate(&e, 1000), Ok(()));
    }

    #[test]
    fn an_id_that_names_another_event_is_refused() {
        let mut e = event();
        e.sequence = 8;
        assert!(matches!(
            validate(&e, 1000),
            Err(InvalidEvent::BadAttribute { attribute, .. }) if attribute == "id"
        ));
        let mut e = event();
        e.incarnation = 0xac;
        assert!(validate(&e, 1000).is_err());
        // Events without an incarnation keep whatever id they have.
        let mut e = event();
        e.incarnation = LEGACY_INCARNATION;
        assert_eq!(validate(&e, 1000), Ok(()));
    }

    #[test]
    fn oversized_events_say_how_large() {
        let mut e = event();
        e.data = vec![0u8; 2000].into();
        let err = validate(&e, 1000).expect_err("too large");
        assert!(matches!(err, InvalidEvent::TooLarge { max: 1000, .. }));
        assert!(
            err.to_string()
                .contains("more than the limit of 1000 bytes")
        );
    }
}
