"""Writes web/test/fixtures/passphrase-scores-python.json: the Python zxcvbn's scores of a
few passphrases, for web/test/app_passphrase_strength.test.ts to hold the browser's
zxcvbn-ts (strength.js) to the SDK's verdicts (cipherpost.client.recovery.check_passphrase:
score >= MIN_SCORE, with "cipherpost" and the username as user inputs).

Regenerate (from the repository root) with:

    .venv/bin/python web/test/passphrase_scores_fixture.py

The two ports' dictionaries and matchers differ a little, so scores may differ; the test
lists the known differences with their reason and requires the same verdict for all.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from zxcvbn import zxcvbn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from cipherpost.client.recovery import MIN_SCORE

OUT = Path(__file__).with_name("fixtures") / "passphrase-scores-python.json"

#: (passphrase, username): weak and strong ones, the username and the site name in them,
#: repeats, sequences, keyboard walks, dates, l33t, word lists and random strings.
CASES = [
    ("Password123!Password123!", "rita"),
    ("password password password", "rita"),
    ("P@ssw0rd2024", "rita"),
    ("letmein123456", "rita"),
    ("sunshine2024!", "rita"),
    ("short one", "alice"),
    ("aaaaaaaaaaaaaaaaaaaaaaaa", "alice"),
    ("abcabcabcabcabcabc", "alice"),
    ("zyxwvutsrqponmlk", "rita"),
    ("qwertyuiopasdfghjkl", "rita"),
    ("1qaz2wsx3edc4rfv", "rita"),
    ("rita rita rita rita rita", "rita"),
    ("vorbulax2026!", "vorbulax"),
    ("i am vorbulax", "vorbulax"),
    ("xalubrov1990", "vorbulax"),
    ("cipherpost2026", "rita"),
    ("cipherpost cipherpost 2026", "rita"),
    ("correct horse", "rita"),
    ("harbor meadow", "rita"),
    ("iloveyou iloveyou", "rita"),
    ("january 12 1985", "rita"),
    ("monkey dragon football", "rita"),
    ("tr0ub4dor&3", "rita"),
    ("kd8Lq2vNw7Zp", "rita"),
    ("Xk7#pQ9z!mW2vR4t", "rita"),
    ("correcthorsebatterystaple!", "alice"),
    ("my name is alice, ok friend", "alice"),
    ("orbit walnut pencil tundra", "rita"),
    ("velvet harbor quartz meadow", "rita"),
    ("seven quiet herons fold the amber ledger at dusk", "alice"),
]


def main() -> None:
    rows = []
    for passphrase, username in CASES:
        result = zxcvbn(passphrase[:100], user_inputs=["cipherpost", username])
        rows.append({"passphrase": passphrase, "username": username, "score": int(result["score"]),
                     "log10_guesses": round(math.log10(float(result["guesses"])), 2),
                     "accepted": int(result["score"]) >= MIN_SCORE})
    OUT.write_text(json.dumps({"min_score": MIN_SCORE, "cases": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
