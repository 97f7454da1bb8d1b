/**
 * QR codes drawn as SVG elements (no markup strings: the page requires Trusted Types and
 * allows no inline style), on `@paulmillr/qr`.
 *
 * The CLI draws its codes with segno in byte mode at error level M: the link URI as its
 * UTF-8 bytes, the safety number's scannable form as its raw bytes. `encodeQR` takes only
 * text, which it UTF-8 encodes, so binary bytes cannot pass through it; this module builds
 * the byte-mode data codewords itself (ISO/IEC 18004 §7.4: mode, count, data, terminator,
 * pad codewords) and leaves error correction, placement and the mask choice to the
 * library (`utils.interleave`, `_tests.drawQR`, `_tests.penalty`: exported as unstable,
 * hence the exact version pin in package.json).
 */

import { _tests, utils } from "@paulmillr/qr";

const ECC = "medium";
const QUIET_ZONE = 4;
const SVG = "http://www.w3.org/2000/svg";

function dataCodewords(version: number, payload: Uint8Array): Uint8Array | undefined {
  const { capacity } = utils.info.capacity(version, ECC);
  const countBits = utils.info.lengthBits(version, "byte");
  if (payload.length >= 2 ** countBits) return undefined;
  const bits: number[] = [];
  const put = (value: number, width: number): void => {
    for (let i = width - 1; i >= 0; i--) bits.push((value >>> i) & 1);
  };
  put(0b0100, 4);
  put(payload.length, countBits);
  for (const byte of payload) put(byte, 8);
  if (bits.length > capacity) return undefined;
  put(0, Math.min(4, capacity - bits.length));
  put(0, (8 - (bits.length % 8)) % 8);
  const codewords = new Uint8Array(capacity / 8);
  let i = 0;
  for (; i * 8 < bits.length; i++) {
    let byte = 0;
    for (let j = 0; j < 8; j++) byte = (byte << 1) | bits[i * 8 + j]!;
    codewords[i] = byte;
  }
  for (let pad = 0; i < codewords.length; i++, pad++) codewords[i] = pad % 2 === 0 ? 0xec : 0x11;
  return codewords;
}

/**
 * The modules (rows of booleans, true = dark) of the smallest byte-mode code, level M,
 * holding `payload`; with the mask of least penalty unless `fixedMask` (tests) names one.
 */
export function qrModules(payload: Uint8Array, fixedMask?: number): boolean[][] {
  for (let version = 1; version <= 40; version++) {
    const codewords = dataCodewords(version, payload);
    if (codewords === undefined) continue;
    const data = utils.interleave(version, ECC).encode(codewords);
    let mask = fixedMask ?? 0;
    let least = Infinity;
    for (let m = 0; m < 8 && fixedMask === undefined; m++) {
      const score = _tests.penalty(_tests.drawQR(version, ECC, data, m as 0, true));
      if (score < least) [least, mask] = [score, m];
    }
    const bitmap = _tests.drawQR(version, ECC, data, mask as 0);
    return bitmap.data.map((row) => row.map((cell) => cell === true));
  }
  throw new RangeError("too much data for a QR code");
}

/**
 * An `<svg>` of the code for `payload` (a string is taken as its UTF-8 bytes), with a quiet
 * zone of 4 modules; `label` names it for screen readers.
 */
export function qrSvg(payload: Uint8Array | string, label: string): SVGSVGElement {
  const bytes = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
  const modules = qrModules(bytes);
  const size = modules.length + 2 * QUIET_ZONE;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${size} ${size}`);
  svg.setAttribute("class", "qr");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  svg.setAttribute("shape-rendering", "crispEdges");
  const background = document.createElementNS(SVG, "rect");
  background.setAttribute("width", String(size));
  background.setAttribute("height", String(size));
  background.setAttribute("fill", "#fff");
  const path: string[] = [];
  modules.forEach((row, y) => row.forEach((dark, x) => {
    if (dark) path.push(`M${x + QUIET_ZONE} ${y + QUIET_ZONE}h1v1h-1z`);
  }));
  const dark = document.createElementNS(SVG, "path");
  dark.setAttribute("d", path.join(""));
  dark.setAttribute("fill", "#000");
  svg.append(background, dark);
  return svg;
}
