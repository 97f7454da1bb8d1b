/**
 * For tests/web/test_key_file_browser.py: writes a key file with the browser's writer
 * (src/app/key_file.ts writeKeyFile) under Node, for the Python SDK to read. One JSON
 * object on stdin: {passphrase, params: [t, m KiB, p], records: [base64 ExportRecord]};
 * the file, base64, on stdout. Not part of `npm test`.
 *
 *     node --import tsx test/key_file_write.ts < request.json
 */

import { readFileSync } from "node:fs";

import { fromBinary } from "@bufbuild/protobuf";

import { writeKeyFile } from "../src/app/key_file.js";
import { ExportRecordSchema } from "../src/app/proto/cipherpost/app/v1/app_pb.js";

const request = JSON.parse(readFileSync(0, "utf8")) as { passphrase: string; params: [number, number, number]; records: string[] };
const [timeCost, memoryKib, parallelism] = request.params;
const records = request.records.map((r) => fromBinary(ExportRecordSchema, Buffer.from(r, "base64")));
const file = await writeKeyFile(records, request.passphrase, { timeCost, memoryKib, parallelism });
process.stdout.write(Buffer.from(file).toString("base64"));
