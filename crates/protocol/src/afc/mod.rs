//! AFC Stack events (`afc-events.md`): backends POST `/events/<entity>-<action>` and every socket
//! receives `{"type":"<entity>:<action>","payload":<body>}`.
pub mod v1;
