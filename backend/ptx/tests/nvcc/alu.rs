//! Integer and float instructions nvcc emits from intrinsics and inline assembly rather
//! than plain C (hand-written PTX, one output each): 128-bit arithmetic through carry
//! chains, lop3, dp4a/dp2a, sad, mul24/mad24, testp, slct, copysign, set.

use netgpu_ptx::Module;

use crate::util::*;

const ALU: &str = r#"
.version 8.0
.target sm_75
.address_size 64
.visible .entry alu(.param .u64 in, .param .u64 out)
{
    .reg .b64 %rd<12>;
    .reg .b32 %r<40>;
    .reg .f32 %f<8>;
    .reg .pred %p<8>;
    ld.param.u64 %rd1, [in];
    ld.param.u64 %rd2, [out];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd3, %r1, 8;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.v2.u32 {%r2, %r3}, [%rd4];
    mul.wide.u32 %rd3, %r1, 64;
    add.s64 %rd5, %rd2, %rd3;
    // 64-bit add of {r2,r3} + {r3,r2} in 32-bit halves, and a 64-bit subtract.
    add.cc.u32 %r4, %r2, %r3;
    addc.u32 %r5, %r3, %r2;
    sub.cc.u32 %r6, %r2, %r3;
    subc.u32 %r7, %r3, %r2;
    st.global.v4.u32 [%rd5], {%r4, %r5, %r6, %r7};
    // 64x64 high word through mad.lo.cc / madc.hi chains: (r2 * r3) + (r3 * r2) carry.
    mad.lo.cc.u32 %r8, %r2, %r3, %r2;
    madc.hi.u32 %r9, %r2, %r3, 0;
    lop3.b32 %r10, %r2, %r3, %r1, 0xe8;
    dp4a.s32.u32 %r11, %r2, %r3, %r1;
    dp2a.lo.u32.s32 %r12, %r2, %r3, 7;
    st.global.v4.u32 [%rd5+16], {%r8, %r9, %r10, %r11};
    sad.u32 %r13, %r2, %r3, %r1;
    mul24.lo.s32 %r14, %r2, %r3;
    mad24.hi.u32 %r15, %r2, %r3, %r1;
    st.global.v4.u32 [%rd5+32], {%r12, %r13, %r14, %r15};
    mov.b32 %f1, %r2;
    testp.finite.f32 %p1, %f1;
    testp.subnormal.f32 %p2, %f1;
    testp.notanumber.f32 %p3, %f1;
    selp.u32 %r16, 1, 0, %p1;
    selp.u32 %r17, 2, 0, %p2;
    selp.u32 %r18, 4, 0, %p3;
    or.b32 %r19, %r16, %r17;
    or.b32 %r19, %r19, %r18;
    mov.b32 %f2, %r3;
    slct.u32.f32 %r20, %r2, %r3, %f2;
    copysign.f32 %f3, %f2, %f1;
    mov.b32 %r21, %f3;
    set.lt.u32.s32 %r22, %r2, %r3;
    st.global.v4.u32 [%rd5+48], {%r19, %r20, %r21, %r22};
    ret;
}
"#;

#[test]
fn carry_chains_logic_dot_products_and_float_tests() {
    let m = Module::load(ALU).unwrap();
    let n = 256usize;
    let mut r = Rng(91);
    let mut pairs: Vec<[u32; 2]> = (0..n)
        .map(|_| [r.next() ^ r.next() << 16, r.next() ^ r.next() << 15])
        .collect();
    pairs[0] = [0xffff_ffff, 1];
    pairs[1] = [1, 0x7f80_0000]; // a subnormal, +inf
    pairs[2] = [0x7fc0_0000, 0x8000_0000]; // NaN, -0
    let gpu = Gpu::new();
    let din = gpu.upload(&pairs);
    let out = gpu.zeros(n * 64);
    Launch::new(&m, "alu", 1, n as u32)
        .run(&gpu, &[&u64b(din), &u64b(out)])
        .unwrap();
    let got: Vec<u32> = gpu.download(out, n * 16);
    for t in 0..n {
        let [a, b] = pairs[t];
        let tt = t as u32;
        let x = (u64::from(b) << 32) | u64::from(a);
        let y = (u64::from(a) << 32) | u64::from(b);
        let sum = x.wrapping_add(y);
        let diff = x.wrapping_sub(y);
        let p = u64::from(a) * u64::from(b);
        let lo = (p as u32).wrapping_add(a);
        let carry = u32::from((p as u32).checked_add(a).is_none());
        let hi = ((p >> 32) as u32).wrapping_add(carry);
        let lop = (a & b) | (a & tt) | (b & tt); // 0xe8: majority
        let bytes = |v: u32, s: bool| -> [i32; 4] {
            let b = v.to_le_bytes();
            b.map(|x| if s { i32::from(x as i8) } else { i32::from(x) })
        };
        // dp4a.s32.u32: a's bytes signed, b's unsigned.
        let (ab, bb) = (bytes(a, true), bytes(b, false));
        let dp4 = (0..4).fold(tt as i32, |s, k| s.wrapping_add(ab[k] * bb[k]));
        let h = |v: u32, k: usize, s: bool| -> i32 {
            let x = (v >> (16 * k)) as u16;
            if s {
                i32::from(x as i16)
            } else {
                i32::from(x)
            }
        };
        let dp2 = (0..2).fold(7i32, |s, k| {
            s.wrapping_add(h(a, k, false) * bytes(b, true)[k])
        });
        let s24 = |v: u32| ((v << 8) as i32) >> 8;
        let mul24 = s24(a).wrapping_mul(s24(b)) as u32;
        let mad24 =
            (((u64::from(a & 0xff_ffff) * u64::from(b & 0xff_ffff)) >> 16) as u32).wrapping_add(tt);
        let fa = f32::from_bits(a);
        let flags = u32::from(fa.is_finite())
            | u32::from(fa.is_subnormal()) << 1
            | u32::from(fa.is_nan()) << 2;
        let fb = f32::from_bits(b);
        // slct: c >= 0 selects a (-0 counts as >= 0; NaN does not).
        let slct = if fb >= 0.0 { a } else { b };
        let want = [
            sum as u32,
            (sum >> 32) as u32,
            diff as u32,
            (diff >> 32) as u32,
            lo,
            hi,
            lop,
            dp4 as u32,
            dp2 as u32,
            tt.wrapping_add(a.abs_diff(b)),
            mul24,
            mad24,
            flags,
            slct,
            // copysign d, a(=b), b(=a): a's magnitude with b's sign.
            (a & 0x7fff_ffff) | (b & 0x8000_0000),
            if (a as i32) < (b as i32) { u32::MAX } else { 0 },
        ];
        assert_eq!(
            &got[t * 16..t * 16 + 16],
            &want,
            "thread {t}: a={a:#x} b={b:#x}"
        );
    }
}
