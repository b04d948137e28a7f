//! The client's state file (`safeData.state` beside the spool): what must
//! survive a restart besides the spool itself.
//!
//! - `incarnation`: which numbering the sequence numbers belong to. Chosen
//!   afresh (the time and 32 random bits, never 0) whenever the file cannot
//!   say where the numbering stopped: missing, unreadable, or written before
//!   incarnations existed. Event ids carry it (`smesh_core::event::event_id`),
//!   so a client that lost this file and numbers from 1 again never repeats
//!   an id, and the master never takes its new events for resends.
//! - `reserved_until`: sequence numbers are handed out from blocks reserved
//!   here *before* use, so a restarted client never reuses one (event ids
//!   stay unique across restarts, even after `kill -9`). The first number of
//!   a run always reserves a block, so a new incarnation is on disk before
//!   any id carries it.
//! - `acked_through`: the highest sequence number acknowledged end to end;
//!   spool rows at or below it are dropped on open.
//! - `positions`: how far each source was read *and* delivered, so a file
//!   source resumes where it left off.
//! - `files`: which file each position is in (device, inode, fingerprint),
//!   so a file rotated or truncated meanwhile is not resumed at another
//!   file's offset. Absent in older state files, whose positions still read.
//!
//! Written atomically and durably (temporary file, fsync, rename, fsync of
//! the directory: a rename lost to a power failure would bring back an older
//! `reserved_until` under the same incarnation). The state is serialized in
//! memory by the caller's task; writing and renaming the file runs on the
//! blocking pool, awaited before the save counts as done.
//!
//! An unreadable file is kept beside as `safeData.state.unreadable` for a
//! look, and reported by the caller (an error in the log, `state` in the
//! stats file).

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smesh_core::event::LEGACY_INCARNATION;

use crate::blocking;
use crate::source::FileIdentity;
use crate::spool::Origin;

/// Sequence numbers reserved per write of the state file.
pub const RESERVE_BLOCK: u64 = 100_000;

/// What `safeData.state` holds (JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Whose state this is (a file of another client id is not used).
    pub client_id: String,
    /// The numbering the sequence numbers belong to, as 16 hex digits (as in
    /// event ids); 0 (absent) in files written before incarnations existed.
    #[serde(
        default,
        serialize_with = "hex_serialize",
        deserialize_with = "hex_deserialize"
    )]
    pub incarnation: u64,
    /// Sequence numbers below this may have been used.
    pub reserved_until: u64,
    /// The highest sequence acknowledged end to end.
    pub acked_through: u64,
    /// Per file source, the byte offset after the last line delivered.
    pub positions: HashMap<String, u64>,
    /// Per file source, the file its position is in (older state files
    /// have none: their positions are plain offsets in whatever file is at
    /// the path).
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub files: HashMap<String, FileIdentity>,
}

/// Where file sources resume, by origin key: their offsets, and the files
/// those are in where known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResumePoints {
    /// Offset per source.
    pub positions: HashMap<String, u64>,
    /// The file each offset is in (none for offsets from before identities).
    pub files: HashMap<String, FileIdentity>,
}

impl State {
    /// Where each file source resumes, given `spooled`, the origin of each
    /// source's newest unacknowledged spool row ([`crate::spool::Recovery`]).
    /// That row was read after every delivered one, so its origin replaces
    /// the delivered position, file and all (after a copytruncate or a
    /// rotation it is in another file, often at a smaller offset). A row
    /// that names no file (written before rows did) keeps the larger offset
    /// in the file the state names.
    pub fn resume_points(&self, spooled: &HashMap<String, (u64, Origin)>) -> ResumePoints {
        let mut points = ResumePoints {
            positions: self.positions.clone(),
            files: self.files.clone(),
        };
        for (key, (_, origin)) in spooled {
            match origin.file {
                Some(file) => {
                    points.positions.insert(key.clone(), origin.position);
                    points.files.insert(key.clone(), file);
                }
                None => {
                    let position = points.positions.entry(key.clone()).or_insert(0);
                    *position = (*position).max(origin.position);
                }
            }
        }
        points
    }
}

