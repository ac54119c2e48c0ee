import { CliError, type CliIo, parseCommand, positiveInt, withStore } from "../cli-io.js";

const ACCOUNT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Checks an account name: letters, digits, . _ -, at most 64 characters. */
export function validAccountName(name: string | undefined): string {
  if (name === undefined || !ACCOUNT_NAME.test(name)) {
    throw new CliError("account names use letters, digits, '.', '_' and '-' (at most 64 characters)");
  }
  return name;
}

/** `lethe accounts create NAME [--rpm N] [--tpm N]`. */
export async function accountsCommand(args: string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== "create") throw new CliError("usage: lethe accounts create NAME [--rpm N] [--tpm N]");
  const { values, positionals } = parseCommand(rest, { rpm: { type: "string" }, tpm: { type: "string" } });
  if (positionals.length !== 1) throw new CliError("usage: lethe accounts create NAME [--rpm N] [--tpm N]");
  const name = validAccountName(positionals[0]);
  const rpm = positiveInt(values.rpm, "rpm");
  const tpm = positiveInt(values.tpm, "tpm");
  return withStore(io, values.config, async (store) => {
    if (await store.findAccountByName(name)) throw new CliError(`account '${name}' already exists`);
    const account = await store.createAccount({ name, rpm, tpm });
    io.out(`created account ${name} (${account.id})`);
    return 0;
  });
}
