import { z } from "zod";
import { EMAIL_MAX_LENGTH, EMAIL_PATTERN } from "../accounts/email.js";

const accountName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, "account names use letters, digits, '.', '_' and '-' (at most 64)")
  // an erased account is renamed deleted-<id>: another account by that name would block the erasure
  .refine((name) => !name.startsWith("deleted-"), "account names may not start with 'deleted-'");
// both stores keep limits as 32-bit integers
const limit = z.number().int().positive().max(2_147_483_647).nullable();
/** Printable text only: a label is shown in terminals (`keys list`), and PostgreSQL refuses NUL. */
const printable = /^[\p{L}\p{N}\p{P}\p{Zs}\p{S}]*$/u;
const amount = z
  .string()
  .regex(/^\d{1,9}(\.\d{1,6})?$/, 'a positive decimal up to 999999999.999999, at most six decimals, e.g. "12.50"');

/** `POST /admin/v1/accounts`. */
export const createAccountSchema = z
  .object({
    name: accountName,
    email: z
      .string()
      .max(EMAIL_MAX_LENGTH)
      .regex(EMAIL_PATTERN, "an email address, like ops@example.com")
      .nullable()
      .optional(),
    rpm: limit.optional(),
    tpm: limit.optional(),
    credits: amount.optional(),
    zdr_required: z.boolean().optional(),
  })
  .strict();

/** `PATCH /admin/v1/accounts/:name`. */
export const updateAccountSchema = z
  .object({ rpm: limit.optional(), tpm: limit.optional(), zdr_required: z.boolean().optional() })
  .strict();

/** `POST /admin/v1/accounts/:name/keys`. */
export const createKeySchema = z
  .object({
    label: z.string().max(100).regex(printable, "labels are printable text").nullable().optional(),
    rpm: limit.optional(),
    tpm: limit.optional(),
  })
  .strict();

/** `POST /admin/v1/accounts/:name/credits`: amounts are decimal strings, never floats. */
export const addCreditsSchema = z.object({ amount }).strict();
