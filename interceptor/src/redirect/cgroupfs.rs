//! cgroupfs
