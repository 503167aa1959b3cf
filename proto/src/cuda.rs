//! CUDA driver API result codes and attribute numbers shared by every side.
