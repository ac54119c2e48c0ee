// Compares two builds of Lethe on the bench's request (issue 2's 50-connection figure):
// both run at once against one fake supplier, and autocannon measures them in
// alternating rounds (A B, B A, A B, ...), so a burst of noise from the rest of the
// machine hits both alike. It prints each round's B / A throughput ratio and the
// medians, with the CPU per request of each whole process and of its main thread.
// On these shared 2-core machines one `npm run bench` swings by ±15 %; this pairing
// tells changes of about 5 % apart (an A / A run shows the noise left).
//
// Usage: node bench/compare-builds.mjs CHECKOUT_A CHECKOUT_B [ROUNDS] [SECONDS]
//   A checkout is a copy of the repo with dist/ built (node_modules may be a symlink);
//   for an ablation, copy the repo, edit the copy's dist/, and compare it with this one.
//   COMPARE_FLAGS_A / COMPARE_FLAGS_B add node flags to one side only, to compare V8
//   settings on one build: `COMPARE_FLAGS_B=--max-semi-space-size=8 ... . .`
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import autocannon from "autocannon";
import {
  addDemoCredits,
  coreBenchConfigYaml,
  findFreePort,
  killAllChildren,
  letheServeArgs,
  nodeFlagsFrom,
  readCpuMs,
  readFirstStartKey,
  spawnNode,
  stopAllChildren,
  waitForPort,
  writeLetheSetup,
} from "./bench-processes.mjs";

const HOST = "127.0.0.1";
const CONNECTIONS = 50;
const BODY = JSON.stringify({
  model: "bench-model",
  messages: [{ role: "user", content: "Say hello." }],
  max_tokens: 16,
});

const [checkoutA, checkoutB, roundsArgument = "8", secondsArgument = "4"] = process.argv.slice(2);
if (checkoutB === undefined) {
  process.stderr.write("usage: node bench/compare-builds.mjs CHECKOUT_A CHECKOUT_B [ROUNDS] [SECONDS]\n");
  process.exit(2);
}

/** Starts one checkout's `lethe serve` on a data dir of its own, with credit for the bench. */
async function startBuild(label, checkout, supplierPort, workDir) {
  const root = path.resolve(checkout);
  const directory = path.join(workDir, label);
  const port = await findFreePort();
  await mkdir(directory);
  const environment = await writeLetheSetup(directory, coreBenchConfigYaml(supplierPort, "bench-model"), port);
  const child = spawnNode(letheServeArgs([], root, nodeFlagsFrom(`COMPARE_FLAGS_${label}`)), {
    name: `Lethe ${label}`,
    environment,
  });
  const apiKey = await readFirstStartKey(child);
  addDemoCredits(environment, root);
  return { label, root, port, apiKey, pid: child.pid, rounds: [] };
}

async function measure(build, seconds) {
  const [cpuBefore, mainBefore] = [await readCpuMs(build.pid), await readCpuMs(build.pid, build.pid)];
  const result = await autocannon({
    url: `http://${HOST}:${build.port}/v1/chat/completions`,
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${build.apiKey}` },
    body: BODY,
    connections: CONNECTIONS,
    duration: seconds,
  });
  const [cpuAfter, mainAfter] = [await readCpuMs(build.pid), await readCpuMs(build.pid, build.pid)];
  if (result.non2xx + result.errors + result.timeouts > 0) throw new Error(`${build.label}: failed requests`);
  const requests = Math.max(1, result.requests.total);
  return {
    requestsPerSecond: result.requests.average,
    cpuMicros: ((cpuAfter - cpuBefore) * 1000) / requests,
    mainThreadMicros: ((mainAfter - mainBefore) * 1000) / requests,
  };
}

function median(values) {
  const sorted = [...values].sort((left, right) => left - right);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

async function main() {
  const workDir = await mkdtemp(path.join(os.tmpdir(), "lethe-compare-"));
  try {
    const supplier = spawnNode(["bench/fake-supplier.mjs"], { name: "fake supplier" });
    const supplierPort = await waitForPort(supplier);
    const builds = [
      await startBuild("A", checkoutA, supplierPort, workDir),
      await startBuild("B", checkoutB, supplierPort, workDir),
    ];
    for (const build of builds) await measure(build, 2);
    const rounds = Number(roundsArgument);
    for (let round = 0; round < rounds; round++) {
      for (const build of round % 2 === 0 ? builds : [...builds].reverse()) {
        build.rounds.push(await measure(build, Number(secondsArgument)));
      }
    }
    const [a, b] = builds;
    const ratios = a.rounds.map((run, index) => b.rounds[index].requestsPerSecond / run.requestsPerSecond);
    const summary = (build, key) => median(build.rounds.map((run) => run[key]));
    process.stdout.write(
      `${rounds} rounds of ${secondsArgument} s at ${CONNECTIONS} connections, alternating\n` +
        `B / A req/s per round: ${ratios.map((ratio) => ratio.toFixed(3)).join(" ")}\n` +
        `median B / A req/s ${median(ratios).toFixed(3)}; ` +
        `CPU µs per request A ${summary(a, "cpuMicros").toFixed(0)}, B ${summary(b, "cpuMicros").toFixed(0)}; ` +
        `main thread A ${summary(a, "mainThreadMicros").toFixed(0)}, B ${summary(b, "mainThreadMicros").toFixed(0)}\n`,
    );
  } finally {
    await stopAllChildren(2_000);
    await rm(workDir, { recursive: true, force: true });
  }
}

main().catch((error) => {
  process.stderr.write(`compare-builds failed: ${error instanceof Error ? error.message : String(error)}\n`);
  killAllChildren();
  process.exitCode = 1;
});
