//! redirect
pub mod cgroupfs;
