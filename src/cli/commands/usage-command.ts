import { formatMicros } from "../../billing/money.js";
import { validAccountName } from "../arguments.js";
import { CliError, type CliIo, parseCommand, positiveInt, requiredString, withStore } from "../cli-io.js";

/** A century: any retention window fits, and the window's start stays a date JavaScript can write. */
const MAX_DAYS = 36_500;

/** `lethe usage --account NAME [--days N]`: totals per UTC day and model. */
export async function usageCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommand(args, { account: { type: "string" }, days: { type: "string" } });
  if (positionals.length > 0) throw new CliError("usage: lethe usage --account NAME [--days N]");
  const name = validAccountName(requiredString(values.account, "account"));
  const days = positiveInt(values.days, "days", MAX_DAYS) ?? 30;
  return withStore(io, values.config, async (store) => {
    const account = await store.findAccountByName(name);
    if (!account) throw new CliError(`no account named '${name}'`);
    const now = Date.now();
    // up to now, as /v1/usage: a record stamped ahead by a replica's clock is not counted yet
    const rows = await store.usageByDayAndModel(account.id, now - days * 86_400_000, false, now);
    io.out(["DAY", "MODEL", "REQUESTS", "ERRORS", "INPUT", "CACHED", "OUTPUT", "REASONING", "COST"].join("\t"));
    for (const row of rows) {
      io.out(
        [
          row.day,
          row.model,
          row.requests,
          row.errors,
          row.inputTokens,
          row.cachedInputTokens,
          row.outputTokens,
          row.reasoningTokens,
          formatMicros(row.costMicros),
        ].join("\t"),
      );
    }
    if (rows.length === 0) io.out(`(no requests in the last ${days} days)`);
    return 0;
  });
}
