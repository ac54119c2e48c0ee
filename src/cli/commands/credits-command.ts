import { formatMicros } from "../../billing/money.js";
import { positiveAmount, validAccountName } from "../arguments.js";
import { CliError, type CliIo, parseCommand, requiredString, withStore } from "../cli-io.js";

const USAGE = "usage: lethe credits add --account NAME AMOUNT | credits show --account NAME";

/** `lethe credits add|show`: top up an account, or show its balance and recent ledger entries. */
export async function creditsCommand(args: string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parseCommand(rest, { account: { type: "string" } });
  if (sub !== "add" && sub !== "show") throw new CliError(USAGE);
  const name = validAccountName(requiredString(values.account, "account"));
  const amount = sub === "add" ? positiveAmount(positionals[0]) : 0;
  if ((sub === "add" && positionals.length !== 1) || (sub === "show" && positionals.length !== 0))
    throw new CliError(USAGE);
  return withStore(io, values.config, async (store) => {
    const account = await store.findAccountByName(name);
    if (!account || account.deletedAt !== null) throw new CliError(`no account named '${name}'`);
    if (sub === "add") {
      const balance = await store.ledger.credit(account.id, amount, "top_up");
      await store.operators.recordEvent({
        operatorId: null,
        action: "credits_add",
        accountId: account.id,
        amountMicros: amount,
      });
      io.out(`added ${formatMicros(amount)} to ${name}; balance ${formatMicros(balance)}`);
      return 0;
    }
    io.out(`balance ${formatMicros(await store.ledger.balance(account.id))}`);
    io.out(["WHEN", "KIND", "AMOUNT", "REQUEST"].join("\t"));
    for (const entry of await store.ledger.recent(account.id, 20)) {
      io.out(
        [new Date(entry.ts).toISOString(), entry.kind, formatMicros(entry.amountMicros), entry.requestId ?? ""].join(
          "\t",
        ),
      );
    }
    return 0;
  });
}
