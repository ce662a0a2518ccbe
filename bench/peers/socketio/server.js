// The AFC events job on Socket.IO, the way its users write it: a plain Node HTTP server with a
// Socket.IO server attached; POST /events/<entity>-<action> reads the JSON body and broadcasts
// it with io.emit("<entity>:<action>", body) to every connected socket, then answers 204.
// Socket.IO's defaults otherwise (polling and websocket transports, no compression, pings
// every 25 s).
//
// PORT: port (default 4001). HOST: address to bind (the benchmark sets 127.0.0.1).
const http = require('http');
const { Server } = require('socket.io');

const PORT = parseInt(process.env.PORT || '4001', 10);
const HOST = process.env.HOST || '0.0.0.0';

const server = http.createServer((req, res) => {
  const m = req.method === 'POST' && /^\/events\/([^/?]+)$/.exec(req.url);
  if (!m) {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      res.writeHead(400).end();
      return;
    }
    io.emit(m[1].replace('-', ':'), body);
    res.writeHead(204).end();
  });
});

const io = new Server(server);

server.listen(PORT, HOST, () => {
  console.log(`Socket.IO events server listening on ${HOST}:${PORT}`);
});

const shutdown = () => {
  io.close();
  process.exit(0);
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
