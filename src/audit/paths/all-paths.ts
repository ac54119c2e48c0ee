import { accessPaths } from "./access-paths.js";
import type { AuditPath, AuditSetting } from "./audit-path.js";
import { chatPaths } from "./chat-paths.js";
import { failurePaths } from "./failure-paths.js";
import { inputPaths } from "./input-paths.js";

/** Every path the audit knows, once each (in target mode some collapse into one). */
export function auditPaths(setting: AuditSetting): AuditPath[] {
  const all = [...chatPaths(setting), ...failurePaths(setting), ...inputPaths(setting), ...accessPaths(setting)];
  const seen = new Set<string>();
  return all.filter((path) => !seen.has(path.name) && seen.add(path.name));
}
