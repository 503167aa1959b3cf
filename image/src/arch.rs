//! GPU architectures as the toolchain names them (`sm_75`, `compute_90a`, `sm_100f`) and which
//! code runs on which device.

use std::fmt;

/// Which devices code for an architecture targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArchVariant {
    /// `sm_XY`/`compute_XY`: SASS runs on the same major version with a minor at least `Y`;
    /// PTX is compiled for any device of at least `X.Y`.
    Generic,
    /// `sm_XYf`/`compute_XYf` (family-specific, CUDA 12.9+): the same major version, minor at
    /// least `Y`, for SASS and PTX alike.
    Family,
    /// `sm_XYa`/`compute_XYa` (architecture-specific): exactly `X.Y`.
    Specific,
}

/// An architecture: the compute capability as `major * 10 + minor` (75 for 7.5, 100 for
/// 10.0) and its variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Arch {
    pub sm: u32,
    pub variant: ArchVariant,
}

impl Arch {
    pub fn generic(sm: u32) -> Self {
        Arch {
            sm,
            variant: ArchVariant::Generic,
        }
    }

    /// Whether PTX for this architecture can be compiled for a device of compute capability
    /// `device` (`major * 10 + minor`).
    pub fn ptx_runs_on(&self, device: u32) -> bool {
        match self.variant {
            ArchVariant::Generic => device >= self.sm,
            ArchVariant::Family => device / 10 == self.sm / 10 && device >= self.sm,
            ArchVariant::Specific => device == self.sm,
        }
    }

    /// Whether SASS (a cubin) for this architecture runs on a device of compute capability
    /// `device`.
    pub fn sass_runs_on(&self, device: u32) -> bool {
        match self.variant {
            ArchVariant::Generic | ArchVariant::Family => {
                device / 10 == self.sm / 10 && device >= self.sm
            }
            ArchVariant::Specific => device == self.sm,
        }
    }

    /// Parses `sm_75`, `compute_90a`, `sm_100f` (the prefix is not kept).
    pub fn parse(s: &str) -> Option<Arch> {
        let rest = s
            .strip_prefix("sm_")
            .or_else(|| s.strip_prefix("compute_"))?;
        let (digits, variant) = match rest.as_bytes().last()? {
            b'a' => (&rest[..rest.len() - 1], ArchVariant::Specific),
            b'f' => (&rest[..rest.len() - 1], ArchVariant::Family),
            _ => (rest, ArchVariant::Generic),
        };
        if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Arch {
            sm: digits.parse().ok()?,
            variant,
        })
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let suffix = match self.variant {
            ArchVariant::Generic => "",
            ArchVariant::Family => "f",
            ArchVariant::Specific => "a",
        };
        write!(f, "sm_{}{suffix}", self.sm)
    }
}

/// A compute capability `major * 10 + minor` as `major.minor`, for messages.
pub(crate) fn cc(sm: u32) -> String {
    format!("{}.{}", sm / 10, sm % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_compatibility() {
        let a = Arch::parse("sm_75").unwrap();
        assert_eq!(a, Arch::generic(75));
        assert!(a.ptx_runs_on(75) && a.ptx_runs_on(120) && !a.ptx_runs_on(70));
        assert!(a.sass_runs_on(75) && !a.sass_runs_on(80) && !a.sass_runs_on(72));
        assert!(Arch::generic(80).sass_runs_on(86) && !Arch::generic(86).sass_runs_on(80));
        let s = Arch::parse("compute_90a").unwrap();
        assert_eq!(s.variant, ArchVariant::Specific);
        assert!(s.ptx_runs_on(90) && !s.ptx_runs_on(100));
        let f = Arch::parse("sm_100f").unwrap();
        assert_eq!((f.sm, f.variant), (100, ArchVariant::Family));
        assert!(f.ptx_runs_on(103) && !f.ptx_runs_on(120) && !f.sass_runs_on(90));
        assert_eq!(f.to_string(), "sm_100f");
        for bad in ["sm_", "sm_a", "gfx90a", "sm_7x5", "sm_123456", ""] {
            assert_eq!(Arch::parse(bad), None, "{bad}");
        }
    }
}
