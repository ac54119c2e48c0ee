import { EMAIL_MAX_LENGTH, EMAIL_PATTERN } from "../accounts/email.js";
import { parseAmountMicros } from "../billing/money.js";
import { CliError } from "./cli-io.js";

const ACCOUNT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Checks an account name: letters, digits, . _ -, at most 64 characters. */
export function validAccountName(name: string | undefined, what: "account" | "operator" = "account"): string {
  if (name === undefined || !ACCOUNT_NAME.test(name)) {
    throw new CliError(`${what} names use letters, digits, '.', '_' and '-' (at most 64 characters)`);
  }
  // an erased account is renamed deleted-<id>: it is not addressed by name, and another
  // account by that name would block the erasure
  if (name.startsWith("deleted-")) throw new CliError("account names may not start with 'deleted-'");
  return name;
}

/** Reads a positive AMOUNT (at most six decimals) as micro-units. */
export function positiveAmount(text: string | undefined): number {
  const micros = text === undefined ? null : parseAmountMicros(text);
  if (micros === null || micros <= 0) {
    throw new CliError("AMOUNT must be a positive decimal up to 999999999.999999, at most six decimals, e.g. 12.50");
  }
  return micros;
}

/** Checks an email address loosely (accounts/email.ts). */
export function validEmail(text: string): string {
  if (text.length > EMAIL_MAX_LENGTH || !EMAIL_PATTERN.test(text)) {
    throw new CliError("--email must be an email address");
  }
  return text;
}
