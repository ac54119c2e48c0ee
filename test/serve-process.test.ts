import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import OpenAI from "openai";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findCanaries, makeCanary } from "./support/canary.js";
import { runCli, type ServeProcess, spawnServe } from "./support/run-cli.js";

// The operator's path end to end: `lethe serve` as a real process, the CLI beside it.
describe("lethe serve as a process", () => {
  let cwd: string;
  let env: Record<string, string>;
  let serve: ServeProcess;
  const printed: string[] = [];
  const canaries: string[] = [];

  beforeAll(async () => {
    cwd = await mkdtemp(path.join(os.tmpdir(), "lethe-serve-"));
    env = { LETHE_PORT: "0", LETHE_DATA_DIR: path.join(cwd, ".lethe") };
    serve = spawnServe(env, cwd);
  });

  afterAll(async () => {
    await serve.stop();
    printed.push(serve.output());
    expect(
      await findCanaries(canaries, { dataDir: env.LETHE_DATA_DIR, texts: { output: printed.join("\n") } }),
    ).toEqual([]);
    await rm(cwd, { recursive: true, force: true });
  });

  it("prints the demo account's key once, with a curl line, and serves the demo model", async () => {
    const [, url = ""] = await serve.waitFor(/listening on (http:\/\/127\.0\.0\.1:\d+)/);
    const [, key] = await serve.waitFor(
      /curl \S+\/v1\/chat\/completions -H "Authorization: Bearer (sk-lethe-[0-9A-Za-z]{38})"/,
    );
    expect(serve.output().match(/sk-lethe-/g)).toHaveLength(2);
    expect(serve.output()).toContain(`curl ${url}/v1/chat/completions`);
    // the demo model is free: no word about credit
    expect(serve.output()).not.toContain("credits add");
    const client = new OpenAI({ apiKey: key, baseURL: `${url}/v1`, maxRetries: 0 });
    const secret = makeCanary("process");
    canaries.push(secret);
    const answer = await client.chat.completions.create({
      model: "lethe-demo",
      messages: [{ role: "user", content: secret }],
    });
    expect(answer.choices[0]?.message.content).toContain(secret);

    // a client that walks away mid-stream
    const aborter = new AbortController();
    const stream = await client.chat.completions.create(
      { model: "lethe-demo", stream: true, messages: [{ role: "user", content: `${secret} ${"word ".repeat(50)}` }] },
      { signal: aborter.signal },
    );
    // the SDK ends the iteration quietly when its own signal aborts; the demo may already
    // have sent everything (the cut mid-stream is covered against a slow fake supplier)
    for await (const _chunk of stream) aborter.abort();

    // a key revoked by the CLI, in another process, is refused on the next request
    const created = await runCli(["keys", "create", "--account", "demo"], env);
    const second = created.out.match(/sk-lethe-[0-9A-Za-z]+/)?.[0] as string;
    const secondClient = new OpenAI({ apiKey: second, baseURL: `${url}/v1`, maxRetries: 0 });
    await secondClient.chat.completions.create({ model: "lethe-demo", messages: [{ role: "user", content: "hi" }] });
    expect((await runCli(["keys", "revoke", second], env)).code).toBe(0);
    await expect(
      secondClient.chat.completions.create({ model: "lethe-demo", messages: [{ role: "user", content: "hi" }] }),
    ).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
  });

  it("flushes every record on SIGTERM, and `lethe usage` shows them", async () => {
    expect(await serve.stop()).toBe(0);
    expect(serve.output(), serve.output()).toMatch(/"flushed_records":4/);
    // the stop is logged as it begins, with the signal that asked for it
    expect(serve.output()).toMatch(/"signal":"SIGTERM","event":"server_stopping"[\s\S]*"event":"server_stopped"/);
    const usage = await runCli(["usage", "--account", "demo"], env);
    expect(usage.code).toBe(0);
    const row = usage.out.split("\n").find((line) => line.includes("lethe-demo"));
    // four records, three of them the account's: a refused key is not attributed to anyone
    expect(row?.split("\t")[2]).toBe("3");
  });

  it("does not print a key again on the next start", async () => {
    printed.push(serve.output());
    serve = spawnServe(env, cwd);
    await serve.waitFor(/listening on/);
    expect(serve.output()).not.toContain("sk-lethe-");
  });

  it("says how to add credit on a first start whose models are priced, before the curl line that would get 402", async () => {
    const pricedDir = await mkdtemp(path.join(os.tmpdir(), "lethe-priced-"));
    const config = path.join(pricedDir, "lethe.config.yaml");
    await writeFile(
      config,
      [
        "suppliers:",
        "  - { id: demo, type: demo, zdr: true }",
        "  - { id: loose, type: demo }",
        "models:",
        "  - { id: paid-demo, routes: [{ supplier: demo, model: lethe-demo, price: { input_per_mtok: 1, output_per_mtok: 2 } }] }",
        "  - { id: loose-demo, routes: [{ supplier: loose, model: lethe-demo }] }",
        "",
      ].join("\n"),
    );
    const priced = spawnServe(
      { LETHE_PORT: "0", LETHE_DATA_DIR: path.join(pricedDir, ".lethe"), LETHE_CONFIG: config },
      pricedDir,
    );
    try {
      await priced.waitFor(/curl \S+\/v1\/chat\/completions/);
      const output = priced.output();
      expect(output).toContain("npx lethe credits add --account demo 10");
      expect(output.indexOf("credits add")).toBeLessThan(output.indexOf("curl "));
      // a model only a supplier without ZDR serves is refused to every default account: said at start
      expect(output).toMatch(/warning: model "loose-demo" has no ZDR supplier/);
      expect(output).not.toMatch(/model "paid-demo" has no ZDR/);
      expect(output).not.toContain("the curl below is refused (403)");
    } finally {
      await priced.stop();
      await rm(pricedDir, { recursive: true, force: true });
    }
  });

  it("says, before its curl line, that the first model would be refused to 'demo' for want of a ZDR supplier", async () => {
    const looseDir = await mkdtemp(path.join(os.tmpdir(), "lethe-loose-"));
    const config = path.join(looseDir, "lethe.config.yaml");
    const lines = ["suppliers:", "  - { id: loose, type: demo }", "models:"];
    lines.push("  - { id: loose-demo, routes: [{ supplier: loose, model: lethe-demo }] }", "");
    await writeFile(config, lines.join("\n"));
    const loose = spawnServe(
      { LETHE_PORT: "0", LETHE_DATA_DIR: path.join(looseDir, ".lethe"), LETHE_CONFIG: config },
      looseDir,
    );
    try {
      await loose.waitFor(/curl \S+\/v1\/chat\/completions/);
      const output = loose.output();
      expect(output).toContain(
        "'loose-demo' has no ZDR supplier and 'demo' requires ZDR: the curl below is refused (403)",
      );
      expect(output.indexOf("refused (403)")).toBeLessThan(output.indexOf("Try it:"));
    } finally {
      await loose.stop();
      await rm(looseDir, { recursive: true, force: true });
    }
  });
});

