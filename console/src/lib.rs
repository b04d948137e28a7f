//! `smesh-console`: the operator's view of a smesh mesh.
//!
//! # Layout
//! - [`demo`]: a whole mesh in one process, for a first look.

pub mod demo;
