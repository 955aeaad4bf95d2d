//! TCP proxies in front of a node's listeners, so a test can cut a node off the network.
//!
//! Every address another process uses to reach node `i` (its advertised PLAINTEXT listener and
//! its entry in `controller.quorum.voters`) is a [`Proxy`] owned by `i`. A proxy forwards bytes
//! to the node's real listener while the [`Network`] allows the connection, and when the test
//! isolates a node:
//! - connections into the isolated node's proxies are closed, and new ones are accepted but
//!   never forwarded (a black hole: the peer sees a timeout, as on a real partition), until the
//!   node is healed, when they are closed so the peer reconnects;
//! - connections *from* the isolated node's process into any other node's proxy are treated the
//!   same way. Without this a Raft leader cut off only inbound would keep its followers by
//!   sending to them, and a follower broker would keep fetching from its leader.
//!
//! All processes talk over 127.0.0.1, so the source of a connection is found the way `ss -p`
//! does it: the peer's socket inode from `/proc/net/tcp`, then which node's process holds that
//! inode among its file descriptors. Connections from anything else (clients, the test) have no
//! source node and are cut only when they go into an isolated node.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bound on connecting to the node's real listener.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Which nodes are isolated, and which process is which node (to tell a connection's source).
#[derive(Default)]
pub struct Network {
    state: Mutex<NetState>,
}

#[derive(Default)]
struct NetState {
    isolated: BTreeSet<usize>,
    pids: BTreeMap<usize, u32>,
}

impl Network {
    pub fn new() -> Arc<Network> {
        Arc::new(Network::default())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, NetState> {
        // A panicking proxy thread cannot leave the sets half-updated; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the process that is node `node` now (`None` once it is dead).
    pub fn set_pid(&self, node: usize, pid: Option<u32>) {
        let mut s = self.state();
        match pid {
            Some(p) => s.pids.insert(node, p),
            None => s.pids.remove(&node),
        };
    }

    pub fn isolate(&self, node: usize) {
        self.state().isolated.insert(node);
    }

    pub fn heal(&self, node: usize) {
        self.state().isolated.remove(&node);
    }

    pub fn is_isolated(&self, node: usize) -> bool {
        self.state().isolated.contains(&node)
    }

    /// May a connection from `from` (a node, or `None` for anything else) reach node `to`? A
    /// node always reaches itself.
    pub fn allows(&self, from: Option<usize>, to: usize) -> bool {
        if from == Some(to) {
            return true;
        }
        let s = self.state();
        !s.isolated.contains(&to) && !from.is_some_and(|f| s.isolated.contains(&f))
    }

    /// The node whose process made the connection that arrived at `local` from `peer`.
    pub fn identify(&self, peer: SocketAddr, local: SocketAddr) -> Option<usize> {
        let inode = socket_inode(peer, local)?;
        let pids: Vec<(usize, u32)> = self.state().pids.iter().map(|(n, p)| (*n, *p)).collect();
        let want = format!("socket:[{inode}]");
        pids.into_iter()
            .find(|(_, pid)| process_holds(*pid, &want))
            .map(|(node, _)| node)
    }
}

/// The inode of the socket whose local end is `peer` and remote end `local`, from
/// `/proc/net/tcp` (lines: `sl local_address rem_address st ... uid timeout inode`, addresses
/// as `HEXIP:HEXPORT`).
fn socket_inode(peer: SocketAddr, local: SocketAddr) -> Option<u64> {
    let table = match (peer, local) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => "/proc/net/tcp",
        _ => "/proc/net/tcp6",
    };
    let text = std::fs::read_to_string(table).ok()?;
    let port_of = |field: &str| {
        field
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            return None;
        }
        if port_of(f[1]) == Some(peer.port()) && port_of(f[2]) == Some(local.port()) {
            f[9].parse().ok().filter(|i| *i != 0)
        } else {
            None
        }
    })
}

/// Whether process `pid` has a file descriptor that is `target` (`socket:[inode]`).
fn process_holds(pid: u32, target: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    entries.flatten().any(|e| {
        std::fs::read_link(e.path())
            .map(|l| l.as_os_str() == target)
            .unwrap_or(false)
    })
}

/// Connection counts of one proxy, for test output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub accepted: u64,
    /// Accepted connections whose source was found to be a node's process.
    pub from_nodes: u64,
    pub forwarded: u64,
    /// Accepted while the network forbade it, and held without forwarding.
    pub blackholed: u64,
    /// Forwarded connections closed because the network changed.
    pub cut: u64,
    /// Connections open now, and how many of them are black-holed.
    pub open: usize,
    pub held_now: usize,
}

