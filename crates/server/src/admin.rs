//! The admin listener's options (`--admin-bind`, `SWITCHBOARD_ADMIN_TOKEN`) and its start: the
//! live inspector page (docs/inspector.md) on its own address.

use std::net::SocketAddr;
use std::sync::Arc;

use switchboard_inspector::{Admin, Token, DEFAULT_BIND};
use switchboard_runtime::{Process, System};
use tokio::net::TcpListener;

/// Where the inspector listens, and what it asks for.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// Address of the admin listener, the live inspector page (docs/inspector.md), or `off`.
    /// Default 127.0.0.1:9090 (when that is taken, a warning, and the process runs without
    /// it; an address given here must bind). Off loopback it needs SWITCHBOARD_ADMIN_TOKEN.
    #[arg(long, env = "SWITCHBOARD_ADMIN_BIND", value_name = "ADDR|off")]
    pub admin_bind: Option<String>,
    /// Token the admin listener asks for (`Authorization: Bearer <token>`, or the cookie that
    /// `/login?token=` sets), at least 16 characters; required off loopback. Prefer the
    /// environment variable: a flag shows in the process list.
    #[arg(long, env = "SWITCHBOARD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

/// The admin listener to start.
#[derive(Debug)]
pub struct Plan {
    bind: SocketAddr,
    token: Option<Token>,
    /// The address was given (flag or environment), not the default: failing to bind it is
    /// an error.
    given: bool,
}

impl AdminArgs {
    /// The listener these options ask for (`None`: `off`), or why they cannot be served: an
    /// address that does not parse, a bad token, an address off loopback without a token.
    pub fn plan(&self) -> Result<Option<Plan>, String> {
        let given = self.admin_bind.as_deref().map(str::trim);
        if given.is_some_and(|b| b.eq_ignore_ascii_case("off")) {
            return Ok(None);
        }
        let text = given.unwrap_or(DEFAULT_BIND);
        let bind: SocketAddr = text
            .parse()
            .map_err(|e| format!("--admin-bind {text}: {e} (an address and port, or off)"))?;
        let token = match self.admin_token.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => Some(Token::new(t).map_err(|e| e.to_string())?),
            None => None,
        };
        switchboard_inspector::check(bind, token.as_ref()).map_err(|e| e.to_string())?;
        Ok(Some(Plan {
            bind,
            token,
            given: given.is_some(),
        }))
    }
}

/// The admin listener's socket, bound before any system starts so that an address given but
/// taken stops the process at once. The default address, taken, is a warning.
#[derive(Debug)]
pub struct Bound {
    listener: TcpListener,
    token: Option<Token>,
}

/// Bind what `plan` asks for.
pub async fn bind(plan: Option<Plan>) -> Result<Option<Bound>, String> {
    let Some(plan) = plan else {
        return Ok(None);
    };
    match TcpListener::bind(plan.bind).await {
        Ok(listener) => Ok(Some(Bound {
            listener,
            token: plan.token,
        })),
        Err(e) if plan.given => Err(format!("admin listener on {}: {e}", plan.bind)),
        Err(e) => {
            tracing::warn!(
                addr = %plan.bind,
                error = %e,
                "the inspector's default address is not free: running without it (--admin-bind sets another, or off)"
            );
            Ok(None)
        }
    }
}

/// Serve the inspector of `systems` on what [`bind`] bound.
pub fn serve(
    bound: Option<Bound>,
    process: &Process,
    systems: Vec<Arc<System>>,
) -> Result<Option<Admin>, String> {
    let Some(Bound { listener, token }) = bound else {
        return Ok(None);
    };
    let guarded = token.is_some();
    let admin = switchboard_inspector::serve(listener, process, systems, token)
        .map_err(|e| format!("admin listener: {e}"))?;
    tracing::info!(
        admin = %format!("http://{}/", admin.local_addr()),
        token = guarded,
        "inspector"
    );
    Ok(Some(admin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(bind: Option<&str>, token: Option<&str>) -> AdminArgs {
        AdminArgs {
            admin_bind: bind.map(str::to_string),
            admin_token: token.map(str::to_string),
        }
    }

    #[test]
    fn off_loopback_needs_a_token() {
        let plan = args(None, None).plan().unwrap().unwrap();
        assert_eq!(plan.bind.to_string(), DEFAULT_BIND);
        assert!(!plan.given && plan.token.is_none());
        assert!(args(Some("off"), None).plan().unwrap().is_none());
        assert!(args(Some("OFF"), None).plan().unwrap().is_none());
        assert!(args(Some("[::1]:0"), None).plan().unwrap().unwrap().given);
        let refused = args(Some("0.0.0.0:9090"), None).plan().unwrap_err();
        assert!(refused.contains("SWITCHBOARD_ADMIN_TOKEN"), "{refused}");
        let token = "a-token-of-enough-length";
        assert!(args(Some("0.0.0.0:9090"), Some(token)).plan().is_ok());
        // An empty variable is no token.
        assert!(args(Some("0.0.0.0:9090"), Some("")).plan().is_err());
        assert!(args(None, Some("short")).plan().unwrap_err().contains("16"));
        assert!(args(Some("nonsense"), None).plan().is_err());
    }
}
