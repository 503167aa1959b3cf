//! A fault-injecting TCP proxy: what `tc netem` would do, in user space, per connection.
//!
//! The proxy forwards every connection it accepts to one upstream address and applies the
//! current [`Fault`] to all of them, changeable at any time: added one-way latency, a stall
//! (nothing forwarded, connections kept open: no FIN, no RST, exactly what a wedged peer or
//! a silent middlebox looks like), resets (RST to both sides), a cut after a number of bytes
//! (a TLS handshake cut halfway), or refusing new connections. Packet loss and partitions
//! below TCP are nftables' job ([`crate::netns`]).
//!
//! It runs on its own thread with a current-thread tokio runtime, so synchronous and async
//! tests use it alike; started inside a network namespace ([`FaultProxy::start_in`]) its
//! sockets live there.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::netns::Netns;

/// Which way bytes flow through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Client to upstream.
    Up,
    /// Upstream to client.
    Down,
}

/// What the proxy does to traffic, from now on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything at once.
    Pass,
    /// Hold each chunk this long before forwarding it, in each direction (a round trip gains
    /// twice this).
    Delay(Duration),
    /// Forward nothing; keep every connection open (no FIN, no RST). New connections are
    /// accepted and stall too.
    Stall,
    /// Reset every open connection (RST to both sides) and every new one.
    Reset,
    /// Per connection: forward `bytes` in direction `dir`, then reset both sides.
    CutAfter { dir: Dir, bytes: u64 },
    /// Close new connections at once with a RST; open ones carry on.
    Refuse,
}

/// Counters, for tests that check what the proxy saw.
#[derive(Debug, Default)]
pub struct Stats {
    pub accepted: AtomicU64,
    pub open: AtomicUsize,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    pub resets: AtomicU64,
}

/// A running proxy; dropping it stops it and closes every connection.
pub struct FaultProxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    stats: Arc<Stats>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const CHUNK: usize = 64 * 1024;

impl FaultProxy {
    /// Listens on `listen` (port 0 picks one) and forwards to `upstream`.
    pub fn start(listen: SocketAddr, upstream: SocketAddr) -> io::Result<FaultProxy> {
        Self::start_in(None, listen, upstream)
    }