describe("how many workers lethe serve starts", () => {
  let cwd: string;

  beforeAll(async () => {
    cwd = await mkdtemp(path.join(os.tmpdir(), "lethe-count-"));
  });

  afterAll(async () => {
    await rm(cwd, { recursive: true, force: true });
  });

  it("starts one worker on PostgreSQL without Redis, whose limits could not be shared", async () => {
    const schema = `lethe_workers_${process.pid}`;
    const serve = spawnServe(
      {
        LETHE_PORT: "0",
        LETHE_DATA_DIR: path.join(cwd, "pg"),
        LETHE_DATABASE_URL: `postgres://postgres@127.0.0.1:5432/test?schema=${schema}`,
        LETHE_SECRET: "workers-test-secret-0123456789abcdef",
      },
      cwd,
    );
    try {
      const [line] = await serve.waitFor(/Lethe is listening on .*\)/);
      expect(line).not.toMatch(/\d+ workers/);
    } finally {
      await serve.stop();
      const { default: pg } = await import("pg");
      const client = new pg.Client({ connectionString: "postgres://postgres@127.0.0.1:5432/test" });
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await client.end();
    }
  });

  it("warns that limits are per worker when told to start several without Redis", async () => {
    const serve = spawnServe({ LETHE_PORT: "0", LETHE_DATA_DIR: path.join(cwd, "sqlite") }, cwd, ["--workers", "2"]);
    try {
      await serve.waitFor(/listening on .*2 workers/);
      expect(serve.output()).toMatch(/"workers":2,"event":"limits_per_worker"/);
    } finally {
      await serve.stop();
    }
  });

  it("replaces a dead worker whose replacement cannot read the config file: it exits, it does not hang", async () => {
    const configPath = path.join(cwd, "workers.config.yaml");
    const demoModel = "  - id: chat\n    routes:\n      - supplier: demo\n        model: lethe-demo\n";
    await writeFile(configPath, `suppliers:\n  - id: demo\n    type: demo\n    zdr: true\nmodels:\n${demoModel}`);
    const env = { LETHE_PORT: "0", LETHE_DATA_DIR: path.join(cwd, "replaced"), LETHE_CONFIG: configPath };
    const serve = spawnServe(env, cwd, ["--workers", "2"]);
    try {
      await serve.waitFor(/listening on .*2 workers/);
      // the file goes bad without a hang-up, then a worker dies: its replacement reads the bad file
      await writeFile(configPath, "models: [unclosed");
      const workers = execFileSync("pgrep", ["-P", String(serve.child.pid)], { encoding: "utf8" })
        .trim()
        .split("\n");
      process.kill(Number(workers[0]), "SIGKILL");
      // the replacement said why and exited (its IPC channel kept it alive, never counted as dead
      // nor replaced), so the primary replaces it in turn, after a back-off
      await serve.waitFor(/^(?=[\s\S]*is not valid YAML)(?=(?:[\s\S]*?"worker_replaced"){2})/);
    } finally {
      await serve.stop();
    }
  });
});

