/**
 * Branded ids of the metadata plane. A plain string (anything a client sent) cannot
 * be assigned to these types: a value becomes a ModelId or SupplierId only by being
 * looked up in the loaded configuration, and the Lethe-minted ids only by minting.
 */
declare const brand: unique symbol;
type Brand<T, Name extends string> = T & { readonly [brand]: Name };

/** A model id the operator configured (what clients send as `model`). */
export type ModelId = Brand<string, "ModelId">;
/** A supplier id the operator configured. */
export type SupplierId = Brand<string, "SupplierId">;
/** An account id Lethe minted (the pseudonym kept in metadata). */
export type AccountId = Brand<string, "AccountId">;
/** A key id Lethe minted. */
export type KeyId = Brand<string, "KeyId">;
/** A request id Lethe minted. */
export type RequestId = Brand<string, "RequestId">;

/** The constant recorded when a request named no configured model. */
export const UNKNOWN_MODEL = "unknown" as ModelId;

/** Brands an id read from the operator's config file; only the config loader calls it. */
export function configuredId<T extends ModelId | SupplierId>(value: string): T {
  return value as T;
}

/** Brands an id Lethe minted or read back from its own store. */
export function mintedId<T extends AccountId | KeyId | RequestId>(value: string): T {
  return value as T;
}
