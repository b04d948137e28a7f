//! Peer lists: `clientCon.csv` (the sidecars a client may use) and
//! `sidecarCon.csv` (the masters a sidecar may use).
//!
//! One peer per row, `;`-separated, as the prototype wrote them:
//!
//! ```text
//! # comments and blank lines are allowed
//! Sidecar3;192.168.14.123:9000;
//! Sidecar4;sidecar4.example;        <- no port: the tier's default port
//! ```
//!
//! The trailing `;` is optional, CRLF line ends are fine, IPv6 hosts are
//! written in brackets (`[::1]:9000`). Order matters when a node takes its
//! peers [`PeerOrder::Ordered`]: it tries them from the top and fails over
//! downwards. [`PeerOrder::Spread`] ranks them per node instead
//! ([`preference`]).
//!
//! A row may name a host that resolves to several addresses (a Kubernetes
//! headless service): [`resolve`] makes each address a peer of its own,
//! keeping the row's id and host name (TLS checks the certificate against
//! those) and dialing the address.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// One upstream peer a node may connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The operator's name for the peer (first column), shown in logs and the console.
    pub id: String,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port (the tier's default when the row names none).
    pub port: u16,
    /// The address [`resolve`] found for `host`, dialed instead of the
    /// name (`None`: dial `host` itself, resolving it at connect time).
    pub resolved: Option<SocketAddr>,
}

impl Peer {
    /// A peer dialed by its host name (or IP address).
    pub fn new(id: impl Into<String>, host: impl Into<String>, port: u16) -> Self {
        Self {
            id: id.into(),
            host: host.into(),
            port,
            resolved: None,
        }
    }

    /// `host:port`, with brackets around IPv6 addresses.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// What a connection goes to: the resolved address, else `host:port`.
    pub fn dial_address(&self) -> String {
        self.resolved
            .map_or_else(|| self.address(), |address| address.to_string())
    }

    /// The URI tonic dials.
    pub fn uri(&self) -> String {
        format!("http://{}", self.dial_address())
    }

    /// What tells this peer from the others of its list in [`preference`]:
    /// the id, and the address for a row that resolved to several.
    fn rank_key(&self) -> String {
        match self.resolved {
            Some(address) => format!("{}@{address}", self.id),
            None => self.id.clone(),
        }
    }
}

impl fmt::Display for Peer {
    /// `id (host:port)`; a resolved peer appends its address:
    /// `id@10.0.0.7:9000 (sidecars.example:9000)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.resolved {
            Some(address) => write!(f, "{}@{address} ({})", self.id, self.address()),
            None => write!(f, "{} ({})", self.id, self.address()),
        }
    }
}

/// How a node ranks the peers of its list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PeerOrder {
    /// The listed order, the same for every node: all take the first.
    Ordered,
    /// A ranking of its own per node, by rendezvous (highest random
    /// weight) hashing of the node's id with each peer's: nodes spread
    /// evenly, and adding or removing a peer moves only the nodes that
    /// ranked it first.
    #[default]
    Spread,
}

impl PeerOrder {
    /// The flag's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ordered => "ordered",
            Self::Spread => "spread",
        }
    }
}

/// `peers` in the order node `node_id` tries them: as listed for
/// [`PeerOrder::Ordered`]; by descending [`rendezvous_weight`] for
/// [`PeerOrder::Spread`] (ties, which need equal 64-bit hashes, keep the
/// listed order).
pub fn preference(peers: &[Peer], order: PeerOrder, node_id: &str) -> Vec<Peer> {
    let mut ranked = peers.to_vec();
    if order == PeerOrder::Spread {
        ranked.sort_by_cached_key(|peer| {
            std::cmp::Reverse(rendezvous_weight(node_id, &peer.rank_key()))
        });
    }
    ranked
}

