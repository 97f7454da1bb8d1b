"""The soak harness, briefly (`make soak` runs it for an hour): a relay process under
paced senders, reconnecting receivers and device churn for about 20 s. Nothing accepted
is lost, nothing acknowledged comes again, and the figures the long run reports (memory
samples, latency per stretch, drift) are really produced."""

from __future__ import annotations

from pathlib import Path

from . import results
from .soak import run


def test_a_short_soak_loses_nothing_and_reports_drift(tmp_path: Path) -> None:
    figures = run(tmp_path, seconds=20, senders=3, receivers=3, pace=0.1, sample=1.0,
                  churn_accounts=1, reconnect=(2.0, 6.0))
    results.write("soak", "quick", figures)
    assert figures["lost"] == 0, figures
    assert figures["duplicated_after_ack"] == 0, figures
    assert figures["accepted"] >= 100, figures
    assert figures["delivered"] >= figures["accepted"], figures
    assert figures["devices_linked"] >= 2 and figures["devices_removed"] >= 2, figures
    assert figures["rss_samples"] >= 10, figures
    for stretch in (figures["first"], figures["last"]):
        assert stretch["deliveries"] > 0 and stretch["rss_mib_median"] > 0, figures
        assert stretch["latency_ms_p99"] is not None, figures
    assert figures["drift"]["rss_mib_median"] is not None, figures
