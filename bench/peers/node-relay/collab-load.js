// Load for the decode profile (bench/decode-profile.sh): CLIENTS collab clients in
// CLIENTS / 2 projects (two members each), every client sending TASK_UPDATE edits at RATE per
// second for SECS seconds, then exit. Prints how many edits were sent and relayed.
"use strict";
const WebSocket = require("ws");

const url = process.env.URL || "ws://127.0.0.1:3001/ws";
const clients = Number(process.env.CLIENTS || 2000);
const rate = Number(process.env.RATE || 5);
const secs = Number(process.env.SECS || 20);

let open = 0;
let sent = 0;
let relayed = 0;
const sockets = [];

function start(i) {
  const ws = new WebSocket(url);
  const project = `p${Math.floor(i / 2)}`;
  ws.on("open", () => {
    ws.send(JSON.stringify({ type: "JOIN_PROJECT", projectId: project, userId: `u${i}` }));
    open += 1;
  });
  ws.on("message", (data) => {
    if (data.toString().includes('"TASK_UPDATE"')) relayed += 1;
  });
  ws.on("error", () => {});
  sockets.push({ ws, project, i });
}

for (let i = 0; i < clients; i++) start(i);

let n = 0;
const tick = setInterval(() => {
  for (const { ws, project, i } of sockets) {
    if (ws.readyState !== WebSocket.OPEN) continue;
    for (let k = 0; k < rate / 10; k++) {
      n += 1;
      ws.send(
        JSON.stringify({
          type: "TASK_UPDATE",
          projectId: project,
          operationId: `op-${i}-${n}`,
          payload: { id: n, title: `task ${n}`, status: "doing", tags: ["a", "b"], estimate: 3 },
        })
      );
      sent += 1;
    }
  }
}, 100);

setTimeout(() => {
  clearInterval(tick);
  console.log(JSON.stringify({ clients, open, sent, relayed }));
  for (const { ws } of sockets) ws.terminate();
  process.exit(0);
}, secs * 1000);
