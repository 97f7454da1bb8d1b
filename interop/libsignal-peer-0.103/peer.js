#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// The Cipherpost interop reference peer (../libsignal-peer/peer.js) on the
// @signalapp/libsignal-client 0.103.0 installed in this directory: libsignal with SPQR
// required for every new session (0.92+) and SignalMessage field 6 (0.91+).

'use strict';

require('../libsignal-peer/peer.js').start(__dirname);
