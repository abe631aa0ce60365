//! Saving a run's state and resuming from it with the next day's log.
//!
//! A state holds what the next run needs to continue exactly, and nothing
//! that grows with history: the clean-event counts of every (user, item,
//! kind) as of the last closed epoch (user and item aggregates derive from
//! them), the model with its optimizer state and the scaler's histogram, the
//! last closed epoch, the options that must not change, and a fingerprint of
//! every input file consumed. With unlimited lateness every epoch seen is
//! closed when a run ends. With a bounded lateness `L`, the epochs within `L`
//! of the newest accepted row stay open, as they would in one run over this
//! log and the next: the state then holds the aggregates and model as of the
//! last closed epoch, and the accepted rows and row counts of the open ones
//! (their dedup and bot state). Rows of a new log that fall in a closed epoch
//! are rejected as `late`.
//!
//! While a run goes on, `DIR/checkpoint.bin` records how far it got (see
//! [`Checkpoint`]); `state.bin` is only replaced when the run ends.
//!
//! On disk, `DIR/state.bin` is: the magic bytes `DELTAREC-STATE\n`, a format
//! version (u32, little-endian), the payload length (u64), the payload's
//! CRC-32 (u32), then the payload (bincode, integers as varints). It is written to a temporary
//! file, synced, and renamed; the previous state is kept as `state.prev.bin`
//! through a hard link first, so `state.bin` is complete at every moment.
//! `checkpoint.bin` is framed and kept the same way, with the magic bytes
//! `DELTAREC-CHECKPOINT\n` and `checkpoint.prev.bin`. The temporary files a
//! killed run leaves behind are removed by the next run that takes the
//! directory's [`Lock`].

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bincode::Options;
use serde::{Deserialize, Serialize};

use crate::evaluate::EvalSummary;
use crate::event::Event;
use crate::features::Example;
use crate::model::OptimizerConfig;
use crate::scaler::ScalerKind;
use crate::trainer::{EpochMetrics, ModelState};

/// The bytes a state file starts with.
const MAGIC: &[u8] = b"DELTAREC-STATE\n";

/// The version of the payload layout this build reads and writes.
pub const FORMAT_VERSION: u32 = 2;

/// The version of the checkpoint layout this build reads and writes.
pub const CHECKPOINT_VERSION: u32 = 2;

/// The options a resumed run must share with the run that saved the state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FixedOptions {
    /// The spec's name.
    pub spec: String,
    /// CRC-32 of a spec file's text; 0 for a built-in spec.
    pub spec_text: u32,
    /// Epoch width.
    pub bucket_ms: i64,
    /// Bot threshold.
    pub bot_threshold: u64,
    /// Feature scaling.
    pub scaler: ScalerKind,
    /// Optimizer, rates and batch size.
    pub optimizer: OptimizerConfig,
    /// How many epochs a row may trail the newest; `None` for unlimited.
    pub lateness: Option<u64>,
}

impl FixedOptions {
    /// The first option that differs from `saved`, as a flag name and the two
    /// values.
    pub fn first_difference(&self, saved: &FixedOptions) -> Option<(&'static str, String, String)> {
        let pairs = [
            ("--spec", self.spec.clone(), saved.spec.clone()),
            (
                "--spec",
                format!("{} (spec text CRC {:08x})", self.spec, self.spec_text),
                format!("{} (spec text CRC {:08x})", saved.spec, saved.spec_text),
            ),
            (
                "--bucket",
                format!("{}ms", self.bucket_ms),
                format!("{}ms", saved.bucket_ms),
            ),
            (
                "--bot-threshold",
                self.bot_threshold.to_string(),
                saved.bot_threshold.to_string(),
            ),
            (
                "--lateness",
                lateness_name(self.lateness),
                lateness_name(saved.lateness),
            ),
            (
                "--scaler",
                self.scaler.name().into(),
                saved.scaler.name().into(),
            ),
            (
                "--optimizer",
                self.optimizer.kind.name().into(),
                saved.optimizer.kind.name().into(),
            ),
            (
                "--lr",
                self.optimizer.lr.to_string(),
                saved.optimizer.lr.to_string(),
            ),
            (
                "--l2",
                self.optimizer.l2.to_string(),
                saved.optimizer.l2.to_string(),
            ),
            (
                "--l1",
                self.optimizer.l1.to_string(),
                saved.optimizer.l1.to_string(),
            ),
            (
                "--batch-size",
                self.optimizer.batch_size.to_string(),
                saved.optimizer.batch_size.to_string(),
            ),
        ];
        pairs.into_iter().find(|(_, now, then)| now != then)
    }
}

