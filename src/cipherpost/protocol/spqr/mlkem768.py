"""FIPS 203 ML-KEM-768 internals in pure Python, with encryption split in two.

The braid needs what black-box ML-KEM libraries do not offer: the CT sender must send
``u`` (the first 960 ciphertext bytes) knowing only the matrix seed rho and H(ek), and
compute ``v`` (the last 128) once the rest of the key, t-hat, arrived (spqr-digest §3,
§4.4). So this module implements K-PKE from FIPS 203 with :func:`encrypt_u` and
:func:`encrypt_v` as the two halves of K-PKE.Encrypt; together they equal the standard
ML-KEM-768 encapsulation of ``ek = t-hat || rho`` with message ``m``. Key generation and
decapsulation from a 2400-byte expanded key are here too, for keys the library
``cryptography`` cannot load (libsignal stores expanded keys); the tests check all of it
against ``cryptography``.

Section numbers are FIPS 203's. Not constant-time (pure Python never is); the secrets it
touches are one-shot per epoch.
"""

from __future__ import annotations

import hashlib
import hmac

N = 256
Q = 3329
K = 3
ETA1 = 2
ETA2 = 2
DU = 10
DV = 4

POLY_BYTES = 384  # ByteEncode12 of one polynomial
EK_BYTES = POLY_BYTES * K + 32  # 1184
DK_PKE_BYTES = POLY_BYTES * K  # 1152
DK_BYTES = DK_PKE_BYTES + EK_BYTES + 64  # 2400
CT_U_BYTES = 32 * DU * K  # 960
CT_V_BYTES = 32 * DV  # 128

Poly = list[int]


def _bitrev7(i: int) -> int:
    return int(f"{i:07b}"[::-1], 2)


_ZETAS = [pow(17, _bitrev7(i), Q) for i in range(128)]
_GAMMAS = [pow(17, 2 * _bitrev7(i) + 1, Q) for i in range(128)]
_N_INV = 3303  # 128^-1 mod q


# -- hash functions (§4.1) -------------------------------------------------------------------

def h(data: bytes) -> bytes:
    """H = SHA3-256."""
    return hashlib.sha3_256(data).digest()


def g(data: bytes) -> tuple[bytes, bytes]:
    """G = SHA3-512, split in two 32-byte halves."""
    out = hashlib.sha3_512(data).digest()
    return out[:32], out[32:]


def _prf(eta: int, seed: bytes, nonce: int) -> bytes:
    return hashlib.shake_256(seed + bytes((nonce,))).digest(64 * eta)


# -- encodings (§4.2.1) ----------------------------------------------------------------------

def byte_encode(poly: Poly, d: int) -> bytes:
    """ByteEncode_d: 256 d-bit integers, little-endian bit order."""
    if d == 10:  # four values in five bytes
        return b"".join((a | b << 10 | c << 20 | e << 30).to_bytes(5, "little")
                        for a, b, c, e in zip(poly[0::4], poly[1::4], poly[2::4],
                                              poly[3::4], strict=True))
    if d == 4:
        return bytes(x | y << 4 for x, y in zip(poly[0::2], poly[1::2], strict=True))
    acc = 0
    for i in range(N - 1, -1, -1):
        acc = (acc << d) | poly[i]
    return acc.to_bytes(32 * d, "little")


def byte_decode(data: bytes, d: int) -> Poly:
    """ByteDecode_d (for d = 12 the values are not reduced: callers check them)."""
    if d == 12 and len(data) == POLY_BYTES:
        return [v for b0, b1, b2 in zip(data[0::3], data[1::3], data[2::3], strict=True)
                for v in (b0 | (b1 & 0x0F) << 8, b1 >> 4 | b2 << 4)]
    acc = int.from_bytes(data, "little")
    mask = (1 << d) - 1
    out = []
    for _ in range(N):
        out.append(acc & mask)
        acc >>= d
    return out


