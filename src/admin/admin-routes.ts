import type { FastifyInstance, FastifyRequest } from "fastify";
import { deleteAccountData, exportAccountData } from "../accounts/account-data.js";
import { formatMicros, parseAmountMicros } from "../billing/money.js";
import { type KeyId, mintedId } from "../config/ids.js";
import { LetheError } from "../errors/lethe-error.js";
import { validateBody } from "../formats/validation/request-validation.js";
import type { Gateway } from "../http/gateway.js";
import type { KeyHasher } from "../keys/api-key.js";
import { issueKey } from "../keys/issue-key.js";
import type { AdminAction } from "../logging/event-log.js";
import type { OperatorRecord } from "../store/operator-store.js";
import type { AccountRecord } from "../store/store.js";
import { usageForAccount } from "../usage/usage-query.js";
import { addCreditsSchema, createAccountSchema, createKeySchema, updateAccountSchema } from "./admin-schemas.js";
import { authenticateThrottledOperator } from "./operator-auth.js";

declare module "fastify" {
  interface FastifyRequest {
    operator: OperatorRecord | null;
  }
}

function accountView(account: AccountRecord) {
  return {
    id: account.id,
    name: account.name,
    email: account.email,
    created_at: new Date(account.createdAt).toISOString(),
    rpm: account.rpm,
    tpm: account.tpm,
    zdr_required: account.zdrRequired,
    balance: formatMicros(account.balanceMicros),
  };
}

/**
 * The operators' API under `/admin/v1`: accounts, keys, credits and usage, JSON in and
 * out, authenticated by an operator token. Every action is written as an audit event.
 */
