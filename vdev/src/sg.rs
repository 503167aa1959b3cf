//! Scatter-gather lists: resolving a command's inline or indirect (possibly chained) list into
//! validated guest ranges with their directions, splitting it into the command's input and
//! output, and walking those in bounded chunks.
//!
//! The whole list is validated before any data moves: entry and segment counts, the total
//! length, loops in chained tables, flags, and that every range lies in mapped guest memory
//! (writable memory for entries the device may write). Input and output are told apart by
//! `SG_FLAG_DEVICE_WRITE` alone ([`SgList::split`]): the device writes only entries that carry
//! it, and never divides input from output at an offset a guest program chose.

use std::collections::HashSet;

use netgpu_proto::abi::{self, codec::OpSpec, Command, SgEntry};
use thiserror::Error;

use crate::memory::{self, Snapshot};

#[derive(Debug, Error)]
pub enum Error {
    #[error("{0} scatter-gather entries exceed the limit")]
    TooManyEntries(u64),
    #[error("more than {} chained table segments", abi::MAX_SG_SEGMENTS)]
    TooManySegments,
    #[error("chained tables loop back to {0:#x}")]
    Loop(u64),
    #[error("indirect table {addr:#x}+{len:#x} is empty or not a whole number of entries")]
    BadTable { addr: u64, len: u32 },
    #[error("entry count {declared} disagrees with the {found} entries in the list")]
    CountMismatch { declared: u32, found: u64 },
    #[error("chain flag on an entry that is not the last of an indirect segment")]
    MisplacedChain,
    #[error("unknown entry flags {0:#x}")]
    BadFlags(u32),
    #[error("total length exceeds {} bytes", abi::MAX_TRANSFER)]
    TooLong,
    #[error("the command writes output but entry {0} does not allow device writes")]
    NotWritable(usize),
    #[error("input entry {0} follows the command's output")]
    InputAfterOutput(usize),
    #[error("range {skip}+{len} lies beyond the {total} bytes of the buffer")]
    OutOfRange { skip: u64, len: u64, total: u64 },
    #[error("entry or table is outside guest memory")]
    Memory(#[from] memory::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// One data entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub addr: u64,
    pub len: u32,
    /// `SG_FLAG_DEVICE_WRITE`.
    pub write: bool,
}

/// A validated list of guest ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SgList {
    pub entries: Vec<Entry>,
    pub total: u64,
}

/// A run of guest ranges read or written as one buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Run {
    ranges: Vec<(u64, u32)>,
    len: u64,
}

/// A command's input and output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Buffers {
    pub input: Run,
    pub output: Run,
}

impl SgList {
    /// Resolves and validates `cmd`'s list against `mem`.
    pub fn resolve(cmd: &Command, mem: &Snapshot) -> Result<SgList> {
        let mut list = SgList::default();
        if cmd.flags & abi::CMD_FLAG_SG_INDIRECT == 0 {
            if cmd.sg_count as usize > abi::INLINE_SG_ENTRIES {
                return Err(Error::CountMismatch {
                    declared: cmd.sg_count,
                    found: abi::INLINE_SG_ENTRIES as u64,
                });
            }
            for e in &cmd.sg[..cmd.sg_count as usize] {
                if e.flags & abi::SG_FLAG_CHAIN != 0 {
                    return Err(Error::MisplacedChain);
                }
                list.push(e, mem)?;
            }
            return Ok(list);
        }
        if cmd.sg_count > abi::MAX_SG_ENTRIES {
            return Err(Error::TooManyEntries(u64::from(cmd.sg_count)));
        }
        let mut seg = cmd.sg[0];
        let mut seen = HashSet::new();
        let mut segments = 0;
        loop {
            segments += 1;
            if segments > abi::MAX_SG_SEGMENTS {
                return Err(Error::TooManySegments);
            }
            if !seen.insert(seg.addr) {
                return Err(Error::Loop(seg.addr));
            }
            let n = seg.len as usize / SgEntry::SIZE;
            if seg.len == 0 || seg.len as usize % SgEntry::SIZE != 0 {
                return Err(Error::BadTable {
                    addr: seg.addr,
                    len: seg.len,
                });
            }
            // Bound the table read before allocating for it.
            let remaining = abi::MAX_SG_ENTRIES as usize + 1 - list.entries.len();
            if n > remaining {
                return Err(Error::TooManyEntries((list.entries.len() + n) as u64));
            }
            let mut raw = vec![0u8; seg.len as usize];
            mem.read(seg.addr, &mut raw)?;
            let mut next = None;
            for (i, chunk) in raw.chunks_exact(SgEntry::SIZE).enumerate() {
                let mut b = [0u8; SgEntry::SIZE];
                b.copy_from_slice(chunk);
                let e = SgEntry::from_bytes(&b);
                if e.flags & abi::SG_FLAG_CHAIN != 0 {
                    if i + 1 != n {
                        return Err(Error::MisplacedChain);
                    }
                    if e.flags != abi::SG_FLAG_CHAIN {
                        return Err(Error::BadFlags(e.flags));
                    }
                    next = Some(e);
                } else {
                    list.push(&e, mem)?;
                }
            }
            match next {
                Some(e) => seg = e,
                None => break,
            }
        }
        let found = list.entries.len() as u64;
        if found != u64::from(cmd.sg_count) {
            return Err(Error::CountMismatch {
                declared: cmd.sg_count,
                found,
            });
        }
        Ok(list)
    }

