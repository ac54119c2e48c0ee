import { once } from "node:events";
import { createServer } from "node:net";

/** A loopback port where nothing listens: one that was free a moment ago. */
export async function closedPort(): Promise<number> {
  const server = createServer().listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}
