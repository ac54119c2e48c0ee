import { ENCODING_FAMILIES, encodingVariants } from "./canaries.js";
import type { CanaryRegistry } from "./canary-registry.js";
import type { PathRun } from "./drive-paths.js";
import { STORE_NAMES, type StoreName } from "./stores/store-scanner.js";
import type { StoreCoverage, StoreResult } from "./stores/store-sweep.js";

/** One path in the report: how it went and how many of its canaries each store held. */
export interface PathReport {
  name: string;
  outcome: PathRun["outcome"];
  notes: string[];
  /** Its requests with the audit's own key answered 2xx. */
  served?: number;
  canaries: number;
  /** Canaries of this path found per store; only scanned stores appear. */
  hits: Partial<Record<StoreName, number>>;
}

/** One store in the report. */
export interface StoreReport {
  store: StoreName;
  description: string;
  scanned: boolean;
  /** Only "complete" and "not in use" stores leave a plain PASS possible. */
  coverage: StoreCoverage;
  detail: string;
  hits: number;
}

/** The models a target lists, and those the audit drove (all of them unless `--model` chose some). */
export interface ModelCoverage {
  listed: string[];
  driven: string[];
  notDriven: string[];
}

/**
 * The audit's findings: path names, store names and counts only. No canary, no
 * content and no key is ever part of it, so it can be printed and kept.
 */
export interface AuditReport {
  mode: "embedded" | "target";
  /** The target's origin (never its key), or null in embedded mode. */
  target: string | null;
  paths: PathReport[];
  stores: StoreReport[];
  /** Target mode only: which of the models the target lists were driven. */
  models: ModelCoverage | null;
  encodings: { families: string[]; variants: string[] };
  figures: {
    pathsDriven: number;
    pathsNotApplicable: number;
    pathsNotAsDesigned: number;
    /** Paths whose canaries the target's limits turned away at the gate (its rate limit, credit). */
    pathsRefused: number;
    storesScanned: number;
    canaries: number;
    hits: number;
    durationMs: number;
  };
  /**
   * The exit status: true for a PASS, and for a qualified PASS, where only what the
   * operator excluded on purpose (`--no-log`, `--model`) went unsearched; `excluded` says what.
   */
  pass: boolean;
  /** What the operator excluded; both empty for a plain PASS. */
  excluded: { stores: StoreName[]; models: string[] };
  verdict: string;
}

/** At most this many names in a verdict line; the JSON report has them all. */
const NAMES_IN_VERDICT = 10;

function nameList(names: string[]): string {
  const shown = names.slice(0, NAMES_IN_VERDICT).join(", ");
  return names.length > NAMES_IN_VERDICT ? `${shown} and ${names.length - NAMES_IN_VERDICT} more` : shown;
}

/** The stores in use that were not searched in full, each with why. */
function storeGaps(stores: StoreResult[]): string | null {
  const gaps = stores.filter((store) => store.coverage === "not scanned" || store.coverage === "incomplete");
  if (gaps.length === 0) return null;
  const each = gaps.map((store) => `${store.store} (${store.gap ?? store.coverage})`);
  return `${gaps.length} store(s) in use were not searched in full: ${each.join(", ")}`;
}

/** What the operator excluded, for a qualified verdict. */
function exclusions(stores: StoreResult[], models: ModelCoverage | null): string | null {
  const parts = [
    ...stores.filter((store) => store.coverage === "excluded").map((store) => `${store.store} (${store.gap})`),
    ...(models !== null && models.notDriven.length > 0
      ? [`model(s) ${nameList(models.notDriven)} (not chosen with --model)`]
      : []),
  ];
  return parts.length === 0 ? null : `not searched, as the operator chose: ${parts.join(", ")}`;
}

