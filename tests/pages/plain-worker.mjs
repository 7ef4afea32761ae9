// A worker written without Python that speaks the envelope protocol: WorkerPool("...mjs").
const reply = (m) => self.postMessage(JSON.stringify({ v: 1, ...m }));
self.onmessage = (e) => {
  const msg = typeof e.data === "string" ? JSON.parse(e.data) : e.data;
  const list = msg.kind === "batch" ? msg.messages : [msg];
  for (const m of list) {
    if (m.kind !== "request") continue;
    if (m.channel === "js" && m.op === "double") reply({ kind: "response", id: m.id, payload: m.payload * 2 });
    else if (m.channel === "system") reply({ kind: "response", id: m.id, payload: {} });
    else reply({ kind: "error", id: m.id, code: "unknown_op", message: `no handler for ${m.channel}.${m.op}` });
  }
};
reply({ kind: "ready", payload: { ops: ["js.double"] } });
