import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { get } from "node:http";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { type ServeProcess, spawnServe } from "./support/run-cli.js";

/**
 * `kill -HUP` on a running `lethe serve`: the config file is read again and its models
 * served without a restart, in one process and in every worker of `--workers 2`. A file
 * that does not load leaves the running config in place and says why.
 */

/** A config file of demo-backed models with these ids. */
function configWith(models: string[], extra = ""): string {
  const entries = models.map((id) => `  - id: ${id}\n    routes:\n      - supplier: demo\n        model: lethe-demo\n`);
  // a short drain, so the hang-up sent while shutting down lands in it
  const shutdown = "shutdown:\n  drain_delay_ms: 300\n";
  return `suppliers:\n  - id: demo\n    type: demo\n    zdr: true\n${shutdown}models:\n${entries.join("")}${extra}`;
}

/** The model ids a fresh connection is told (each on its own connection: workers take turns). */
function modelIds(url: string, key: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    get(`${url}/v1/models`, { agent: false, headers: { authorization: `Bearer ${key}` } }, (response) => {
      let text = "";
      response.setEncoding("utf8");
      response.on("data", (part: string) => {
        text += part;
      });
      response.on("end", () => resolve((JSON.parse(text) as { data: { id: string }[] }).data.map((model) => model.id)));
    }).on("error", reject);
  });
}

/**
 * Asks until every one of `times` fresh connections lists `expected`, or 20 s passed (a
 * worker the signal reached before it could take it is replaced, and its successor reads
 * the file as it starts: on a loaded machine that takes seconds).
 */
