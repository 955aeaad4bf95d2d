//! Size-prefixed frames: a big-endian `i32` length, then that many bytes.

use std::io::{self, IoSlice};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::FrameError;

/// Kafka's default `socket.request.max.bytes` (100 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 104_857_600;

/// Buffer growth step. The claimed length is only a promise: memory grows with
/// the bytes that actually arrive, so a peer that claims 100 MiB and sends
/// nothing costs at most this much.
const READ_CHUNK: usize = 64 * 1024;

/// Reads one request frame and returns its payload (without the length).
///
/// `Ok(None)` is a clean close: EOF before the first byte of a frame. EOF
/// anywhere later is [`FrameError::Truncated`]. A negative length or one above
/// `max_bytes` is rejected before any payload buffer is allocated.
pub async fn read_frame<R>(reader: &mut R, max_bytes: usize) -> Result<Option<Bytes>, FrameError>
where
    R: AsyncRead + Unpin,
{
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < prefix.len() {
        let n = reader.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated { expected: 4, got })
            };
        }
        got += n;
    }
    let claimed = i32::from_be_bytes(prefix);
    let size = usize::try_from(claimed).map_err(|_| FrameError::NegativeLength(claimed))?;
    if size > max_bytes {
        return Err(FrameError::TooLarge {
            size,
            max: max_bytes,
        });
    }

    let mut buf = BytesMut::with_capacity(size.min(READ_CHUNK));
    while buf.len() < size {
        if buf.capacity() == buf.len() {
            // Double what has arrived, capped by what is still owed.
            let grow = buf.len().max(READ_CHUNK).min(size - buf.len());
            buf.reserve(grow);
        }
        let owed = (size - buf.len()) as u64;
        let n = (&mut *reader).take(owed).read_buf(&mut buf).await?;
        if n == 0 {
            return Err(FrameError::Truncated {
                expected: size,
                got: buf.len(),
            });
        }
    }
    Ok(Some(buf.freeze()))
}

/// Writes an already complete frame (length prefix included, as produced by
/// [`crate::encode`]) in one go.
pub async fn write_frame<W>(writer: &mut W, frame: &[u8]) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    writer.write_all(frame).await
}

/// Writes a frame made of several parts (e.g. an encoded header and a large
/// body kept in its own buffer) with vectored writes, prefixing their total
/// length, without copying them together.
pub async fn write_frame_parts<W>(writer: &mut W, parts: &[&[u8]]) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let len = i32::try_from(total).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {total} bytes does not fit an i32 length"),
        )
    })?;
    let prefix = len.to_be_bytes();
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(parts.len() + 1);
    slices.push(IoSlice::new(&prefix));
    slices.extend(
        parts
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| IoSlice::new(p)),
    );
    let mut pending: &mut [IoSlice<'_>] = &mut slices;
    while !pending.is_empty() {
        let n = writer.write_vectored(pending).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut pending, n);
    }
    Ok(())
}
