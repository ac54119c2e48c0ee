import { mentions } from "../canaries.js";
import type { FakeBehaviour } from "../fakes/fake-supplier.js";
import {
  type AuditPath,
  type AuditRoute,
  type AuditSetting,
  type ClientFormat,
  expectEcho,
  expectStatus,
  NEEDS_FAKES,
  type PathContext,
  routeFor,
  routesFor,
} from "./audit-path.js";
import { chatBody } from "./request-bodies.js";

type SupplierFormat = "openai" | "anthropic";

/** What a failing exchange should look like to the client. */
interface Expected {
  status: number;
  /** The supplier's error body reached the caller (it is the caller's own data). */
  echoed?: boolean;
  /** A stream that broke after it started: a 200 whose body ends in an error event. */
  brokenStream?: boolean;
}

/** A path where the fake supplier misbehaves in one way, set just before the request. */
function supplierFailure(
  name: string,
  client: ClientFormat,
  supplier: SupplierFormat,
  behaviour: FakeBehaviour,
  stream: boolean,
  expected: Expected,
  model?: string,
): AuditPath {
  return {
    name: `${client} client -> ${supplier} supplier: ${name}`,
    embeddedOnly: NEEDS_FAKES,
    async run(context) {
      context.fakes?.[supplier].next(behaviour);
      const user = context.canary();
      const body = chatBody(client, model ?? routeFor(context.setting, supplier).model, {
        system: context.canary(),
        user,
        stream,
      });
      const response = await context.call(client, body);
      expectStatus(context, response, expected.status);
      if (expected.echoed) expectEcho(context, response, user);
      if (expected.brokenStream) context.expect(/error/.test(response.text), "the broken stream had no error event");
    },
  };
}

/** Hangs up in the middle of a stream, once the prompt has come back (embedded) or any byte arrived (target). */
function clientAbort(client: ClientFormat, route: AuditRoute): AuditPath {
  const supplier = route.format;
  return {
    name: `${client} client -> ${route.label}: client abort mid-stream`,
    async run(context) {
      if (supplier !== null) context.fakes?.[supplier].next("hang-mid-stream");
      const user = context.canary();
      const body = chatBody(client, route.model, { system: context.canary(), user, stream: true });
      const embedded = context.setting.embedded;
      const response = await context.call(client, body, {
        abortWhen: (text) => (embedded ? mentions(text, user) : text.length > 0),
      });
      context.expect(response.aborted, "the stream ended before the audit could hang up");
    },
  };
}

/** A path to one of the audit's own models with a fixed expected status. */
function embeddedModel(name: string, model: string, status: number, prepare?: (context: PathContext) => void) {
  return {
    name,
    embeddedOnly: NEEDS_FAKES,
    async run(context: PathContext) {
      prepare?.(context);
      const user = context.canary();
      const response = await context.call("openai", chatBody("openai", model, { system: context.canary(), user }));
      expectStatus(context, response, status);
      if (status === 200) expectEcho(context, response, user);
    },
  } satisfies AuditPath;
}

/** Supplier errors that echo the prompt, broken and stalled streams, client aborts, routing failures. */
export function failurePaths(setting: AuditSetting): AuditPath[] {
  const rejected = { status: 400 };
  const broken = { status: 200, brokenStream: true };
  return [
    supplierFailure("400 whose body echoes the prompt", "openai", "openai", rejected, false, {
      ...rejected,
      echoed: true,
    }),
    supplierFailure("400 whose body echoes the prompt", "anthropic", "anthropic", rejected, false, {
      ...rejected,
      echoed: true,
    }),
    supplierFailure("400 whose body echoes the prompt", "anthropic", "openai", rejected, false, {
      ...rejected,
      echoed: true,
    }),
    supplierFailure("400 whose body echoes the prompt", "openai", "anthropic", rejected, true, {
      ...rejected,
      echoed: true,
    }),
    supplierFailure("500 whose body echoes the prompt", "openai", "openai", { status: 500 }, true, { status: 502 }),
    supplierFailure("529 whose body echoes the prompt", "anthropic", "anthropic", { status: 529 }, false, {
      status: 529,
    }),
    supplierFailure("529 whose body echoes the prompt", "openai", "anthropic", { status: 529 }, true, { status: 503 }),
    supplierFailure("429 whose body echoes the prompt", "openai", "openai", { status: 429 }, false, { status: 429 }),
    supplierFailure("connection reset before the answer", "anthropic", "openai", "reset-before-answer", false, {
      status: 502,
    }),
    supplierFailure("200 whose body is not JSON, holding the prompt", "openai", "anthropic", "not-json", false, {
      status: 502,
    }),
    supplierFailure("reset mid-stream", "openai", "openai", "reset-mid-stream", true, broken),
    supplierFailure("reset mid-stream", "anthropic", "anthropic", "reset-mid-stream", true, broken),
    supplierFailure("reset mid-stream", "openai", "anthropic", "reset-mid-stream", true, broken),
    supplierFailure(
      "error event mid-stream echoing the prompt",
      "anthropic",
      "anthropic",
      "error-mid-stream",
      true,
      broken,
    ),
    supplierFailure(
      "error event mid-stream echoing the prompt",
      "openai",
      "anthropic",
      "error-mid-stream",
      true,
      broken,
    ),
    supplierFailure("error chunk mid-stream echoing the prompt", "openai", "openai", "error-mid-stream", true, broken),
    supplierFailure(
      "error chunk mid-stream echoing the prompt",
      "anthropic",
      "openai",
      "error-mid-stream",
      true,
      broken,
    ),
    supplierFailure(
      "chunk that is not JSON, holding the prompt",
      "openai",
      "openai",
      "garbage-mid-stream",
      true,
      broken,
    ),
    supplierFailure(
      "stalls mid-stream (idle timeout)",
      "openai",
      "openai",
      "hang-mid-stream",
      true,
      broken,
      "audit-stall-mid-stream",
    ),
    supplierFailure(
      "no answer at all (deadline)",
      "anthropic",
      "anthropic",
      "hang-before-headers",
      false,
      { status: 504 },
      "audit-stall-first-byte",
    ),
    ...routesFor(setting, "openai").map((route) => clientAbort("openai", route)),
    ...routesFor(setting, "anthropic").map((route) => clientAbort("anthropic", route)),
    ...routesFor(setting, "openai").map((route) => clientAbort("anthropic", route)),
    embeddedModel("openai client -> unreachable supplier", "audit-unreachable", 502),
    embeddedModel("openai client -> first route 500, fallback route answers", "audit-fallback", 200, (context) =>
      context.fakes?.openai.next({ status: 500 }),
    ),
    embeddedModel("openai client -> model served only by a retaining supplier (ZDR refusal)", "audit-retaining", 403),
  ];
}
