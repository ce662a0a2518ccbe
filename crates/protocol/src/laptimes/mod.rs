//! PC2 Laptimes relay (`laptimes-relay.md`): a stateless relay; a client's change notice goes to
//! every *other* client.
pub mod v1;
