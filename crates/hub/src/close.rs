//! WebSocket close codes the hub and protocol modules use.

/// A WebSocket close code (RFC 6455 section 7.4), with the codes this hub sends named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection is fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the server is going away (shutdown).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1003: a data type the endpoint cannot accept (a binary frame for a text protocol).
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1007: a text frame that is not UTF-8.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: policy violation (authentication failed, inbound rate exceeded).
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a frame larger than the configured limit.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: the server is restarting (a drain); the client should reconnect.
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later (connection limit reached).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 4000: no inbound traffic, not even a pong, within the idle timeout.
    pub const IDLE_TIMEOUT: CloseCode = CloseCode(4000);
    /// 4009: a v2 client resumed this connection's session from a new connection.
    pub const SESSION_TAKEN_OVER: CloseCode = CloseCode(4009);
    /// 4008: the client did not read fast enough and its outbound queue hit its byte limit.
    pub const SLOW_CONSUMER: CloseCode = CloseCode(4008);
}

impl From<CloseCode> for u16 {
    fn from(c: CloseCode) -> u16 {
        c.0
    }
}
