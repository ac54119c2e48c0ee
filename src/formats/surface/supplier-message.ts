import type { SupplierSaid } from "../../suppliers/supplier.js";

/**
 * Lethe's message, followed by the supplier's when it said one: both error formats relay a
 * supplier's rejection this way, in the content plane, to the caller only.
 */
export function withSupplierMessage(message: string, detail: SupplierSaid | undefined): string {
  return detail?.message === undefined ? message : `${message} Supplier said: ${detail.message}`;
}
