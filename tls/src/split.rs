//! A blocking TLS connection split into a reading half and a writing half for two threads
//! (the backend's dispatcher and reply writer; libcuda's reader thread and callers).
//!
//! rustls keeps both directions' state in one connection object, so the halves share it
//! behind a mutex that is held only to move bytes in or out of rustls (decrypting one
//! socket read, encrypting one bounded chunk), never across a blocking socket call: a
//! reader blocked waiting for the peer does not stop the writer, and a writer blocked on a
//! full socket does not stop the reader. Socket writes go through a second mutex, taken
//! before the connection's, so TLS records reach the socket in the order rustls made them
//! whichever half made them (the reader sends the occasional post-handshake message, such
//! as a key update answer, itself).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::ops::DerefMut;
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::ConnectionCommon;

/// Socket reads and encrypted chunks are at most this large.
const CHUNK: usize = 64 * 1024;

struct Shared<C> {
    conn: Mutex<C>,
    /// The socket's write side and the ciphertext buffer, in one lock.
    out: Mutex<(TcpStream, Vec<u8>)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<C, D> Shared<C>
where
    C: DerefMut<Target = ConnectionCommon<D>>,
{
    /// Sends whatever rustls has to send; `out` is held, so records stay in order.
    fn flush_locked(&self, out: &mut (TcpStream, Vec<u8>)) -> io::Result<()> {
        let (sock, buf) = out;
        loop {
            buf.clear();
            {
                let mut c = lock(&self.conn);
                while c.wants_write() {
                    c.write_tls(buf)?;
                }
            }
            if buf.is_empty() {
                return Ok(());
            }
            sock.write_all(buf)?;
        }
    }
}

/// The reading half.
pub struct TlsReader<C> {
    shared: Arc<Shared<C>>,
    sock: TcpStream,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
}

/// The writing half.
pub struct TlsWriter<C> {
    shared: Arc<Shared<C>>,
}

/// Splits an established TLS connection (`conn` over `sock`) into halves usable from two
/// threads. The handshake must be complete.
pub fn split<C, D>(mut conn: C, sock: TcpStream) -> io::Result<(TlsReader<C>, TlsWriter<C>)>
where
    C: DerefMut<Target = ConnectionCommon<D>>,
{
    conn.set_buffer_limit(Some(CHUNK));
    let w = sock.try_clone()?;
    let shared = Arc::new(Shared {
        conn: Mutex::new(conn),
        out: Mutex::new((w, Vec::with_capacity(CHUNK + 1024))),
    });
    Ok((
        TlsReader {
            shared: shared.clone(),
            sock,
            buf: vec![0u8; CHUNK].into_boxed_slice(),
            pos: 0,
            len: 0,
        },
        TlsWriter { shared },
    ))
}

/// Splits a `StreamOwned` from [`crate::blocking::accept`] or [`crate::blocking::connect`].
pub fn split_stream<C, D>(
    s: rustls::StreamOwned<C, TcpStream>,
) -> io::Result<(TlsReader<C>, TlsWriter<C>)>
where
    C: DerefMut<Target = ConnectionCommon<D>>,
    D: rustls::SideData,
{
    let (conn, sock) = s.into_parts();
    split(conn, sock)
}

impl<C> TlsReader<C> {
    /// The underlying socket (for timeouts and shutdown).
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }
}

impl<C, D> Read for TlsReader<C>
where
    C: DerefMut<Target = ConnectionCommon<D>>,
{
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            let mut wants_write = false;
            let mut fed = false;
            {
                let mut c = lock(&self.shared.conn);
                match c.reader().read(out) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if self.pos < self.len {
                    let mut rest = &self.buf[self.pos..self.len];
                    let before = rest.len();
                    c.read_tls(&mut rest)?;
                    self.pos += before - rest.len();
                    fed = true;
                    let processed = c.process_new_packets();
                    wants_write = c.wants_write();
                    if let Err(e) = processed {
                        drop(c);
                        // Send the alert that explains the failure to the peer.
                        let _ = self.shared.flush_locked(&mut lock(&self.shared.out));
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                }
            }
            if wants_write {
                self.shared.flush_locked(&mut lock(&self.shared.out))?;
                continue;
            }
            if fed {
                // Look for the plaintext that may have come out of it.
                continue;
            }
            // Nothing buffered: wait for the peer without holding the connection.
            let n = self.sock.read(&mut self.buf)?;
            self.pos = 0;
            self.len = n;
            if n == 0 {
                let mut c = lock(&self.shared.conn);
                c.read_tls(&mut io::empty())?;
                let _ = c.process_new_packets();
                return match c.reader().read(out) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        Err(io::ErrorKind::UnexpectedEof.into())
                    }
                    other => other,
                };
            }
        }
    }
}

impl<C, D> Write for TlsWriter<C>
where
    C: DerefMut<Target = ConnectionCommon<D>>,
{
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let mut out = lock(&self.shared.out);
        let n = {
            let mut c = lock(&self.shared.conn);
            c.writer().write(&data[..data.len().min(CHUNK)])?
        };
        self.shared.flush_locked(&mut out)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut out = lock(&self.shared.out);
        self.shared.flush_locked(&mut out)?;
        out.0.flush()
    }
}

impl<C, D> TlsWriter<C>
where
    C: DerefMut<Target = ConnectionCommon<D>>,
{
    /// Sends a TLS `close_notify`, telling the peer the stream ended cleanly.
    pub fn close(&mut self) -> io::Result<()> {
        let mut out = lock(&self.shared.out);
        lock(&self.shared.conn).send_close_notify();
        self.shared.flush_locked(&mut out)
    }
}
