//! The Raft log on disk: segment files `log/<20-digit first index>.seg` of checksummed frames,
//! each holding one bincode-encoded openraft entry.
//!
//! Only the log store's writer thread touches these files after `open`. Writes are buffered by
//! the OS until `sync`, which the writer calls once per batch of appends.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::config::MAX_ENTRY_BYTES;
use super::durable::{self, FrameFault};
use super::types::{self, Entry};

const SUFFIX: &str = ".seg";

fn segment_name(base: u64) -> String {
    format!("{base:020}{SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One segment: the file's first entry index and the byte offset of each entry in it.
#[derive(Debug)]
struct Segment {
    base: u64,
    path: PathBuf,
    offsets: Vec<u64>,
    len: u64,
}

impl Segment {
    fn last_index(&self) -> Option<u64> {
        (!self.offsets.is_empty()).then(|| self.base + self.offsets.len() as u64 - 1)
    }
}

/// What recovery had to repair.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Repair {
    /// Bytes cut from the end of the segment where the damage was found.
    pub cut_bytes: u64,
    /// Whole segments removed because they followed the damage.
    pub dropped_segments: usize,
}

pub(crate) struct LogFiles {
    dir: PathBuf,
    segments: Vec<Segment>,
    /// Append handle of the last segment, opened lazily.
    active: Option<File>,
    segment_bytes: u64,
    /// Written but not yet fsynced data, and whether a segment was created or removed since the
    /// last directory fsync.
    dirty: bool,
    dir_dirty: bool,
}

impl LogFiles {
    /// Opens `dir` (created if missing), validates every frame, cuts a torn or corrupt tail and
    /// returns all intact entries in index order.
    pub(crate) fn open(
        dir: &Path,
        segment_bytes: u64,
    ) -> io::Result<(LogFiles, Vec<Entry>, Repair)> {
        fs::create_dir_all(dir)?;
        let mut bases = Vec::new();
        for item in fs::read_dir(dir)? {
            let item = item?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            match parse_segment_name(&name) {
                Some(base) => bases.push(base),
                None if name.ends_with(".tmp") => fs::remove_file(item.path())?,
                None => warn!(file = %name, "ignoring unknown file in raft log directory"),
            }
        }
        bases.sort_unstable();

        let mut files = LogFiles {
            dir: dir.to_path_buf(),
            segments: Vec::new(),
            active: None,
            segment_bytes,
            dirty: false,
            dir_dirty: false,
        };
        let mut entries = Vec::new();
        let mut repair = Repair::default();
        let mut damaged = false;
        for base in bases {
            let path = dir.join(segment_name(base));
            if damaged {
                fs::remove_file(&path)?;
                repair.dropped_segments += 1;
                continue;
            }
            let expected = entries.last().map(|e: &Entry| e.log_id.index + 1);
            if expected.is_some_and(|x| x != base) {
                warn!(segment = %path.display(), ?expected, "log segment does not continue the log; dropping it and all later ones");
                fs::remove_file(&path)?;
                repair.dropped_segments += 1;
                damaged = true;
                continue;
            }
            let buf = fs::read(&path)?;
            let mut seg = Segment {
                base,
                path,
                offsets: Vec::new(),
                len: 0,
            };
            let mut pos = 0usize;
            while pos < buf.len() {
                let fault = match durable::read_frame(&buf[pos..], MAX_ENTRY_BYTES) {
                    Ok((payload, used)) => match types::decode::<Entry>(payload) {
                        Ok(entry) if entry.log_id.index == base + seg.offsets.len() as u64 => {
                            seg.offsets.push(pos as u64);
                            entries.push(entry);
                            pos += used;
                            continue;
                        }
                        Ok(entry) => format!(
                            "entry index {} where {} was expected",
                            entry.log_id.index,
                            base + seg.offsets.len() as u64
                        ),
                        Err(e) => format!("undecodable entry: {e}"),
                    },
                    Err(FrameFault::Short) => "torn frame".to_string(),
                    Err(fault) => format!("{fault:?}"),
                };
                warn!(segment = %seg.path.display(), offset = pos, %fault, cut = buf.len() - pos,
                      "damaged raft log tail; cutting it");
                repair.cut_bytes += (buf.len() - pos) as u64;
                damaged = true;
                break;
            }
            seg.len = pos as u64;
            if seg.offsets.is_empty() {
                // Empty (a crash right after rolling) or damaged from its first frame on.
                fs::remove_file(&seg.path)?;
                files.dir_dirty = true;
                if damaged {
                    repair.dropped_segments += 1;
                }
                continue;
            }
            if damaged {
                let f = OpenOptions::new().write(true).open(&seg.path)?;
                f.set_len(seg.len)?;
                f.sync_all()?;
            }
            files.segments.push(seg);
        }
        if damaged || files.dir_dirty {
            durable::fsync_dir(dir)?;
            files.dir_dirty = false;
        }
        if repair != Repair::default() {
            info!(
                ?repair,
                entries = entries.len(),
                "raft log recovered after repair"
            );
        }
        Ok((files, entries, repair))
    }

    /// Appends one encoded entry (payload of a frame) at `index`, rolling to a new segment when
    /// the current one is full. Not durable until `sync`.
    pub(crate) fn append(&mut self, index: u64, payload: &[u8]) -> io::Result<()> {
        let next = self
            .segments
            .last()
            .and_then(|s| s.last_index())
            .map(|i| i + 1);
        if next.is_some_and(|n| n != index) {
            return Err(io::Error::other(format!(
                "log append at index {index} does not follow the last entry (expected {next:?})"
            )));
        }
        let roll = match self.segments.last() {
            None => true,
            Some(s) => s.len >= self.segment_bytes,
        };
        if roll {
            self.roll(index)?;
        }
        let frame = durable::frame(payload);
        let file = self.active_file()?;
        file.write_all(&frame)?;
        let seg = self
            .segments
            .last_mut()
            .ok_or_else(|| io::Error::other("no active segment"))?;
        seg.offsets.push(seg.len);
        seg.len += frame.len() as u64;
        self.dirty = true;
        Ok(())
    }

    fn roll(&mut self, base: u64) -> io::Result<()> {
        // The previous segment's unsynced writes must be durable before it stops being active.
        if let Some(f) = self.active.take()
            && self.dirty
        {
            f.sync_all()?;
        }
        let path = self.dir.join(segment_name(base));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        self.segments.push(Segment {
            base,
            path,
            offsets: Vec::new(),
            len: 0,
        });
        self.active = Some(file);
        self.dir_dirty = true;
        Ok(())
    }

    fn active_file(&mut self) -> io::Result<&mut File> {
        if self.active.is_none() {
            let seg = self
                .segments
                .last()
                .ok_or_else(|| io::Error::other("no segment"))?;
            let f = OpenOptions::new().append(true).open(&seg.path)?;
            self.active = Some(f);
        }
        self.active
            .as_mut()
            .ok_or_else(|| io::Error::other("no active segment"))
    }

    /// Makes every append so far durable.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            if let Some(f) = &self.active {
                f.sync_data()?;
            }
            self.dirty = false;
        }
        if self.dir_dirty {
            durable::fsync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Removes every entry at or after `index`, durably.
    pub(crate) fn truncate(&mut self, index: u64) -> io::Result<()> {
        self.sync()?;
        self.active = None;
        while let Some(seg) = self.segments.last() {
            if seg.base >= index {
                fs::remove_file(&seg.path)?;
                self.segments.pop();
                self.dir_dirty = true;
                continue;
            }
            if seg.last_index().is_some_and(|last| last >= index) {
                let keep = (index - seg.base) as usize;
                let cut_at = seg.offsets[keep];
                let f = OpenOptions::new().write(true).open(&seg.path)?;
                f.set_len(cut_at)?;
                f.sync_all()?;
                if let Some(seg) = self.segments.last_mut() {
                    seg.offsets.truncate(keep);
                    seg.len = cut_at;
                }
            }
            break;
        }
        self.sync()
    }

    /// Deletes whole segments whose entries are all at or below `upto`. The caller has recorded
    /// the purge point durably first, so a crash in between only leaves extra entries behind.
    pub(crate) fn purge(&mut self, upto: u64) -> io::Result<()> {
        let mut removed = 0;
        for seg in &self.segments {
            match seg.last_index() {
                Some(last) if last <= upto => {
                    fs::remove_file(&seg.path)?;
                    removed += 1;
                }
                _ => break,
            }
        }
        if removed > 0 {
            if removed == self.segments.len() {
                self.active = None;
            }
            self.segments.drain(..removed);
            durable::fsync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// Lists the segment bases in a log directory without opening it.
#[cfg(test)]
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for item in fs::read_dir(dir)? {
        if let Some(base) = parse_segment_name(&item?.file_name().to_string_lossy()) {
            out.push(base);
        }
    }
    out.sort_unstable();
    Ok(out)
}
