import { describe, expect, it } from "vitest";
import { BatchWriter } from "../src/store/batch-writer.js";

/** A writer over a fake store: each write is recorded, and fails while `failing` is set. */
function harness(options: { batchSize?: number; chunkSize?: number; flushIntervalMs?: number } = {}) {
  const writes: number[][] = [];
  const written: number[] = [];
  const failures: number[] = [];
  const state = { failing: false, failAfterChunks: Number.POSITIVE_INFINITY };
  const writer = new BatchWriter<number>({
    flushIntervalMs: options.flushIntervalMs ?? 20,
    batchSize: options.batchSize ?? Number.POSITIVE_INFINITY,
    chunkSize: options.chunkSize ?? Number.POSITIVE_INFINITY,
    write: async (chunk) => {
      writes.push([...chunk]);
      if (state.failing || writes.length > state.failAfterChunks) throw new Error("database away");
    },
    onWritten: (chunk) => written.push(...chunk),
    onFailed: (unwritten) => failures.push(unwritten),
  });
  return { writer, writes, written, failures, state };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("BatchWriter", () => {
  it("writes a full batch at once, and anything less within the flush interval", async () => {
    const { writer, writes } = harness({ batchSize: 3, flushIntervalMs: 40 });
    writer.add(1);
    writer.add(2);
    await tick();
    expect(writes).toEqual([]);
    writer.add(3);
    await tick();
    expect(writes).toEqual([[1, 2, 3]]);
    writer.add(4);
    await sleep(80);
    expect(writes).toEqual([[1, 2, 3], [4]]);
    expect(writer.written).toBe(4);
    expect(writer.pending).toBe(0);
  });

  it("writes a backlog a chunk at a time, and puts back only what was not written, ahead of newer items", async () => {
    const { writer, writes, written, failures, state } = harness({ chunkSize: 2 });
    for (const item of [1, 2, 3, 4, 5]) writer.add(item);
    state.failAfterChunks = 1;
    const flushed = writer.flush();
    expect(writer.pending).toBe(5);
    await flushed;
    expect(writes).toEqual([
      [1, 2],
      [3, 4],
    ]);
    expect(written).toEqual([1, 2]);
    expect(failures).toEqual([3]);
    writer.add(6);
    expect(writer.pending).toBe(4);
    state.failAfterChunks = Number.POSITIVE_INFINITY;
    await writer.drain();
    expect(written).toEqual([1, 2, 3, 4, 5, 6]);
    expect(writer.written).toBe(6);
  });

  it("after a failed write, writes nothing before its retry a flush interval later, however many items come", async () => {
    const { writer, writes, state } = harness({ batchSize: 2, flushIntervalMs: 60 });
    state.failing = true;
    writer.add(1);
    writer.add(2);
    await tick();
    await tick();
    expect(writes).toHaveLength(1);
    // full batches past the failure would each have tried again at once
    for (let item = 3; item < 40; item++) writer.add(item);
    await sleep(20);
    expect(writes).toHaveLength(1);
    state.failing = false;
    await sleep(100);
    expect(writes).toHaveLength(2);
    expect(writes[1]).toHaveLength(39);
    expect(writer.pending).toBe(0);
  });

  it("shares one write between concurrent flushes, and writes what came during it right after", async () => {
    const { writer, writes } = harness({ flushIntervalMs: 10_000 });
    writer.add(1);
    const first = writer.flush();
    writer.add(2);
    expect(writer.writing).toBe(true);
    expect(writer.flush()).toBe(first);
    await first;
    await writer.drain();
    expect(writes).toEqual([[1], [2]]);
    expect(writer.writing).toBe(false);
  });

  it("gives up draining after repeated failures rather than loop for ever", async () => {
    const { writer, writes, state } = harness();
    state.failing = true;
    writer.add(1);
    await writer.drain();
    expect(writes).toHaveLength(50);
    expect(writer.pending).toBe(1);
  });
});
