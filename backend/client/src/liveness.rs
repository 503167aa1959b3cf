//! Noticing a backend that stopped answering while the TCP connection looks alive: a wedged
//! backend process, or a middlebox that holds the connection open and forwards nothing. TCP
//! keepalive cannot see these (the peer's kernel still acknowledges), so the client watches
//! the bytes themselves.
//!
//! Both halves of the connection stamp the time of their last progress (bytes read, bytes
//! accepted by the socket). While requests wait for replies, a watchdog probes a silent
//! connection with a `Null` request after `probe_after`, and declares it dead once neither
//! direction has moved for `timeout` — or, once the probe is written, once the backend has
//! sent nothing for `timeout` (the probe's own write is taken by the local socket and proves
//! nothing about the peer): every waiting call then fails with
//! `CUDA_ERROR_DEVICE_UNAVAILABLE`. An idle connection (nothing waiting) is never probed.
//!
//! This relies on the backend answering a `Null` while other requests of the session are
//! running, which its dispatcher does (it never blocks on work); the watchdog is on by
//! default (`ClientOptions::liveness`).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The watchdog's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    /// Silence (with requests waiting) after which a `Null` probe is sent.
    pub probe_after: Duration,
    /// Silence (with requests waiting) after which the connection is declared dead.
    pub timeout: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            probe_after: Duration::from_secs(1),
            timeout: Duration::from_secs(3),
        }
    }
}

/// When either half of a connection last made progress, and how often the reading half did.
#[derive(Debug)]
pub struct Progress {
    epoch: Instant,
    last_ms: AtomicU64,
    last_read_ms: AtomicU64,
    reads: AtomicU64,
}

impl Progress {
    pub fn new() -> Arc<Progress> {
        Arc::new(Progress {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            last_read_ms: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn stamp(&self) {
        self.last_ms.fetch_max(self.now_ms(), Ordering::Relaxed);
    }

    fn stamp_read(&self) {
        let ms = self.now_ms();
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
        self.last_read_ms.fetch_max(ms, Ordering::Relaxed);
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    fn since(&self, ms: &AtomicU64) -> Duration {
        let now = self.epoch.elapsed();
        now.saturating_sub(Duration::from_millis(ms.load(Ordering::Relaxed)))
    }

    /// Time since the last progress in either direction.
    pub fn silence(&self) -> Duration {
        self.since(&self.last_ms)
    }

    /// Time since the peer last sent anything.
    pub fn read_silence(&self) -> Duration {
        self.since(&self.last_read_ms)
    }

    /// How many reads brought bytes so far (a change means the peer spoke).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

/// A half of the connection that stamps its progress.
pub struct Stamped<T> {
    inner: T,
    progress: Arc<Progress>,
}

impl<T> Stamped<T> {
    pub fn new(inner: T, progress: Arc<Progress>) -> Self {
        Stamped { inner, progress }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Stamped<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.progress.stamp_read();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stamped<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.progress.stamp();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.progress.stamp();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn both_directions_stamp_progress() {
        let (a, b) = tokio::io::duplex(64);
        let p = Progress::new();
        let mut a = Stamped::new(a, p.clone());
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(p.silence() >= Duration::from_millis(30));
        a.write_all(b"x").await.unwrap();
        assert!(p.silence() < Duration::from_millis(20));
        let p2 = Progress::new();
        let mut b = Stamped::new(b, p2.clone());
        tokio::time::sleep(Duration::from_millis(30)).await;
        let mut one = [0u8; 1];
        b.read_exact(&mut one).await.unwrap();
        assert!(p2.silence() < Duration::from_millis(20));
    }
}
