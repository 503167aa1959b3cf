//! The CUDA executor: a physical GPU through the CUDA driver API, via cudarc loaded at run
//! time so the backend builds and starts on machines without CUDA.
