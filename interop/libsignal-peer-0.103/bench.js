#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// The libsignal side of benchmarks/protocol_bench.py (../libsignal-peer/bench.js) on the
// @signalapp/libsignal-client 0.103.0 installed in this directory: every new session runs
// SPQR (0.92+) and the protocol calls take the local address (0.91+).

'use strict';

require('../libsignal-peer/bench.js').start(__dirname);
