import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resolveConfig } from "../src/config/load-config.js";
import { openStore } from "../src/store/open-store.js";
import { LETHE_BIN, runCli } from "./support/run-cli.js";

describe("lethe CLI: accounts, keys, usage", () => {
  let dataDir: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), "lethe-cli-"));
    env = { LETHE_DATA_DIR: dataDir };
  });

  afterAll(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  it("creates an account, then refuses a duplicate", async () => {
    const created = await runCli(["accounts", "create", "acme", "--rpm", "100", "--tpm", "5000"], env);
    expect(created.code).toBe(0);
    expect(created.out).toMatch(/^created account acme \(acct_[0-9a-z]{20}\)$/);
    const again = await runCli(["accounts", "create", "acme"], env);
    expect(again.code).toBe(2);
    expect(again.err).toBe("lethe: account 'acme' already exists");
  });

  it("creates a key shown once, lists it by prefix and last four only, revokes it by id or by the key", async () => {
    const created = await runCli(["keys", "create", "--account", "acme", "--label", "ci runner"], env);
    expect(created.code).toBe(0);
    const key = created.out.match(/sk-lethe-[0-9A-Za-z]+/)?.[0] as string;
    const keyId = created.out.match(/key_[0-9a-z]{20}/)?.[0] as string;
    expect(key).toBeDefined();
    expect(keyId).toBeDefined();

    const listed = await runCli(["keys", "list", "--account", "acme"], env);
    expect(listed.code).toBe(0);
    expect(listed.out).toContain(keyId);
    expect(listed.out).toContain(`sk-lethe-…${key.slice(-4)}`);
    expect(listed.out).not.toContain(key);
    expect(listed.out).toContain("ci runner");
    expect(listed.out).toContain("active");

    const byKey = await runCli(["keys", "revoke", key], env);
    expect(byKey).toMatchObject({ code: 0, out: `revoked ${keyId}` });
    const byId = await runCli(["keys", "revoke", keyId], env);
    expect(byId).toMatchObject({ code: 0, out: `${keyId} was already revoked` });
    expect((await runCli(["keys", "list", "--account", "acme"], env)).out).toContain("revoked ");
  });

  it("creates an account that does not require ZDR with --zdr optional; every other account requires it", async () => {
    const lenient = await runCli(["accounts", "create", "lenient", "--zdr", "optional"], env);
    expect(lenient.code).toBe(0);
    expect(lenient.out).toMatch(/^created account lenient \(acct_[0-9a-z]{20}\), ZDR optional$/);
    const strict = await runCli(["accounts", "create", "strict", "--zdr", "required"], env);
    expect(strict.out).not.toContain("ZDR optional");
    const store = await openStore(resolveConfig({}, env, null));
    try {
      expect((await store.findAccountByName("lenient"))?.zdrRequired).toBe(false);
      expect((await store.findAccountByName("strict"))?.zdrRequired).toBe(true);
      expect((await store.findAccountByName("acme"))?.zdrRequired).toBe(true);
    } finally {
      await store.close();
    }
  });

  it("refuses to serve a config file that defines no models, with one line and exit 2", async () => {
    const file = path.join(dataDir, "empty.yaml");
    await writeFile(file, "suppliers: []\nmodels: []\n");
    const result = await runCli(["serve", "--config", file], { ...env, LETHE_PORT: "0" });
    expect(result.code).toBe(2);
    expect(result.err).toBe(
      "lethe: the config file defines no models: add at least one under `models:` (see the README)",
    );
  });

  it("runs store commands without the suppliers' API keys in the environment; serve still needs them", async () => {
    const file = path.join(dataDir, "keyed.yaml");
    await writeFile(
      file,
      [
        "suppliers:",
        '  - { id: s1, type: openai, base_url: "http://127.0.0.1:9/v1", api_key_env: LETHE_TEST_UNSET_KEY, zdr: true }',
        "models:",
        "  - { id: m1, routes: [{ supplier: s1, model: x }] }",
        "",
      ].join("\n"),
    );
    const keyed = { ...env, LETHE_CONFIG: file };
    expect((await runCli(["accounts", "create", "keyless-ops"], keyed)).code).toBe(0);
    const topUp = await runCli(["credits", "add", "--account", "keyless-ops", "2"], keyed);
    expect(topUp.err).toBe("");
    expect(topUp.out).toMatch(/balance 2\.000000/);
    expect((await runCli(["keys", "list", "--account", "keyless-ops"], keyed)).code).toBe(0);
    const serve = await runCli(["serve"], { ...keyed, LETHE_PORT: "0" });
    expect(serve.code).toBe(2);
    expect(serve.err).toBe('lethe: supplier "s1": environment variable LETHE_TEST_UNSET_KEY is not set');
  });

  it("lists accounts, and writes the CLI's changes to the audit trail that `operators events` prints", async () => {
    expect((await runCli(["accounts", "create", "listed", "--credits", "3", "--rpm", "7"], env)).code).toBe(0);
    const list = await runCli(["accounts", "list"], env);
    expect(list.code).toBe(0);
    expect(list.out.split("\n")[0]).toBe("NAME\tACCOUNT ID\tBALANCE\tRPM\tTPM\tZDR\tCREATED");
    expect(list.out).toMatch(/^listed\tacct_\w+\t3\.000000\t7\tdefault\trequired\t/m);
    const created = await runCli(["keys", "create", "--account", "listed"], env);
    const keyId = /key id: (\S+)/.exec(created.out)?.[1] ?? "";
    expect((await runCli(["credits", "add", "--account", "listed", "1.5"], env)).code).toBe(0);
    expect((await runCli(["keys", "revoke", keyId], env)).code).toBe(0);
    const events = await runCli(["operators", "events", "--limit", "4"], env);
    expect(events.code).toBe(0);
    const rows = events.out
      .split("\n")
      .slice(1)
      .map((row) => row.split("\t"));
    // newest first, each by the CLI, naming account, key and amount, never a key or a label
    expect(rows.map((row) => [row[1], row[2]])).toEqual([
      ["key_revoke", "cli"],
      ["credits_add", "cli"],
      ["key_create", "cli"],
      ["account_create", "cli"],
    ]);
    expect(rows[0]?.[5]).toBe(keyId);
    expect(rows[1]?.[6]).toBe("1.500000");
    expect(events.out).not.toContain("sk-lethe-");
  });

  it("lists operators, and rotates one's token: a new token each time, a revoked operator comes back", async () => {
    const created = await runCli(["operators", "create", "scraper"], env);
    const first = /token:\s+(\S+)/.exec(created.out)?.[1] ?? "";
    expect((await runCli(["operators", "revoke", "scraper"], env)).code).toBe(0);
    expect((await runCli(["operators", "list"], env)).out).toMatch(/^scraper\top_\w+\t\S+\trevoked /m);
    const rotated = await runCli(["operators", "rotate", "scraper"], env);
    expect(rotated.code).toBe(0);
    const second = /token:\s+(\S+)/.exec(rotated.out)?.[1] ?? "";
    expect(second).toMatch(/^lethe-op-/);
    expect(second).not.toBe(first);
    expect(rotated.out).toContain("The previous token no longer works.");
    expect((await runCli(["operators", "list"], env)).out).toMatch(/^scraper\top_\w+\t\S+\tactive$/m);
    expect((await runCli(["operators", "rotate", "nobody"], env)).err).toBe("lethe: no operator named 'nobody'");
    // the revoked operator's new token was a reinstatement; a second rotation is a rotation
    expect((await runCli(["operators", "rotate", "scraper"], env)).code).toBe(0);
    const events = await runCli(["operators", "events", "--limit", "4"], env);
    const operatorId = /^scraper\t(op_\w+)\t/m.exec((await runCli(["operators", "list"], env)).out)?.[1];
    // the CLI acted on the operator: it is named as what was changed, not as who changed it
    expect(
      events.out
        .split("\n")
        .slice(1)
        .map((row) => row.split("\t").slice(1, 4)),
    ).toEqual([
      ["operator_rotate", "cli", operatorId],
      ["operator_reinstate", "cli", operatorId],
      ["operator_revoke", "cli", operatorId],
      ["operator_create", "cli", operatorId],
    ]);
  });

  it("ends quietly when its reader closes the pipe early (`| head -1`), with no stack trace", async () => {
    expect((await runCli(["accounts", "create", "piped", "--credits", "5"], env)).code).toBe(0);
    const child = spawn(process.execPath, [LETHE_BIN, "credits", "show", "--account", "piped"], {
      env: { PATH: process.env.PATH ?? "", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    // the reader is gone before the first line is written
    child.stdout.destroy();
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString("utf8");
    });
    const [code] = await once(child, "exit");
    expect(stderr).toBe("");
    expect(code).toBe(0);
  });

  it("prints usage per day and model (empty for a new account)", async () => {
    const usage = await runCli(["usage", "--account", "acme"], env);
    expect(usage.code).toBe(0);
    expect(usage.out).toContain("DAY\tMODEL\tREQUESTS");
    expect(usage.out).toContain("(no requests in the last 30 days)");
  });

  it.each([
    [["accounts", "create"], /usage: lethe accounts create/],
    [["accounts", "create", "bad name!"], /account names use/],
    [["accounts", "create", "x", "--rpm", "-5"], /--rpm/],
    [["accounts", "create", "x", "--rpm", "1.5"], /--rpm must be a whole number from 1 to 2147483647/],
    [["accounts", "create", "x", "--tpm", "5000000000"], /--tpm must be a whole number from 1 to 2147483647/],
    [["accounts", "create", "deleted-acct_x"], /may not start with 'deleted-'/],
    [["keys", "create", "--account", "deleted-acct_x"], /may not start with 'deleted-'/],
    [["accounts", "create", "x", "--bogus"], /Unknown option '--bogus'/],
    // an option with nothing after it is named alone, not with Node's `<value>`
    [
      ["accounts", "create", "x", "--rpm"],
      /^lethe: --rpm needs a value; one starting with '-' is written --rpm=VALUE$/,
    ],
    // each keys subcommand takes only its own options
    [["keys", "list", "--account", "acme", "--label", "x"], /Unknown option '--label'/],
    [["keys", "revoke", "key_00000000000000000000", "--account", "acme"], /Unknown option '--account'/],
    [["operators", "create", "bad name!"], /^lethe: operator names use/],
    [
      ["accounts", "create", "x", "--credits", "-3"],
      /^lethe: --credits needs a value; one starting with '-' is written --credits=VALUE$/,
    ],
    [
      ["accounts", "frobnicate", "x"],
      /^lethe: unknown command 'accounts frobnicate' \(create, list, export or delete\); usage:/,
    ],
    [["accounts", "create", "x", "--zdr", "maybe"], /--zdr takes 'required' \(the default\) or 'optional'/],
    [["keys", "create"], /--account is required/],
    [["keys", "create", "--account", "nobody"], /no account named 'nobody'/],
    [["keys", "revoke"], /usage: lethe keys revoke/],
    [["keys", "revoke", "key_00000000000000000000"], /no such key/],
    [["keys", "revoke", "sk-lethe-garbage"], /not a valid Lethe key/],
    [["keys", "revoke", "whatever"], /give a key id/],
    [["keys", "revoke", "key_short"], /^lethe: a key id is key_ and 20 lowercase letters or digits/],
    [["keys", "revoke", "key_ABCDEFGHIJKLMNOPQRST"], /^lethe: a key id is key_ and 20 lowercase letters or digits/],
    [["keys", "frobnicate"], /usage: lethe keys/],
    [["usage", "--account", "acme", "--days", "zero"], /--days must be a whole number from 1 to 36500$/],
    [["usage", "--account", "acme", "--days", "999999999"], /--days must be a whole number from 1 to 36500$/],
    [["keys", "create", "--account", "acme", "--rpm", "0"], /--rpm must be a whole number from 1 to 2147483647$/],
    [["launch"], /unknown command 'launch'/],
    [["serve", "--workers", "100000"], /^lethe: --workers must be a whole number from 1 to 256$/],
  ])("exits 2 with a one-line reason on bad input: %j", async (args, reason) => {
    const result = await runCli(args, env);
    expect(result.code).toBe(2);
    expect(result.err).toMatch(reason);
    expect(result.err.split("\n")).toHaveLength(1);
  });
  it.each([
    [{ LETHE_SECRET: "too-short" }, /LETHE_SECRET must be at least 16 characters/],
    [{ LETHE_DATABASE_URL: "mysql://root@127.0.0.1/test" }, /LETHE_DATABASE_URL must be a postgres:\/\/ URL/],
    [{ LETHE_DATABASE_URL: "not a url" }, /LETHE_DATABASE_URL must be a postgres:\/\/ URL/],
    [{ LETHE_DATABASE_URL: "postgres://127.0.0.1/test?schema=Bad-Name" }, /a lowercase identifier/],
    [{ LETHE_REDIS_URL: "http://127.0.0.1:6379" }, /LETHE_REDIS_URL must be a redis:\/\/ or rediss:\/\/ URL/],
  ])("exits 2 with a one-line reason on a bad environment: %j", async (extra, reason) => {
    const result = await runCli(["accounts", "create", "env-check"], { ...env, ...extra });
    expect(result.code).toBe(2);
    expect(result.err).toMatch(reason);
    expect(result.err.split("\n")).toHaveLength(1);
  });

  it("reports a broken config file as one line", async () => {
    const result = await runCli(["keys", "list", "--account", "acme", "--config", "/nonexistent/lethe.yaml"], env);
    expect(result.code).toBe(2);
    expect(result.err).toBe("lethe: cannot read config file /nonexistent/lethe.yaml (ENOENT)");
    const directory = await runCli(["keys", "list", "--account", "acme", "--config", dataDir], env);
    expect(directory.err).toBe(`lethe: cannot read config file ${dataDir} (EISDIR)`);
    // where the YAML breaks, by line, and never the text of that line
    const file = path.join(dataDir, "broken.yaml");
    await writeFile(file, "suppliers:\n  - id: secret-value-here\n    type: [unclosed\n");
    const broken = await runCli(["keys", "list", "--account", "acme", "--config", file], env);
    expect(broken.code).toBe(2);
    expect(broken.err).toMatch(/^lethe: config file \S+broken\.yaml is not valid YAML \(line \d+\)$/);
    expect(broken.err).not.toContain("secret-value-here");
  });

  it("says a data dir through a file is not a directory, in one line", async () => {
    const file = path.join(dataDir, "not-a-dir");
    await writeFile(file, "");
    const result = await runCli(["accounts", "list"], { ...env, LETHE_DATA_DIR: path.join(file, "data") });
    expect(result.code).toBe(1);
    expect(result.err).toMatch(
      /^lethe: accounts failed: a path \(LETHE_DATA_DIR.* where a directory should be \(ENOTDIR\)$/,
    );
  });
});

describe("lethe help", () => {
  it("lists every command the README documents", async () => {
    const readme = await (await import("node:fs/promises")).readFile(
      path.resolve(import.meta.dirname, "../README.md"),
      "utf8",
    );
    const documented = new Set(
      [...readme.matchAll(/^npx lethe ([a-z]+)(?: ([a-z]+))?/gm)].map((match) =>
        // a second word that is a subcommand (not an argument like NAME or --flag)
        [match[1], match[2]].filter((word) => word !== undefined).join(" "),
      ),
    );
    expect(documented.size).toBeGreaterThan(10);
    const { code, out } = await runCli(["help"], {});
    expect(code).toBe(0);
    for (const command of documented) expect(out).toContain(`lethe ${command}`);
  });
});

describe("lethe COMMAND --help", () => {
  it("prints the command's own usage and exits 0, for every command", async () => {
    for (const command of ["serve", "accounts", "credits", "keys", "usage", "operators", "routes", "zdr", "audit"]) {
      for (const flag of ["--help", "-h"]) {
        const { code, out, err } = await runCli([command, "create", flag], {});
        expect({ command, flag, code, err }).toEqual({ command, flag, code: 0, err: "" });
        expect(out).toMatch(new RegExp(`^Usage:\\n  lethe ${command}\\b`));
        // only this command's lines
        expect(
          out
            .split("\n")
            .filter((line) => line.startsWith("  lethe "))
            .every((line) => line.startsWith(`  lethe ${command}`)),
        ).toBe(true);
      }
    }
  });

  it("takes --help after -- as a value, and an unknown command's --help stays an unknown command", async () => {
    const unknown = await runCli(["frobnicate", "--help"], {});
    expect(unknown.code).toBe(2);
    expect(unknown.err).toContain("unknown command");
    const asValue = await runCli(["keys", "revoke", "--", "--help"], {});
    expect(asValue.out).not.toContain("Usage:");
  });
});
