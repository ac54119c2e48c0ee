import { formatMicros } from "../../billing/money.js";
import { KeyHasher, mintApiKey, OPERATOR_TOKEN_PREFIX } from "../../keys/api-key.js";
import { loadServerSecret } from "../../store/server-secret.js";
import type { Store } from "../../store/store.js";
import { validAccountName } from "../arguments.js";
import { CliError, type CliIo, parseCommand, positiveInt, withStore } from "../cli-io.js";

const USAGE =
  "usage: lethe operators create NAME | operators revoke NAME | operators rotate NAME | operators list | operators events [--limit N]";

const DEFAULT_EVENTS = 50;

/**
 * `lethe operators create NAME`: mints an admin-API token, shown once and stored hashed.
 * `lethe operators revoke NAME`: the token stops working on the next admin request.
 * `lethe operators rotate NAME`: a new token for the same operator (a revoked one comes back).
 * `lethe operators list`, `lethe operators events`: who may use the admin API, and what was done.
 */
export async function operatorsCommand(args: string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parseCommand(rest, { limit: { type: "string" } });
  if (sub === "list" || sub === "events") {
    if (positionals.length !== 0) throw new CliError(USAGE);
    const limit = positiveInt(values.limit, "limit") ?? DEFAULT_EVENTS;
    return withStore(io, values.config, (store) =>
      sub === "list" ? listOperators(store, io) : listEvents(store, io, limit),
    );
  }
  if ((sub !== "create" && sub !== "revoke" && sub !== "rotate") || positionals.length !== 1) throw new CliError(USAGE);
  const name = validAccountName(positionals[0], "operator");
  if (sub === "revoke") {
    return withStore(io, values.config, async (store) => {
      const operator = await store.operators.revoke(name);
      if (operator === undefined) throw new CliError(`no active operator named '${name}'`);
      await store.operators.recordEvent({
        operatorId: null,
        action: "operator_revoke",
        subjectOperatorId: operator.id,
      });
      io.out(`revoked operator ${operator.id}`);
      return 0;
    });
  }
  return withStore(io, values.config, async (store, config) => {
    const existing = await store.operators.findByName(name);
    if (sub === "create" && existing !== undefined) {
      throw new CliError(`operator '${name}' already exists (lethe operators rotate ${name} gives it a new token)`);
    }
    if (sub === "rotate" && existing === undefined) throw new CliError(`no operator named '${name}'`);
    const hasher = new KeyHasher(await loadServerSecret(config.dataDir, config.secret));
    const token = mintApiKey(OPERATOR_TOKEN_PREFIX);
    let action: "operator_create" | "operator_rotate" | "operator_reinstate" = "operator_create";
    let operator: { id: string } | undefined;
    if (sub === "create") operator = await store.operators.create(name, hasher.hash(token));
    else {
      const rotated = await store.operators.rotate(name, hasher.hash(token));
      // a revoked operator given a token again is a reinstatement: the trail says so
      action = rotated?.wasRevoked ? "operator_reinstate" : "operator_rotate";
      operator = rotated;
    }
    if (operator === undefined) throw new CliError(`no operator named '${name}'`);
    // the CLI acted (operator_id null), on this operator
    await store.operators.recordEvent({ operatorId: null, action, subjectOperatorId: operator.id });
    io.out(`operator id: ${operator.id}`);
    io.out(`token:       ${token}`);
    io.out(
      `Store this token now: Lethe keeps only its hash and cannot show it again. Use it as 'Authorization: Bearer <token>' on /admin/v1.${sub === "rotate" ? " The previous token no longer works." : ""}`,
    );
    return 0;
  });
}

async function listOperators(store: Store, io: CliIo): Promise<number> {
  io.out(["NAME", "OPERATOR ID", "CREATED", "STATUS"].join("\t"));
  for (const operator of await store.operators.list()) {
    const status = operator.revokedAt === null ? "active" : `revoked ${new Date(operator.revokedAt).toISOString()}`;
    io.out([operator.name, operator.id, new Date(operator.createdAt).toISOString(), status].join("\t"));
  }
  return 0;
}

/** The audit trail, newest first: admin API actions under their operator's id, the CLI's as `cli`. */
async function listEvents(store: Store, io: CliIo, limit: number): Promise<number> {
  io.out(["WHEN", "ACTION", "BY", "OPERATOR", "ACCOUNT", "KEY", "AMOUNT"].join("\t"));
  for (const event of await store.operators.recentEvents(limit)) {
    io.out(
      [
        new Date(event.ts).toISOString(),
        event.action,
        event.operator_id ?? "cli",
        event.subject_operator_id ?? "",
        event.account_id ?? "",
        event.key_id ?? "",
        event.amount_micros === null ? "" : formatMicros(event.amount_micros),
      ].join("\t"),
    );
  }
  return 0;
}
