import { type Canary, type CanaryForm, canaryPatterns, mintCanary } from "./canaries.js";
import { PatternMatcher } from "./pattern-matcher.js";

/** Every canary minted during one audit, and which path sent it. */
export class CanaryRegistry {
  private readonly entries: { canary: Canary; path: number }[] = [];
  private compiled: { matcher: PatternMatcher; owners: number[] } | null = null;

  /** Mints a canary on behalf of path number `path`. */
  mint(path: number, form: CanaryForm = "text"): Canary {
    const canary = mintCanary(form);
    this.entries.push({ canary, path });
    this.compiled = null;
    return canary;
  }

  get count(): number {
    return this.entries.length;
  }

  /** The path that sent canary number `index`. */
  pathOf(index: number): number {
    return (this.entries[index] as { path: number }).path;
  }

  /** One matcher over every encoding of every canary minted so far. */
  matcher(): PatternMatcher {
    return this.compile().matcher;
  }

  /** The canaries behind a set of matched pattern indexes. */
  canariesOf(patterns: Iterable<number>): Set<number> {
    const owners = this.compile().owners;
    const canaries = new Set<number>();
    for (const pattern of patterns) canaries.add(owners[pattern] as number);
    return canaries;
  }

  private compile(): { matcher: PatternMatcher; owners: number[] } {
    if (this.compiled !== null) return this.compiled;
    const patterns: Uint8Array[] = [];
    const owners: number[] = [];
    this.entries.forEach((entry, index) => {
      for (const pattern of canaryPatterns(entry.canary)) {
        patterns.push(pattern.bytes);
        owners.push(index);
      }
    });
    this.compiled = { matcher: new PatternMatcher(patterns), owners };
    return this.compiled;
  }
}
