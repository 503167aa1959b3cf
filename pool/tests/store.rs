//! One conformance suite for the store trait, run against a real etcd on loopback and against
//! the file store.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use netgpu_pool::store::{self, Compare, Error, Op, Read, Store, TxnOutcome};
use netgpu_pool::testkit::{Etcd, TempDir};

async fn put(s: &dyn Store, k: &str, v: &str) -> i64 {
    match s
        .txn(&[], &[Op::put(k, v.as_bytes().to_vec())])
        .await
        .unwrap()
    {
        TxnOutcome::Committed(r) => r,
        TxnOutcome::Conflict => panic!("unconditional put conflicted"),
    }
}

async fn puts_are_read_back_with_revisions(s: Arc<dyn Store>) {
    let r1 = put(&*s, "/t/a", "1").await;
    let r2 = put(&*s, "/t/b", "2").await;
    assert!(r2 > r1);
    let a = s.get("/t/a").await.unwrap().unwrap();
    assert_eq!(a.value, b"1");
    assert_eq!(a.create_revision, r1);
    assert_eq!(a.mod_revision, r1);
    let r3 = put(&*s, "/t/a", "3").await;
    let a = s.get("/t/a").await.unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (r1, r3));
    assert!(s.get("/t/none").await.unwrap().is_none());
}

async fn prefix_reads_are_ordered_and_bounded(s: Arc<dyn Store>) {
    put(&*s, "/p/x/2", "b").await;
    put(&*s, "/p/x/1", "a").await;
    put(&*s, "/p/xy", "no").await;
    put(&*s, "/p/w", "no").await;
    let keys: Vec<String> = s
        .list("/p/x/")
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.key)
        .collect();
    assert_eq!(keys, ["/p/x/1", "/p/x/2"]);
}

async fn several_reads_share_one_revision_and_round_trip(s: Arc<dyn Store>) {
    put(&*s, "/m/a", "1").await;
    put(&*s, "/m/b/1", "2").await;
    let before = s.round_trips();
    let snap = s
        .read(&[
            Read::Key("/m/a".into()),
            Read::Prefix("/m/b/".into()),
            Read::Key("/m/zz".into()),
        ])
        .await
        .unwrap();
    assert_eq!(s.round_trips() - before, 1);
    assert_eq!(snap.results.len(), 3);
    assert_eq!(snap.results[0].len(), 1);
    assert_eq!(snap.results[1].len(), 1);
    assert!(snap.results[2].is_empty());
    assert!(snap.revision >= snap.results[1][0].mod_revision);
}

