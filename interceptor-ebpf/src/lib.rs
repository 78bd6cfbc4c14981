//! Empty on purpose: the programs live in the `interceptor` binary target (src/main.rs). This
//! library target lets the daemon's build script depend on the crate.
#![no_std]
