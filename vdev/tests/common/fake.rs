//! A scripted backend for tests that need replies in a chosen order, at a chosen time, or
//! broken on purpose: it speaks the real wire protocol (frames and operations from
//! `netgpu_proto::wire`) on a loopback socket, answers the handshake and `DeviceQuery` by
//! itself, and hands every other request to the test, which answers (or not) through
//! [`FakeBackend::reply`].
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::frame::{FrameHeader, FrameKind};
use netgpu_proto::wire::ops::{self, DeviceInfo, Reply, Request};
use netgpu_proto::wire::{HEADER_LEN, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc as tmpsc;

/// Something the backend saw.
#[derive(Debug)]
pub enum Event {
    Request {
        conn: u64,
        id: u64,
        flags: u8,
        request: Request,
        data: Vec<u8>,
    },
    /// The client closed the connection.
    Closed { conn: u64 },
}

pub struct FakeBackend {
    pub addr: String,
    /// Answers nothing by itself (not even `Null`): a wedged backend.
    mute: Arc<AtomicBool>,
    events: Mutex<mpsc::Receiver<Event>>,
    writers: Arc<Mutex<HashMap<u64, tmpsc::UnboundedSender<Vec<u8>>>>>,
}

fn frame(
    kind: FrameKind,
    id: u64,
    status: CuResult,
    flags: u8,
    reply: &Reply,
    data: &[u8],
) -> Vec<u8> {
    let ctrl = ops::encode(reply).unwrap();
    let mut h = FrameHeader::reply(id, status, ctrl.len() as u32, data.len() as u32);
    h.kind = kind;
    h.flags = flags;
    let mut b = h.encode().to_vec();
    b.extend_from_slice(&ctrl);
    b.extend_from_slice(data);
    b
}

impl FakeBackend {
    /// Starts listening on the runtime `rt`; `max_data` is announced in the `Welcome`.
    pub fn start(rt: &tokio::runtime::Runtime, max_data: u32) -> FakeBackend {
        let (tx, rx) = mpsc::channel();
        let writers: Arc<Mutex<HashMap<u64, tmpsc::UnboundedSender<Vec<u8>>>>> = Arc::default();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let w2 = Arc::clone(&writers);
        let mute = Arc::new(AtomicBool::new(false));
        let mute2 = Arc::clone(&mute);
        rt.spawn(async move {
            let mut next = 0u64;
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                next += 1;
                let conn = next;
                let (mut r, mut w) = sock.into_split();
                let (wtx, mut wrx) = tmpsc::unbounded_channel::<Vec<u8>>();
                w2.lock().unwrap().insert(conn, wtx.clone());
                tokio::spawn(async move {
                    while let Some(b) = wrx.recv().await {
                        if b.is_empty() {
                            let _ = w.shutdown().await;
                            return; // close
                        }
                        if w.write_all(&b).await.is_err() {
                            return;
                        }
                    }
                });
                let tx = tx.clone();
                let mute = Arc::clone(&mute2);
                tokio::spawn(async move {
                    loop {
                        let mut h = [0u8; HEADER_LEN];
                        if r.read_exact(&mut h).await.is_err() {
                            let _ = tx.send(Event::Closed { conn });
                            return;
                        }
                        let h = FrameHeader::decode(&h, u32::MAX, u32::MAX).unwrap();
                        let mut ctrl = vec![0u8; h.ctrl_len as usize];
                        let mut data = vec![0u8; h.data_len as usize];
                        if r.read_exact(&mut ctrl).await.is_err()
                            || r.read_exact(&mut data).await.is_err()
                        {
                            let _ = tx.send(Event::Closed { conn });
                            return;
                        }
                        let request: Request = ops::decode(&ctrl).unwrap();
                        let auto = match &request {
                            Request::Hello { .. } => Some(Reply::Welcome {
                                version: PROTOCOL_VERSION,
                                session_id: conn,
                                max_data_len: max_data,
                                server: "fake".into(),
                            }),
                            Request::DeviceQuery => Some(Reply::Device(DeviceInfo {
                                name: "fake gpu".into(),
                                executor: "cpu".into(),
                                ..DeviceInfo::default()
                            })),
                            // Answered at once, as the real backend's dispatcher does.
                            Request::Null if !mute.load(Ordering::Acquire) => Some(Reply::Done),
                            Request::Null => continue,
                            _ => None,
                        };
                        match auto {
                            Some(reply) => {
                                let b = frame(
                                    FrameKind::Reply,
                                    h.request_id,
                                    CuResult::SUCCESS,
                                    0,
                                    &reply,
                                    &[],
                                );
                                let _ = wtx.send(b);
                            }
                            None => {
                                let _ = tx.send(Event::Request {
                                    conn,
                                    id: h.request_id,
                                    flags: h.flags,
                                    request,
                                    data,
                                });
                            }
                        }
                    }
                });
            }
        });
        FakeBackend {
            addr,
            mute,
            events: Mutex::new(rx),
            writers,
        }
    }

    /// Stops (or resumes) answering liveness probes: a backend that holds its connections
    /// open and answers nothing.
    pub fn set_mute(&self, mute: bool) {
        self.mute.store(mute, Ordering::Release);
    }

    /// The next event, within `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Event> {
        self.events.lock().unwrap().recv_timeout(timeout).ok()
    }

    /// The next request (skipping nothing: a close first is an error).
    pub fn request(&self) -> (u64, u64, Request, Vec<u8>) {
        match self.next(Duration::from_secs(10)) {
            Some(Event::Request {
                conn,
                id,
                request,
                data,
                ..
            }) => (conn, id, request, data),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    pub fn send_raw(&self, conn: u64, bytes: Vec<u8>) {
        self.writers.lock().unwrap()[&conn].send(bytes).unwrap();
    }

    pub fn reply(&self, conn: u64, id: u64, status: CuResult, reply: &Reply, data: &[u8]) {
        self.reply_flags(conn, id, status, 0, reply, data);
    }

    pub fn reply_flags(
        &self,
        conn: u64,
        id: u64,
        status: CuResult,
        flags: u8,
        reply: &Reply,
        data: &[u8],
    ) {
        self.send_raw(
            conn,
            frame(FrameKind::Reply, id, status, flags, reply, data),
        );
    }

    /// Closes connection `conn` (as a crashed or restarted backend would).
    pub fn close(&self, conn: u64) {
        self.send_raw(conn, Vec::new());
    }
}
