import { AuditInputError, renderReport, runAudit } from "../../audit/index.js";
import { CliError, type CliIo, parseCommand } from "../cli-io.js";

const USAGE = "usage: lethe audit [--target URL --key KEY [--log FILE | --no-log] [--model ID]...] [--json]";

/**
 * `lethe audit`: proves that no content is retained. Exit 0 on a PASS (or a PASS
 * qualified only by what the operator excluded: --no-log, --model), 1 on any hit, a
 * path that did not run, or a store in use that was not searched in full (INCONCLUSIVE),
 * 2 on bad input.
 */
export async function auditCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommand(args, {
    target: { type: "string" },
    key: { type: "string" },
    log: { type: "string" },
    "no-log": { type: "boolean" },
    model: { type: "string", multiple: true },
    json: { type: "boolean" },
  });
  if (positionals.length > 0) throw new CliError(USAGE);
  if (values.config !== undefined) {
    throw new CliError("lethe audit takes no --config: it runs its own gateway, or audits a running one with --target");
  }
  const target = typeof values.target === "string" ? values.target : undefined;
  const key = typeof values.key === "string" ? values.key : undefined;
  // repeatable: parseArgs collects every --model (its typing here cannot say so)
  const models = ([] as string[]).concat(values.model ?? []);
  if (target !== undefined && key === undefined)
    throw new CliError("--target needs --key KEY (an active API key of the target)");
  if (target === undefined && key !== undefined) throw new CliError("--key is only used with --target URL");
  if (target === undefined && values.log !== undefined) {
    throw new CliError("--log FILE is only used with --target URL (the embedded audit captures its own log)");
  }
  if (target === undefined && values["no-log"] !== undefined) {
    throw new CliError("--no-log is only used with --target URL (the embedded audit captures its own log)");
  }
  if (target === undefined && models.length > 0) {
    throw new CliError("--model is only used with --target URL (the embedded audit drives its own models)");
  }
  if (values.log !== undefined && values["no-log"] === true) {
    throw new CliError("--log FILE and --no-log contradict: give the log file, or say there is none to read");
  }
  let report: Awaited<ReturnType<typeof runAudit>>;
  try {
    report = await runAudit({
      ...(target !== undefined && key !== undefined && { target: { url: target, key } }),
      ...(typeof values.log === "string" && { logFile: values.log }),
      ...(values["no-log"] === true && { noLog: true }),
      ...(models.length > 0 && { models }),
      env: io.env,
    });
  } catch (thrown) {
    if (thrown instanceof AuditInputError) throw new CliError(thrown.message);
    throw thrown;
  }
  io.out(values.json === true ? JSON.stringify(report, null, 2) : renderReport(report));
  return report.pass ? 0 : 1;
}