    fn push(&mut self, e: &SgEntry, mem: &Snapshot) -> Result<()> {
        if e.flags & !abi::SG_FLAG_DEVICE_WRITE != 0 {
            return Err(Error::BadFlags(e.flags));
        }
        if self.entries.len() >= abi::MAX_SG_ENTRIES as usize {
            return Err(Error::TooManyEntries(self.entries.len() as u64 + 1));
        }
        self.total += u64::from(e.len);
        if self.total > u64::from(abi::MAX_TRANSFER) {
            return Err(Error::TooLong);
        }
        let write = e.flags & abi::SG_FLAG_DEVICE_WRITE != 0;
        mem.check(e.addr, u64::from(e.len), write)?;
        self.entries.push(Entry {
            addr: e.addr,
            len: e.len,
            write,
        });
        Ok(())
    }

    /// Splits the list into the input and output of an opcode with `spec`'s buffers: input
    /// entries first, then output entries, each of which must allow device writes.
    pub fn split(&self, spec: &OpSpec) -> Result<Buffers> {
        let mut b = Buffers::default();
        let mut in_output = false;
        for (i, e) in self.entries.iter().enumerate() {
            let output = match (spec.input, spec.output) {
                (true, true) => e.write,
                (false, true) => true,
                // An opcode without output reads every entry it has and writes none.
                _ => false,
            };
            if output {
                if !e.write {
                    return Err(Error::NotWritable(i));
                }
                in_output = true;
                b.output.push(e.addr, e.len);
            } else {
                if in_output {
                    return Err(Error::InputAfterOutput(i));
                }
                b.input.push(e.addr, e.len);
            }
        }
        Ok(b)
    }
}

impl Run {
    fn push(&mut self, addr: u64, len: u32) {
        if len > 0 {
            self.ranges.push((addr, len));
            self.len += u64::from(len);
        }
    }

    /// Number of guest ranges.
    pub fn entries(&self) -> usize {
        self.ranges.len()
    }

    /// Total bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `offset` falls on a boundary between entries (or an end).
    pub fn is_boundary(&self, offset: u64) -> bool {
        let mut at = 0u64;
        if offset == 0 {
            return true;
        }
        for &(_, len) in &self.ranges {
            at += u64::from(len);
            if at == offset {
                return true;
            }
            if at > offset {
                return false;
            }
        }
        false
    }

    /// The guest ranges of bytes `skip..skip+len`, at most `max_ranges` of them: the caller
    /// moves them and asks again for the rest. Returns the ranges and their total length.
    pub fn slice(&self, skip: u64, len: u64, max_ranges: usize) -> Result<(Vec<(u64, u64)>, u64)> {
        let end = skip.checked_add(len).ok_or(Error::OutOfRange {
            skip,
            len,
            total: self.len,
        })?;
        if end > self.len {
            return Err(Error::OutOfRange {
                skip,
                len,
                total: self.len,
            });
        }
        let mut out = Vec::new();
        let mut got = 0u64;
        let mut skip = skip;
        for &(addr, elen) in &self.ranges {
            if got == len || out.len() >= max_ranges {
                break;
            }
            let elen = u64::from(elen);
            if skip >= elen {
                skip -= elen;
                continue;
            }
            let n = (elen - skip).min(len - got);
            out.push((addr + skip, n));
            got += n;
            skip = 0;
        }
        Ok((out, got))
    }

    /// Reads `len` bytes from `skip` on (small buffers only: names, control sections).
    pub fn gather(&self, mem: &Snapshot, skip: u64, len: u64) -> Result<Vec<u8>> {
        let (ranges, got) = self.slice(skip, len, usize::MAX)?;
        let mut out = vec![0u8; got as usize];
        let mut done = 0usize;
        for (addr, n) in ranges {
            mem.read(addr, &mut out[done..done + n as usize])?;
            done += n as usize;
        }
        Ok(out)
    }

