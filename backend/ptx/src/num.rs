//! Typed arithmetic on register values. A register holds up to 64 bits; a value of a narrower
//! type lives in its low bits with the rest zero. Integer arithmetic wraps at the type's
//! width. Float arithmetic is IEEE in the type's own precision, in every rounding mode:
//! f32 round-to-nearest is computed natively; every other case computes the result in f64
//! together with the sign of its rounding error (exact by error-free transformations), then
//! rounds that once to the target format, so no result is double-rounded. The one
//! exception: f64 `fma` in a directed rounding mode is rounded to nearest.

use crate::ir::{
    AtomOp, BinOp, CarryOp, Cmp, FMode, Kind, PrmtMode, ReduxOp, Rnd, TestpKind, Ty, UnOp,
};

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

pub fn sext(v: u64, bits: u8) -> i64 {
    if bits >= 64 {
        v as i64
    } else {
        let s = 64 - u32::from(bits);
        ((v << s) as i64) >> s
    }
}

/// A loaded or converted value as a register of `reg_bits` holds it: a signed value
/// narrower than the register is sign-extended to its width, others zero-extended.
pub fn load_ext(v: u64, t: Ty, reg_bits: u8) -> u64 {
    match t.kind {
        Kind::S if t.bits < reg_bits => (sext(v, t.bits) as u64) & mask(reg_bits),
        _ => norm(v, t),
    }
}

fn f32v(v: u64) -> f32 {
    f32::from_bits(v as u32)
}

fn f64v(v: u64) -> f64 {
    f64::from_bits(v)
}

// ---------------------------------------------------------------------------------------
// Float formats and rounding.

/// A binary float format narrower than f64: explicit mantissa bits and exponent bits.
#[derive(Clone, Copy)]
struct Fmt {
    mant: i32,
    exp: i32,
}

const F16: Fmt = Fmt { mant: 10, exp: 5 };
const BF16: Fmt = Fmt { mant: 7, exp: 8 };
const F32: Fmt = Fmt { mant: 23, exp: 8 };

impl Fmt {
    fn bias(self) -> i32 {
        (1 << (self.exp - 1)) - 1
    }
    /// Exponent of the smallest normal number.
    fn emin(self) -> i32 {
        1 - self.bias()
    }
    fn emax(self) -> i32 {
        self.bias()
    }
    fn max_finite(self) -> f64 {
        (2.0 - 2f64.powi(-self.mant)) * 2f64.powi(self.emax())
    }
    /// Bits of an exactly representable value (sign, exponent, mantissa).
    fn encode(self, v: f64) -> u64 {
        let sign = u64::from(v.is_sign_negative()) << (self.mant + self.exp);
        let a = v.abs();
        if a.is_nan() {
            return ((1u64 << (self.exp + self.mant)) - 1) | sign | (1 << (self.mant - 1));
        }
        if a.is_infinite() {
            return sign | (((1u64 << self.exp) - 1) << self.mant);
        }
        if a == 0.0 {
            return sign;
        }
        let e = a.log2().floor() as i32;
        // log2 may be off by one at the boundaries.
        let e = if 2f64.powi(e) > a {
            e - 1
        } else if 2f64.powi(e + 1) <= a {
            e + 1
        } else {
            e
        };
        if e < self.emin() {
            let m = (a / 2f64.powi(self.emin() - self.mant)) as u64;
            sign | m
        } else {
            let m = ((a / 2f64.powi(e - self.mant)) as u64) & ((1 << self.mant) - 1);
            sign | (((e + self.bias()) as u64) << self.mant) | m
        }
    }
}

/// Rounds `x + tiny * err` (the exact value: `x` is it, or its f64 rounding to nearest,
/// and `err` the sign of what `x` is missing) to `fmt` with rounding `r`; returns the bits.
fn round_to(fmt: Fmt, x: f64, err: i8, r: Rnd) -> u64 {
    if x.is_nan() {
        return fmt.encode(f64::NAN);
    }
    if x.is_infinite() || x == 0.0 {
        return fmt.encode(x);
    }
    let neg = x < 0.0;
    let a = x.abs();
    // Sign of |exact| - |x|.
    let e = if neg { -err } else { err };
    // Whether rounding goes up in magnitude.
    let (to_inf_mag, nearest) = match r {
        Rnd::Rz | Rnd::Rzi => (false, false),
        Rnd::Rp | Rnd::Rpi => (!neg, false),
        Rnd::Rm | Rnd::Rmi => (neg, false),
        _ => (false, true),
    };
    let bits = a.to_bits();
    let ex = ((bits >> 52) & 0x7ff) as i32;
    let (m, e2) = if ex == 0 {
        (bits & ((1 << 52) - 1), -1074)
    } else {
        ((bits & ((1 << 52) - 1)) | (1 << 52), ex - 1075)
    };
    // a = m * 2^e2. The quantum of the target at a's magnitude:
    let top = 63 - m.leading_zeros() as i32 + e2; // floor(log2(a))
    let q = (top.max(fmt.emin())) - fmt.mant;
    let (mut n, rem, half_cmp): (u64, bool, std::cmp::Ordering) = if e2 >= q {
        (m << (e2 - q), false, std::cmp::Ordering::Less)
    } else {
        let s = (q - e2) as u32;
        if s >= 64 {
            (0, true, std::cmp::Ordering::Less)
        } else {
            let n = m >> s;
            let r = m & ((1u64 << s) - 1);
            let half = 1u64 << (s - 1);
            let cmp = r.cmp(&half);
            (n, r != 0, cmp)
        }
    };
    use std::cmp::Ordering::*;
    if nearest {
        let up = match (rem, half_cmp) {
            (false, _) => false,
            (true, Greater) => true,
            (true, Less) => false,
            (true, Equal) => match e {
                1.. => true,
                ..=-1 => false,
                0 => n & 1 == 1,
            },
        };
        if up {
            n += 1;
        }
    } else if to_inf_mag {
        if rem || e > 0 {
            n += 1;
        }
    } else if !rem && e < 0 {
        // Exactly on a grid point but the exact value is slightly smaller.
        n = n.saturating_sub(1);
    }
    let v = n as f64 * 2f64.powi(q);
    let v = if v > fmt.max_finite() {
        if nearest || to_inf_mag {
            f64::INFINITY
        } else {
            fmt.max_finite()
        }
    } else {
        v
    };
    fmt.encode(if neg { -v } else { v })
}

/// The next f64 above `x` (`f64::next_up`, which is newer than this crate's MSRV).
fn next_up(x: f64) -> f64 {
    if x.is_nan() || x == f64::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f64::from_bits(1);
    }
    let b = x.to_bits();
    f64::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

