import type { IncomingHttpHeaders } from "node:http";
import { BlockList, isIP } from "node:net";

/**
 * Who is calling, for the auth-failure throttle: the connection's peer, or, when that
 * peer is one of the operator's reverse proxies (`server.trusted_proxies`), the client
 * its `X-Forwarded-For` names. Behind a proxy every connection comes from the proxy: a
 * throttle keyed by the peer alone would lock every customer out after one scanner's
 * bad keys.
 *
 * The forwarded chain is read from the right, hop by hop, while each hop is a trusted
 * proxy; the first hop that is not is the client. Entries left of it are whatever the
 * client wrote itself and are never believed. Without trusted proxies the header is
 * ignored entirely, so a client cannot pick the address it is throttled under.
 */
export class ClientAddresses {
  private readonly trusted: BlockList | null;
  /** Whether each connection's peer is a trusted proxy: decided once per connection. */
  private readonly peers = new WeakMap<object, boolean>();

  constructor(trustedProxies: readonly string[]) {
    if (trustedProxies.length === 0) {
      this.trusted = null;
      return;
    }
    const list = new BlockList();
    for (const entry of trustedProxies) {
      const range = parseAddressRange(entry);
      if (range === null) throw new Error(`not an IP address or CIDR range: ${entry}`);
      if (range.prefix === null) list.addAddress(range.address, range.family);
      else list.addSubnet(range.address, range.prefix, range.family);
    }
    this.trusted = list;
  }

  /** Whether `peer` is one of the operator's reverse proxies. */
  isTrustedProxy(peer: string): boolean {
    return this.trusted !== null && isTrusted(this.trusted, peer);
  }

  /**
   * The client behind `connection` (whose remote address is `peer`): the peer itself
   * unless it is a trusted proxy that forwarded for someone.
   */
  clientOf(connection: object, peer: string, headers: IncomingHttpHeaders): string {
    const trusted = this.trusted;
    if (trusted === null) return peer;
    let viaProxy = this.peers.get(connection);
    if (viaProxy === undefined) {
      viaProxy = isTrusted(trusted, peer);
      this.peers.set(connection, viaProxy);
    }
    if (!viaProxy) return peer;
    const header = headers["x-forwarded-for"];
    // Node joins repeated X-Forwarded-For headers with ", ", in order
    const forwarded = typeof header === "string" ? header : header?.join(",");
    if (forwarded === undefined) return peer;
    let client = peer;
    // right to left, without splitting the whole header: only the trusted tail is read
    let end = forwarded.length;
    while (end > 0) {
      const comma = forwarded.lastIndexOf(",", end - 1);
      const hop = withoutPort(forwarded.slice(comma + 1, end).trim());
      end = comma === -1 ? 0 : comma;
      if (hop === "") continue;
      client = hop;
      if (!isTrusted(trusted, hop)) break;
    }
    return client;
  }
}

/** An IP address or a CIDR range (`10.0.0.0/8`, `fd00::/8`), or null when `entry` is neither. */
export function parseAddressRange(
  entry: string,
): { address: string; prefix: number | null; family: "ipv4" | "ipv6" } | null {
  const slash = entry.indexOf("/");
  const address = slash === -1 ? entry : entry.slice(0, slash);
  const version = isIP(address);
  if (version === 0) return null;
  const family = version === 4 ? "ipv4" : "ipv6";
  if (slash === -1) return { address, prefix: null, family };
  const text = entry.slice(slash + 1);
  const prefix = Number(text);
  if (!/^\d{1,3}$/.test(text) || prefix > (version === 4 ? 32 : 128)) return null;
  return { address, prefix, family };
}

/**
 * A forwarded hop without the port some proxies add (`203.0.113.7:51234`,
 * `[2001:db8::7]:443`): with it, every new connection of one client would count apart.
 */
function withoutPort(hop: string): string {
  if (hop.startsWith("[")) {
    const close = hop.indexOf("]");
    return close === -1 ? hop : hop.slice(1, close);
  }
  const colon = hop.indexOf(":");
  // one colon after an IPv4 address is a port; an IPv6 address has several
  if (colon !== -1 && hop.indexOf(":", colon + 1) === -1 && isIP(hop.slice(0, colon)) === 4) {
    return hop.slice(0, colon);
  }
  return hop;
}

function isTrusted(list: BlockList, address: string): boolean {
  // BlockList matches IPv4-mapped IPv6 peers (::ffff:a.b.c.d) against IPv4 rules itself
  const version = isIP(address);
  return version !== 0 && list.check(address, version === 4 ? "ipv4" : "ipv6");
}
