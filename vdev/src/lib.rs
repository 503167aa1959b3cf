//! netgpu vdev library.
