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

/** Every configured supplier, built once at start-up. */
export class SupplierRegistry {
  private readonly suppliers = new Map<SupplierId, Supplier>();

  constructor(config: LetheConfig) {
    for (const supplierConfig of config.suppliers.values()) {
      this.suppliers.set(supplierConfig.id, FACTORIES[supplierConfig.type](supplierConfig));
    }
  }

  get(id: SupplierId): Supplier {
    const supplier = this.suppliers.get(id);
    if (supplier === undefined) throw new Error("supplier missing from registry");
    return supplier;
  }

  async close(): Promise<void> {
    await Promise.all([...this.suppliers.values()].map((supplier) => supplier.close()));
  }
}
