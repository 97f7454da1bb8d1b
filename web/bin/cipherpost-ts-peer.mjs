#!/usr/bin/env node
// Launch the TypeScript interop peer (shared/interop/PEER.md) from its sources: tsx
// compiles them on the fly, so the scenario runner always drives the current code.
// Takes no arguments, like the other peers.
import { register } from "tsx/esm/api";

register();
await import("../src/interop/main.ts");
