//! The kernels nvcc 13.5 and CCCL emit (tests/kernels/nvcc/*.cu, compiled by
//! scripts/gen-ptx-nvcc.sh), run on the interpreter and checked against Rust references.

#![allow(clippy::unwrap_used)]

mod atomics;
mod convert;
mod half;
mod util;
mod warp;