/// The state file and the sequence allocator it backs.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    state: State,
    /// How the file was found when the client started.
    loaded: Loaded,
    next_sequence: u64,
    dirty: bool,
}

/// How the state file was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// No state file: a first start, or the file was lost. A new
    /// incarnation; numbering starts at 1, or after the spool's rows.
    Fresh,
    /// Read and used: numbering continues in its incarnation.
    Found,
    /// Read, but written before incarnations existed: numbering continues
    /// where it stopped, under a new incarnation.
    Upgraded,
    /// Present but unreadable (kept as `safeData.state.unreadable`): a new
    /// incarnation, numbering continues after the spool's rows.
    Unreadable(String),
}

impl Loaded {
    /// One word for logs and the stats file.
    pub fn as_str(&self) -> &'static str {
        match self {
            Loaded::Fresh => "fresh",
            Loaded::Found => "found",
            Loaded::Upgraded => "upgraded",
            Loaded::Unreadable(_) => "unreadable",
        }
    }
}

/// A new incarnation: the Unix time in seconds (for the operator's eyes; a
/// device's clock may be anything) and 32 random bits. Never 0.
pub fn new_incarnation() -> u64 {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    loop {
        let incarnation = (seconds & 0xffff_ffff) << 32 | u64::from(rand::random::<u32>());
        if incarnation != LEGACY_INCARNATION {
            return incarnation;
        }
    }
}

/// `safeData.csv` → `safeData.state`.
pub fn state_path(spool: &Path) -> PathBuf {
    spool.with_extension("state")
}

impl StateFile {
    /// Reads the state file at `path` (a missing or unreadable one starts
    /// a new incarnation, and says so).
    pub fn load(path: &Path, client_id: &str) -> (Self, Loaded) {
        let (state, loaded) = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<State>(&bytes) {
                Ok(state) if state.incarnation == LEGACY_INCARNATION => (state, Loaded::Upgraded),
                Ok(state) => (state, Loaded::Found),
                Err(err) => (State::default(), Loaded::Unreadable(err.to_string())),
            },
            Err(err) if err.kind() == io::ErrorKind::NotFound => (State::default(), Loaded::Fresh),
            Err(err) => (State::default(), Loaded::Unreadable(err.to_string())),
        };
        if matches!(loaded, Loaded::Unreadable(_)) {
            // Kept for a look; the next save replaces the original.
            let _ = std::fs::copy(path, path.with_extension("state.unreadable"));
        }
        let incarnation = match loaded {
            Loaded::Found => state.incarnation,
            _ => new_incarnation(),
        };
        // At or past `reserved_until`: the first number reserves a block,
        // which writes the file, incarnation included, before it is used.
        let next_sequence = state.reserved_until.max(1);
        let state = State {
            client_id: client_id.to_string(),
            incarnation,
            ..state
        };
        (
            Self {
                path: path.to_path_buf(),
                state,
                loaded: loaded.clone(),
                next_sequence,
                dirty: true,
            },
            loaded,
        )
    }

    /// The numbering this run's sequence numbers belong to.
    pub fn incarnation(&self) -> u64 {
        self.state.incarnation
    }

    /// How the file was found when the client started.
    pub fn loaded(&self) -> &Loaded {
        &self.loaded
    }

    /// The state as last recorded in memory.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Never hand out a number at or below `sequence` (the spool's highest).
    pub fn continue_after(&mut self, sequence: u64) {
        self.next_sequence = self.next_sequence.max(sequence.saturating_add(1));
    }

    /// The next sequence number; reserves (and durably records) a new block
    /// first when the current one is used up. Cancel-safe: a block counts as
    /// reserved only once the file says so.
    pub async fn next_sequence(&mut self) -> io::Result<u64> {
        if self.next_sequence >= self.state.reserved_until {
            let reserved = State {
                reserved_until: self.next_sequence + RESERVE_BLOCK,
                ..self.state.clone()
            };
            write(&self.path, &reserved).await?;
            self.state = reserved;
            self.dirty = false;
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        Ok(sequence)
    }

    /// `sequence` was acknowledged end to end (saved at the next save).
    pub fn acknowledged(&mut self, sequence: u64) {
        if sequence > self.state.acked_through {
            self.state.acked_through = sequence;
            self.dirty = true;
        }
    }

    /// The file source `key` has delivered everything before `position` in
    /// `file`. Acknowledgements come in reading order, so with a file named
    /// the position simply replaces the saved one, file and all: after a
    /// rotation or a copytruncate (the same inode, offsets from zero again)
    /// the newer position is the smaller one. Only a position without a
    /// file (a spool row written before rows named their file) keeps the
    /// larger of the two, as plain offsets in the file the state names.
    pub fn delivered_position(&mut self, key: &str, position: u64, file: Option<&FileIdentity>) {
        if let Some(file) = file {
            if self.state.files.get(key) != Some(file) {
                self.state.files.insert(key.to_string(), *file);
                self.dirty = true;
            }
            if self.state.positions.get(key) != Some(&position) {
                self.state.positions.insert(key.to_string(), position);
                self.dirty = true;
            }
            return;
        }
        match self.state.positions.get_mut(key) {
            Some(p) if *p >= position => {}
            Some(p) => {
                *p = position;
                self.dirty = true;
            }
            None => {
                self.state.positions.insert(key.to_string(), position);
                self.dirty = true;
            }
        }
    }

    /// Saves if anything changed since the last save.
    pub async fn save_if_dirty(&mut self) -> io::Result<()> {
        if self.dirty {
            self.save().await
        } else {
            Ok(())
        }
    }

    /// Saves the state now; it counts as saved once the file is renamed into
    /// place (cancel-safe: otherwise it stays to be saved).
    pub async fn save(&mut self) -> io::Result<()> {
        write(&self.path, &self.state).await?;
        self.dirty = false;
        Ok(())
    }
}

