//! In-process tests of the quorum API surface and its wire protocol: a single-voter quorum in
//! this process, raw frames against its listener, and the RPC client's failure modes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fjord_raft::quorum::{
    Applier, Quorum, QuorumConfig, QuorumError, RpcClient, RpcError, RpcFuture, RpcService, Voter,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KIND_ECHO: u8 = 20;
const MAX_FRAME: usize = 64 << 10;

type Log = Vec<(u64, Vec<u8>)>;

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Log>>);

impl Applier for Recorder {
    fn apply(&mut self, index: u64, payload: &[u8]) {
        self.0.lock().unwrap().push((index, payload.to_vec()));
    }
    fn snapshot(&self) -> Vec<u8> {
        bincode::serialize(&*self.0.lock().unwrap()).unwrap()
    }
    fn restore(&mut self, _index: u64, data: &[u8]) -> Result<(), String> {
        *self.0.lock().unwrap() = bincode::deserialize(data).map_err(|e| e.to_string())?;
        Ok(())
    }
}

struct Echo;

impl RpcService for Echo {
    fn handle(&self, kind: u8, body: Bytes) -> RpcFuture {
        Box::pin(async move {
            match kind {
                KIND_ECHO => Ok(body),
                k => Err(format!("no such kind {k}")),
            }
        })
    }
}

fn config(dir: &std::path::Path) -> QuorumConfig {
    // Nobody dials a lone voter, so its advertised address need not be the bound one.
    let voters = vec![Voter {
        id: 7,
        addr: "127.0.0.1:9".into(),
    }];
    let mut cfg = QuorumConfig::new(7, voters, "127.0.0.1:0".parse().unwrap(), dir.into());
    cfg.heartbeat_interval = Duration::from_millis(50);
    cfg.election_timeout_min = Duration::from_millis(300);
    cfg.election_timeout_max = Duration::from_millis(600);
    cfg.write_timeout = Duration::from_secs(2);
    cfg.max_frame_bytes = MAX_FRAME;
    cfg
}

async fn raw_request(
    addr: std::net::SocketAddr,
    len: u32,
    kind: u8,
    body: &[u8],
) -> (u8, Vec<u8>, TcpStream) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut frame = len.to_be_bytes().to_vec();
    frame.push(kind);
    frame.extend_from_slice(body);
    s.write_all(&frame).await.unwrap();
    let mut head = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    let n = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
    let mut payload = vec![0u8; n];
    s.read_exact(&mut payload).await.unwrap();
    (head[4], payload, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_voter_in_process_api_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let applied = Recorder::default();
    let q = Quorum::start(config(dir.path()), applied.clone(), Arc::new(Echo))
        .await
        .unwrap();
    let ready = q.wait_leader_ready(Duration::from_secs(5)).await.unwrap();
    assert!(ready.term >= 1);
    assert!(q.is_leader());
    assert_eq!(q.leader(), Some(7));
    assert_eq!(*q.leader_watch().borrow(), Some(7));

    let mut indexes = Vec::new();
    for i in 0..5u8 {
        indexes.push(q.propose(Bytes::from(vec![i; 10])).await.unwrap());
    }
    assert!(indexes.windows(2).all(|w| w[0] < w[1]));
    // propose returns only after the local apply.
    assert!(*q.applied_watch().borrow() >= indexes[4]);
    let seen = applied.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 5);
    for (i, (idx, p)) in seen.iter().enumerate() {
        assert_eq!(*idx, indexes[i]);
        assert_eq!(p, &vec![i as u8; 10]);
    }
    // The status comes from openraft's metrics, which are published a moment after the apply.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let status = loop {
        let status = q.status();
        if status.last_applied == Some(indexes[4]) || std::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(status.leader, Some(7));
    assert_eq!(status.last_applied, Some(indexes[4]));

    let too_big = Bytes::from(vec![0u8; MAX_FRAME]);
    assert!(matches!(
        q.propose(too_big).await,
        Err(QuorumError::PayloadTooLarge { .. })
    ));

    // Application RPCs over the shared listener.
    let addr = q.local_addr();
    let client = RpcClient::new(MAX_FRAME);
    let echoed = client
        .call(
            &addr.to_string(),
            KIND_ECHO,
            Bytes::from_static(b"ping"),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert_eq!(&echoed[..], b"ping");
    assert!(matches!(
        client
            .call(&addr.to_string(), 30, Bytes::new(), Duration::from_secs(2))
            .await,
        Err(RpcError::Remote(m)) if m.contains("no such kind 30")
    ));
    assert!(matches!(
        client
            .call(&addr.to_string(), 2, Bytes::new(), Duration::from_secs(2))
            .await,
        Err(RpcError::ReservedKind(2))
    ));

    // An oversized frame is refused with an error, and the connection is closed.
    let (status, msg, mut s) = raw_request(addr, (MAX_FRAME + 1) as u32, KIND_ECHO, b"").await;
    assert_eq!(status, 1);
    assert!(String::from_utf8_lossy(&msg).contains("exceeds"));
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "connection stayed open after an oversized frame");
    // A Raft request that does not decode is answered with an error, not a crash.
    let (status, msg, _) = raw_request(addr, 3, 1, b"xyz").await;
    assert_eq!(status, 1);
    assert!(String::from_utf8_lossy(&msg).contains("malformed"));
    // The node still works after both.
    q.propose(Bytes::from_static(b"still-alive")).await.unwrap();

    let other = q.clone();
    q.shutdown().await;
    assert!(matches!(
        other.propose(Bytes::from_static(b"late")).await,
        Err(QuorumError::ShuttingDown)
    ));
    let before = applied.0.lock().unwrap().clone();
    drop(other);

    // Restart in the same process from the same directory: the applier is rebuilt from the log.
    let again = Recorder::default();
    let q = Quorum::start(config(dir.path()), again.clone(), Arc::new(Echo))
        .await
        .unwrap();
    q.wait_leader_ready(Duration::from_secs(5)).await.unwrap();
    assert_eq!(*again.0.lock().unwrap(), before);
    let next = q.propose(Bytes::from_static(b"after")).await.unwrap();
    assert!(next > before.last().unwrap().0);
    q.shutdown().await;
}

#[tokio::test]
async fn rpc_client_times_out_and_reports_connect_failures() {
    // A server that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let client = RpcClient::new(MAX_FRAME);
    let started = std::time::Instant::now();
    let r = client
        .call(
            &addr,
            KIND_ECHO,
            Bytes::from_static(b"x"),
            Duration::from_millis(200),
        )
        .await;
    assert!(matches!(r, Err(RpcError::Timeout(_))), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    hold.abort();

    // Nothing listens on a port we just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = client
        .call(
            &format!("127.0.0.1:{port}"),
            KIND_ECHO,
            Bytes::new(),
            Duration::from_secs(2),
        )
        .await;
    assert!(matches!(r, Err(RpcError::Connect { .. })), "{r:?}");

    let r = client
        .call(
            &addr,
            KIND_ECHO,
            Bytes::from(vec![0u8; MAX_FRAME + 1]),
            Duration::from_secs(2),
        )
        .await;
    assert!(matches!(r, Err(RpcError::FrameTooLarge { .. })), "{r:?}");
}
