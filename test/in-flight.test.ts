import { describe, expect, it } from "vitest";
import { Cancellation, InFlight } from "../src/suppliers/cancellation.js";

describe("the in-flight list the shutdown deadline cuts", () => {
  it("cancels exactly the requests still in it, for the reason given, each once", () => {
    const list = new InFlight();
    const [first, middle, last, gone] = [
      new Cancellation(),
      new Cancellation(),
      new Cancellation(),
      new Cancellation(),
    ];
    for (const cancellation of [first, middle, last, gone]) list.add(cancellation);
    list.remove(gone);
    list.remove(middle);
    // removing twice, or what was never added, leaves the list as it was
    list.remove(middle);
    list.remove(new Cancellation());
    first.abort();

    expect(list.closed).toBe(false);
    expect(list.cancelAll("shutdown")).toBe(1);
    expect([first.reason, middle.reason, last.reason, gone.reason]).toEqual(["client-closed", null, "shutdown", null]);
    expect(list.cancelAll("shutdown")).toBe(0);
    // a request whose body came after the cut is cut as it joins
    const late = new Cancellation();
    list.add(late);
    expect([list.closed, late.reason]).toEqual([true, "shutdown"]);
  });

  it("lets a cancellation's listener take it out of the list while the list is being cut", () => {
    const list = new InFlight();
    const all = [new Cancellation(), new Cancellation(), new Cancellation()];
    for (const cancellation of all) {
      list.add(cancellation);
      cancellation.onAbort(() => list.remove(cancellation));
    }
    expect(list.cancelAll("shutdown")).toBe(3);
    expect(all.every((cancellation) => cancellation.reason === "shutdown")).toBe(true);
    expect(list.cancelAll("shutdown")).toBe(0);
  });
});