fn lateness_name(lateness: Option<u64>) -> String {
    lateness.map_or("unlimited".into(), |epochs| epochs.to_string())
}

/// Identifies an input file without keeping it: its length and a CRC-32 of
/// its whole content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The file as it was named.
    pub name: String,
    /// Its length in bytes.
    pub len: u64,
    /// CRC-32 of its content.
    pub crc: u32,
}

impl Fingerprint {
    /// Fingerprints the file at `path`, reading it whole (CRC-32 runs at
    /// several GB/s, and the run reads the file anyway).
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn of(path: &Path, name: &str) -> io::Result<Fingerprint> {
        let mut file = File::open(path)?;
        let mut hasher = crc32fast::Hasher::new();
        let mut buf = vec![0; 1 << 20];
        let mut len = 0;
        loop {
            let read = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(read) => read,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            hasher.update(&buf[..read]);
            len += read as u64;
        }
        Ok(Fingerprint {
            name: name.to_string(),
            len,
            crc: hasher.finalize(),
        })
    }

    /// Whether two fingerprints describe the same content (names may differ).
    pub fn same_content(&self, other: &Fingerprint) -> bool {
        self.len == other.len && self.crc == other.crc
    }
}

/// Everything a resumed run starts from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    /// Options that must not change.
    pub options: FixedOptions,
    /// Every epoch up to this one is closed.
    pub last_epoch: Option<u64>,
    /// Every input file consumed so far.
    pub files: Vec<Fingerprint>,
    /// The model, its optimizer state and the scaler histogram.
    pub model: ModelState,
    /// Clean-event counts per (user, item), indexed by `Kind as usize`, as
    /// of the end of `last_epoch`.
    pub pairs: Vec<(u64, u64, [u64; 5])>,
    /// The newest epoch of an accepted row so far. With a bounded lateness,
    /// the epochs after `last_epoch` up to this one are still open: the next
    /// log's rows may still fall in them.
    pub newest_epoch: Option<u64>,
    /// The accepted rows of the open epochs, duplicates and bots' rows
    /// included: an epoch is cleaned when it closes.
    pub open_events: Vec<Event>,
    /// `(epoch, rows, rejected)`: the rows counted so far in each open epoch
    /// (accepted or not, but not late), and how many were rejected.
    pub open_tallies: Vec<(u64, u64, u64)>,
    /// Identifies the run that saved this state (its inputs' contents, the
    /// options that shape its results, its worker count), so that running
    /// it again is recognised as done.
    pub last_run: u64,
}

/// How far an unfinished run got: written every `--checkpoint-every` epochs
/// while it runs, removed when it ends. Restarted with the same arguments,
/// the run goes on from here instead of from the start.
///
/// A checkpoint holds no open epoch's rows: the restarted run reads its
/// inputs again, applies the lateness rule to every row exactly as before,
/// and skips the accepted rows of the epochs the checkpoint has closed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Identifies the run that saved it (its inputs, the options that shape
    /// its results, the worker count, the state it started from).
    pub run: u64,
    /// That run, in words, for messages.
    pub described: String,
    /// The first epoch the run left open: rows before it are late.
    pub first_open: u64,
    /// Aggregates and model as of the end of `state.last_epoch`; `files` are
    /// the inputs consumed before the run.
    pub state: State,
    /// The run's metrics up to `state.last_epoch`.
    pub epochs: Vec<SavedEpoch>,
    /// Its scored examples up to `state.last_epoch`.
    pub scores: Vec<(f64, bool)>,
    /// Its examples up to `state.last_epoch`, when it collects them.
    pub examples: Vec<Example>,
}

/// [`EpochMetrics`] in a form bincode can hold (it flattens its figures for
/// `metrics.jsonl`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedEpoch {
    counts: [u64; 6],
    eval: EvalSummary,
    wall_seconds: f64,
}

impl From<&EpochMetrics> for SavedEpoch {
    fn from(metrics: &EpochMetrics) -> SavedEpoch {
        SavedEpoch {
            counts: [
                metrics.epoch,
                metrics.rows,
                metrics.rejected,
                metrics.duplicates,
                metrics.bot_excluded,
                metrics.clean,
            ],
            eval: metrics.eval,
            wall_seconds: metrics.wall_seconds,
        }
    }
}

