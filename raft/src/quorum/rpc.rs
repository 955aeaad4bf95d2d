//! Wire framing shared by Raft and application RPCs, the application service trait and the
//! application RPC client.
//!
//! Request: `[u32 len][u8 kind][len bytes]`; reply: `[u32 len][u8 status][len bytes]` with status
//! 0 = ok (payload) or 1 = error (UTF-8 message). All integers big-endian like Kafka's wire.
//! Kinds below 16 are Raft's; 16 and up belong to the application's `RpcService`.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::RpcError;

/// The first kind available to application RPCs.
pub const FIRST_APP_KIND: u8 = 16;
pub(crate) const KIND_APPEND_ENTRIES: u8 = 1;
pub(crate) const KIND_VOTE: u8 = 2;
pub(crate) const KIND_INSTALL_SNAPSHOT: u8 = 3;
pub(crate) const STATUS_OK: u8 = 0;
pub(crate) const STATUS_ERR: u8 = 1;
const HEAD: usize = 5;

/// What an application RPC handler returns.
pub type RpcFuture = Pin<Box<dyn Future<Output = Result<Bytes, String>> + Send>>;

/// Application RPCs served on the quorum's listener (kinds >= 16).
pub trait RpcService: Send + Sync + 'static {
    fn handle(&self, kind: u8, body: Bytes) -> RpcFuture;
}

/// A service that serves no application RPCs.
pub struct NoRpcService;

impl RpcService for NoRpcService {
    fn handle(&self, kind: u8, _body: Bytes) -> RpcFuture {
        Box::pin(async move { Err(format!("no handler for rpc kind {kind}")) })
    }
}

/// Writes one message (request or reply) in a single write.
pub(crate) async fn write_msg<S: AsyncWrite + Unpin>(
    s: &mut S,
    tag: u8,
    payload: &[u8],
) -> io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| io::Error::other("message above 4 GiB"))?;
    let mut buf = Vec::with_capacity(HEAD + payload.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.push(tag);
    buf.extend_from_slice(payload);
    s.write_all(&buf).await?;
    s.flush().await
}

/// Reads a message header: `Ok(None)` on a clean end of stream before its first byte.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<Option<(usize, u8)>> {
    let mut head = [0u8; HEAD];
    let mut got = 0;
    while got < HEAD {
        let n = s.read(&mut head[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    Ok(Some((len, head[4])))
}

pub(crate) async fn read_body<S: AsyncRead + Unpin>(s: &mut S, len: usize) -> io::Result<Bytes> {
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok(Bytes::from(body))
}

/// Why one request/reply exchange on a connection failed.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    Io(io::Error),
    Closed,
    TooLarge(usize),
}

/// Sends a request and reads its reply, enforcing `max` on the reply size before allocating.
pub(crate) async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    kind: u8,
    body: &[u8],
    max: usize,
) -> Result<(u8, Bytes), ExchangeError> {
    write_msg(s, kind, body).await.map_err(ExchangeError::Io)?;
    let (len, status) = read_head(s)
        .await
        .map_err(ExchangeError::Io)?
        .ok_or(ExchangeError::Closed)?;
    if len > max {
        return Err(ExchangeError::TooLarge(len));
    }
    let payload = read_body(s, len).await.map_err(ExchangeError::Io)?;
    Ok((status, payload))
}

/// Pooled connections older than this are dropped rather than reused; the server closes
/// connections idle for `server::IDLE_TIMEOUT`, which is longer.
const POOL_IDLE: Duration = Duration::from_secs(20);
const POOL_PER_ADDR: usize = 4;

/// Client for application RPCs: framing, a timeout per call, pooled connections per address.
/// Failed connections are discarded, so the next call reconnects.
pub struct RpcClient {
    pool: Mutex<HashMap<String, Vec<(TcpStream, Instant)>>>,
    max_frame_bytes: usize,
}

impl RpcClient {
    pub fn new(max_frame_bytes: usize) -> Self {
        RpcClient {
            pool: Mutex::new(HashMap::new()),
            max_frame_bytes,
        }
    }

    fn take(&self, addr: &str) -> Option<TcpStream> {
        let mut pool = self.pool.lock();
        let conns = pool.get_mut(addr)?;
        while let Some((s, since)) = conns.pop() {
            if since.elapsed() < POOL_IDLE {
                return Some(s);
            }
        }
        None
    }

    fn put(&self, addr: &str, s: TcpStream) {
        let mut pool = self.pool.lock();
        let conns = pool.entry(addr.to_string()).or_default();
        if conns.len() < POOL_PER_ADDR {
            conns.push((s, Instant::now()));
        }
    }

    /// Sends `body` as RPC `kind` to `addr` ("host:port") and returns the reply payload. The
    /// whole exchange, connecting included, is bounded by `timeout`.
    pub async fn call(
        &self,
        addr: &str,
        kind: u8,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, RpcError> {
        if kind < FIRST_APP_KIND {
            return Err(RpcError::ReservedKind(kind));
        }
        if body.len() > self.max_frame_bytes {
            return Err(RpcError::FrameTooLarge {
                len: body.len(),
                max: self.max_frame_bytes,
            });
        }
        let pooled = self.take(addr);
        let max = self.max_frame_bytes;
        let exchange_fut = async move {
            let mut s = match pooled {
                Some(s) => s,
                None => {
                    let s = TcpStream::connect(addr)
                        .await
                        .map_err(|source| RpcError::Connect {
                            addr: addr.to_string(),
                            source,
                        })?;
                    s.set_nodelay(true)?;
                    s
                }
            };
            let (status, payload) =
                exchange(&mut s, kind, &body, max)
                    .await
                    .map_err(|e| match e {
                        ExchangeError::Io(e) => RpcError::Io(e),
                        ExchangeError::Closed => RpcError::Closed,
                        ExchangeError::TooLarge(len) => RpcError::FrameTooLarge { len, max },
                    })?;
            Ok::<_, RpcError>((s, status, payload))
        };
        let (s, status, payload) = tokio::time::timeout(timeout, exchange_fut)
            .await
            .map_err(|_| RpcError::Timeout(timeout))??;
        self.put(addr, s);
        if status == STATUS_OK {
            Ok(payload)
        } else {
            Err(RpcError::Remote(
                String::from_utf8_lossy(&payload).into_owned(),
            ))
        }
    }
}
