//! The network server: one task per client connection.
//!
//! Each connection has a reader and a writer. The reader takes frames in order, decodes them
//! and hands them to the dispatcher, which does the order-sensitive part at once (appends, so
//! that pipelined produces to one partition land in the order they were sent) and may return
//! the rest as a future (long-poll fetches, acks=all waits, controller round trips) that runs
//! concurrently. The writer sends answers strictly in request order. The queue between them
//! bounds the requests in flight per connection; when it is full the reader stops reading, which
//! pushes back on the client through TCP.
//!
//! Nothing a client sends can panic the broker: decoding is bounded and panic-free
//! (`fjord-protocol`), errors close only that connection, and each connection is its own task.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use fjord_protocol::{
    Disposition, encode_response_kind, encode_unsupported_api_versions, parse_request, read_frame,
};
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::dispatch::{self, Reply, RequestContext};
use fjord_protocol::kafka_protocol::messages::ResponseKind;

/// Requests one connection may have in flight before the reader waits.
const MAX_IN_FLIGHT: usize = 128;
const READ_BUFFER: usize = 64 * 1024;
const WRITE_BUFFER: usize = 64 * 1024;

/// What the writer gets for one request: the encoded frame, nothing (acks=0), or a reason to
/// close the connection.
type Answer = Result<Option<Bytes>, ()>;

/// Accepts connections on `listener` until the task is aborted; aborting it also ends every
/// connection it accepted.
pub async fn serve(broker: Arc<Broker>, listener: TcpListener, listener_name: String) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let b = broker.clone();
                    let name = listener_name.clone();
                    connections.spawn(async move { connection(b, stream, peer, name).await });
                }
                Err(e) => {
                    // Usually EMFILE; back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr, listener: String) {
    tracing::debug!(%peer, "connection opened");
    let (read_half, write_half) = stream.into_split();
    let (queue_tx, queue_rx) = mpsc::channel::<oneshot::Receiver<Answer>>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(write_answers(write_half, queue_rx, peer));
    let mut reader = BufReader::with_capacity(READ_BUFFER, read_half);
    let max = broker.config.socket_request_max_bytes;
    loop {
        let frame = match read_frame(&mut reader, max).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "closing connection: bad frame");
                break;
            }
        };
        let (tx, rx) = oneshot::channel();
        match parse_request(&frame, &broker.apis) {
            Ok(req) => {
                let ctx = RequestContext {
                    header: req.header,
                    listener: listener.clone(),
                    peer: Some(peer),
                };
                let version = ctx.header.api_version;
                let correlation_id = ctx.header.correlation_id;
                let api_key = ctx.header.api_key;
                let started = std::time::Instant::now();
                let encode = move |resp: Option<Box<ResponseKind>>| -> Answer {
                    crate::observe::metrics::request_done(api_key, started, resp.as_deref());
                    match resp {
                        None => Ok(None),
                        Some(r) => encode_response_kind(version, correlation_id, &r)
                            .map(Some)
                            .map_err(|e| {
                                tracing::error!(?api_key, version, error = %e, "could not encode a response");
                            }),
                    }
                };
                match dispatch::dispatch(&broker, ctx, req.body) {
                    Reply::Now(resp) => {
                        let _ = tx.send(encode(resp));
                    }
                    Reply::Close => {
                        crate::observe::metrics::request_failed(api_key);
                        let _ = tx.send(Err(()));
                    }
                    Reply::Later(fut) => {
                        tokio::spawn(async move {
                            let resp = fut.await;
                            let _ = tx.send(encode(resp.map(Box::new)));
                        });
                    }
                }
            }
            Err(e) => match e.disposition() {
                Disposition::AnswerUnsupportedApiVersions { correlation_id } => {
                    tracing::debug!(%peer, error = %e, "answering unsupported ApiVersions");
                    let frame = encode_unsupported_api_versions(correlation_id, &broker.apis)
                        .map(Some)
                        .map_err(|_| ());
                    let _ = tx.send(frame);
                }
                Disposition::Close => {
                    let head = &frame[..frame.len().min(64)];
                    tracing::debug!(%peer, error = %e, len = frame.len(), head = ?head, "closing connection: bad request");
                    break;
                }
            },
        }
        if queue_tx.send(rx).await.is_err() {
            // The writer stopped (peer gone or a response failed to encode).
            break;
        }
    }
    // Let the writer send what was already accepted, then close.
    drop(queue_tx);
    let _ = writer.await;
    tracing::debug!(%peer, "connection closed");
}

async fn write_answers(
    write_half: tokio::net::tcp::OwnedWriteHalf,
    mut queue: mpsc::Receiver<oneshot::Receiver<Answer>>,
    peer: SocketAddr,
) {
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, write_half);
    while let Some(pending) = queue.recv().await {
        let frame = match pending.await {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => continue,
            // A handler failed to produce an answer: the client would wait forever for this
            // correlation id, so close instead.
            Ok(Err(())) | Err(_) => break,
        };
        if let Err(e) = out.write_all(&frame).await {
            tracing::debug!(%peer, error = %e, "write failed");
            return;
        }
        // Flush once nothing else is ready, so pipelined answers share syscalls.
        if queue.is_empty() && out.flush().await.is_err() {
            return;
        }
    }
    let _ = out.flush().await;
    let _ = out.shutdown().await;
}
