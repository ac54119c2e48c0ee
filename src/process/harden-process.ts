import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import inspector from "node:inspector";
import { getEnabledCategories } from "node:trace_events";
import { toLetheError } from "../errors/lethe-error.js";
import { type EventLog, WARNING_KINDS, type WarningKind } from "../logging/event-log.js";

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

// flags that open the heap to a debugger, write it (or a report of it, or trace events,
// whose node.http category holds every request URL) to disk, or print an uncaught
// error's message past the crash handler; matched on the flag's name with `_` read as
// `-`, as Node and V8 read them
const DANGEROUS_FLAGS = [
  // --trace-event-categories, --trace-event-file-pattern, --trace-events-enabled
  /^--trace-event/,
  /^--inspect/,
  /^--debug/,
  /^--heapsnapshot-signal$/,
  /^--heapsnapshot-near-heap-limit$/,
  /^--heap-snapshot-near-heap-limit$/,
  /^--heap-snapshot-on-oom$/,
  /^--report-on-signal$/,
  /^--report-on-fatalerror$/,
  /^--report-uncaught-exception$/,
  /^--abort-on-uncaught-exception$/,
];

/**
 * NODE_OPTIONS split as Node splits it: on spaces, with double-quoted runs kept whole
 * and a backslash escaping the next character inside them. A plain split on spaces would
 * miss `"--heapsnapshot-signal=SIGUSR2"`, which Node honours.
 */
export function nodeOptionsTokens(nodeOptions: string): string[] {
  const tokens: string[] = [];
  let current = "";
  let started = false;
  let quoted = false;
  for (let index = 0; index < nodeOptions.length; index++) {
    const character = nodeOptions[index] as string;
    if (quoted && character === "\\" && index + 1 < nodeOptions.length) {
      current += nodeOptions[++index];
    } else if (character === '"') {
      quoted = !quoted;
      started = true;
    } else if (!quoted && /\s/.test(character)) {
      if (started) tokens.push(current);
      current = "";
      started = false;
    } else {
      current += character;
      started = true;
    }
  }
  if (started) tokens.push(current);
  return tokens;
}

/** Node flags in effect that could expose memory, from argv and NODE_OPTIONS, by their names. */
export function dangerousFlags(execArgv: readonly string[], nodeOptions: string | undefined): string[] {
  const flags = [...execArgv, ...nodeOptionsTokens(nodeOptions ?? "")];
  const found: string[] = [];
  for (const flag of flags) {
    if (!flag.startsWith("--")) continue;
    const name = (flag.split("=")[0] as string).replaceAll("_", "-");
    if (DANGEROUS_FLAGS.some((pattern) => pattern.test(name))) found.push(name);
  }
  return found;
}

/**
 * Node prints a process warning's message as it is: Lethe's own and its libraries' carry
 * no input that anyone has found, but a message is free text, and a library's next
 * version may quote what it was handed. Node's printer is replaced by an allow-listed
 * event: the warning's kind, from a closed set, and a deprecation code (DEP0040, say).
 */
function printWarningsAsEvents(log: EventLog): void {
  process.removeAllListeners("warning");
  process.on("warning", (warning: Error & { code?: unknown }) => {
    const kind = (WARNING_KINDS as readonly string[]).includes(warning.name) ? (warning.name as WarningKind) : "other";
    const code = typeof warning.code === "string" && /^DEP\d{4}$/.test(warning.code) ? warning.code : null;
    log.event("node_warning", { kind, code });
  });
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
 * is a development run (and ignores the signal that would open a debugger later), disables core dumps and diagnostic reports, and replaces
 * Node's crash printer (which prints error messages) with a coded event.
 */
export async function hardenProcess(options: { allowInspector: boolean; log: EventLog }): Promise<HardeningReport> {
  const flags = dangerousFlags(process.execArgv, process.env.NODE_OPTIONS);
  // trace events switched on by any other means (a preloaded module) write to disk just the same
  if (getEnabledCategories() !== undefined && !flags.some((flag) => flag.startsWith("--trace-event"))) {
    flags.push("trace events");
  }
  if (!options.allowInspector && (inspector.url() !== undefined || flags.length > 0)) {
    throw new HardeningError(
      `refusing to serve with ${flags.length > 0 ? flags.join(", ") : "the inspector"} enabled: it exposes request content in memory or on disk (use --dev for a development run)`,
    );
  }
  printWarningsAsEvents(options.log);
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
  // SIGUSR1 opens Node's inspector on a running process (anyone local may then connect to
  // it and read the heap); a listener of its own keeps Node from doing so
  if (!options.allowInspector) process.on("SIGUSR1", () => options.log.event("signal_ignored", { signal: "SIGUSR1" }));
  return {
    coreDumpsDisabled: await disableCoreDumps(),
    diagnosticReportsDisabled: true,
    crashHandlerInstalled: true,
  };
}
