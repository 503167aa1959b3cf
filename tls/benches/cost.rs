//! What TLS costs on netgpu's hop, measured against plain TCP in the same run.
//!
//! `cargo bench -p netgpu-tls --bench cost` (`-- --quick` for a short run) prints:
//! - this machine's AEAD throughput on one core (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305
//!   sealing 16 KiB records, what TLS 1.3 sends), the ceiling for any encrypted copy;
//! - the round trip of a 24-byte ping-pong (the size of a `Null` frame) over plain TCP and over
//!   TLS 1.3 through the split halves the backend and libcuda use;
//! - a 64 MiB transfer with a 1-byte answer (a host-to-device copy) over both;
//! - with `--all-features` (feature `tokio`), the same transfer through tokio streams,
//!   plain and with `netgpu_tls::tokio` (what netgpu-client uses).
//!
//! Loopback, both ends in this process: each end's CPU cost counts, as on two 2-core hosts.
//! Copies report wall-clock throughput and the process's CPU time per byte (both ends
//! together, from `getrusage`): on a shared machine the wall clock measures the scheduler
//! as much as the code, CPU seconds per byte what each path costs. The AEAD line gives the
//! ceiling: a TLS copy costs at least the plain copy plus one seal and one open per byte.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use netgpu_tls::split::split_stream;
use netgpu_tls::{ClientTls, ServerTls};
use ring::aead;

const BULK: usize = 64 << 20;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let trials = if quick { 2 } else { 5 };
    println!(
        "netgpu TLS cost (loopback, TLS 1.3 via rustls/ring){}",
        if quick { " [quick]" } else { "" }
    );
    println!();
    println!("AEAD throughput, bytes per CPU-second of one thread, 16 KiB records:");
    let mut aead_best = 0f64;
    for (name, alg) in [
        ("AES-128-GCM", &aead::AES_128_GCM),
        ("AES-256-GCM", &aead::AES_256_GCM),
        ("ChaCha20-Poly1305", &aead::CHACHA20_POLY1305),
    ] {
        let g = aead_gbps(alg, if quick { 256 << 20 } else { 1 << 30 });
        aead_best = aead_best.max(g);
        println!("  {name:<18} {g:>6.2} GB/s");
    }
    println!();

    let dir = tempfile::tempdir().unwrap();
    let (server, client) = pki(dir.path());
    let rtts = if quick { 2_000 } else { 10_000 };
    let mut best = [f64::MAX; 4];
    let mut cpu = [f64::MAX; 2];
    let mut rtt_cpu = [f64::MAX; 2];
    for _ in 0..trials {
        let (a, b) = plain_pair();
        let (w, c) = round_trips(a, b, rtts);
        best[0] = best[0].min(w);
        rtt_cpu[0] = rtt_cpu[0].min(c);
        let (a, b) = tls_pair(&server, &client);
        let (w, c) = round_trips(a, b, rtts);
        best[1] = best[1].min(w);
        rtt_cpu[1] = rtt_cpu[1].min(c);
        let (a, b) = plain_pair();
        let (w, c) = bulk(a, b);
        best[2] = best[2].min(w);
        cpu[0] = cpu[0].min(c);
        let (a, b) = tls_pair(&server, &client);
        let (w, c) = bulk(a, b);
        best[3] = best[3].min(w);
        cpu[1] = cpu[1].min(c);
    }
    println!(
        "{:<34} {:>12} {:>12} {:>8}",
        "", "plain TCP", "TLS 1.3", "ratio"
    );
    println!(
        "{:<34} {:>9.1} us {:>9.1} us {:>7.2}x",
        "24-byte round trip",
        best[0] * 1e6,
        best[1] * 1e6,
        best[1] / best[0]
    );
    println!(
        "{:<34} {:>9.1} us {:>9.1} us {:>7.2}x",
        "  CPU per round trip (both ends)",
        rtt_cpu[0] * 1e6,
        rtt_cpu[1] * 1e6,
        rtt_cpu[1] / rtt_cpu[0]
    );
    let (p, t) = (BULK as f64 / best[2] / 1e9, BULK as f64 / best[3] / 1e9);
    println!(
        "{:<34} {:>7.2} GB/s {:>7.2} GB/s {:>7.2}x",
        "64 MiB one way + 1-byte answer",
        p,
        t,
        t / p
    );
    let (pc, tc) = (BULK as f64 / cpu[0] / 1e9, BULK as f64 / cpu[1] / 1e9);
    println!(
        "{:<34} {:>7.2} GB/s {:>7.2} GB/s {:>7.2}x",
        "64 MiB, bytes per CPU-second",
        pc,
        tc,
        tc / pc
    );
    // The cheapest a TLS copy can be: the plain copy's CPU plus sealing and opening each
    // byte once with the fastest AEAD measured above.
    let ceiling = 1.0 / (1.0 / pc + 2.0 / aead_best);
    println!(
        "{:<34} {:>7} {:>7.2} GB/s {:>7.2}x",
        "  AEAD ceiling (plain + seal + open)",
        "",
        ceiling,
        ceiling / pc
    );
    #[cfg(feature = "tokio")]
    {
        // The same copy through the tokio streams netgpu-client uses.
        let mut best = [f64::MAX; 2];
        let mut cpu = [f64::MAX; 2];
        for _ in 0..trials {
            for (i, tls) in [false, true].into_iter().enumerate() {
                let (w, c) = async_bulk(&server, &client, tls);
                best[i] = best[i].min(w);
                cpu[i] = cpu[i].min(c);
            }
        }
        let (p, t) = (BULK as f64 / best[0] / 1e9, BULK as f64 / best[1] / 1e9);
        println!(
            "{:<34} {:>7.2} GB/s {:>7.2} GB/s {:>7.2}x",
            "tokio: 64 MiB one way",
            p,
            t,
            t / p
        );
        let (p, t) = (BULK as f64 / cpu[0] / 1e9, BULK as f64 / cpu[1] / 1e9);
        println!(
            "{:<34} {:>7.2} GB/s {:>7.2} GB/s {:>7.2}x",
            "tokio: 64 MiB, bytes per CPU-second",
            p,
            t,
            t / p
        );
    }
    println!();
    println!("(best of {trials} interleaved trials; ratio = TLS / plain: time for round trips, throughput for copies)");
}

