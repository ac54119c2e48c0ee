// The reference point for Lethe's overhead: the least a Node proxy can do. A plain
// node:http server reads the request body and forwards it unchanged to the supplier
// through an undici Pool (keep-alive, like Lethe's supplier client), then pipes the
// answer back as it arrives. No auth, no parsing, no metering: whatever Lethe costs
// above this is the price of its own work, not of being a Node proxy at all.
//
// Run as a child process: `node bench/bare-proxy.mjs http://127.0.0.1:PORT` prints
// one JSON line `{"port":N}` on stdout once it listens on 127.0.0.1.
import { once } from "node:events";
import { createServer } from "node:http";
import { pathToFileURL } from "node:url";
import { Pool } from "undici";

// the same pool size Lethe uses for a supplier by default (max_connections: 128)
const UPSTREAM_CONNECTIONS = 128;

async function readBody(request) {
  const parts = [];
  for await (const part of request) parts.push(part);
  return Buffer.concat(parts);
}

function forwarder(pool) {
  return async function forward(request, response) {
    const body = await readBody(request);
    const upstream = await pool.request({
      method: request.method,
      path: request.url,
      headers: {
        "content-type": request.headers["content-type"] ?? "application/json",
        accept: request.headers.accept ?? "*/*",
      },
      body,
    });
    const headers = { "content-type": upstream.headers["content-type"] ?? "application/octet-stream" };
    if (upstream.headers["content-length"] !== undefined)
      headers["content-length"] = upstream.headers["content-length"];
    response.writeHead(upstream.statusCode, headers);
    // a plain loop rather than stream.pipeline: pipeline's per-call AbortController and
    // DOMException cost more than everything else here, and this is meant as the floor
    for await (const chunk of upstream.body) {
      if (!response.write(chunk)) await once(response, "drain");
    }
    response.end();
  };
}

/** Starts the bare proxy in front of `upstreamOrigin`; resolves with the server and its port. */
export async function startBareProxy(upstreamOrigin, port = 0) {
  const pool = new Pool(upstreamOrigin, { connections: UPSTREAM_CONNECTIONS, pipelining: 1, keepAliveTimeout: 30_000 });
  const forward = forwarder(pool);
  const server = createServer({ keepAliveTimeout: 60_000 }, (request, response) => {
    forward(request, response).catch(() => {
      if (response.headersSent) response.destroy();
      else response.writeHead(502).end();
    });
  });
  server.on("close", () => void pool.close());
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return { server, port: server.address().port };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const upstream = process.argv[2];
  if (upstream === undefined) {
    process.stderr.write("usage: node bench/bare-proxy.mjs http://127.0.0.1:PORT\n");
    process.exit(2);
  }
  const { port } = await startBareProxy(new URL(upstream).origin);
  process.stdout.write(`${JSON.stringify({ port })}\n`);
}
