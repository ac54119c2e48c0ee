import { describe, expect, it } from "vitest";
import { MAX_JSON_DEPTH, nestsTooDeep } from "../src/formats/validation/json-depth.js";
import { jsonTextShape } from "../src/formats/validation/json-text-shape.js";

/** The values JSON.parse builds: the root and every item or member value, keys aside. */
function countValues(value: unknown): number {
  if (Array.isArray(value)) return 1 + value.reduce((total: number, item) => total + countValues(item), 0);
  if (typeof value === "object" && value !== null) {
    return 1 + Object.values(value).reduce((total: number, item) => total + countValues(item), 0);
  }
  return 1;
}

describe("jsonTextShape", () => {
  it.each([
    ["0", 1],
    ['"a"', 1],
    ["[]", 1],
    ["{}", 1],
    ["[0,0,0]", 4],
    ["[{},{},{}]", 4],
    ['{"a":1,"b":[1,2]}', 5],
    [' { "a" : [ ] , "b" : { } } ', 3],
    ['{"model":"m","messages":[{"role":"user","content":"hi"}],"extra":[0,0]}', 9],
    ['["a,b","[{,}]",{"k,":"v]"}]', 5],
    ['["quote \\" comma, bracket [","\\\\",1]', 4],
  ])("counts %s as %i values, exactly as many as JSON.parse builds", (text, values) => {
    expect(countValues(JSON.parse(text))).toBe(values);
    expect(jsonTextShape(text, values)).toBe("ok");
    expect(jsonTextShape(text, values - 1)).toBe(values === 1 ? "ok" : "too-many-values");
  });

  it("agrees with nestsTooDeep at the depth bound, whatever strings hold", () => {
    const nested = (levels: number) => `${'["[[[",'.repeat(levels)}0${"]".repeat(levels)}`;
    for (const levels of [MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1]) {
      const text = nested(levels);
      expect(jsonTextShape(text, 1_000_000) === "too-deep").toBe(nestsTooDeep(JSON.parse(text)));
    }
    expect(jsonTextShape(nested(MAX_JSON_DEPTH + 1), 1_000_000)).toBe("too-deep");
    expect(jsonTextShape(nested(MAX_JSON_DEPTH), 1_000_000)).toBe("ok");
  });

  it("stops at the first bound broken, without reading further", () => {
    const manyThenDeep = `[${"0,".repeat(100)}${"[".repeat(MAX_JSON_DEPTH + 5)}`;
    expect(jsonTextShape(manyThenDeep, 50)).toBe("too-many-values");
    expect(jsonTextShape(manyThenDeep, 1_000)).toBe("too-deep");
  });

  it("leaves text that is not JSON to JSON.parse (an open string, stray closers)", () => {
    expect(jsonTextShape('{"a":"never closed,,,,', 2)).toBe("ok");
    expect(jsonTextShape("]]]}}}", 10)).toBe("ok");
    expect(jsonTextShape('"\\\\\\"', 1)).toBe("ok");
  });

  it("counts nothing inside a long string: 24 MB of commas and brackets in a prompt are text", () => {
    const prompt = 'a,[{"b":1},]}\\'.repeat(2_000_000);
    const text = JSON.stringify({ model: "m", messages: [{ role: "user", content: prompt }] });
    expect(text.length).toBeGreaterThan(24_000_000);
    // the root, model, messages, the message, role and content
    expect(jsonTextShape(text, 6)).toBe("ok");
    expect(jsonTextShape(text, 5)).toBe("too-many-values");
  });
});