/// Wall-clock and CPU seconds to send 64 MiB and get a 1-byte answer through tokio streams
/// (a 2-worker runtime), plain or with `netgpu_tls::tokio`.
#[cfg(feature = "tokio")]
fn async_bulk(server: &ServerTls, client: &ClientTls, tls: bool) -> (f64, f64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (s, _) = l.accept().await.unwrap();
        for x in [&s, &c] {
            netgpu_tls::NetTuning::default().apply(x).unwrap();
        }
        if !tls {
            return async_copy(s, c).await;
        }
        let t = Duration::from_secs(5);
        let (s, c) = tokio::join!(
            netgpu_tls::tokio::accept(s, "bench", server, t),
            netgpu_tls::tokio::connect(c, client, "localhost:1", t)
        );
        async_copy(s.unwrap(), c.unwrap()).await
    })
}

#[cfg(feature = "tokio")]
async fn async_copy<S, C>(server: S, client: C) -> (f64, f64)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut server = server;
    let sink = tokio::spawn(async move {
        let mut b = vec![0u8; 256 << 10];
        let mut left = BULK;
        while left > 0 {
            let n = server.read(&mut b[..left.min(256 << 10)]).await.unwrap();
            assert!(n > 0);
            left -= n;
        }
        server.write_all(&[1]).await.unwrap();
        server.flush().await.unwrap();
        server
    });
    let mut client = client;
    let data = vec![0x5au8; 1 << 20];
    let c0 = cpu_seconds();
    let t = Instant::now();
    for _ in 0..BULK / data.len() {
        client.write_all(&data).await.unwrap();
    }
    client.flush().await.unwrap();
    let mut one = [0u8; 1];
    client.read_exact(&mut one).await.unwrap();
    let e = t.elapsed().as_secs_f64();
    let _s = sink.await.unwrap();
    (e, cpu_seconds() - c0)
}

fn aead_gbps(alg: &'static aead::Algorithm, total: usize) -> f64 {
    let key =
        aead::LessSafeKey::new(aead::UnboundKey::new(alg, &vec![7u8; alg.key_len()]).unwrap());
    let mut rec = vec![0u8; 16 << 10];
    let t = rusage(libc::RUSAGE_THREAD);
    let mut n = 0u64;
    for i in 0..(total / rec.len()) {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&(i as u64).to_be_bytes());
        let tag = key
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::empty(),
                &mut rec,
            )
            .unwrap();
        n += u64::from(tag.as_ref()[0]);
    }
    std::hint::black_box(n);
    total as f64 / (rusage(libc::RUSAGE_THREAD) - t) / 1e9
}

