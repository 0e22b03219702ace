//! One module per command. Each takes its clap-free configuration
//! (`crate::config`) and returns the exit code.

pub mod export;
pub mod forget;
pub mod send;
pub mod sources;
pub mod validate;
