// The AFC Stack WebSocket service (apps/ws), exactly as the seed (afc-events.md) describes it:
// a separate Fastify server with two responsibilities, a WebSocket endpoint (/ws) that keeps
// every connection in a Set, and event endpoints (POST /events/<entity>-<action>) that send
// {"type":"<entity>:<action>","payload":<body>} to every client and answer 204. The seed writes
// one handler per event name; one parametric route does the same for every name.
//
// PORT: port (default 4001, as the seed). HOST: address to bind (the benchmark sets 127.0.0.1).
const Fastify = require('fastify');

const PORT = parseInt(process.env.PORT || '4001', 10);
const HOST = process.env.HOST || '0.0.0.0';

const app = Fastify({ logger: false });
const clients = new Set();

app.register(require('@fastify/websocket'));

app.register(async (app) => {
  app.get('/ws', { websocket: true }, (socket) => {
    clients.add(socket);
    socket.on('close', () => clients.delete(socket));
    socket.on('error', () => clients.delete(socket));
  });
});

app.get('/health', async () => ({ status: 'ok', clients: clients.size }));

app.post('/events/:name', async (req, reply) => {
  const data = await req.body;
  const message = JSON.stringify({
    type: req.params.name.replace('-', ':'),
    payload: data,
  });

  for (const client of clients) {
    client.send(message);
  }

  return reply.status(204).send();
});

app.listen({ port: PORT, host: HOST }).then(() => {
  console.log(`AFC WebSocket service listening on ${HOST}:${PORT}`);
});

const shutdown = () => {
  app.close().finally(() => process.exit(0));
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
