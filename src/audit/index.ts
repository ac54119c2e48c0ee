export type { AuditReport, PathReport, StoreReport } from "./audit-report.js";
export { renderReport } from "./audit-report.js";
export { type AuditOptions, runAudit } from "./run-audit.js";
export type { SeededLeakKind } from "./seeded-leak.js";
export type { StoreName } from "./stores/store-scanner.js";
export { AuditInputError } from "./target-deployment.js";
