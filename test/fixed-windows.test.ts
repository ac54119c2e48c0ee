import { describe, expect, it } from "vitest";
import { FixedWindows } from "../src/billing/fixed-windows.js";

const MINUTE = 60_000;
const T = 1_800_000_000_000;

describe("FixedWindows", () => {
  it("counts within a window and opens a new one once it ended", () => {
    const windows = new FixedWindows(MINUTE);
    windows.add("a", 2, T);
    expect(windows.add("a", 1, T + 59_999)).toEqual({ consumed: 3, endsAt: T + MINUTE });
    expect(windows.current("a", T + MINUTE)).toBeUndefined();
    expect(windows.add("a", 1, T + MINUTE)).toEqual({ consumed: 1, endsAt: T + 2 * MINUTE });
  });

  it("ends a window when the clock is stepped back before it began, rather than keeping it open for the step", () => {
    const windows = new FixedWindows(MINUTE);
    windows.add("a", 5, T);
    const back = T - 3_600_000;
    expect(windows.current("a", back)).toBeUndefined();
    expect(windows.add("a", 1, back)).toEqual({ consumed: 1, endsAt: back + MINUTE });
    // and the new window counts as any other
    expect(windows.add("a", 1, back + 1_000)).toEqual({ consumed: 2, endsAt: back + MINUTE });
  });

  it("still sweeps ended windows after the clock was stepped back", () => {
    const windows = new FixedWindows(MINUTE);
    windows.add("a", 1, T);
    windows.add("b", 1, T - 3_600_000);
    expect(windows.size).toBe(1);
    windows.add("c", 1, T - 3_600_000 + 2 * MINUTE);
    expect(windows.size).toBe(1);
  });
});
