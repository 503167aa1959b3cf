//! The kernels nvcc 13.5 and CCCL emit (tests/kernels/nvcc/*.cu, compiled by
//! scripts/gen-ptx-nvcc.sh), run on the interpreter and checked against Rust references.

#![allow(clippy::unwrap_used, clippy::needless_range_loop)]

mod alu;
mod atomics;
mod barriers;
mod calls;
mod control;
mod convert;
mod coop;
mod cub;
mod half;
mod limits;
mod link;
mod pool;
mod printf;
mod programs;
mod sm80;
mod util;
mod warp;
