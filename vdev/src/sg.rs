//! Scatter-gather lists: resolving a command's inline or indirect (possibly chained) list into
//! validated guest ranges, and copying data between those ranges and host buffers.
//!
//! The whole list is validated before any data moves: entry and segment counts, the total
//! length, loops in chained tables, and that every range lies in mapped guest memory.

use std::collections::HashSet;

use netgpu_proto::abi::{self, Command, SgEntry};
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
    #[error("entry or table is outside guest memory")]
    Memory(#[from] memory::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A validated list of guest ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SgList {
    pub entries: Vec<(u64, u32)>,
    pub total: u64,
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
                if e.flags != 0 {
                    return Err(if e.flags & abi::SG_FLAG_CHAIN != 0 {
                        Error::MisplacedChain
                    } else {
                        Error::BadFlags(e.flags)
                    });
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
                    next = Some(e);
                } else if e.flags != 0 {
                    return Err(Error::BadFlags(e.flags));
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
        if self.entries.len() >= abi::MAX_SG_ENTRIES as usize {
            return Err(Error::TooManyEntries(self.entries.len() as u64 + 1));
        }
        self.total += u64::from(e.len);
        if self.total > u64::from(abi::MAX_TRANSFER) {
            return Err(Error::TooLong);
        }
        mem.check(e.addr, u64::from(e.len), false)?;
        self.entries.push((e.addr, e.len));
        Ok(())
    }

    /// Reads `len` bytes starting `skip` bytes into the list.
    pub fn gather(&self, mem: &Snapshot, skip: u64, len: u64) -> Result<Vec<u8>> {
        let end = skip.checked_add(len).ok_or(Error::TooLong)?;
        if end > self.total {
            return Err(Error::TooLong);
        }
        let mut out = vec![0u8; len as usize];
        let mut done = 0usize;
        self.walk(skip, len, |addr, n| {
            mem.read(addr, &mut out[done..done + n])?;
            done += n;
            Ok(())
        })?;
        Ok(out)
    }

    /// Writes `data` starting `skip` bytes into the list; fails if it does not fit.
    pub fn scatter(&self, mem: &Snapshot, skip: u64, data: &[u8]) -> Result<()> {
        let len = data.len() as u64;
        let end = skip.checked_add(len).ok_or(Error::TooLong)?;
        if end > self.total {
            return Err(Error::TooLong);
        }
        let mut done = 0usize;
        self.walk(skip, len, |addr, n| {
            mem.write(addr, &data[done..done + n])?;
            done += n;
            Ok(())
        })
    }

    fn walk(
        &self,
        mut skip: u64,
        mut len: u64,
        mut f: impl FnMut(u64, usize) -> Result<()>,
    ) -> Result<()> {
        for &(addr, elen) in &self.entries {
            if len == 0 {
                break;
            }
            let elen = u64::from(elen);
            if skip >= elen {
                skip -= elen;
                continue;
            }
            let n = (elen - skip).min(len);
            f(addr + skip, n as usize)?;
            len -= n;
            skip = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::tests::memfd;
    use crate::memory::GuestMemory;

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
        assert_eq!(l.gather(&s, 0, 7).unwrap(), b"abcdefg");
        assert_eq!(l.gather(&s, 2, 3).unwrap(), b"cde");
        l.scatter(&s, 1, b"XYZ").unwrap();
        assert_eq!(l.gather(&s, 0, 7).unwrap(), b"aXYZefg");
        assert!(l.scatter(&s, 5, b"123").is_err(), "does not fit");
    }

    #[test]
    fn chained_indirect_tables_resolve() {
        let m = mem();
        let s = m.snapshot();
        let mut chain = SgEntry::new(0x5000, 32);
        chain.flags = abi::SG_FLAG_CHAIN;
        table(&s, 0x4000, &[SgEntry::new(0x100, 8), chain]);
        table(
            &s,
            0x5000,
            &[SgEntry::new(0x200, 8), SgEntry::new(0x300, 8)],
        );
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
        assert_eq!(l.entries, vec![(0x100, 8), (0x200, 8), (0x300, 8)]);
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
    fn inline_chain_flag_is_refused() {
        let m = mem();
        let mut e = SgEntry::new(0x100, 8);
        e.flags = abi::SG_FLAG_CHAIN;
        let cmd = Command::new(0, 1, &[]).with_sg(&[e]);
        assert!(matches!(
            SgList::resolve(&cmd, &m.snapshot()),
            Err(Error::MisplacedChain)
        ));
    }
}
