import { type SignedStatement, verifyStatement } from "../../zdr/retention-statement.js";
import { CliError, type CliIo, parseCommand } from "../cli-io.js";
import { boundedText, printable } from "../untrusted-text.js";

const USAGE = "usage: lethe zdr verify URL [--key PUBLIC_KEY_BASE64]";

/** A statement is a few kilobytes: a body past this is no statement (and would fill the CLI's memory). */
const MAX_STATEMENT_BYTES = 1_048_576;

async function fetchJson(url: string): Promise<unknown> {
  let text: string | null;
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(10_000) });
    if (!response.ok) throw new CliError(`${url} answered ${response.status}`);
    text = await boundedText(response, MAX_STATEMENT_BYTES);
  } catch (error) {
    if (error instanceof CliError) throw error;
    throw new CliError(`cannot reach ${url}`);
  }
  if (text === null) throw new CliError(`${url} answered more than ${MAX_STATEMENT_BYTES} bytes`);
  try {
    return JSON.parse(text);
  } catch {
    throw new CliError(`${url} did not answer JSON`);
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The fields this command prints, of the types Lethe writes them in: a server's answer is not trusted to. */
function isStatementShaped(signed: unknown): signed is SignedStatement {
  if (!isObject(signed) || typeof signed.signature !== "string" || !isObject(signed.statement)) return false;
  const statement = signed.statement;
  return (
    typeof statement.lethe_version === "string" &&
    typeof statement.config_sha256 === "string" &&
    typeof statement.issued_at === "string" &&
    typeof statement.content_retained === "string" &&
    isObject(statement.metadata) &&
    typeof statement.metadata.retention_days === "number" &&
    Array.isArray(statement.suppliers) &&
    statement.suppliers.every((supplier) => isObject(supplier) && typeof supplier.id === "string")
  );
}

/**
 * `lethe zdr verify URL`: fetches a deployment's signed retention statement and checks
 * its signature, against `--key` when given (pin it), else the key the server serves.
 */
export async function zdrCommand(args: string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parseCommand(rest, { key: { type: "string" } });
  if (sub !== "verify" || positionals.length !== 1) throw new CliError(USAGE);
  let base: URL;
  try {
    base = new URL(positionals[0] as string);
  } catch {
    throw new CliError("URL must be an http(s) URL, e.g. http://127.0.0.1:8080");
  }
  // a key that is not one at all is the operator's typo, not a forged statement (checked before any fetch)
  if (typeof values.key === "string" && !/^[A-Za-z0-9+/]{43}=$/.test(values.key)) {
    throw new CliError("--key must be an ed25519 public key in base64 (44 characters), as GET /v1/zdr/key serves it");
  }
  const root = base.href.replace(/\/+$/, "").replace(/\/v1(\/zdr)?$/, "");
  const signed = await fetchJson(`${root}/v1/zdr`);
  if (!isStatementShaped(signed)) throw new CliError(`${root}/v1/zdr is not a signed statement`);
  let key = typeof values.key === "string" ? values.key : undefined;
  if (key === undefined) {
    const served = (await fetchJson(`${root}/v1/zdr/key`)) as { public_key?: unknown };
    if (typeof served.public_key !== "string") throw new CliError(`${root}/v1/zdr/key has no public key`);
    key = served.public_key;
  }
  // every string below came from the server: printed with no terminal control in it
  const shownRoot = printable(root);
  if (!verifyStatement(signed, key)) {
    io.out(`INVALID: the statement from ${shownRoot} does not match its signature under key ${printable(key, 60)}`);
    return 1;
  }
  const statement = signed.statement;
  io.out(`VALID: statement from ${shownRoot} signed by ed25519 key ${printable(key, 60)}`);
  io.out(
    `  lethe ${printable(statement.lethe_version)}, config sha256 ${printable(statement.config_sha256)}, issued ${printable(statement.issued_at)}`,
  );
  io.out(
    `  content retained: ${printable(statement.content_retained)}; metadata kept ${printable(statement.metadata.retention_days)} days`,
  );
  const suppliers = statement.suppliers.map(
    (supplier) => `${printable(supplier.id, 64)} (zdr ${supplier.zdr === true})`,
  );
  io.out(`  suppliers: ${suppliers.join(", ")}`);
  if (statement.development_run === true) {
    io.out(
      "  warning: a development run (serve --dev): its process hardening is off, so content in memory could be read",
    );
  }
  if (values.key === undefined) io.out("  (key fetched from the same server: pass --key to pin a key you trust)");
  return 0;
}
