import { generateKeyPairSync } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RetentionStatement, signStatement } from "../src/zdr/retention-statement.js";
import { runCli } from "./support/run-cli.js";

/**
 * The CLI pointed at a server that is not a trustworthy Lethe: what it prints carries no
 * terminal control (escape sequences, bells, forged lines), and it reads no further than a
 * bound. The server signs its own statement, so `zdr verify` reaches its VALID lines.
 */

const ESCAPES = "\u001b[2J\u001b]0;owned\u0007\r\nVALID: forged line\u202e";

const keys = generateKeyPairSync("ed25519");
const statement = {
  lethe_version: `9.9.9${ESCAPES}`,
  issued_at: `2026-11-25${ESCAPES}`,
  config_sha256: "0".repeat(64),
  content_retained: `none${ESCAPES}`,
  metadata: { fields: [], retention_days: 30 },
  suppliers: [{ id: `evil${ESCAPES}`, type: "openai", zdr: true }],
} as unknown as RetentionStatement;
const signed = signStatement(statement, keys);

let server: Server;
let url = "";
/** What the next /v1/zdr answer is. */
let mode: "signed" | "huge" | "not-array" = "signed";

beforeAll(async () => {
  server = createServer((request, response) => {
    if (request.url === "/v1/zdr/key") {
      response.end(JSON.stringify({ public_key: signed.public_key }));
    } else if (request.url === "/v1/zdr" && mode === "huge") {
      response.end(JSON.stringify({ ...signed, padding: "x".repeat(3_000_000) }));
    } else if (request.url === "/v1/zdr") {
      const body = mode === "not-array" ? { ...signed, statement: { ...statement, suppliers: "none" } } : signed;
      response.end(JSON.stringify(body));
    } else if (request.url === "/v1/models") {
      response.end(JSON.stringify({ data: [{ id: `m1${ESCAPES}` }, { id: "m2" }] }));
    } else if (request.url === "/metrics") {
      response.end(
        `lethe_route_state{route="a/b\\n${ESCAPES.replaceAll("\n", "\\n")}"} 2\n` +
          'lethe_route_error_rate{route="c/d"} NaN\nlethe_route_rest_seconds{route="c/d"} +Inf\n',
      );
    } else response.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

/** No C0 or C1 control but the newlines between lines (and the tabs between columns), no bidirectional override. */
function expectPrintable(text: string): void {
  expect(text.replace(/[\n\t]/g, "")).not.toMatch(/[\p{Cc}\u202a-\u202e\u2066-\u2069]/u);
}

describe("the CLI against a hostile server", () => {
  it("lethe zdr verify prints a hostile statement's strings without terminal control, and forges no line", async () => {
    mode = "signed";
    const result = await runCli(["zdr", "verify", url], {});
    expect(result.code).toBe(0);
    expectPrintable(result.out);
    expect(result.out.split("\n").filter((line) => line.startsWith("VALID:"))).toHaveLength(1);
    expect(result.out).toContain("evil\\u001b[2J");
  });

  it("lethe zdr verify refuses a statement of the wrong shape or size, in one line", async () => {
    mode = "not-array";
    expect(await runCli(["zdr", "verify", url], {})).toMatchObject({
      code: 2,
      err: `lethe: ${url}/v1/zdr is not a signed statement`,
    });
    mode = "huge";
    expect(await runCli(["zdr", "verify", url], {})).toMatchObject({
      code: 2,
      err: `lethe: ${url}/v1/zdr answered more than 1048576 bytes`,
    });
  });

  it("lethe audit --target drives and prints no model id a Lethe could not have (one with escapes)", async () => {
    const result = await runCli(["audit", "--target", url, "--key", "sk-lethe-any", "--no-log"], {
      LETHE_DATA_DIR: "/nonexistent/lethe-hostile",
    });
    expect(result.code).toBe(1);
    expectPrintable(result.out);
    expect(result.out).not.toContain("forged");
    expect(result.out).toContain("m2");
  });

  it("lethe routes prints hostile route names without terminal control, and no Infinity or NaN", async () => {
    const result = await runCli(["routes", "--url", url], {});
    expect(result.code).toBe(0);
    expectPrintable(result.out);
    // a header and two routes: the newline inside a route's name forged no row
    expect(result.out.trimEnd().split("\n")).toHaveLength(3);
    expect(result.out).not.toMatch(/Infinity|NaN/);
  });
});
