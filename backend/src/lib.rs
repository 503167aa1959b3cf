//! netgpu backend library.
