// PC2 Laptimes WebSocket notification relay, exactly as the seed (laptimes-relay.md) describes it:
// a simple message relay that broadcasts each client's notification to all OTHER connected
// clients, logs connects and disconnects, keeps no state, and needs only the `ws` package.
//
// WS_PORT: port (default 3002). WS_HOST: address to bind (the seed binds all interfaces; the
// benchmark sets 127.0.0.1).
const WebSocket = require('ws');

const PORT = parseInt(process.env.WS_PORT || '3002', 10);
const HOST = process.env.WS_HOST || undefined;

const wss = new WebSocket.Server({ host: HOST, port: PORT });

wss.on('listening', () => {
  console.log(`WebSocket relay listening on ${HOST || '*'}:${PORT}`);
});

wss.on('connection', (ws) => {
  console.log(`Client connected (${wss.clients.size} total)`);

  ws.on('message', (data, isBinary) => {
    // Broadcast to every other open client; the sender does not receive its own message.
    wss.clients.forEach((client) => {
      if (client !== ws && client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    });
  });

  ws.on('close', () => {
    console.log(`Client disconnected (${wss.clients.size} total)`);
  });

  ws.on('error', (err) => {
    console.error('WebSocket error:', err.message);
  });
});

const shutdown = () => {
  wss.close();
  process.exit(0);
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
