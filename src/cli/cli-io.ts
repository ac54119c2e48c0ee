import { parseArgs } from "node:util";
import { type LetheConfig, loadConfig } from "../config/load-config.js";
import { openStore } from "../store/open-store.js";
import type { Store } from "../store/store.js";

/** Where a command prints; tests pass their own. */
export interface CliIo {
  out(line: string): void;
  err(line: string): void;
  env: Record<string, string | undefined>;
}

export const processIo: CliIo = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  env: process.env,
};

/** Bad input on the command line: printed as one line, exit code 2. */
export class CliError extends Error {
  override name = "CliError";
}

type OptionSpec = Record<string, { type: "string" | "boolean"; short?: string }>;

/** Parses a command's arguments strictly; `--config` is accepted everywhere. */
export function parseCommand<Options extends OptionSpec>(args: string[], options: Options) {
  try {
    return parseArgs({
      args,
      options: { ...options, config: { type: "string" } },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    throw new CliError(argumentsProblem(error));
  }
}

/** Node's parseArgs errors, in a line an operator can act on (its own wording is several lines). */
function argumentsProblem(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  const message = error instanceof Error ? error.message : "";
  // Node names the option as `'--rpm'`, or with its argument, `'--rpm <value>'`: the name alone
  const option = /'(-[^' ]*)/.exec(message)?.[1];
  if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION" && option !== undefined) {
    return `Unknown option '${option}'; run 'lethe help' for the options (a value starting with '-' goes after '--')`;
  }
  if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE" && option !== undefined) {
    return `${option} needs a value; one starting with '-' is written ${option}=VALUE`;
  }
  return message.split("\n")[0] || "bad arguments";
}

/** Reads a positive whole number option, or null when absent. */
export function positiveInt(
  value: string | boolean | undefined,
  name: string,
  // both stores keep limits as 32-bit integers
  max = 2_147_483_647,
): number | null {
  if (value === undefined) return null;
  const number = Number(value);
  if (typeof value !== "string" || !/^\d+$/.test(value) || number > max || number <= 0) {
    throw new CliError(`--${name} must be a whole number from 1 to ${max}`);
  }
  return number;
}

/** Requires a string option. */
export function requiredString(value: string | boolean | undefined, name: string): string {
  if (typeof value !== "string" || value === "") throw new CliError(`--${name} is required`);
  return value;
}

/** Loads config (suppliers' keys not needed: no supplier is called) and opens the store for a one-shot command, closing it afterwards. */
export async function withStore<T>(
  io: CliIo,
  configPath: string | boolean | undefined,
  run: (store: Store, config: LetheConfig) => Promise<T>,
): Promise<T> {
  const config = await loadConfig(io.env, typeof configPath === "string" ? configPath : undefined, "not-needed");
  const store = await openStore(config);
  try {
    return await run(store, config);
  } finally {
    await store.close();
  }
}