async fn compare_and_swap_lets_exactly_one_writer_win(s: Arc<dyn Store>) {
    let r = put(&*s, "/c/host", "v0").await;
    let a = s
        .txn(
            &[Compare::ModRevision("/c/host".into(), r)],
            &[Op::put("/c/host", b"A".to_vec())],
        )
        .await
        .unwrap();
    let b = s
        .txn(
            &[Compare::ModRevision("/c/host".into(), r)],
            &[Op::put("/c/host", b"B".to_vec())],
        )
        .await
        .unwrap();
    assert!(a.committed());
    assert_eq!(b, TxnOutcome::Conflict);
    assert_eq!(s.get("/c/host").await.unwrap().unwrap().value, b"A");
    // Absent: create-if-not-exists.
    let c1 = s
        .txn(
            &[Compare::Absent("/c/new".into())],
            &[Op::put("/c/new", b"1".to_vec())],
        )
        .await
        .unwrap();
    let c2 = s
        .txn(
            &[Compare::Absent("/c/new".into())],
            &[Op::put("/c/new", b"2".to_vec())],
        )
        .await
        .unwrap();
    assert!(c1.committed());
    assert_eq!(c2, TxnOutcome::Conflict);
    // A failed transaction writes nothing, not even its unconditional parts.
    let t = s
        .txn(
            &[Compare::Absent("/c/new".into())],
            &[
                Op::put("/c/other", b"x".to_vec()),
                Op::Delete("/c/host".into()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(t, TxnOutcome::Conflict);
    assert!(s.get("/c/other").await.unwrap().is_none());
    assert!(s.get("/c/host").await.unwrap().is_some());
}

async fn concurrent_cas_never_loses_an_update(s: Arc<dyn Store>) {
    put(&*s, "/n/counter", "0").await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                loop {
                    let kv = s.get("/n/counter").await.unwrap().unwrap();
                    let n: u32 = String::from_utf8(kv.value).unwrap().parse().unwrap();
                    let out = s
                        .txn(
                            &[Compare::ModRevision("/n/counter".into(), kv.mod_revision)],
                            &[Op::put("/n/counter", (n + 1).to_string().into_bytes())],
                        )
                        .await
                        .unwrap();
                    if out.committed() {
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.get("/n/counter").await.unwrap().unwrap().value, b"20");
}

async fn keys_go_with_their_lease(s: Arc<dyn Store>) {
    let lease = s.grant_lease(Duration::from_secs(2)).await.unwrap();
    s.txn(
        &[],
        &[Op::Put {
            key: "/l/alive".into(),
            value: b"1".to_vec(),
            lease: Some(lease),
        }],
    )
    .await
    .unwrap();
    assert_eq!(s.get("/l/alive").await.unwrap().unwrap().lease, lease);
    // Renewed, it outlives its TTL.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.keep_alive(lease).await.unwrap();
    }
    assert!(s.get("/l/alive").await.unwrap().is_some());
    // Left alone, it expires with its keys.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.get("/l/alive").await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "lease never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(matches!(s.keep_alive(lease).await, Err(Error::NoLease(_))));
    // Putting with a dead lease is an error, not a silent put.
    let e = s
        .txn(
            &[],
            &[Op::Put {
                key: "/l/x".into(),
                value: b"1".to_vec(),
                lease: Some(lease),
            }],
        )
        .await;
    assert!(matches!(e, Err(Error::NoLease(_))), "{e:?}");
    // Revoking deletes at once.
    let l2 = s.grant_lease(Duration::from_secs(30)).await.unwrap();
    s.txn(
        &[],
        &[Op::Put {
            key: "/l/y".into(),
            value: b"1".to_vec(),
            lease: Some(l2),
        }],
    )
    .await
    .unwrap();
    s.revoke(l2).await.unwrap();
    assert!(s.get("/l/y").await.unwrap().is_none());
}

async fn watches_report_puts_and_deletes_under_the_prefix(s: Arc<dyn Store>) {
    let start = put(&*s, "/w/seed", "x").await;
    let mut w = s.watch("/w/sub/", start).await.unwrap();
    put(&*s, "/w/other", "ignored").await;
    let r = put(&*s, "/w/sub/a", "1").await;
    let got = tokio::time::timeout(Duration::from_secs(5), w.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(got >= r);
    let del = s.txn(&[], &[Op::Delete("/w/sub/a".into())]).await.unwrap();
    let TxnOutcome::Committed(dr) = del else {
        panic!()
    };
    let mut last = 0;
    while last < dr {
        last = tokio::time::timeout(Duration::from_secs(5), w.recv())
            .await
            .unwrap()
            .unwrap();
    }
}

macro_rules! suite {
    ($($name:ident),*) => {
        mod etcd {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let etcd = Etcd::start().expect("start etcd");
                let s = store::open(&etcd.url).await.unwrap();
                super::$name(s).await;
            })*
        }
        mod file {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let dir = TempDir::new("store").unwrap();
                let s = store::open(&dir.url()).await.unwrap();
                super::$name(s).await;
            })*
        }
    };
}

suite!(
    puts_are_read_back_with_revisions,
    prefix_reads_are_ordered_and_bounded,
    several_reads_share_one_revision_and_round_trip,
    compare_and_swap_lets_exactly_one_writer_win,
    concurrent_cas_never_loses_an_update,
    keys_go_with_their_lease,
    watches_report_puts_and_deletes_under_the_prefix
);

#[tokio::test]
async fn file_store_survives_reopen_and_reports_corruption() {
    let dir = TempDir::new("reopen").unwrap();
    {
        let s = store::open(&dir.url()).await.unwrap();
        put(&*s, "/k", "v").await;
    }
    let s = store::open(&dir.url()).await.unwrap();
    assert_eq!(s.get("/k").await.unwrap().unwrap().value, b"v");
    std::fs::write(dir.0.join("state.json"), b"{not json").unwrap();
    let e = store::open(&dir.url())
        .await
        .err()
        .expect("corrupt file must be refused");
    assert!(e.to_string().contains("corrupt"), "{e}");
}

#[tokio::test]
async fn unreachable_etcd_is_an_error_not_a_hang() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = std::time::Instant::now();
    let r = store::open(&format!("etcd://127.0.0.1:{port}")).await;
    if let Ok(s) = r {
        // The client may connect lazily: the first request must fail then.
        assert!(s.get("/x").await.is_err());
    }
    assert!(t.elapsed() < Duration::from_secs(15));
}