fn next_down(x: f64) -> f64 {
    -next_up(-x)
}

/// Rounds `x + tiny * err` to f64: `x` is the exact value's rounding to nearest.
fn round_f64(x: f64, err: i8, r: Rnd) -> f64 {
    if x.is_nan() || err == 0 {
        return x;
    }
    match r {
        Rnd::Rz | Rnd::Rzi => {
            if x.is_infinite() {
                f64::MAX.copysign(x)
            } else if x > 0.0 && err < 0 {
                next_down(x)
            } else if x < 0.0 && err > 0 {
                next_up(x)
            } else {
                x
            }
        }
        Rnd::Rp | Rnd::Rpi => {
            if x == f64::NEG_INFINITY {
                f64::MIN
            } else if err > 0 {
                next_up(x)
            } else {
                x
            }
        }
        Rnd::Rm | Rnd::Rmi => {
            if x == f64::INFINITY {
                f64::MAX
            } else if err < 0 {
                next_down(x)
            } else {
                x
            }
        }
        _ => x,
    }
}

fn sign_of(v: f64) -> i8 {
    if v > 0.0 {
        1
    } else if v < 0.0 {
        -1
    } else {
        0
    }
}

/// `a + b` in f64 with the sign of its rounding error (TwoSum).
fn two_sum(a: f64, b: f64) -> (f64, i8) {
    let s = a + b;
    if !s.is_finite() {
        return (s, 0);
    }
    let bb = s - a;
    let err = (a - (s - bb)) + (b - bb);
    (s, sign_of(err))
}

fn two_prod(a: f64, b: f64) -> (f64, i8) {
    let p = a * b;
    if !p.is_finite() {
        return (p, 0);
    }
    (p, sign_of(a.mul_add(b, -p)))
}

fn div_err(a: f64, b: f64) -> (f64, i8) {
    let q = a / b;
    if !q.is_finite() || q == 0.0 {
        return (q, 0);
    }
    // a - q*b is exact; the true quotient differs from q by (a - q*b) / b.
    let r = (-q).mul_add(b, a);
    (q, sign_of(r) * sign_of(b))
}

fn sqrt_err(a: f64) -> (f64, i8) {
    let s = a.sqrt();
    if !s.is_finite() || s == 0.0 {
        return (s, 0);
    }
    (s, sign_of((-s).mul_add(s, a)))
}

/// A float value of any scalar float type, widened to f64 (exact).
pub fn getf(v: u64, t: Ty) -> f64 {
    match (t.kind, t.bits) {
        (Kind::F, 64) => f64v(v),
        (Kind::F, 32) => f64::from(f32v(v)),
        (Kind::F, 16) => f64::from(f16_to_f32(v as u16)),
        (Kind::Bf, _) => f64::from(f32::from_bits((v as u32 & 0xffff) << 16)),
        _ => 0.0,
    }
}

/// The exact value `x + tiny * err` rounded to the float type `t` (its bits).
fn putf_err(x: f64, err: i8, t: Ty, r: Rnd) -> u64 {
    match (t.kind, t.bits) {
        (Kind::F, 64) => round_f64(x, err, r).to_bits(),
        (Kind::F, 32) => round_to(F32, x, err, r),
        (Kind::F, 16) => round_to(F16, x, err, r),
        (Kind::Bf, _) => round_to(BF16, x, err, r),
        _ => 0,
    }
}

