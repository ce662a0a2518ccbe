//! The switchboard application: the command line ([`cli`]) and the wiring ([`app`]) of systems,
//! transports and the cluster backplane that the `switchboard` binary runs.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