struct Tracked {
    source: Option<usize>,
    /// A black-holed connection: accepted, never forwarded.
    held: bool,
    streams: Vec<TcpStream>,
}

struct Shared {
    owner: usize,
    network: Arc<Network>,
    upstream: Mutex<Option<SocketAddr>>,
    conns: Mutex<HashMap<u64, Tracked>>,
    next_id: AtomicU64,
    stop: AtomicBool,
    accepted: AtomicU64,
    from_nodes: AtomicU64,
    forwarded: AtomicU64,
    blackholed: AtomicU64,
    cut: AtomicU64,
}

impl Shared {
    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Tracked>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn upstream(&self) -> Option<SocketAddr> {
        *self.upstream.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn track(&self, t: Tracked) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.conns().insert(id, t);
        id
    }

    fn untrack(&self, id: u64) {
        if let Some(t) = self.conns().remove(&id) {
            for s in t.streams {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// Whether connection `id` should be closed now (it was registered before a network
    /// change took effect).
    fn stale(&self, id: u64) -> bool {
        self.stop.load(Ordering::SeqCst)
            || self
                .conns()
                .get(&id)
                .is_some_and(|t| t.held == self.network.allows(t.source, self.owner))
    }
}

/// A listener on 127.0.0.1 that forwards to one of node `owner`'s listeners.
pub struct Proxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Binds a free port on 127.0.0.1. Nothing is forwarded until [`Proxy::set_upstream`].
    pub fn start(owner: usize, network: Arc<Network>) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            owner,
            network,
            upstream: Mutex::new(None),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            from_nodes: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            blackholed: AtomicU64::new(0),
            cut: AtomicU64::new(0),
        });
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name(format!("proxy-{owner}-{}", addr.port()))
            .spawn(move || accept_loop(listener, s))?;
        Ok(Proxy {
            shared,
            addr,
            acceptor: Some(acceptor),
        })
    }

    /// The address peers use for this node.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where to forward to; `None` (the node is down) closes new connections at once, as a
    /// refused connection would.
    pub fn set_upstream(&self, addr: Option<SocketAddr>) {
        *self
            .shared
            .upstream
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = addr;
    }

    /// Applies the network's current state to existing connections: forwarded ones it now
    /// forbids are closed, black-holed ones it now allows are closed (the peer reconnects).
    pub fn enforce(&self) {
        let net = &self.shared.network;
        let mut conns = self.shared.conns();
        for t in conns.values_mut() {
            let allowed = net.allows(t.source, self.shared.owner);
            if t.held == allowed {
                if !t.held {
                    self.shared.cut.fetch_add(1, Ordering::Relaxed);
                }
                for s in &t.streams {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
        }
    }

    /// Closes every connection through this proxy (e.g. when its node is killed, so a
    /// black-holed peer does not wait for a node that is gone).
    pub fn close_all(&self) {
        for t in self.shared.conns().values() {
            for s in &t.streams {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared;
        let (open, held_now) = {
            let conns = s.conns();
            (conns.len(), conns.values().filter(|t| t.held).count())
        };
        ProxyStats {
            open,
            held_now,
            accepted: s.accepted.load(Ordering::Relaxed),
            from_nodes: s.from_nodes.load(Ordering::Relaxed),
            forwarded: s.forwarded.load(Ordering::Relaxed),
            blackholed: s.blackholed.load(Ordering::Relaxed),
            cut: s.cut.load(Ordering::Relaxed),
        }
    }

    /// Sources of the connections open now (`None`: not a node), for diagnostics.
    pub fn open_sources(&self) -> Vec<Option<usize>> {
        self.shared.conns().values().map(|t| t.source).collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        self.close_all();
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else {
            // EMFILE and the like: back off rather than spin.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("proxy-conn".into())
            .spawn(move || handle(stream, s));
        if spawned.is_err() {
            // Out of threads: the dropped stream is closed, like a refused connection.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn handle(client: TcpStream, shared: Arc<Shared>) {
    let source = match (client.peer_addr(), client.local_addr()) {
        (Ok(peer), Ok(local)) => shared.network.identify(peer, local),
        _ => None,
    };
    if source.is_some() {
        shared.from_nodes.fetch_add(1, Ordering::Relaxed);
    }
    if !shared.network.allows(source, shared.owner) {
        hold(client, source, &shared);
        return;
    }
    let Some(up) = shared.upstream() else {
        return;
    };
    let Ok(upstream) = TcpStream::connect_timeout(&up, UPSTREAM_CONNECT_TIMEOUT) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) = (
        client.try_clone(),
        upstream.try_clone(),
        client.try_clone(),
        upstream.try_clone(),
    ) else {
        return;
    };
    let id = shared.track(Tracked {
        source,
        held: false,
        streams: vec![c3, u3],
    });
    // The network may have changed between the check above and the registration.
    if shared.stale(id) {
        shared.untrack(id);
        return;
    }
    shared.forwarded.fetch_add(1, Ordering::Relaxed);
    let back = std::thread::Builder::new()
        .name("proxy-back".into())
        .spawn(move || pump(u2, c2));
    pump(client, upstream);
    shared.untrack(id);
    if let Ok(h) = back {
        let _ = h.join();
    }
}

/// Copies `from` to `to` until either side closes, then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Keeps a forbidden connection open and silent, discarding what the peer sends, until the
/// network allows it again or the proxy stops.
fn hold(mut client: TcpStream, source: Option<usize>, shared: &Shared) {
    let Ok(c) = client.try_clone() else {
        return;
    };
    let id = shared.track(Tracked {
        source,
        held: true,
        streams: vec![c],
    });
    if shared.stale(id) {
        shared.untrack(id);
        return;
    }
    shared.blackholed.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 4096];
    while let Ok(n) = client.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
    shared.untrack(id);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server() -> (SocketAddr, JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            for s in l.incoming().take(8) {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (addr, h)
    }

    fn roundtrip(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        s.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf)?;
        Ok(buf.to_vec())
    }

    #[test]
    fn forwards_then_blackholes_an_isolated_node_then_heals() {
        let (echo, _h) = echo_server();
        let net = Network::new();
        let proxy = Proxy::start(0, net.clone()).unwrap();
        // No upstream yet: closed at once.
        assert!(roundtrip(proxy.addr()).is_err());
        proxy.set_upstream(Some(echo));
        assert_eq!(roundtrip(proxy.addr()).unwrap(), b"ping");

        // An open connection is cut when its node is isolated.
        let mut open = TcpStream::connect(proxy.addr()).unwrap();
        open.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        open.write_all(b"ab").unwrap();
        let mut two = [0u8; 2];
        open.read_exact(&mut two).unwrap();
        // The earlier round trip's connection may still be winding down in the proxy; it
        // would be cut too and counted. Wait (bounded) until only `open` is tracked.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while proxy.stats().open > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(proxy.stats().open, 1, "{:?}", proxy.stats());
        net.isolate(0);
        proxy.enforce();
        let mut b = [0u8; 1];
        assert!(matches!(open.read(&mut b), Ok(0) | Err(_)), "cut");

        // New connections are accepted and then silent (a timeout, not a refusal).
        let mut held = TcpStream::connect(proxy.addr()).unwrap();
        held.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        held.write_all(b"ping").unwrap();
        let e = held.read(&mut b).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        );

        // Healing closes the held connection and forwards new ones.
        net.heal(0);
        proxy.enforce();
        held.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert!(matches!(held.read(&mut b), Ok(0) | Err(_)));
        assert_eq!(roundtrip(proxy.addr()).unwrap(), b"ping");
        let st = proxy.stats();
        assert_eq!(st.blackholed, 1, "{st:?}");
        assert_eq!(st.cut, 1, "{st:?}");
    }

    #[test]
    fn identifies_the_process_that_connects() {
        let net = Network::new();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let out = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (inbound, peer) = l.accept().unwrap();
        assert_eq!(peer, out.local_addr().unwrap());
        let local = inbound.local_addr().unwrap();
        assert_eq!(net.identify(peer, local), None, "no pids known");
        net.set_pid(7, Some(std::process::id()));
        assert_eq!(net.identify(peer, local), Some(7));
        net.set_pid(7, None);
        assert_eq!(net.identify(peer, local), None);
    }

    #[test]
    fn isolation_cuts_both_directions_but_not_self() {
        let net = Network::new();
        net.isolate(1);
        assert!(!net.allows(None, 1));
        assert!(!net.allows(Some(0), 1));
        assert!(!net.allows(Some(1), 0), "outbound from the isolated node");
        assert!(net.allows(Some(1), 1));
        assert!(net.allows(Some(0), 2));
        assert!(net.allows(None, 2));
        net.heal(1);
        assert!(net.allows(Some(1), 0));
    }
}