/// Serializes `state` here, then writes it to a temporary file, syncs it and
/// renames it over `path` on the blocking pool.
async fn write(path: &Path, state: &State) -> io::Result<()> {
    let mut json = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
    json.push(b'\n');
    let path = path.to_path_buf();
    blocking::run(move || {
        let tmp = path.with_extension("state.tmp");
        {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        sync_parent(&path)
    })
    .await
}

/// Makes a rename into `path`'s directory durable.
fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match std::fs::File::open(dir).and_then(|dir| dir.sync_all()) {
        // Some filesystems cannot sync a directory; there is nothing to wait for.
        Err(err) if err.kind() == io::ErrorKind::InvalidInput => Ok(()),
        other => other,
    }
}

fn hex_serialize<S: Serializer>(incarnation: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("{incarnation:016x}"))
}

fn hex_deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let text = String::deserialize(deserializer)?;
    u64::from_str_radix(&text, 16)
        .map_err(|err| serde::de::Error::custom(format!("incarnation {text:?}: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sequence_numbers_never_repeat_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("safeData.state");
        let (mut state, loaded) = StateFile::load(&path, "c1");
        assert_eq!(loaded, Loaded::Fresh);
        let mut first = Vec::new();
        for _ in 0..3 {
            first.push(state.next_sequence().await.expect("seq"));
        }
        assert_eq!(first, vec![1, 2, 3]);
        // No save after the reservation: as if killed with -9.
        drop(state);
        let (mut state, loaded) = StateFile::load(&path, "c1");
        assert_eq!(loaded, Loaded::Found);
        let next = state.next_sequence().await.expect("seq");
        assert!(next > 3, "restart continued at {next}");
        assert_eq!(next, 1 + RESERVE_BLOCK);
    }

    #[tokio::test]
    async fn the_incarnation_is_on_disk_before_its_first_number_is_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("safeData.state");
        let (mut state, _) = StateFile::load(&path, "c1");
        let incarnation = state.incarnation();
        assert_ne!(incarnation, LEGACY_INCARNATION);
        assert_eq!(state.next_sequence().await.expect("seq"), 1);
        // Killed with -9 right after the first number.
        drop(state);
        let (state, loaded) = StateFile::load(&path, "c1");
        assert_eq!(loaded, Loaded::Found);
        assert_eq!(state.incarnation(), incarnation, "numbering continues");
        let text = std::fs::read_to_string(&path).expect("state file");
        assert!(
            text.contains(&format!("\"incarnation\": \"{incarnation:016x}\"")),
            "hex, as in event ids: {text}"
        );
    }

    #[tokio::test]
    async fn a_lost_state_file_starts_a_new_incarnation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("safeData.state");
        let (mut state, _) = StateFile::load(&path, "c1");
        for _ in 0..3 {
            state.next_sequence().await.expect("seq");
        }
        state.acknowledged(3);
        state.save().await.expect("save");
        let first = state.incarnation();
        drop(state);

        // Re-imaged device: the state file is gone, the spool is empty.
        std::fs::remove_file(&path).expect("delete the state file");
        let (mut state, loaded) = StateFile::load(&path, "c1");
        assert_eq!(loaded, Loaded::Fresh);
        assert_eq!(state.next_sequence().await.expect("seq"), 1, "from 1 again");
        assert_ne!(state.incarnation(), first, "but never with the same ids");
        assert_ne!(state.incarnation(), LEGACY_INCARNATION);
    }

    #[tokio::test]
    async fn a_state_file_from_before_incarnations_continues_under_a_new_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("safeData.state");
        std::fs::write(
            &path,
            r#"{"client_id":"c1","reserved_until":100001,"acked_through":42,"positions":{}}"#,
        )
        .expect("write");
        let (mut state, loaded) = StateFile::load(&path, "c1");
        assert_eq!(loaded, Loaded::Upgraded);
        assert_eq!(state.state().acked_through, 42, "progress kept");
        let incarnation = state.incarnation();
        assert_ne!(incarnation, LEGACY_INCARNATION);
        assert_eq!(state.next_sequence().await.expect("seq"), 100_001);
        drop(state);
        let (state, loaded) = StateFile::load(&path, "c1");
        assert_eq!(loaded, Loaded::Found);
        assert_eq!(state.incarnation(), incarnation);
    }

    #[test]
    fn new_incarnations_differ() {
        let drawn: std::collections::HashSet<u64> = (0..1000).map(|_| new_incarnation()).collect();
        assert_eq!(drawn.len(), 1000);
        assert!(!drawn.contains(&LEGACY_INCARNATION));
    }

    #[tokio::test]
    async fn progress_is_saved_and_loaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("safeData.state");
        let (mut state, _) = StateFile::load(&path, "c1");
        state.acknowledged(41);
        state.acknowledged(7);
        state.delivered_position("file:/in", 100, None);
        state.delivered_position("file:/in", 50, None);
        state.save_if_dirty().await.expect("save");
        let (state, _) = StateFile::load(&path, "c1");
        assert_eq!(state.state().acked_through, 41);
        assert_eq!(state.state().positions.get("file:/in"), Some(&100));
    }

    #[tokio::test]
    async fn a_position_in_a_new_file_replaces_the_old_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("safeData.state");
        let file = |ino, fingerprint_len| FileIdentity {
            dev: 1,
            ino,
            fingerprint_len,
            fingerprint: 7,
        };
        let (mut state, _) = StateFile::load(&path, "c1");
        state.delivered_position("file:/in", 400, Some(&file(10, 100)));
        // The same file, grown: its fingerprint covers more now.
        state.delivered_position("file:/in", 500, Some(&file(10, 1024)));
        assert_eq!(state.state().positions.get("file:/in"), Some(&500));
        assert_eq!(state.state().files.get("file:/in"), Some(&file(10, 1024)));
        // Rotated: the new file's offsets start again.
        state.delivered_position("file:/in", 30, Some(&file(11, 30)));
        state.save().await.expect("save");
        let (state, _) = StateFile::load(&path, "c1");
        assert_eq!(state.state().positions.get("file:/in"), Some(&30));
        assert_eq!(state.state().files.get("file:/in"), Some(&file(11, 30)));
    }

    #[tokio::test]
    async fn a_position_in_a_truncated_file_replaces_the_larger_one_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("safeData.state");
        let file = |fingerprint| FileIdentity {
            dev: 1,
            ino: 10,
            fingerprint_len: 1024,
            fingerprint,
        };
        let (mut state, _) = StateFile::load(&path, "c1");
        state.delivered_position("file:/in", 80_000_000, Some(&file(7)));
        // copytruncate: the same inode, other first bytes, offsets from 0.
        state.delivered_position("file:/in", 100, Some(&file(8)));
        state.delivered_position("file:/in", 50_000_000, Some(&file(8)));
        state.save().await.expect("save");
        let (state, _) = StateFile::load(&path, "c1");
        assert_eq!(
            (
                state.state().positions.get("file:/in"),
                state.state().files.get("file:/in")
            ),
            (Some(&50_000_000), Some(&file(8))),
            "the position is where reading stopped in the file it names"
        );
    }

    #[test]
    fn a_source_resumes_after_its_newest_spool_row_in_that_rows_file() {
        let file = |fingerprint| FileIdentity {
            dev: 1,
            ino: 10,
            fingerprint_len: 1024,
            fingerprint,
        };
        let state = State {
            positions: [("file:/in".to_string(), 80_000_000)].into(),
            files: [("file:/in".to_string(), file(7))].into(),
            ..State::default()
        };
        let spooled = |position, file| {
            let origin = Origin {
                key: "file:/in".into(),
                position,
                file,
            };
            HashMap::from([("file:/in".to_string(), (42, origin))])
        };
        // Read from the truncated file, spooled, not yet delivered.
        let points = state.resume_points(&spooled(500, Some(file(8))));
        assert_eq!(points.positions.get("file:/in"), Some(&500));
        assert_eq!(points.files.get("file:/in"), Some(&file(8)));
        // A row from before rows named their file: offsets in the same file.
        let points = state.resume_points(&spooled(90_000_000, None));
        assert_eq!(points.positions.get("file:/in"), Some(&90_000_000));
        assert_eq!(points.files.get("file:/in"), Some(&file(7)));
        let points = state.resume_points(&spooled(500, None));
        assert_eq!(points.positions.get("file:/in"), Some(&80_000_000));
        // Nothing spooled: where delivery stopped.
        let points = state.resume_points(&HashMap::new());
        assert_eq!(points.positions.get("file:/in"), Some(&80_000_000));
    }

    #[test]
    fn a_state_file_without_identities_still_reads() {
        let old = r#"{"client_id":"c1","reserved_until":100001,"acked_through":40,"positions":{"file:/in":1234}}"#;
        let state: State = serde_json::from_str(old).expect("an old state file reads");
        assert_eq!(state.positions.get("file:/in"), Some(&1234));
        assert!(state.files.is_empty());
    }

    #[tokio::test]
    async fn an_unreadable_file_is_reported_and_numbering_follows_the_spool() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("safeData.state");
        let (mut earlier, _) = StateFile::load(&path, "c1");
        earlier.next_sequence().await.expect("seq");
        let earlier = earlier.incarnation();
        std::fs::write(&path, "{ not json").expect("write");
        let (mut state, loaded) = StateFile::load(&path, "c1");
        assert!(matches!(loaded, Loaded::Unreadable(_)));
        assert_eq!(state.loaded(), &loaded);
        assert_ne!(state.incarnation(), earlier, "a new incarnation");
        state.continue_after(500);
        assert_eq!(state.next_sequence().await.expect("seq"), 501);
        assert_eq!(
            std::fs::read_to_string(path.with_extension("state.unreadable")).expect("kept"),
            "{ not json"
        );
    }
}
