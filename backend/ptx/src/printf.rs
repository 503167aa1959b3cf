//! Device-side `printf` (nvcc lowers it to `vprintf(format, args)`): formats one call the
//! way CUDA's printf does, from the format string and the packed argument buffer (each
//! argument at the next offset aligned to its size: 4 bytes for `int`-sized conversions and
//! `%c`, 8 for `%ld`/`%lld`, pointers, `%s` and doubles).

/// Longest `%s` string read from device memory.
pub const MAX_STRING: usize = 64 * 1024;
/// Longest formatted output of one call.
pub const MAX_CALL_OUTPUT: usize = 64 * 1024;
/// Widest field width or precision honoured (Rust's formatter takes at most 65535).
const MAX_FIELD: usize = 16 * 1024;

/// Where a call's arguments and strings come from.
pub trait Args {
    /// The next argument of `size` (4 or 8) bytes; `None` past the end or on a bad address.
    fn next(&mut self, size: usize) -> Option<u64>;
    /// The NUL-terminated string at a device (generic) address, at most [`MAX_STRING`]
    /// bytes; `None` if unreadable.
    fn string(&mut self, addr: u64) -> Option<Vec<u8>>;
}

#[derive(Default, Clone, Copy)]
struct Spec {
    left: bool,
    plus: bool,
    space: bool,
    alt: bool,
    zero: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

/// Formats `fmt` with `args`. Returns the output and the number of arguments consumed
/// (what CUDA's printf returns), or -1 if an argument could not be read (the output so far
/// is kept).
pub fn format(fmt: &[u8], args: &mut dyn Args) -> (Vec<u8>, i32) {
    let mut out = Vec::new();
    let mut n = 0i32;
    let mut i = 0;
    while i < fmt.len() && out.len() < MAX_CALL_OUTPUT {
        let c = fmt[i];
        if c != b'%' {
            out.push(c);
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        let mut s = Spec::default();
        while let Some(&f) = fmt.get(i) {
            match f {
                b'-' => s.left = true,
                b'+' => s.plus = true,
                b' ' => s.space = true,
                b'#' => s.alt = true,
                b'0' => s.zero = true,
                _ => break,
            }
            i += 1;
        }
        let mut arg = |size: usize, n: &mut i32| -> Option<u64> {
            *n += 1;
            args.next(size)
        };
        if fmt.get(i) == Some(&b'*') {
            i += 1;
            let Some(w) = arg(4, &mut n) else {
                return (out, -1);
            };
            let w = w as u32 as i32;
            if w < 0 {
                s.left = true;
            }
            s.width = Some((w.unsigned_abs() as usize).min(MAX_FIELD));
        } else {
            s.width = digits(fmt, &mut i);
        }
        if fmt.get(i) == Some(&b'.') {
            i += 1;
            if fmt.get(i) == Some(&b'*') {
                i += 1;
                let Some(p) = arg(4, &mut n) else {
                    return (out, -1);
                };
                let p = p as u32 as i32;
                s.prec = if p < 0 {
                    None
                } else {
                    Some((p as usize).min(MAX_FIELD))
                };
            } else {
                s.prec = Some(digits(fmt, &mut i).unwrap_or(0));
            }
        }
        // Length modifiers: what they change is the argument's size and truncation.
        let mut long = false;
        let mut short = 0u8; // 1: h, 2: hh
        loop {
            match fmt.get(i) {
                Some(b'l') | Some(b'L') | Some(b'j') | Some(b'z') | Some(b't') | Some(b'q') => {
                    long = true
                }
                Some(b'h') => short += 1,
                _ => break,
            }
            i += 1;
        }
        let Some(&conv) = fmt.get(i) else {
            out.extend_from_slice(&fmt[start..]);
            break;
        };
        i += 1;
        let isize_ = if long { 8 } else { 4 };
        let piece = match conv {
            b'%' => b"%".to_vec(),
            b'd' | b'i' => {
                let Some(v) = arg(isize_, &mut n) else {
                    return (out, -1);
                };
                let v: i64 = match (long, short) {
                    (true, _) => v as i64,
                    (_, 1) => i64::from(v as u16 as i16),
                    (_, 2..) => i64::from(v as u8 as i8),
                    _ => i64::from(v as u32 as i32),
                };
                int(&s, v < 0, v.unsigned_abs(), 10, false, b"")
            }
            b'u' | b'x' | b'X' | b'o' => {
                let Some(v) = arg(isize_, &mut n) else {
                    return (out, -1);
                };
                let v: u64 = match (long, short) {
                    (true, _) => v,
                    (_, 1) => u64::from(v as u16),
                    (_, 2..) => u64::from(v as u8),
                    _ => u64::from(v as u32),
                };
                let (base, upper) = match conv {
                    b'x' => (16, false),
                    b'X' => (16, true),
                    b'o' => (8, false),
                    _ => (10, false),
                };
                let prefix: &[u8] = match conv {
                    b'x' if s.alt && v != 0 => b"0x",
                    b'X' if s.alt && v != 0 => b"0X",
                    _ => b"",
                };
                let mut s2 = s;
                s2.plus = false;
                s2.space = false;
                if conv == b'o' && s.alt {
                    // The precision grows so the first digit is 0.
                    let len = to_base(v, 8, false).len();
                    if s2.prec.is_none_or(|p| p <= len) && v != 0 {
                        s2.prec = Some(len + 1);
                    }
                    if v == 0 && s2.prec == Some(0) {
                        s2.prec = Some(1);
                    }
                }
                int(&s2, false, v, base, upper, prefix)
            }
            b'c' => {
                let Some(v) = arg(4, &mut n) else {
                    return (out, -1);
                };
                pad(&s, vec![v as u8], false)
            }
            b's' => {
                let Some(p) = arg(8, &mut n) else {
                    return (out, -1);
                };
                let mut text = if p == 0 {
                    b"(null)".to_vec()
                } else {
                    match args.string(p) {
                        Some(t) => t,
                        None => return (out, -1),
                    }
                };
                if let Some(pr) = s.prec {
                    text.truncate(pr);
                }
                pad(&s, text, false)
            }
            b'p' => {
                let Some(p) = arg(8, &mut n) else {
                    return (out, -1);
                };
                if p == 0 {
                    pad(&s, b"(nil)".to_vec(), false)
                } else {
                    let mut s2 = s;
                    s2.alt = false;
                    int(&s2, false, p, 16, false, b"0x")
                }
            }
            b'f' | b'F' | b'e' | b'E' | b'g' | b'G' | b'a' | b'A' => {
                let Some(v) = arg(8, &mut n) else {
                    return (out, -1);
                };
                float(&s, f64::from_bits(v), conv)
            }
            b'n' => {
                // Writing the count back is not supported by CUDA's printf either.
                let _ = arg(8, &mut n);
                Vec::new()
            }
            _ => fmt[start..i].to_vec(),
        };
        out.extend_from_slice(&piece);
    }
    out.truncate(MAX_CALL_OUTPUT);
    (out, n)
}

fn digits(fmt: &[u8], i: &mut usize) -> Option<usize> {
    let start = *i;
    let mut v = 0usize;
    while let Some(d) = fmt.get(*i).filter(|c| c.is_ascii_digit()) {
        v = v.saturating_mul(10).saturating_add(usize::from(d - b'0'));
        *i += 1;
    }
    // Widths beyond what one call may print are clamped.
    (*i > start).then_some(v.min(MAX_FIELD))
}

fn to_base(mut v: u64, base: u64, upper: bool) -> Vec<u8> {
    let digits: &[u8] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = Vec::new();
    loop {
        out.push(digits[(v % base) as usize]);
        v /= base;
        if v == 0 {
            break;
        }
    }
    out.reverse();
    out
}

/// An integer: sign, prefix, precision (minimum digits), width padding.
fn int(s: &Spec, neg: bool, v: u64, base: u64, upper: bool, prefix: &[u8]) -> Vec<u8> {
    let mut body = if s.prec == Some(0) && v == 0 {
        Vec::new()
    } else {
        to_base(v, base, upper)
    };
    if let Some(p) = s.prec {
        if body.len() < p {
            let mut padded = vec![b'0'; p - body.len()];
            padded.extend_from_slice(&body);
            body = padded;
        }
    }
    let mut head = Vec::new();
    if neg {
        head.push(b'-');
    } else if s.plus {
        head.push(b'+');
    } else if s.space {
        head.push(b' ');
    }
    head.extend_from_slice(prefix);
    // `0` pads between the sign/prefix and the digits, unless a precision is given.
    let zero = s.zero && !s.left && s.prec.is_none();
    finish(s, head, body, zero)
}

fn finish(s: &Spec, head: Vec<u8>, body: Vec<u8>, zero: bool) -> Vec<u8> {
    let len = head.len() + body.len();
    let w = s.width.unwrap_or(0);
    if len >= w {
        return [head, body].concat();
    }
    let fill = w - len;
    if s.left {
        let mut o = [head, body].concat();
        o.resize(w, b' ');
        o
    } else if zero {
        let mut o = head;
        o.resize(o.len() + fill, b'0');
        o.extend_from_slice(&body);
        o
    } else {
        let mut o = vec![b' '; fill];
        o.extend_from_slice(&head);
        o.extend_from_slice(&body);
        o
    }
}

fn pad(s: &Spec, text: Vec<u8>, zero: bool) -> Vec<u8> {
    finish(s, Vec::new(), text, zero)
}

/// `%e` digits of `x` (>= 0) with `prec` decimals: mantissa text and exponent.
fn exp_parts(x: f64, prec: usize) -> (String, i32) {
    let t = format!("{x:.prec$e}");
    let (m, e) = t.split_once('e').unwrap_or((&t, "0"));
    (m.to_string(), e.parse().unwrap_or(0))
}

fn exp_text(m: &str, e: i32, upper: bool) -> String {
    format!(
        "{m}{}{}{:02}",
        if upper { 'E' } else { 'e' },
        if e < 0 { '-' } else { '+' },
        e.unsigned_abs()
    )
}

fn strip_zeros(t: &mut String) {
    if t.contains('.') {
        while t.ends_with('0') {
            t.pop();
        }
        if t.ends_with('.') {
            t.pop();
        }
    }
}

fn float(s: &Spec, x: f64, conv: u8) -> Vec<u8> {
    let upper = conv.is_ascii_uppercase();
    let neg = x.is_sign_negative() && !x.is_nan();
    let a = x.abs();
    let mut head = Vec::new();
    if neg {
        head.push(b'-');
    } else if s.plus {
        head.push(b'+');
    } else if s.space {
        head.push(b' ');
    }
    if !a.is_finite() {
        let t = match (a.is_nan(), upper) {
            (true, false) => "nan",
            (true, true) => "NAN",
            (false, false) => "inf",
            (false, true) => "INF",
        };
        return finish(s, head, t.as_bytes().to_vec(), false);
    }
    let prec = s.prec.unwrap_or(6).min(MAX_FIELD);
    let mut body = match conv {
        b'f' | b'F' => {
            let mut t = format!("{a:.prec$}");
            if s.alt && prec == 0 {
                t.push('.');
            }
            t
        }
        b'e' | b'E' => {
            let (mut m, e) = exp_parts(a, prec);
            if s.alt && prec == 0 {
                m.push('.');
            }
            exp_text(&m, e, upper)
        }
        b'g' | b'G' => {
            let p = if prec == 0 { 1 } else { prec };
            let (_, x_exp) = exp_parts(a, p - 1);
            let x_exp = if a == 0.0 { 0 } else { x_exp };
            if x_exp < p as i32 && x_exp >= -4 {
                let decimals = (p as i32 - 1 - x_exp) as usize;
                let mut t = format!("{a:.decimals$}");
                if !s.alt {
                    strip_zeros(&mut t);
                }
                t
            } else {
                let (mut m, e) = exp_parts(a, p - 1);
                if !s.alt {
                    strip_zeros(&mut m);
                }
                exp_text(&m, e, upper)
            }
        }
        _ => hex_float(a, s.prec, upper),
    };
    if upper {
        body = body.to_uppercase();
    }
    finish(s, head, body.into_bytes(), s.zero && !s.left)
}

/// `%a`: `0x1.hhhp+e`.
fn hex_float(a: f64, prec: Option<usize>, upper: bool) -> String {
    if a == 0.0 {
        let d = prec
            .map(|p| format!(".{}", "0".repeat(p)))
            .unwrap_or_default();
        return format!("0x0{d}p+0");
    }
    let bits = a.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let mut mant = bits & ((1 << 52) - 1);
    let (lead, e) = if exp == 0 {
        (0u64, -1022)
    } else {
        (1u64, exp - 1023)
    };
    let mut lead = lead;
    let digits = match prec {
        Some(p) if p < 13 => {
            // Round the 52-bit fraction to p hex digits (to nearest, ties to even).
            let drop = (13 - p) * 4;
            let rem = mant & ((1 << drop) - 1);
            let half = 1u64 << (drop - 1);
            mant >>= drop;
            if rem > half || (rem == half && mant & 1 == 1) {
                mant += 1;
                if p == 0 || mant >> (p * 4) != 0 {
                    lead += 1;
                    mant &= (1u64 << (p * 4)).wrapping_sub(1);
                }
            }
            if p == 0 {
                String::new()
            } else {
                format!("{mant:0p$x}")
            }
        }
        Some(p) => format!("{mant:013x}{}", "0".repeat(p - 13)),
        None => {
            let mut t = format!("{mant:013x}");
            while t.ends_with('0') {
                t.pop();
            }
            t
        }
    };
    let t = if digits.is_empty() {
        format!("0x{lead}p{e:+}")
    } else {
        format!("0x{lead}.{digits}p{e:+}")
    };
    if upper {
        t.to_uppercase()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Arguments from a byte buffer, laid out as nvcc lays them out.
    struct Buf(Vec<u8>, usize);

    impl Args for Buf {
        fn next(&mut self, size: usize) -> Option<u64> {
            self.1 = self.1.next_multiple_of(size);
            let b = self.0.get(self.1..self.1 + size)?;
            self.1 += size;
            let mut v = [0u8; 8];
            v[..size].copy_from_slice(b);
            Some(u64::from_le_bytes(v))
        }
        fn string(&mut self, addr: u64) -> Option<Vec<u8>> {
            (addr == 0x1000).then(|| b"hello".to_vec())
        }
    }

    /// Packs arguments: (size, value).
    fn args(a: &[(usize, u64)]) -> Buf {
        let mut b = Vec::new();
        for &(size, v) in a {
            while b.len() % size != 0 {
                b.push(0);
            }
            b.extend_from_slice(&v.to_le_bytes()[..size]);
        }
        Buf(b, 0)
    }

    fn fmt(f: &str, a: &[(usize, u64)]) -> String {
        String::from_utf8(format(f.as_bytes(), &mut args(a)).0).unwrap()
    }

    fn d(x: f64) -> (usize, u64) {
        (8, x.to_bits())
    }

    fn i(x: i32) -> (usize, u64) {
        (4, x as u32 as u64)
    }

    #[test]
    fn integers_with_flags_width_and_precision() {
        assert_eq!(
            fmt(
                "[%5d|%-5d|%05d|%+d|% d|%i]",
                &[i(42), i(42), i(42), i(42), i(42), i(-7)]
            ),
            "[   42|42   |00042|+42| 42|-7]"
        );
        assert_eq!(
            fmt(
                "[%u|%x|%X|%#x|%o|%#o|%8.3x]",
                &[
                    (4, 4_000_000_000),
                    (4, 0xbeef),
                    (4, 0xbeef),
                    (4, 255),
                    (4, 8),
                    (4, 8),
                    (4, 0xab)
                ]
            ),
            "[4000000000|beef|BEEF|0xff|10|010|     0ab]"
        );
        assert_eq!(
            fmt(
                "[%ld|%lld|%llu|%lx|%hd|%hhd]",
                &[
                    (8, -5i64 as u64),
                    (8, 1 << 40),
                    (8, u64::MAX),
                    (8, 0xdead_beef_cafe),
                    i(70000),
                    i(300)
                ]
            ),
            "[-5|1099511627776|18446744073709551615|deadbeefcafe|4464|44]"
        );
        assert_eq!(fmt("%.0d|%.3d|%-+6d|", &[i(0), i(7), i(5)]), "|007|+5    |");
        assert_eq!(
            fmt("[%*d|%-*d]", &[i(6), i(7), i(4), i(8)]),
            "[     7|8   ]"
        );
    }

    #[test]
    fn floats_in_every_style() {
        let x = std::f64::consts::PI;
        assert_eq!(
            fmt(
                "[%f|%.2f|%10.3f|%-10.1f|%e|%.3E]",
                &[d(x), d(x), d(x), d(x), d(x), d(x)]
            ),
            "[3.141593|3.14|     3.142|3.1       |3.141593e+00|3.142E+00]"
        );
        assert_eq!(
            fmt(
                "[%g|%G|%g|%g|%g]",
                &[d(x), d(1e-10), d(100000.0), d(1e6), d(0.0001)]
            ),
            "[3.14159|1E-10|100000|1e+06|0.0001]"
        );
        assert_eq!(
            fmt(
                "[%f|%f|%f|%e|%5.1f%%]",
                &[
                    d(f64::INFINITY),
                    d(f64::NEG_INFINITY),
                    d(f64::NAN),
                    d(0.0),
                    d(99.5)
                ]
            ),
            "[inf|-inf|nan|0.000000e+00| 99.5%]"
        );
        assert_eq!(
            fmt("%.*f|%08.2f|%+.1e", &[i(2), d(x), d(-x), d(12345.0)]),
            "3.14|-0003.14|+1.2e+04"
        );
        assert_eq!(fmt("%a|%.1a", &[d(1.0), d(1.75)]), "0x1p+0|0x1.cp+0");
        assert_eq!(fmt("%g|%#g", &[d(2.5), d(2.5)]), "2.5|2.50000");
    }

    #[test]
    fn chars_strings_and_pointers() {
        assert_eq!(
            fmt(
                "[%c%c%c|%s|%.3s|%8s|%-8s|]",
                &[
                    i(97),
                    i(98),
                    i(99),
                    (8, 0x1000),
                    (8, 0x1000),
                    (8, 0x1000),
                    (8, 0x1000)
                ]
            ),
            "[abc|hello|hel|   hello|hello   |]"
        );
        assert_eq!(
            fmt("%p|%p|%s", &[(8, 0x1234), (8, 0), (8, 0)]),
            "0x1234|(nil)|(null)"
        );
        assert_eq!(fmt("100%% sure", &[]), "100% sure");
    }

    #[test]
    fn missing_arguments_end_the_call_with_minus_one() {
        let (out, n) = format(b"a %d b %d", &mut args(&[i(1)]));
        assert_eq!(out, b"a 1 b ");
        assert_eq!(n, -1);
        let (_, n) = format(b"%d %f", &mut args(&[i(1), d(2.0)]));
        assert_eq!(n, 2);
        // Widths and precisions beyond the per-call cap, written or passed as arguments
        // (found by the fuzzer: `%.*d` with 2^31 asked for 2 GiB), stay bounded.
        let (out, _) = format(b"%999999999999d", &mut args(&[i(1)]));
        assert!(out.len() <= MAX_CALL_OUTPUT);
        for f in [&b"%.*d"[..], b"%*d", b"%.*x", b"%*s", b"%.*e", b"%-*c"] {
            let (out, _) = format(f, &mut args(&[i(i32::MAX), i(5), (8, 0x1000)]));
            assert!(
                out.len() <= MAX_CALL_OUTPUT,
                "{}",
                String::from_utf8_lossy(f)
            );
        }
    }
}
