//! `LaunchKernel`'s control section read and written by hand: the request clients send most
//! (millions a second from a launch loop), where serde's generic enum machinery cost about a
//! fifth of the backend dispatcher's time per launch.
//!
//! The bytes are postcard's, which stays the one definition of the format: the request
//! variant's tag is taken from postcard's own encoding at first use, and that first use also
//! encodes and decodes a sample launch both ways and compares, so a changed `Request` (a
//! reordered variant or field) switches this path off instead of misreading requests.
//! Anything this reader does not take as a whole, valid `LaunchKernel` goes to postcard,
//! which then decodes it or reports the error, exactly as without this path.

use std::sync::OnceLock;

use super::ops::Request;

/// A launch whose fields all differ and need varints of several lengths.
const SAMPLE: Request = Request::LaunchKernel {
    func: 0x0102_0304_0506_0708,
    grid: [1, 200, 70_000],
    block: [3, 1 << 20, u32::MAX],
    shared_mem_bytes: 48 << 10,
    stream: u64::MAX - 5,
    flags: 1,
};

/// `LaunchKernel`'s variant tag, if this path agrees with postcard (see the module docs).
fn tag() -> Option<u32> {
    static TAG: OnceLock<Option<u32>> = OnceLock::new();
    *TAG.get_or_init(|| {
        let theirs = postcard::to_stdvec(&SAMPLE).ok()?;
        let tag = Reader(&theirs).u32()?;
        let mut mine = Vec::new();
        write(tag, &SAMPLE, &mut mine);
        let back: Request = postcard::from_bytes(&theirs).ok()?;
        (mine == theirs && read(tag, &theirs).as_ref() == Some(&back)).then_some(tag)
    })
}

/// The request in `bytes` if they are exactly one `LaunchKernel` control section; `None`
/// for everything else (the caller decodes those with postcard).
pub(super) fn decode(bytes: &[u8]) -> Option<Request> {
    read(tag()?, bytes)
}

/// Appends `req`'s control section to `out` if it is a `LaunchKernel`; false (nothing
/// written) for every other request.
pub(super) fn encode(req: &Request, out: &mut Vec<u8>) -> bool {
    match (req, tag()) {
        (Request::LaunchKernel { .. }, Some(tag)) => {
            write(tag, req, out);
            true
        }
        _ => false,
    }
}

fn read(tag: u32, bytes: &[u8]) -> Option<Request> {
    let mut r = Reader(bytes);
    if r.u32()? != tag {
        return None;
    }
    let req = Request::LaunchKernel {
        func: r.u64()?,
        grid: [r.u32()?, r.u32()?, r.u32()?],
        block: [r.u32()?, r.u32()?, r.u32()?],
        shared_mem_bytes: r.u32()?,
        stream: r.u64()?,
        flags: r.u32()?,
    };
    // Trailing bytes are postcard's error to report.
    r.0.is_empty().then_some(req)
}

fn write(tag: u32, req: &Request, out: &mut Vec<u8>) {
    if let Request::LaunchKernel {
        func,
        grid,
        block,
        shared_mem_bytes,
        stream,
        flags,
    } = req
    {
        varint(out, u64::from(tag));
        varint(out, *func);
        for v in grid.iter().chain(block) {
            varint(out, u64::from(*v));
        }
        varint(out, u64::from(*shared_mem_bytes));
        varint(out, *stream);
        varint(out, u64::from(*flags));
    }
}

