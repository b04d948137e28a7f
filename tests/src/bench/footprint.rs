//! Memory: resident set size of idle nodes, and of a sidecar holding many
//! connected (idle) clients, opened from this process over the real protocol.

use std::time::Duration;

use smesh_core::link::{self, LinkTimeouts};
use smesh_core::peers::Peer;
use smesh_proto::mesh::downlink::Frame as Down;
use smesh_proto::mesh::uplink::Frame as Up;
use smesh_proto::mesh::{Hello, NodeKind, Uplink};

use crate::nodes::Process;

/// VmRSS of a process in KiB (Linux).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

pub fn rss_mib(process: &Process) -> f64 {
    process.pid().and_then(rss_kib).unwrap_or(0) as f64 / 1024.0
}

/// Opens `n` client streams to the sidecar and answers their pings, until
/// the returned guard is dropped.
pub async fn connect_idle_clients(port: u16, n: usize) -> Vec<tokio::task::JoinHandle<()>> {
    let peer = Peer::new("S1", "127.0.0.1", port);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let hello = Hello {
            node_id: format!("idle-{i}"),
            kind: NodeKind::Client as i32,
            version: smesh_core::VERSION.to_string(),
            incarnation: String::new(),
        };
        let mut link = match link::open(&peer, hello, LinkTimeouts::default(), None).await {
            Ok(link) => link,
            Err(err) => panic!("idle client {i} could not connect: {err}"),
        };
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(frame)) = link.inbound.message().await {
                if let Some(Down::Ping(ping)) = frame.frame {
                    let pong = Uplink {
                        frame: Some(Up::Pong(smesh_core::heartbeat::answer(&ping))),
                    };
                    if link.tx.send(pong).await.is_err() {
                        return;
                    }
                }
            }
        }));
    }
    tasks
}

/// Lets memory settle after a change.
pub async fn settle() {
    tokio::time::sleep(Duration::from_secs(3)).await;
}
