#!/usr/bin/env node
// Thin launcher: the CLI lives in dist/cli/main.js (compiled from src/cli/main.ts by `make build`).
import { main } from '../dist/cli/main.js';

process.exitCode = await main(process.argv.slice(2));
