//! A module load request as the backend receives it: one image or several parts, each of any
//! kind. [`units`] takes it apart into the code units an executor uses (PTX texts, fatbins,
//! cubins), expanding link containers, host objects and libraries; [`select_ptx`] picks the
//! PTX the CPU executor runs.

use crate::elf::is_cubin;
use crate::error::{ImageError, Result};
use crate::fatbin::{is_fatbin, Fatbin};
use crate::host::{is_library, library_members, object_fatbins};
use crate::limits::{Budget, Limits};
use crate::link::{decode, is_link_container, PartKind, Role};
use crate::ptx::{self, PtxInfo, PtxVersion};
use crate::wrapper::is_wrapper;

/// The format of an image, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageKind {
    Ptx,
    Fatbin,
    Cubin,
    /// A fatbin wrapper (pointers: only meaningful in the process that holds it).
    Wrapper,
    LinkContainer,
    /// A host ELF file (device code in its `.nv_fatbin` section).
    HostObject,
    /// An `ar` archive.
    Library,
}

/// Tells the format of an image from its first bytes; `None` if it is none of them.
pub fn detect(bytes: &[u8]) -> Option<ImageKind> {
    if is_wrapper(bytes) {
        Some(ImageKind::Wrapper)
    } else if is_fatbin(bytes) {
        Some(ImageKind::Fatbin)
    } else if is_link_container(bytes) {
        Some(ImageKind::LinkContainer)
    } else if is_cubin(bytes) {
        Some(ImageKind::Cubin)
    } else if bytes.starts_with(b"\x7fELF") {
        Some(ImageKind::HostObject)
    } else if is_library(bytes) {
        Some(ImageKind::Library)
    } else if ptx::looks_like_ptx(bytes) {
        Some(ImageKind::Ptx)
    } else {
        None
    }
}

/// What a code unit holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnitCode<'a> {
    /// PTX text (without its NUL terminator).
    Ptx(&'a str),
    Fatbin(Fatbin<'a>),
    /// A cubin's bytes.
    Cubin(&'a [u8]),
}

/// One code unit of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit<'a> {
    pub code: UnitCode<'a>,
    pub role: Role,
    /// Where it came from, for messages ("part 1", "part 0 > 'kernels.ptx'", ...).
    pub origin: String,
}

/// Takes a request's parts (the `ModuleLoad` data split by its `parts` lengths; one part
/// for a single image) apart into code units, in order. Link containers, host objects and
/// libraries are expanded (nested up to [`Limits::max_depth`]); a fatbin wrapper is refused
/// ([`ImageError::Wrapper`]).
pub fn units<'a>(parts: &[&'a [u8]], limits: &Limits) -> Result<Vec<Unit<'a>>> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        expand(
            p,
            None,
            Role::Input,
            format!("part {i}"),
            0,
            limits,
            &mut out,
        )?;
    }
    Ok(out)
}

