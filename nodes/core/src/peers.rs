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
//! written in brackets (`[::1]:9000`). Order matters: nodes try peers from
//! the top and fail over downwards.

use std::fmt;
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
}

impl Peer {
    /// `host:port`, with brackets around IPv6 addresses.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URI tonic dials.
    pub fn uri(&self) -> String {
        format!("http://{}", self.address())
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.id, self.address())
    }
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
        peers.push(Peer {
            id: id.to_string(),
            host,
            port,
        });
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
        Peer {
            id: id.into(),
            host: host.into(),
            port,
        }
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
}
