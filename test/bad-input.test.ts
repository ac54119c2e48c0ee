import { connect } from "node:net";
import { gzipSync } from "node:zlib";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_CONFIG_FILE } from "../src/config/load-config.js";
import { findCanaries, makeCanary } from "./support/canary.js";
import { removeDataDir, startTestGateway, type TestGateway } from "./support/gateway-harness.js";

interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string };
}

describe("bad input on the OpenAI surface", () => {
  let gateway: TestGateway;
  const canaries: string[] = [];
  const responses: string[] = [];

  beforeAll(async () => {
    gateway = await startTestGateway({
      config: { ...(DEFAULT_CONFIG_FILE as object), limits: { max_body_bytes: 4096, max_json_values: 1000 } },
    });
  });

  afterAll(async () => {
    await gateway.close();
    expect(await findCanaries(canaries, { dataDir: gateway.dataDir, texts: { log: gateway.logText() } })).toEqual([]);
    await removeDataDir(gateway);
  });

  async function post(body: string, headers: Record<string, string> = {}) {
    const response = await fetch(`${gateway.baseURL}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${gateway.key}`, "content-type": "application/json", ...headers },
      body,
    });
    const text = await response.text();
    responses.push(text);
    return { status: response.status, body: JSON.parse(text) as OpenAIErrorBody, headers: response.headers };
  }

  function expectError(result: { status: number; body: OpenAIErrorBody }, status: number, code: string) {
    expect(result.status).toBe(status);
    expect(result.body.error.code).toBe(code);
    expect(typeof result.body.error.message).toBe("string");
    expect(typeof result.body.error.type).toBe("string");
  }

  it("rejects malformed JSON with 400 LETHE_INVALID_JSON", async () => {
    const secret = makeCanary("badjson");
    canaries.push(secret);
    const result = await post(`{"model":"lethe-demo","messages":[{"role":"user","content":"${secret}"}`);
    expectError(result, 400, "LETHE_INVALID_JSON");
    expect(JSON.stringify(result.body)).not.toContain(secret);
  });

  it("rejects an empty body", async () => {
    expectError(await post(""), 400, "LETHE_INVALID_JSON");
  });

  it.each([["[]"], ['"a string"'], ["42"], ["null"], ["true"]])("rejects the non-object body %s", async (body) => {
    expectError(await post(body), 400, "LETHE_INVALID_REQUEST");
  });

  it.each([
    [{ messages: [{ role: "user", content: "hi" }] }, "model"],
    [{ model: "lethe-demo" }, "messages"],
    [{ model: "lethe-demo", messages: [] }, "messages"],
    [{ model: 42, messages: [{ role: "user", content: "hi" }] }, "model"],
    [{ model: "lethe-demo", messages: "hi" }, "messages"],
    [{ model: "lethe-demo", messages: [{ role: "wizard", content: "hi" }] }, "messages[0].role"],
    [{ model: "lethe-demo", messages: [{ role: "user", content: 7 }] }, "messages[0].content"],
    [{ model: "lethe-demo", messages: [{ role: "user", content: "hi" }], stream: "yes" }, "stream"],
    [{ model: "lethe-demo", messages: [{ role: "user", content: "hi" }], max_tokens: -1 }, "max_tokens"],
    [{ model: "lethe-demo", messages: [{ role: "user", content: "hi" }], temperature: "hot" }, "temperature"],
  ])("rejects wrong or missing fields (%j) naming %s", async (body, param) => {
    const secret = makeCanary("fields");
    canaries.push(secret);
    const result = await post(JSON.stringify({ ...body, user: secret }));
    expectError(result, 400, "LETHE_INVALID_REQUEST");
    expect(result.body.error.param).toBe(param);
    expect(JSON.stringify(result.body)).not.toContain(secret);
  });

  it("reads null optional fields as not given, as OpenAI does (clients that serialise every field send them)", async () => {
    const response = await fetch(`${gateway.baseURL}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${gateway.key}`, "content-type": "application/json" },
      body: JSON.stringify({
        model: "lethe-demo",
        messages: [{ role: "user", content: "hi", name: null, tool_calls: null, tool_call_id: null }],
        user: null,
        tools: null,
        tool_choice: null,
        stop: null,
        max_tokens: null,
      }),
    });
    expect(response.status).toBe(200);
    await response.text();
  });

  it("says which field is missing and which has the wrong type", async () => {
    const message = [{ role: "user", content: "hi" }];
    const missing = await post(JSON.stringify({ messages: message }));
    expect(missing.body.error.message).toBe("'model' is required.");
    const wrongModel = await post(JSON.stringify({ model: 42, messages: message }));
    expect(wrongModel.body.error.message).toBe("'model' must be of type string.");
    const wrongStream = await post(JSON.stringify({ model: "lethe-demo", messages: message, stream: "yes" }));
    expect(wrongStream.body.error.message).toBe("'stream' must be of type boolean.");
    const wrongLimit = await post(JSON.stringify({ model: "lethe-demo", messages: message, max_tokens: "16" }));
    expect(wrongLimit.body.error.param).toBe("max_tokens");
    expect(wrongLimit.body.error.message).toBe("'max_tokens' must be of type number.");
    // 1e999 is JSON for a number beyond a double: Infinity once parsed
    const endless = await post(`{"model":"lethe-demo","messages":${JSON.stringify(message)},"max_tokens":1e999}`);
    expect(endless.status).toBe(400);
    expect(endless.body.error).toMatchObject({ param: "max_tokens", message: "'max_tokens' must be a finite number." });
    // where no number belongs, the type is what is wrong
    const endlessModel = await post(`{"model":1e999,"messages":${JSON.stringify(message)}}`);
    expect(endlessModel.body.error.message).toBe("'model' must be of type string.");
    // bounds say which bound, from the schema
    const noMessages = await post(JSON.stringify({ model: "lethe-demo", messages: [] }));
    expect(noMessages.body.error.message).toBe("'messages' must have at least 1 item.");
    const zeroTokens = await post(JSON.stringify({ model: "lethe-demo", messages: message, max_tokens: 0 }));
    expect(zeroTokens.body.error.message).toBe("'max_tokens' must be greater than 0.");
    const hot = await post(JSON.stringify({ model: "lethe-demo", messages: message, temperature: 3 }));
    expect(hot.body.error.message).toBe("'temperature' must be at most 2.");
  });

  it("refuses a body nested deeper than 128 levels with 400, and serves one nested 128 deep", async () => {
    const nest = (levels: number): unknown => (levels === 0 ? 1 : [nest(levels - 1)]);
    const secret = makeCanary("deep");
    canaries.push(secret);
    const message = [{ role: "user", content: secret }];
    // the body itself is the first level
    const deepest = await fetch(`${gateway.baseURL}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${gateway.key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "lethe-demo", messages: message, metadata_extra: nest(127) }),
    });
    expect(deepest.status).toBe(200);
    await deepest.text();
    const tooDeep = await post(JSON.stringify({ model: "lethe-demo", messages: message, metadata_extra: nest(128) }));
    expectError(tooDeep, 400, "LETHE_INVALID_REQUEST");
    expect(tooDeep.body.error.message).toContain("128 levels");
    // content parts nested inside each other: the token count used to recurse through them
    let parts: unknown = "x";
    for (let level = 0; level < 80; level++) parts = [{ type: "text", text: "x", content: parts }];
    const nestedParts = await post(
      JSON.stringify({ model: "lethe-demo", messages: [{ role: "user", content: parts }] }),
    );
    expectError(nestedParts, 400, "LETHE_INVALID_REQUEST");
    expect(JSON.stringify(tooDeep.body)).not.toContain(secret);
  });

  it("refuses a body of more than limits.max_json_values values with 413 before parsing it, and serves one at the limit", async () => {
    const secret = makeCanary("values");
    canaries.push(secret);
    // the root, its three members, the one message and its two members: 7 values besides the items
    const withItems = (items: number) =>
      JSON.stringify({
        model: "lethe-demo",
        messages: [{ role: "user", content: secret }],
        extra: Array(items).fill(0),
      });
    const atLimit = await fetch(`${gateway.baseURL}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${gateway.key}`, "content-type": "application/json" },
      body: withItems(993),
    });
    expect(atLimit.status).toBe(200);
    await atLimit.text();
    const over = await post(withItems(994));
    expectError(over, 413, "LETHE_BODY_TOO_LARGE");
    expect(over.body.error.message).toBe(
      "The request body holds more than 1000 JSON values, more than this gateway accepts.",
    );
    expect(JSON.stringify(over.body)).not.toContain(secret);
    // empty objects are values too; commas and brackets inside strings are not
    const emptyObjects = await post(`{"model":"lethe-demo","messages":[],"extra":[${"{},".repeat(1000)}{}]}`);
    expectError(emptyObjects, 413, "LETHE_BODY_TOO_LARGE");
    // 1,200 commas and closing brackets, behind an escaped quote: counted, they would break the limit
    const prose = `${secret} "quoted\\" ${",[{]}".repeat(600)}`;
    const inString = await fetch(`${gateway.baseURL}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${gateway.key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "lethe-demo", messages: [{ role: "user", content: prose }] }),
    });
    expect(inString.status).toBe(200);
    await inString.text();
    const last = (await gateway.records()).at(-1);
    expect(last?.status).toBe(200);
  });

  it("rejects an unknown model with 404 without echoing the name", async () => {
    const secret = makeCanary("model");
    canaries.push(secret);
    const result = await post(JSON.stringify({ model: secret, messages: [{ role: "user", content: "hi" }] }));
    expectError(result, 404, "LETHE_UNKNOWN_MODEL");
    expect(result.body.error.param).toBe("model");
    expect(JSON.stringify(result.body)).not.toContain(secret);
    const records = await gateway.records();
    const last = records[records.length - 1];
    expect(last?.model).toBe("unknown");
    expect(last?.error_code).toBe("LETHE_UNKNOWN_MODEL");
  });

  it("rejects an oversized body with 413", async () => {
    const secret = makeCanary("huge");
    canaries.push(secret);
    const content = `${secret} ${"x".repeat(8192)}`;
    const result = await post(JSON.stringify({ model: "lethe-demo", messages: [{ role: "user", content }] }));
    expectError(result, 413, "LETHE_BODY_TOO_LARGE");
  });

  it("answers 413 to the OpenAI SDK every time, however far past the limit its body runs", async () => {
    // the SDK sends its whole body before it reads the answer: a connection closed with the
    // rest unread is reset, and the 413 was lost with it (APIConnectionError instead)
    const client = new OpenAI({ apiKey: gateway.key, baseURL: gateway.baseURL, maxRetries: 0 });
    const secret = makeCanary("huge-sdk");
    canaries.push(secret);
    for (let attempt = 0; attempt < 3; attempt++) {
      const content = `${secret} ${"y".repeat(8 * 1024 * 1024)}`;
      const error = await client.chat.completions
        .create({ model: "lethe-demo", messages: [{ role: "user", content }] })
        .then(
          () => null,
          (thrown: unknown) => thrown,
        );
      expect(error).toBeInstanceOf(OpenAI.APIError);
      expect(error).toMatchObject({ status: 413, code: "LETHE_BODY_TOO_LARGE" });
    }
  });

  it("reads a body sent without a JSON content type (curl -d) as JSON", async () => {
    const response = await fetch(`${gateway.baseURL}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${gateway.key}`, "content-type": "application/x-www-form-urlencoded" },
      body: JSON.stringify({ model: "lethe-demo", messages: [{ role: "user", content: "hi" }] }),
    });
    expect(response.status).toBe(200);
  });

  it("ignores canaries in unknown headers and the user field", async () => {
    const inHeader = makeCanary("header");
    const inUser = makeCanary("user");
    canaries.push(inHeader, inUser);
    const response = await fetch(`${gateway.baseURL}/chat/completions`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${gateway.key}`,
        "x-custom-trace": inHeader,
        "content-type": "application/json",
      },
      body: JSON.stringify({ model: "lethe-demo", user: inUser, messages: [{ role: "user", content: "hi" }] }),
    });
    expect(response.status).toBe(200);
  });

  it("answers unknown endpoints with an OpenAI-shaped 404", async () => {
    const response = await fetch(`${gateway.baseURL}/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${gateway.key}` },
      body: "{}",
    });
    expect(response.status).toBe(404);
    const body = (await response.json()) as OpenAIErrorBody;
    expect(body.error.code).toBe("LETHE_NOT_FOUND");
    // a client of another API learns what is served instead
    expect(body.error.message).toContain("POST /v1/chat/completions");
    const responses = await fetch(`${gateway.baseURL}/responses`, {
      method: "POST",
      headers: { authorization: `Bearer ${gateway.key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "lethe-demo", input: "hi" }),
    });
    expect(responses.status).toBe(404);
    expect(((await responses.json()) as OpenAIErrorBody).error.message).toContain("not the Responses API");
  });

  it("refuses a compressed body with 415, before reading it, and closes the connection", async () => {
    const secret = makeCanary("gzip");
    canaries.push(secret);
    const body = gzipSync(JSON.stringify({ model: "lethe-demo", messages: [{ role: "user", content: secret }] }));
    for (const encoding of ["gzip", "br", "x-lethe-canary"]) {
      const response = await fetch(`${gateway.baseURL}/chat/completions`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${gateway.key}`,
          "content-type": "application/json",
          "content-encoding": encoding,
        },
        body,
      });
      const text = await response.text();
      responses.push(text);
      expectError(
        { status: response.status, body: JSON.parse(text) as OpenAIErrorBody },
        415,
        "LETHE_UNSUPPORTED_ENCODING",
      );
      expect(response.headers.get("connection")).toBe("close");
      expect(text).not.toContain(encoding);
    }
    // a transfer coding before chunked compresses the body too (fetch cannot send one: a raw socket)
    const compressed = gzipSync(JSON.stringify({ model: "lethe-demo", messages: [{ role: "user", content: secret }] }));
    const raw = await new Promise<string>((resolve) => {
      const socket = connect(Number(new URL(gateway.url).port), "127.0.0.1", () => {
        socket.write(
          `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${gateway.key}\r\n` +
            "content-type: application/json\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
        );
        socket.write(`${compressed.length.toString(16)}\r\n`);
        socket.write(compressed);
        socket.write("\r\n0\r\n\r\n");
      });
      let text = "";
      socket.on("data", (chunk: Buffer) => {
        text += chunk.toString("latin1");
      });
      socket.on("close", () => resolve(text));
    });
    responses.push(raw);
    expect(raw).toMatch(/^HTTP\/1\.1 415/);
    expect(raw).toContain('"code":"LETHE_UNSUPPORTED_ENCODING"');
    const records = await gateway.records();
    expect(records.at(-1)?.error_code).toBe("LETHE_UNSUPPORTED_ENCODING");
    // identity is no encoding at all
    const plain = await post(JSON.stringify({ model: "lethe-demo", messages: [{ role: "user", content: "hi" }] }), {
      "content-encoding": "Identity",
    });
    expect(plain.status).toBe(200);
  });

  it("answers another method on a POST endpoint with 405 and allow: POST", async () => {
    for (const method of ["GET", "PUT", "DELETE"]) {
      const response = await fetch(`${gateway.baseURL}/chat/completions/?stream=true`, {
        method,
        headers: { authorization: `Bearer ${gateway.key}` },
      });
      expect(response.status).toBe(405);
      expect(response.headers.get("allow")).toBe("POST");
      expect(((await response.json()) as OpenAIErrorBody).error.code).toBe("LETHE_METHOD_NOT_ALLOWED");
    }
    // with a content type but no body: refused for the method or path, not parsed as empty JSON
    for (const method of ["OPTIONS", "PUT", "PATCH"]) {
      const headers = { authorization: `Bearer ${gateway.key}`, "content-type": "application/json" };
      const wrongMethod = await fetch(`${gateway.baseURL}/chat/completions`, { method, headers });
      expect(wrongMethod.status).toBe(405);
      expect(((await wrongMethod.json()) as OpenAIErrorBody).error.code).toBe("LETHE_METHOD_NOT_ALLOWED");
      const noRoute = await fetch(`${gateway.baseURL}/nowhere`, { method, headers });
      expect(noRoute.status).toBe(404);
      expect(((await noRoute.json()) as OpenAIErrorBody).error.code).toBe("LETHE_NOT_FOUND");
    }
  });

  it("never echoes what the client sent in any error response", () => {
    for (const text of responses) for (const secret of canaries) expect(text).not.toContain(secret);
  });
});
