import { type KeyId, mintedId } from "../../config/ids.js";
import { isWellFormedKey, KEY_PREFIX, KeyHasher } from "../../keys/api-key.js";
import { issueKey } from "../../keys/issue-key.js";
import { loadServerSecret } from "../../store/server-secret.js";
import { validAccountName } from "../arguments.js";
import { CliError, type CliIo, parseCommand, positiveInt, requiredString, withStore } from "../cli-io.js";

const USAGE =
  "usage: lethe keys create --account NAME [--label LABEL] | keys list --account NAME | keys revoke KEY_ID_OR_KEY";

/** `lethe keys create|list|revoke`. */
export async function keysCommand(args: string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = args;
  // each subcommand takes its own options: one given to another (`keys list --label x`) is refused, not ignored
  const { values, positionals } = parseCommand(rest, {
    ...(sub === "create" && { label: { type: "string" }, rpm: { type: "string" }, tpm: { type: "string" } }),
    ...(sub !== "revoke" && { account: { type: "string" } }),
  } as { account: { type: "string" }; label: { type: "string" }; rpm: { type: "string" }; tpm: { type: "string" } });
  return withStore(io, values.config, async (store, config) => {
    switch (sub) {
      case "create": {
        const name = validAccountName(requiredString(values.account, "account"));
        const label = typeof values.label === "string" ? values.label : null;
        if (label !== null && (label.length > 100 || !/^[\p{L}\p{N}\p{P}\p{Zs}\p{S}]*$/u.test(label))) {
          throw new CliError("--label must be at most 100 printable characters");
        }
        const account = await store.findAccountByName(name);
        if (!account) throw new CliError(`no account named '${name}'`);
        const hasher = new KeyHasher(await loadServerSecret(config.dataDir, config.secret));
        const limits = { rpm: positiveInt(values.rpm, "rpm"), tpm: positiveInt(values.tpm, "tpm") };
        const { key, record } = await issueKey(store, hasher, account.id, label, limits);
        await store.operators.recordEvent({
          operatorId: null,
          action: "key_create",
          accountId: account.id,
          keyId: record.id,
        });
        io.out(`key id: ${record.id}`);
        io.out(`key:    ${key}`);
        io.out("Store this key now: Lethe keeps only its hash and cannot show it again.");
        return 0;
      }
      case "list": {
        const name = validAccountName(requiredString(values.account, "account"));
        const account = await store.findAccountByName(name);
        if (!account) throw new CliError(`no account named '${name}'`);
        const keys = await store.listKeys(account.id);
        io.out(["KEY ID", "KEY", "LABEL", "CREATED", "STATUS"].join("\t"));
        for (const key of keys) {
          const status = key.revokedAt === null ? "active" : `revoked ${new Date(key.revokedAt).toISOString()}`;
          io.out([key.id, key.display, key.label ?? "", new Date(key.createdAt).toISOString(), status].join("\t"));
        }
        return 0;
      }
      case "revoke": {
        const target = positionals[0];
        if (positionals.length !== 1 || target === undefined)
          throw new CliError("usage: lethe keys revoke KEY_ID_OR_KEY");
        let keyId: KeyId;
        if (target.startsWith(KEY_PREFIX)) {
          // the leaked key itself: find it by its hash
          if (!isWellFormedKey(target)) throw new CliError("that is not a valid Lethe key");
          const hasher = new KeyHasher(await loadServerSecret(config.dataDir, config.secret));
          const record = await store.findKeyByHash(hasher.hash(target));
          if (!record) throw new CliError("no such key");
          keyId = record.id;
        } else {
          if (!/^key_[0-9a-z]{20}$/.test(target))
            throw new CliError(
              target.startsWith("key_")
                ? "a key id is key_ and 20 lowercase letters or digits (lethe keys list --account NAME shows them)"
                : "give a key id (key_…) or the key itself (sk-lethe-…)",
            );
          keyId = mintedId<KeyId>(target);
          if (!(await store.findKeyById(keyId))) throw new CliError("no such key");
        }
        const revoked = await store.revokeKey(keyId);
        if (revoked) {
          const accountId = (await store.findKeyById(keyId))?.accountId ?? null;
          await store.operators.recordEvent({ operatorId: null, action: "key_revoke", accountId, keyId });
        }
        io.out(revoked ? `revoked ${keyId}` : `${keyId} was already revoked`);
        return 0;
      }
      default:
        throw new CliError(USAGE);
    }
  });
}
