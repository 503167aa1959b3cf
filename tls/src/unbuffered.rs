//! rustls' unbuffered connections (`rustls::unbuffered`) over blocking sockets: the pieces
//! the handshake ([`crate::blocking`]) and the split halves ([`crate::split`]) share.
//!
//! With the unbuffered API rustls works on buffers the caller owns: records are deframed
//! and decrypted in place in the caller's incoming buffer (`process_tls_records`), and
//! records are sealed straight into the caller's outgoing buffer (`WriteTraffic::encrypt`).
//! This module owns those two buffers ([`Incoming`], [`Outgoing`]), the two connection types
//! behind one trait ([`Side`]), and the handshake loop.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::ops::DerefMut;
use std::time::Instant;

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedConnectionCommon,
    UnbufferedStatus, WriteTraffic,
};

/// The most unprocessed ciphertext an incoming buffer holds: a TLS 1.3 record is at most
/// 16 KiB + 256 + 5 bytes and a handshake message at most 64 KiB, so a peer that sends more
/// without completing one is refused rather than buffered.
pub(crate) const MAX_PENDING: usize = 1 << 20;

/// An unbuffered rustls connection of either side.
pub trait Side: DerefMut<Target = UnbufferedConnectionCommon<Self::Data>> + Send + 'static {
    type Data;
    /// `process_tls_records` of this side.
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

impl Side for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ServerConnectionData> {
        self.process_tls_records(incoming)
    }
}

impl Side for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ClientConnectionData> {
        self.process_tls_records(incoming)
    }
}

/// A rustls error as the I/O error rustls' own streams return (so
/// [`crate::explain::rustls_error`] finds it).
pub(crate) fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Ciphertext received and not yet processed by rustls: `buf[start..end]`.
pub(crate) struct Incoming {
    pub(crate) buf: Vec<u8>,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl Incoming {
    pub(crate) fn new(capacity: usize) -> Incoming {
        Incoming {
            buf: vec![0; capacity],
            start: 0,
            end: 0,
        }
    }

    /// The bytes rustls has still to process (decrypted in place by it).
    pub(crate) fn filled(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    /// Drops `n` processed bytes from the front (rustls' `discard`).
    pub(crate) fn discard(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room for at least `want` more bytes after the filled part (moving it to the front
    /// or growing the buffer); refused past [`MAX_PENDING`].
    pub(crate) fn tail(&mut self, want: usize) -> io::Result<&mut [u8]> {
        if self.buf.len() - self.end < want {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end > MAX_PENDING {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the TLS peer sent more than 1 MiB without completing a record",
                ));
            }
            if self.buf.len() - self.end < want {
                self.buf.resize(self.end + want, 0);
            }
        }
        Ok(&mut self.buf[self.end..])
    }

    /// Counts `n` bytes written into [`Incoming::tail`].
    pub(crate) fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }
}

/// Ciphertext to send: `buf[..len]` (the rest is room to seal into).
pub(crate) struct Outgoing {
    buf: Vec<u8>,
    len: usize,
}

impl Outgoing {
    pub(crate) fn new(capacity: usize) -> Outgoing {
        Outgoing {
            buf: vec![0; capacity],
            len: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `other`'s bytes (records made elsewhere that must go out first).
    pub(crate) fn append(&mut self, other: &mut Outgoing) {
        if other.is_empty() {
            return;
        }
        self.room(other.len);
        self.buf[self.len..self.len + other.len].copy_from_slice(other.bytes());
        self.len += other.len;
        other.clear();
    }

    /// Appends records sealed earlier (not yet written).
    #[cfg(feature = "tokio")]
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.room(bytes.len());
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn room(&mut self, n: usize) {
        if self.buf.len() - self.len < n {
            self.buf.resize(self.len + n, 0);
        }
    }

    /// Encodes a handshake or post-handshake record (a key update, an alert).
    pub(crate) fn encode<D>(&mut self, e: &mut EncodeTlsData<'_, D>) -> io::Result<()> {
        loop {
            match e.encode(&mut self.buf[self.len..]) {
                Ok(n) => {
                    self.len += n;
                    return Ok(());
                }
                Err(EncodeError::InsufficientSize(s)) => self.room(s.required_size),
                Err(e) => return Err(io::Error::other(e)),
            }
        }
    }

    /// Seals `data` into records (at most 16 KiB of plaintext each) after the bytes here.
    pub(crate) fn encrypt<D>(
        &mut self,
        w: &mut WriteTraffic<'_, D>,
        data: &[u8],
    ) -> io::Result<()> {
        loop {
            match w.encrypt(data, &mut self.buf[self.len..]) {
                Ok(n) => {
                    self.len += n;
                    return Ok(());
                }
                Err(EncryptError::InsufficientSize(s)) => self.room(s.required_size),
                Err(e) => return Err(io::Error::other(e)),
            }
        }
    }

    /// Seals a `close_notify` alert.
    pub(crate) fn close_notify<D>(&mut self, w: &mut WriteTraffic<'_, D>) -> io::Result<()> {
        loop {
            match w.queue_close_notify(&mut self.buf[self.len..]) {
                Ok(n) => {
                    self.len += n;
                    return Ok(());
                }
                Err(EncryptError::InsufficientSize(s)) => self.room(s.required_size),
                Err(e) => return Err(io::Error::other(e)),
            }
        }
    }
}

/// After rustls failed on what the peer sent: the alert it queued (if any) into `out`, to
/// tell the peer why.
pub(crate) fn take_alert<C: Side>(conn: &mut C, incoming: &mut Incoming, out: &mut Outgoing) {
    let UnbufferedStatus { discard, state } = conn.process(incoming.filled());
    if let Ok(ConnectionState::EncodeTlsData(mut e)) = state {
        let _ = out.encode(&mut e);
    }
    incoming.discard(discard);
}

fn left(deadline: Instant) -> io::Result<std::time::Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    Ok(left)
}

fn send(sock: &mut TcpStream, out: &mut Outgoing, deadline: Instant) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    sock.set_write_timeout(Some(left(deadline)?))?;
    sock.write_all(out.bytes())?;
    out.clear();
    Ok(())
}

/// What a handshake loop does after one `process_tls_records` ([`handshake_step`]).
pub(crate) enum Next {
    Again,
    /// Send what `out` holds (rustls has been told it is taken), then go on.
    Send,
    Input,
    Done,
    Data,
    Fail(io::Error),
}

/// One step of a handshake, shared by the blocking and the tokio drivers: lets rustls
/// process what `incoming` holds, encodes what it has to send into `out`, and says what the
/// driver does next.
pub(crate) fn handshake_step<C: Side>(
    conn: &mut C,
    incoming: &mut Incoming,
    out: &mut Outgoing,
) -> Next {
    let UnbufferedStatus { discard, state } = conn.process(incoming.filled());
    let next = match state {
        Err(e) => Next::Fail(tls_error(e)),
        Ok(ConnectionState::EncodeTlsData(mut e)) => match out.encode(&mut e) {
            Ok(()) => Next::Again,
            Err(e) => Next::Fail(e),
        },
        Ok(ConnectionState::TransmitTlsData(t)) => {
            // The driver sends it before anything else is encoded.
            t.done();
            Next::Send
        }
        Ok(ConnectionState::BlockedHandshake) => Next::Input,
        // A server may send before the client's Finished: done only when both ways are
        // open (the client's certificate checked).
        Ok(ConnectionState::WriteTraffic(_)) => Next::Done,
        // Application data already (kept in the connection for the reader; refused by the
        // driver if the handshake is not over).
        Ok(ConnectionState::ReadTraffic(_)) => Next::Data,
        Ok(ConnectionState::PeerClosed) | Ok(ConnectionState::Closed) => {
            Next::Fail(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the TLS connection during the handshake",
            ))
        }
        Ok(other) => Next::Fail(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected TLS state during the handshake: {other:?}"),
        )),
    };
    incoming.discard(discard);
    next
}

