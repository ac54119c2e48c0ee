import { readFile } from "node:fs/promises";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { ConfigError, resolveConfig } from "../src/config/load-config.js";

/** The README's config example is what operators copy: it must load, and mean what it says. */
describe("the README's config example", () => {
  it("loads, with every documented value where the comments put it", async () => {
    const readme = await readFile(path.resolve(import.meta.dirname, "../README.md"), "utf8");
    const section = readme.slice(readme.indexOf("## Configuration"));
    const example = /```yaml\n([\s\S]*?)```/.exec(section)?.[1];
    expect(example).toBeDefined();
    const config = resolveConfig(
      parseYaml(example as string),
      { ACME_KEY: "sk-acme", ACME_ANTHROPIC_KEY: "sk-ant-acme", LETHE_DATA_DIR: "/tmp/unused" },
      "README.md",
    );
    expect([...config.suppliers.keys()]).toEqual(["acme-openai", "acme-anthropic"]);
    expect(config.models.get("fast-chat")?.routes.map((route) => route.key)).toEqual([
      "acme-openai/llama-3.1-8b",
      "acme-anthropic/claude-haiku",
    ]);
    expect(config.limits).toEqual({
      rpm: 600,
      tpm: 1_000_000,
      maxBodyBytes: 33_554_432,
      maxJsonValues: 200_000,
      authFailuresPerMinute: 20,
      maxConnections: 10_000,
      maxConnectionsPerAddress: 1_000,
      requestTimeoutMs: 60_000,
    });
    expect(config.models.get("fast-chat")?.routes.map((route) => route.price)).toEqual([
      { inputPerMtok: 0.1, outputPerMtok: 0.2, cachedInputPerMtok: 0.05, cacheWritePerMtok: 0.1 },
      { inputPerMtok: 0.8, outputPerMtok: 4, cachedInputPerMtok: 0.8, cacheWritePerMtok: 1 },
    ]);
    expect(config.server.trustedProxies).toEqual([]);
    expect(config.shutdown).toEqual({ drainDelayMs: 0, deadlineMs: 30_000 });
  });

  it("refuses a route whose cached input costs more than its input (reservations assume it never does)", () => {
    const withPrice = (price: Record<string, number>) =>
      resolveConfig(
        {
          suppliers: [{ id: "demo", type: "demo", zdr: true }],
          models: [{ id: "m", routes: [{ supplier: "demo", model: "lethe-demo", price }] }],
        },
        { LETHE_DATA_DIR: "/tmp/unused" },
        null,
      );
    expect(() => withPrice({ input_per_mtok: 1, output_per_mtok: 2, cached_input_per_mtok: 3 })).toThrow(
      /cached_input_per_mtok may not be above input_per_mtok/,
    );
    expect(() => withPrice({ input_per_mtok: 1, output_per_mtok: 2, cached_input_per_mtok: 3 })).toThrow(ConfigError);
    expect(
      withPrice({ input_per_mtok: 1, output_per_mtok: 2, cached_input_per_mtok: 1 }).models.get("m"),
    ).toBeDefined();
    // a price past any model's would not be summed exactly (cost.ts): 1e300 used to bill 0
    expect(() => withPrice({ input_per_mtok: 1, output_per_mtok: 1e300 })).toThrow(
      /a price per million tokens is at most 1000000/,
    );
    expect(withPrice({ input_per_mtok: 1_000_000, output_per_mtok: 1_000_000 }).models.get("m")).toBeDefined();
  });

  it("sends translated output limits as max_completion_tokens to OpenAI itself, max_tokens elsewhere, unless told", () => {
    const fieldOf = (supplier: Record<string, unknown>) =>
      resolveConfig(
        {
          suppliers: [{ id: "s", type: "openai", zdr: true, ...supplier }],
          models: [{ id: "m", routes: [{ supplier: "s", model: "x" }] }],
        },
        { LETHE_DATA_DIR: "/tmp/unused" },
        null,
      ).suppliers.get("s" as never)?.maxTokensField;
    expect(fieldOf({ base_url: "https://api.openai.com/v1" })).toBe("max_completion_tokens");
    expect(fieldOf({ base_url: "http://127.0.0.1:8000/v1" })).toBe("max_tokens");
    expect(fieldOf({ base_url: "http://127.0.0.1:8000/v1", max_tokens_field: "max_completion_tokens" })).toBe(
      "max_completion_tokens",
    );
  });

  it("refuses configs that contradict themselves or could not work, with a reason that quotes no stray input", () => {
    const load = (document: Record<string, unknown>) => () =>
      resolveConfig(
        {
          suppliers: [{ id: "s", type: "openai", base_url: "http://127.0.0.1:8000/v1", zdr: true }],
          models: [{ id: "m", routes: [{ supplier: "s", model: "x" }] }],
          ...document,
        },
        { LETHE_DATA_DIR: "/tmp/unused" },
        null,
      );
    expect(load({ suppliers: [{ id: "s", type: "openai", base_url: "ftp://files.example/v1", zdr: true }] })).toThrow(
      /base_url: must be an http:\/\/ or https:\/\/ URL/,
    );
    expect(load({ retention: { metadata_days: 500, aggregate_days: 10 } })).toThrow(
      /metadata_days cannot be more than aggregate_days/,
    );
    // a long metadata window alone (which loaded before this check) takes the aggregates along
    expect(load({ retention: { metadata_days: 500 } })().retention).toEqual({ metadataDays: 500, aggregateDays: 500 });
    expect(load({ retention: { metadata_days: 30 } })().retention).toEqual({ metadataDays: 30, aggregateDays: 400 });
    expect(
      load({
        models: [
          {
            id: "m",
            routes: [
              { supplier: "s", model: "x" },
              { supplier: "s", model: "x", weight: 2 },
            ],
          },
        ],
      }),
    ).toThrow(/route s\/x is listed twice/);
    expect(load({ colour: "blue" })).toThrow(/unknown field "colour"/);
    // an upstream model name reaches /metrics labels and the CLI's output: no terminal control in it
    expect(load({ models: [{ id: "m", routes: [{ supplier: "s", model: "x\u001b[31m\nforged" }] }] })).toThrow(
      /may not hold control characters/,
    );
    // a credit hold must outlast its request: retries until deadline_ms, then one attempt of total_ms
    const onPostgres = (document: Record<string, unknown>) => () =>
      resolveConfig(
        {
          suppliers: [{ id: "s", type: "openai", base_url: "http://127.0.0.1:8000/v1", zdr: true }],
          models: [{ id: "m", routes: [{ supplier: "s", model: "x" }] }],
          ...document,
        },
        { LETHE_DATA_DIR: "/tmp/unused", LETHE_DATABASE_URL: "postgres://127.0.0.1/unused" },
        null,
      );
    const slowSupplier = (total_ms: number) => [
      { id: "s", type: "openai", base_url: "http://127.0.0.1:8000/v1", zdr: true, timeouts: { total_ms } },
    ];
    expect(onPostgres({ suppliers: slowSupplier(1_200_000) })).toThrow(
      /billing.hold_ttl_ms \(900000\) must be at least a minute longer than a request may run on PostgreSQL: routing.deadline_ms \+ the longest route total_ms is 1260000 ms/,
    );
    expect(onPostgres({ suppliers: slowSupplier(1_200_000), billing: { hold_ttl_ms: 1_320_000 } })).not.toThrow();
    expect(onPostgres({ billing: { hold_ttl_ms: 600_000 } })).toThrow(/hold_ttl_ms \(600000\)/);
    expect(onPostgres({ routing: { deadline_ms: 300_000 } })).toThrow(/is 900000 ms/);
    // SQLite holds nothing that expires: a long total_ms loads as before
    expect(load({ suppliers: slowSupplier(1_800_000) })).not.toThrow();
    // Node's timers fire at once past 2^31 - 1 ms: every request failed within a millisecond
    expect(load({ suppliers: slowSupplier(99_999_999_999_999) })).toThrow(
      /total_ms: a duration is at most 86400000 ms/,
    );
    expect(load({ shutdown: { deadline_ms: 3_000_000_000 } })).toThrow(/deadline_ms: a duration is at most 86400000/);
    expect(load({ suppliers: slowSupplier(86_400_000) })).not.toThrow();
    // a file that is no config at all (`--config /etc/shadow`): its lines are not repeated back
    const shadow = "root:$y$j9T$abcdefghijklmnop:19000:0:99999:7:::";
    const refused = (() => {
      try {
        load({ [shadow]: null })();
      } catch (error) {
        return error as Error;
      }
      throw new Error("expected a refusal");
    })();
    expect(refused).toBeInstanceOf(ConfigError);
    expect(refused.message).toMatch(/1 unknown field \(not shown/);
    expect(refused.message).not.toContain("root:");
  });
});
