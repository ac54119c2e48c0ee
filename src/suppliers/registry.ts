import type { SupplierId } from "../config/ids.js";
import type { LetheConfig, SupplierConfig } from "../config/load-config.js";
import { AnthropicSupplier } from "./anthropic/anthropic-supplier.js";
import { DemoSupplier } from "./demo/demo-supplier.js";
import { OpenAICompatibleSupplier } from "./openai/openai-supplier.js";
import type { Supplier } from "./supplier.js";

type SupplierFactory = (config: SupplierConfig) => Supplier;

/** Maps a config `type` to its adapter; shared code never asks which supplier it holds. */
const FACTORIES: Record<SupplierConfig["type"], SupplierFactory> = {
  openai: (config) => new OpenAICompatibleSupplier(config),
  anthropic: (config) => new AnthropicSupplier(config),
  demo: (config) => new DemoSupplier(config),
};

/** Every configured supplier, built at start-up and again on a config reload. */
export class SupplierRegistry {
  private readonly suppliers = new Map<SupplierId, Supplier>();
  /** The config each supplier was built from, to tell on a reload which are unchanged. */
  private readonly built = new Map<SupplierId, string>();
  /** The suppliers this config qualifies for ZDR: a request planned before a reload asks again (attempt-routes.ts). */
  private readonly zdrQualified = new Set<SupplierId>();
  /**
   * The previous registry's suppliers that this one replaced or dropped: a request routed
   * before a reload may still ask for one on its next attempt (their pools are closing,
   * so that attempt fails over like any unreachable route).
   */
  private retired: ReadonlyMap<SupplierId, Supplier> = new Map();
  /** The previous registry's suppliers this one replaced or dropped: `closeRetired` closes them. */
  private readonly newlyRetired: Supplier[] = [];

  constructor(config: LetheConfig, previous?: SupplierRegistry) {
    for (const supplierConfig of config.suppliers.values()) {
      const id = supplierConfig.id;
      const shape = JSON.stringify(supplierConfig);
      // an unchanged supplier is kept, warm pool and all
      const kept = previous?.built.get(id) === shape ? previous.suppliers.get(id) : undefined;
      this.suppliers.set(id, kept ?? FACTORIES[supplierConfig.type](supplierConfig));
      this.built.set(id, shape);
      if (supplierConfig.zdr) this.zdrQualified.add(id);
    }
    if (previous !== undefined) {
      const retired = new Map<SupplierId, Supplier>();
      // those retired before stay findable too (a request may span two reloads); bounded by
      // the ids ever removed, since a configured id is found among the live ones first
      for (const [id, supplier] of previous.retired) if (!this.suppliers.has(id)) retired.set(id, supplier);
      for (const [id, supplier] of previous.suppliers) {
        if (this.suppliers.get(id) === supplier) continue;
        retired.set(id, supplier);
        this.newlyRetired.push(supplier);
      }
      this.retired = retired;
    }
  }

  get(id: SupplierId): Supplier {
    const supplier = this.suppliers.get(id) ?? this.retired.get(id);
    if (supplier === undefined) throw new Error("supplier missing from registry");
    return supplier;
  }

  /** Whether the config now in effect qualifies the supplier for ZDR; a retired one no longer is. */
  qualifiesForZdr(id: SupplierId): boolean {
    return this.zdrQualified.has(id);
  }

  /**
   * Closes the suppliers a reload replaced or dropped: their requests in flight finish
   * (undici closes a pool gracefully), new ones are refused. Kept for `get` meanwhile.
   */
  async closeRetired(): Promise<void> {
    await Promise.all(this.newlyRetired.map((supplier) => supplier.close()));
  }

  async close(): Promise<void> {
    await Promise.all([...this.suppliers.values()].map((supplier) => supplier.close()));
  }
}