/// Stores an f64 (taken as exact) as the float type `t`, rounding to nearest.
pub fn putf(x: f64, t: Ty) -> u64 {
    putf_err(x, 0, t, Rnd::Rn)
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

/// f64 to f16 in rounding mode `r` (one rounding).
pub fn f64_to_f16(x: f64, r: Rnd) -> u16 {
    round_to(F16, x, 0, r) as u16
}

pub fn f64_to_bf16(x: f64, r: Rnd) -> u16 {
    round_to(BF16, x, 0, r) as u16
}

pub fn f32_to_f16(f: f32) -> u16 {
    f64_to_f16(f64::from(f), Rnd::Rn)
}

pub fn f32_to_bf16(f: f32) -> u16 {
    f64_to_bf16(f64::from(f), Rnd::Rn)
}

/// Subnormals of `t` become signed zero (`.ftz`).
fn flush(x: f64, t: Ty) -> f64 {
    let min_normal = match (t.kind, t.bits) {
        (Kind::F, 64) => f64::MIN_POSITIVE,
        (Kind::F, 32) | (Kind::Bf, _) => f64::from(f32::MIN_POSITIVE),
        (Kind::F, 16) => 2f64.powi(-14),
        _ => return x,
    };
    if x != 0.0 && x.abs() < min_normal {
        0.0f64.copysign(x)
    } else {
        x
    }
}

/// PTX's canonical NaN of a float type.
fn canonical_nan(t: Ty) -> u64 {
    match (t.kind, t.bits) {
        (Kind::F, 64) => 0x7fff_ffff_ffff_ffff,
        (Kind::F, 32) => 0x7fff_ffff,
        (Kind::F, 16) => 0x7fff,
        _ => 0x7fff,
    }
}

/// Applies `.ftz` to a result, then `.sat` / `.relu`; NaN results are canonical.
fn finish(bits: u64, t: Ty, m: FMode) -> u64 {
    let x = getf(bits, t);
    if x.is_nan() {
        return if m.sat { 0 } else { canonical_nan(t) };
    }
    let mut y = if m.ftz { flush(x, t) } else { x };
    if m.sat {
        y = y.clamp(0.0, 1.0);
        if y == 0.0 {
            y = 0.0; // +0
        }
    }
    if m.relu && y < 0.0 {
        y = 0.0;
    }
    if y.to_bits() == x.to_bits() {
        bits
    } else {
        putf(y, t)
    }
}

// ---------------------------------------------------------------------------------------
// Integer and float arithmetic.

fn int_bin(op: BinOp, t: Ty, sat: bool, a: u64, b: u64) -> u64 {
    let bits = t.bits;
    let signed = t.kind == Kind::S;
    let m = mask(bits);
    let (ua, ub) = (a & m, b & m);
    let (sa, sb) = (sext(ua, bits), sext(ub, bits));
    let r = match op {
        BinOp::Add if sat => (i64::from(sa as i32).saturating_add(i64::from(sb as i32)))
            .clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as u64,
        BinOp::Sub if sat => (i64::from(sa as i32).saturating_sub(i64::from(sb as i32)))
            .clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as u64,
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
        BinOp::Mul24Lo | BinOp::Mul24Hi => {
            let (x, y) = if signed {
                (sext(ua & 0xff_ffff, 24), sext(ub & 0xff_ffff, 24))
            } else {
                ((ua & 0xff_ffff) as i64, (ub & 0xff_ffff) as i64)
            };
            let p = x.wrapping_mul(y) as u64;
            if op == BinOp::Mul24Hi {
                p >> 16
            } else {
                p
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
            let s = b & 0xffff_ffff;
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

/// min/max of floats: a NaN operand yields the other (or the canonical NaN with `.NaN`);
/// -0 is less than +0.
fn fminmax(max: bool, x: f64, y: f64, nan: bool) -> f64 {
    if x.is_nan() || y.is_nan() {
        if nan || (x.is_nan() && y.is_nan()) {
            return f64::NAN;
        }
        return if x.is_nan() { y } else { x };
    }
    if x == y {
        // Equal, or +0 and -0.
        let neg = if max {
            x.is_sign_negative() && y.is_sign_negative()
        } else {
            x.is_sign_negative() || y.is_sign_negative()
        };
        return if neg { -x.abs() } else { x.abs() };
    }
    if (x > y) == max {
        x
    } else {
        y
    }
}

/// A scalar float binary operation in mode `m`.
fn float_bin(op: BinOp, t: Ty, m: FMode, a: u64, b: u64) -> u64 {
    if t == Ty::F32 && m.is_default() {
        let (x, y) = (f32v(a), f32v(b));
        let r = match op {
            BinOp::Add => x + y,
            BinOp::Sub => x - y,
            BinOp::MulLo => x * y,
            BinOp::Div => x / y,
            BinOp::Min | BinOp::Max => {
                return u64::from(
                    (fminmax(op == BinOp::Max, f64::from(x), f64::from(y), false) as f32).to_bits(),
                )
            }
            // copysign.f32 d, a, b: the magnitude of b with the sign of a.
            BinOp::Copysign => {
                return u64::from((y.to_bits() & 0x7fff_ffff) | (x.to_bits() & 0x8000_0000))
            }
            _ => f32::NAN,
        };
        return if r.is_nan() {
            0x7fff_ffff
        } else {
            u64::from(r.to_bits())
        };
    }
    let (mut x, mut y) = (getf(a, t), getf(b, t));
    if m.ftz {
        x = flush(x, t);
        y = flush(y, t);
    }
    let r = if m.rnd == Rnd::None { Rnd::Rn } else { m.rnd };
    let out = match op {
        BinOp::Add | BinOp::Sub => {
            let y = if op == BinOp::Sub { -y } else { y };
            let (s, e) = two_sum(x, y);
            // An exact zero sum of opposite signs is +0, or -0 when rounding down.
            let s = if s == 0.0 && e == 0 && x.is_sign_negative() != y.is_sign_negative() {
                if r == Rnd::Rm {
                    -0.0
                } else {
                    0.0
                }
            } else {
                s
            };
            putf_err(s, e, t, r)
        }
        BinOp::MulLo => {
            let (p, e) = if t.bits == 64 {
                two_prod(x, y)
            } else {
                (x * y, 0)
            };
            putf_err(p, e, t, r)
        }
        BinOp::Div => {
            let (q, e) = div_err(x, y);
            putf_err(q, e, t, r)
        }
        BinOp::Min | BinOp::Max => putf(fminmax(op == BinOp::Max, x, y, m.nan), t),
        BinOp::Copysign => {
            let sign = 1u64 << (t.bits - 1);
            return (b & !sign & mask(t.bits)) | (a & sign);
        }
        _ => canonical_nan(t),
    };
    finish(out, t, m)
}

/// Applies a scalar operation to both halves of a packed value.
fn packed(a: u64, b: u64, f: impl Fn(u64, u64) -> u64) -> u64 {
    let lo = f(a & 0xffff, b & 0xffff) & 0xffff;
    let hi = f((a >> 16) & 0xffff, (b >> 16) & 0xffff) & 0xffff;
    lo | (hi << 16)
}

/// `.relu` of `min`/`max` on `.s32` and each `.s16x2` lane: a negative result becomes 0.
fn int_relu(r: u64, t: Ty, relu: bool) -> u64 {
    if relu && t.kind == Kind::S && sext(r, t.bits) < 0 {
        0
    } else {
        r
    }
}

pub fn bin(op: BinOp, t: Ty, m: FMode, a: u64, b: u64) -> u64 {
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
        Kind::U | Kind::S => int_relu(int_bin(op, t, m.sat, a, b), t, m.relu),
        Kind::H2 | Kind::Bf2 => packed(a, b, |x, y| float_bin(op, t.half(), m, x, y)),
        // min/max{.relu}.{u16x2,s16x2}: lane-wise.
        Kind::U2 | Kind::S2 => packed(a, b, |x, y| {
            int_relu(int_bin(op, t.half(), false, x, y), t.half(), m.relu)
        }),
        _ => float_bin(op, t, m, a, b),
    }
}

fn float_un(op: UnOp, t: Ty, m: FMode, a: u64) -> u64 {
    let mut x = getf(a, t);
    if m.ftz {
        x = flush(x, t);
    }
    let r = if m.rnd == Rnd::None { Rnd::Rn } else { m.rnd };
    let out = match op {
        UnOp::Neg => {
            return finish(
                a ^ (1 << (t.bits - 1)),
                t,
                FMode {
                    ftz: m.ftz,
                    ..FMode::DEFAULT
                },
            )
        }
        UnOp::Abs => {
            return finish(
                a & !(1 << (t.bits - 1)) & mask(t.bits),
                t,
                FMode {
                    ftz: m.ftz,
                    ..FMode::DEFAULT
                },
            )
        }
        UnOp::Sqrt => {
            let (s, e) = sqrt_err(x);
            putf_err(s, e, t, r)
        }
        UnOp::Rcp => {
            let (q, e) = div_err(1.0, x);
            putf_err(q, e, t, r)
        }
        // Approximations (`.approx`) are computed exactly, then rounded to nearest.
        UnOp::Rsqrt => putf(1.0 / x.sqrt(), t),
        UnOp::Ex2 => putf(x.exp2(), t),
        UnOp::Lg2 => putf(x.log2(), t),
        UnOp::Sin => putf(x.sin(), t),
        UnOp::Cos => putf(x.cos(), t),
        UnOp::Tanh => putf(x.tanh(), t),
        _ => canonical_nan(t),
    };
    finish(out, t, m)
}

pub fn un(op: UnOp, t: Ty, m: FMode, a: u64) -> u64 {
    match t.kind {
        Kind::Pred => u64::from(match op {
            UnOp::Not => a == 0,
            _ => a != 0,
        }),
        Kind::H2 | Kind::Bf2 => packed(a, 0, |x, _| float_un(op, t.half(), m, x)),
        Kind::F | Kind::Bf => {
            if t == Ty::F32 && m.is_default() {
                let x = f32v(a);
                let r = match op {
                    UnOp::Neg => return u64::from(x.to_bits() ^ 0x8000_0000),
                    UnOp::Abs => return u64::from(x.to_bits() & 0x7fff_ffff),
                    UnOp::Sqrt => x.sqrt(),
                    UnOp::Rcp => 1.0 / x,
                    _ => return float_un(op, t, m, a),
                };
                return if r.is_nan() {
                    0x7fff_ffff
                } else {
                    u64::from(r.to_bits())
                };
            }
            float_un(op, t, m, a)
        }
        _ => un_bits(op, t, a),
    }
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
        UnOp::Bfind | UnOp::BfindShift => {
            let x = if t.kind == Kind::S && sext(v, bits) < 0 {
                !v & m
            } else {
                v
            };
            if x == 0 {
                0xffff_ffff
            } else {
                let pos = u64::from(63 - x.leading_zeros());
                if op == UnOp::BfindShift {
                    u64::from(bits) - 1 - pos
                } else {
                    pos
                }
            }
        }
        _ => 0,
    }
}

fn float_fma(t: Ty, m: FMode, a: u64, b: u64, c: u64) -> u64 {
    let (mut x, mut y, mut z) = (getf(a, t), getf(b, t), getf(c, t));
    if m.ftz {
        x = flush(x, t);
        y = flush(y, t);
        z = flush(z, t);
    }
    let r = if m.rnd == Rnd::None { Rnd::Rn } else { m.rnd };
    let out = if t.bits == 64 {
        // Directed rounding of an f64 fma is computed to nearest (no exact error term).
        x.mul_add(y, z).to_bits()
    } else {
        // The product of two f32 is exact in f64; the sum's error comes from TwoSum.
        let p = x * y;
        let (s, e) = two_sum(p, z);
        let s = if s == 0.0 && e == 0 && p.is_sign_negative() != z.is_sign_negative() {
            if r == Rnd::Rm {
                -0.0
            } else {
                0.0
            }
        } else {
            s
        };
        putf_err(s, e, t, r)
    };
    finish(out, t, m)
}

pub fn fma(t: Ty, m: FMode, a: u64, b: u64, c: u64) -> u64 {
    match t.kind {
        Kind::H2 | Kind::Bf2 => {
            let h = t.half();
            let lo = float_fma(h, m, a & 0xffff, b & 0xffff, c & 0xffff);
            let hi = float_fma(
                h,
                m,
                (a >> 16) & 0xffff,
                (b >> 16) & 0xffff,
                (c >> 16) & 0xffff,
            );
            (lo & 0xffff) | ((hi & 0xffff) << 16)
        }
        _ if t == Ty::F32 && m.is_default() => {
            let r = f32v(a).mul_add(f32v(b), f32v(c));
            if r.is_nan() {
                0x7fff_ffff
            } else {
                u64::from(r.to_bits())
            }
        }
        _ if t == Ty::F64 && m.is_default() => {
            let r = f64v(a).mul_add(f64v(b), f64v(c));
            if r.is_nan() {
                canonical_nan(t)
            } else {
                r.to_bits()
            }
        }
        _ => float_fma(t, m, a, b, c),
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

/// `mad24.lo/.hi d, a, b, c`.
pub fn mad24(t: Ty, hi: bool, a: u64, b: u64, c: u64) -> u64 {
    let op = if hi { BinOp::Mul24Hi } else { BinOp::Mul24Lo };
    int_bin(BinOp::Add, t, false, int_bin(op, t, false, a, b), c)
}

/// `sad d, a, b, c`: `c + |a - b|`.
pub fn sad(t: Ty, a: u64, b: u64, c: u64) -> u64 {
    let m = mask(t.bits);
    let diff = if t.kind == Kind::S {
        (i128::from(sext(a & m, t.bits)) - i128::from(sext(b & m, t.bits))).unsigned_abs() as u64
    } else {
        (a & m).abs_diff(b & m)
    };
    (c.wrapping_add(diff)) & m
}

/// Carry-chain arithmetic: (result, carry out).
pub fn carry(op: CarryOp, t: Ty, cin: u64, a: u64, b: u64, c: u64) -> (u64, u64) {
    let m = mask(t.bits);
    let w = u32::from(t.bits);
    let (a, b, c) = (u128::from(a & m), u128::from(b & m), u128::from(c & m));
    let cin = u128::from(cin & 1);
    match op {
        CarryOp::Add => {
            let s = a + b + cin;
            ((s as u64) & m, (s >> w) as u64 & 1)
        }
        CarryOp::Sub => {
            let s = a.wrapping_sub(b).wrapping_sub(cin);
            let borrow = u64::from(a < b + cin);
            ((s as u64) & m, borrow)
        }
        CarryOp::Mad(hi) => {
            let (a, b) = if t.kind == Kind::S {
                (
                    sext(a as u64, t.bits) as i128,
                    sext(b as u64, t.bits) as i128,
                )
            } else {
                (a as i128, b as i128)
            };
            let p = (a * b) as u128;
            let part = if hi {
                (p >> w) & u128::from(m)
            } else {
                p & u128::from(m)
            };
            let s = part + c + cin;
            ((s as u64) & m, (s >> w) as u64 & 1)
        }
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

pub fn testp(k: TestpKind, t: Ty, a: u64) -> bool {
    let x = getf(a, t);
    let min_normal = match (t.kind, t.bits) {
        (Kind::F, 64) => f64::MIN_POSITIVE,
        _ => f64::from(f32::MIN_POSITIVE),
    };
    match k {
        TestpKind::Finite => x.is_finite(),
        TestpKind::Infinite => x.is_infinite(),
        TestpKind::Number => !x.is_nan(),
        TestpKind::NotANumber => x.is_nan(),
        TestpKind::Normal => x.is_finite() && x.abs() >= min_normal,
        TestpKind::Subnormal => x != 0.0 && x.abs() < min_normal,
    }
}

fn round_int(x: f64, r: Rnd) -> f64 {
    match r {
        Rnd::Rzi | Rnd::Rz => x.trunc(),
        Rnd::Rmi | Rnd::Rm => x.floor(),
        Rnd::Rpi | Rnd::Rp => x.ceil(),
        Rnd::Rna => x.round(),
        _ => x.round_ties_even(),
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

pub fn cvt(d: Ty, s: Ty, m: FMode, a: u64) -> u64 {
    let r = m.rnd;
    match (s.is_float(), d.is_float()) {
        (false, false) => {
            let v: i128 = if s.kind == Kind::S {
                i128::from(sext(a & mask(s.bits), s.bits))
            } else {
                i128::from(a & mask(s.bits))
            };
            if m.sat {
                let (lo, hi) = int_range(d);
                return (v.clamp(lo, hi) as u64) & mask(d.bits);
            }
            // Widening sign- or zero-extends (by the source's signedness); narrowing truncates.
            (v as u64) & mask(d.bits)
        }
        (false, true) => {
            let v: i128 = if s.kind == Kind::S {
                i128::from(sext(a & mask(s.bits), s.bits))
            } else {
                i128::from(a & mask(s.bits))
            };
            let x = v as f64;
            let err = match (x as i128).cmp(&v) {
                std::cmp::Ordering::Less => 1,
                std::cmp::Ordering::Greater => -1,
                std::cmp::Ordering::Equal => 0,
            };
            let r = if r == Rnd::None { Rnd::Rn } else { r };
            finish(putf_err(x, err, d, r), d, m)
        }
        (true, false) => {
            let mut x = getf(a, s);
            if m.ftz {
                x = flush(x, s);
            }
            if x.is_nan() {
                return 0;
            }
            let v = round_int(x, if r == Rnd::None { Rnd::Rzi } else { r });
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
            if m.ftz {
                x = flush(x, s);
            }
            if x.is_nan() {
                return if m.sat { 0 } else { canonical_nan(d) };
            }
            if matches!(r, Rnd::Rni | Rnd::Rzi | Rnd::Rmi | Rnd::Rpi) {
                x = round_int(x, r);
            }
            let rr = match r {
                Rnd::None | Rnd::Rni | Rnd::Rzi | Rnd::Rmi | Rnd::Rpi | Rnd::Rna => Rnd::Rn,
                other => other,
            };
            finish(putf_err(x, 0, d, rr), d, m)
        }
    }
}

/// `cvt.rn.f16x2.f32 d, a, b` and bf16x2: `a` goes to the upper half.
pub fn cvt_pack(d: Ty, m: FMode, a: u64, b: u64) -> u64 {
    let h = d.half();
    let hi = cvt(h, Ty::F32, m, a) & 0xffff;
    let lo = cvt(h, Ty::F32, m, b) & 0xffff;
    lo | (hi << 16)
}

/// The new value of an atomic read-modify-write.
pub fn atom(op: AtomOp, t: Ty, old: u64, b: u64, c: u64) -> u64 {
    let m = mask(t.bits);
    // atom.add.f32 flushes subnormals (f16/bf16/f64 adds do not).
    let fm = FMode {
        ftz: t == Ty::F32,
        ..FMode::DEFAULT
    };
    match op {
        AtomOp::Add => match t.kind {
            Kind::F | Kind::Bf | Kind::H2 | Kind::Bf2 => {
                let r = bin(BinOp::Add, t, fm, old, b);
                if t == Ty::F32 {
                    finish(r, t, fm)
                } else {
                    r
                }
            }
            _ => bin(BinOp::Add, t, FMode::DEFAULT, old, b),
        },
        AtomOp::Min => bin(BinOp::Min, t, FMode::DEFAULT, old, b),
        AtomOp::Max => bin(BinOp::Max, t, FMode::DEFAULT, old, b),
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
    let msb = bits - 1;
    let pos = pos & 0xff;
    let len = len & 0xff;
    let v = a & mask(t.bits);
    let sbit = t.kind == Kind::S && len != 0 && (v >> (pos + len - 1).min(msb)) & 1 == 1;
    // Bits taken from `a`: those below `len` that lie within the type.
    let take = if pos > msb { 0 } else { len.min(bits - pos) };
    let field = if take == 0 {
        0
    } else {
        (v >> pos) & mask(take as u8)
    };
    if sbit {
        (field | !mask(take as u8)) & mask(t.bits)
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
    let f = (mask(len as u8) << pos) & mask(t.bits);
    ((b & !f) | ((a << pos) & f)) & mask(t.bits)
}

pub fn prmt(mode: PrmtMode, a: u64, b: u64, c: u64) -> u64 {
    let bytes = ((b & 0xffff_ffff) << 32) | (a & 0xffff_ffff);
    let byte = |i: u64| (bytes >> ((i & 7) * 8)) & 0xff;
    let s = c & 3;
    // Source byte of each destination byte (0 lowest) for the special modes.
    let sel: [u64; 4] = match mode {
        PrmtMode::Default => {
            let mut r = 0u64;
            for i in 0..4 {
                let sel = (c >> (i * 4)) & 0xf;
                let v = byte(sel);
                let v = if sel & 8 != 0 {
                    if v & 0x80 != 0 {
                        0xff
                    } else {
                        0
                    }
                } else {
                    v
                };
                r |= v << (i * 8);
            }
            return r;
        }
        PrmtMode::F4e => [s, s + 1, s + 2, s + 3],
        PrmtMode::B4e => [s, (s + 7) % 8, (s + 6) % 8, (s + 5) % 8],
        PrmtMode::Rc8 => [s, s, s, s],
        PrmtMode::Ecl => [s, s.max(1), s.max(2), 3],
        PrmtMode::Ecr => [0, s.min(1), s.min(2), s],
        PrmtMode::Rc16 => {
            let lo = (s & 1) * 2;
            [lo, lo + 1, lo, lo + 1]
        }
    };
    sel.iter()
        .enumerate()
        .fold(0, |r, (i, &k)| r | (byte(k) << (i * 8)))
}

/// `shf.l/.r.wrap/.clamp.b32`.
pub fn shf(left: bool, clamp: bool, a: u64, b: u64, c: u64) -> u64 {
    let n = if clamp {
        (c & 0xffff_ffff).min(32)
    } else {
        c & 31
    };
    let v = ((b & 0xffff_ffff) << 32) | (a & 0xffff_ffff);
    if left {
        ((u128::from(v) << n) >> 32) as u64 & 0xffff_ffff
    } else {
        (v >> n) & 0xffff_ffff
    }
}

pub fn bmsk(clamp: bool, a: u64, b: u64) -> u64 {
    let (a, b) = (a as u32, b as u32);
    let a1 = a & 0x1f;
    let b1 = b & 0x1f;
    let mut mask0 = u32::MAX << a1;
    let sum = a1 + b1;
    let mut overflow = sum >= 32;
    if clamp {
        if a >= 32 {
            mask0 = 0;
            overflow = true;
        }
        if b >= 32 {
            overflow = true;
        }
    }
    let mask1 = if overflow {
        0
    } else if b1 == 0 {
        u32::MAX
    } else {
        u32::MAX << sum
    };
    u64::from(mask0 & !mask1)
}

pub fn fns(m: u64, base: u64, offset: u64) -> u64 {
    let m = m as u32;
    let base = (base as u32 & 31) as i32;
    let offset = offset as u32 as i32;
    if offset == 0 {
        return if m >> base & 1 == 1 {
            base as u64
        } else {
            0xffff_ffff
        };
    }
    let mut count = offset.unsigned_abs() - 1;
    let inc = if offset > 0 { 1 } else { -1 };
    let mut pos = base;
    while (0..32).contains(&pos) {
        if m >> pos & 1 == 1 {
            if count == 0 {
                return pos as u64;
            }
            count -= 1;
        }
        pos += inc;
    }
    0xffff_ffff
}

pub fn lop3(a: u64, b: u64, c: u64, lut: u8) -> u64 {
    let mut r = 0u64;
    for (k, bit) in (0..8).map(|k| (k, (lut >> k) & 1 == 1)) {
        if !bit {
            continue;
        }
        let x = if k & 4 != 0 { a } else { !a };
        let y = if k & 2 != 0 { b } else { !b };
        let z = if k & 1 != 0 { c } else { !c };
        r |= x & y & z;
    }
    r
}

/// `dp4a`/`dp2a.lo/.hi`.
#[allow(clippy::too_many_arguments)]
pub fn dp(four: bool, hi: bool, sa: bool, sb: bool, a: u64, b: u64, c: u64) -> u64 {
    let part = |v: u64, i: u64, bits: u8, signed: bool| -> i64 {
        let x = (v >> (i * u64::from(bits))) & mask(bits);
        if signed {
            sext(x, bits)
        } else {
            x as i64
        }
    };
    let mut acc = if sa || sb {
        i64::from(c as u32 as i32)
    } else {
        i64::from(c as u32)
    };
    if four {
        for i in 0..4 {
            acc += part(a, i, 8, sa) * part(b, i, 8, sb);
        }
    } else {
        let off = if hi { 2 } else { 0 };
        for i in 0..2 {
            acc += part(a, i, 16, sa) * part(b, i + off, 8, sb);
        }
    }
    (acc as u64) & 0xffff_ffff
}

pub fn redux(op: ReduxOp, t: Ty, vals: impl Iterator<Item = u64>) -> u64 {
    let signed = t.kind == Kind::S;
    let mut acc: Option<u64> = None;
    for v in vals {
        let v = v & 0xffff_ffff;
        acc = Some(match acc {
            None => v,
            Some(x) => match op {
                ReduxOp::Add => x.wrapping_add(v) & 0xffff_ffff,
                ReduxOp::And => x & v,
                ReduxOp::Or => x | v,
                ReduxOp::Xor => x ^ v,
                ReduxOp::Min if signed => (x as u32 as i32).min(v as u32 as i32) as u32 as u64,
                ReduxOp::Max if signed => (x as u32 as i32).max(v as u32 as i32) as u32 as u64,
                ReduxOp::Min => x.min(v),
                ReduxOp::Max => x.max(v),
            },
        });
    }
    acc.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S32: Ty = Ty::S32;
    const U32: Ty = Ty::U32;
    const D: FMode = FMode::DEFAULT;

    fn f(x: f32) -> u64 {
        u64::from(x.to_bits())
    }

    fn mode(rnd: Rnd) -> FMode {
        FMode { rnd, ..D }
    }

    #[test]
    fn integer_arithmetic_wraps_and_shifts_saturate() {
        assert_eq!(bin(BinOp::Add, S32, D, 0x7fff_ffff, 1), 0x8000_0000);
        assert_eq!(bin(BinOp::Shr, S32, D, 0x8000_0000, 40), 0xffff_ffff);
        assert_eq!(bin(BinOp::Shr, U32, D, 0x8000_0000, 40), 0);
        assert_eq!(bin(BinOp::Shl, U32, D, 1, 32), 0);
        assert_eq!(
            bin(BinOp::Div, S32, D, (-7i32) as u32 as u64, 2),
            (-3i32) as u32 as u64
        );
        assert_eq!(bin(BinOp::Div, U32, D, 5, 0), 0xffff_ffff);
        assert_eq!(
            bin(BinOp::MulHi, U32, D, 0xffff_ffff, 0xffff_ffff),
            0xffff_fffe
        );
        assert_eq!(mul_wide(S32, (-2i32) as u32 as u64, 3), (-6i64) as u64);
        let sat = FMode { sat: true, ..D };
        assert_eq!(bin(BinOp::Add, S32, sat, 0x7fff_ffff, 5), 0x7fff_ffff);
        assert_eq!(bin(BinOp::Sub, S32, sat, 0x8000_0000, 1), 0x8000_0000);
    }

    #[test]
    fn directed_rounding_of_f32_arithmetic_is_exact() {
        // 1 + 2^-30 is not representable: RN and RZ give 1, RP the next float up.
        let a = f(1.0);
        let b = f(2f32.powi(-30));
        assert_eq!(bin(BinOp::Add, Ty::F32, mode(Rnd::Rn), a, b), f(1.0));
        assert_eq!(bin(BinOp::Add, Ty::F32, mode(Rnd::Rz), a, b), f(1.0));
        assert_eq!(
            bin(BinOp::Add, Ty::F32, mode(Rnd::Rp), a, b),
            f(f32::from_bits(1.0f32.to_bits() + 1))
        );
        // Negative: RM goes away from zero, RP toward.
        let na = f(-1.0);
        assert_eq!(
            bin(BinOp::Sub, Ty::F32, mode(Rnd::Rm), na, b),
            f(f32::from_bits((-1.0f32).to_bits() + 1))
        );
        assert_eq!(bin(BinOp::Sub, Ty::F32, mode(Rnd::Rp), na, b), f(-1.0));
        // RZ of a value just below a grid point steps down.
        let x = f(1.0);
        let y = f(-(2f32.powi(-40)));
        assert_eq!(
            bin(BinOp::Add, Ty::F32, mode(Rnd::Rz), x, y),
            f(f32::from_bits(1.0f32.to_bits() - 1))
        );
        // Division and fma: 1/3 rounds up to nearest, so RZ is one below.
        assert_eq!(
            bin(BinOp::Div, Ty::F32, mode(Rnd::Rp), f(1.0), f(3.0)),
            f(1.0 / 3.0)
        );
        assert_eq!(
            bin(BinOp::Div, Ty::F32, mode(Rnd::Rz), f(1.0), f(3.0)),
            0x3eaa_aaaa
        );
        // (1+2e)(1-e) = 1 + e - 2e^2 with e = 2^-24: just below the midpoint of 1 and the
        // next float.
        let e = 2f32.powi(-24);
        let (a, b) = (f(1.0 + 2.0 * e), f(1.0 - e));
        assert_eq!(fma(Ty::F32, mode(Rnd::Rn), a, b, f(0.0)), f(1.0));
        assert_eq!(fma(Ty::F32, mode(Rnd::Rz), a, b, f(0.0)), f(1.0));
        assert_eq!(
            fma(Ty::F32, mode(Rnd::Rp), a, b, f(0.0)),
            f(f32::from_bits(1.0f32.to_bits() + 1))
        );
        assert_eq!(fma(Ty::F32, D, a, b, f(0.0)), f(1.0));
        // Exact zero: +0, or -0 rounding down.
        assert_eq!(
            bin(BinOp::Add, Ty::F32, mode(Rnd::Rm), f(1.0), f(-1.0)),
            f(-0.0)
        );
        assert_eq!(
            bin(BinOp::Add, Ty::F32, mode(Rnd::Rz), f(1.0), f(-1.0)),
            f(0.0)
        );
    }

    #[test]
    fn f16_rounds_once_from_the_exact_value() {
        // 1 + 2^-11 + 2^-30: just above a tie between 1 and 1+2^-10, so it rounds up;
        // rounding through f32 first would land on the tie and round to even (down).
        let x = 1.0 + 2f64.powi(-11) + 2f64.powi(-30);
        assert_eq!(f64_to_f16(x, Rnd::Rn), 0x3c01);
        assert_eq!(f64_to_f16(1.0 + 2f64.powi(-11), Rnd::Rn), 0x3c00);
        assert_eq!(f64_to_f16(1.0 + 2f64.powi(-11), Rnd::Rp), 0x3c01);
        assert_eq!(f64_to_f16(-(1.0 + 2f64.powi(-11)), Rnd::Rm), 0xbc01);
        assert_eq!(f64_to_f16(70000.0, Rnd::Rn), 0x7c00);
        assert_eq!(f64_to_f16(70000.0, Rnd::Rz), 0x7bff);
        // Subnormal f16.
        assert_eq!(f64_to_f16(2f64.powi(-24), Rnd::Rn), 0x0001);
        assert_eq!(f64_to_f16(2f64.powi(-26), Rnd::Rp), 0x0001);
        assert_eq!(f64_to_f16(2f64.powi(-26), Rnd::Rn), 0x0000);
        assert_eq!(f64_to_bf16(1.0, Rnd::Rn), 0x3f80);
        assert_eq!(f64_to_bf16(1.0 + 2f64.powi(-8), Rnd::Rn), 0x3f80);
        assert_eq!(f64_to_bf16(1.0 + 3.0 * 2f64.powi(-8), Rnd::Rn), 0x3f82);
    }

    #[test]
    fn conversions_round_saturate_and_sign_extend() {
        let s64 = Ty {
            kind: Kind::S,
            bits: 64,
        };
        assert_eq!(cvt(s64, S32, D, 0xffff_ffff), u64::MAX);
        assert_eq!(
            cvt(S32, Ty::F32, mode(Rnd::Rzi), f(-2.7)),
            (-2i32) as u32 as u64
        );
        assert_eq!(cvt(S32, Ty::F32, mode(Rnd::Rni), f(2.5)), 2);
        assert_eq!(cvt(S32, Ty::F32, mode(Rnd::Rpi), f(2.1)), 3);
        assert_eq!(cvt(S32, Ty::F32, mode(Rnd::Rzi), f(1e20)), 0x7fff_ffff);
        assert_eq!(cvt(U32, Ty::F32, mode(Rnd::Rzi), f(-5.0)), 0);
        assert_eq!(cvt(S32, Ty::F32, mode(Rnd::Rzi), f(f32::NAN)), 0);
        let sat = FMode { sat: true, ..D };
        assert_eq!(cvt(Ty::F32, Ty::F32, sat, f(3.0)), f(1.0));
        assert_eq!(cvt(Ty::F16, Ty::F32, mode(Rnd::Rn), f(1.5)), 0x3e00);
        assert_eq!(cvt(Ty::F32, Ty::F16, D, 0x3e00), f(1.5));
        // u32 to f32 toward +inf: 0xffffff01 is not representable.
        assert_eq!(
            cvt(Ty::F32, U32, mode(Rnd::Rp), 0xffff_ff01),
            f(4294967296.0)
        );
        assert_eq!(
            cvt(Ty::F32, U32, mode(Rnd::Rz), 0xffff_ff01),
            f(4294967040.0)
        );
        // f64 to f32 toward zero.
        assert_eq!(
            cvt(Ty::F32, Ty::F64, mode(Rnd::Rz), (1.0f64 / 3.0).to_bits()),
            f(0.333_333_3)
        );
        assert_eq!(
            cvt_pack(
                Ty {
                    kind: Kind::H2,
                    bits: 32
                },
                mode(Rnd::Rn),
                f(1.0),
                f(2.0)
            ),
            0x3c00_4000
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
        let h2 = Ty {
            kind: Kind::H2,
            bits: 32,
        };
        // {1.0, 2.0} + {0.5, 0.25} = {1.5, 2.25}
        assert_eq!(
            bin(BinOp::Add, h2, D, 0x4000_3c00, 0x3400_3800),
            0x4080_3e00
        );
    }

    #[test]
    fn packed_16bit_integer_min_max_by_lane() {
        let (s2, u2) = (
            Ty {
                kind: Kind::S2,
                bits: 32,
            },
            Ty {
                kind: Kind::U2,
                bits: 32,
            },
        );
        let relu = FMode { relu: true, ..D };
        // {hi=-1, lo=5} vs {hi=2, lo=3}.
        let (a, b) = (0xffff_0005, 0x0002_0003);
        assert_eq!(bin(BinOp::Min, s2, D, a, b), 0xffff_0003);
        assert_eq!(bin(BinOp::Max, s2, D, a, b), 0x0002_0005);
        assert_eq!(bin(BinOp::Min, u2, D, a, b), 0x0002_0003);
        assert_eq!(bin(BinOp::Max, u2, D, a, b), 0xffff_0005);
        assert_eq!(bin(BinOp::Min, s2, relu, a, b), 0x0000_0003);
        assert_eq!(bin(BinOp::Max, s2, relu, 0x8000_ffff, 0x8001_fffe), 0);
        // No carry between lanes; i16::MIN/MAX.
        assert_eq!(
            bin(BinOp::Min, s2, D, 0x7fff_8000, 0x8000_7fff),
            0x8000_8000
        );
        assert_eq!(
            bin(BinOp::Max, u2, D, 0x7fff_8000, 0x8000_7fff),
            0x8000_8000
        );
        // min.relu.s32.
        assert_eq!(bin(BinOp::Min, Ty::S32, relu, 0xffff_fff0, 7), 0);
        assert_eq!(bin(BinOp::Max, Ty::S32, relu, 0xffff_fff0, 7), 7);
    }

    #[test]
    fn float_min_max_and_nan_rules() {
        let nan = f(f32::NAN);
        assert_eq!(bin(BinOp::Min, Ty::F32, D, nan, f(2.0)), f(2.0));
        let n = FMode { nan: true, ..D };
        assert_eq!(bin(BinOp::Min, Ty::F32, n, nan, f(2.0)), 0x7fff_ffff);
        assert_eq!(bin(BinOp::Min, Ty::F32, D, f(0.0), f(-0.0)), f(-0.0));
        assert_eq!(bin(BinOp::Max, Ty::F32, D, f(-0.0), f(0.0)), f(0.0));
        assert_eq!(
            bin(
                BinOp::Add,
                Ty::F32,
                D,
                f(f32::INFINITY),
                f(f32::NEG_INFINITY)
            ),
            0x7fff_ffff
        );
        let ftz = FMode { ftz: true, ..D };
        assert_eq!(bin(BinOp::MulLo, Ty::F32, ftz, f(1e-20), f(1e-20)), 0);
        assert_eq!(bin(BinOp::Add, Ty::F32, ftz, f(1e-40), f(0.0)), 0);
    }

    #[test]
    fn float_compares_follow_ieee_ordering() {
        let nan = f(f32::NAN);
        let one = f(1.0);
        assert!(!compare(Cmp::Lt, Ty::F32, nan, one));
        assert!(compare(Cmp::Ltu, Ty::F32, nan, one));
        assert!(compare(Cmp::Lt, S32, 0xffff_ffff, 0));
        assert!(!compare(Cmp::Lo, S32, 0xffff_ffff, 0));
        assert!(testp(TestpKind::Subnormal, Ty::F32, 1));
        assert!(testp(TestpKind::Infinite, Ty::F32, f(f32::INFINITY)));
    }

    #[test]
    fn bit_field_permute_funnel_shift_and_masks() {
        assert_eq!(bfe(U32, 0xabcd_1234, 8, 8), 0x12);
        assert_eq!(bfe(S32, 0x0000_8000, 12, 4), 0xffff_fff8);
        assert_eq!(bfi(U32, 0xf, 0, 4, 4), 0xf0);
        assert_eq!(
            prmt(PrmtMode::Default, 0x4433_2211, 0x8877_6655, 0x3210),
            0x4433_2211
        );
        assert_eq!(
            prmt(PrmtMode::Default, 0x4433_2211, 0x8877_6655, 0x7654),
            0x8877_6655
        );
        assert_eq!(prmt(PrmtMode::Default, 0x4433_2281, 0, 0x8880), 0xffff_ff81);
        assert_eq!(
            prmt(PrmtMode::F4e, 0x4433_2211, 0x8877_6655, 1),
            0x5544_3322
        );
        assert_eq!(
            prmt(PrmtMode::B4e, 0x4433_2211, 0x8877_6655, 0),
            0x6677_8811
        );
        assert_eq!(prmt(PrmtMode::Rc8, 0x4433_2211, 0, 2), 0x3333_3333);
        assert_eq!(prmt(PrmtMode::Ecl, 0x4433_2211, 0, 1), 0x4433_2222);
        assert_eq!(prmt(PrmtMode::Ecr, 0x4433_2211, 0, 2), 0x3333_2211);
        assert_eq!(prmt(PrmtMode::Rc16, 0x4433_2211, 0, 1), 0x4433_4433);
        assert_eq!(shf(true, false, 0x8000_0000, 1, 1), 3);
        assert_eq!(shf(false, false, 1, 3, 1), 0x8000_0000);
        assert_eq!(shf(true, true, 0xaaaa, 0x5555, 40), 0xaaaa);
        assert_eq!(shf(false, true, 0xaaaa, 0x5555, 40), 0x5555);
        assert_eq!(bmsk(false, 1, 2), 6);
        assert_eq!(bmsk(true, 4, 40), 0xffff_fff0);
        assert_eq!(bmsk(true, 40, 4), 0);
        assert_eq!(fns(0xaaaa_aaaa, 3, 1), 3);
        assert_eq!(fns(0xaaaa_aaaa, 3, u64::from(-1i32 as u32)), 3);
        assert_eq!(fns(0xaaaa_aaaa, 2, 1), 3);
        assert_eq!(fns(0xaaaa_aaaa, 2, u64::from(-1i32 as u32)), 1);
        assert_eq!(fns(0xaaaa_aaaa, 2, 0), 0xffff_ffff);
        assert_eq!(lop3(0xf0, 0xcc, 0xaa, 0x80), 0x80);
        assert_eq!(lop3(0xf0, 0xcc, 0xaa, 0x96) & 0xff, 0xf0 ^ 0xcc ^ 0xaa);
        assert_eq!(
            dp(true, false, true, true, 0xff02_0304, 0x0101_0101, 10),
            10 + 4 + 3 + 2 - 1
        );
        assert_eq!(un(UnOp::BfindShift, U32, D, 1), 31);
        assert_eq!(un(UnOp::Bfind, U32, D, 0x10), 4);
    }

    #[test]
    fn carry_chains_propagate() {
        let u = U32;
        let (lo, c) = carry(CarryOp::Add, u, 0, 0xffff_ffff, 1, 0);
        assert_eq!((lo, c), (0, 1));
        let (hi, c2) = carry(CarryOp::Add, u, c, 1, 2, 0);
        assert_eq!((hi, c2), (4, 0));
        let (d, b) = carry(CarryOp::Sub, u, 0, 0, 1, 0);
        assert_eq!((d, b), (0xffff_ffff, 1));
        let (d, _) = carry(CarryOp::Sub, u, b, 5, 1, 0);
        assert_eq!(d, 3);
        let (d, c) = carry(CarryOp::Mad(true), u, 0, 0xffff_ffff, 0xffff_ffff, 1);
        assert_eq!((d, c), (0xffff_ffff, 0));
    }
}