/// Runs the handshake of `conn` on `sock` until both directions may carry application data,
/// within `deadline`. Ciphertext received beyond the handshake stays in `incoming` for the
/// connection's reader. The socket is left with the deadline's timeouts set.
pub(crate) fn handshake<C: Side>(
    conn: &mut C,
    sock: &mut TcpStream,
    incoming: &mut Incoming,
    deadline: Instant,
) -> io::Result<()> {
    let mut out = Outgoing::new(4096);
    loop {
        let next = handshake_step(conn, incoming, &mut out);
        match next {
            Next::Again => {}
            Next::Send => send(sock, &mut out, deadline)?,
            Next::Done | Next::Data if !conn.is_handshaking() => {
                return send(sock, &mut out, deadline)
            }
            Next::Data => {
                let e = io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the TLS peer sent application data before the handshake completed",
                );
                let _ = send(sock, &mut out, deadline);
                return Err(e);
            }
            Next::Done | Next::Input => {
                send(sock, &mut out, deadline)?;
                sock.set_read_timeout(Some(left(deadline)?))?;
                let n = loop {
                    match sock.read(incoming.tail(16 * 1024)?) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            return Err(io::ErrorKind::TimedOut.into())
                        }
                        r => break r?,
                    }
                };
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the TCP connection during the TLS handshake",
                    ));
                }
                incoming.commit(n);
            }
            Next::Fail(e) => {
                take_alert(conn, incoming, &mut out);
                let _ = send(sock, &mut out, deadline);
                return Err(e);
            }
        }
    }
}
