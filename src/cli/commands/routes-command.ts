import { CliError, type CliIo, parseCommand } from "../cli-io.js";
import { boundedText, printable } from "../untrusted-text.js";

interface RouteRow {
  state: string;
  /** Seconds left of a rest its supplier asked for (retry-after); null when it does not rest. */
  restSeconds: number | null;
  errorRate: number | null;
  ttftP50Ms: number | null;
}

const STATES = ["closed", "half-open", "open"];

/** A gateway's metrics are a few kilobytes a route: a body past this is no gateway's. */
const MAX_METRICS_BYTES = 16 * 1_048_576;

function finite(value: number | null): value is number {
  return value !== null && Number.isFinite(value);
}

/** Undoes Prometheus' escaping of a label value (`\\`, `\"`, `\n`), so a route reads as configured. */
function unescapeLabel(value: string): string {
  return value.replace(/\\(.)/g, (_escape, character: string) => (character === "n" ? "\n" : character));
}

/** Reads the route gauges out of Prometheus text; labels are route keys from the config. */
export function parseRouteMetrics(text: string): Map<string, RouteRow> {
  const rows = new Map<string, RouteRow>();
  const row = (route: string) => {
    let entry = rows.get(route);
    if (entry === undefined) {
      entry = { state: "unknown", restSeconds: null, errorRate: null, ttftP50Ms: null };
      rows.set(route, entry);
    }
    return entry;
  };
  for (const line of text.split("\n")) {
    const match =
      /^(lethe_route_state|lethe_route_rest_seconds|lethe_route_error_rate|lethe_route_ttft_p50_seconds)\{route="((?:[^"\\]|\\.)*)"\} (\S+)$/.exec(
        line,
      );
    if (!match) continue;
    const [, name, escaped = "", raw = ""] = match;
    const route = unescapeLabel(escaped);
    const value = Number(raw);
    if (name === "lethe_route_state") row(route).state = STATES[value] ?? "unknown";
    else if (name === "lethe_route_rest_seconds") row(route).restSeconds = value;
    else if (name === "lethe_route_error_rate") row(route).errorRate = value;
    else row(route).ttftP50Ms = value * 1000;
  }
  return rows;
}

/**
 * `lethe routes [--url URL]`: the running gateway's routes, their breaker state (and the
 * rest a supplier's retry-after asked for), error rate
 * and TTFT p50. With `server.metrics_auth: operator`, LETHE_OPERATOR_TOKEN is sent as the
 * bearer token (from the environment, not a flag: a flag would show in `ps`).
 */
export async function routesCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommand(args, { url: { type: "string" } });
  if (positionals.length > 0) throw new CliError("usage: lethe routes [--url URL]");
  const host = io.env.LETHE_HOST || "127.0.0.1";
  const base = typeof values.url === "string" ? values.url : `http://${host}:${io.env.LETHE_PORT || "8080"}`;
  const token = io.env.LETHE_OPERATOR_TOKEN;
  let text: string;
  try {
    const response = await fetch(`${base.replace(/\/+$/, "")}/metrics`, {
      signal: AbortSignal.timeout(5_000),
      ...(token && { headers: { authorization: `Bearer ${token}` } }),
    });
    if (response.status === 401) {
      throw new CliError(
        `${base}/metrics needs an operator token: set LETHE_OPERATOR_TOKEN (server.metrics_auth is operator)`,
      );
    }
    if (!response.ok) throw new CliError(`${base}/metrics answered ${response.status}`);
    const bounded = await boundedText(response, MAX_METRICS_BYTES);
    if (bounded === null) throw new CliError(`${base}/metrics answered more than ${MAX_METRICS_BYTES} bytes`);
    text = bounded;
  } catch (error) {
    if (error instanceof CliError) throw error;
    throw new CliError(`cannot reach a running gateway at ${base} (pass --url)`);
  }
  const rows = parseRouteMetrics(text);
  io.out(["ROUTE", "STATE", "ERROR RATE", "TTFT P50"].join("\t"));
  for (const [route, row] of rows) {
    const errorRate = finite(row.errorRate) ? `${(row.errorRate * 100).toFixed(1)}%` : "-";
    const ttft = finite(row.ttftP50Ms) ? `${row.ttftP50Ms.toFixed(1)} ms` : "-";
    const state = finite(row.restSeconds) ? `${row.state}, resting ${row.restSeconds} s` : row.state;
    // a route's name came from the server's metrics: printed with no terminal control in it
    io.out([printable(route, 300), state, errorRate, ttft].join("\t"));
  }
  if (rows.size === 0) io.out("(no route has served a request since the gateway started)");
  return 0;
}
