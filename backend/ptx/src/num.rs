//! Typed arithmetic on register values. A register holds up to 64 bits; a value of a narrower
//! type lives in its low bits with the rest zero. Integer arithmetic wraps at the type's
//! width; float arithmetic is IEEE in the type's own precision (f32 is computed in f32).

use crate::ir::{AtomOp, BinOp, Cmp, Kind, Rnd, Ty, UnOp};

pub fn mask(bits: u8) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Keeps the type's bits.
pub fn norm(v: u64, t: Ty) -> u64 {
    match t.kind {
        Kind::Pred => u64::from(v != 0),
        _ => v & mask(t.bits),
    }
}

fn sext(v: u64, bits: u8) -> i64 {
    if bits >= 64 {
        v as i64
    } else {
        let s = 64 - u32::from(bits);
        ((v << s) as i64) >> s
    }
}

/// A loaded value as its register holds it (signed narrow loads are sign-extended).
pub fn load_ext(v: u64, t: Ty) -> u64 {
    match t.kind {
        Kind::S if t.bits < 32 => (sext(v, t.bits) as u64) & mask(32),
        _ => norm(v, t),
    }
}

fn f32v(v: u64) -> f32 {
    f32::from_bits(v as u32)
}

fn f64v(v: u64) -> f64 {
    f64::from_bits(v)
}

/// A float value of any float type, widened to f64.
pub fn getf(v: u64, t: Ty) -> f64 {
    match (t.kind, t.bits) {
        (Kind::F, 64) => f64v(v),
        (Kind::F, 32) => f64::from(f32v(v)),
        (Kind::F, 16) => f64::from(f16_to_f32(v as u16)),
        (Kind::Bf, _) => f64::from(f32::from_bits((v as u32 & 0xffff) << 16)),
        _ => 0.0,
    }
}

/// Stores an f64 as the float type `t` (rounding to nearest).
pub fn putf(x: f64, t: Ty) -> u64 {
    match (t.kind, t.bits) {
        (Kind::F, 64) => x.to_bits(),
        (Kind::F, 32) => u64::from((x as f32).to_bits()),
        (Kind::F, 16) => u64::from(f32_to_f16(x as f32)),
        (Kind::Bf, _) => u64::from(f32_to_bf16(x as f32)),
        _ => 0,
    }
}

pub fn f16_to_f32(h: u16) -> f32 {
    let s = u32::from(h >> 15) << 31;
    let e = u32::from((h >> 10) & 0x1f);
    let m = u32::from(h & 0x3ff);
    let bits = match (e, m) {
        (0, 0) => s,
        (0, m) => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut m = m;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            s | (e << 23) | ((m & 0x3ff) << 13)
        }
        (31, 0) => s | 0x7f80_0000,
        (31, m) => s | 0x7fc0_0000 | (m << 13),
        (e, m) => s | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

pub fn f32_to_f16(f: f32) -> u16 {
    let x = f.to_bits();
    let s = ((x >> 16) & 0x8000) as u16;
    let e = ((x >> 23) & 0xff) as i32;
    let m = x & 0x7f_ffff;
    if e == 255 {
        return s | 0x7c00 | if m != 0 { 0x200 } else { 0 };
    }
    let e16 = e - 127 + 15;
    if e16 >= 31 {
        return s | 0x7c00;
    }
    if e16 <= 0 {
        if e16 < -10 {
            return s;
        }
        let m = m | 0x80_0000;
        let shift = (14 - e16) as u32;
        let half = 1u32 << (shift - 1);
        let rest = m & ((1 << shift) - 1);
        let mut v = m >> shift;
        if rest > half || (rest == half && v & 1 == 1) {
            v += 1;
        }
        return s | v as u16;
    }
    let mut v = ((e16 as u32) << 10) | (m >> 13);
    let rest = m & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && v & 1 == 1) {
        v += 1;
    }
    s | v as u16
}

