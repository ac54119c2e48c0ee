#!/usr/bin/env -S node --max-semi-space-size=4 --single-threaded-gc
import { main } from "../dist/cli/main.js";

// a reader that stops early (`lethe credits show | head -2`) closes the pipe: what is left
// to print has no one to read it, and is not worth a stack trace
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (error) => {
    if (error.code !== "EPIPE") throw error;
  });
}

process.exitCode = await main(process.argv.slice(2));
