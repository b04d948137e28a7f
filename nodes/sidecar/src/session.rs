//! What a sidecar does with the streams its clients open.
//!
//! The stream protocol itself lives in [`smesh_core::session`]; here are
//! the sidecar's parts of it. A client's batch is handed to the master link
//! ([`Upstream`](crate::upstream::Upstream)), bounded: when the link holds
//! as much as it may, the session stops reading and HTTP/2 flow control
//! pushes back on the client. The batch settles when the master
//! acknowledged it. Each session keeps the client's row in the
//! [`ClientTable`](crate::clients::ClientTable) fresh, and marks each event
//! with whether its client proved its id with a certificate.

use smesh_core::metrics::Held;
use smesh_core::session::{Caller, Handler, SessionCommand, SessionView, Settlement, Tier};
use smesh_core::time::now_unix_nanos;
use smesh_proto::mesh::{Batch, ClientInfo, PeerStatus, Report};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::OwnedPermit;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::Status;

use crate::clients::{ConnId, TableEvent, TableHandle};
use crate::upstream::{Forward, UpstreamCounters};

/// The sidecar as the accepting tier of its clients' streams.
#[derive(Debug)]
pub struct ClientStreams {
    /// This sidecar's id, stamped on the events it takes (their hop).
    pub node_id: String,
    /// Batches to the master link.
    pub upstream: mpsc::Sender<Forward>,
    /// Whether the master link can deliver right now.
    pub ready: watch::Receiver<bool>,
    /// The client table.
    pub table: TableHandle,
    /// Where the sessions count clients and round trips for `/metrics`.
    pub counters: Arc<UpstreamCounters>,
}

impl Tier for ClientStreams {
    type Handler = ClientSession;

    fn ready(&self) -> bool {
        *self.ready.borrow()
    }

    async fn connected(
        &self,
        caller: &Caller,
        commands: mpsc::Sender<SessionCommand>,
    ) -> Result<ClientSession, Status> {
        let now = now_unix_nanos();
        let info = ClientInfo {
            client_id: caller.hello.node_id.clone(),
            address: caller.address.clone(),
            first_seen_unix_nanos: now,
            last_seen_unix_nanos: now,
            status: PeerStatus::Up as i32,
            version: caller.hello.version.clone(),
            certificate_not_after_unix_nanos: caller
                .certified_until
                .map_or(0, smesh_core::time::unix_nanos),
            ..ClientInfo::default()
        };
        self.table
            .send(TableEvent::Connected {
                conn: caller.conn,
                info: info.clone(),
                commands,
            })
            .await;
        Ok(ClientSession {
            _connected: Held::new(Arc::clone(&self.counters), |c| &c.clients_connected),
            counters: Arc::clone(&self.counters),
            conn: caller.conn,
            info,
            upstream: self.upstream.clone(),
            permit: None,
            table: self.table.clone(),
            authenticated: caller.identity.is_some(),
            node_id: self.node_id.clone(),
        })
    }
}

/// The sidecar's half of one client stream.
#[derive(Debug)]
pub struct ClientSession {
    /// Round trips, for `/metrics`.
    counters: Arc<UpstreamCounters>,
    /// Counts this stream in `clients_connected` while it lives.
    _connected: Held<UpstreamCounters>,
    conn: ConnId,
    /// The client's row, as the table will see it next.
    info: ClientInfo,
    upstream: mpsc::Sender<Forward>,
    /// Room on the master link, reserved before the batch is taken from it.
    permit: Option<OwnedPermit<Forward>>,
    table: TableHandle,
    /// Whether the client proved its id with a certificate: its events say
    /// so to the master, which takes client ids only from a sidecar that
    /// authenticated them.
    authenticated: bool,
    /// This sidecar's id.
    node_id: String,
}

impl ClientSession {
    fn update(&mut self, view: SessionView) {
        self.info.status = view.status as i32;
        self.info.rtt = Some(view.rtt);
        self.info.last_seen_unix_nanos = view.last_seen_unix_nanos;
        self.info.events_forwarded = view.events_forwarded;
        self.info.batches_forwarded = view.batches_forwarded;
        self.info.in_flight = view.in_flight;
    }
}

/// The master link stopped (the sidecar is shutting down).
fn link_gone() -> Status {
    Status::unavailable("sidecar is shutting down")
}

impl Handler for ClientSession {
    /// A client speaks only for itself.
    fn check(&self, batch: &Batch) -> Result<(), Status> {
        match batch
            .events
            .iter()
            .find(|e| e.client_id != self.info.client_id)
        {
            Some(foreign) => Err(Status::invalid_argument(format!(
                "event {} claims client {:?} on the stream of client {:?}",
                foreign.id, foreign.client_id, self.info.client_id
            ))),
            None => Ok(()),
        }
    }

    async fn reserve(&mut self, _batch: &Batch) -> Result<(), Status> {
        if self.permit.is_none() {
            let permit = self
                .upstream
                .clone()
                .reserve_owned()
                .await
                .map_err(|_| link_gone())?;
            self.permit = Some(permit);
        }
        Ok(())
    }

    async fn forward(&mut self, mut batch: Batch) -> Result<Settlement, Status> {
        self.reserve(&batch).await?;
        // The sidecar's word, never the client's.
        let received = now_unix_nanos();
        for event in &mut batch.events {
            event.client_authenticated = self.authenticated;
            event.sidecar_id.clone_from(&self.node_id);
            event.sidecar_received_unix_nanos = received;
        }
        let permit = self.permit.take().ok_or_else(link_gone)?;
        let (settled, settlement) = oneshot::channel();
        permit.send(Forward {
            bytes: smesh_core::event::batch_bytes(&batch.events),
            events: batch.events,
            settled,
        });
        Ok(Box::pin(async move {
            settlement.await.map_err(|_| link_gone())
        }))
    }

    async fn report(&mut self, report: Report) {
        self.info.backlog = report.backlog;
        self.info.counters = report.counters;
    }

    fn rtt(&mut self, rtt: Duration) {
        self.counters.client_rtt.observe(rtt);
    }

    fn heartbeat(&mut self, view: SessionView) {
        self.update(view);
        self.table.try_send(TableEvent::Update {
            conn: self.conn,
            info: self.info.clone(),
        });
    }

    async fn ended(mut self, view: SessionView, _reason: String) {
        self.update(view);
        self.info.status = PeerStatus::Down as i32;
        self.table
            .send(TableEvent::Disconnected {
                conn: self.conn,
                info: self.info,
            })
            .await;
    }
}
