import { formatMicros } from "../../billing/money.js";
import { positiveAmount, validAccountName, validEmail } from "../arguments.js";
import { CliError, type CliIo, parseCommand, positiveInt, withStore } from "../cli-io.js";
import { accountDataCommand } from "./account-data-command.js";

const CREATE_USAGE =
  "usage: lethe accounts create NAME [--credits AMOUNT] [--rpm N] [--tpm N] [--email ADDRESS] [--zdr required|optional]";

/**
 * `lethe accounts create NAME [--credits AMOUNT] [--rpm N] [--tpm N] [--email ADDRESS] [--zdr required|optional]`.
 * `--zdr optional` lets the account's requests reach suppliers that are not ZDR-qualified
 * (a request can still ask for ZDR with `x-lethe-zdr: required`); every account requires it otherwise.
 */
export async function accountsCommand(args: string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === "export" || sub === "delete") return accountDataCommand(sub, rest, io);
  if (sub === "list") return listAccounts(rest, io);
  if (sub !== "create") {
    // the operator's own typo, printed back on their terminal only
    const what = sub === undefined ? "" : `unknown command 'accounts ${sub}' (create, list, export or delete); `;
    throw new CliError(`${what}${CREATE_USAGE}`);
  }
  const { values, positionals } = parseCommand(rest, {
    rpm: { type: "string" },
    tpm: { type: "string" },
    credits: { type: "string" },
    email: { type: "string" },
    zdr: { type: "string" },
  });
  if (positionals.length !== 1) throw new CliError(CREATE_USAGE);
  const name = validAccountName(positionals[0]);
  const rpm = positiveInt(values.rpm, "rpm");
  const tpm = positiveInt(values.tpm, "tpm");
  const credits = values.credits === undefined ? 0 : positiveAmount(String(values.credits));
  const email = typeof values.email === "string" ? validEmail(values.email) : null;
  if (values.zdr !== undefined && values.zdr !== "required" && values.zdr !== "optional") {
    throw new CliError("--zdr takes 'required' (the default) or 'optional'");
  }
  const zdrRequired = values.zdr !== "optional";
  return withStore(io, values.config, async (store) => {
    if (await store.findAccountByName(name)) throw new CliError(`account '${name}' already exists`);
    const account = await store.createAccount({ name, rpm, tpm, email, zdrRequired });
    if (credits > 0) await store.ledger.credit(account.id, credits, "top_up");
    // the audit trail holds the CLI's changes too, under no operator (`operators events` shows `cli`)
    await store.operators.recordEvent({
      operatorId: null,
      action: "account_create",
      accountId: account.id,
      amountMicros: credits,
    });
    const zdr = zdrRequired ? "" : ", ZDR optional";
    io.out(
      `created account ${name} (${account.id})${credits > 0 ? ` with ${formatMicros(credits)} credit` : ""}${zdr}`,
    );
    return 0;
  });
}

/** `lethe accounts list`: every account not erased, with its balance, limits and ZDR rule. */
async function listAccounts(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommand(args, {});
  if (positionals.length !== 0) throw new CliError("usage: lethe accounts list");
  return withStore(io, values.config, async (store) => {
    io.out(["NAME", "ACCOUNT ID", "BALANCE", "RPM", "TPM", "ZDR", "CREATED"].join("\t"));
    for (const entry of await store.accountAdmin.listAccountIds()) {
      const account = await store.findAccountByName(entry.name);
      if (account === undefined || account.deletedAt !== null) continue;
      io.out(
        [
          account.name,
          account.id,
          formatMicros(account.balanceMicros),
          account.rpm ?? "default",
          account.tpm ?? "default",
          account.zdrRequired ? "required" : "optional",
          new Date(account.createdAt).toISOString(),
        ].join("\t"),
      );
    }
    return 0;
  });
}
