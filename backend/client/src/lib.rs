//! Async client for the netgpu wire protocol, used by `netgpu-vdev` and the tests.
//!
//! A [`Client`] is one backend session. It is cheap to clone and may be used from many tasks
//! at once: requests are written under a lock in the order callers reach it, and a reader task
//! hands each reply to the caller waiting for it. Methods are named after the CUDA driver API
//! calls they serve.
//!
//! Stream-ordered work (`*_async` copies and memsets, [`Client::launch_kernel`],
//! [`Client::event_record`]) is sent without waiting for a reply and buffered until the next
//! call that waits, an explicit [`Client::flush`], or until the buffer fills; its errors come
//! back from the next synchronising call, as in CUDA.

mod conn;
mod error;
pub mod liveness;

pub use conn::{Client, ClientOptions};
pub use error::{ClientError, Result};
pub use liveness::Liveness;
pub use netgpu_proto::cuda::CuResult;
pub use netgpu_proto::wire::ops::{DevPtr, DeviceInfo, FunctionInfo, Handle, ParamInfo};