    /// As [`FaultProxy::start`], with the proxy's sockets in network namespace `ns`.
    pub fn start_in(
        ns: Option<&Netns>,
        listen: SocketAddr,
        upstream: SocketAddr,
    ) -> io::Result<FaultProxy> {
        let (fault, fault_rx) = watch::channel(Fault::Pass);
        let stats = Arc::new(Stats::default());
        let (stop, stop_rx) = oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let st = stats.clone();
        let ns = ns.map(|n| n.handle());
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let tx = ready_tx.clone();
                let run = move || -> io::Result<()> {
                    if let Some(ns) = &ns {
                        ns.enter()?;
                    }
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(async move {
                        let l = TcpListener::bind(listen).await?;
                        let _ = tx.send(l.local_addr());
                        tokio::select! {
                            _ = stop_rx => {}
                            _ = accept_loop(l, upstream, fault_rx, st) => {}
                        }
                        Ok::<_, io::Error>(())
                    })
                };
                if let Err(e) = run() {
                    let _ = ready_tx.send(Err(e));
                }
            })?;
        let addr = ready_rx
            .recv()
            .map_err(|_| io::Error::other("fault proxy thread died"))??;
        Ok(FaultProxy {
            addr,
            fault,
            stats,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Applies `f` to all traffic from now on.
    pub fn set(&self, f: Fault) {
        self.fault.send_replace(f);
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Connections currently open through the proxy.
    pub fn open(&self) -> usize {
        self.stats.open.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    l: TcpListener,
    upstream: SocketAddr,
    fault: watch::Receiver<Fault>,
    stats: Arc<Stats>,
) {
    loop {
        let Ok((client, _)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        stats.accepted.fetch_add(1, Ordering::SeqCst);
        let now = *fault.borrow();
        if matches!(now, Fault::Refuse | Fault::Reset) {
            reset(&client);
            stats.resets.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        let (fault, stats) = (fault.clone(), stats.clone());
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                reset(&client);
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            stats.open.fetch_add(1, Ordering::SeqCst);
            connection(client, server, fault, &stats).await;
            stats.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// RST instead of FIN when the socket is dropped.
fn reset(s: &TcpStream) {
    let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
}

/// Why a pump stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// EOF or an error on the reading side: the writing side was shut down (FIN).
    Closed,
    /// Both sockets must be reset.
    Reset,
}

async fn connection(
    client: TcpStream,
    server: TcpStream,
    fault: watch::Receiver<Fault>,
    stats: &Stats,
) {
    // Shared, not split: tokio's write halves shut the socket down (FIN) when dropped, and a
    // reset must be a RST and nothing else.
    let (client, server) = (Arc::new(client), Arc::new(server));
    let up = pump(
        client.clone(),
        server.clone(),
        Dir::Up,
        fault.clone(),
        stats,
    );
    let down = pump(server.clone(), client.clone(), Dir::Down, fault, stats);
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        let end = tokio::select! {
            e = &mut up, if !up_done => { up_done = true; e }
            e = &mut down, if !down_done => { down_done = true; e }
        };
        if end == End::Reset {
            reset(&client);
            reset(&server);
            stats.resets.fetch_add(1, Ordering::SeqCst);
            break;
        }
    }
    // The sockets close when the last reference (a pump's writer) is dropped.
}

async fn read(s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        s.readable().await?;
        match s.try_read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

async fn write_all(s: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        s.writable().await?;
        match s.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Copies `from` to `to` under the current fault.
async fn pump(
    from: Arc<TcpStream>,
    to: Arc<TcpStream>,
    dir: Dir,
    mut fault: watch::Receiver<Fault>,
    stats: &Stats,
) -> End {
    let counter = match dir {
        Dir::Up => &stats.bytes_up,
        Dir::Down => &stats.bytes_down,
    };
    // A writer task forwards chunks at their due time, so a delay holds a pipeline of
    // chunks rather than one at a time.
    // `None` asks for a FIN; a channel closed without one (a reset) sends nothing more.
    let (tx, mut rx) = mpsc::channel::<Option<(Instant, Vec<u8>)>>(64);
    let mut wfault = fault.clone();
    let mut writer = tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Some(Some((due, buf))) => {
                    tokio::time::sleep_until(due).await;
                    // A stall also holds what was already read.
                    while is_stall(&mut wfault) {
                        if wfault.changed().await.is_err() {
                            return;
                        }
                    }
                    if write_all(&to, &buf).await.is_err() {
                        return;
                    }
                }
                Some(None) => {
                    let _ = SockRef::from(&*to).shutdown(std::net::Shutdown::Write);
                    return;
                }
                None => return,
            }
        }
    });
    let mut sent: u64 = 0;
    let mut buf = vec![0u8; CHUNK];
    let end = 'outer: loop {
        // Wait while stalled; leave at once on a reset.
        loop {
            let now = *fault.borrow_and_update();
            match now {
                Fault::Stall => {
                    if fault.changed().await.is_err() {
                        break 'outer End::Closed;
                    }
                }
                Fault::Reset => break 'outer End::Reset,
                _ => break,
            }
        }
        let n = tokio::select! {
            r = read(&from, &mut buf) => match r {
                Ok(0) | Err(_) => break End::Closed,
                Ok(n) => n,
            },
            c = fault.changed() => {
                if c.is_err() {
                    break End::Closed;
                }
                continue;
            }
        };
        let f = *fault.borrow();
        let (mut take, mut cut) = (n, false);
        if let Fault::CutAfter { dir: d, bytes } = f {
            if d == dir {
                let left = bytes.saturating_sub(sent);
                if n as u64 >= left {
                    take = usize::try_from(left).unwrap_or(n);
                    cut = true;
                }
            }
        }
        let delay = match f {
            Fault::Delay(d) => d,
            _ => Duration::ZERO,
        };
        if take > 0
            && tx
                .send(Some((Instant::now() + delay, buf[..take].to_vec())))
                .await
                .is_err()
        {
            break End::Closed;
        }
        sent += take as u64;
        counter.fetch_add(take as u64, Ordering::Relaxed);
        if cut {
            break End::Reset;
        }
    };
    if end == End::Reset {
        // What was let through before a cut still goes out first.
        drop(tx);
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut writer).await;
        writer.abort();
        return End::Reset;
    }
    let _ = tx.send(None).await;
    drop(tx);
    // Deliver what is queued, then FIN; a reset meanwhile ends this at once.
    tokio::select! {
        _ = &mut writer => End::Closed,
        _ = wait_reset(&mut fault) => {
            writer.abort();
            End::Reset
        }
    }
}

async fn wait_reset(fault: &mut watch::Receiver<Fault>) {
    loop {
        let now = *fault.borrow_and_update();
        if now == Fault::Reset {
            return;
        }
        if fault.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn is_stall(f: &mut watch::Receiver<Fault>) -> bool {
    let now = *f.borrow_and_update();
    now == Fault::Stall
}
