//! One TCP connection to one broker, pipelined: any number of requests may be in flight; a
//! reader task matches responses to requests by correlation id.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_request::ApiVersionsRequest;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::error::ClientError;
use super::versions::{VersionTable, api_name};

/// Largest response frame accepted (Kafka's default `socket.request.max.bytes`, 100 MiB); a
/// larger length prefix closes the connection before anything is allocated.
pub const MAX_FRAME_BYTES: usize = fjord_protocol::frame::DEFAULT_MAX_REQUEST_BYTES;

/// The ApiVersions version we ask first; a broker that does not know it answers in v0 with
/// UNSUPPORTED_VERSION and its ranges (KIP-511).
const API_VERSIONS_FIRST: i16 = 3;
const UNSUPPORTED_VERSION: i16 = 35;

/// Timeouts and identity for new connections.
#[derive(Debug, Clone)]
pub struct ConnOptions {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub client_id: String,
}

type Waiter = oneshot::Sender<Result<Bytes, ClientError>>;

#[derive(Default)]
struct Pending {
    waiters: HashMap<i32, Waiter>,
    /// Set once the connection is unusable; new requests fail at once with this reason.
    closed: Option<String>,
}

impl Pending {
    fn close(&mut self, broker: &str, reason: String) {
        if self.closed.is_none() {
            self.closed = Some(reason.clone());
        }
        for (_, w) in self.waiters.drain() {
            let _ = w.send(Err(ClientError::Closed {
                broker: broker.to_string(),
                reason: reason.clone(),
            }));
        }
    }
}

pub struct Connection {
    broker: String,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Arc<Mutex<Pending>>,
    next_id: AtomicI32,
    versions: VersionTable,
    timeout: Duration,
    client_id: StrBytes,
    reader: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A request that has been written and whose response has not been read yet.
pub struct InFlight {
    rx: oneshot::Receiver<Result<Bytes, ClientError>>,
    correlation_id: i32,
    api: &'static str,
    broker: String,
    pending: Arc<Mutex<Pending>>,
    deadline: tokio::time::Instant,
    timeout: Duration,
}

impl InFlight {
    /// Waits for the raw response frame (correlation id first).
    pub async fn frame(self) -> Result<Bytes, ClientError> {
        let InFlight {
            rx,
            correlation_id,
            api,
            broker,
            pending,
            deadline,
            timeout,
        } = self;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ClientError::Closed {
                broker,
                reason: "the connection was dropped".into(),
            }),
            Err(_) => {
                // A late answer to this id will find no waiter and be discarded.
                pending.lock().waiters.remove(&correlation_id);
                Err(ClientError::Timeout {
                    broker,
                    api,
                    after: timeout,
                })
            }
        }
    }
}

/// A typed in-flight request.
pub struct Pend<R: Request> {
    inner: InFlight,
    version: i16,
    _r: std::marker::PhantomData<fn() -> R>,
}

impl<R: Request> Pend<R> {
    pub async fn wait(self) -> Result<R::Response, ClientError> {
        let broker = self.inner.broker.clone();
        let frame = self.inner.frame().await?;
        decode_response::<R>(&broker, frame, self.version)
    }
}