describe("a start that cannot listen", () => {
  let cwd: string;
  let blocker: import("node:net").Server;
  let port: number;

  beforeAll(async () => {
    cwd = await mkdtemp(path.join(os.tmpdir(), "lethe-taken-"));
    const { createServer } = await import("node:net");
    blocker = createServer().listen(0, "127.0.0.1");
    await new Promise((resolve) => blocker.once("listening", resolve));
    port = (blocker.address() as import("node:net").AddressInfo).port;
  });

  afterAll(async () => {
    await new Promise((resolve) => blocker.close(resolve));
    await rm(cwd, { recursive: true, force: true });
  });

  it("says the port is taken, creates no demo account, and shows the key on the start that serves", async () => {
    const env = { LETHE_PORT: String(port), LETHE_DATA_DIR: path.join(cwd, "single") };
    const failed = spawnServe(env, cwd);
    expect(await new Promise((resolve) => failed.child.once("exit", resolve))).toBe(1);
    expect(failed.output()).toContain(
      `lethe: serve failed: the address LETHE_HOST:LETHE_PORT is already in use, here 127.0.0.1:${port} (EADDRINUSE)`,
    );
    expect(failed.output()).not.toContain("sk-lethe-");
    const serving = spawnServe({ ...env, LETHE_PORT: "0" }, cwd);
    try {
      await serving.waitFor(/sk-lethe-[0-9A-Za-z]{38}/);
    } finally {
      await serving.stop();
    }
  });

  it("exits with --workers 2 rather than replacing workers that can never start", async () => {
    const env = { LETHE_PORT: String(port), LETHE_DATA_DIR: path.join(cwd, "workers") };
    const failed = spawnServe(env, cwd, ["--workers", "2"]);
    const code = await new Promise<number | null>((resolve) => failed.child.once("exit", resolve));
    expect(code).toBe(1);
    expect(failed.output()).toContain("already in use");
    expect(failed.output()).not.toContain("worker_replaced");
    expect(failed.output()).not.toContain("sk-lethe-");
  });
});

describe("a refusal while the client is still sending its body", () => {
  let cwd: string;
  let serve: ServeProcess;
  let url: string;
  let key: string;

  beforeAll(async () => {
    cwd = await mkdtemp(path.join(os.tmpdir(), "lethe-serve-drain-"));
    serve = spawnServe({ LETHE_PORT: "0", LETHE_DATA_DIR: path.join(cwd, ".lethe") }, cwd);
    [, url = ""] = await serve.waitFor(/listening on (http:\/\/127\.0\.0\.1:\d+)/);
    [, key = ""] = await serve.waitFor(/Bearer (sk-lethe-[0-9A-Za-z]{38})/);
  });

  afterAll(async () => {
    await serve.stop();
    await rm(cwd, { recursive: true, force: true });
  });

  // only a gateway in a process of its own shows it: the answer went out, the connection closed
  // with the rest of the body unread, and the kernel's reset lost the answer (EPIPE, ECONNRESET)
  it.each([
    ["413 to a body past the 32 MiB limit", () => key, 413],
    ["401 to a wrong key with a large body", () => `sk-lethe-${"w".repeat(38)}`, 401],
  ])("answers %s after reading the body, every time", async (_, callerKey, status) => {
    const body = `{"model":"lethe-demo","messages":[],"padding":"${"x".repeat(40 * 1024 * 1024)}"}`;
    for (let attempt = 0; attempt < 4; attempt++) {
      const answer = await request(`${url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${callerKey()}`, "content-type": "application/json" },
        body,
      }).then(
        async (response) => ({ status: response.statusCode, text: await response.body.text() }),
        (thrown: { code?: string }) => ({ status: 0, text: thrown.code ?? "error" }),
      );
      expect(answer.status, answer.text).toBe(status);
    }
  });
});

describe("LETHE_SECRET on a data dir that already holds a generated secret", () => {
  it("warns that the keys issued under the generated one will be refused, and only then", async () => {
    const cwd = await mkdtemp(path.join(os.tmpdir(), "lethe-secret-"));
    const env = { LETHE_PORT: "0", LETHE_DATA_DIR: path.join(cwd, ".lethe") };
    const warning = /LETHE_SECRET differs from the secret generated in the data dir/;
    try {
      const first = spawnServe(env, cwd);
      await first.waitFor(/listening on/);
      await first.stop();
      const generated = (await readFile(path.join(env.LETHE_DATA_DIR, "secret"), "utf8")).trim();
      for (const [secret, warned] of [
        ["another-secret-0123456789", true],
        [generated, false],
      ] as const) {
        const serve = spawnServe({ ...env, LETHE_SECRET: secret }, cwd);
        await serve.waitFor(/listening on/);
        await serve.stop();
        expect(warning.test(serve.output())).toBe(warned);
        expect(serve.output()).not.toContain(secret);
      }
    } finally {
      await rm(cwd, { recursive: true, force: true });
    }
  });
});
