//! A peer list that follows its file and the names in it while the node
//! runs.
//!
//! [`LivePeers`] publishes the node's peers on a `watch` channel that the
//! node's [`crate::link::Link`] reads. It looks at the file's bytes every
//! [`PEER_LIST_POLL`] (as [`crate::tls::NodeTls::keep_fresh`] does for
//! certificates) and whenever the binary says "reload" (on SIGHUP, see
//! [`crate::shutdown::hangups`]); it resolves host names again every
//! [`RESOLVE_EVERY`] and on every reload ([`crate::peers::resolve`]). An
//! edit that cannot be used (a malformed row, an empty list, an unreadable
//! file) is reported with file and line, at most every
//! [`crate::ratelimit::DEFAULT_EVERY`], and the last good list is kept.
//! What the link does with a changed list is in [`crate::link`].

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::peers::{self, Peer};
use crate::ratelimit::LogEvery;

/// How often the peer list's file is looked at.
pub const PEER_LIST_POLL: Duration = Duration::from_secs(2);

/// How often host names in the list are resolved again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(30);

/// "Reload now" from the binary (a SIGHUP); a closed channel never fires.
pub type Reloads = watch::Receiver<()>;

/// A [`Reloads`] that never fires: for nodes built in code.
pub fn no_reloads() -> Reloads {
    watch::channel(()).1
}

