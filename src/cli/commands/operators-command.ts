import { KeyHasher, mintApiKey, OPERATOR_TOKEN_PREFIX } from "../../keys/api-key.js";
import { loadServerSecret } from "../../store/server-secret.js";
import { validAccountName } from "../arguments.js";
import { CliError, type CliIo, parseCommand, withStore } from "../cli-io.js";

const USAGE = "usage: lethe operators create NAME | lethe operators revoke NAME";

/**
 * `lethe operators create NAME`: mints an admin-API token, shown once and stored hashed.
 * `lethe operators revoke NAME`: the token stops working on the next admin request.
 */
export async function operatorsCommand(args: string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parseCommand(rest, {});
  if ((sub !== "create" && sub !== "revoke") || positionals.length !== 1) throw new CliError(USAGE);
  const name = validAccountName(positionals[0]);
  if (sub === "revoke") {
    return withStore(io, values.config, async (store) => {
      const operator = await store.operators.revoke(name);
      if (operator === undefined) throw new CliError(`no active operator named '${name}'`);
      await store.operators.recordEvent({ operatorId: operator.id, action: "operator_revoke" });
      io.out(`revoked operator ${operator.id}`);
      return 0;
    });
  }
  return withStore(io, values.config, async (store, config) => {
    if (await store.operators.findByName(name)) throw new CliError(`operator '${name}' already exists`);
    const hasher = new KeyHasher(await loadServerSecret(config.dataDir, config.secret));
    const token = mintApiKey(OPERATOR_TOKEN_PREFIX);
    const operator = await store.operators.create(name, hasher.hash(token));
    await store.operators.recordEvent({ operatorId: operator.id, action: "operator_create" });
    io.out(`operator id: ${operator.id}`);
    io.out(`token:       ${token}`);
    io.out(
      "Store this token now: Lethe keeps only its hash and cannot show it again. Use it as 'Authorization: Bearer <token>' on /admin/v1.",
    );
    return 0;
  });
}
