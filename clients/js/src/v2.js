// Protocol v2 (docs/protocol/v2.md): the frame kinds and recovery reasons. The frame and event
// types are in v2.d.ts; the clients wrap and unwrap frames themselves (base.js).

export { SUBPROTOCOL } from './base.js';

/** Every `sb` kind the server sends. */
export const SERVER_KINDS = ['session', 'pub', 'msg', 'subscribed', 'ack', 'gap', 'error'];

/** Why a `subscribed` frame says `recovered: false`. */
export const NOT_RECOVERED_REASONS = ['trimmed', 'epoch', 'ahead', 'session', 'unavailable'];