/// Resolves when the binary asks for a reload; never if it cannot.
pub async fn reload_asked(reloads: &mut Reloads) {
    if reloads.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A fixed list, as a link takes it: for nodes and tests without a file.
pub fn fixed(peers: Vec<Peer>) -> watch::Receiver<Vec<Peer>> {
    watch::channel(peers).1
}

/// The task that keeps a node's peer list current.
#[derive(Debug)]
pub struct LivePeers {
    /// The list's file (`None`: only the names are resolved again).
    file: Option<PathBuf>,
    /// Fills rows without a port.
    default_port: u16,
    /// The rows of the last good list, as written.
    rows: Vec<Peer>,
    /// The file's bytes when they were last read (good or not).
    last_bytes: Option<Vec<u8>>,
    /// How often names are resolved again.
    resolve_every: Duration,
    /// The resolved list, for the link.
    published: watch::Sender<Vec<Peer>>,
    /// Refused edits and unreadable files, one warning per interval.
    refusals: LogEvery,
    /// Names that do not resolve, one warning per interval.
    unresolved: LogEvery,
}

impl LivePeers {
    /// Follows `file`, whose rows (already loaded and checked) are `rows`;
    /// the receiver carries them as they are until [`LivePeers::resolve_now`]
    /// or [`LivePeers::run`] resolves them.
    pub fn new(
        file: Option<PathBuf>,
        default_port: u16,
        rows: Vec<Peer>,
    ) -> (Self, watch::Receiver<Vec<Peer>>) {
        let (published, receiver) = watch::channel(rows.clone());
        let last_bytes = file.as_ref().and_then(|path| std::fs::read(path).ok());
        (
            Self {
                file,
                default_port,
                rows,
                last_bytes,
                resolve_every: RESOLVE_EVERY,
                published,
                refusals: LogEvery::default(),
                unresolved: LogEvery::default(),
            },
            receiver,
        )
    }

    /// Resolves names this often instead of every [`RESOLVE_EVERY`].
    pub fn resolve_every(mut self, every: Duration) -> Self {
        self.resolve_every = every;
        self
    }

    /// Resolves the rows' host names and publishes the peers if they changed.
    pub async fn resolve_now(&mut self) {
        let (peers, problems) = peers::resolve(&self.rows, peers::system_lookup).await;
        if !problems.is_empty()
            && let Some(unlogged) = self.unresolved.tick()
        {
            warn!(problems = %problems.join("; "), also_since_last_log = unlogged, "peer names do not resolve");
        }
        self.published.send_if_modified(|current| {
            if *current == peers {
                return false;
            }
            info!(
                peers = %peers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                "peer list in use"
            );
            *current = peers;
            true
        });
    }

    /// Reads the file if its bytes changed (or `forced`): `true` when it
    /// holds new rows. A list that cannot be used is reported and the last
    /// good one kept.
    async fn reread(&mut self, forced: bool) -> bool {
        let Some(path) = self.file.clone() else {
            return false;
        };
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(source) => {
                let err = peers::PeerListError::Read { path, source };
                self.refused(&err.to_string());
                return false;
            }
        };
        if !forced && self.last_bytes.as_ref() == Some(&bytes) {
            return false;
        }
        self.last_bytes = Some(bytes);
        let parsed = peers::parse(
            self.last_bytes.as_deref().unwrap_or_default(),
            &path,
            self.default_port,
        );
        match parsed {
            Ok(rows) if rows == self.rows => false,
            Ok(rows) => {
                let names = |list: &[Peer], other: &[Peer]| {
                    list.iter()
                        .filter(|p| !other.contains(p))
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                info!(
                    file = %path.display(),
                    added = %names(&rows, &self.rows),
                    removed = %names(&self.rows, &rows),
                    "peer list changed; removed peers are drained and left"
                );
                self.rows = rows;
                true
            }
            Err(err) => {
                // Forget these bytes so the warning repeats (rate-limited)
                // until the file is fixed.
                self.last_bytes = None;
                self.refused(&err.to_string());
                false
            }
        }
    }

    fn refused(&mut self, problem: &str) {
        if let Some(unlogged) = self.refusals.tick() {
            warn!(%problem, also_since_last_log = unlogged, "peer list changed but cannot be used; keeping the last good list");
        }
    }

    /// Follows the file and the names until `shutdown`; `reloads` asks for
    /// a reread and a resolution at once.
    pub async fn run(mut self, mut reloads: Reloads, shutdown: CancellationToken) {
        let mut poll = tokio::time::interval(PEER_LIST_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut resolve_at = Instant::now();
        loop {
            let forced = tokio::select! {
                () = shutdown.cancelled() => return,
                _ = poll.tick() => false,
                () = reload_asked(&mut reloads) => {
                    info!(file = ?self.file, "reloading the peer list");
                    true
                }
            };
            let changed = self.reread(forced).await;
            if changed || forced || Instant::now() >= resolve_at {
                self.resolve_now().await;
                resolve_at = Instant::now() + self.resolve_every;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn follows_edits_and_keeps_the_last_good_list() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("clientCon.csv");
        std::fs::write(&path, "S1;127.0.0.1:9001;\n").expect("write");
        let rows = peers::load(&path, 9000).expect("list");
        let (mut live, peers) = LivePeers::new(Some(path.clone()), 9000, rows);
        let ids = || {
            peers
                .borrow()
                .iter()
                .map(|p| p.id.clone())
                .collect::<Vec<_>>()
        };
        assert!(
            !live.reread(false).await,
            "unchanged bytes are not read again"
        );
        std::fs::write(&path, "S1;127.0.0.1:9001;\nS2;127.0.0.1:9002;\n").expect("write");
        assert!(live.reread(false).await);
        live.resolve_now().await;
        assert_eq!(ids(), ["S1", "S2"]);
        for broken in ["S1;127.0.0.1:9001;\nS2;127.0.0.1:99999;\n", "# all gone\n"] {
            std::fs::write(&path, broken).expect("write");
            assert!(!live.reread(false).await, "{broken:?} is refused");
            live.resolve_now().await;
            assert_eq!(ids(), ["S1", "S2"], "the last good list stays");
        }
        std::fs::remove_file(&path).expect("remove");
        assert!(!live.reread(true).await);
        std::fs::write(&path, "S2;127.0.0.1:9002;\n").expect("write");
        assert!(live.reread(false).await);
        live.resolve_now().await;
        assert_eq!(ids(), ["S2"]);
    }
}