/** Puts the path runs and the store results together, with the figures and the verdict. */
export function buildReport(input: {
  mode: AuditReport["mode"];
  target: string | null;
  runs: PathRun[];
  stores: StoreResult[];
  registry: CanaryRegistry;
  models?: ModelCoverage | null;
  durationMs: number;
}): AuditReport {
  const { runs, stores, registry } = input;
  const paths: PathReport[] = runs.map((run) => ({ ...run, canaries: 0, hits: {} }));
  for (let index = 0; index < registry.count; index++) (paths[registry.pathOf(index)] as PathReport).canaries++;
  for (const store of stores) {
    if (!store.scanned) continue;
    for (const path of paths) path.hits[store.store] = 0;
    for (const canary of store.canaries) {
      const path = paths[registry.pathOf(canary)] as PathReport;
      path.hits[store.store] = (path.hits[store.store] ?? 0) + 1;
    }
  }
  const storeReports: StoreReport[] = stores.map((store) => ({
    store: store.store,
    description: store.description,
    scanned: store.scanned,
    coverage: store.coverage,
    detail: store.detail,
    hits: store.canaries.size,
  }));
  const hits = storeReports.reduce((sum, store) => sum + store.hits, 0);
  const figures = {
    pathsDriven: paths.filter((path) => path.outcome !== "not applicable").length,
    pathsNotApplicable: paths.filter((path) => path.outcome === "not applicable").length,
    pathsNotAsDesigned: paths.filter((path) => path.outcome === "not as designed").length,
    pathsRefused: paths.filter((path) => path.outcome === "refused by limits").length,
    storesScanned: storeReports.filter((store) => store.scanned).length,
    canaries: registry.count,
    hits,
    durationMs: input.durationMs,
  };
  const models = input.models ?? null;
  const gaps = storeGaps(stores);
  // paths not driven (not applicable) say nothing of how many answers they had
  const counted = paths.filter((path) => path.served !== undefined);
  const nothingServed = input.mode === "target" && counted.length > 0 && counted.every((path) => path.served === 0);
  const excluded = exclusions(stores, models);
  const refused =
    figures.pathsRefused === 0
      ? null
      : `the gateway refused the audit's key on ${figures.pathsRefused} path(s) ` +
        "(rate limit, credit, draining, or a model with no ZDR supplier for an account that requires ZDR) before their canaries reached it: " +
        "audit with a key whose account has no rpm/tpm limit, enough credit and ZDR optional (`lethe accounts create NAME --zdr optional`)";
  const searched = `${figures.canaries} canaries over ${figures.pathsDriven} paths, ${figures.storesScanned} stores scanned`;
  let verdict: string;
  if (hits > 0) {
    const where = storeReports.filter((store) => store.hits > 0).map((store) => `${store.store} (${store.hits})`);
    verdict = `FAIL: ${hits} canary hit(s), content was retained in: ${where.join(", ")}`;
  } else if (refused !== null) {
    verdict = `INCONCLUSIVE: no canary found, but ${[refused, gaps].filter((part) => part !== null).join("; and ")}`;
  } else if (figures.pathsNotAsDesigned > 0) {
    verdict = `FAIL: no canary found, but ${figures.pathsNotAsDesigned} path(s) did not run as designed and prove nothing`;
  } else if (gaps !== null) {
    // a store the deployment uses that was not searched proves nothing either way
    verdict = `INCONCLUSIVE: no canary found, but ${gaps}`;
  } else if (nothingServed) {
    // a target whose suppliers are all down (or that is no gateway) answered every path with
    // an error: the paths of an answer, a stream, a tool call never ran, and proved nothing
    verdict = `INCONCLUSIVE: no canary found, but no request of the audit's was answered with a 2xx: its answers' paths never ran (are the target's suppliers up?)`;
  } else if (excluded !== null) {
    verdict = `PASS (qualified): no canary found in any store searched (${searched}); ${excluded}`;
  } else {
    verdict = `PASS: no canary found in any store (${searched})`;
  }
  const pass = hits === 0 && figures.pathsNotAsDesigned === 0 && refused === null && gaps === null && !nothingServed;
  // a qualified PASS names the exclusions already; any other verdict still says what it left out on purpose
  if (!pass && excluded !== null) verdict += `; ${excluded}`;
  return {
    mode: input.mode,
    target: input.target,
    paths,
    stores: storeReports,
    models,
    encodings: { families: [...ENCODING_FAMILIES], variants: encodingVariants() },
    figures,
    pass,
    excluded: {
      stores: stores.filter((store) => store.coverage === "excluded").map((store) => store.store),
      models: models?.notDriven ?? [],
    },
    verdict,
  };
}

