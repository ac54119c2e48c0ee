import { describe, expect, it } from "vitest";
import {
  countTopLevelMembers,
  spliceModel,
  spliceRequest,
  withoutNullMember,
} from "../src/formats/surface/splice-model.js";
import { seededRandom } from "./support/seeded-random.js";

/** Strings of up to four of `pieces`, drawn from `random`: the awkward bits JSON text can hold. */
function stringOf(random: () => number, pieces: readonly string[]): () => string {
  return () =>
    Array.from({ length: Math.floor(random() * 5) }, () => pieces[Math.floor(random() * pieces.length)]).join("");
}

/** Splices as a surface does: with the model the text's own parse gave. */
function splice(text: string, model = "alias"): string | undefined {
  return spliceModel(text, JSON.parse(text).model, model);
}

describe("spliceModel", () => {
  it("replaces the top-level model and leaves every other byte as it came", () => {
    const text = '{"id":"chatcmpl-1","object":"chat.completion","model":"upstream-7b","choices":[],"usage":{"a":1}}';
    expect(splice(text)).toBe(
      '{"id":"chatcmpl-1","object":"chat.completion","model":"alias","choices":[],"usage":{"a":1}}',
    );
  });

  it("finds the key in pretty-printed JSON, whitespace around the colon included", () => {
    const text = '{\n  "id": "x",\n  "model" \t:\r\n "upstream",\n  "choices": []\n}';
    expect(splice(text)).toBe('{\n  "id": "x",\n  "model" \t:\r\n "alias",\n  "choices": []\n}');
  });

  it("skips a quoted model inside a string and a model that is a value, not a key", () => {
    const text = JSON.stringify({
      choices: [{ message: { role: "model", content: 'say "model": "upstream" \\' } }],
      model: "upstream",
    });
    const spliced = splice(text);
    expect(spliced).toBeDefined();
    expect(JSON.parse(spliced as string)).toEqual({ ...JSON.parse(text), model: "alias" });
  });

  it("does not take a key that ends in an escaped quote and model for a second model key", () => {
    const text = JSON.stringify({ choices: [{ 'say "model': 1 }], model: "upstream" });
    expect(JSON.parse(splice(text) as string)).toEqual({ choices: [{ 'say "model': 1 }], model: "alias" });
  });

  it("handles a string that ends in a backslash right before the key", () => {
    const text = '{"note":"ends in \\\\","model":"upstream"}';
    expect(JSON.parse(splice(text) as string)).toEqual({ note: "ends in \\", model: "alias" });
  });

  it("serialises the new model id, quotes and backslashes included", () => {
    const spliced = splice('{"model":"a\\"b\\\\c"}', 'my "quoted" \\ model');
    expect(JSON.parse(spliced as string)).toEqual({ model: 'my "quoted" \\ model' });
  });

  it.each([
    ["a nested model key", '{"model":"upstream","choices":[{"model":"upstream"}]}'],
    ["a duplicate top-level key", '{"model":"other","model":"upstream"}'],
    ["a \\u escape anywhere (a key could spell model with one)", '{"mod\\u0065l":"x","choices":[{"model":"x"}]}'],
    ["a \\u escape in content", '{"model":"upstream","content":"caf\\u00e9"}'],
    ["a model that is not a string", '{"model":7}'],
    ["a null model", '{"model":null}'],
    ["no model at all", '{"id":"x"}'],
  ])("declines (the caller serialises instead) for %s", (_, text) => {
    expect(splice(text)).toBeUndefined();
  });

  it("declines when the value found is not the one the parse gave", () => {
    expect(spliceModel('{"model":"upstream"}', "something else", "alias")).toBeUndefined();
  });

  it("agrees with parse-and-serialise on every text it edits, over many generated answers", () => {
    const random = seededRandom(7).next;
    const randomString = stringOf(random, [
      "model",
      '"model"',
      '\\"model\\":',
      "\\",
      "\u00e9",
      "\n",
      "text",
      ":",
      "{",
      "}",
    ]);
    const randomValue = (depth: number): unknown => {
      const kind = Math.floor(random() * (depth > 2 ? 3 : 5));
      if (kind === 0) return randomString();
      if (kind === 1) return Math.floor(random() * 100);
      if (kind === 2) return null;
      if (kind === 3) return [randomValue(depth + 1), randomValue(depth + 1)];
      const nested: Record<string, unknown> = { [randomString()]: randomValue(depth + 1) };
      if (random() < 0.3) nested.model = randomValue(depth + 1);
      return nested;
    };
    let edited = 0;
    for (let index = 0; index < 2_000; index++) {
      const body: Record<string, unknown> = { id: randomString(), choices: [randomValue(1)] };
      if (random() < 0.9) body.model = random() < 0.8 ? randomString() : randomValue(1);
      if (random() < 0.5) body.usage = randomValue(1);
      const text = JSON.stringify(body, null, random() < 0.5 ? undefined : 2);
      const spliced = splice(text);
      if (spliced === undefined) continue;
      edited++;
      expect(JSON.parse(spliced)).toEqual({ ...JSON.parse(text), model: "alias" });
    }
    // the common shape (one string model, no escapes) is edited, not declined
    expect(edited).toBeGreaterThan(200);
  });
});

