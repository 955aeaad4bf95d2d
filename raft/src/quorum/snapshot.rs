//! Snapshot files: `snapshot-<20-digit index>-<term>.bin`, written atomically, newest kept.
//!
//! Layout: 8-byte magic, then a checksummed frame holding the bincode `SnapshotMeta`, then a
//! checksummed frame holding the applier's bytes.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use tracing::{info, warn};

use super::durable;
use super::types::{self, SnapshotMeta};

const MAGIC: &[u8; 8] = b"FJRSNAP1";
const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".bin";
const META_MAX: usize = 1 << 20;

fn file_name(meta: &SnapshotMeta) -> String {
    let (index, term) = meta
        .last_log_id
        .map_or((0, 0), |l| (l.index, l.leader_id.term));
    format!("{PREFIX}{index:020}-{term}{SUFFIX}")
}

fn is_snapshot_file(name: &str) -> bool {
    name.starts_with(PREFIX) && name.ends_with(SUFFIX)
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("snapshot {}: {what}", path.display()),
    )
}

fn encode_file(meta: &SnapshotMeta, data: &[u8]) -> io::Result<Vec<u8>> {
    if data.len() > u32::MAX as usize {
        return Err(io::Error::other("snapshot larger than 4 GiB"));
    }
    let meta_bytes = types::encode(meta, META_MAX).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(MAGIC.len() + meta_bytes.len() + data.len() + 16);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&durable::frame(&meta_bytes));
    out.extend_from_slice(&durable::frame(data));
    Ok(out)
}

fn read_file(path: &Path) -> io::Result<Loaded> {
    let buf = fs::read(path)?;
    let rest = buf
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| invalid(path, "bad magic"))?;
    let (meta_bytes, used) =
        durable::read_frame(rest, META_MAX).map_err(|f| invalid(path, format!("meta {f:?}")))?;
    let meta: SnapshotMeta = types::decode(meta_bytes).map_err(|e| invalid(path, e))?;
    let rest = &rest[used..];
    let (data, used) = durable::read_frame(rest, u32::MAX as usize)
        .map_err(|f| invalid(path, format!("data {f:?}")))?;
    if used != rest.len() {
        return Err(invalid(path, "trailing bytes"));
    }
    Ok((meta, data.to_vec()))
}

/// A snapshot read back from disk: its metadata and the applier's bytes.
pub(crate) type Loaded = (SnapshotMeta, Vec<u8>);

/// The snapshot directory and which snapshot is current.
pub(crate) struct SnapshotStore {
    dir: PathBuf,
    /// Held while writing so a snapshot being built and one being installed never interleave.
    current: Mutex<Option<SnapshotMeta>>,
}

impl SnapshotStore {
    /// Opens `dir`, returning the newest snapshot if there is one. A damaged newest snapshot is
    /// an error: the log behind it may already be purged, so starting without it would lose state.
    pub(crate) fn open(dir: &Path) -> io::Result<(SnapshotStore, Option<Loaded>)> {
        fs::create_dir_all(dir)?;
        let mut names = Vec::new();
        for item in fs::read_dir(dir)? {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name.starts_with(PREFIX) && name.ends_with(".tmp") {
                fs::remove_file(item.path())?;
            } else if is_snapshot_file(&name) {
                names.push(name);
            }
        }
        // Zero-padded indexes make the lexical order the index order (terms only differ for the
        // same index when two leaders' snapshots raced, and either is then fine).
        names.sort();
        let newest = match names.pop() {
            None => None,
            Some(name) => {
                let (meta, data) = read_file(&dir.join(&name))?;
                info!(file = %name, last_log_id = ?meta.last_log_id, bytes = data.len(), "loaded snapshot");
                Some((meta, data))
            }
        };
        for old in names {
            if let Err(e) = fs::remove_file(dir.join(&old)) {
                warn!(file = %old, error = %e, "could not remove old snapshot");
            }
        }
        let store = SnapshotStore {
            dir: dir.to_path_buf(),
            current: Mutex::new(newest.as_ref().map(|(m, _)| m.clone())),
        };
        Ok((store, newest))
    }

    /// Writes a snapshot durably; it becomes current unless a newer one already is. Older
    /// snapshot files are removed afterwards.
    pub(crate) fn save(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        let mut current = self.current.lock();
        let bytes = encode_file(meta, data)?;
        let name = file_name(meta);
        let newer = current
            .as_ref()
            .is_none_or(|c| meta.last_log_id >= c.last_log_id);
        if !newer {
            info!(?meta.last_log_id, "not keeping a snapshot older than the current one");
            return Ok(());
        }
        durable::write_atomic(&self.dir, &name, &bytes, true)?;
        *current = Some(meta.clone());
        for item in fs::read_dir(&self.dir)? {
            let other = item?.file_name().to_string_lossy().into_owned();
            if is_snapshot_file(&other)
                && other != name
                && let Err(e) = fs::remove_file(self.dir.join(&other))
            {
                warn!(file = %other, error = %e, "could not remove old snapshot");
            }
        }
        Ok(())
    }

    /// The current snapshot, read back from its file.
    pub(crate) fn load_current(&self) -> io::Result<Option<Loaded>> {
        let current = self.current.lock();
        match current.as_ref() {
            None => Ok(None),
            Some(meta) => read_file(&self.dir.join(file_name(meta))).map(Some),
        }
    }

    pub(crate) fn current_meta(&self) -> Option<SnapshotMeta> {
        self.current.lock().clone()
    }
}