/// Postcard's varint: seven bits a byte, least significant first, high bit set on all but
/// the last byte (postcard writes the shortest form).
fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    /// A varint of at most `max` bytes whose last byte is at most `last_max` (postcard's
    /// rule for a type of that width, which also takes longer forms than the shortest).
    fn varint(&mut self, max: usize, last_max: u8) -> Option<u64> {
        let mut out = 0u64;
        for i in 0..max {
            let (&b, rest) = self.0.split_first()?;
            self.0 = rest;
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return (i + 1 < max || b <= last_max).then_some(out);
            }
        }
        None
    }

    fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.varint(5, 0x0f)?).ok()
    }

    fn u64(&mut self) -> Option<u64> {
        self.varint(10, 0x01)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ops;

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// Values of every varint length, the edges included.
        fn value(&mut self) -> u64 {
            let v = self.next();
            match v % 4 {
                0 => v >> (v % 64),
                1 => [
                    0,
                    1,
                    127,
                    128,
                    16_383,
                    16_384,
                    u64::from(u32::MAX),
                    u64::MAX,
                ][v as usize % 8],
                2 => v % 300,
                _ => v,
            }
        }

        fn launch(&mut self) -> Request {
            let mut u32v = || self.value() as u32;
            let (grid, block) = ([u32v(), u32v(), u32v()], [u32v(), u32v(), u32v()]);
            let (shared_mem_bytes, flags) = (u32v(), u32v());
            Request::LaunchKernel {
                func: self.value(),
                grid,
                block,
                shared_mem_bytes,
                stream: self.value(),
                flags,
            }
        }
    }

    #[test]
    fn the_fast_path_agrees_with_postcard_at_run_time() {
        assert!(tag().is_some(), "the self-check switched the fast path off");
    }

    #[test]
    fn launches_encode_and_decode_to_postcards_bytes_and_values() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let req = rng.launch();
            let theirs = postcard::to_stdvec(&req).unwrap();
            let mut mine = vec![0xaa];
            ops::encode_request_into(&req, &mut mine).unwrap();
            assert_eq!(mine[0], 0xaa, "appends");
            assert_eq!(mine[1..], theirs[..], "{req:?}");
            assert_eq!(decode(&theirs).as_ref(), Some(&req));
            assert_eq!(ops::decode_request(&theirs).unwrap(), req);
        }
    }

    #[test]
    fn any_bytes_decode_as_postcard_decodes_them() {
        // Mutated, truncated and extended launches, and other requests: whatever the fast
        // reader takes, postcard decodes to the same request; everything else postcard
        // decodes or refuses itself.
        let mut rng = Rng(42);
        let others = [
            Request::Null,
            Request::MemcpyHtoD {
                ctx: 1,
                dst: 2,
                stream: 3,
            },
            Request::ModuleGetFunction {
                module: 1,
                name: "k".into(),
            },
        ];
        let mut taken = 0;
        for i in 0..50_000 {
            let mut b = postcard::to_stdvec(&rng.launch()).unwrap();
            match rng.next() % 5 {
                0 => {
                    let at = rng.next() as usize % b.len();
                    b[at] = rng.next() as u8;
                }
                1 => b.truncate(rng.next() as usize % b.len()),
                2 => b.push(rng.next() as u8),
                3 => b = postcard::to_stdvec(&others[i % others.len()]).unwrap(),
                _ => {
                    let at = rng.next() as usize % b.len();
                    b[at] ^= 0x80;
                }
            }
            let fast = decode(&b);
            let slow = ops::decode::<Request>(&b);
            if let Some(r) = &fast {
                taken += 1;
                assert_eq!(slow.as_ref().ok(), Some(r), "{b:x?}");
            }
            assert_eq!(
                ops::decode_request(&b).ok(),
                slow.ok(),
                "{b:x?}: the same result as postcard"
            );
        }
        assert!(taken > 2_000, "the fast path took only {taken} inputs");
    }

    #[test]
    fn other_requests_are_left_to_postcard() {
        let req = Request::StreamSynchronize { stream: 7 };
        let mut out = Vec::new();
        assert!(!encode(&req, &mut out));
        assert!(out.is_empty());
        ops::encode_request_into(&req, &mut out).unwrap();
        assert_eq!(out, postcard::to_stdvec(&req).unwrap());
        assert_eq!(decode(&out), None);
        assert_eq!(ops::decode_request(&out).unwrap(), req);
    }
}
