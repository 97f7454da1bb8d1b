"""Regenerate vectors/kyber1024.json with kyber-py (an independent round-3 implementation).

Each case: a 64-byte ML-KEM seed (our private-key form), the public key it gives, and a
ciphertext and shared secret produced by ``kyber_py.kyber.Kyber1024.encaps`` against that
public key. Our Kyber1024 backend must decapsulate each to the same secret.

Run: .venv/bin/python vectors/tools/make_kyber_vectors.py
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from kyber_py.kyber import Kyber1024

from cipherpost.protocol.kem import Kyber1024Backend


def main() -> None:
    backend = Kyber1024Backend()
    cases = []
    for i in range(3):
        seed = hashlib.sha512(b"cipherpost kyber vector %d" % i).digest()
        public = backend.public_from_secret(seed)
        shared, ciphertext = Kyber1024.encaps(public)
        cases.append({"seed": seed.hex(), "public_sha256": hashlib.sha256(public).hexdigest(),
                      "ciphertext": ciphertext.hex(), "shared": shared.hex()})
    out = {"source": "kyber-py 1.2.0 Kyber1024 (round 3) encapsulation against public keys "
                     "derived from the listed ML-KEM seeds; "
                     "see vectors/tools/make_kyber_vectors.py",
           "cases": cases}
    path = Path(__file__).resolve().parents[1] / "kyber1024.json"
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
