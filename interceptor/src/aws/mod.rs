//! aws
pub mod error;
pub mod request;
pub mod sigv4;
