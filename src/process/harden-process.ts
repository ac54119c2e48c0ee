import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import inspector from "node:inspector";
import { toLetheError } from "../errors/lethe-error.js";
import type { EventLog } from "../logging/event-log.js";

/** What hardening achieved; `lethe serve` prints it and docs/zdr.md explains each line. */
export interface HardeningReport {
  coreDumpsDisabled: boolean;
  diagnosticReportsDisabled: boolean;
  crashHandlerInstalled: boolean;
}

/** A start-up refusal: the process is configured in a way that could leak memory to disk. */
export class HardeningError extends Error {
  override name = "HardeningError";
}

// flags that open the heap to a debugger or write it (or a report of it) to disk
const DANGEROUS_FLAGS = [
  /^--inspect/,
  /^--debug/,
  /^--heapsnapshot-signal/,
  /^--heapsnapshot-near-heap-limit/,
  /^--heap-snapshot-near-heap-limit/,
  /^--report-on-signal/,
  /^--report-on-fatalerror/,
  /^--report-uncaught-exception/,
];

/** Node flags in effect that could expose memory, from argv and NODE_OPTIONS. */
export function dangerousFlags(execArgv: readonly string[], nodeOptions: string | undefined): string[] {
  const flags = [...execArgv, ...(nodeOptions ?? "").split(/\s+/).filter((flag) => flag !== "")];
  return flags
    .filter((flag) => DANGEROUS_FLAGS.some((pattern) => pattern.test(flag)))
    .map((flag) => flag.split("=")[0] as string);
}

/** Sets this process's core-file limit to 0 (soft and hard) with util-linux prlimit; Node has no setrlimit. */
async function disableCoreDumps(): Promise<boolean> {
  await new Promise<void>((resolve) => {
    execFile("prlimit", ["--pid", String(process.pid), "--core=0:0"], { timeout: 5_000 }, () => resolve());
  });
  try {
    const limits = await readFile("/proc/self/limits", "utf8");
    const line = limits.split("\n").find((row) => row.startsWith("Max core file size"));
    return line !== undefined && /^Max core file size\s+0\s+0\s/.test(line);
  } catch {
    return false;
  }
}

/**
 * Hardens the serving process: refuses a debugger or heap-dumping flags unless this
 * is a development run, disables core dumps and diagnostic reports, and replaces
 * Node's crash printer (which prints error messages) with a coded event.
 */
export async function hardenProcess(options: { allowInspector: boolean; log: EventLog }): Promise<HardeningReport> {
  const flags = dangerousFlags(process.execArgv, process.env.NODE_OPTIONS);
  if (!options.allowInspector && (inspector.url() !== undefined || flags.length > 0)) {
    throw new HardeningError(
      `refusing to serve with ${flags.length > 0 ? flags.join(", ") : "the inspector"} enabled: it exposes request content in memory (use --dev for a development run)`,
    );
  }
  process.report.reportOnFatalError = false;
  process.report.reportOnSignal = false;
  process.report.reportOnUncaughtException = false;
  const crash = (error: unknown) => {
    options.log.event("uncaught_exception", { code: toLetheError(error).code });
    // exit only once the event is written; a stuck log must not keep a broken process alive
    setTimeout(() => process.exit(70), 1_000).unref();
    options.log.flush(() => process.exit(70));
  };
  process.on("uncaughtException", crash);
  process.on("unhandledRejection", crash);
  return {
    coreDumpsDisabled: await disableCoreDumps(),
    diagnosticReportsDisabled: true,
    crashHandlerInstalled: true,
  };
}
