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

  /** Whether `peer` (a socket's remote address) is a trusted proxy; always false without any. */
  isTrustedProxy(peer: string): boolean {
    return this.trusted !== null && isTrusted(this.trusted, peer);
  }

  /** The client behind `peer`: the peer itself unless it is a trusted proxy that forwarded for someone. */
  clientOf(peer: string, headers: IncomingHttpHeaders): string {
    const trusted = this.trusted;
    if (trusted === null || !isTrusted(trusted, peer)) return peer;
    const header = headers["x-forwarded-for"];
    // Node joins repeated X-Forwarded-For headers with ", ", in order
    const forwarded = typeof header === "string" ? header : header?.join(",");
    if (forwarded === undefined || forwarded === "") return peer;
    const hops = forwarded.split(",");
    let client = peer;
    for (let index = hops.length - 1; index >= 0; index--) {
      const hop = (hops[index] as string).trim();
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

function isTrusted(list: BlockList, address: string): boolean {
  const version = isIP(address);
  if (version === 4) return list.check(address, "ipv4");
  if (version !== 6) return false;
  // a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; operators write them as IPv4
  const mapped = address.toLowerCase().startsWith("::ffff:") ? address.slice(7) : null;
  if (mapped !== null && isIP(mapped) === 4 && list.check(mapped, "ipv4")) return true;
  return list.check(address, "ipv6");
}
