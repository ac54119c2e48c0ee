import { Counter, Histogram, Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import type { MetadataRecord } from "../src/metering/metadata-record.js";
import { GatewayMetrics } from "../src/metering/metrics.js";
import { metadataRecord } from "./support/metadata-records.js";

/**
 * The per-request metrics keep their own totals and render them at scrape time; the
 * exposition must read exactly as prom-client's own Counter and Histogram would
 * render the same observations.
 */

/** The same metrics the way prom-client records them itself: the reference rendering. */
function referenceMetrics() {
  const registry = new Registry();
  const requests = new Counter({
    name: "lethe_requests_total",
    help: "Requests served, by model, supplier, status and client format.",
    labelNames: ["model", "supplier", "status", "format"] as const,
    registers: [registry],
  });
  const tokens = new Counter({
    name: "lethe_tokens_total",
    help: "Tokens metered, by model, supplier and direction.",
    labelNames: ["model", "supplier", "direction"] as const,
    registers: [registry],
  });
  const latency = new Histogram({
    name: "lethe_request_duration_seconds",
    help: "Request latency, from arrival to the last byte.",
    labelNames: ["model", "supplier", "format"] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [registry],
  });
  const ttft = new Histogram({
    name: "lethe_time_to_first_token_seconds",
    help: "Time to first token of streamed responses.",
    labelNames: ["model", "supplier", "format"] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
  const upstreamErrors = new Counter({
    name: "lethe_upstream_errors_total",
    help: "Failed supplier attempts, by supplier and Lethe error code.",
    labelNames: ["supplier", "code"] as const,
    registers: [registry],
  });
  return {
    registry,
    observe(record: MetadataRecord): void {
      const model = record.model;
      const supplier = record.supplier ?? "none";
      const format = record.client_format;
      requests.inc({ model, supplier, status: record.status, format });
      if (record.input_tokens > 0) tokens.inc({ model, supplier, direction: "input" }, record.input_tokens);
      if (record.output_tokens > 0) tokens.inc({ model, supplier, direction: "output" }, record.output_tokens);
      latency.observe({ model, supplier, format }, record.latency_ms / 1000);
      if (record.ttft_ms !== null) ttft.observe({ model, supplier, format }, record.ttft_ms / 1000);
    },
    upstreamError(supplier: string, code: string): void {
      upstreamErrors.inc({ supplier, code });
    },
  };
}

type RecordFields = Parameters<typeof metadataRecord>[0];

function record(fields: Omit<RecordFields, "account">): MetadataRecord {
  return metadataRecord({ account: null, model: "chat-a", supplier: "fake-openai", ...fields });
}

/** Hand-checked records: output tokens before input ones, a latency on a bound, one above every bound, no supplier. */
const CHECKED: MetadataRecord[] = [
  record({ input_tokens: 0, output_tokens: 7, latency_ms: 5, ttft_ms: null }),
  record({ input_tokens: 120, output_tokens: 30, latency_ms: 250, ttft_ms: 40 }),
  record({ status: 502, input_tokens: 0, output_tokens: 0, latency_ms: 150_000, ttft_ms: null }),
  record({
    model: "unknown",
    supplier: null,
    status: 404,
    client_format: "anthropic",
    input_tokens: 0,
    output_tokens: 0,
    latency_ms: 0.4,
    ttft_ms: null,
  }),
];

/** Many records over few series, with fractional latencies so that sums go through float rounding. */
function mixedRecords(count: number): MetadataRecord[] {
  const models = ["chat-a", "chat-b"];
  const suppliers = ["fake-openai", "fake-anthropic", null];
  const statuses = [200, 200, 200, 429, 502, 504];
  const formats = ["openai", "anthropic"] as const;
  return Array.from({ length: count }, (_, i) =>
    record({
      model: models[i % models.length],
      supplier: suppliers[i % suppliers.length],
      status: statuses[i % statuses.length],
      client_format: formats[Math.floor(i / 2) % formats.length],
      input_tokens: (i * 7) % 50,
      output_tokens: (i * 13) % 40,
      latency_ms: ((i * 373.7) % 140_000) + 0.125,
      ttft_ms: i % 4 === 0 ? null : (i * 11.3) % 40_000,
    }),
  );
}

describe("GatewayMetrics exposition", () => {
  it("counts requests and tokens, sums latencies and renders cumulative buckets", async () => {
    const metrics = new GatewayMetrics();
    for (const checked of CHECKED) metrics.observe(checked);
    const lines = (await metrics.registry.metrics()).split("\n");

    const chatA = 'model="chat-a",supplier="fake-openai"';
    expect(lines).toContain(`lethe_requests_total{${chatA},status="200",format="openai"} 2`);
    expect(lines).toContain(`lethe_requests_total{${chatA},status="502",format="openai"} 1`);
    expect(lines).toContain('lethe_requests_total{model="unknown",supplier="none",status="404",format="anthropic"} 1');
    // the output series was touched first, so it is listed first
    const tokenLines = lines.filter((line) => line.startsWith("lethe_tokens_total{"));
    expect(tokenLines).toEqual([
      `lethe_tokens_total{${chatA},direction="output"} 37`,
      `lethe_tokens_total{${chatA},direction="input"} 120`,
    ]);

    const latencyOf = (suffix: string) =>
      lines.find((line) => line.startsWith(`lethe_request_duration_seconds${suffix}`));
    const series = `${chatA},format="openai"`;
    expect(latencyOf(`_bucket{le="0.005",${series}}`)).toBe(
      `lethe_request_duration_seconds_bucket{le="0.005",${series}} 1`,
    );
    expect(latencyOf(`_bucket{le="0.1",${series}}`)).toMatch(/ 1$/);
    expect(latencyOf(`_bucket{le="0.25",${series}}`)).toMatch(/ 2$/);
    expect(latencyOf(`_bucket{le="120",${series}}`)).toMatch(/ 2$/);
    expect(latencyOf(`_bucket{le="+Inf",${series}}`)).toMatch(/ 3$/);
    expect(latencyOf(`_count{${series}}`)).toMatch(/ 3$/);
    expect(latencyOf(`_sum{${series}}`)).toBe(`lethe_request_duration_seconds_sum{${series}} ${0.005 + 0.25 + 150}`);

    expect(lines).toContain(`lethe_time_to_first_token_seconds_count{${series}} 1`);
    expect(lines).toContain(`lethe_time_to_first_token_seconds_sum{${series}} 0.04`);
    // a series that never streamed has no TTFT lines at all
    expect(
      lines.filter((line) => line.startsWith("lethe_time_to_first_token_seconds") && line.includes("unknown")),
    ).toEqual([]);
  });

  it("renders exactly what prom-client's Counter and Histogram render for the same observations", async () => {
    const metrics = new GatewayMetrics();
    const reference = referenceMetrics();
    for (const observed of [...CHECKED, ...mixedRecords(5_000)]) {
      metrics.observe(observed);
      reference.observe(observed);
    }
    metrics.upstreamError("fake-openai", "LETHE_UPSTREAM_TIMEOUT");
    reference.upstreamError("fake-openai", "LETHE_UPSTREAM_TIMEOUT");

    const text = await metrics.registry.metrics();
    expect(text).toContain("lethe_request_duration_seconds_bucket{le=");
    expect(text).toBe(await reference.registry.metrics());
  });

  it("renders the same as prom-client after a registry reset, hiding series until they are updated again", async () => {
    const metrics = new GatewayMetrics();
    const reference = referenceMetrics();
    for (const observed of mixedRecords(300)) {
      metrics.observe(observed);
      reference.observe(observed);
    }
    metrics.registry.resetMetrics();
    reference.registry.resetMetrics();
    expect(await metrics.registry.metrics()).toBe(await reference.registry.metrics());

    for (const observed of mixedRecords(7).reverse()) {
      metrics.observe(observed);
      reference.observe(observed);
    }
    expect(await metrics.registry.metrics()).toBe(await reference.registry.metrics());
  });
});
