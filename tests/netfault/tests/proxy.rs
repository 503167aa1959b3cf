//! The fault proxy itself, against a plain echo server on loopback.

#![allow(clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use netgpu_netfault::{Dir, Fault, FaultProxy};

/// An echo server; each connection reports how many bytes it received and how it ended.
fn echo() -> (SocketAddr, mpsc::Receiver<(u64, ErrorKind)>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let tx = tx.clone();
            thread::spawn(move || {
                let mut b = vec![0u8; 65536];
                let mut total = 0u64;
                let end = loop {
                    match s.read(&mut b) {
                        Ok(0) => break ErrorKind::UnexpectedEof,
                        Ok(n) => {
                            total += n as u64;
                            if s.write_all(&b[..n]).is_err() {
                                break ErrorKind::BrokenPipe;
                            }
                        }
                        Err(e) => break e.kind(),
                    }
                };
                let _ = tx.send((total, end));
            });
        }
    });
    (addr, rx)
}

fn proxy(upstream: SocketAddr) -> FaultProxy {
    FaultProxy::start("127.0.0.1:0".parse().unwrap(), upstream).unwrap()
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

#[test]
fn pass_forwards_megabytes_intact_both_ways() {
    let (up, _) = echo();
    let p = proxy(up);
    let s = TcpStream::connect(p.addr()).unwrap();
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i ^ (i >> 9)) as u8).collect();
    let mut w = s.try_clone().unwrap();
    let d = data.clone();
    let t = thread::spawn(move || w.write_all(&d).unwrap());
    let mut back = vec![0u8; data.len()];
    (&s).read_exact(&mut back).unwrap();
    t.join().unwrap();
    assert_eq!(fnv(&back), fnv(&data));
    assert_eq!(p.open(), 1);
}

#[test]
fn delay_adds_latency_in_each_direction() {
    let (up, _) = echo();
    let p = proxy(up);
    let mut s = TcpStream::connect(p.addr()).unwrap();
    p.set(Fault::Delay(Duration::from_millis(50)));
    let t = Instant::now();
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn stall_holds_traffic_without_closing_and_resumes() {
    let (up, _) = echo();
    let p = proxy(up);
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(b"a").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    p.set(Fault::Stall);
    s.write_all(b"b").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let e = s.read(&mut b).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{e}"
    );
    p.set(Fault::Pass);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"b", "the stalled byte arrives once the stall ends");
}

#[test]
fn reset_sends_rst_to_both_sides() {
    let (up, ends) = echo();
    let p = proxy(up);
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(b"a").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    p.set(Fault::Reset);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let e = s.read(&mut b).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    let (n, end) = ends.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(n, 1);
    assert!(
        matches!(end, ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
        "{end:?}"
    );
    // New connections are reset too.
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let r = s.read(&mut b);
    assert!(
        matches!(r, Err(ref e) if e.kind() == ErrorKind::ConnectionReset) || matches!(r, Ok(0)),
        "{r:?}"
    );
}

#[test]
fn cut_after_forwards_exactly_that_many_bytes() {
    let (up, ends) = echo();
    let p = proxy(up);
    p.set(Fault::CutAfter {
        dir: Dir::Up,
        bytes: 100,
    });
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(&[7u8; 1000]).unwrap();
    let (n, end) = ends.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(n, 100);
    // A reset, not a FIN (the echo's write after the RST reports a broken pipe).
    assert!(
        matches!(end, ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
        "{end:?}"
    );
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let r = s.read_to_end(&mut got);
    assert!(got.len() <= 100);
    assert_eq!(r.unwrap_err().kind(), ErrorKind::ConnectionReset);
}

#[test]
fn refuse_resets_new_connections_only() {
    let (up, _) = echo();
    let p = proxy(up);
    let mut old = TcpStream::connect(p.addr()).unwrap();
    old.write_all(b"a").unwrap();
    let mut b = [0u8; 1];
    old.read_exact(&mut b).unwrap();
    p.set(Fault::Refuse);
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(s.read(&mut b).is_err() || b == [b'a']);
    old.write_all(b"c").unwrap();
    old.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"c");
}
