//! Reading a topic back and judging the delivery.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// One Kafka record as smesh wrote it.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub value: Vec<u8>,
    pub headers: HashMap<String, String>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The sequence number from `ce_id` (`<client>-<incarnation>-<sequence>`,
    /// or `<client>-<sequence>` for events numbered before incarnations).
    pub fn sequence(&self) -> Option<u64> {
        let (_, sequence) = smesh_core::event::parse_event_id(&self.key, self.header("ce_id")?)?;
        Some(sequence)
    }

    /// The client's numbering incarnation from `ce_id` (0 when it has none).
    pub fn incarnation(&self) -> Option<u64> {
        let (incarnation, _) = smesh_core::event::parse_event_id(&self.key, self.header("ce_id")?)?;
        Some(incarnation)
    }
}

fn consumer(bootstrap: &str, isolation: Isolation) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("smesh-test-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set(
            "isolation.level",
            match isolation {
                Isolation::ReadCommitted => "read_committed",
                Isolation::ReadUncommitted => "read_uncommitted",
            },
        )
        .create()
        .expect("create consumer")
}

/// What a test's consumer sees of transactions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// Only committed transactions (and records written without one).
    ReadCommitted,
    /// Everything written, aborted transactions too.
    ReadUncommitted,
}

/// Creates `topic` with `partitions` partitions and topic-level `configs`
/// (for a test that needs a broker-side limit), waiting until it exists.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("create admin client");
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (key, value) in configs {
        new = new.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&new], &options)
        .await
        .expect("CreateTopics answered");
    for result in results {
        result.unwrap_or_else(|(name, code)| panic!("creating topic {name}: {code}"));
    }
}

/// Reads every record of `topic` that exists now, from the beginning, once
/// at least `at_least` are there (waiting up to `within` for them).
pub fn read_topic(bootstrap: &str, topic: &str, at_least: usize, within: Duration) -> Vec<Record> {
    read_topic_as(
        bootstrap,
        topic,
        at_least,
        within,
        Isolation::ReadUncommitted,
    )
}

