import { deleteAccountData, exportAccountData } from "../../accounts/account-data.js";
import { validAccountName } from "../arguments.js";
import { CliError, type CliIo, parseCommand, withStore } from "../cli-io.js";

/** `lethe accounts export NAME` (JSON on stdout) and `lethe accounts delete NAME`. */
export async function accountDataCommand(sub: "export" | "delete", args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommand(args, {});
  if (positionals.length !== 1) throw new CliError(`usage: lethe accounts ${sub} NAME`);
  const name = validAccountName(positionals[0]);
  return withStore(io, values.config, async (store) => {
    const account = await store.findAccountByName(name);
    if (!account || account.deletedAt !== null) throw new CliError(`no account named '${name}'`);
    if (sub === "export") {
      const exported = await exportAccountData(store, account);
      await store.operators.recordEvent({ operatorId: null, action: "account_export", accountId: account.id });
      io.out(JSON.stringify(exported, null, 2));
      return 0;
    }
    await deleteAccountData(store, account);
    await store.operators.recordEvent({ operatorId: null, action: "account_delete", accountId: account.id });
    io.out(
      `deleted account ${name}: keys revoked, personal data erased, metadata unlinked (ledger kept as ${account.id})`,
    );
    return 0;
  });
}