fn pki(dir: &std::path::Path) -> (ServerTls, ClientTls) {
    netgpu_tls::issue::loopback_pki(dir, "bench").unwrap()
}

type Io = (Box<dyn Read + Send>, Box<dyn Write + Send>);

fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    for x in [&s, &c] {
        netgpu_tls::NetTuning::default().apply(x).unwrap();
    }
    (s, c)
}

fn plain_pair() -> (Io, Io) {
    let (s, c) = tcp_pair();
    let (s2, c2) = (s.try_clone().unwrap(), c.try_clone().unwrap());
    ((Box::new(s), Box::new(s2)), (Box::new(c), Box::new(c2)))
}

fn tls_pair(server: &ServerTls, client: &ClientTls) -> (Io, Io) {
    let (s, c) = tcp_pair();
    let t = Duration::from_secs(5);
    let st = thread::scope(|sc| {
        let h = sc.spawn(|| netgpu_tls::blocking::accept(s, server, t).unwrap());
        let cs = netgpu_tls::blocking::connect(c, client, "localhost:1", t).unwrap();
        (h.join().unwrap(), cs)
    });
    let (sr, sw) = split_stream(st.0).unwrap();
    let (cr, cw) = split_stream(st.1).unwrap();
    ((Box::new(sr), Box::new(sw)), (Box::new(cr), Box::new(cw)))
}

/// Wall-clock and CPU seconds (the whole process: both ends) per round trip of a 24-byte
/// frame, the server echoing on its own thread.
fn round_trips(server: Io, client: Io, n: usize) -> (f64, f64) {
    let (mut sr, mut sw) = server;
    let echo = thread::spawn(move || {
        let mut b = [0u8; 24];
        for _ in 0..n {
            sr.read_exact(&mut b).unwrap();
            sw.write_all(&b).unwrap();
            sw.flush().unwrap();
        }
    });
    let (mut cr, mut cw) = client;
    let mut b = [1u8; 24];
    let c0 = cpu_seconds();
    let t = Instant::now();
    for _ in 0..n {
        cw.write_all(&b).unwrap();
        cw.flush().unwrap();
        cr.read_exact(&mut b).unwrap();
    }
    let e = t.elapsed().as_secs_f64() / n as f64;
    let c = (cpu_seconds() - c0) / n as f64;
    echo.join().unwrap();
    (e, c)
}

/// CPU seconds (user + system) this process has used, all threads.
fn cpu_seconds() -> f64 {
    rusage(libc::RUSAGE_SELF)
}

/// CPU seconds (user + system) of `who` (`RUSAGE_SELF` or `RUSAGE_THREAD`).
fn rusage(who: libc::c_int) -> f64 {
    // SAFETY: getrusage writes one `rusage` into the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable `rusage`.
    let rc = unsafe { libc::getrusage(who, &mut u) };
    assert_eq!(rc, 0);
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Wall-clock and CPU seconds to send 64 MiB and get a 1-byte answer.
fn bulk(server: Io, client: Io) -> (f64, f64) {
    let (mut sr, mut sw) = server;
    let sink = thread::spawn(move || {
        let mut b = vec![0u8; 256 << 10];
        let mut left = BULK;
        while left > 0 {
            let n = sr.read(&mut b[..left.min(256 << 10)]).unwrap();
            assert!(n > 0);
            left -= n;
        }
        sw.write_all(&[1]).unwrap();
        sw.flush().unwrap();
    });
    let (mut cr, mut cw) = client;
    let data = vec![0x5au8; 1 << 20];
    let c0 = cpu_seconds();
    let t = Instant::now();
    for _ in 0..BULK / data.len() {
        cw.write_all(&data).unwrap();
    }
    cw.flush().unwrap();
    let mut one = [0u8; 1];
    cr.read_exact(&mut one).unwrap();
    let e = t.elapsed().as_secs_f64();
    sink.join().unwrap();
    (e, cpu_seconds() - c0)
}
