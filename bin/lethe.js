#!/usr/bin/env -S node --max-semi-space-size=4 --single-threaded-gc
// A hang-up while `serve` is still loading its modules (a config tool reloading a service it
// has just started) would end the process, Node's default for SIGHUP: until serve takes
// hang-ups over, one is let be. Serve reads the config file after this, so none is missed.
// Only then is the rest loaded (a static import would load it all before this line runs).
if (process.argv[2] === "serve") process.on("SIGHUP", () => {});

const { main } = await import("../dist/cli/main.js");

// a reader that stops early (`lethe credits show | head -2`) closes the pipe: what is left
// to print has no one to read it, and is not worth a stack trace
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (error) => {
    if (error.code !== "EPIPE") throw error;
  });
}

process.exitCode = await main(process.argv.slice(2));