impl Connection {
    /// Connects to `addr` (`host:port`) and negotiates API versions.
    pub async fn connect(addr: &str, opts: &ConnOptions) -> Result<Arc<Connection>, ClientError> {
        let stream =
            match tokio::time::timeout(opts.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(source)) => {
                    return Err(ClientError::Connect {
                        broker: addr.to_string(),
                        source,
                    });
                }
                Err(_) => {
                    return Err(ClientError::Connect {
                        broker: addr.to_string(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no answer within {:?}", opts.connect_timeout),
                        ),
                    });
                }
            };
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let pending = Arc::new(Mutex::new(Pending::default()));
        let reader = tokio::spawn(read_loop(read, pending.clone(), addr.to_string()));
        let mut conn = Connection {
            broker: addr.to_string(),
            writer: tokio::sync::Mutex::new(write),
            pending,
            next_id: AtomicI32::new(1),
            versions: VersionTable::default(),
            timeout: opts.request_timeout,
            client_id: StrBytes::from_string(opts.client_id.clone()),
            reader,
        };
        conn.versions = conn.negotiate().await?;
        Ok(Arc::new(conn))
    }

    async fn negotiate(&self) -> Result<VersionTable, ClientError> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("fjord"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let frame = self
            .start(&req, API_VERSIONS_FIRST)
            .await?
            .inner
            .frame()
            .await?;
        // The answer's header is always v0: a correlation id, then the body's error code.
        let code = if frame.len() >= 6 {
            i16::from_be_bytes([frame[4], frame[5]])
        } else {
            -1
        };
        let resp = if code == UNSUPPORTED_VERSION {
            decode_response::<ApiVersionsRequest>(&self.broker, frame, 0)?
        } else {
            decode_response::<ApiVersionsRequest>(&self.broker, frame, API_VERSIONS_FIRST)?
        };
        super::error::check(resp.error_code, None, || {
            format!("ApiVersions from {}", self.broker)
        })
        .or_else(|e| {
            if code == UNSUPPORTED_VERSION {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        Ok(VersionTable::from_response(&resp))
    }

    pub fn broker(&self) -> &str {
        &self.broker
    }

    pub fn versions(&self) -> &VersionTable {
        &self.versions
    }

    pub fn is_closed(&self) -> bool {
        self.pending.lock().closed.is_some()
    }

    /// The version to send `R` at on this connection.
    pub fn version<R: Request>(&self) -> Result<i16, ClientError> {
        self.versions.pick::<R>(&self.broker)
    }

    /// Sends `req` at the negotiated version and waits for its response.
    pub async fn send<R: Request>(&self, req: &R) -> Result<R::Response, ClientError> {
        let v = self.version::<R>()?;
        self.start(req, v).await?.wait().await
    }

    /// Writes `req` at `version` and returns a handle on its response, so that several requests
    /// can be in flight on this connection at once.
    pub async fn start<R: Request>(&self, req: &R, version: i16) -> Result<Pend<R>, ClientError> {
        self.start_timeout(req, version, self.timeout).await
    }

    /// [`Connection::start`] with a timeout of its own (JoinGroup may legitimately wait for a
    /// whole rebalance).
    pub async fn start_timeout<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<Pend<R>, ClientError> {
        let (id, frame) = self.encode(req, version)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.pending.lock();
            if let Some(reason) = &p.closed {
                return Err(ClientError::Closed {
                    broker: self.broker.clone(),
                    reason: reason.clone(),
                });
            }
            p.waiters.insert(id, tx);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        self.write(&frame).await?;
        Ok(Pend {
            inner: InFlight {
                rx,
                correlation_id: id,
                api: api_name(R::KEY),
                broker: self.broker.clone(),
                pending: self.pending.clone(),
                deadline,
                timeout,
            },
            version,
            _r: std::marker::PhantomData,
        })
    }

    /// Sends a request the broker will not answer (Produce with acks=0).
    pub async fn send_oneway<R: Request>(&self, req: &R, version: i16) -> Result<(), ClientError> {
        if let Some(reason) = &self.pending.lock().closed {
            return Err(ClientError::Closed {
                broker: self.broker.clone(),
                reason: reason.clone(),
            });
        }
        let (_, frame) = self.encode(req, version)?;
        self.write(&frame).await
    }

    fn encode<R: Request>(&self, req: &R, version: i16) -> Result<(i32, Bytes), ClientError> {
        let api = api_name(R::KEY);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) & i32::MAX;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(self.client_id.clone()));
        let header_version = ApiKey::try_from(R::KEY)
            .map(|k| k.request_header_version(version))
            .unwrap_or(1);
        let enc = |e: anyhow::Error| ClientError::Encode {
            api,
            version,
            message: format!("{e:#}"),
        };
        let size = header.compute_size(header_version).map_err(enc)?
            + req.compute_size(version).map_err(enc)?;
        if size > MAX_FRAME_BYTES {
            return Err(ClientError::Encode {
                api,
                version,
                message: format!(
                    "request of {size} bytes exceeds the {MAX_FRAME_BYTES}-byte frame limit"
                ),
            });
        }
        let mut buf = BytesMut::with_capacity(size + 4);
        buf.put_i32(size as i32);
        header.encode(&mut buf, header_version).map_err(enc)?;
        req.encode(&mut buf, version).map_err(enc)?;
        Ok((id, buf.freeze()))
    }

    async fn write(&self, frame: &[u8]) -> Result<(), ClientError> {
        let mut w = self.writer.lock().await;
        if let Err(source) = w.write_all(frame).await {
            self.pending
                .lock()
                .close(&self.broker, format!("write failed: {source}"));
            return Err(ClientError::Io {
                broker: self.broker.clone(),
                source,
            });
        }
        Ok(())
    }
}

async fn read_loop(
    mut read: tokio::net::tcp::OwnedReadHalf,
    pending: Arc<Mutex<Pending>>,
    broker: String,
) {
    let reason = loop {
        match fjord_protocol::frame::read_frame(&mut read, MAX_FRAME_BYTES).await {
            Ok(Some(frame)) => {
                if frame.len() < 4 {
                    break format!(
                        "a {}-byte response frame has no correlation id",
                        frame.len()
                    );
                }
                let id = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
                let waiter = pending.lock().waiters.remove(&id);
                match waiter {
                    Some(w) => {
                        let _ = w.send(Ok(frame));
                    }
                    None => tracing::debug!(broker, id, "response to a request nobody waits for"),
                }
            }
            Ok(None) => break "the broker closed the connection".to_string(),
            Err(e) => break format!("{e}"),
        }
    };
    pending.lock().close(&broker, reason);
}

/// Decodes a response frame of `R` at `version`: header, correlation id, body.
pub fn decode_response<R: Request>(
    broker: &str,
    frame: Bytes,
    version: i16,
) -> Result<R::Response, ClientError> {
    let api = api_name(R::KEY);
    let err = |message: String| ClientError::Decode {
        broker: broker.to_string(),
        api,
        version,
        message,
    };
    let mut buf = frame;
    let header_version = <R::Response as HeaderVersion>::header_version(version);
    // kafka-protocol may panic on some malformed input; a broker's bad answer must not take
    // the tool down with a backtrace.
    let decoded = catch_unwind(AssertUnwindSafe(|| {
        ResponseHeader::decode(&mut buf, header_version)
            .and_then(|_| <R::Response as Decodable>::decode(&mut buf, version))
    }));
    match decoded {
        Ok(Ok(r)) => {
            if buf.has_remaining() {
                tracing::debug!(
                    broker,
                    api,
                    version,
                    extra = buf.remaining(),
                    "bytes after a response body"
                );
            }
            Ok(r)
        }
        Ok(Err(e)) => Err(err(format!("{e:#}"))),
        Err(_) => Err(err("the decoder panicked on malformed input".into())),
    }
}
