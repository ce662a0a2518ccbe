//! Collab rooms (Happy Robot): project rooms with presence and relayed task, comment and project edits.
pub mod v1;