/// The weight of `peer_key` for `node_id`: FNV-1a over both (separated by
/// a byte no id contains), finished with splitmix64 so that similar ids
/// (`client-17`, `client-18`) get unrelated weights. Written out rather
/// than taken from `std::hash`, whose output may change between Rust
/// releases: a node's ranking must not move when it is rebuilt.
pub fn rendezvous_weight(node_id: &str, peer_key: &str) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = FNV_OFFSET;
    for byte in node_id.bytes().chain([0xff]).chain(peer_key.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    // splitmix64's finaliser.
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// Makes every address a row's host name resolves to a peer of its own
/// (same id and host name, `resolved` set), in the rows' order, each row's
/// addresses sorted. A row naming an IP address stays as it is; a row
/// whose name does not resolve (or to nothing) also stays as it is, dialed
/// by name, and is named in the problems returned, so that one bad name
/// never empties a list.
pub async fn resolve<F, Fut>(rows: &[Peer], lookup: F) -> (Vec<Peer>, Vec<String>)
where
    F: Fn(String, u16) -> Fut,
    Fut: Future<Output = io::Result<Vec<SocketAddr>>>,
{
    let (mut peers, mut problems) = (Vec::with_capacity(rows.len()), Vec::new());
    for row in rows {
        if row.host.parse::<IpAddr>().is_ok() {
            peers.push(Peer {
                resolved: None,
                ..row.clone()
            });
            continue;
        }
        match lookup(row.host.clone(), row.port).await {
            Ok(found) if !found.is_empty() => {
                let found: BTreeSet<SocketAddr> = found.into_iter().collect();
                peers.extend(found.into_iter().map(|address| Peer {
                    resolved: Some(address),
                    ..row.clone()
                }));
            }
            outcome => {
                let why = match outcome {
                    Err(err) => err.to_string(),
                    Ok(_) => "no addresses".to_string(),
                };
                problems.push(format!(
                    "{} ({}) does not resolve: {why}; dialing it by name",
                    row.id,
                    row.address()
                ));
                peers.push(Peer {
                    resolved: None,
                    ..row.clone()
                });
            }
        }
    }
    (peers, problems)
}

/// The system's resolver, as [`resolve`] takes it.
pub async fn system_lookup(host: String, port: u16) -> io::Result<Vec<SocketAddr>> {
    Ok(tokio::net::lookup_host((host.as_str(), port))
        .await?
        .collect())
}

/// Why a peer list could not be used. Every variant names the file, and the
/// line where there is one, so an operator can go straight to it.
#[derive(Debug, thiserror::Error)]
pub enum PeerListError {
    /// The file cannot be read.
    #[error("cannot read peer list {path}: {source}")]
    Read {
        /// The peer list.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A row is not `<id>;host:port;`.
    #[error("{path}:{line}: {reason} (expected `<id>;host:port;`)")]
    Row {
        /// The peer list.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong with the row.
        reason: String,
    },
    /// Nothing but comments and blank lines: a node with no peer cannot work.
    #[error("{path}: lists no peers (expected rows like `<id>;host:port;`)")]
    Empty {
        /// The peer list.
        path: PathBuf,
    },
}

/// Reads and validates a peer list file; `default_port` fills rows without a port.
pub fn load(path: &Path, default_port: u16) -> Result<Vec<Peer>, PeerListError> {
    let text = std::fs::read(path).map_err(|source| PeerListError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path, default_port)
}

/// Parses peer-list text; `path` only labels errors.
pub fn parse(text: &[u8], path: &Path, default_port: u16) -> Result<Vec<Peer>, PeerListError> {
    let row_error = |line: u64, reason: String| PeerListError::Row {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let text = std::str::from_utf8(text).map_err(|err| {
        let line = text[..err.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        row_error(line as u64, "is not valid UTF-8 text".to_string())
    })?;
    let mut peers: Vec<Peer> = Vec::new();
    for (index, raw) in text.split('\n').enumerate() {
        let line = index as u64 + 1;
        let row = raw.strip_suffix('\r').unwrap_or(raw).trim();
        if row.is_empty() || row.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = row.split(';').map(str::trim).collect();
        let (id, address) = match fields.as_slice() {
            [id, address] | [id, address, ""] => (*id, *address),
            _ => {
                return Err(row_error(
                    line,
                    format!("has {} fields, expected an id and an address", fields.len()),
                ));
            }
        };
        if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(row_error(line, format!("invalid peer id {id:?}")));
        }
        let (host, port) =
            split_host_port(address, default_port).map_err(|reason| row_error(line, reason))?;
        if let Some(earlier) = peers.iter().find(|p| p.id == id) {
            return Err(row_error(
                line,
                format!(
                    "peer id {id:?} is listed twice (first as {})",
                    earlier.address()
                ),
            ));
        }
        peers.push(Peer::new(id, host, port));
    }
    if peers.is_empty() {
        return Err(PeerListError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(peers)
}

/// Splits `host[:port]`, `[v6][:port]`; a missing port is `default_port`.
fn split_host_port(address: &str, default_port: u16) -> Result<(String, u16), String> {
    if address.is_empty() {
        return Err("empty address".to_string());
    }
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("address {address:?} opens '[' without closing it"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("unexpected {after:?} after ']' in {address:?}")),
            },
        }
    } else {
        match address.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(format!(
                    "IPv6 address {address:?} must be written as [addr]:port"
                ));
            }
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("invalid host in {address:?}"));
    }
    let port = match port {
        None => default_port,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(format!("invalid port {text:?} in {address:?} (1-65535)")),
        },
    };
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Vec<Peer>, PeerListError> {
        parse(text.as_bytes(), Path::new("clientCon.csv"), 9000)
    }

    fn peer(id: &str, host: &str, port: u16) -> Peer {
        Peer::new(id, host, port)
    }

    #[test]
    fn reads_the_prototype_format() {
        let peers = parse_str("Sidecar3;192.168.14.123:9000;\nSidecar4;192.168.33.156:9001;\n")
            .expect("valid list");
        assert_eq!(
            peers,
            vec![
                peer("Sidecar3", "192.168.14.123", 9000),
                peer("Sidecar4", "192.168.33.156", 9001)
            ]
        );
    }

    #[test]
    fn missing_port_takes_the_default_and_trailing_semicolon_is_optional() {
        let peers = parse_str("Sidecar1;127.0.0.1;\nSidecar2;edge-2.local:9100").expect("valid");
        assert_eq!(
            peers,
            vec![
                peer("Sidecar1", "127.0.0.1", 9000),
                peer("Sidecar2", "edge-2.local", 9100)
            ]
        );
    }

    #[test]
    fn tolerates_comments_blank_lines_crlf_and_spaces() {
        let text = "# sidecars of site A\r\n\r\n  S1 ; 10.0.0.1:9000 ;\r\n   \r\n# S2;10.0.0.2;\r\nS3;[::1]:9005;\r\n";
        let peers = parse_str(text).expect("valid");
        assert_eq!(
            peers,
            vec![peer("S1", "10.0.0.1", 9000), peer("S3", "::1", 9005)]
        );
        assert_eq!(peers[1].address(), "[::1]:9005");
        assert_eq!(peers[1].uri(), "http://[::1]:9005");
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let cases = [
            ("S1;10.0.0.1:9000;\nS2;10.0.0.2:70000;\n", 2, "invalid port"),
            ("S1;10.0.0.1:x;\n", 1, "invalid port"),
            ("\n\nS1\n", 3, "has 1 fields"),
            ("S1;a:1;extra;\n", 1, "has 4 fields"),
            ("S1;;\n", 1, "empty address"),
            (";10.0.0.1;\n", 1, "invalid peer id"),
            ("S1;::1:9000;\n", 1, "must be written as [addr]:port"),
            ("S1;[::1;\n", 1, "without closing"),
            ("S1;a:1;\nS1;b:2;\n", 2, "listed twice"),
            ("S1;a:0;\n", 1, "invalid port"),
        ];
        for (text, line, needle) in cases {
            let err = parse_str(text).expect_err(text).to_string();
            assert!(
                err.starts_with(&format!("clientCon.csv:{line}: ")) && err.contains(needle),
                "{text:?} gave {err:?}, expected line {line} and {needle:?}"
            );
        }
    }

    #[test]
    fn an_empty_list_is_an_error() {
        let err = parse_str("# nobody\n\n").expect_err("empty").to_string();
        assert!(err.contains("lists no peers"), "{err}");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let err = load(Path::new("/nonexistent/sidecarCon.csv"), 9010)
            .expect_err("missing")
            .to_string();
        assert!(err.contains("/nonexistent/sidecarCon.csv"), "{err}");
    }

    fn ids(peers: &[Peer]) -> Vec<&str> {
        peers.iter().map(|p| p.id.as_str()).collect()
    }

    #[test]
    fn ordered_keeps_the_list_and_spread_ranks_per_node() {
        let list: Vec<Peer> = (1..=4)
            .map(|i| peer(&format!("S{i}"), "10.0.0.1", 9000 + i))
            .collect();
        for node in ["a", "b", "c"] {
            assert_eq!(
                ids(&preference(&list, PeerOrder::Ordered, node)),
                ["S1", "S2", "S3", "S4"]
            );
        }
        let firsts: BTreeSet<String> = (0..40)
            .map(|n| {
                preference(&list, PeerOrder::Spread, &format!("client-{n}"))[0]
                    .id
                    .clone()
            })
            .collect();
        assert_eq!(
            firsts.len(),
            4,
            "40 nodes should not all prefer the same peer: {firsts:?}"
        );
        // Deterministic: the same node ranks the same way every time.
        assert_eq!(
            preference(&list, PeerOrder::Spread, "client-7"),
            preference(&list, PeerOrder::Spread, "client-7")
        );
    }

    #[test]
    fn removing_a_peer_moves_only_the_nodes_that_ranked_it_first() {
        let list: Vec<Peer> = (1..=4)
            .map(|i| peer(&format!("S{i}"), "10.0.0.1", 9000 + i))
            .collect();
        let without_s3: Vec<Peer> = list.iter().filter(|p| p.id != "S3").cloned().collect();
        for n in 0..500 {
            let node = format!("client-{n}");
            let before = preference(&list, PeerOrder::Spread, &node);
            let after = preference(&without_s3, PeerOrder::Spread, &node);
            let kept: Vec<&Peer> = before.iter().filter(|p| p.id != "S3").collect();
            assert_eq!(
                kept,
                after.iter().collect::<Vec<_>>(),
                "{node}: the others keep their order"
            );
        }
    }

    #[tokio::test]
    async fn a_name_with_several_addresses_makes_one_peer_per_address() {
        let rows = vec![
            peer("S1", "sidecars.example", 9000),
            peer("S2", "10.0.0.9", 9001),
            peer("S3", "gone.example", 9002),
        ];
        let lookup = |host: String, port: u16| async move {
            match host.as_str() {
                "sidecars.example" => Ok(vec![
                    SocketAddr::from(([10, 0, 0, 2], port)),
                    SocketAddr::from(([10, 0, 0, 1], port)),
                    SocketAddr::from(([10, 0, 0, 2], port)),
                ]),
                _ => Err(io::Error::other("NXDOMAIN")),
            }
        };
        let (peers, problems) = resolve(&rows, lookup).await;
        let shown: Vec<String> = peers.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "S1@10.0.0.1:9000 (sidecars.example:9000)",
                "S1@10.0.0.2:9000 (sidecars.example:9000)",
                "S2 (10.0.0.9:9001)",
                "S3 (gone.example:9002)",
            ]
        );
        assert_eq!(
            peers[0].host, "sidecars.example",
            "TLS still checks the name"
        );
        assert_eq!(peers[1].uri(), "http://10.0.0.2:9000");
        assert_eq!(peers[3].uri(), "http://gone.example:9002");
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("S3") && problems[0].contains("NXDOMAIN"),
            "{problems:?}"
        );
        // The two addresses of S1 rank as two peers.
        let firsts: BTreeSet<String> = (0..40)
            .map(|n| preference(&peers[..2], PeerOrder::Spread, &format!("c{n}"))[0].to_string())
            .collect();
        assert_eq!(firsts.len(), 2, "{firsts:?}");
    }

    #[tokio::test]
    async fn localhost_resolves_through_the_system() {
        let (peers, problems) = resolve(&[peer("S1", "localhost", 9000)], system_lookup).await;
        assert!(problems.is_empty(), "{problems:?}");
        assert!(!peers.is_empty());
        assert!(
            peers.iter().all(|p| p
                .resolved
                .is_some_and(|a| a.ip().is_loopback() && a.port() == 9000)),
            "{peers:?}"
        );
    }
}