describe("spliceRequest", () => {
  it("replaces the model and puts the added members first, every other byte as sent", () => {
    const text = ' \n{ "seed": 9007199254740993, "model" : "fast", "temperature": 1.0 }';
    expect(spliceRequest(text, 3, "fast", "upstream/m-1", "")).toBe(
      ' \n{ "seed": 9007199254740993, "model" : "upstream/m-1", "temperature": 1.0 }',
    );
    expect(spliceRequest(text, 3, "fast", "m", '"store":false')).toBe(
      ' \n{"store":false, "seed": 9007199254740993, "model" : "m", "temperature": 1.0 }',
    );
  });

  it("declines what spliceModel declines, and a model the parse did not read", () => {
    expect(spliceRequest('{"model":"fast","tools":[{"model":"x"}]}', 2, "fast", "m", '"store":false')).toBeUndefined();
    expect(spliceRequest('{"model":"fast","note":"\\u00e9"}', 2, "fast", "m", "")).toBeUndefined();
    expect(spliceRequest('{"model":"other"}', 1, "fast", "m", "")).toBeUndefined();
    // a key written twice (JSON.parse keeps the last, some parsers the first), or __proto__
    expect(spliceRequest('{"model":"fast","store":true,"store":false}', 2, "fast", "m", "")).toBeUndefined();
    expect(spliceRequest('{"model":"fast","stream":true, "stream" :false}', 2, "fast", "m", "")).toBeUndefined();
    expect(spliceRequest('{"model":"fast","__proto__":{"store":true}}', 2, "fast", "m", "")).toBeUndefined();
    expect(spliceRequest('{"model":"fast","store":true}', 2, "fast", "m", "")).toBe('{"model":"m","store":true}');
  });

  it("counts top-level members as written, whatever the strings and nesting hold", () => {
    expect(countTopLevelMembers('{"a":1,"b":{"c":[1,{"d":2}]},"e":"}{][\\":,"}')).toBe(3);
    expect(countTopLevelMembers('{ "a" : "x", "a":"y" }')).toBe(2);
    expect(countTopLevelMembers('{"a":["k", "l"], "b": "v"}')).toBe(2);
    expect(countTopLevelMembers('{"a":"unterminated}')).toBe(-1);
  });

  it("agrees with parse, edit and serialise on every request it edits, over many generated ones", () => {
    const random = seededRandom(11).next;
    const randomString = stringOf(random, [
      "model",
      '"model"',
      '\\"model\\":',
      "\\",
      "{",
      "}",
      ",",
      "\u00e9",
      " ",
      "store",
    ]);
    let edited = 0;
    for (let index = 0; index < 2_000; index++) {
      const body: Record<string, unknown> = {
        messages: [{ role: "user", content: randomString() }],
        model: randomString(),
      };
      if (random() < 0.3) body.tools = [{ name: randomString(), parameters: { [randomString()]: randomString() } }];
      if (random() < 0.3) body.metadata = { [randomString()]: randomString() };
      const text = JSON.stringify(body, null, random() < 0.5 ? undefined : 2);
      const members = random() < 0.5 ? '"store":false' : "";
      const spliced = spliceRequest(text, Object.keys(body).length, body.model as string, "upstream", members);
      if (spliced === undefined) continue;
      edited++;
      expect(JSON.parse(spliced)).toEqual({ ...(members === "" ? {} : { store: false }), ...body, model: "upstream" });
    }
    expect(edited).toBeGreaterThan(500);
  });
});

describe("withoutNullMember", () => {
  it("takes the member out with one comma, wherever it stands, every other byte as it came", () => {
    expect(withoutNullMember('{"id":"x","usage":null,"n":1}', "usage")).toBe('{"id":"x","n":1}');
    expect(withoutNullMember('{"usage" :\tnull , "id":"x"}', "usage")).toBe('{ "id":"x"}');
    expect(withoutNullMember('{"id":"x", "usage": null}', "usage")).toBe('{"id":"x"}');
    expect(withoutNullMember('{"usage":null}', "usage")).toBe("{}");
    expect(withoutNullMember('{"a":"\\"usage\\":1","usage":null}', "usage")).toBe('{"a":"\\"usage\\":1"}');
  });

  it("declines a nested or repeated key, a value other than null, any \\u escape, and no key at all", () => {
    expect(withoutNullMember('{"usage":null,"choices":[{"usage":null}]}', "usage")).toBeUndefined();
    expect(withoutNullMember('{"usage":null,"usage":null}', "usage")).toBeUndefined();
    expect(withoutNullMember('{"usage":{"a":1}}', "usage")).toBeUndefined();
    expect(withoutNullMember('{"usage":null,"a":"\\u0041"}', "usage")).toBeUndefined();
    expect(withoutNullMember('{"a":"usage"}', "usage")).toBeUndefined();
  });

  it("agrees with parse, delete and serialise on every text it edits, over many generated chunks", () => {
    const random = seededRandom(11).next;
    const randomString = stringOf(random, ['"usage":null', '\\"usage\\":', "usage", "\\", ",", "{", "}", "\u00e9"]);
    let edited = 0;
    for (let index = 0; index < 2_000; index++) {
      const entries: [string, unknown][] = [
        ["id", randomString()],
        ["choices", [{ delta: { content: randomString() }, ...(random() < 0.2 ? { usage: null } : {}) }]],
      ];
      entries.splice(Math.floor(random() * 3), 0, ["usage", random() < 0.9 ? null : randomString()]);
      const text = JSON.stringify(Object.fromEntries(entries), null, random() < 0.7 ? undefined : 1);
      const result = withoutNullMember(text, "usage");
      if (result === undefined) continue;
      edited++;
      const expected = JSON.parse(text);
      delete expected.usage;
      expect(JSON.parse(result)).toEqual(expected);
    }
    expect(edited).toBeGreaterThan(500);
  });
});
