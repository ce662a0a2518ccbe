//! placeholder
pub mod v1;
