import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BILLED, type BillingRig, closeBillingRig, startBillingRig } from "./support/billing-rig.js";
import { runCli } from "./support/run-cli.js";

describe("lethe credits add|show", () => {
  let rig: BillingRig;
  let env: Record<string, string>;

  beforeAll(async () => {
    rig = await startBillingRig();
    env = { LETHE_DATA_DIR: rig.gateway.dataDir };
    expect((await runCli(["accounts", "create", "wallet"], env)).code).toBe(0);
  });

  afterAll(async () => {
    expect(await closeBillingRig(rig)).toEqual([]);
  });

  it("adds credit as exact micro-units and shows the balance with recent ledger entries", async () => {
    const first = await runCli(["credits", "add", "--account", "wallet", "12.50"], env);
    expect(first).toMatchObject({ code: 0, out: "added 12.500000 to wallet; balance 12.500000" });
    const second = await runCli(["credits", "add", "--account", "wallet", "0.000001"], env);
    expect(second.out).toBe("added 0.000001 to wallet; balance 12.500001");
    const largest = await runCli(["credits", "add", "--account", "wallet", "999999999.999999"], env);
    expect(largest.out).toBe("added 999999999.999999 to wallet; balance 1000000012.500000");
    const shown = await runCli(["credits", "show", "--account", "wallet"], env);
    expect(shown.code).toBe(0);
    const lines = shown.out.split("\n");
    expect(lines[0]).toBe("balance 1000000012.500000");
    expect(lines[1]).toBe("WHEN\tKIND\tAMOUNT\tREQUEST");
    expect(lines.slice(2).map((line) => line.split("\t").slice(1, 3))).toEqual([
      ["top_up", "999999999.999999"],
      ["top_up", "0.000001"],
      ["top_up", "12.500000"],
    ]);
    const account = await rig.gateway.running.gateway.store.findAccountByName("wallet");
    expect(await rig.gateway.running.gateway.store.ledger.sum(account?.id as never)).toBe(1_000_000_012_500_000);
  });

  it("refuses a top-up that would take the balance past what a JavaScript number keeps exact, adding nothing", async () => {
    expect((await runCli(["accounts", "create", "vault"], env)).code).toBe(0);
    // nine top-ups of the largest amount reach 8,999,999,999.999991; a tenth would pass 2^53 micro-units
    for (let index = 0; index < 9; index++) {
      expect((await runCli(["credits", "add", "--account", "vault", "999999999.999999"], env)).code).toBe(0);
    }
    const over = await runCli(["credits", "add", "--account", "vault", "999999999.999999"], env);
    expect(over.code).toBe(2);
    expect(over.err).toBe(
      "lethe: This top-up would put the balance above 9007199254.740991, the most Lethe keeps exact.",
    );
    const shown = await runCli(["credits", "show", "--account", "vault"], env);
    expect(shown.out.split("\n")[0]).toBe("balance 8999999999.999991");
    // a top-up that stays within it still goes through
    expect((await runCli(["credits", "add", "--account", "vault", "7199254.740991"], env)).code).toBe(0);
  });

  it.each([
    ["negative (after --)", ["--", "-5"]],
    ["zero", ["0"]],
    ["zero with decimals", ["0.000000"]],
    ["non-numeric", ["ten"]],
    ["over-precise", ["1.1234567"]],
    ["an exponent", ["1e3"]],
    ["a comma decimal", ["12,50"]],
    ["a leading point", [".5"]],
    ["a trailing point", ["5."]],
    ["hexadecimal", ["0x10"]],
    ["too large to keep exact", ["1000000000"]],
    ["Infinity", ["Infinity"]],
  ])("refuses a %s AMOUNT with one line and exit 2, adding nothing", async (_what, amount) => {
    const before = (await runCli(["credits", "show", "--account", "wallet"], env)).out.split("\n")[0];
    const result = await runCli(["credits", "add", "--account", "wallet", ...amount], env);
    expect(result.code).toBe(2);
    expect(result.err).toBe(
      "lethe: AMOUNT must be a positive decimal up to 999999999.999999, at most six decimals, e.g. 12.50",
    );
    expect(result.out).toBe("");
    expect((await runCli(["credits", "show", "--account", "wallet"], env)).out.split("\n")[0]).toBe(before);
  });

  it.each([
    ["a negative amount read as an option", ["credits", "add", "--account", "wallet", "-5"], /Unknown option '-5'/],
    ["no amount", ["credits", "add", "--account", "wallet"], /AMOUNT must be/],
    ["two amounts", ["credits", "add", "--account", "wallet", "1", "2"], /usage: lethe credits add/],
    ["no account", ["credits", "add", "5"], /--account is required/],
    ["an unknown account", ["credits", "add", "--account", "nobody", "5"], /no account named 'nobody'/],
    ["a malformed account name", ["credits", "show", "--account", "bad name"], /account names use letters/],
    ["an amount to show", ["credits", "show", "--account", "wallet", "5"], /usage: lethe credits/],
    ["an unknown subcommand", ["credits", "take", "--account", "wallet", "5"], /usage: lethe credits/],
    ["negative initial credits", ["accounts", "create", "fresh", "--credits=-1"], /AMOUNT must be/],
    ["over-precise initial credits", ["accounts", "create", "fresh", "--credits", "1.0000001"], /AMOUNT must be/],
    [
      "an initial credit read as an option",
      ["accounts", "create", "fresh", "--credits", "-1"],
      /--credits needs a value/,
    ],
  ])("refuses %s with one line and exit 2", async (_what, args, message) => {
    const result = await runCli(args, env);
    expect(result.code).toBe(2);
    expect(result.err).toMatch(message);
    expect(result.err.split("\n")).toHaveLength(1);
  });

  it("tops up an account the running gateway refuses: the very next request is served and billed", async () => {
    expect((await runCli(["accounts", "create", "empty-wallet"], env)).code).toBe(0);
    const keyed = await runCli(["keys", "create", "--account", "empty-wallet"], env);
    const key = /key:\s+(\S+)/.exec(keyed.out)?.[1] ?? "";
    const body = { model: BILLED.gpt, max_tokens: 20, messages: [{ role: "user", content: rig.canary("clitopup") }] };
    const refused = await rig.post("/v1/chat/completions", key, body);
    expect(refused.status).toBe(402);
    expect((await runCli(["credits", "add", "--account", "empty-wallet", "0.05"], env)).code).toBe(0);
    const served = await rig.post("/v1/chat/completions", key, body);
    expect(served.status).toBe(200);
    await rig.gateway.running.gateway.credits.drain();
    const shown = (await runCli(["credits", "show", "--account", "empty-wallet"], env)).out.split("\n");
    // the fake's default usage costs 0.003600 at this rig's prices
    expect(shown[0]).toBe("balance 0.046400");
    expect(shown[2]?.split("\t").slice(1)).toEqual(["debit", "-0.003600", served.headers.get("x-request-id")]);
  });
});
