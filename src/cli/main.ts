import { ConfigError } from "../config/load-config.js";
import { LetheError } from "../errors/lethe-error.js";
import { CliError, type CliIo, processIo } from "./cli-io.js";

/** System errors an operator can act on, by code. */
const SYSTEM_ERRORS: Record<string, string> = {
  EADDRINUSE: "the address LETHE_HOST:LETHE_PORT is already in use",
  EADDRNOTAVAIL: "LETHE_HOST is not an address of this machine",
  EACCES: "permission denied (a port below 1024, or the data dir)",
  ECONNREFUSED: "a database or Redis refused the connection (LETHE_DATABASE_URL, LETHE_REDIS_URL)",
  ENOTFOUND: "a host name (LETHE_HOST, or the host of LETHE_DATABASE_URL or LETHE_REDIS_URL) could not be resolved",
  ETIMEDOUT: "a database or Redis did not answer in time",
  EPERM: "operation not permitted (the data dir, or a file in it, belongs to another user)",
  ENOTDIR: "a path (LETHE_DATA_DIR, LETHE_CONFIG or --config) runs through a file where a directory should be",
};

const HELP = `lethe: a zero-data-retention LLM gateway

Usage:
  lethe serve [--config FILE] [--workers N] [--dev]
  lethe accounts create NAME [--credits AMOUNT] [--rpm N] [--tpm N] [--email ADDRESS] [--zdr required|optional]
  lethe accounts list
  lethe accounts export NAME
  lethe accounts delete NAME
  lethe credits add --account NAME AMOUNT
  lethe credits show --account NAME
  lethe keys create --account NAME [--label LABEL] [--rpm N] [--tpm N]
  lethe keys list --account NAME
  lethe keys revoke KEY_ID_OR_KEY
  lethe usage --account NAME [--days N]
  lethe operators create NAME
  lethe operators revoke NAME
  lethe operators rotate NAME
  lethe operators list
  lethe operators events [--limit N]
  lethe routes [--url URL]
  lethe zdr verify URL [--key PUBLIC_KEY_BASE64]
  lethe audit [--target URL --key KEY [--log FILE | --no-log] [--model ID]...] [--json]

Environment: LETHE_HOST, LETHE_PORT, LETHE_DATA_DIR, LETHE_CONFIG, LETHE_SECRET,
LETHE_DATABASE_URL, LETHE_REDIS_URL, LETHE_REDIS_PREFIX; LETHE_OPERATOR_TOKEN for
'routes' and 'audit --target' against an operator-only /metrics.`;

/** The address a failed listen asked for, from the operator's own LETHE_HOST and LETHE_PORT: ", here 127.0.0.1:8080". */
function listenAddress(error: unknown): string {
  const { syscall, address, port } = error as { syscall?: unknown; address?: unknown; port?: unknown };
  if (syscall !== "listen" || typeof address !== "string" || typeof port !== "number") return "";
  return `, here ${address.includes(":") ? `[${address}]` : address}:${port}`;
}

/** `--help` or `-h` among a command's arguments (not after `--`, where values go). */
function asksForHelp(args: readonly string[]): boolean {
  for (const arg of args) {
    if (arg === "--") return false;
    if (arg === "--help" || arg === "-h") return true;
  }
  return false;
}

/** A command's own lines of HELP (`lethe keys --help`: the three keys lines), or null for no such command. */
function commandHelp(command: string): string | null {
  const lines = HELP.split("\n").filter(
    (line) => line === `  lethe ${command}` || line.startsWith(`  lethe ${command} `),
  );
  return lines.length === 0
    ? null
    : `Usage:\n${lines.join("\n")}\n\nRun 'lethe help' for every command and the environment.`;
}

/**
 * Runs the `lethe` command line; returns the process exit code. Each command's module is
 * loaded when it runs: `serve` then carries none of the audit's or the admin commands'
 * code and dependencies, which a long-running gateway would hold in memory for nothing.
 */
export async function main(argv: string[], io: CliIo = processIo): Promise<number> {
  const [command, ...rest] = argv;
  // `lethe serve --help` prints how to use it rather than starting a gateway
  const help = command !== undefined && asksForHelp(rest) ? commandHelp(command) : null;
  if (help !== null) {
    io.out(help);
    return 0;
  }
  try {
    switch (command) {
      case "serve":
        return await (await import("./commands/serve-command.js")).serveCommand(rest, io);
      case "accounts":
        return await (await import("./commands/accounts-command.js")).accountsCommand(rest, io);
      case "keys":
        return await (await import("./commands/keys-command.js")).keysCommand(rest, io);
      case "credits":
        return await (await import("./commands/credits-command.js")).creditsCommand(rest, io);
      case "operators":
        return await (await import("./commands/operators-command.js")).operatorsCommand(rest, io);
      case "routes":
        return await (await import("./commands/routes-command.js")).routesCommand(rest, io);
      case "usage":
        return await (await import("./commands/usage-command.js")).usageCommand(rest, io);
      case "zdr":
        return await (await import("./commands/zdr-command.js")).zdrCommand(rest, io);
      case "audit":
        return await (await import("./commands/audit-command.js")).auditCommand(rest, io);
      case undefined:
      case "help":
      case "--help":
      case "-h":
        io.out(HELP);
        return command === undefined ? 2 : 0;
      default:
        throw new CliError(`unknown command '${command}'; run 'lethe help'`);
    }
  } catch (error) {
    // a LetheError's message is Lethe's own wording, never input (a top-up past the exact balance, say)
    if (error instanceof CliError || error instanceof ConfigError || error instanceof LetheError) {
      io.err(`lethe: ${error.message}`);
      return 2;
    }
    // a system error says what went wrong by its code, a closed set (the message may quote a path or a host)
    const code = (error as { code?: unknown } | null)?.code;
    if (typeof code === "string" && code in SYSTEM_ERRORS) {
      io.err(`lethe: ${command ?? ""} failed: ${SYSTEM_ERRORS[code]}${listenAddress(error)} (${code})`);
      return 1;
    }
    // an unexpected failure: report its kind (and a database driver's code) only, never a
    // message that might quote input
    const driverCode = (error as { driverCode?: unknown } | null)?.driverCode;
    const detail = typeof driverCode === "string" && /^[A-Z0-9_]{1,40}$/.test(driverCode) ? `, ${driverCode}` : "";
    io.err(`lethe: ${command ?? ""} failed (${error instanceof Error ? error.name : "unknown error"}${detail})`);
    return 1;
  }
}
