import { z } from "zod";
import { formatMicros } from "../billing/money.js";
import type { AccountId } from "../config/ids.js";
import { LetheError } from "../errors/lethe-error.js";
import { validateBody } from "../formats/validation/request-validation.js";
import type { Store } from "../store/store.js";
import { buildUsageReport, type UsageGroup, type UsageGrouping, utcDay } from "./usage-report.js";

const DAY_MS = 86_400_000;
const MAX_RANGE_DAYS = 400;

const querySchema = z.object({
  from: z.string().optional(),
  to: z.string().optional(),
  group_by: z.enum(["day", "model", "key"]).optional(),
});

const DATE = /^\d{4}-\d{2}-\d{2}$/;
/** An ISO 8601 time; without an offset it is UTC (Date.parse alone would read it in the server's time zone). */
const TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2})?$/;

/**
 * True when the text's date is on the calendar and its hour on the clock: Date.parse rolls
 * 2026-02-31 over to March 3rd and takes 24:00, so a mistyped date would quietly answer
 * for other days.
 */
function onTheCalendar(text: string): boolean {
  const year = Number(text.slice(0, 4));
  const month = Number(text.slice(5, 7));
  const day = Number(text.slice(8, 10));
  if (month < 1 || month > 12 || day < 1) return false;
  if (text.length > 10 && Number(text.slice(11, 13)) > 23) return false;
  return new Date(Date.UTC(year, month - 1, day)).getUTCDate() === day;
}

function parseTime(text: string | undefined, name: string, fallback: number): number {
  if (text === undefined) return fallback;
  const time = TIME.exec(text);
  const ms = DATE.test(text)
    ? Date.parse(`${text}T00:00:00Z`)
    : time === null
      ? Number.NaN
      : Date.parse(time[3] === undefined ? `${text}Z` : text);
  if (Number.isNaN(ms) || !onTheCalendar(text)) {
    throw new LetheError("LETHE_INVALID_REQUEST", `'${name}' must be a date (YYYY-MM-DD) or an ISO 8601 time.`, {
      param: name,
    });
  }
  return ms;
}

/** A usage report for one account, as the usage API and the admin API return it. */
export interface UsageResponse {
  object: "usage";
  from: string;
  to: string;
  group_by: UsageGrouping;
  data: (UsageGroup & { cost: string })[];
}

/**
 * Answers `?from=&to=&group_by=` for an account: from defaults to 30 days ago, to
 * to now (a bare `to` date includes that whole day), group_by to day. Days rolled up by
 * retention count at their start (00:00 UTC): a window from mid-day leaves that day out.
 */
export async function usageForAccount(
  store: Store,
  accountId: AccountId,
  query: unknown,
  now = Date.now(),
): Promise<UsageResponse> {
  const params = validateBody(querySchema, query ?? {});
  const from = parseTime(params.from, "from", now - 30 * DAY_MS);
  let to = parseTime(params.to, "to", now);
  if (params.to !== undefined && /^\d{4}-\d{2}-\d{2}$/.test(params.to)) to += DAY_MS;
  if (to <= from) throw new LetheError("LETHE_INVALID_REQUEST", "'to' must be after 'from'.", { param: "to" });
  if (to - from > MAX_RANGE_DAYS * DAY_MS) {
    throw new LetheError("LETHE_INVALID_REQUEST", `The range may span at most ${MAX_RANGE_DAYS} days.`, {
      param: "from",
    });
  }
  const grouping = params.group_by ?? "day";
  const rows = await store.usage.rawRows(accountId, from, to);
  // a rolled-up day keeps no times: it counts where it starts, at 00:00 UTC, so two windows
  // that meet within it count it once, not both (the first day that starts at or after
  // `from`, through the last that starts before `to`)
  const aggregates = await store.usage.dailyRows(accountId, utcDay(from + DAY_MS - 1), utcDay(to - 1));
  return {
    object: "usage",
    from: new Date(from).toISOString(),
    to: new Date(to).toISOString(),
    group_by: grouping,
    data: buildUsageReport(rows, aggregates, grouping).map((group) => ({
      ...group,
      cost: formatMicros(group.cost_micros),
    })),
  };
}