/// [`read_topic`] as a consumer with `isolation` sees the topic.
pub fn read_topic_as(
    bootstrap: &str,
    topic: &str,
    at_least: usize,
    within: Duration,
    isolation: Isolation,
) -> Vec<Record> {
    let deadline = Instant::now() + within;
    loop {
        let records = read_all_as(bootstrap, topic, isolation);
        if records.len() >= at_least {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of at least {at_least} records arrived in {topic} within {within:?}",
            records.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every record in the topic right now (up to the high watermarks).
pub fn read_all(bootstrap: &str, topic: &str) -> Vec<Record> {
    read_all_as(bootstrap, topic, Isolation::ReadUncommitted)
}

/// [`read_all`] as a consumer with `isolation` sees the topic. With
/// `ReadCommitted`, the read waits (up to 60 s) for transactions open at
/// the high watermarks to end.
pub fn read_all_as(bootstrap: &str, topic: &str, isolation: Isolation) -> Vec<Record> {
    let consumer = consumer(bootstrap, isolation);
    let metadata = match consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) {
        Ok(metadata) => metadata,
        Err(_) => return Vec::new(),
    };
    let Some(meta) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Vec::new();
    };
    let mut ends = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in meta.partitions() {
        let id = partition.id();
        let Ok((low, high)) = consumer.fetch_watermarks(topic, id, Duration::from_secs(10)) else {
            return Vec::new();
        };
        if high > low {
            ends.insert(id, high);
            assignment
                .add_partition_offset(topic, id, Offset::Beginning)
                .expect("add partition");
        }
    }
    if ends.is_empty() {
        return Vec::new();
    }
    consumer.assign(&assignment).expect("assign");
    let mut records = Vec::new();
    let mut done: HashSet<i32> = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.len() < ends.len() {
        assert!(
            Instant::now() < deadline,
            "reading {topic} took more than 60s"
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            // Transaction markers (and aborted records) are never handed
            // out: the position tells whether the end was passed.
            if let Ok(positions) = consumer.position() {
                for element in positions.elements() {
                    if let (Offset::Offset(at), Some(end)) =
                        (element.offset(), ends.get(&element.partition()))
                        && at >= *end
                    {
                        done.insert(element.partition());
                    }
                }
            }
            continue;
        };
        // A broker just thawed or restarted answers with errors a while.
        let Ok(message) = message else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let mut headers = HashMap::new();
        if let Some(h) = message.headers() {
            for header in h.iter() {
                headers.insert(
                    header.key.to_string(),
                    String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        let partition = message.partition();
        let offset = message.offset();
        records.push(Record {
            partition,
            offset,
            key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            value: message.payload().unwrap_or_default().to_vec(),
            headers,
        });
        if ends.get(&partition).is_some_and(|end| offset + 1 >= *end) {
            done.insert(partition);
        }
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    records
}

/// Reads the topic until every event in `sent` has arrived (duplicates do
/// not count), or `within` has passed; returns the judgement of the last read.
pub async fn read_until_complete(
    bootstrap: &str,
    topic: &str,
    sent: &BTreeMap<String, Vec<Vec<u8>>>,
    within: Duration,
) -> (Vec<Record>, Verdict) {
    read_until_complete_as(bootstrap, topic, sent, within, Isolation::ReadUncommitted).await
}

/// [`read_until_complete`] as a consumer with `isolation` sees the topic.
pub async fn read_until_complete_as(
    bootstrap: &str,
    topic: &str,
    sent: &BTreeMap<String, Vec<Vec<u8>>>,
    within: Duration,
    isolation: Isolation,
) -> (Vec<Record>, Verdict) {
    let deadline = Instant::now() + within;
    loop {
        let (bootstrap_owned, topic_owned) = (bootstrap.to_string(), topic.to_string());
        let records = tokio::task::spawn_blocking(move || {
            read_all_as(&bootstrap_owned, &topic_owned, isolation)
        })
        .await
        .expect("reader thread");
        let verdict = judge(&records, sent);
        if verdict.lost.is_empty() || Instant::now() >= deadline {
            return (records, verdict);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Checks that the client's `safeData.placed.csv` (beside `spool`) tells
/// where each of its `records` is: a row holds the record's sequence, its
/// partition, an offset range around its offset, and names the sidecar and
/// master its hop headers name. `records` are the client's, read back
/// without duplicates (as a `read_committed` consumer sees them after a
/// run without faults).
pub fn assert_placed(spool: &std::path::Path, client: &str, records: &[Record]) {
    use smesh_core::placed::PlacedRow;
    let path = smesh_client::placed::placed_path(spool);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("{client}: {}: {err}", path.display()));
    let rows: Vec<PlacedRow> = text.lines().filter_map(PlacedRow::parse).collect();
    assert_eq!(
        text.lines().count(),
        rows.len() + 1,
        "{client}: every line but the header is a placement"
    );
    let mine: Vec<&Record> = records.iter().filter(|r| r.key == client).collect();
    assert!(!mine.is_empty(), "{client}: no records to place");
    for record in &mine {
        let (Some(incarnation), Some(sequence)) = (record.incarnation(), record.sequence()) else {
            panic!("{client}: a record without a smesh ce_id: {record:?}");
        };
        let row = rows
            .iter()
            .find(|row| row.holds(incarnation, sequence))
            .unwrap_or_else(|| panic!("{client}: no placement holds sequence {sequence}"));
        let p = &row.placement;
        assert_eq!(
            p.partition, record.partition,
            "{client} {sequence}: partition"
        );
        assert!(
            (p.first_offset..=p.last_offset).contains(&record.offset),
            "{client} {sequence}: offset {} outside {}..={}",
            record.offset,
            p.first_offset,
            p.last_offset
        );
        let hop = |name: &str| {
            record
                .header(name)
                .and_then(|h| h.split_once(' '))
                .map(|(node, _)| node.to_string())
        };
        assert_eq!(
            hop("smesh-sidecar").as_deref(),
            Some(row.sidecar.as_str()),
            "{client} {sequence}: sidecar hop"
        );
        assert_eq!(
            hop("smesh-master").as_deref(),
            Some(p.master_id.as_str()),
            "{client} {sequence}: master hop"
        );
    }
    let placed: u64 = rows
        .iter()
        .map(|r| r.placement.last_sequence - r.placement.first_sequence + 1)
        .sum();
    assert!(
        placed >= mine.len() as u64,
        "{client}: {placed} events placed for {} records",
        mine.len()
    );
}

/// How a delivery went, per client.
#[derive(Debug, Default)]
pub struct Verdict {
    pub delivered: usize,
    pub lost: Vec<String>,
    pub unexpected: Vec<String>,
    pub duplicates: usize,
    pub out_of_order: Vec<String>,
}

impl Verdict {
    /// Fails the test if anything was lost, unexpected or out of order;
    /// prints duplicates (allowed under faults, but reported).
    pub fn assert_complete(&self, context: &str) {
        eprintln!(
            "{context}: {} delivered, {} duplicates, {} lost, {} out of order",
            self.delivered,
            self.duplicates,
            self.lost.len(),
            self.out_of_order.len()
        );
        assert!(
            self.lost.is_empty(),
            "{context}: lost {} events, e.g. {:?}",
            self.lost.len(),
            &self.lost[..self.lost.len().min(5)]
        );
        assert!(
            self.unexpected.is_empty(),
            "{context}: unexpected records {:?}",
            &self.unexpected[..self.unexpected.len().min(5)]
        );
        assert!(
            self.out_of_order.is_empty(),
            "{context}: out of order: {:?}",
            &self.out_of_order[..self.out_of_order.len().min(5)]
        );
    }
}

/// Compares what arrived with what each client sent (payloads in order).
/// Duplicates (same `ce_id`) are counted, the first copy is judged.
/// Each client's records must sit in one partition, in sending order.
pub fn judge(records: &[Record], sent: &BTreeMap<String, Vec<Vec<u8>>>) -> Verdict {
    let mut verdict = Verdict::default();
    let mut by_client: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for record in records {
        by_client
            .entry(record.key.as_str())
            .or_default()
            .push(record);
    }
    for (client, payloads) in sent {
        let arrived = by_client.remove(client.as_str()).unwrap_or_default();
        let partitions: HashSet<i32> = arrived.iter().map(|r| r.partition).collect();
        if partitions.len() > 1 {
            verdict
                .out_of_order
                .push(format!("{client}: spread over partitions {partitions:?}"));
        }
        let mut seen = HashSet::new();
        let mut firsts = Vec::new();
        for record in arrived {
            let id = record.header("ce_id").unwrap_or_default().to_string();
            if seen.insert(id) {
                firsts.push(record);
            } else {
                verdict.duplicates += 1;
            }
        }
        // Sequences grow within an incarnation; a client that lost its state
        // numbers again under a new one, and never goes back to an old one.
        let mut last: Option<(u64, u64)> = None;
        let mut left = HashSet::new();
        for record in &firsts {
            let incarnation = record.incarnation().unwrap_or(0);
            let sequence = record.sequence().unwrap_or(0);
            match last {
                Some((current, last_sequence))
                    if current == incarnation && sequence <= last_sequence =>
                {
                    verdict.out_of_order.push(format!(
                        "{client}: sequence {sequence} after {last_sequence}"
                    ));
                }
                Some((current, _)) if current != incarnation => {
                    left.insert(current);
                    if left.contains(&incarnation) {
                        verdict.out_of_order.push(format!(
                            "{client}: incarnation {incarnation:016x} again after {current:016x}"
                        ));
                    }
                }
                _ => {}
            }
            last = Some((incarnation, sequence));
        }
        let expected: HashSet<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let mut got: HashSet<&[u8]> = HashSet::new();
        let mut position = 0usize;
        for record in &firsts {
            if !expected.contains(record.value.as_slice()) {
                verdict.unexpected.push(format!(
                    "{client}: {}",
                    String::from_utf8_lossy(&record.value)
                ));
                continue;
            }
            got.insert(record.value.as_slice());
            // Payloads must come in the order they were written.
            match payloads[position..].iter().position(|p| p == &record.value) {
                Some(skip) => position += skip + 1,
                None => verdict.out_of_order.push(format!(
                    "{client}: {} arrived after a later payload",
                    String::from_utf8_lossy(&record.value)
                )),
            }
        }
        verdict.delivered += got.len();
        for payload in payloads {
            if !got.contains(payload.as_slice()) {
                verdict
                    .lost
                    .push(format!("{client}: {}", String::from_utf8_lossy(payload)));
            }
        }
    }
    for (client, rest) in by_client {
        verdict.unexpected.push(format!(
            "{} records from unknown client {client}",
            rest.len()
        ));
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64, id: &str, value: &str) -> Record {
        Record {
            partition: 0,
            offset,
            key: "c1".to_string(),
            value: value.as_bytes().to_vec(),
            headers: HashMap::from([("ce_id".to_string(), id.to_string())]),
        }
    }

    #[test]
    fn a_new_incarnation_numbers_again_but_an_old_one_never_returns() {
        let (a, b) = ("c1-00000000000000aa", "c1-00000000000000bb");
        let sent = BTreeMap::from([(
            "c1".to_string(),
            ["r1", "r2", "r3", "r4"]
                .map(|p| p.as_bytes().to_vec())
                .to_vec(),
        )]);
        let restarted = [
            record(0, &format!("{a}-1"), "r1"),
            record(1, &format!("{a}-2"), "r2"),
            record(2, &format!("{b}-1"), "r3"),
            record(3, &format!("{b}-2"), "r4"),
        ];
        let verdict = judge(&restarted, &sent);
        assert!(verdict.out_of_order.is_empty(), "{verdict:?}");
        assert!(verdict.lost.is_empty(), "{verdict:?}");
        let back = [
            record(0, &format!("{a}-1"), "r1"),
            record(1, &format!("{b}-1"), "r2"),
            record(2, &format!("{a}-5"), "r3"),
            record(3, &format!("{a}-6"), "r4"),
        ];
        assert_eq!(judge(&back, &sent).out_of_order.len(), 1);
        // A reused id hides the second event: reported as lost.
        let reused = [
            record(0, "c1-1", "r1"),
            record(1, "c1-2", "r2"),
            record(2, "c1-1", "r3"),
            record(3, "c1-2", "r4"),
        ];
        assert_eq!(judge(&reused, &sent).lost.len(), 2);
    }
}
