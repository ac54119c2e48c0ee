import type { Server } from "node:http";
import type { Socket } from "node:net";

/**
 * Caps the connections one peer address holds open at once. The process-wide cap
 * (`limits.max_connections`) alone let a single address take every slot with idle
 * connections (a slowloris holds each for the headers timeout, and reconnects), and
 * keep every other client out. Past the cap a new connection is closed at accept, as
 * past the process-wide one. The operator's reverse proxies (`server.trusted_proxies`)
 * carry everyone's traffic and are not capped. Counted per connection, not per request.
 */
export function capConnectionsPerAddress(
  server: Server,
  limit: number,
  isTrustedProxy: (address: string) => boolean,
): void {
  const open = new Map<string, number>();
  server.on("connection", (socket: Socket) => {
    const address = socket.remoteAddress;
    if (address === undefined || isTrustedProxy(address)) return;
    const count = (open.get(address) ?? 0) + 1;
    if (count > limit) {
      socket.destroy();
      return;
    }
    open.set(address, count);
    socket.once("close", () => {
      const left = (open.get(address) ?? 1) - 1;
      if (left === 0) open.delete(address);
      else open.set(address, left);
    });
  });
}
