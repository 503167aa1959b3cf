//! A TLS connection split into a reading and a writing half on two threads, on both ends:
//! full-duplex bulk data arrives intact, and the end of the stream is reported as such.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use common::Pki;
use netgpu_tls::blocking::{accept, connect};
use netgpu_tls::split::split_stream;
use netgpu_tls::{ClientTls, ServerTls};

const T: Duration = Duration::from_secs(5);
const LEN: usize = 16 << 20;

fn pattern(seed: u32) -> Vec<u8> {
    (0..LEN as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 11) as u8)
        .collect()
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

fn pair() -> (
    netgpu_tls::blocking::ServerStream,
    netgpu_tls::blocking::ClientStream,
) {
    let pki = Pki::new("ops");
    let server =
        ServerTls::load(pki.server_config(pki.backend("gpu1", &[]), &pki.ca_file)).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let srv = thread::spawn(move || accept(l.accept().unwrap().0, &server, T).unwrap());
    let c = ClientTls::load(pki.client_config(Some(pki.hypervisor("hv1", "acme")), &pki.ca_file))
        .unwrap();
    let cs = connect(TcpStream::connect(&addr).unwrap(), &c, &addr, T).unwrap();
    (srv.join().unwrap(), cs)
}

/// Writes `data` on one thread while reading `LEN` bytes on another; returns the checksum
/// of what was read.
fn duplex<R: Read + Send + 'static, W: Write + Send + 'static>(
    mut r: R,
    mut w: W,
    data: Vec<u8>,
) -> thread::JoinHandle<u64> {
    let wt = thread::spawn(move || {
        for chunk in data.chunks(1 << 20) {
            w.write_all(chunk).unwrap();
        }
        w.flush().unwrap();
        w
    });
    thread::spawn(move || {
        let mut got = vec![0u8; LEN];
        r.read_exact(&mut got).unwrap();
        let _w = wt.join().unwrap();
        fnv(&got)
    })
}

#[test]
fn both_ends_split_carry_full_duplex_data_intact() {
    let (s, c) = pair();
    let (sr, sw) = split_stream(s).unwrap();
    let (cr, cw) = split_stream(c).unwrap();
    let (a, b) = (pattern(1), pattern(2));
    let (ha, hb) = (fnv(&a), fnv(&b));
    let server_got = duplex(sr, sw, a);
    let client_got = duplex(cr, cw, b);
    assert_eq!(client_got.join().unwrap(), ha);
    assert_eq!(server_got.join().unwrap(), hb);
}

#[test]
fn a_clean_close_reads_as_end_and_a_cut_as_unexpected_eof() {
    let (s, c) = pair();
    let (mut sr, _sw) = split_stream(s).unwrap();
    let (_cr, mut cw) = split_stream(c).unwrap();
    cw.write_all(b"bye").unwrap();
    cw.close().unwrap();
    let mut b = [0u8; 3];
    sr.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"bye");
    assert_eq!(sr.read(&mut b).unwrap(), 0, "close_notify is a clean end");

    let (s, c) = pair();
    let (mut sr, _sw) = split_stream(s).unwrap();
    let (cr, _cw) = split_stream(c).unwrap();
    cr.socket().shutdown(std::net::Shutdown::Both).unwrap();
    let e = sr.read(&mut b).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
}

#[test]
fn a_reader_waiting_for_the_peer_does_not_block_the_writer() {
    let (s, c) = pair();
    let (mut sr, mut sw) = split_stream(s).unwrap();
    let (mut cr, mut cw) = split_stream(c).unwrap();
    // The server's reader waits (nothing sent yet) while its writer answers.
    let reader = thread::spawn(move || {
        let mut b = [0u8; 5];
        sr.read_exact(&mut b).unwrap();
        b
    });
    thread::sleep(Duration::from_millis(50));
    sw.write_all(b"first").unwrap();
    sw.flush().unwrap();
    let mut b = [0u8; 5];
    cr.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"first");
    cw.write_all(b"reply").unwrap();
    cw.flush().unwrap();
    assert_eq!(&reader.join().unwrap(), b"reply");
}
