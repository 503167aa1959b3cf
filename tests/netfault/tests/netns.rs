//! The namespaces and nftables rules themselves, with plain sockets tuned as netgpu tunes
//! them: a partition is noticed within the documented bound whether data is in flight or the
//! client is waiting for an answer, loss only slows a transfer down, healing lets new
//! connections through.

#![allow(clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use netgpu_netfault::Pair;
use netgpu_tls::NetTuning;

/// A server in the GPU namespace: echoes, except that a 1-byte message `s` is swallowed (an
/// operation that takes long).
fn server(pair: &Pair) -> SocketAddr {
    let addr = SocketAddr::from((pair.gpu_ip, 7070));
    let (tx, rx) = std::sync::mpsc::channel();
    pair.gpu.spawn(move || {
        let l = TcpListener::bind(addr).unwrap();
        tx.send(()).unwrap();
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            NetTuning::default().apply(&s).unwrap();
            std::thread::spawn(move || {
                let mut b = vec![0u8; 65536];
                while let Ok(n) = s.read(&mut b) {
                    if n == 0 || (n == 1 && b[0] == b's') {
                        continue;
                    }
                    if s.write_all(&b[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    addr
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    NetTuning::default().apply(&s).unwrap();
    s
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

fn bound() -> Duration {
    // The settings' bound plus scheduling slack.
    NetTuning::default().detection_bound() + Duration::from_millis(700)
}

#[test]
fn partition_with_data_in_flight_fails_the_write_side_within_the_bound() {
    if netgpu_netfault::netns::skipped() {
        return;
    }
    let pair = Pair::create().unwrap();
    let addr = server(&pair);
    let t = pair.hv.spawn(move || {
        let mut s = connect(addr);
        s.write_all(b"hi").unwrap();
        let mut b = [0u8; 2];
        s.read_exact(&mut b).unwrap();
        (s, Instant::now())
    });
    let (mut s, _) = t.join().unwrap().unwrap();
    pair.partition().unwrap();
    let start = Instant::now();
    // 1 MiB cannot be acknowledged: the user timeout aborts the connection.
    let r = (|| {
        s.write_all(&vec![1u8; 1 << 20])?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)
    })();
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(
        start.elapsed() < bound(),
        "noticed after {:?}",
        start.elapsed()
    );
}

#[test]
fn partition_while_waiting_for_an_answer_is_noticed_by_keepalive() {
    if netgpu_netfault::netns::skipped() {
        return;
    }
    let pair = Pair::create().unwrap();
    let addr = server(&pair);
    let t = pair.hv.spawn(move || {
        let mut s = connect(addr);
        s.write_all(b"s").unwrap(); // the server will not answer
        std::thread::sleep(Duration::from_millis(200)); // acknowledged; nothing in flight
        s
    });
    let mut s = t.join().unwrap().unwrap();
    pair.partition().unwrap();
    let start = Instant::now();
    let mut b = [0u8; 1];
    let e = s.read(&mut b).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(
        start.elapsed() < bound(),
        "noticed after {:?}",
        start.elapsed()
    );
    // Healed, a new connection works.
    pair.heal().unwrap();
    let t = pair.hv.spawn(move || {
        let mut s = connect(addr);
        s.write_all(b"ok").unwrap();
        let mut b = [0u8; 2];
        s.read_exact(&mut b).unwrap();
        b
    });
    assert_eq!(&t.join().unwrap().unwrap(), b"ok");
}

#[test]
fn one_percent_loss_only_slows_a_transfer_down() {
    if netgpu_netfault::netns::skipped() {
        return;
    }
    let pair = Pair::create().unwrap();
    let addr = server(&pair);
    pair.loss(10).unwrap();
    let t = pair.hv.spawn(move || {
        let s = connect(addr);
        let data: Vec<u8> = (0..8u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut w = s.try_clone().unwrap();
        let d = data.clone();
        let wt = std::thread::spawn(move || w.write_all(&d).unwrap());
        let mut back = vec![0u8; data.len()];
        (&s).read_exact(&mut back).unwrap();
        wt.join().unwrap();
        (fnv(&data), fnv(&back))
    });
    let (a, b) = t.join().unwrap().unwrap();
    assert_eq!(a, b);
}
