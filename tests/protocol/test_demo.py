"""`make demo` (cipherpost.demo): the protocol core end to end, as the README shows it."""

from __future__ import annotations

import pytest

from cipherpost import demo


def test_the_demo_runs_and_the_safety_numbers_match(capsys: pytest.CaptureFixture[str]) -> None:
    demo.main()
    out = capsys.readouterr().out
    assert "Bob reads:   Hi Bob, this is Alice." in out
    assert "Bob reads:   (sent second, arrives first)" in out
    assert "Alice reads: Hello Alice! Got both." in out
    assert "They match." in out and "Bob scans Alice's QR code: verified" in out
