import { ConfigError } from "../config/load-config.js";
import { CliError, type CliIo, processIo } from "./cli-io.js";
import { accountsCommand } from "./commands/accounts-command.js";
import { auditCommand } from "./commands/audit-command.js";
import { creditsCommand } from "./commands/credits-command.js";
import { keysCommand } from "./commands/keys-command.js";
import { operatorsCommand } from "./commands/operators-command.js";
import { routesCommand } from "./commands/routes-command.js";
import { serveCommand } from "./commands/serve-command.js";
import { usageCommand } from "./commands/usage-command.js";
import { zdrCommand } from "./commands/zdr-command.js";

const HELP = `lethe: a zero-data-retention LLM gateway

Usage:
  lethe serve [--config FILE] [--workers N] [--dev]
  lethe accounts create NAME [--credits AMOUNT] [--rpm N] [--tpm N] [--email ADDRESS]
  lethe accounts export NAME
  lethe accounts delete NAME
  lethe credits add --account NAME AMOUNT
  lethe credits show --account NAME
  lethe keys create --account NAME [--label LABEL] [--rpm N] [--tpm N]
  lethe keys list --account NAME
  lethe keys revoke KEY_ID_OR_KEY
  lethe usage --account NAME [--days N]
  lethe operators create NAME
  lethe routes [--url URL]
  lethe zdr verify URL [--key PUBLIC_KEY_BASE64]
  lethe audit [--target URL --key KEY] [--log FILE] [--json]

Environment: LETHE_HOST, LETHE_PORT, LETHE_DATA_DIR, LETHE_CONFIG, LETHE_SECRET,
LETHE_DATABASE_URL, LETHE_REDIS_URL, LETHE_REDIS_PREFIX.`;

/** Runs the `lethe` command line; returns the process exit code. */
export async function main(argv: string[], io: CliIo = processIo): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "serve":
        return await serveCommand(rest, io);
      case "accounts":
        return await accountsCommand(rest, io);
      case "keys":
        return await keysCommand(rest, io);
      case "credits":
        return await creditsCommand(rest, io);
      case "operators":
        return await operatorsCommand(rest, io);
      case "routes":
        return await routesCommand(rest, io);
      case "usage":
        return await usageCommand(rest, io);
      case "zdr":
        return await zdrCommand(rest, io);
      case "audit":
        return await auditCommand(rest, io);
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
    if (error instanceof CliError || error instanceof ConfigError) {
      io.err(`lethe: ${error.message}`);
      return 2;
    }
    // an unexpected failure: report its kind only, never a message that might quote input
    io.err(`lethe: ${command ?? ""} failed (${error instanceof Error ? error.name : "unknown error"})`);
    return 1;
  }
}
