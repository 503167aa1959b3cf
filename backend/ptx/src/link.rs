//! Linking several PTX modules into one program (`-rdc=true` device code, the JIT linker
//! `cuLink*`).
