//! Small crash-safe files (vote, committed, purged marker, snapshots) and the checksummed frame
//! shared with the log segments.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Bytes before a frame's payload: u32 length, u32 crc32c of the payload.
pub(crate) const FRAME_HEADER: usize = 8;

/// `[u32 len][u32 crc32c][payload]`, little-endian.
pub(crate) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Why a frame could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameFault {
    /// Fewer bytes than the header or the declared payload: a torn write.
    Short,
    /// Declared length above the limit.
    TooLong(usize),
    /// Payload does not match its checksum.
    Checksum,
}

/// Reads the frame at the start of `buf`: its payload and total size.
pub(crate) fn read_frame(buf: &[u8], max_payload: usize) -> Result<(&[u8], usize), FrameFault> {
    if buf.len() < FRAME_HEADER {
        return Err(FrameFault::Short);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len > max_payload {
        return Err(FrameFault::TooLong(len));
    }
    let payload = buf
        .get(FRAME_HEADER..FRAME_HEADER + len)
        .ok_or(FrameFault::Short)?;
    if crc32c::crc32c(payload) != crc {
        return Err(FrameFault::Checksum);
    }
    Ok((payload, FRAME_HEADER + len))
}

/// Makes renames and creations inside `dir` durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `dir/name` with `data` so that a crash leaves either the old or the new content.
/// With `durable` false the fsyncs are skipped: the content survives a process crash (page
/// cache) but maybe not a power loss.
pub(crate) fn write_atomic(dir: &Path, name: &str, data: &[u8], durable: bool) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
    }
    fs::rename(&tmp, dir.join(name))?;
    if durable {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Writes one checksummed frame holding `payload` to `dir/name`, atomically.
pub(crate) fn write_small(dir: &Path, name: &str, payload: &[u8], durable: bool) -> io::Result<()> {
    write_atomic(dir, name, &frame(payload), durable)
}

/// Reads a file written by `write_small`: `Ok(None)` if absent, an error if damaged.
pub(crate) fn read_small(dir: &Path, name: &str, max: usize) -> io::Result<Option<Vec<u8>>> {
    let buf = match fs::read(dir.join(name)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match read_frame(&buf, max) {
        Ok((payload, used)) if used == buf.len() => Ok(Some(payload.to_vec())),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name}: trailing bytes"),
        )),
        Err(fault) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name}: damaged ({fault:?})"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_faults() {
        let f = frame(b"payload");
        assert_eq!(read_frame(&f, 100), Ok((&b"payload"[..], f.len())));
        assert_eq!(read_frame(&f[..f.len() - 1], 100), Err(FrameFault::Short));
        assert_eq!(read_frame(&f[..3], 100), Err(FrameFault::Short));
        assert_eq!(read_frame(&f, 3), Err(FrameFault::TooLong(7)));
        let mut bad = f.clone();
        bad[9] ^= 1;
        assert_eq!(read_frame(&bad, 100), Err(FrameFault::Checksum));
    }

    #[test]
    fn small_files_detect_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_small(dir.path(), "x", 100).unwrap(), None);
        write_small(dir.path(), "x", b"abc", true).unwrap();
        assert_eq!(
            read_small(dir.path(), "x", 100).unwrap(),
            Some(b"abc".to_vec())
        );
        let path = dir.path().join("x");
        let mut raw = fs::read(&path).unwrap();
        raw[8] ^= 0xff;
        fs::write(&path, &raw).unwrap();
        assert!(read_small(dir.path(), "x", 100).is_err());
    }
}
