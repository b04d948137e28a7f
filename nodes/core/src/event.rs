//! Checks on events that cross a node boundary.
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

/// The CloudEvents id smesh gives the `sequence`-th event of a client.
pub fn event_id(client_id: &str, sequence: u64) -> String {
    format!("{client_id}-{sequence}")
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
    let size = encoded_len(event);
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
            id: event_id("c1", 7),
            source: "/sensors/t1".into(),
            r#type: "dev.smesh.sensor.reading".into(),
            specversion: SPEC_VERSION.into(),
            client_id: "c1".into(),
            sequence: 7,
            data: bytes::Bytes::from_static(b"{}"),
            ..Event::default()
        }
    }

    #[test]
    fn a_complete_event_is_valid() {
        assert_eq!(event().id, "c1-7");
        assert_eq!(validate(&event(), 1000), Ok(()));
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
