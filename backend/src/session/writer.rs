//! The session's reply writer: any thread (the dispatcher, a pool thread finishing work)
//! hands it a reply; replies go out in the order they are handed over, each with its request
//! id, so they may answer requests out of order.
//!
//! It has no thread of its own. A thread that hands over a reply writes it itself if nobody is
//! writing, together with everything queued meanwhile, then flushes; if somebody is writing
//! (a large device-to-host copy, say), it queues the reply and returns at once: the writer
//! drains the queue before it lets go. So the dispatcher never waits behind a slow reply, and
//! a reply never costs a thread hand-off. A reply can carry data borrowed from device memory
//! ([`HostBuf`]); it is released (letting the work behind it go on) as soon as it is written,
//! or dropped unwritten if the connection has failed.
//!
//! Replies whose control section would exceed the protocol's 64 KiB are replaced by an error
//! reply, so no reply can break the connection.

use std::collections::VecDeque;
use std::io::{BufWriter, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::frame::{FrameHeader, FLAG_CONSOLE_PENDING};
use netgpu_proto::wire::ops::{self, Reply};
use netgpu_proto::wire::MAX_CTRL_LEN;
use tracing::{debug, warn};

use crate::executor::{Console, HostBuf};
use crate::transport::Control;

const IO_BUFFER: usize = 256 * 1024;

/// One frame to send.
pub enum Out {
    Reply {
        id: u64,
        status: CuResult,
        body: Option<Reply>,
        data: Option<HostBuf>,
    },
    /// The last frame of a connection; nothing is written after it.
    Goodbye { status: CuResult, why: String },
    /// The dispatcher holds the session's requests back (see `FrameKind::Busy`).
    Busy,
}

struct Io<W: Write> {
    w: BufWriter<W>,
    ctrl: Vec<u8>,
}

pub struct Writer<W: Write> {
    io: Mutex<Io<W>>,
    queue: Mutex<VecDeque<Out>>,
    console: Arc<Console>,
    control: Arc<dyn Control>,
    /// No more frames: the goodbye went out or writing failed.
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<W: Write> Writer<W> {
    pub fn new(w: W, console: Arc<Console>, control: Arc<dyn Control>) -> Writer<W> {
        Writer {
            io: Mutex::new(Io {
                w: BufWriter::with_capacity(IO_BUFFER, w),
                ctrl: Vec::new(),
            }),
            queue: Mutex::new(VecDeque::new()),
            console,
            control,
            closed: AtomicBool::new(false),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sends a frame (now, or after the frames queued before it).
    pub fn send(&self, out: Out) {
        if self.is_closed() {
            return;
        }
        let mut io = match self.io.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                // The holder writes what we queue before it lets go (and looks again after).
                lock(&self.queue).push_back(out);
                self.drain();
                return;
            }
        };
        // Nobody is writing: frames queued before ours go first, then ours, straight away.
        let mut mine = Some(out);
        loop {
            let next = {
                let mut q = lock(&self.queue);
                match q.pop_front() {
                    Some(o) => Some(o),
                    None => mine.take(),
                }
            };
            let Some(o) = next else { break };
            self.write_locked(&mut io, o);
        }
        self.flush_locked(&mut io);
        drop(io);
        if !lock(&self.queue).is_empty() {
            self.drain();
        }
    }

    fn write_locked(&self, io: &mut Io<W>, out: Out) {
        if self.is_closed() {
            return;
        }
        if let Err(e) = self.write_one(io, out) {
            self.fail(&e);
        }
    }

    fn flush_locked(&self, io: &mut Io<W>) {
        if !self.is_closed() {
            if let Err(e) = io.w.flush() {
                self.fail(&e);
            }
        }
    }

    fn drain(&self) {
        loop {
            let mut io = match self.io.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                // The holder writes what we queued before it lets go.
                Err(TryLockError::WouldBlock) => return,
            };
            loop {
                let next = lock(&self.queue).pop_front();
                let Some(out) = next else { break };
                self.write_locked(&mut io, out);
            }
            self.flush_locked(&mut io);
            drop(io);
            if lock(&self.queue).is_empty() {
                return;
            }
        }
    }

    fn fail(&self, e: &std::io::Error) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            debug!(error = %e, "writing a reply failed; closing the connection");
            // The reader must not go on serving a client that cannot hear the answers.
            self.control.shutdown(Shutdown::Both);
        }
        lock(&self.queue).clear();
    }

    fn write_one(&self, io: &mut Io<W>, out: Out) -> std::io::Result<()> {
        match out {
            Out::Reply {
                id,
                mut status,
                body,
                data,
            } => {
                io.ctrl.clear();
                if let Some(b) = &body {
                    if ops::encode_into(b, &mut io.ctrl).is_err()
                        || io.ctrl.len() > MAX_CTRL_LEN as usize
                    {
                        warn!(
                            request = id,
                            bytes = io.ctrl.len(),
                            "reply too large for a control section; answering NOT_SUPPORTED"
                        );
                        io.ctrl.clear();
                        status = CuResult::NOT_SUPPORTED;
                    }
                }
                let data_slice = match (&data, status.is_success()) {
                    (Some(d), true) => d.as_slice(),
                    _ => &[],
                };
                let mut h =
                    FrameHeader::reply(id, status, io.ctrl.len() as u32, data_slice.len() as u32);
                if self.console.pending() {
                    h.flags |= FLAG_CONSOLE_PENDING;
                }
                io.w.write_all(&h.encode())?;
                let Io { w, ctrl } = io;
                w.write_all(ctrl)?;
                w.write_all(data_slice)?;
                // Borrowed device memory goes back now: the bytes are in our buffer or the
                // socket's.
                drop(data);
                Ok(())
            }
            Out::Busy => {
                io.w.write_all(&FrameHeader::busy().encode())?;
                io.w.flush()?;
                Ok(())
            }
            Out::Goodbye { status, why } => {
                let body = ops::encode(&Reply::Error(why)).unwrap_or_default();
                let h = FrameHeader::goodbye(status, body.len() as u32);
                io.w.write_all(&h.encode())?;
                io.w.write_all(&body)?;
                io.w.flush()?;
                self.closed.store(true, Ordering::Release);
                Ok(())
            }
        }
    }

    /// Waits (at most `timeout`) until everything handed over has been written.
    pub fn settle(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let idle = lock(&self.queue).is_empty() && self.io.try_lock().is_ok();
            if idle || Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netgpu_proto::wire::frame::FrameKind;
    use netgpu_proto::wire::HEADER_LEN;

    struct NoConn;
    impl Control for NoConn {
        fn shutdown(&self, _: Shutdown) {}
        fn set_read_timeout(&self, _: Option<Duration>) -> std::io::Result<()> {
            Ok(())
        }
        fn set_write_timeout(&self, _: Option<Duration>) -> std::io::Result<()> {
            Ok(())
        }
        fn peer(&self) -> String {
            "test".into()
        }
        fn peer_gone(&self) -> bool {
            false
        }
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn frames(bytes: &[u8]) -> Vec<(FrameHeader, Vec<u8>)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let h = FrameHeader::decode(
                bytes[i..i + HEADER_LEN].try_into().unwrap(),
                1 << 20,
                1 << 30,
            )
            .unwrap();
            let start = i + HEADER_LEN + h.ctrl_len as usize;
            out.push((h, bytes[start..start + h.data_len as usize].to_vec()));
            i = start + h.data_len as usize;
        }
        out
    }

    #[test]
    fn replies_carry_ids_data_and_the_console_flag_and_nothing_follows_goodbye() {
        let sink = Shared::default();
        let console = Arc::new(Console::new());
        let w = Writer::new(sink.clone(), console.clone(), Arc::new(NoConn));
        w.send(Out::Reply {
            id: 5,
            status: CuResult::SUCCESS,
            body: Some(Reply::Done),
            data: Some(HostBuf::from_vec(vec![1, 2, 3])),
        });
        console.push(b"hi");
        w.send(Out::Reply {
            id: 6,
            status: CuResult::INVALID_VALUE,
            body: None,
            data: Some(HostBuf::from_vec(vec![9; 10])),
        });
        w.send(Out::Goodbye {
            status: CuResult::DEVICE_UNAVAILABLE,
            why: "bye".into(),
        });
        w.send(Out::Reply {
            id: 7,
            status: CuResult::SUCCESS,
            body: None,
            data: None,
        });
        let f = frames(&sink.0.lock().unwrap());
        assert_eq!(f.len(), 3);
        assert_eq!((f[0].0.request_id, f[0].1.clone()), (5, vec![1, 2, 3]));
        assert!(!f[0].0.console_pending());
        assert_eq!(f[1].0.request_id, 6);
        assert!(f[1].1.is_empty(), "an error reply carries no data");
        assert!(f[1].0.console_pending());
        assert_eq!(f[2].0.kind, FrameKind::Goodbye);
    }

    #[test]
    fn an_oversized_reply_becomes_an_error_not_a_broken_connection() {
        let sink = Shared::default();
        let w = Writer::new(sink.clone(), Arc::new(Console::new()), Arc::new(NoConn));
        let huge = Reply::Error("x".repeat(MAX_CTRL_LEN as usize + 10));
        w.send(Out::Reply {
            id: 1,
            status: CuResult::SUCCESS,
            body: Some(huge),
            data: None,
        });
        let f = frames(&sink.0.lock().unwrap());
        assert_eq!(f[0].0.status, CuResult::NOT_SUPPORTED);
        assert_eq!(f[0].0.ctrl_len, 0);
    }

    #[test]
    fn borrowed_data_is_released_once_written() {
        use std::sync::atomic::AtomicUsize;
        let released = Arc::new(AtomicUsize::new(0));
        let r2 = released.clone();
        let w = Writer::new(
            Shared::default(),
            Arc::new(Console::new()),
            Arc::new(NoConn),
        );
        let buf = HostBuf::from_vec(vec![0; 4]).then(move || {
            r2.fetch_add(1, Ordering::SeqCst);
        });
        w.send(Out::Reply {
            id: 1,
            status: CuResult::SUCCESS,
            body: Some(Reply::Done),
            data: Some(buf),
        });
        assert_eq!(released.load(Ordering::SeqCst), 1);
    }
}
