//! PTX parser and CPU interpreter.
