//! Block barriers beyond __syncthreads (hand-written PTX, as `__syncthreads_count/and/or`
//! and producer/consumer named barriers compile): bar.red.{popc,and,or}, bar.arrive with
//! bar.sync on a counted named barrier.

use netgpu_ptx::Module;

use crate::util::*;

const BARRIERS: &str = r#"
.version 8.0
.target sm_75
.address_size 64
.visible .entry reductions(.param .u64 in, .param .u64 out)
{
    .reg .b64 %rd<6>;
    .reg .b32 %r<8>;
    .reg .pred %p<6>;
    ld.param.u64 %rd1, [in];
    ld.param.u64 %rd2, [out];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd3, %r1, 4;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.u32 %r2, [%rd4];
    setp.ne.u32 %p1, %r2, 0;
    bar.red.popc.u32 %r3, 0, %p1;
    bar.red.and.pred %p2, 0, %p1;
    bar.red.or.pred %p3, 0, !%p1;
    selp.u32 %r4, 1, 0, %p2;
    selp.u32 %r5, 1, 0, %p3;
    mul.wide.u32 %rd3, %r1, 12;
    add.s64 %rd5, %rd2, %rd3;
    st.global.u32 [%rd5], %r3;
    st.global.u32 [%rd5+4], %r4;
    st.global.u32 [%rd5+8], %r5;
    ret;
}
.visible .entry producer_consumer(.param .u64 out)
{
    .shared .align 4 .b8 buf[256];
    .reg .b64 %rd<4>;
    .reg .b32 %r<8>;
    .reg .pred %p<3>;
    ld.param.u64 %rd1, [out];
    mov.u32 %r1, %tid.x;
    mov.u32 %r6, buf;
    setp.ge.u32 %p1, %r1, 64;
    @%p1 bra $L_consumer;
    // Producers (threads 0..63): fill, then arrive without waiting.
    mul.lo.u32 %r2, %r1, 7;
    shl.b32 %r3, %r1, 2;
    add.u32 %r4, %r6, %r3;
    st.shared.u32 [%r4], %r2;
    bar.arrive 1, 128;
    bra $L_join;
$L_consumer:
    // Consumers (threads 64..127): wait for the 128 arrivals, then read.
    bar.sync 1, 128;
    sub.u32 %r5, %r1, 64;
    shl.b32 %r3, %r5, 2;
    add.u32 %r4, %r6, %r3;
    ld.shared.u32 %r2, [%r4];
    mul.wide.u32 %rd2, %r5, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r2;
$L_join:
    // Everyone meets again: the consumers' counted barrier must not have waited for the
    // producers to arrive here (they would never come: deadlock).
    bar.sync 2;
    ret;
}
"#;

#[test]
fn barrier_reductions_count_and_combine_predicates() {
    let m = Module::load(BARRIERS).unwrap();
    for (threads, pattern) in [(128usize, 3usize), (96, 1), (256, 1000)] {
        let input: Vec<u32> = (0..threads).map(|t| u32::from(t % pattern != 0)).collect();
        let gpu = Gpu::new();
        let din = gpu.upload(&input);
        let out = gpu.zeros(threads * 12);
        Launch::new(&m, "reductions", 1, threads as u32)
            .run(&gpu, &[&u64b(din), &u64b(out)])
            .unwrap();
        let popc = input.iter().filter(|&&v| v != 0).count() as u32;
        let all = u32::from(popc == threads as u32);
        let any_zero = u32::from(popc < threads as u32);
        let got: Vec<u32> = gpu.download(out, threads * 3);
        for t in 0..threads {
            assert_eq!(
                &got[t * 3..t * 3 + 3],
                &[popc, all, any_zero],
                "thread {t} of {threads}"
            );
        }
    }
}

#[test]
fn named_barrier_with_arrivals_hands_data_to_consumers() {
    let m = Module::load(BARRIERS).unwrap();
    let gpu = Gpu::new();
    let out = gpu.zeros(64 * 4);
    Launch::new(&m, "producer_consumer", 3, 128)
        .run(&gpu, &[&u64b(out)])
        .unwrap();
    let got: Vec<u32> = gpu.download(out, 64);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(*g, i as u32 * 7);
    }
}