    /// Writes `data` from `skip` on; fails if it does not fit.
    pub fn scatter(&self, mem: &Snapshot, skip: u64, data: &[u8]) -> Result<()> {
        let (ranges, _) = self.slice(skip, data.len() as u64, usize::MAX)?;
        let mut done = 0usize;
        for (addr, n) in ranges {
            mem.write(addr, &data[done..done + n as usize])?;
            done += n as usize;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::tests::memfd;
    use crate::memory::GuestMemory;
    use netgpu_proto::abi::codec;

    fn mem() -> GuestMemory {
        let m = GuestMemory::new();
        m.map(0, 0x10_0000, 0, true, Some(memfd(0x10_0000)))
            .unwrap();
        m
    }

    fn table(m: &Snapshot, at: u64, entries: &[SgEntry]) {
        let mut b = Vec::new();
        for e in entries {
            b.extend_from_slice(&e.to_bytes());
        }
        m.write(at, &b).unwrap();
    }

    fn out(addr: u64, len: u32) -> SgEntry {
        SgEntry {
            addr,
            len,
            flags: abi::SG_FLAG_DEVICE_WRITE,
        }
    }

    fn spec(op: u16) -> OpSpec {
        codec::spec(op).unwrap()
    }

    #[test]
    fn inline_list_gathers_in_order() {
        let m = mem();
        let s = m.snapshot();
        s.write(0x1000, b"abc").unwrap();
        s.write(0x2000, b"defg").unwrap();
        let cmd = Command::new(abi::op::MEMCPY_HTOD, 1, &[])
            .with_sg(&[SgEntry::new(0x1000, 3), SgEntry::new(0x2000, 4)]);
        let l = SgList::resolve(&cmd, &s).unwrap();
        assert_eq!(l.total, 7);
        let b = l.split(&spec(abi::op::MEMCPY_HTOD)).unwrap();
        assert_eq!(b.input.gather(&s, 0, 7).unwrap(), b"abcdefg");
        assert_eq!(b.input.gather(&s, 2, 3).unwrap(), b"cde");
        b.input.scatter(&s, 1, b"XYZ").unwrap();
        assert_eq!(b.input.gather(&s, 0, 7).unwrap(), b"aXYZefg");
        assert!(b.input.scatter(&s, 5, b"123").is_err(), "does not fit");
        assert!(b.output.is_empty());
    }

    #[test]
    fn input_and_output_are_split_by_the_direction_flag_alone() {
        let m = mem();
        let s = m.snapshot();
        let cmd = Command::new(abi::op::MODULE_GET_FUNCTION, 1, &[0, 4]).with_sg(&[
            SgEntry::new(0x1000, 64),
            out(0x2000, 16),
            out(0x3000, 16),
        ]);
        let b = SgList::resolve(&cmd, &s)
            .unwrap()
            .split(&spec(abi::op::MODULE_GET_FUNCTION))
            .unwrap();
        assert_eq!(
            b.input.len(),
            64,
            "the whole name buffer is input, whatever args[1] says"
        );
        assert_eq!(b.output.len(), 32);
        let (r, n) = b.output.slice(8, 16, 8).unwrap();
        assert_eq!((r, n), (vec![(0x2008, 8), (0x3000, 8)], 16));
    }

    #[test]
    fn output_into_an_entry_without_device_write_is_refused() {
        let m = mem();
        let s = m.snapshot();
        let dtoh = Command::new(abi::op::MEMCPY_DTOH, 1, &[])
            .with_sg(&[out(0x1000, 8), SgEntry::new(0x2000, 8)]);
        let l = SgList::resolve(&dtoh, &s).unwrap();
        assert!(matches!(
            l.split(&spec(abi::op::MEMCPY_DTOH)),
            Err(Error::NotWritable(1))
        ));
        // Input after output.
        let f = Command::new(abi::op::MODULE_GET_FUNCTION, 1, &[]).with_sg(&[
            SgEntry::new(0x1000, 4),
            out(0x2000, 8),
            SgEntry::new(0x3000, 4),
        ]);
        let l = SgList::resolve(&f, &s).unwrap();
        assert!(matches!(
            l.split(&spec(abi::op::MODULE_GET_FUNCTION)),
            Err(Error::InputAfterOutput(2))
        ));
        // A device-write entry in read-only guest memory is refused when resolving.
        let ro = GuestMemory::new();
        ro.map(0, 0x1000, 0, false, Some(memfd(0x1000))).unwrap();
        let c = Command::new(abi::op::MEMCPY_DTOH, 1, &[]).with_sg(&[out(0x100, 8)]);
        assert!(matches!(
            SgList::resolve(&c, &ro.snapshot()),
            Err(Error::Memory(memory::Error::ReadOnly { .. }))
        ));
    }

    #[test]
    fn chained_indirect_tables_resolve() {
        let m = mem();
        let s = m.snapshot();
        let mut chain = SgEntry::new(0x5000, 32);
        chain.flags = abi::SG_FLAG_CHAIN;
        table(&s, 0x4000, &[SgEntry::new(0x100, 8), chain]);
        table(&s, 0x5000, &[SgEntry::new(0x200, 8), out(0x300, 8)]);
        let cmd = Command::new(abi::op::MEMCPY_HTOD, 1, &[]).with_indirect_sg(0x4000, 3);
        let cmd = Command {
            sg: [
                SgEntry::new(0x4000, 32),
                SgEntry::default(),
                SgEntry::default(),
            ],
            ..cmd
        };
        let l = SgList::resolve(&cmd, &s).unwrap();
        let addrs: Vec<_> = l.entries.iter().map(|e| (e.addr, e.len, e.write)).collect();
        assert_eq!(
            addrs,
            vec![(0x100, 8, false), (0x200, 8, false), (0x300, 8, true)]
        );
    }

    #[test]
    fn looping_scatter_list_is_an_error() {
        let m = mem();
        let s = m.snapshot();
        let mut chain = SgEntry::new(0x4000, 32);
        chain.flags = abi::SG_FLAG_CHAIN;
        table(&s, 0x4000, &[SgEntry::new(0x100, 8), chain]);
        let cmd = Command::new(abi::op::MEMCPY_HTOD, 1, &[]).with_indirect_sg(0x4000, 2);
        let cmd = Command {
            sg: [
                SgEntry::new(0x4000, 32),
                SgEntry::default(),
                SgEntry::default(),
            ],
            ..cmd
        };
        assert!(matches!(
            SgList::resolve(&cmd, &s),
            Err(Error::Loop(0x4000))
        ));
    }

    #[test]
    fn unmapped_oversized_and_miscounted_lists_are_errors() {
        let m = mem();
        let s = m.snapshot();
        let unmapped = Command::new(0, 1, &[]).with_sg(&[SgEntry::new(0x20_0000, 8)]);
        assert!(matches!(
            SgList::resolve(&unmapped, &s),
            Err(Error::Memory(_))
        ));
        let mut toolong = Command::new(0, 1, &[])
            .with_sg(&[SgEntry::new(0, u32::MAX), SgEntry::new(0, u32::MAX)]);
        assert!(matches!(SgList::resolve(&toolong, &s), Err(Error::TooLong)));
        toolong.sg_count = 9;
        assert!(SgList::resolve(&toolong, &s).is_err());
        let ind = Command::new(0, 1, &[]).with_indirect_sg(0x4000, abi::MAX_SG_ENTRIES + 1);
        assert!(matches!(
            SgList::resolve(&ind, &s),
            Err(Error::TooManyEntries(_))
        ));
        table(&s, 0x4000, &[SgEntry::new(0x100, 8)]);
        let ind = Command::new(0, 1, &[]).with_indirect_sg(0x4000, 1);
        let ind = Command { sg_count: 2, ..ind };
        assert!(
            SgList::resolve(&ind, &s).is_err(),
            "count mismatch or table size"
        );
        let bad_table = Command {
            sg: [
                SgEntry::new(0x4000, 17),
                SgEntry::default(),
                SgEntry::default(),
            ],
            ..ind
        };
        assert!(matches!(
            SgList::resolve(&bad_table, &s),
            Err(Error::BadTable { .. })
        ));
    }

    #[test]
    fn inline_chain_and_unknown_flags_are_refused() {
        let m = mem();
        let mut e = SgEntry::new(0x100, 8);
        e.flags = abi::SG_FLAG_CHAIN;
        let cmd = Command::new(0, 1, &[]).with_sg(&[e]);
        assert!(matches!(
            SgList::resolve(&cmd, &m.snapshot()),
            Err(Error::MisplacedChain)
        ));
        e.flags = 1 << 7;
        let cmd = Command::new(0, 1, &[]).with_sg(&[e]);
        assert!(matches!(
            SgList::resolve(&cmd, &m.snapshot()),
            Err(Error::BadFlags(0x80))
        ));
    }

    #[test]
    fn slices_are_bounded_in_ranges_and_cover_the_rest_on_the_next_call() {
        let mut r = Run::default();
        for i in 0..10u64 {
            r.push(0x1000 * i, 100);
        }
        let (a, n) = r.slice(50, 900, 3).unwrap();
        assert_eq!(a, vec![(50, 50), (0x1000, 100), (0x2000, 100)]);
        assert_eq!(n, 250);
        let (b, m) = r.slice(50 + n, 900 - n, 100).unwrap();
        assert_eq!(m, 650);
        assert_eq!(b[0], (0x3000, 100));
        assert!(r.slice(0, 1001, 1).is_err());
        assert!(r.is_boundary(0) && r.is_boundary(100) && r.is_boundary(1000));
        assert!(!r.is_boundary(50) && !r.is_boundary(1001));
        assert!(r.slice(u64::MAX, 2, 1).is_err());
    }
}