impl From<&SavedEpoch> for EpochMetrics {
    fn from(saved: &SavedEpoch) -> EpochMetrics {
        let [epoch, rows, rejected, duplicates, bot_excluded, clean] = saved.counts;
        EpochMetrics {
            epoch,
            rows,
            rejected,
            duplicates,
            bot_excluded,
            clean,
            eval: saved.eval,
            wall_seconds: saved.wall_seconds,
        }
    }
}

/// Why a state could not be loaded or saved. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The file is not a complete, intact state of this format.
    #[error("{path}: {problem}; {remedy}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// What the user can do.
        remedy: String,
    },
}

/// A file kept in a state directory: its name, the name its previous
/// version is kept under, and its framing.
struct Framing {
    name: &'static str,
    previous: &'static str,
    magic: &'static [u8],
    version: u32,
    /// What the file is, in messages.
    what: &'static str,
}

/// `state.bin`: where the last finished run left off.
const STATE: Framing = Framing {
    name: "state.bin",
    previous: "state.prev.bin",
    magic: MAGIC,
    version: FORMAT_VERSION,
    what: "state",
};

/// `checkpoint.bin`: how far an unfinished run got.
const CHECKPOINT: Framing = Framing {
    name: "checkpoint.bin",
    previous: "checkpoint.prev.bin",
    magic: b"DELTAREC-CHECKPOINT\n",
    version: CHECKPOINT_VERSION,
    what: "checkpoint",
};

/// Where the current state lives in `dir`.
pub fn state_path(dir: &Path) -> PathBuf {
    dir.join(STATE.name)
}

/// Where the previous state is kept in `dir`.
pub fn previous_path(dir: &Path) -> PathBuf {
    dir.join(STATE.previous)
}

/// Where an unfinished run's last checkpoint lives in `dir`.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT.name)
}

/// Loads the state in `dir`, or `None` when there is none yet.
///
/// # Errors
/// When the file is unreadable, truncated, corrupted or of another version.
pub fn load(dir: &Path) -> Result<Option<State>, StateError> {
    let path = state_path(dir);
    if !path.exists() && previous_path(dir).exists() {
        return Err(StateError::Invalid {
            problem: "is missing, but a previous state is there".into(),
            remedy: format!(
                "move {} to {} to resume from it, or remove the directory to start afresh",
                previous_path(dir).display(),
                path.display()
            ),
            path,
        });
    }
    let remedy = match previous_copy(dir, &STATE) {
        Previous::Distinct(previous) => format!(
            "the previous state {} is intact if this one is not: move it to {} to resume from it",
            previous.display(),
            path.display()
        ),
        Previous::SameFile(previous) => format!(
            "there is no intact previous state ({} is the same file as {}): remove the state \
             directory to start afresh",
            previous.display(),
            path.display()
        ),
        Previous::Missing => "remove the state directory to start afresh".to_string(),
    };
    read(dir, &STATE, &remedy)
}

/// Loads the checkpoint an unfinished run left in `dir`, if any.
///
/// # Errors
/// When the file is unreadable, truncated, corrupted or of another version.
pub fn load_checkpoint(dir: &Path) -> Result<Option<Checkpoint>, StateError> {
    let path = checkpoint_path(dir);
    let remedy = match previous_copy(dir, &CHECKPOINT) {
        Previous::Distinct(previous) => format!(
            "the previous checkpoint {} is intact if this one is not: move it to {} to go on \
             from it, or remove both to rerun that run from {}",
            previous.display(),
            path.display(),
            STATE.name
        ),
        Previous::SameFile(previous) => format!(
            "there is no intact previous checkpoint ({} is the same file as it): remove both \
             to rerun that run from {} (or from nothing)",
            previous.display(),
            STATE.name
        ),
        Previous::Missing => format!(
            "remove it to rerun that run from {} (or from nothing)",
            STATE.name
        ),
    };
    read(dir, &CHECKPOINT, &remedy)
}

/// What a framed file's previous version can offer when the file is damaged.
enum Previous {
    /// There is none.
    Missing,
    /// It is another link to the current file (a run was killed between
    /// keeping the previous version and renaming the new one into place), so
    /// it is damaged the same way.
    SameFile(PathBuf),
    /// A file of its own.
    Distinct(PathBuf),
}

/// Whether the previous version of `framing`'s file in `dir` can stand in
/// for it.
fn previous_copy(dir: &Path, framing: &Framing) -> Previous {
    let previous = dir.join(framing.previous);
    if !previous.exists() {
        Previous::Missing
    } else if same_file(&previous, &dir.join(framing.name)) {
        Previous::SameFile(previous)
    } else {
        Previous::Distinct(previous)
    }
}