export function registerAdminRoutes(app: FastifyInstance, gateway: Gateway, hasher: KeyHasher): void {
  const store = gateway.store;
  const audit = async (
    request: FastifyRequest,
    action: AdminAction,
    target: { accountId?: string; keyId?: string; amountMicros?: number },
  ) => {
    await store.operators.recordEvent({ operatorId: request.operator?.id ?? null, action, ...target });
    gateway.log.event("admin_action", { action });
  };
  const account = async (name: unknown): Promise<AccountRecord> => {
    const found = typeof name === "string" ? await store.findAccountByName(name) : undefined;
    if (found === undefined || found.deletedAt !== null)
      throw new LetheError("LETHE_UNKNOWN_ACCOUNT", "No such account.");
    return found;
  };
  const name = (request: FastifyRequest) => (request.params as { name?: string }).name;

  app.register(
    async (admin) => {
      admin.decorateRequest("operator", null);
      admin.addHook("onRequest", async (request, reply) => {
        request.operator = await authenticateThrottledOperator(request, gateway);
        // answers hold whole keys and personal data: no cache on the way may keep them
        reply.header("cache-control", "no-store");
      });
      // a path nobody serves is an operator's to learn of: the hook above asks for the token first
      admin.setNotFoundHandler(async () => {
        throw new LetheError("LETHE_NOT_FOUND", "No such endpoint.");
      });

      admin.post("/accounts", async (request, reply) => {
        const body = validateBody(createAccountSchema, request.body);
        if (await store.findAccountByName(body.name))
          throw new LetheError("LETHE_CONFLICT", "An account with this name exists.");
        const created = await store
          .createAccount({
            name: body.name,
            email: body.email ?? null,
            rpm: body.rpm ?? null,
            tpm: body.tpm ?? null,
            zdrRequired: body.zdr_required ?? true,
          })
          .catch(async (error: unknown) => {
            // two creations of one name at once: the database's unique name settles which one won
            if (await store.findAccountByName(body.name))
              throw new LetheError("LETHE_CONFLICT", "An account with this name exists.");
            throw error;
          });
        const credits = body.credits === undefined ? 0 : (parseAmountMicros(body.credits) ?? 0);
        if (credits > 0) await store.ledger.credit(created.id, credits, "top_up");
        await audit(request, "account_create", { accountId: created.id, amountMicros: credits });
        return reply.code(201).send(accountView((await store.findAccountById(created.id)) as AccountRecord));
      });

      admin.get("/accounts", async () => {
        const all = await store.accountAdmin.listAccountIds();
        const accounts = await Promise.all(all.map((entry) => store.findAccountByName(entry.name)));
        return {
          data: accounts
            .filter((entry) => entry !== undefined && entry.deletedAt === null)
            .map((entry) => accountView(entry as AccountRecord)),
        };
      });

      admin.get("/accounts/:name", async (request) => accountView(await account(name(request))));

      admin.patch("/accounts/:name", async (request) => {
        const target = await account(name(request));
        const body = validateBody(updateAccountSchema, request.body);
        await store.accountAdmin.updateSettings(target.id, {
          rpm: body.rpm,
          tpm: body.tpm,
          zdrRequired: body.zdr_required,
        });
        // limits and the ZDR setting are read at authentication: drop the cached view of this account's keys
        gateway.authenticator.invalidate();
        await audit(request, "account_update", { accountId: target.id });
        return accountView((await store.findAccountById(target.id)) as AccountRecord);
      });

      admin.delete("/accounts/:name", async (request) => {
        const target = await account(name(request));
        // this process's finished requests, still in a batch, are written first so the erase
        // unlinks them too; what other processes write later, the next retention pass unlinks
        await gateway.meter.drain(Date.now() + 2_000);
        await deleteAccountData(store, target);
        gateway.authenticator.invalidate();
        await audit(request, "account_delete", { accountId: target.id });
        return { deleted: true, id: target.id };
      });

      admin.get("/accounts/:name/export", async (request) => {
        const target = await account(name(request));
        await audit(request, "account_export", { accountId: target.id });
        return exportAccountData(store, target);
      });

      admin.post("/accounts/:name/keys", async (request, reply) => {
        const target = await account(name(request));
        const body = validateBody(createKeySchema, request.body ?? {});
        const limits = { rpm: body.rpm ?? null, tpm: body.tpm ?? null };
        const { key, record } = await issueKey(store, hasher, target.id, body.label ?? null, limits);
        await audit(request, "key_create", { accountId: target.id, keyId: record.id });
        return reply.code(201).send({ id: record.id, key, display: record.display, label: record.label });
      });

      admin.get("/accounts/:name/keys", async (request) => {
        const target = await account(name(request));
        const keys = await store.listKeys(target.id);
        return {
          data: keys.map((key) => ({
            id: key.id,
            display: key.display,
            label: key.label,
            created_at: new Date(key.createdAt).toISOString(),
            revoked_at: key.revokedAt === null ? null : new Date(key.revokedAt).toISOString(),
          })),
        };
      });

      admin.delete("/keys/:id", async (request) => {
        const id = (request.params as { id?: string }).id ?? "";
        const key = /^key_[0-9a-z]{20}$/.test(id) ? await store.findKeyById(mintedId<KeyId>(id)) : undefined;
        if (key === undefined) throw new LetheError("LETHE_UNKNOWN_KEY", "No such key.");
        const revoked = await store.revokeKey(key.id);
        gateway.authenticator.invalidate();
        // a key revoked already is no change: the trail holds the revocation once, as the CLI's does
        if (revoked) await audit(request, "key_revoke", { accountId: key.accountId, keyId: key.id });
        return { id: key.id, revoked: true, already_revoked: !revoked };
      });

      admin.post("/accounts/:name/credits", async (request) => {
        const target = await account(name(request));
        const body = validateBody(addCreditsSchema, request.body);
        const micros = parseAmountMicros(body.amount) ?? 0;
        if (micros <= 0)
          throw new LetheError("LETHE_INVALID_REQUEST", "'amount' must be positive.", { param: "amount" });
        const balance = await store.ledger.credit(target.id, micros, "top_up");
        gateway.credits.forget(target.id);
        await audit(request, "credits_add", { accountId: target.id, amountMicros: micros });
        return { balance: formatMicros(balance), added: formatMicros(micros) };
      });

      admin.get("/accounts/:name/credits", async (request) => {
        const target = await account(name(request));
        const entries = await store.ledger.recent(target.id, 50);
        return {
          balance: formatMicros(await store.ledger.balance(target.id)),
          entries: entries.map((entry) => ({
            at: new Date(entry.ts).toISOString(),
            kind: entry.kind,
            amount: formatMicros(entry.amountMicros),
            request_id: entry.requestId,
          })),
        };
      });

      admin.get("/accounts/:name/usage", async (request) => {
        const target = await account(name(request));
        return usageForAccount(store, target.id, request.query);
      });
    },
    { prefix: "/admin/v1" },
  );
}
