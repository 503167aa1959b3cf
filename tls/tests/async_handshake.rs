//! The tokio acceptor and connector (feature `tokio`), as netgpu-client uses them.

#![allow(clippy::unwrap_used)]
#![cfg(feature = "tokio")]

mod common;

use std::time::Duration;

use common::Pki;
use netgpu_tls::{ClientTls, ServerTls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn async_mutual_tls_round_trip_and_identity() {
    let pki = Pki::new("ops");
    let server =
        ServerTls::load(pki.server_config(pki.backend("gpu1", &[]), &pki.ca_file)).unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let srv = tokio::spawn(async move {
        let (s, peer) = l.accept().await.unwrap();
        let mut s = netgpu_tls::tokio::accept(s, &peer.to_string(), &server, T)
            .await
            .unwrap();
        let id = ServerTls::identify(s.conn()).unwrap().unwrap();
        let mut b = vec![0u8; 1 << 20];
        s.read_exact(&mut b).await.unwrap();
        s.write_all(&b).await.unwrap();
        s.flush().await.unwrap();
        id
    });
    let c = ClientTls::load(pki.client_config(Some(pki.hypervisor("hv1", "team-b")), &pki.ca_file))
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let s = netgpu_tls::tokio::connect(tcp, &c, &addr, T).await.unwrap();
    let (mut r, mut w) = tokio::io::split(s);
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 + i / 251) as u8).collect();
    let d2 = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&d2).await.unwrap();
        w.flush().await.unwrap();
        w
    });
    let mut back = vec![0u8; data.len()];
    r.read_exact(&mut back).await.unwrap();
    assert_eq!(
        back, data,
        "a megabyte through both directions of a split stream"
    );
    let _w = writer.await.unwrap();
    let id = srv.await.unwrap();
    assert_eq!(id.tenant.unwrap().as_str(), "team-b");
}

#[tokio::test]
async fn async_connect_to_a_silent_peer_times_out() {
    let pki = Pki::new("ops");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let c = ClientTls::load(pki.client_config(None, &pki.ca_file)).unwrap();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let e = netgpu_tls::tokio::connect(tcp, &c, &addr, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("timed out"), "{e}");
}
