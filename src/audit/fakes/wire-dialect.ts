import type { FakeRequest } from "./fake-request.js";

type Json = Record<string, unknown>;

/** How one wire format answers: the fake supplier server is the same for both. */
export interface WireDialect {
  /** The inference paths this format serves. */
  paths: string[];
  /** The path of a token-counting endpoint, for formats that have one. */
  countTokensPath?: string;
  json(request: FakeRequest): Json;
  /** A streamed answer as complete SSE events; `head` ends with the event that carries the echo. */
  events(request: FakeRequest): { head: string[]; tail: string[] };
  /** An error body whose message says the prompt back, as real suppliers' validation errors do. */
  errorBody(status: number, echo: string): Json;
  /** An error reported inside a stream that already started, echoing the prompt. */
  errorEvent(echo: string): string;
  /** An event whose data is not JSON (and holds the prompt). */
  garbageEvent(echo: string): string;
}