/// Whether `a` and `b` both exist and are links to one file.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The checksum in the header of `dir`'s state file: identifies the state a
/// run starts from without reading it. `None` when there is no readable
/// header.
pub fn state_checksum(dir: &Path) -> Option<u32> {
    let mut header = vec![0; MAGIC.len() + 16];
    File::open(state_path(dir))
        .and_then(|mut file| file.read_exact(&mut header))
        .ok()?;
    (&header[..MAGIC.len()] == MAGIC).then(|| {
        let at = MAGIC.len() + 12;
        u32::from_le_bytes(header[at..at + 4].try_into().expect("four bytes"))
    })
}

fn read<T: serde::de::DeserializeOwned>(
    dir: &Path,
    framing: &Framing,
    remedy: &str,
) -> Result<Option<T>, StateError> {
    let path = dir.join(framing.name);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Io { path, source }),
    };
    decode(&bytes, framing)
        .map(Some)
        .map_err(|problem| StateError::Invalid {
            path,
            problem,
            remedy: remedy.to_string(),
        })
}

/// bincode with variable-length integers: ids and counts are mostly small,
/// so a pair takes about a fifth of its fixed-width size.
fn encoding() -> impl bincode::Options {
    bincode::DefaultOptions::new()
        .with_varint_encoding()
        .with_little_endian()
}

/// Decodes a framed file's bytes.
fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], framing: &Framing) -> Result<T, String> {
    let magic = framing.magic;
    let header = magic.len() + 4 + 8 + 4;
    if bytes.len() < header || &bytes[..magic.len()] != magic {
        return Err(format!(
            "not a deltarec {} file (bad magic bytes or truncated header)",
            framing.what
        ));
    }
    let field = |at: usize, width: usize| &bytes[magic.len() + at..magic.len() + at + width];
    let version = u32::from_le_bytes(field(0, 4).try_into().expect("four bytes"));
    if version != framing.version {
        return Err(format!(
            "{} format version {version}, but this deltarec reads version {}",
            framing.what, framing.version
        ));
    }
    let len = u64::from_le_bytes(field(4, 8).try_into().expect("eight bytes"));
    let crc = u32::from_le_bytes(field(12, 4).try_into().expect("four bytes"));
    let payload = &bytes[header..];
    if payload.len() as u64 != len {
        return Err(format!(
            "truncated: {} payload bytes of {len}",
            payload.len()
        ));
    }
    if crc32fast::hash(payload) != crc {
        return Err("corrupted: checksum mismatch".into());
    }
    encoding()
        .deserialize(payload)
        .map_err(|err| format!("corrupted: {err}"))
}

/// Saves `state` into `dir` atomically, keeping the previous state.
///
/// # Errors
/// When the directory or a file cannot be written.
pub fn save(dir: &Path, state: &State) -> Result<(), StateError> {
    write(dir, &STATE, state).map(|_| ())
}

/// Saves an unfinished run's checkpoint into `dir` atomically, keeping the
/// previous one; returns the bytes written.
///
/// # Errors
/// When the directory or a file cannot be written.
pub fn save_checkpoint(dir: &Path, checkpoint: &Checkpoint) -> Result<u64, StateError> {
    write(dir, &CHECKPOINT, checkpoint)
}

/// Removes the checkpoints of `dir`, once the run that saved them has ended;
/// the previous one first, so that whatever remains after a crash is usable.
///
/// # Errors
/// When a checkpoint exists but cannot be removed.
pub fn remove_checkpoints(dir: &Path) -> Result<(), StateError> {
    for name in [CHECKPOINT.previous, CHECKPOINT.name] {
        let path = dir.join(name);
        match fs::remove_file(&path) {
            Err(source) if source.kind() != io::ErrorKind::NotFound => {
                return Err(StateError::Io { path, source });
            }
            _ => {}
        }
    }
    Ok(())
}