async function untilListed(url: string, key: string, expected: string[], times: number): Promise<string[][]> {
  let seen: string[][] = [];
  for (const giveUpAt = Date.now() + 20_000; Date.now() < giveUpAt; ) {
    seen = await Promise.all(Array.from({ length: times }, () => modelIds(url, key)));
    if (seen.every((ids) => JSON.stringify(ids) === JSON.stringify(expected))) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return seen;
}

describe("lethe serve reloads its config file on SIGHUP", () => {
  let cwd = "";
  let serve: ServeProcess | null = null;
  afterEach(async () => {
    await serve?.stop();
    serve = null;
    await rm(cwd, { recursive: true, force: true });
  });

  it.each([
    ["one process", [] as string[], 1],
    ["--workers 2", ["--workers", "2"], 2],
  ])("%s", { timeout: 90_000 }, async (_name, args, workers) => {
    cwd = await mkdtemp(path.join(os.tmpdir(), "lethe-reload-"));
    const configPath = path.join(cwd, "lethe.config.yaml");
    await writeFile(configPath, configWith(["first"]));
    const env = { LETHE_PORT: "0", LETHE_DATA_DIR: path.join(cwd, ".lethe"), LETHE_CONFIG: configPath };
    serve = spawnServe(env, cwd, args);
    const [, url] = await serve.waitFor(/listening on (http:\/\/\S+)/);
    const [key] = await serve.waitFor(/sk-lethe-\w+/);
    const pid = serve.child.pid as number;
    expect(await modelIds(url as string, key)).toEqual(["first"]);

    await writeFile(configPath, configWith(["first", "second"]));
    process.kill(pid, "SIGHUP");
    // every worker reloaded (one still starting when the signal came gets it once it listens,
    // and reads the file then: it must have done so before the file changes again below)
    await serve.waitFor(new RegExp(`(?:config_reloaded[\\s\\S]*){${workers}}`));
    // fresh connections, which the workers take in turn, all see it
    const seen = await untilListed(url as string, key, ["first", "second"], 4 * workers);
    expect(seen.every((ids) => ids.includes("second"))).toBe(true);

    // a file that does not load: the running config stays, and the reason is printed
    await writeFile(configPath, "models: [unclosed");
    process.kill(pid, "SIGHUP");
    await serve.waitFor(/config not reloaded: config file \S+ is not valid YAML/);
    expect(await untilListed(url as string, key, ["first", "second"], 2 * workers)).toEqual(
      Array.from({ length: 2 * workers }, () => ["first", "second"]),
    );

    // a change outside the routing is named as one that takes a restart
    await writeFile(configPath, configWith(["second"], "limits:\n  rpm: 5\n"));
    process.kill(pid, "SIGHUP");
    await serve.waitFor(/these changes take a restart: limits/);
    const after = await untilListed(url as string, key, ["second"], 4 * workers);
    expect(after.every((ids) => JSON.stringify(ids) === '["second"]')).toBe(true);

    // a model the reload leaves without a ZDR supplier is warned of, as at start
    const noZdr =
      "suppliers:\n  - id: demo\n    type: demo\n    zdr: true\n  - id: keeps\n    type: demo\n" +
      "models:\n  - id: second\n    routes:\n      - supplier: demo\n        model: lethe-demo\n" +
      "  - id: plain\n    routes:\n      - supplier: keeps\n        model: lethe-demo\n" +
      "shutdown:\n  drain_delay_ms: 300\n";
    await writeFile(configPath, noZdr);
    process.kill(pid, "SIGHUP");
    await serve.waitFor(/warning: model "plain" has no ZDR supplier/);
    expect(serve.output()).not.toMatch(/warning: model "second"/);

    expect(serve.child.exitCode).toBeNull();
    // a hang-up while shutting down neither reloads nor ends the process before its flush; nor
    // does a second SIGTERM or a SIGINT (a double Ctrl-C), which Node's default would obey at once
    const exited = new Promise<number | null>((resolve) => serve?.child.once("exit", (code) => resolve(code)));
    process.kill(pid, "SIGTERM");
    await new Promise((resolve) => setTimeout(resolve, 100));
    process.kill(pid, "SIGHUP");
    process.kill(pid, "SIGTERM");
    process.kill(pid, "SIGINT");
    expect(await exited).toBe(0);
    expect(serve.output()).toContain('"server_stopped"');
    if (workers === 1) expect(serve.output()).toContain("lethe: already shutting down");
    serve = null;
  });
});

describe("a hang-up while lethe serve is still loading", () => {
  let cwd = "";
  let serve: ServeProcess | null = null;
  afterEach(async () => {
    await serve?.stop();
    serve = null;
    await rm(cwd, { recursive: true, force: true });
  });

  it("does not end the process (a config tool reloading a service it has just started)", {
    timeout: 30_000,
  }, async () => {
    cwd = await mkdtemp(path.join(os.tmpdir(), "lethe-early-hup-"));
    const configPath = path.join(cwd, "lethe.config.yaml");
    await writeFile(configPath, configWith(["first"]));
    // a module hook holds the load of the CLI's modules for a while, and says when it does:
    // the hang-up comes then, while serve has not yet taken hang-ups over
    const marker = path.join(cwd, "loading");
    await writeFile(
      path.join(cwd, "slow-hooks.mjs"),
      `import { writeFileSync } from "node:fs";
export async function load(url, context, next) {
  if (url.endsWith("/dist/cli/main.js")) {
    writeFileSync(${JSON.stringify(marker)}, "");
    await new Promise((resolve) => setTimeout(resolve, 1500));
  }
  return next(url, context);
}
`,
    );
    const register = path.join(cwd, "register.mjs");
    await writeFile(
      register,
      `import { register } from "node:module";\nregister("./slow-hooks.mjs", import.meta.url);\n`,
    );
    const env = {
      LETHE_PORT: "0",
      LETHE_DATA_DIR: path.join(cwd, ".lethe"),
      LETHE_CONFIG: configPath,
      NODE_OPTIONS: `--import ${pathToFileURL(register).href}`,
    };
    serve = spawnServe(env, cwd);
    for (const giveUpAt = Date.now() + 20_000; !existsSync(marker) && Date.now() < giveUpAt; ) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(existsSync(marker)).toBe(true);
    process.kill(serve.child.pid as number, "SIGHUP");
    const [, url] = await serve.waitFor(/listening on (http:\/\/\S+)/);
    const [key] = await serve.waitFor(/sk-lethe-\w+/);
    expect(await modelIds(url as string, key)).toEqual(["first"]);
  });
});
