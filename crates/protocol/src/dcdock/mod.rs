//! DCDock assignments: JWT-authenticated live assignment changes, direction filters, conflict notices.
pub mod v1;
