import { type SignedStatement, verifyStatement } from "../../zdr/retention-statement.js";
import { CliError, type CliIo, parseCommand } from "../cli-io.js";

const USAGE = "usage: lethe zdr verify URL [--key PUBLIC_KEY_BASE64]";

async function fetchJson(url: string): Promise<unknown> {
  let response: Response;
  try {
    response = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  } catch {
    throw new CliError(`cannot reach ${url}`);
  }
  if (!response.ok) throw new CliError(`${url} answered ${response.status}`);
  try {
    return await response.json();
  } catch {
    throw new CliError(`${url} did not answer JSON`);
  }
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
  const signed = (await fetchJson(`${root}/v1/zdr`)) as SignedStatement;
  if (typeof signed?.signature !== "string" || typeof signed.statement !== "object") {
    throw new CliError(`${root}/v1/zdr is not a signed statement`);
  }
  let key = typeof values.key === "string" ? values.key : undefined;
  if (key === undefined) {
    const served = (await fetchJson(`${root}/v1/zdr/key`)) as { public_key?: unknown };
    if (typeof served.public_key !== "string") throw new CliError(`${root}/v1/zdr/key has no public key`);
    key = served.public_key;
  }
  if (!verifyStatement(signed, key)) {
    io.out(`INVALID: the statement from ${root} does not match its signature under key ${key}`);
    return 1;
  }
  const statement = signed.statement;
  io.out(`VALID: statement from ${root} signed by ed25519 key ${key}`);
  io.out(`  lethe ${statement.lethe_version}, config sha256 ${statement.config_sha256}, issued ${statement.issued_at}`);
  io.out(`  content retained: ${statement.content_retained}; metadata kept ${statement.metadata.retention_days} days`);
  io.out(`  suppliers: ${statement.suppliers.map((supplier) => `${supplier.id} (zdr ${supplier.zdr})`).join(", ")}`);
  if (statement.development_run === true) {
    io.out(
      "  warning: a development run (serve --dev): its process hardening is off, so content in memory could be read",
    );
  }
  if (values.key === undefined) io.out("  (key fetched from the same server: pass --key to pin a key you trust)");
  return 0;
}
