//! Small PTX kernels for the backend's own tests: each runs in one thread and makes time,
//! order or concurrency observable in device memory.
//!
//! - `spin(ns)`: busy for `ns` nanoseconds (by `%globaltimer`).
//! - `spin_store(ns, ptr, v)`: busy, then `*ptr = v`.
//! - `mad(ptr, v)`: `*ptr = *ptr * 10 + v` (so a sequence of launches leaves its order in the
//!   digits).
//! - `copy(src, dst)`: `*dst = *src`.
//! - `wait_flag(flag, out, timeout_ns)`: waits until `*flag != 0`, then `*out = 1`; or, after
//!   `timeout_ns`, `*out = 2`. Another kernel that runs *at the same time* can release it.
//! - `set_flag(flag)`: `*flag = 1`.
//! - `inc(ptr)`: `*ptr += 1`.
#![allow(dead_code)]

pub const PTX: &str = r#"
.version 7.0
.target sm_50
.address_size 64

.visible .entry spin(.param .u64 ns)
{
    .reg .u64 %t0, %t1, %d, %n;
    .reg .pred %p;
    ld.param.u64 %n, [ns];
    mov.u64 %t0, %globaltimer;
LOOP:
    mov.u64 %t1, %globaltimer;
    sub.u64 %d, %t1, %t0;
    setp.lt.u64 %p, %d, %n;
    @%p bra LOOP;
    ret;
}

.visible .entry spin_store(.param .u64 ns, .param .u64 ptr, .param .u32 v)
{
    .reg .u64 %t0, %t1, %d, %n, %a;
    .reg .u32 %v;
    .reg .pred %p;
    ld.param.u64 %n, [ns];
    ld.param.u64 %a, [ptr];
    ld.param.u32 %v, [v];
    mov.u64 %t0, %globaltimer;
LOOP:
    mov.u64 %t1, %globaltimer;
    sub.u64 %d, %t1, %t0;
    setp.lt.u64 %p, %d, %n;
    @%p bra LOOP;
    st.global.u32 [%a], %v;
    ret;
}

.visible .entry mad(.param .u64 ptr, .param .u32 v)
{
    .reg .u64 %a;
    .reg .u32 %x, %v;
    ld.param.u64 %a, [ptr];
    ld.param.u32 %v, [v];
    ld.global.u32 %x, [%a];
    mad.lo.u32 %x, %x, 10, %v;
    st.global.u32 [%a], %x;
    ret;
}

.visible .entry copy(.param .u64 src, .param .u64 dst)
{
    .reg .u64 %s, %d;
    .reg .u32 %x;
    ld.param.u64 %s, [src];
    ld.param.u64 %d, [dst];
    ld.global.u32 %x, [%s];
    st.global.u32 [%d], %x;
    ret;
}

.visible .entry wait_flag(.param .u64 flag, .param .u64 out, .param .u64 timeout)
{
    .reg .u64 %f, %o, %t0, %t1, %d, %n;
    .reg .u32 %x;
    .reg .pred %p, %q;
    ld.param.u64 %f, [flag];
    ld.param.u64 %o, [out];
    ld.param.u64 %n, [timeout];
    mov.u64 %t0, %globaltimer;
LOOP:
    ld.volatile.global.u32 %x, [%f];
    setp.ne.u32 %p, %x, 0;
    @%p bra SEEN;
    mov.u64 %t1, %globaltimer;
    sub.u64 %d, %t1, %t0;
    setp.lt.u64 %q, %d, %n;
    @%q bra LOOP;
    st.global.u32 [%o], 2;
    ret;
SEEN:
    st.global.u32 [%o], 1;
    ret;
}

.visible .entry set_flag(.param .u64 flag)
{
    .reg .u64 %f;
    ld.param.u64 %f, [flag];
    st.volatile.global.u32 [%f], 1;
    ret;
}

.visible .entry inc(.param .u64 ptr)
{
    .reg .u64 %a;
    .reg .u32 %x;
    ld.param.u64 %a, [ptr];
    ld.global.u32 %x, [%a];
    add.u32 %x, %x, 1;
    st.global.u32 [%a], %x;
    ret;
}
"#;

/// A launch's packed parameters from 8- and 4-byte values in order (each at its natural
/// alignment, as the driver API packs them).
pub fn params(args: &[Arg]) -> Vec<u8> {
    let mut out = Vec::new();
    for a in args {
        match a {
            Arg::U64(v) => {
                while out.len() % 8 != 0 {
                    out.push(0);
                }
                out.extend_from_slice(&v.to_le_bytes());
            }
            Arg::U32(v) => {
                while out.len() % 4 != 0 {
                    out.push(0);
                }
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    out
}

#[derive(Clone, Copy)]
pub enum Arg {
    U64(u64),
    U32(u32),
}

pub const MS: u64 = 1_000_000;

/// A loaded copy of the test kernels in one session.
pub struct Kernels {
    pub module: u64,
    pub spin: u64,
    pub spin_store: u64,
    pub mad: u64,
    pub copy: u64,
    pub wait_flag: u64,
    pub set_flag: u64,
    pub inc: u64,
}

impl Kernels {
    pub async fn load(c: &netgpu_client::Client, ctx: u64) -> Kernels {
        let module = c
            .module_load(ctx, PTX.as_bytes())
            .await
            .expect("test kernels load");
        let f = |n: &'static str| async move {
            c.module_get_function(module, n)
                .await
                .unwrap_or_else(|e| panic!("{n}: {e}"))
                .handle
        };
        Kernels {
            module,
            spin: f("spin").await,
            spin_store: f("spin_store").await,
            mad: f("mad").await,
            copy: f("copy").await,
            wait_flag: f("wait_flag").await,
            set_flag: f("set_flag").await,
            inc: f("inc").await,
        }
    }
}

/// Launches `func` with one thread on `stream`.
pub async fn launch1(c: &netgpu_client::Client, func: u64, stream: u64, args: &[Arg]) {
    c.launch_kernel(func, [1, 1, 1], [1, 1, 1], 0, stream, &params(args))
        .await
        .expect("launch");
}

pub async fn read_u32(c: &netgpu_client::Client, ctx: u64, ptr: u64) -> u32 {
    let b = c.memcpy_dtoh(ctx, ptr, 4, 0).await.expect("read");
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