fn write<T: Serialize>(dir: &Path, framing: &Framing, value: &T) -> Result<u64, StateError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StateError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let payload = encoding()
        .serialize(value)
        .expect("a state always serialises");
    let path = dir.join(framing.name);
    let temporary = dir.join(format!(".{}.tmp-{}", framing.name, std::process::id()));
    let written = (|| {
        let mut file = File::create(&temporary)?;
        file.write_all(framing.magic)?;
        file.write_all(&framing.version.to_le_bytes())?;
        file.write_all(&(payload.len() as u64).to_le_bytes())?;
        file.write_all(&crc32fast::hash(&payload).to_le_bytes())?;
        file.write_all(&payload)?;
        file.sync_all()
    })();
    if let Err(source) = written {
        let _ = fs::remove_file(&temporary);
        return Err(StateError::Io {
            path: temporary,
            source,
        });
    }
    // Keep the current file as the previous one through a hard link, so
    // that the current name exists at every moment: the old file until the
    // rename below replaces it with the new one. A run killed between the two
    // renames leaves the previous name linked to the current file; it already
    // is the previous version then. (Renaming a link onto another link of the
    // same file would do nothing and leave the link behind.)
    let previous = dir.join(framing.previous);
    if path.exists() && !same_file(&path, &previous) {
        let link = dir.join(format!(".{}.tmp-{}", framing.previous, std::process::id()));
        let _ = fs::remove_file(&link);
        fs::hard_link(&path, &link).map_err(io_error(&link))?;
        let kept = fs::rename(&link, &previous).map_err(io_error(&link));
        let _ = fs::remove_file(&link);
        kept?;
    }
    fs::rename(&temporary, &path).map_err(io_error(&path))?;
    // Make the renames themselves durable.
    if let Ok(directory) = File::open(dir) {
        let _ = directory.sync_all();
    }
    Ok((framing.magic.len() + 16 + payload.len()) as u64)
}

/// Keeps other runs out of a state directory while this run uses it; released
/// on drop.
///
/// The lock is a file `DIR/lock` holding the owner's process id. It appears
/// with the id already in it: the id is written and synced to a private file
/// `DIR/.lock.tmp-ID` first, which is then hard-linked to `DIR/lock` (a link
/// fails if the name exists, so one taker wins). A lock left by a process
/// that no longer runs (a killed run) is taken over; so is an empty one,
/// which no run writes.
///
/// Taking over a lock is a race of its own: two takers may both find the
/// same dead owner, and the second must not remove the lock the first has
/// just taken. So a stale lock is only removed by the taker that creates
/// `DIR/.lock.claim-INODE` for it, after checking that `DIR/lock` is still
/// that file with that owner; the others wait for the claim to go, then
/// try again.
#[derive(Debug)]
pub struct Lock(PathBuf);

/// How often a taker tries to link its lock before giving up; it only
/// tries again after a stale lock was removed or while another taker
/// removes one.
const LOCK_ATTEMPTS: usize = 1000;

impl Lock {
    /// Takes the lock of `dir`, then removes the temporary files killed runs
    /// left there (see [`remove_temporaries`]).
    ///
    /// # Errors
    /// When another running process holds it, or it cannot be written.
    pub fn take(dir: &Path) -> Result<Lock, String> {
        let mine = std::process::id().to_string();
        let lock = Lock::take_as(dir, &mine, |owner| owner != mine && is_running(owner))?;
        remove_temporaries(dir);
        Ok(lock)
    }