fn expand<'a>(
    bytes: &'a [u8],
    declared: Option<PartKind>,
    role: Role,
    origin: String,
    depth: usize,
    limits: &Limits,
    out: &mut Vec<Unit<'a>>,
) -> Result<()> {
    if out.len() >= limits.max_parts {
        return Err(ImageError::TooMany {
            what: "code units in one module",
            limit: limits.max_parts as u64,
        });
    }
    let kind = detect(bytes).ok_or_else(|| {
        ImageError::UnknownFormat(format!("{} in {origin}", crate::bytes::hex_prefix(bytes)))
    })?;
    if let Some(d) = declared {
        let fits = matches!(
            (d, kind),
            (PartKind::Ptx, ImageKind::Ptx)
                | (PartKind::Fatbin, ImageKind::Fatbin)
                | (PartKind::Cubin, ImageKind::Cubin)
                | (PartKind::Object, ImageKind::HostObject)
                | (PartKind::Library, ImageKind::Library)
                | (PartKind::Link, ImageKind::LinkContainer)
        );
        if !fits {
            return Err(ImageError::malformed(
                "link container",
                format!("{origin} is declared {d:?} but holds a {kind:?} image"),
            ));
        }
    }
    let nested = || -> Result<usize> {
        if depth >= limits.max_depth {
            return Err(ImageError::TooMany {
                what: "nesting of link containers and libraries",
                limit: limits.max_depth as u64,
            });
        }
        Ok(depth + 1)
    };
    match kind {
        ImageKind::Wrapper => return Err(ImageError::Wrapper),
        ImageKind::Ptx => out.push(Unit {
            code: UnitCode::Ptx(ptx::text(bytes)?),
            role,
            origin,
        }),
        ImageKind::Cubin => out.push(Unit {
            code: UnitCode::Cubin(bytes),
            role,
            origin,
        }),
        ImageKind::Fatbin => {
            let f = Fatbin::parse(bytes, limits)?;
            if bytes[f.len()..].iter().any(|&b| b != 0) {
                return Err(ImageError::malformed(
                    "fatbin",
                    format!(
                        "{origin}: {} bytes after the fatbin's end",
                        bytes.len() - f.len()
                    ),
                ));
            }
            out.push(Unit {
                code: UnitCode::Fatbin(f),
                role,
                origin,
            });
        }
        ImageKind::LinkContainer => {
            let d = nested()?;
            for (j, p) in decode(bytes, limits)?.into_iter().enumerate() {
                let o = if p.name.is_empty() {
                    format!("{origin} > part {j}")
                } else {
                    format!("{origin} > '{}'", p.name)
                };
                // A device-linked part stays device-linked; the inputs of a device-linked
                // container are part of that alternative too.
                let r = if role == Role::DeviceLinked {
                    role
                } else {
                    p.role
                };
                expand(p.data, Some(p.kind), r, o, d, limits, out)?;
            }
        }
        ImageKind::HostObject => {
            for (j, f) in object_fatbins(bytes, limits)?.into_iter().enumerate() {
                if out.len() >= limits.max_parts {
                    return Err(ImageError::TooMany {
                        what: "code units in one module",
                        limit: limits.max_parts as u64,
                    });
                }
                out.push(Unit {
                    code: UnitCode::Fatbin(f),
                    role,
                    origin: format!("{origin} > fatbin {j}"),
                });
            }
        }
        ImageKind::Library => {
            let d = nested()?;
            for (name, m) in library_members(bytes, limits)? {
                // Archive members without device code (symbol tables, plain objects) add
                // nothing, as with nvlink.
                if detect(m) == Some(ImageKind::HostObject) {
                    expand(
                        m,
                        None,
                        role,
                        format!("{origin} > '{name}'"),
                        d,
                        limits,
                        out,
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// The device an executor compiles PTX for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// Compute capability as `major * 10 + minor`.
    pub sm: u32,
    /// The newest PTX ISA version the executor accepts.
    pub max_ptx: PtxVersion,
}

/// A PTX module chosen from a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectedPtx {
    pub text: String,
    pub info: PtxInfo,
    /// Relocatable device code (`-rdc`): it refers to symbols of the other modules and must
    /// be linked with them.
    pub relocatable: bool,
    /// Where it came from, for messages.
    pub origin: String,
}

/// The PTX the CPU executor runs for a request: one module per input unit (a fatbin gives
/// its best PTX entry, see [`Fatbin::best_ptx`]), all to be loaded together as one linked
/// module. When an input has no PTX for the target, a device-linked alternative with PTX
/// is used instead if there is one. Errors: [`ImageError::NoBinaryForGpu`] (the driver's
/// `CUDA_ERROR_NO_BINARY_FOR_GPU`) naming the unit without PTX, or
/// [`ImageError::UnsupportedPtxVersion`], or what the image is wrong with.
pub fn select_ptx(parts: &[&[u8]], target: &Target, limits: &Limits) -> Result<Vec<SelectedPtx>> {
    let units = units(parts, limits)?;
    let budget = Budget::new(limits);
    let pick = |role: Role| -> Result<Vec<SelectedPtx>> {
        let mut out = Vec::new();
        for u in units.iter().filter(|u| u.role == role) {
            out.push(unit_ptx(u, target, &budget)?);
        }
        Ok(out)
    };
    let inputs_exist = units.iter().any(|u| u.role == Role::Input);
    match pick(Role::Input) {
        Ok(v) if inputs_exist => Ok(v),
        first => {
            let alt_exists = units.iter().any(|u| u.role == Role::DeviceLinked);
            if alt_exists {
                if let Ok(v) = pick(Role::DeviceLinked) {
                    return Ok(v);
                }
            }
            match first {
                Err(e) => Err(e),
                Ok(_) => Err(ImageError::NoBinaryForGpu("the module has no code".into())),
            }
        }
    }
}

fn unit_ptx(u: &Unit<'_>, target: &Target, budget: &Budget) -> Result<SelectedPtx> {
    let within = |e: ImageError| match e {
        ImageError::NoBinaryForGpu(m) => ImageError::NoBinaryForGpu(format!("{}: {m}", u.origin)),
        e => e,
    };
    let (text, relocatable) = match &u.code {
        UnitCode::Ptx(t) => (t.to_string(), false),
        UnitCode::Cubin(_) => {
            return Err(ImageError::NoBinaryForGpu(format!(
                "{} is a cubin (SASS only, no PTX)",
                u.origin
            )))
        }
        UnitCode::Fatbin(f) => {
            let e = f.best_ptx(target.sm, target.max_ptx).map_err(within)?;
            let bytes = e.contents_in(budget)?;
            (ptx::text(&bytes)?.to_string(), e.is_relocatable_ptx())
        }
    };
    let info = ptx::info(&text)?;
    if info.version > target.max_ptx {
        return Err(ImageError::UnsupportedPtxVersion {
            found: info.version.to_string(),
            max: target.max_ptx.to_string(),
        });
    }
    if !info.arch.ptx_runs_on(target.sm) {
        return Err(ImageError::NoBinaryForGpu(format!(
            "{}: PTX for {} does not run on compute capability {}",
            u.origin,
            info.arch,
            crate::arch::cc(target.sm)
        )));
    }
    Ok(SelectedPtx {
        text,
        info,
        relocatable,
        origin: u.origin.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{encode, LinkPart};
    use crate::testing::{fatbin, ptx_module, EntrySpec};
    use crate::Compression;
    use netgpu_proto::cuda::CuResult;

    const T: Target = Target {
        sm: 75,
        max_ptx: PtxVersion::new(9, 5),
    };

    fn l() -> Limits {
        Limits::default()
    }

    #[test]
    fn device_linked_alternative_is_used_only_when_inputs_lack_ptx() {
        let p = ptx_module("9.5", 75, "linked");
        let q = ptx_module("9.5", 75, "input");
        let linked = fatbin(&[EntrySpec::ptx(75, &p).compressed(Compression::Lz4)]);
        let sass = fatbin(&[EntrySpec::elf(75, &[1; 8])]);
        let input = fatbin(&[EntrySpec::ptx(75, &q)]);
        let part = |kind, role, data| LinkPart {
            kind,
            role,
            name: "",
            data,
        };
        let c = encode(&[
            part(PartKind::Fatbin, Role::DeviceLinked, &linked),
            part(PartKind::Fatbin, Role::Input, &input),
        ])
        .unwrap();
        let s = select_ptx(&[&c], &T, &l()).unwrap();
        assert_eq!(s.len(), 1);
        assert!(s[0].text.contains("input"));
        let c = encode(&[
            part(PartKind::Fatbin, Role::DeviceLinked, &linked),
            part(PartKind::Fatbin, Role::Input, &sass),
        ])
        .unwrap();
        let s = select_ptx(&[&c], &T, &l()).unwrap();
        assert!(s[0].text.contains("linked"));
        let c = encode(&[
            part(PartKind::Fatbin, Role::DeviceLinked, &sass),
            part(PartKind::Fatbin, Role::Input, &sass),
        ])
        .unwrap();
        let e = select_ptx(&[&c], &T, &l()).unwrap_err();
        assert_eq!(e.cu_result(), CuResult::NO_BINARY_FOR_GPU);
        assert!(e.to_string().contains("part 0 > part 1"), "{e}");
    }

    #[test]
    fn refusals() {
        let e = select_ptx(&[], &T, &l()).unwrap_err();
        assert_eq!(e.cu_result(), CuResult::NO_BINARY_FOR_GPU);
        let mut w = crate::wrapper::WRAPPER_MAGIC.to_le_bytes().to_vec();
        w.extend([1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            select_ptx(&[&w], &T, &l()).unwrap_err(),
            ImageError::Wrapper
        );
        assert_eq!(
            select_ptx(&[b"\x00\x01garbage"], &T, &l())
                .unwrap_err()
                .cu_result(),
            CuResult::INVALID_IMAGE
        );
        let p = ptx_module("9.5", 75, "k");
        let mut f = fatbin(&[EntrySpec::ptx(75, &p)]);
        f.extend_from_slice(&[0; 16]);
        assert!(select_ptx(&[&f], &T, &l()).is_ok());
        f.push(1);
        assert!(select_ptx(&[&f], &T, &l()).is_err());
        let bad_ptx = fatbin(&[EntrySpec::ptx(75, "not ptx at all")]);
        assert_eq!(
            select_ptx(&[&bad_ptx], &T, &l()).unwrap_err().cu_result(),
            CuResult::INVALID_PTX
        );
        let many: Vec<&[u8]> = vec![p.as_bytes(); 5];
        assert_eq!(select_ptx(&many, &T, &l()).unwrap().len(), 5);
        let few = Limits {
            max_parts: 4,
            ..l()
        };
        assert!(matches!(
            select_ptx(&many, &T, &few),
            Err(ImageError::TooMany { .. })
        ));
    }

    #[test]
    fn total_decompressed_bytes_are_capped_per_request() {
        let p = format!("{}{}", ptx_module("9.5", 75, "k"), "// pad\n".repeat(100));
        let f = fatbin(&[EntrySpec::ptx(75, &p).compressed(Compression::Zstd)]);
        let limits = Limits {
            max_total_bytes: (p.len() * 2) as u64,
            ..l()
        };
        assert!(select_ptx(&[&f, &f], &T, &limits).is_ok());
        let e = select_ptx(&[&f, &f, &f], &T, &limits).unwrap_err();
        assert!(matches!(e, ImageError::TooLarge { .. }), "{e}");
    }

    /// Every truncation and many single-byte corruptions of every kind of image: an error
    /// or a result, never a panic (the fuzz target does this at scale).
    #[test]
    fn corruptions_never_panic() {
        let p = ptx_module("9.5", 75, "k");
        let fb = fatbin(&[
            EntrySpec::elf(75, &[0x7f; 24]),
            EntrySpec::ptx(75, &p).compressed(Compression::Zstd),
            EntrySpec::ptx(80, &p).compressed(Compression::Lz4),
        ]);
        let link = encode(&[
            LinkPart {
                kind: PartKind::Fatbin,
                role: Role::Input,
                name: "f",
                data: &fb,
            },
            LinkPart {
                kind: PartKind::Ptx,
                role: Role::DeviceLinked,
                name: "p",
                data: p.as_bytes(),
            },
        ])
        .unwrap();
        for img in [&fb, &link] {
            for n in 0..img.len() {
                let _ = select_ptx(&[&img[..n]], &T, &l());
                let _ = crate::probe(&img[..n]);
            }
            for i in 0..img.len() {
                for v in [0x00, 0xff, 0x80, 0x01] {
                    let mut b = img.clone();
                    b[i] = v;
                    let _ = select_ptx(&[&b], &T, &l());
                    let _ = units(&[&b], &l());
                    let _ = crate::probe(&b);
                }
            }
        }
    }
}
