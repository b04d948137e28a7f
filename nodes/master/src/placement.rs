//! Where a batch's events went in Kafka, told back in its ack.
//!
//! Kafka's delivery reports come one per event; a batch's placements are
//! runs of them: one client identity's events, in order, in one partition.
//! A client batch holds one identity, so a batch usually makes one
//! placement whatever its size.

use smesh_core::time::now_unix_nanos;
use smesh_proto::mesh::Placement;

/// Folds delivery reports into placements.
#[derive(Debug)]
pub struct Placements<'a> {
    topic: &'a str,
    master: &'a str,
    placed: Vec<Placement>,
}

impl<'a> Placements<'a> {
    /// Placements of events written to `topic` by master `master`.
    pub fn new(topic: &'a str, master: &'a str) -> Self {
        Self {
            topic,
            master,
            placed: Vec::new(),
        }
    }

    /// Event `sequence` of (`client`, `incarnation`) is at `offset` of
    /// `partition`, as Kafka acknowledged now.
    pub fn push(
        &mut self,
        client: &str,
        incarnation: u64,
        sequence: u64,
        partition: i32,
        offset: i64,
    ) {
        let now = now_unix_nanos();
        if let Some(run) = self.placed.last_mut()
            && run.client_id == client
            && run.incarnation == incarnation
            && run.partition == partition
            && sequence > run.last_sequence
            && offset > run.last_offset
        {
            run.last_sequence = sequence;
            run.last_offset = offset;
            run.written_unix_nanos = now;
            return;
        }
        self.placed.push(Placement {
            client_id: client.to_string(),
            incarnation,
            first_sequence: sequence,
            last_sequence: sequence,
            topic: self.topic.to_string(),
            partition,
            first_offset: offset,
            last_offset: offset,
            master_id: self.master.to_string(),
            written_unix_nanos: now,
        });
    }

    /// Every placement of a transaction is written when it commits.
    pub fn written_at(&mut self, unix_nanos: i64) {
        for run in &mut self.placed {
            run.written_unix_nanos = unix_nanos;
        }
    }

    /// The placements, in the order their events were written.
    pub fn into_vec(self) -> Vec<Placement> {
        self.placed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(placements: Placements<'_>) -> Vec<(String, u64, u64, u64, i32, i64, i64)> {
        placements
            .into_vec()
            .into_iter()
            .map(|p| {
                (
                    p.client_id,
                    p.incarnation,
                    p.first_sequence,
                    p.last_sequence,
                    p.partition,
                    p.first_offset,
                    p.last_offset,
                )
            })
            .collect()
    }

    #[test]
    fn one_identitys_events_in_one_partition_make_one_run_whatever_lies_between() {
        let mut placements = Placements::new("t", "M1");
        placements.push("c1", 7, 10, 0, 100);
        // Other clients' records and transaction markers take offsets too.
        placements.push("c1", 7, 11, 0, 104);
        placements.push("c1", 7, 13, 0, 105);
        assert_eq!(
            runs(placements),
            [("c1".to_string(), 7, 10, 13, 0, 100, 105)]
        );
    }

    #[test]
    fn a_new_identity_partition_or_a_step_back_starts_a_new_run() {
        let mut placements = Placements::new("t", "M1");
        placements.push("c1", 7, 1, 0, 10);
        placements.push("c2", 7, 2, 0, 11);
        placements.push("c2", 8, 3, 0, 12);
        placements.push("c2", 8, 4, 1, 13);
        placements.push("c2", 8, 2, 1, 14);
        placements.push("c2", 8, 5, 1, 9);
        assert_eq!(
            runs(placements)
                .iter()
                .map(|r| (r.2, r.3, r.5, r.6))
                .collect::<Vec<_>>(),
            [
                (1, 1, 10, 10),
                (2, 2, 11, 11),
                (3, 3, 12, 12),
                (4, 4, 13, 13),
                (2, 2, 14, 14),
                (5, 5, 9, 9)
            ]
        );
    }

    #[test]
    fn placements_name_the_topic_and_the_master() {
        let mut placements = Placements::new("events", "M2");
        placements.push("c1", 1, 1, 3, 42);
        placements.written_at(1_000);
        let placed = placements.into_vec();
        assert_eq!(placed[0].topic, "events");
        assert_eq!(placed[0].master_id, "M2");
        assert_eq!(placed[0].written_unix_nanos, 1_000);
    }
}