const RESULT_LABELS: Record<PathRun["outcome"], string> = {
  driven: "driven",
  "not applicable": "n/a",
  "not as designed": "FAILED",
  "refused by limits": "LIMIT",
};

function cell(text: string, width: number): string {
  return text.length > width ? `${text.slice(0, width - 1)}…` : text.padEnd(width);
}

/** The report as text: the paths x stores table, the stores, the figures and the one-line verdict last. */
export function renderReport(report: AuditReport): string {
  const lines: string[] = [];
  lines.push(
    `lethe audit (${report.mode === "embedded" ? "embedded: Lethe against its own fake suppliers" : `target ${report.target}`})`,
  );
  lines.push("");
  const nameWidth = Math.min(84, Math.max(...report.paths.map((path) => path.name.length), 4));
  const columns = STORE_NAMES.map((store) => ({ store, width: Math.max(store.length, 4) }));
  lines.push(
    `${cell("PATH", nameWidth)}  ${cell("RESULT", 6)}  ${columns.map((column) => cell(column.store.toUpperCase(), column.width)).join("  ")}`,
  );
  for (const path of report.paths) {
    // a path that sent nothing has nothing to find
    const counts = columns.map((column) =>
      cell(path.canaries === 0 ? "-" : String(path.hits[column.store] ?? "-"), column.width),
    );
    lines.push(
      `${cell(path.name, nameWidth)}  ${cell(RESULT_LABELS[path.outcome], 6)}  ${counts.join("  ")}`.trimEnd(),
    );
  }
  lines.push("", "Stores:");
  for (const store of report.stores) {
    const state = store.scanned ? `${store.hits} hit(s); ${store.detail}` : `${store.coverage}: ${store.detail}`;
    lines.push(`  ${cell(store.store, 9)} ${state} [${store.description}]`);
  }
  if (report.models !== null) {
    const { listed, driven, notDriven } = report.models;
    lines.push("", `Models: ${listed.length} listed by GET /v1/models, ${driven.length} driven`);
    if (notDriven.length > 0) lines.push(`  not driven (not chosen with --model): ${notDriven.join(", ")}`);
  }
  const notApplicable = new Map<string, string[]>();
  for (const path of report.paths) {
    if (path.outcome !== "not applicable") continue;
    const reason = path.notes.join("; ");
    notApplicable.set(reason, [...(notApplicable.get(reason) ?? []), path.name]);
  }
  if (notApplicable.size > 0) {
    lines.push("", report.mode === "embedded" ? "Not applicable in this build:" : "Not applicable against a target:");
    for (const [reason, names] of notApplicable) {
      if (names.length === 1) lines.push(`  ${names[0]}: ${reason}`);
      else lines.push(`  ${reason}:`, ...names.map((name) => `    ${name}`));
    }
  }
  const refused = report.paths.filter((path) => path.outcome === "refused by limits");
  if (refused.length > 0) {
    lines.push("", "Refused by the gateway's limits (these paths prove nothing):");
    for (const path of refused) lines.push(`  ${path.name}: ${path.notes.join("; ")}`);
  }
  const noted = report.paths.filter(
    (path) => path.outcome !== "not applicable" && path.outcome !== "refused by limits" && path.notes.length > 0,
  );
  if (noted.length > 0) {
    lines.push(
      "",
      report.mode === "embedded" ? "Did not run as designed:" : "Answered differently (remarks, not failures):",
    );
    for (const path of noted) lines.push(`  ${path.name}: ${path.notes.join("; ")}`);
  }
  const { figures } = report;
  lines.push(
    "",
    `${figures.pathsDriven} paths driven (${figures.pathsNotApplicable} not applicable), ` +
      `${figures.storesScanned} stores scanned, ${report.encodings.families.length} encodings searched ` +
      `(${report.encodings.variants.length} variants), ${figures.canaries} canaries, ${figures.hits} hits, ` +
      `in ${(figures.durationMs / 1000).toFixed(1)} s`,
    report.verdict,
  );
  return lines.join("\n");
}