def compress(poly: Poly, d: int) -> Poly:
    """Compress_d: round(2^d / q * x) mod 2^d."""
    mask = (1 << d) - 1
    half = Q // 2
    return [(((x << d) + half) // Q) & mask for x in poly]


def decompress(poly: Poly, d: int) -> Poly:
    """Decompress_d: round(q / 2^d * y)."""
    half = 1 << (d - 1)
    return [(y * Q + half) >> d for y in poly]


# -- sampling (§4.2.2) -----------------------------------------------------------------------

def sample_ntt(seed: bytes) -> Poly:
    """SampleNTT: a uniform polynomial in NTT form from SHAKE128(seed) by rejection."""
    length = 840
    while True:
        stream = hashlib.shake_128(seed).digest(length)
        out: Poly = []
        for i in range(0, length - 2, 3):
            c0, c1, c2 = stream[i], stream[i + 1], stream[i + 2]
            d1 = c0 | ((c1 & 0x0F) << 8)
            d2 = (c1 >> 4) | (c2 << 4)
            if d1 < Q:
                out.append(d1)
                if len(out) == N:
                    return out
            if d2 < Q:
                out.append(d2)
                if len(out) == N:
                    return out
        length += 168  # one more SHAKE128 block; the prefix is the same stream


def _cbd2_table() -> list[tuple[int, int]]:
    def one(bits: int) -> int:
        return ((bits & 3).bit_count() - (bits >> 2).bit_count()) % Q
    return [(one(byte & 0x0F), one(byte >> 4)) for byte in range(256)]


_CBD2 = _cbd2_table()  # byte -> its two coefficients for eta = 2


def sample_cbd(data: bytes, eta: int) -> Poly:
    """SamplePolyCBD_eta."""
    if eta == 2 and len(data) == 128:
        return [c for byte in data for c in _CBD2[byte]]
    bits = int.from_bytes(data, "little")
    mask = (1 << eta) - 1
    out = []
    for _ in range(N):
        a = (bits & mask).bit_count()
        bits >>= eta
        b = (bits & mask).bit_count()
        bits >>= eta
        out.append((a - b) % Q)
    return out


def matrix(rho: bytes) -> list[list[Poly]]:
    """A-hat, with A-hat[i][j] = SampleNTT(rho || j || i)."""
    return [[sample_ntt(rho + bytes((j, i))) for j in range(K)] for i in range(K)]


# -- NTT (§4.3) ------------------------------------------------------------------------------

def ntt(poly: Poly) -> Poly:
    """NTT (Algorithm 9). Sums are left unreduced inside (they stay below 8q in magnitude)
    and reduced once at the end; only products are reduced as they are made."""
    f = list(poly)
    k = 1
    length = 128
    while length >= 2:
        for start in range(0, N, 2 * length):
            zeta = _ZETAS[k]
            k += 1
            for j in range(start, start + length):
                t = zeta * f[j + length] % Q
                f[j + length] = f[j] - t
                f[j] += t
        length >>= 1
    return [x % Q for x in f]


def ntt_inv(poly: Poly) -> Poly:
    """NTT^-1 (Algorithm 10). Sums are left unreduced inside (below 2^7 q) and reduced at
    the end with the scaling."""
    f = list(poly)
    k = 127
    length = 2
    while length <= 128:
        for start in range(0, N, 2 * length):
            zeta = _ZETAS[k]
            k -= 1
            for j in range(start, start + length):
                t = f[j]
                u = f[j + length]
                f[j] = t + u
                f[j + length] = zeta * (u - t) % Q
        length <<= 1
    return [x * _N_INV % Q for x in f]


def _dot(row: list[Poly], vec: list[Poly]) -> Poly:
    """sum_i row[i] * vec[i] in the NTT domain (MultiplyNTTs, Algorithm 11), reduced."""
    even = [0] * (N // 2)
    odd = [0] * (N // 2)
    for a, b in zip(row, vec, strict=True):
        a0, a1, b0, b1 = a[0::2], a[1::2], b[0::2], b[1::2]
        even = [e + x0 * y0 + x1 * y1 % Q * g
                for e, x0, x1, y0, y1, g in zip(even, a0, a1, b0, b1, _GAMMAS, strict=True)]
        odd = [o + x0 * y1 + x1 * y0
               for o, x0, x1, y0, y1 in zip(odd, a0, a1, b0, b1, strict=True)]
    out = [0] * N
    out[0::2] = [x % Q for x in even]
    out[1::2] = [x % Q for x in odd]
    return out


def _add(*polys: Poly) -> Poly:
    return [sum(xs) % Q for xs in zip(*polys, strict=True)]


# -- K-PKE and ML-KEM (§5, §6) -----------------------------------------------------------------

def keygen(d: bytes, z: bytes) -> tuple[bytes, bytes]:
    """ML-KEM.KeyGen_internal(d, z): ``(ek (1184), dk (2400))``."""
    rho, sigma = g(d + bytes((K,)))
    a_hat = matrix(rho)
    s = [ntt(sample_cbd(_prf(ETA1, sigma, i), ETA1)) for i in range(K)]
    e = [ntt(sample_cbd(_prf(ETA1, sigma, K + i), ETA1)) for i in range(K)]
    t_hat = [_add(_dot(a_hat[i], s), e[i]) for i in range(K)]
    ek = b"".join(byte_encode(t, 12) for t in t_hat) + rho
    dk_pke = b"".join(byte_encode(x, 12) for x in s)
    return ek, dk_pke + ek + h(ek) + z


def _y_hat(r: bytes) -> list[Poly]:
    """y-hat of K-PKE.Encrypt from its randomness r."""
    return [ntt(sample_cbd(_prf(ETA1, r, i), ETA1)) for i in range(K)]


def encrypt_u(rho: bytes, r: bytes) -> bytes:
    """The first half of K-PKE.Encrypt: c1 = Encode(Compress(NTT^-1(A-hat^T y-hat) + e1))."""
    a_hat = matrix(rho)
    y_hat = _y_hat(r)
    e1 = [sample_cbd(_prf(ETA2, r, K + i), ETA2) for i in range(K)]
    columns = [[a_hat[j][i] for j in range(K)] for i in range(K)]
    u = [_add(ntt_inv(_dot(columns[i], y_hat)), e1[i]) for i in range(K)]
    return b"".join(byte_encode(compress(x, DU), DU) for x in u)


def encrypt_v(t_hat_bytes: bytes, m: bytes, r: bytes) -> bytes:
    """The second half: c2 = Encode(Compress(NTT^-1(t-hat^T y-hat) + e2 + Decompress1(m)))."""
    t_hat = [byte_decode(t_hat_bytes[i * POLY_BYTES:(i + 1) * POLY_BYTES], 12)
             for i in range(K)]
    y_hat = _y_hat(r)
    e2 = sample_cbd(_prf(ETA2, r, 2 * K), ETA2)
    mu = decompress(byte_decode(m, 1), 1)
    v = _add(ntt_inv(_dot(t_hat, y_hat)), e2, mu)
    return byte_encode(compress(v, DV), DV)


def encaps_secret(m: bytes, ek_hash: bytes) -> tuple[bytes, bytes]:
    """``(K, r) = G(m || H(ek))``, the shared secret and the encryption randomness."""
    return g(m + ek_hash)


def encapsulate(ek: bytes, m: bytes) -> tuple[bytes, bytes]:
    """ML-KEM.Encaps_internal(ek, m): ``(K, c)``; both halves of K-PKE in one call."""
    shared, r = encaps_secret(m, h(ek))
    c = encrypt_u(ek[DK_PKE_BYTES:], r) + encrypt_v(ek[:DK_PKE_BYTES], m, r)
    return shared, c


def _decrypt(dk_pke: bytes, c: bytes) -> bytes:
    u = [decompress(byte_decode(c[i * 32 * DU:(i + 1) * 32 * DU], DU), DU) for i in range(K)]
    v = decompress(byte_decode(c[CT_U_BYTES:], DV), DV)
    s_hat = [byte_decode(dk_pke[i * POLY_BYTES:(i + 1) * POLY_BYTES], 12) for i in range(K)]
    w = [(a - b) % Q for a, b in zip(v, ntt_inv(_dot(s_hat, [ntt(x) for x in u])),
                                      strict=True)]
    return byte_encode(compress(w, 1), 1)


def decapsulate(dk: bytes, c: bytes) -> bytes:
    """ML-KEM.Decaps_internal with a 2400-byte expanded key (implicit rejection)."""
    if len(dk) != DK_BYTES or len(c) != CT_U_BYTES + CT_V_BYTES:
        raise ValueError("bad ML-KEM-768 decapsulation key or ciphertext length")
    dk_pke = dk[:DK_PKE_BYTES]
    ek = dk[DK_PKE_BYTES:DK_PKE_BYTES + EK_BYTES]
    ek_hash = dk[DK_PKE_BYTES + EK_BYTES:DK_BYTES - 32]
    z = dk[DK_BYTES - 32:]
    m = _decrypt(dk_pke, c)
    shared, r = encaps_secret(m, ek_hash)
    rejected = hashlib.shake_256(z + c).digest(32)
    again = encrypt_u(ek[DK_PKE_BYTES:], r) + encrypt_v(ek[:DK_PKE_BYTES], m, r)
    return shared if hmac.compare_digest(again, c) else rejected


def ek_modulus_ok(t_hat_bytes: bytes) -> bool:
    """FIPS 203 §7.2 modulus check on the t-hat part of an encapsulation key."""
    if len(t_hat_bytes) % POLY_BYTES:
        return False
    return all(max(byte_decode(t_hat_bytes[i:i + POLY_BYTES], 12)) < Q
               for i in range(0, len(t_hat_bytes), POLY_BYTES))