pub fn f32_to_bf16(f: f32) -> u16 {
    let x = f.to_bits();
    if f.is_nan() {
        return ((x >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((x >> 16) & 1);
    (x.wrapping_add(round) >> 16) as u16
}

fn int_bin(op: BinOp, t: Ty, a: u64, b: u64) -> u64 {
    let bits = t.bits;
    let signed = t.kind == Kind::S;
    let m = mask(bits);
    let (ua, ub) = (a & m, b & m);
    let (sa, sb) = (sext(ua, bits), sext(ub, bits));
    let r = match op {
        BinOp::Add => ua.wrapping_add(ub),
        BinOp::Sub => ua.wrapping_sub(ub),
        BinOp::MulLo => ua.wrapping_mul(ub),
        BinOp::MulHi => {
            if signed {
                ((i128::from(sa) * i128::from(sb)) >> bits) as u64
            } else {
                ((u128::from(ua) * u128::from(ub)) >> bits) as u64
            }
        }
        // Division by zero has no defined result on a GPU; give all ones, never trap.
        BinOp::Div => match (signed, ub) {
            (_, 0) => m,
            (true, _) => sa.wrapping_div(sb) as u64,
            (false, _) => ua / ub,
        },
        BinOp::Rem => match (signed, ub) {
            (_, 0) => ua,
            (true, _) => sa.wrapping_rem(sb) as u64,
            (false, _) => ua % ub,
        },
        BinOp::Min => {
            if signed {
                sa.min(sb) as u64
            } else {
                ua.min(ub)
            }
        }
        BinOp::Max => {
            if signed {
                sa.max(sb) as u64
            } else {
                ua.max(ub)
            }
        }
        BinOp::And => ua & ub,
        BinOp::Or => ua | ub,
        BinOp::Xor => ua ^ ub,
        BinOp::Shl => {
            let s = b & 0xffff_ffff;
            if s >= u64::from(bits) {
                0
            } else {
                ua << s
            }
        }
        BinOp::Shr => {
            let s = (b & 0xffff_ffff).min(u64::from(bits) - 1 + u64::from(!signed));
            if signed {
                (sa >> s.min(63)) as u64
            } else if s >= u64::from(bits) {
                0
            } else {
                ua >> s
            }
        }
        BinOp::Copysign => ua,
    };
    r & m
}

pub fn bin(op: BinOp, t: Ty, a: u64, b: u64) -> u64 {
    match t.kind {
        Kind::Pred => {
            let (x, y) = (a != 0, b != 0);
            u64::from(match op {
                BinOp::And => x && y,
                BinOp::Or => x || y,
                BinOp::Xor => x ^ y,
                _ => false,
            })
        }
        Kind::U | Kind::S => int_bin(op, t, a, b),
        _ if t.bits == 32 && t.kind == Kind::F => {
            let (x, y) = (f32v(a), f32v(b));
            let r = match op {
                BinOp::Add => x + y,
                BinOp::Sub => x - y,
                BinOp::MulLo => x * y,
                BinOp::Div => x / y,
                BinOp::Min => x.min(y),
                BinOp::Max => x.max(y),
                // copysign.f32 d, a, b: the magnitude of b with the sign of a.
                BinOp::Copysign => y.copysign(x),
                _ => f32::NAN,
            };
            u64::from(r.to_bits())
        }
        _ => {
            let (x, y) = (getf(a, t), getf(b, t));
            let r = match op {
                BinOp::Add => x + y,
                BinOp::Sub => x - y,
                BinOp::MulLo => x * y,
                BinOp::Div => x / y,
                BinOp::Min => x.min(y),
                BinOp::Max => x.max(y),
                BinOp::Copysign => y.copysign(x),
                _ => f64::NAN,
            };
            putf(r, t)
        }
    }
}

pub fn un(op: UnOp, t: Ty, a: u64) -> u64 {
    if t.kind == Kind::Pred {
        return u64::from(match op {
            UnOp::Not => a == 0,
            _ => a != 0,
        });
    }
    if t.is_float() {
        if t.bits == 32 && t.kind == Kind::F {
            let x = f32v(a);
            let r = match op {
                UnOp::Neg => -x,
                UnOp::Abs => x.abs(),
                UnOp::Sqrt => x.sqrt(),
                UnOp::Rsqrt => 1.0 / x.sqrt(),
                UnOp::Rcp => 1.0 / x,
                UnOp::Ex2 => x.exp2(),
                UnOp::Lg2 => x.log2(),
                UnOp::Sin => x.sin(),
                UnOp::Cos => x.cos(),
                UnOp::Tanh => x.tanh(),
                _ => return un_bits(op, t, a),
            };
            return u64::from(r.to_bits());
        }
        let x = getf(a, t);
        let r = match op {
            UnOp::Neg => -x,
            UnOp::Abs => x.abs(),
            UnOp::Sqrt => x.sqrt(),
            UnOp::Rsqrt => 1.0 / x.sqrt(),
            UnOp::Rcp => 1.0 / x,
            UnOp::Ex2 => x.exp2(),
            UnOp::Lg2 => x.log2(),
            UnOp::Sin => x.sin(),
            UnOp::Cos => x.cos(),
            UnOp::Tanh => x.tanh(),
            _ => return un_bits(op, t, a),
        };
        return putf(r, t);
    }
    un_bits(op, t, a)
}

fn un_bits(op: UnOp, t: Ty, a: u64) -> u64 {
    let bits = t.bits;
    let m = mask(bits);
    let v = a & m;
    match op {
        UnOp::Neg => v.wrapping_neg() & m,
        UnOp::Abs => (sext(v, bits).wrapping_abs() as u64) & m,
        UnOp::Not => !v & m,
        UnOp::Cnot => u64::from(v == 0),
        UnOp::Popc => u64::from(v.count_ones()),
        UnOp::Clz => u64::from(v.leading_zeros() - (64 - u32::from(bits))),
        UnOp::Brev => (v.reverse_bits() >> (64 - u32::from(bits))) & m,
        UnOp::Bfind => {
            let x = if t.kind == Kind::S && sext(v, bits) < 0 {
                !v & m
            } else {
                v
            };
            if x == 0 {
                0xffff_ffff
            } else {
                u64::from(63 - x.leading_zeros())
            }
        }
        _ => 0,
    }
}

pub fn fma(t: Ty, a: u64, b: u64, c: u64) -> u64 {
    match (t.kind, t.bits) {
        (Kind::F, 32) => u64::from(f32v(a).mul_add(f32v(b), f32v(c)).to_bits()),
        (Kind::F, 64) => f64v(a).mul_add(f64v(b), f64v(c)).to_bits(),
        _ => putf(getf(a, t).mul_add(getf(b, t), getf(c, t)), t),
    }
}

pub fn mul_wide(t: Ty, a: u64, b: u64) -> u64 {
    let bits = t.bits;
    if t.kind == Kind::S {
        (sext(a & mask(bits), bits).wrapping_mul(sext(b & mask(bits), bits)) as u64)
            & mask(bits * 2)
    } else {
        ((a & mask(bits)).wrapping_mul(b & mask(bits))) & mask(bits * 2)
    }
}

pub fn compare(c: Cmp, t: Ty, a: u64, b: u64) -> bool {
    if t.is_float() {
        let (x, y) = (getf(a, t), getf(b, t));
        let nan = x.is_nan() || y.is_nan();
        return match c {
            Cmp::Eq => !nan && x == y,
            Cmp::Ne => !nan && x != y,
            Cmp::Lt => !nan && x < y,
            Cmp::Le => !nan && x <= y,
            Cmp::Gt => !nan && x > y,
            Cmp::Ge => !nan && x >= y,
            Cmp::Equ => nan || x == y,
            Cmp::Neu => nan || x != y,
            Cmp::Ltu => nan || x < y,
            Cmp::Leu => nan || x <= y,
            Cmp::Gtu => nan || x > y,
            Cmp::Geu => nan || x >= y,
            Cmp::Num => !nan,
            Cmp::Nan => nan,
            _ => false,
        };
    }
    let bits = t.bits;
    let (ua, ub) = (a & mask(bits), b & mask(bits));
    let (sa, sb) = (sext(ua, bits), sext(ub, bits));
    let signed = t.kind == Kind::S;
    match c {
        Cmp::Eq => ua == ub,
        Cmp::Ne => ua != ub,
        Cmp::Lt => {
            if signed {
                sa < sb
            } else {
                ua < ub
            }
        }
        Cmp::Le => {
            if signed {
                sa <= sb
            } else {
                ua <= ub
            }
        }
        Cmp::Gt => {
            if signed {
                sa > sb
            } else {
                ua > ub
            }
        }
        Cmp::Ge => {
            if signed {
                sa >= sb
            } else {
                ua >= ub
            }
        }
        Cmp::Lo => ua < ub,
        Cmp::Ls => ua <= ub,
        Cmp::Hi => ua > ub,
        Cmp::Hs => ua >= ub,
        _ => false,
    }
}

fn round(x: f64, r: Rnd) -> f64 {
    match r {
        Rnd::Rzi | Rnd::Rz => x.trunc(),
        Rnd::Rmi | Rnd::Rm => x.floor(),
        Rnd::Rpi | Rnd::Rp => x.ceil(),
        _ => x.round_ties_even(),
    }
}

pub fn cvt(d: Ty, s: Ty, r: Rnd, sat: bool, a: u64) -> u64 {
    match (s.is_float(), d.is_float()) {
        (false, false) => {
            let v: i128 = if s.kind == Kind::S {
                i128::from(sext(a & mask(s.bits), s.bits))
            } else {
                i128::from(a & mask(s.bits))
            };
            if sat {
                let (lo, hi) = int_range(d);
                return (v.clamp(lo, hi) as u64) & mask(d.bits);
            }
            // Widening sign- or zero-extends (by the source's signedness); narrowing truncates.
            (v as u64) & mask(d.bits)
        }
        (false, true) => {
            let v = if s.kind == Kind::S {
                sext(a & mask(s.bits), s.bits) as f64
            } else {
                (a & mask(s.bits)) as f64
            };
            if d.bits == 32 && d.kind == Kind::F {
                let f = if s.kind == Kind::S {
                    sext(a & mask(s.bits), s.bits) as f32
                } else {
                    (a & mask(s.bits)) as f32
                };
                return u64::from(f.to_bits());
            }
            putf(v, d)
        }
        (true, false) => {
            let x = getf(a, s);
            if x.is_nan() {
                return 0;
            }
            let v = round(x, r);
            let (lo, hi) = int_range(d);
            let i = if v <= lo as f64 {
                lo
            } else if v >= hi as f64 {
                hi
            } else {
                v as i128
            };
            (i as u64) & mask(d.bits)
        }
        (true, true) => {
            let mut x = getf(a, s);
            if matches!(r, Rnd::Rni | Rnd::Rzi | Rnd::Rmi | Rnd::Rpi) {
                x = round(x, r);
            }
            if sat {
                x = if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
            }
            if d.kind == Kind::F && d.bits == 32 && s.kind == Kind::F && s.bits == 32 {
                return u64::from((x as f32).to_bits());
            }
            putf(x, d)
        }
    }
}

fn int_range(t: Ty) -> (i128, i128) {
    let b = u32::from(t.bits);
    if t.kind == Kind::S {
        (-(1i128 << (b - 1)), (1i128 << (b - 1)) - 1)
    } else {
        (0, (1i128 << b) - 1)
    }
}

pub fn atom(op: AtomOp, t: Ty, old: u64, b: u64, c: u64) -> u64 {
    let m = mask(t.bits);
    match op {
        AtomOp::Add => bin(BinOp::Add, t, old, b),
        AtomOp::Min => bin(BinOp::Min, t, old, b),
        AtomOp::Max => bin(BinOp::Max, t, old, b),
        AtomOp::And => (old & b) & m,
        AtomOp::Or => (old | b) & m,
        AtomOp::Xor => (old ^ b) & m,
        AtomOp::Exch => b & m,
        AtomOp::Cas => {
            if old & m == b & m {
                c & m
            } else {
                old & m
            }
        }
        AtomOp::Inc => {
            if old & m >= b & m {
                0
            } else {
                (old + 1) & m
            }
        }
        AtomOp::Dec => {
            if old & m == 0 || old & m > b & m {
                b & m
            } else {
                (old - 1) & m
            }
        }
    }
}

pub fn bfe(t: Ty, a: u64, pos: u64, len: u64) -> u64 {
    let bits = u64::from(t.bits);
    let pos = pos & 0xff;
    let len = len & 0xff;
    let v = a & mask(t.bits);
    if len == 0 {
        return 0;
    }
    let field = if pos >= bits {
        0
    } else {
        (v >> pos) & mask(len.min(64) as u8)
    };
    if t.kind == Kind::S {
        let sbit = (pos + len - 1).min(bits - 1);
        let sign = (v >> sbit) & 1 == 1;
        let mut r = field;
        if sign && len < bits {
            r |= !mask(len as u8);
        }
        r & mask(t.bits)
    } else {
        field
    }
}

pub fn bfi(t: Ty, a: u64, b: u64, pos: u64, len: u64) -> u64 {
    let bits = u64::from(t.bits);
    let pos = pos & 0xff;
    let len = (len & 0xff).min(bits);
    if pos >= bits || len == 0 {
        return b & mask(t.bits);
    }
    let f = mask(len as u8) << pos;
    ((b & !f) | ((a << pos) & f)) & mask(t.bits)
}

pub fn prmt(a: u64, b: u64, c: u64) -> u64 {
    let bytes = ((b & 0xffff_ffff) << 32) | (a & 0xffff_ffff);
    let mut r = 0u64;
    for i in 0..4 {
        let sel = (c >> (i * 4)) & 0xf;
        let byte = (bytes >> ((sel & 7) * 8)) & 0xff;
        let byte = if sel & 8 != 0 {
            if byte & 0x80 != 0 {
                0xff
            } else {
                0
            }
        } else {
            byte
        };
        r |= byte << (i * 8);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const S32: Ty = Ty {
        kind: Kind::S,
        bits: 32,
    };
    const U32: Ty = Ty {
        kind: Kind::U,
        bits: 32,
    };
    const F32: Ty = Ty {
        kind: Kind::F,
        bits: 32,
    };

    #[test]
    fn integer_arithmetic_wraps_and_shifts_saturate() {
        assert_eq!(bin(BinOp::Add, S32, 0x7fff_ffff, 1), 0x8000_0000);
        assert_eq!(bin(BinOp::Shr, S32, 0x8000_0000, 40), 0xffff_ffff);
        assert_eq!(bin(BinOp::Shr, U32, 0x8000_0000, 40), 0);
        assert_eq!(bin(BinOp::Shl, U32, 1, 32), 0);
        assert_eq!(
            bin(BinOp::Div, S32, (-7i32) as u32 as u64, 2),
            (-3i32) as u32 as u64
        );
        assert_eq!(bin(BinOp::Div, U32, 5, 0), 0xffff_ffff);
        assert_eq!(
            bin(BinOp::MulHi, U32, 0xffff_ffff, 0xffff_ffff),
            0xffff_fffe
        );
        assert_eq!(mul_wide(S32, (-2i32) as u32 as u64, 3), (-6i64) as u64);
    }

    #[test]
    fn conversions_round_saturate_and_sign_extend() {
        let s64 = Ty {
            kind: Kind::S,
            bits: 64,
        };
        assert_eq!(cvt(s64, S32, Rnd::None, false, 0xffff_ffff), u64::MAX);
        assert_eq!(
            cvt(S32, F32, Rnd::Rzi, false, u64::from((-2.7f32).to_bits())),
            (-2i32) as u32 as u64
        );
        assert_eq!(
            cvt(S32, F32, Rnd::Rni, false, u64::from(2.5f32.to_bits())),
            2
        );
        assert_eq!(
            cvt(S32, F32, Rnd::Rzi, false, u64::from(1e20f32.to_bits())),
            0x7fff_ffff
        );
        assert_eq!(
            cvt(F32, F32, Rnd::None, true, u64::from(3.0f32.to_bits())),
            u64::from(1f32.to_bits())
        );
        let f16 = Ty {
            kind: Kind::F,
            bits: 16,
        };
        assert_eq!(
            cvt(f16, F32, Rnd::Rn, false, u64::from(1.5f32.to_bits())),
            0x3e00
        );
        assert_eq!(
            cvt(F32, f16, Rnd::None, false, 0x3e00),
            u64::from(1.5f32.to_bits())
        );
    }

    #[test]
    fn half_precision_round_trips_and_handles_specials() {
        for h in [0u16, 0x3c00, 0xbc00, 0x7bff, 0x0001, 0x03ff, 0x7c00, 0xfc00] {
            assert_eq!(f32_to_f16(f16_to_f32(h)), h, "{h:#x}");
        }
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f32_to_f16(1e10), 0x7c00);
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
    }

    #[test]
    fn float_compares_follow_ieee_ordering() {
        let nan = u64::from(f32::NAN.to_bits());
        let one = u64::from(1f32.to_bits());
        assert!(!compare(Cmp::Lt, F32, nan, one));
        assert!(compare(Cmp::Ltu, F32, nan, one));
        assert!(compare(Cmp::Lt, S32, 0xffff_ffff, 0));
        assert!(!compare(Cmp::Lo, S32, 0xffff_ffff, 0));
    }

    #[test]
    fn bit_field_and_permute() {
        assert_eq!(bfe(U32, 0xabcd_1234, 8, 8), 0x12);
        assert_eq!(bfe(S32, 0x0000_8000, 12, 4), 0xffff_fff8);
        assert_eq!(bfi(U32, 0xf, 0, 4, 4), 0xf0);
        assert_eq!(prmt(0x4433_2211, 0x8877_6655, 0x3210), 0x4433_2211);
        assert_eq!(prmt(0x4433_2211, 0x8877_6655, 0x7654), 0x8877_6655);
    }
}
