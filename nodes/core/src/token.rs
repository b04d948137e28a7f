//! The admin API's bearer token: read from a file by the master (which
//! checks it) and by the console (which sends it), so scripts can call the
//! admin API without a console certificate.
//!
//! The token travels as `authorization: Bearer <token>` metadata and is
//! compared in constant time. Its text never appears in a `Debug` output,
//! a log line or an error.

use std::fmt;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

/// Shortest token accepted, in bytes: a guessable token is no lock.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Longest token accepted, in bytes (it travels in an HTTP/2 header).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The metadata key the token travels in.
pub const AUTHORIZATION: &str = "authorization";

/// Why a token file cannot be used. The messages name the flag and the
/// file, never the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("--admin-token-file {path}: cannot read it: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds no usable token.
    #[error("--admin-token-file {path}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with its content.
        problem: String,
    },
}

/// A bearer token for the admin API.
#[derive(Clone)]
pub struct AdminToken {
    /// The token's bytes (visible ASCII, no blanks).
    secret: Vec<u8>,
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// Reads the token from `path`: the file's content without trailing
    /// whitespace (a final newline is usual). Refuses an empty file, a token
    /// shorter than [`MIN_TOKEN_BYTES`] or longer than [`MAX_TOKEN_BYTES`],
    /// and one holding anything but visible ASCII.
    pub fn read(path: &Path) -> Result<Self, TokenError> {
        let bytes = std::fs::read(path).map_err(|source| TokenError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&bytes).map_err(|problem| TokenError::Invalid {
            path: path.to_path_buf(),
            problem,
        })
    }

    /// The token in `bytes` (a file's content), checked as [`read`](Self::read) does.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |last| last + 1);
        let token = &bytes[..end];
        if token.is_empty() {
            return Err(
                "the file is empty: put one token in it (e.g. `openssl rand -hex 32`)".into(),
            );
        }
        if token.len() < MIN_TOKEN_BYTES {
            return Err(format!(
                "the token is {} bytes; it must be at least {MIN_TOKEN_BYTES} (e.g. `openssl rand -hex 32`)",
                token.len()
            ));
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(format!(
                "the token is {} bytes; it may be at most {MAX_TOKEN_BYTES}",
                token.len()
            ));
        }
        if !token.iter().all(u8::is_ascii_graphic) {
            return Err(
                "the token may hold only visible ASCII characters (no blanks or control characters inside, one token per file)"
                    .into(),
            );
        }
        Ok(Self {
            secret: token.to_vec(),
        })
    }

    /// The `authorization` value a caller sends: `Bearer <token>`.
    pub fn header_value(&self) -> AsciiMetadataValue {
        let mut text = b"Bearer ".to_vec();
        text.extend_from_slice(&self.secret);
        // The token is visible ASCII (checked when it was read), so the
        // value is always valid; the fallback only keeps this total.
        AsciiMetadataValue::try_from(text.as_slice())
            .unwrap_or_else(|_| AsciiMetadataValue::from_static("Bearer"))
    }

    /// What a call's metadata says about the token: none given, the
    /// right one, or another.
    pub fn judge(&self, metadata: &MetadataMap) -> Presented {
        let Some(value) = metadata.get(AUTHORIZATION) else {
            return Presented::Nothing;
        };
        let value = value.as_bytes();
        let Some(given) = strip_bearer(value) else {
            return Presented::Wrong;
        };
        if bool::from(given.ct_eq(&self.secret)) {
            Presented::Valid
        } else {
            Presented::Wrong
        }
    }
}

/// What a call presented, as [`AdminToken::judge`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// No `authorization` metadata.
    Nothing,
    /// A token that is not this one (or not a bearer token).
    Wrong,
    /// This token.
    Valid,
}

/// The token after `Bearer ` (the scheme is case-insensitive, RFC 6750).
fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert(AUTHORIZATION, value.parse().expect("ascii"));
        map
    }

    #[test]
    fn a_file_holds_one_token_and_its_newline() {
        let token = AdminToken::parse(b"0123456789abcdef0123\n").expect("valid");
        assert_eq!(
            token.header_value().to_str().expect("ascii"),
            "Bearer 0123456789abcdef0123"
        );
        assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
    }

    #[test]
    fn empty_short_long_or_blank_tokens_are_refused() {
        for (content, needle) in [
            (&b""[..], "empty"),
            (&b"  \n\n"[..], "empty"),
            (&b"short-token\n"[..], "at least 16"),
            (&b"0123456789abcdef 0123\n"[..], "visible ASCII"),
            (&b"0123456789abcdef\n0123\n"[..], "visible ASCII"),
        ] {
            let err = AdminToken::parse(content).expect_err("refused");
            assert!(err.contains(needle), "{content:?}: {err}");
        }
        let long = vec![b'a'; MAX_TOKEN_BYTES + 1];
        assert!(AdminToken::parse(&long).is_err());
    }

    #[test]
    fn only_the_same_bearer_token_is_valid() {
        let token = AdminToken::parse(b"0123456789abcdef0123").expect("valid");
        assert_eq!(token.judge(&MetadataMap::new()), Presented::Nothing);
        assert_eq!(
            token.judge(&metadata("Bearer 0123456789abcdef0123")),
            Presented::Valid
        );
        assert_eq!(
            token.judge(&metadata("bearer 0123456789abcdef0123")),
            Presented::Valid
        );
        for wrong in [
            "Bearer 0123456789abcdef012",
            "Bearer 0123456789abcdef01234",
            "Basic 0123456789abcdef0123",
            "0123456789abcdef0123",
            "Bearer",
        ] {
            assert_eq!(token.judge(&metadata(wrong)), Presented::Wrong, "{wrong}");
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = AdminToken::read(Path::new("/nonexistent/token")).expect_err("missing");
        assert!(
            err.to_string()
                .starts_with("--admin-token-file /nonexistent/token: cannot read it"),
            "{err}"
        );
    }
}
