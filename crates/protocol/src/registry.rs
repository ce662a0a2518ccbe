//! The systems this server speaks, with the ports, paths and settings their seeds document.
//!
//! Adding a system is one module and one line in [`SYSTEMS`]; the transports read everything
//! they need from its [`SystemSpec`].

use alloc::boxed::Box;
use alloc::string::String;
use switchboard_hub::Protocol;

/// How a system's WebSocket upgrade is authenticated by the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone may connect.
    None,
    /// An HS256 JWT in query parameter `param`; a missing or bad token closes with 1008.
    /// The secret comes from environment variable `secret_env`.
    JwtQuery {
        /// The query parameter, e.g. `token`.
        param: &'static str,
        /// The environment variable holding the HS256 secret.
        secret_env: &'static str,
    },
}

/// Browser origins allowed to open a WebSocket, as the seed configures them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginPolicy {
    /// Environment variable with a comma-separated list, e.g. `ALLOWED_ORIGINS`.
    pub env: &'static str,
    /// The list used when the variable is unset.
    pub default: &'static str,
}

/// Settings a system's protocol is built with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Key required on this system's HTTP publish endpoints (`X-API-Key` or
    /// `Authorization: Bearer`). Endpoints that the seed documents as open stay open when unset;
    /// endpoints we add refuse with 403 when unset.
    pub api_key: Option<String>,
}

/// One system: its seed's documented defaults and how to build its protocol.
#[derive(Debug, Clone, Copy)]
pub struct SystemSpec {
    /// Short name used on the command line and in metrics, e.g. `collab`.
    pub name: &'static str,
    /// What it is, for `--help` and logs.
    pub title: &'static str,
    /// The seed's default port.
    pub default_port: u16,
    /// The seed's environment variable for the port, honoured when this system runs alone.
    pub port_env: Option<&'static str>,
    /// The WebSocket path; `None` accepts an upgrade on any path (as `ws` with no `path` does).
    pub ws_path: Option<&'static str>,
    /// How the upgrade is authenticated.
    pub auth: Auth,
    /// Which browser origins may connect; `None`: any.
    pub origins: Option<OriginPolicy>,
    /// The environment variable for [`Options::api_key`].
    pub api_key_env: &'static str,
    /// Build the protocol.
    pub build: fn(&Options) -> Box<dyn Protocol + Send>,
}

/// Every system, in the order the server lists them.
pub static SYSTEMS: &[SystemSpec] = &[
    crate::laptimes::v1::SPEC,
    crate::afc::v1::SPEC,
    crate::race::v1::SPEC,
    crate::collab::v1::SPEC,
    crate::dcdock::v1::SPEC,
];

/// The system called `name`.
pub fn system(name: &str) -> Option<&'static SystemSpec> {
    SYSTEMS.iter().find(|s| s.name == name)
}