    /// Takes the lock of `dir` for `owner`, treating a lock as held when
    /// `alive` says its owner is.
    fn take_as(dir: &Path, owner: &str, alive: impl Fn(&str) -> bool) -> Result<Lock, String> {
        let path = dir.join("lock");
        let failed = |err: io::Error| format!("--state {}: {err}", dir.display());
        let temporary = dir.join(format!(".lock.tmp-{owner}"));
        write_synced(&temporary, owner.as_bytes()).map_err(failed)?;
        let taken = (|| {
            for _ in 0..LOCK_ATTEMPTS {
                match fs::hard_link(&temporary, &path) {
                    Ok(()) => return Ok(Lock(path.clone())),
                    Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(err) => return Err(failed(err)),
                }
                let (identity, holder) = match read_owner(&path) {
                    Ok(found) => found,
                    // Released since: try again.
                    Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(failed(err)),
                };
                if alive(&holder) {
                    return Err(format!(
                        "--state {}: another run (process {holder}) is using it; wait for it \
                         to end, or remove {} if that process is not a deltarec run",
                        dir.display(),
                        path.display()
                    ));
                }
                take_over(dir, &temporary, identity, &holder, &alive)?;
            }
            Err(format!(
                "--state {}: cannot take {}",
                dir.display(),
                path.display()
            ))
        })();
        let _ = fs::remove_file(&temporary);
        taken
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Whether the process `id` runs on this machine.
fn is_running(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && Path::new("/proc").join(id).exists()
}

/// Writes `bytes` to a new file at `path` and syncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The (device, inode) of the lock file at `path` and the owner in it, both
/// of the same file.
fn read_owner(path: &Path) -> io::Result<((u64, u64), String)> {
    use std::os::unix::fs::MetadataExt;
    let mut file = File::open(path)?;
    let metadata = file.metadata()?;
    let mut owner = String::new();
    file.read_to_string(&mut owner)?;
    Ok(((metadata.dev(), metadata.ino()), owner.trim().to_string()))
}

/// Removes the lock of the dead `stale_owner`, file `stale`, unless another
/// taker is doing so; `temporary` holds this taker's id. Returns when the
/// caller should try to link its lock again.
fn take_over(
    dir: &Path,
    temporary: &Path,
    stale: (u64, u64),
    stale_owner: &str,
    alive: &impl Fn(&str) -> bool,
) -> Result<(), String> {
    let path = dir.join("lock");
    let claim = dir.join(format!(".lock.claim-{}", stale.1));
    match fs::hard_link(temporary, &claim) {
        Ok(()) => {
            // NB: only the holder of the claim removes this lock, so it is
            // still the stale one if its file and owner are unchanged.
            if let Ok((identity, holder)) = read_owner(&path)
                && identity == stale
                && holder == stale_owner
            {
                let _ = fs::remove_file(&path);
            }
            let _ = fs::remove_file(&claim);
            Ok(())
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            let claimant = match fs::read_to_string(&claim) {
                Ok(claimant) => claimant.trim().to_string(),
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(err) => return Err(format!("--state {}: {err}", dir.display())),
            };
            if !alive(&claimant) && claim.exists() {
                return Err(format!(
                    "--state {}: a run (process {claimant}) was killed while taking over the \
                     lock of a killed run; remove {} and {} if no deltarec run uses the \
                     directory",
                    dir.display(),
                    path.display(),
                    claim.display()
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
            Ok(())
        }
        Err(err) => Err(format!("--state {}: {err}", dir.display())),
    }
}

/// Removes the temporary files that killed runs left in the state directory
/// `dir`: a file being written (`.state.bin.tmp-ID`, `.checkpoint.bin.tmp-ID`,
/// which can be tens of MB), a link to the previous version
/// (`.state.prev.bin.tmp-ID`, `.checkpoint.prev.bin.tmp-ID`), a lock being
/// taken (`.lock.tmp-ID`, `.lock.claim-INODE`).
///
/// Only files of this process or of processes that no longer run are
/// removed: called with the lock held, no other run writes in `dir`, but
/// another may be trying to take the lock. Files that cannot be removed are
/// left.
pub fn remove_temporaries(dir: &Path) {
    let mine = std::process::id().to_string();
    let stale = |owner: &str| owner == mine || !is_running(owner);
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let owner = if name.starts_with(".lock.claim-") {
            fs::read_to_string(entry.path()).unwrap_or_default()
        } else {
            match name.rsplit_once(".tmp-") {
                Some((_, owner)) if name.starts_with('.') => owner.to_string(),
                _ => continue,
            }
        };
        if stale(owner.trim()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Optimizer, Params};
    use crate::scaler::Histogram;

    fn sample_state() -> State {
        let options = FixedOptions {
            spec: "taobao".into(),
            spec_text: 0,
            bucket_ms: 86_400_000,
            bot_threshold: 1000,
            scaler: ScalerKind::ZScore,
            optimizer: OptimizerConfig::default(),
            lateness: Some(1),
        };
        let mut histogram = Histogram::default();
        histogram.add(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        State {
            model: ModelState {
                params: Params::zeros(10),
                optimizer: Optimizer::new(options.optimizer, 10).unwrap(),
                histogram,
                last_epoch: Some(17_500),
            },
            options,
            last_epoch: Some(17_500),
            files: vec![Fingerprint {
                name: "day1.csv".into(),
                len: 10,
                crc: 7,
            }],
            pairs: vec![(1, 2, [3, 0, 0, 1, 0]), (4, 5, [0, 0, 0, 0, 2])],
            newest_epoch: Some(17_501),
            open_events: vec![Event {
                ts: 17_501 * 86_400_000 + 5,
                user: 1,
                item: 9,
                kind: crate::event::Kind::Cart,
            }],
            open_tallies: vec![(17_501, 2, 1)],
            last_run: 7,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("deltarec-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_saved_state_loads_back_equal() {
        let dir = temp_dir("roundtrip");
        assert!(load(&dir).unwrap().is_none());
        let state = sample_state();
        save(&dir, &state).unwrap();
        let loaded = load(&dir).unwrap().unwrap();
        assert_eq!(loaded.pairs, state.pairs);
        assert_eq!(loaded.options, state.options);
        assert_eq!(loaded.model.histogram, state.model.histogram);
        assert_eq!(loaded.files, state.files);
        assert_eq!(loaded.open_events, state.open_events);
        assert_eq!(loaded.open_tallies, state.open_tallies);
    }

    #[test]
    fn truncated_corrupted_and_foreign_versions_are_refused() {
        let dir = temp_dir("damage");
        save(&dir, &sample_state()).unwrap();
        save(&dir, &sample_state()).unwrap();
        let good = fs::read(state_path(&dir)).unwrap();

        let damaged: Vec<(Vec<u8>, &str)> = vec![
            (good[..good.len() - 3].to_vec(), "truncated"),
            (good[..10].to_vec(), "truncated header"),
            (
                {
                    let mut flipped = good.clone();
                    let last = flipped.len() - 1;
                    flipped[last] ^= 0x40;
                    flipped
                },
                "checksum mismatch",
            ),
            (
                {
                    let mut version = good.clone();
                    version[MAGIC.len()] = 9;
                    version
                },
                "version 9",
            ),
        ];
        for (bytes, expected) in damaged {
            fs::write(state_path(&dir), &bytes).unwrap();
            let error = load(&dir).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
            assert!(
                error.contains("state.prev.bin"),
                "names the previous state: {error}"
            );
            assert!(!error.contains('\n'));
        }
        // The previous state is intact and loads.
        fs::rename(previous_path(&dir), state_path(&dir)).unwrap();
        assert!(load(&dir).unwrap().is_some());
    }

    #[test]
    fn a_state_directory_has_one_user_at_a_time() {
        let dir = temp_dir("lock");
        fs::create_dir_all(&dir).unwrap();
        let lock = Lock::take(&dir).unwrap();
        // Held by this (running) process: a second taker from elsewhere would be refused;
        // here the owner is this process itself, so a stale-looking lock of a dead
        // process is what we can simulate.
        drop(lock);
        assert!(!dir.join("lock").exists());
        fs::write(dir.join("lock"), "999999999").unwrap();
        let taken = Lock::take(&dir).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("lock")).unwrap(),
            std::process::id().to_string()
        );
        drop(taken);
        fs::write(dir.join("lock"), "1").unwrap();
        let refused = Lock::take(&dir).unwrap_err();
        assert!(refused.contains("another run (process 1)"), "{refused}");
    }

    /// The names in `dir`, sorted.
    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Races `takers` threads, each its own owner, for the lock of `dir`;
    /// owners named `dead` do not run. Returns the owners that won.
    fn race_for_lock(dir: &Path, takers: usize) -> Vec<String> {
        let barrier = std::sync::Barrier::new(takers);
        let results: Vec<(String, Result<Lock, String>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..takers)
                .map(|taker| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        let owner = format!("taker{taker}");
                        barrier.wait();
                        let taken = Lock::take_as(dir, &owner, |other| {
                            other != owner && other.starts_with("taker")
                        });
                        (owner, taken)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap())
                .collect()
        });
        for (_, taken) in &results {
            if let Err(refused) = taken {
                assert!(refused.contains("another run (process taker"), "{refused}");
            }
        }
        let winners: Vec<String> = results
            .iter()
            .filter(|(_, taken)| taken.is_ok())
            .map(|(owner, _)| owner.clone())
            .collect();
        if let [winner] = &winners[..] {
            assert_eq!(&fs::read_to_string(dir.join("lock")).unwrap(), winner);
            // Every loser cleaned up after itself; the winner's lock is all
            // that is left.
            assert_eq!(names_in(dir), ["lock"]);
        }
        winners
    }

    #[test]
    fn racing_takers_of_a_free_or_stale_lock_have_one_winner() {
        let dir = temp_dir("lock-race");
        for round in 0..60 {
            fs::create_dir_all(&dir).unwrap();
            // A free lock, the lock of a dead owner, an empty lock.
            match round % 3 {
                0 => {}
                1 => fs::write(dir.join("lock"), "dead").unwrap(),
                _ => fs::write(dir.join("lock"), "").unwrap(),
            }
            let winners = race_for_lock(&dir, 8);
            assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
            assert!(names_in(&dir).is_empty(), "released on drop");
            fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn a_taken_lock_is_released_on_drop_and_a_killed_takeover_is_named() {
        let dir = temp_dir("lock-claim");
        fs::create_dir_all(&dir).unwrap();
        let alive = |owner: &str| owner == "live";
        drop(Lock::take_as(&dir, "first", alive).unwrap());
        assert!(names_in(&dir).is_empty());

        // A taker killed while removing a dead owner's lock leaves its claim.
        fs::write(dir.join("lock"), "dead").unwrap();
        let (_, inode) = read_owner(&dir.join("lock")).unwrap().0;
        fs::write(dir.join(format!(".lock.claim-{inode}")), "killed").unwrap();
        let refused = Lock::take_as(&dir, "second", alive).unwrap_err();
        assert!(refused.contains("process killed) was killed"), "{refused}");
        assert!(!dir.join(".lock.tmp-second").exists());
    }

    #[test]
    fn temporaries_of_dead_processes_and_of_this_one_are_removed() {
        let dir = temp_dir("temporaries");
        fs::create_dir_all(&dir).unwrap();
        let mine = std::process::id();
        let removed = [
            ".state.bin.tmp-999999999".to_string(),
            ".checkpoint.prev.bin.tmp-999999999".to_string(),
            format!(".checkpoint.bin.tmp-{mine}"),
            ".lock.tmp-999999999".to_string(),
            ".lock.claim-12345".to_string(),
        ];
        // Process 1 always runs; files without the leading dot are not ours.
        let kept = [".lock.tmp-1", "notes.tmp-999999999", "state.bin"];
        for name in removed.iter().map(String::as_str).chain(kept) {
            fs::write(dir.join(name), "999999999").unwrap();
        }
        remove_temporaries(&dir);
        let mut expected = kept.to_vec();
        expected.sort();
        assert_eq!(names_in(&dir), expected);

        // Taking the lock clears them too.
        fs::write(dir.join(".state.bin.tmp-999999999"), "x").unwrap();
        let lock = Lock::take(&dir).unwrap();
        assert!(!dir.join(".state.bin.tmp-999999999").exists());
        drop(lock);
    }

    #[test]
    fn a_previous_file_linked_to_the_current_one_is_not_offered_and_is_undone() {
        let dir = temp_dir("same-inode");
        save(&dir, &sample_state()).unwrap();
        save(&dir, &sample_state()).unwrap();
        // What a run killed between the two renames of `write` leaves.
        fs::remove_file(previous_path(&dir)).unwrap();
        fs::hard_link(state_path(&dir), previous_path(&dir)).unwrap();
        let good = fs::read(state_path(&dir)).unwrap();

        // Damaged in place, both names show the damage: neither is offered.
        fs::write(state_path(&dir), &good[..good.len() - 3]).unwrap();
        let error = load(&dir).unwrap_err().to_string();
        assert!(error.contains("no intact previous state"), "{error}");
        assert!(!error.contains("to resume from it"), "{error}");
        fs::write(state_path(&dir), &good).unwrap();

        // The next save leaves two distinct files and nothing else.
        save(&dir, &sample_state()).unwrap();
        assert!(!same_file(&state_path(&dir), &previous_path(&dir)));
        assert_eq!(names_in(&dir), ["state.bin", "state.prev.bin"]);
        assert!(load(&dir).unwrap().is_some());

        // The same for a checkpoint.
        let checkpoint = Checkpoint {
            run: 1,
            described: "a run".into(),
            first_open: 17_501,
            state: sample_state(),
            epochs: Vec::new(),
            scores: Vec::new(),
            examples: Vec::new(),
        };
        save_checkpoint(&dir, &checkpoint).unwrap();
        let previous = dir.join(CHECKPOINT.previous);
        fs::hard_link(checkpoint_path(&dir), &previous).unwrap();
        fs::write(checkpoint_path(&dir), b"DELTAREC").unwrap();
        let error = load_checkpoint(&dir).unwrap_err().to_string();
        assert!(error.contains("no intact previous checkpoint"), "{error}");
        save_checkpoint(&dir, &checkpoint).unwrap();
        assert!(!same_file(&checkpoint_path(&dir), &previous));
        assert!(!names_in(&dir).iter().any(|name| name.contains(".tmp-")));
        assert!(load_checkpoint(&dir).unwrap().is_some());
    }

    #[test]
    fn option_changes_are_named() {
        let saved = sample_state().options;
        let mut now = saved.clone();
        assert_eq!(now.first_difference(&saved), None);
        now.bucket_ms = 3_600_000;
        let (flag, _, _) = now.first_difference(&saved).unwrap();
        assert_eq!(flag, "--bucket");
        let mut edited = saved.clone();
        edited.spec_text = 0x1234;
        let (flag, now, _) = edited.first_difference(&saved).unwrap();
        assert_eq!(
            (flag, now.as_str()),
            ("--spec", "taobao (spec text CRC 00001234)")
        );
    }
}
