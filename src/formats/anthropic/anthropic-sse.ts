import type { LetheError } from "../../errors/lethe-error.js";
import { anthropicErrorObject } from "./anthropic-error.js";

/** One Anthropic server-sent event: `event: <type>` and its JSON data. */
export function anthropicEvent(type: string, data: object): string {
  return anthropicEventText(type, JSON.stringify(data));
}

/** The same, with the data already JSON text on one line (a supplier's own, relayed as it came). */
export function anthropicEventText(type: string, text: string): string {
  return `event: ${type}\ndata: ${text}\n\n`;
}

/** The `error` event Anthropic sends when a stream fails after its 200. */
export function anthropicErrorEvent(error: LetheError): string {
  return anthropicEvent("error", anthropicErrorObject(error));
}
