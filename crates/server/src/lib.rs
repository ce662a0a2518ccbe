//! The switchboard application: the command line ([`cli`]) and the wiring ([`app`]) of systems,
//! transports and the cluster backplane that the `switchboard` binary runs, and its admin
//! listener ([`admin`]).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
