import { loadConfig } from "../../config/load-config.js";
import { createEventLog } from "../../logging/event-log.js";
import { HardeningError, hardenProcess } from "../../process/harden-process.js";
import { startGateway } from "../../server/start-gateway.js";
import { CliError, type CliIo, parseCommand } from "../cli-io.js";

/** `lethe serve`: runs the gateway until SIGTERM or SIGINT, then shuts down gracefully. */
export async function serveCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommand(args, { dev: { type: "boolean" } });
  if (positionals.length > 0) throw new CliError("usage: lethe serve [--config FILE] [--dev]");
  const config = await loadConfig(io.env, typeof values.config === "string" ? values.config : undefined);
  const log = createEventLog();
  const development = values.dev === true;
  try {
    const report = await hardenProcess({ allowInspector: development, log });
    log.event("process_hardened", {
      core_dumps_disabled: report.coreDumpsDisabled,
      diagnostic_reports_disabled: report.diagnosticReportsDisabled,
      development_run: development,
    });
    if (!report.coreDumpsDisabled) {
      io.err("lethe: warning: could not set the core-file limit to 0; run under `ulimit -c 0` (see docs/zdr.md)");
    }
  } catch (error) {
    if (error instanceof HardeningError) throw new CliError(error.message);
    throw error;
  }
  const running = await startGateway(config, { log });
  io.out(`Lethe is listening on ${running.url} (${config.models.size} model(s), data in ${config.dataDir})`);
  if (running.firstStartKey !== null) {
    const firstModel = [...config.models.keys()][0] ?? "lethe-demo";
    io.out("");
    io.out("First start: created account 'demo' with this API key. It is shown once and never again:");
    io.out("");
    io.out(`  ${running.firstStartKey}`);
    io.out("");
    io.out("Try it:");
    io.out(
      `  curl ${running.url}/v1/chat/completions -H "Authorization: Bearer ${running.firstStartKey}" -H "Content-Type: application/json" -d '{"model":"${firstModel}","messages":[{"role":"user","content":"Hello"}]}'`,
    );
    io.out("");
  }
  return new Promise<number>((resolve) => {
    const stop = () => {
      process.off("SIGTERM", stop);
      process.off("SIGINT", stop);
      running.close().then(
        () => resolve(0),
        () => resolve(1),
      );
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
  });
}
