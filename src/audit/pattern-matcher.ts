/** Nodes this close to the root get a full 256-entry transition row: the search spends nearly all its time there. */
const DENSE_DEPTH = 3;

/**
 * Finds many byte patterns in one pass over the data (Aho-Corasick). The audit looks
 * for thousands of patterns (every canary in every encoding) in megabytes of stores;
 * searching for each pattern in turn would read the stores thousands of times.
 */
export class PatternMatcher {
  /** Child of a node by byte, keyed `node * 256 + byte`. */
  private readonly edges = new Map<number, number>();
  private readonly fail: Int32Array;
  /** Complete transition rows of the shallow nodes, failure links folded in, one after another. */
  private readonly table: Int32Array;
  /** Where a node's row starts in `table`, or -1 for a deep node. */
  private readonly rowOf: Int32Array;
  /** Pattern indexes that end at each node, including through its failure chain. */
  private readonly outputs = new Map<number, number[]>();
  /** 1 where `outputs` has an entry: typed arrays keep the per-byte loop fast. */
  private readonly hasOutput: Uint8Array;

  constructor(patterns: readonly Uint8Array[]) {
    const capacity = 1 + patterns.reduce((sum, pattern) => sum + pattern.length, 0);
    // the trie as linked lists of children, in typed arrays: thousands of patterns, few allocations
    const firstChild = new Int32Array(capacity).fill(-1);
    const nextSibling = new Int32Array(capacity).fill(-1);
    const byteOf = new Uint8Array(capacity);
    const depth = new Uint8Array(capacity);
    this.fail = new Int32Array(capacity);
    this.rowOf = new Int32Array(capacity).fill(-1);
    this.hasOutput = new Uint8Array(capacity);
    const rows: Int32Array[] = [];
    let nodes = 1;
    patterns.forEach((pattern, index) => {
      if (pattern.length === 0) return;
      let node = 0;
      for (const byte of pattern) {
        const key = node * 256 + byte;
        let child = this.edges.get(key);
        if (child === undefined) {
          child = nodes++;
          this.edges.set(key, child);
          byteOf[child] = byte;
          depth[child] = Math.min(255, (depth[node] as number) + 1);
          nextSibling[child] = firstChild[node] as number;
          firstChild[node] = child;
        }
        node = child;
      }
      this.outputs.set(node, [...(this.outputs.get(node) ?? []), index]);
    });
    // breadth-first, so every node's failure target (shallower) is settled before it is needed
    const queue = new Int32Array(nodes);
    let tail = 1;
    for (let head = 0; head < tail; head++) {
      const node = queue[head] as number;
      for (let child = firstChild[node] as number; child !== -1; child = nextSibling[child] as number) {
        queue[tail++] = child;
        const target = node === 0 ? 0 : this.step(this.fail[node] as number, byteOf[child] as number, rows);
        this.fail[child] = target;
        const inherited = this.outputs.get(target);
        if (inherited !== undefined) this.outputs.set(child, [...(this.outputs.get(child) ?? []), ...inherited]);
      }
      if ((depth[node] as number) <= DENSE_DEPTH) {
        this.rowOf[node] = rows.length;
        rows.push(this.denseRow(node, rows));
      }
    }
    for (const node of this.outputs.keys()) this.hasOutput[node] = 1;
    this.table = new Int32Array(rows.length * 256);
    for (const [index, row] of rows.entries()) this.table.set(row, index * 256);
    for (let node = 0; node < nodes; node++) {
      const row = this.rowOf[node] as number;
      if (row >= 0) this.rowOf[node] = row * 256;
    }
  }

  private denseRow(node: number, rows: Int32Array[]): Int32Array {
    const row = new Int32Array(256);
    const fallback = node === 0 ? undefined : rows[this.rowOf[this.fail[node] as number] as number];
    for (let byte = 0; byte < 256; byte++) {
      row[byte] = this.edges.get(node * 256 + byte) ?? (fallback === undefined ? 0 : (fallback[byte] as number));
    }
    return row;
  }

  /**
   * The node reached from `from` on `byte`, following failure links. While building,
   * rows live in `rows`; once built, in `table` (and `rowOf` holds table offsets).
   */
  private step(from: number, byte: number, rows?: Int32Array[]): number {
    let node = from;
    for (;;) {
      const row = this.rowOf[node] as number;
      if (row >= 0)
        return rows === undefined ? (this.table[row + byte] as number) : ((rows[row] as Int32Array)[byte] as number);
      const next = this.edges.get(node * 256 + byte);
      if (next !== undefined) return next;
      node = this.fail[node] as number;
    }
  }

  /** Starts a search of one source; feed it the source's bytes in order, in chunks of any size. */
  session(found: Set<number>): MatchSession {
    let node = 0;
    const { table, rowOf, hasOutput, outputs } = this;
    return {
      feed: (bytes: Uint8Array) => {
        for (let index = 0; index < bytes.length; index++) {
          const byte = bytes[index] as number;
          const row = rowOf[node] as number;
          node = row >= 0 ? (table[row + byte] as number) : this.step(node, byte);
          if (hasOutput[node] === 1) for (const pattern of outputs.get(node) as number[]) found.add(pattern);
        }
      },
    };
  }
}

/** A search in progress over one source; matches go into the set the session was opened with. */
export interface MatchSession {
  feed(bytes: Uint8Array): void;
}
