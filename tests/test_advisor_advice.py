"""The advice of ``dbpool bench`` on made-up figures: every branch of the recommendation."""

from __future__ import annotations

from typing import Any

import pytest

from dbpool.advisor.advice import Figures, aggregate, recommend


def fig(
    contender: str,
    threads: int,
    throughput: float,
    *,
    connections: int | None = None,
    cpu_us: float = 100.0,
    **extra: Any,
) -> Figures:
    values: dict[str, Any] = {
        "requests": int(throughput * 2) or 0,
        "errors": 0,
        "server_connections": threads if connections is None else connections,
        "client_cpu_us": cpu_us,
        "p50_ms": 1.0,
        "p99_ms": 3.0,
        "wait_p99_ms": 0.1,
    }
    values.update(extra)
    return Figures(contender, threads, throughput, **values)


def pair(
    threads: int,
    shared: float,
    persistent: float,
    *,
    shared_conns: int | None = None,
    persistent_conns: int | None = None,
    **extra: Any,
) -> list[Figures]:
    return [
        fig("shared", threads, shared, connections=shared_conns, **extra),
        fig("persistent", threads, persistent, connections=persistent_conns, **extra),
    ]


def test_persistent_faster_within_max_size() -> None:
    advice = recommend(pair(16, 1000, 1400), max_size=20)
    assert advice.choice == "persistent"
    assert advice.headline == "Pick persistent."
    (verdict,) = advice.verdicts
    assert verdict.choice == "persistent"
    assert "persistent did 1.4x shared's throughput" in verdict.reason
    assert "16 threads ≤ max_size 20" in verdict.reason
    assert verdict.needs_max_size is None


def test_persistent_faster_beyond_max_size_needs_a_bigger_bound() -> None:
    advice = recommend(pair(64, 1000, 1300, shared_conns=15), max_size=15, max_connections=500)
    assert advice.choice == "persistent"
    assert "max_size raised to at least 64" in advice.headline
    (verdict,) = advice.verdicts
    assert verdict.needs_max_size == 64
    assert "only with 64 connections, one per thread, where max_size is 15" in verdict.reason
    assert "shared held 15" in verdict.reason


def test_persistent_faster_but_past_the_servers_max_connections() -> None:
    advice = recommend(pair(200, 1000, 1300, shared_conns=15), max_size=15, max_connections=151)
    assert advice.choice == "shared"
    (verdict,) = advice.verdicts
    assert verdict.choice == "shared"
    assert "max_connections 151" in verdict.reason


def test_shared_faster() -> None:
    advice = recommend(pair(64, 1300, 1000, shared_conns=15), max_size=15)
    assert advice.choice == "shared"
    assert advice.headline == "Pick shared."
    assert "shared did 1.3x persistent's throughput" in advice.verdicts[0].reason
    assert "15 connections against 64" in advice.verdicts[0].reason


def test_even_throughput_shared_with_fewer_connections() -> None:
    advice = recommend(pair(64, 960, 1000, shared_conns=10), max_size=15)
    assert advice.choice == "shared"
    reason = advice.verdicts[0].reason
    assert (
        "shared reached 96% of persistent's throughput with 10 connections instead of 64" in reason
    )
    assert "bottleneck" not in reason


def test_even_throughput_same_connections_is_either() -> None:
    advice = recommend(pair(8, 990, 1000), max_size=15)
    assert advice.choice == "either"
    assert advice.verdicts[0].choice == "either"
    assert not advice.verdicts[0].server_bound
    assert "bottleneck" not in advice.paragraph
    assert "Neither mode matters for this workload: keep shared" in advice.headline


def test_server_bottleneck_neither_mode_matters() -> None:
    # From 4 to 16 threads the throughput stays flat while the client is far from busy.
    figures = [*pair(4, 2000, 2050, cpu_us=100), *pair(16, 2080, 2100, cpu_us=100)]
    advice = recommend(figures, max_size=20)
    assert advice.choice == "either"
    assert "because the server is the bottleneck" in advice.headline
    low, high = advice.verdicts
    assert not low.server_bound  # nothing smaller to compare with
    assert high.server_bound
    assert "neither mode matters" in high.reason
    assert (
        "the server is the bottleneck: 1.02x the throughput of 4 threads with 4x the "
        "threads, while the client used 0.21 CPU"
    ) in high.reason


def test_server_bottleneck_with_fewer_shared_connections_picks_shared() -> None:
    figures = [*pair(4, 2000, 2050), *pair(64, 2080, 2100, shared_conns=15)]
    advice = recommend(figures, max_size=15)
    assert advice.choice == "shared"
    verdict = advice.verdicts[1]
    assert verdict.server_bound
    assert (
        "15 connections instead of 64; the server is the bottleneck: 1.02x the throughput "
        "of 4 threads with 16x the threads" in verdict.reason
    )


def test_flat_throughput_with_a_busy_client_is_not_the_server() -> None:
    # 1000 µs per request at 2000 requests/s: two cores of client CPU.
    figures = [*pair(4, 2000, 2050, cpu_us=1000), *pair(16, 2080, 2100, cpu_us=1000)]
    advice = recommend(figures, max_size=20)
    assert advice.choice == "either"
    assert not any(v.server_bound for v in advice.verdicts)
    assert "bottleneck" not in advice.paragraph


def test_growing_throughput_is_not_the_server() -> None:
    figures = [*pair(4, 1000, 1000), *pair(16, 3000, 3050)]
    advice = recommend(figures, max_size=20)
    assert not any(v.server_bound for v in advice.verdicts)


@pytest.mark.parametrize(
    "threads, throughput, bound",
    [
        (12, 1390, True),  # 3x the threads, 1.39x the throughput: hardly grew
        (12, 1410, False),  # 1.41x: still scaling
        (7, 1000, False),  # fewer than twice the threads: too close to tell
    ],
)
def test_flat_means_growing_far_less_than_the_threads(
    threads: int, throughput: float, bound: bool
) -> None:
    figures = [*pair(4, 1000, 1000), *pair(threads, throughput, throughput)]
    assert recommend(figures, max_size=20).verdicts[1].server_bound is bound


def test_failed_persistent_loses() -> None:
    figures = [
        fig("shared", 32, 1000),
        fig("persistent", 32, 900, errors=500, first_error="PoolTimeout: waited 30s"),
    ]
    advice = recommend(figures, max_size=15)
    assert advice.choice == "shared"
    assert (
        "persistent failed 500 of 2,300 requests (PoolTimeout: waited 30s)"
        in advice.verdicts[0].reason
    )


def test_failed_shared_loses() -> None:
    figures = [fig("shared", 32, 0.0, requests=0, errors=3), fig("persistent", 32, 900)]
    advice = recommend(figures, max_size=15)
    assert advice.choice == "persistent"
    assert "shared failed 3 of 3 requests" in advice.verdicts[0].reason


def test_both_failed_is_no_answer() -> None:
    figures = [
        fig("shared", 4, 0.0, requests=0, errors=5),
        fig("persistent", 4, 0.0, requests=0, errors=5),
    ]
    advice = recommend(figures, max_size=15)
    assert advice.choice == "none"
    assert advice.verdicts[0].choice == "none"
    assert advice.headline.startswith("No answer")


def test_a_few_errors_do_not_disqualify() -> None:
    figures = [fig("shared", 8, 1000, errors=1), fig("persistent", 8, 1500)]
    assert recommend(figures, max_size=15).choice == "persistent"


def test_overlapping_rounds_are_even() -> None:
    # A 15 % lead, but the rounds of the two modes overlap: within noise.
    figures = [
        fig("shared", 8, 1000, rounds=3, throughput_min=900, throughput_max=1200),
        fig("persistent", 8, 1150, rounds=3, throughput_min=1100, throughput_max=1250),
    ]
    advice = recommend(figures, max_size=15)
    assert advice.verdicts[0].choice == "either"
    assert (
        "(persistent 1,150, shared 1,000 req/s), within the rounds' spread (±15%, ±7%), "
        "with 8 connections against 8." in advice.verdicts[0].reason
    )
    separate = [
        fig("shared", 8, 1000, rounds=3, throughput_min=980, throughput_max=1020),
        fig("persistent", 8, 1150, rounds=3, throughput_min=1130, throughput_max=1170),
    ]
    assert recommend(separate, max_size=15).verdicts[0].choice == "persistent"


def test_depends_on_the_thread_count() -> None:
    figures = [*pair(4, 1000, 1400), *pair(16, 1000, 1300), *pair(64, 980, 1000, shared_conns=15)]
    advice = recommend(figures, max_size=15)
    assert advice.choice == "depends"
    assert [v.choice for v in advice.verdicts] == ["persistent", "persistent", "shared"]
    assert (
        "pick persistent for up to 16 threads (with max_size raised to 16), shared from "
        "64 on" in advice.headline
    )


def test_irregular_verdicts_point_at_noise() -> None:
    figures = [*pair(4, 1400, 1000), *pair(16, 1000, 1400)]
    advice = recommend(figures, max_size=20)
    assert advice.choice == "depends"
    assert "persistent at 16 threads, shared at 4" in advice.headline
    assert "--rounds" in advice.headline


def test_no_figures_for_both_modes() -> None:
    advice = recommend([fig("shared", 4, 100), fig("sqlalchemy", 4, 100)], max_size=10)
    assert advice.choice == "none"
    assert advice.verdicts == ()


def test_other_pools_do_not_change_the_advice() -> None:
    figures = [*pair(16, 1000, 1400), fig("sqlalchemy", 16, 5000)]
    assert recommend(figures, max_size=20).choice == "persistent"


def test_connections_fall_back_to_what_the_pool_opened() -> None:
    figures = [
        fig("shared", 64, 990, server_connections=None, opened=12),
        fig("persistent", 64, 1000, server_connections=None, opened=64),
    ]
    advice = recommend(figures, max_size=15)
    assert advice.choice == "shared"
    assert "12 connections instead of 64" in advice.verdicts[0].reason


def test_the_paragraph_is_the_headline_and_the_reasons() -> None:
    advice = recommend([*pair(4, 1000, 1400), *pair(16, 1000, 1300)], max_size=20)
    assert advice.paragraph == " ".join([advice.headline, *(v.reason for v in advice.verdicts)])
    data = advice.as_dict()
    assert data["choice"] == "persistent"
    assert [v["threads"] for v in data["verdicts"]] == [4, 16]


def test_aggregate_takes_medians_over_rounds() -> None:
    cells = [
        {
            "contender": "shared",
            "threads": 4,
            "throughput": t,
            "requests": 10,
            "errors": e,
            "p50_ms": p,
            "p99_ms": p * 3,
            "wait_p99_ms": 0.1,
            "server_connections": c,
            "opened": c,
            "client_cpu_us": 100.0,
            "bound": 15,
            "first_error": err,
        }
        for t, e, p, c, err in (
            (100.0, 0, 1.0, 4, None),
            (300.0, 1, 3.0, 5, "boom"),
            (200.0, 0, 2.0, 3, None),
        )
    ]
    (f,) = aggregate(cells)
    assert f.throughput == 200.0
    assert (f.throughput_min, f.throughput_max) == (100.0, 300.0)
    assert f.requests == 30 and f.errors == 1
    assert f.p50_ms == 2.0 and f.p99_ms == 6.0
    assert f.server_connections == 5  # the most seen in any round
    assert f.rounds == 3
    assert f.first_error == "boom"


@pytest.mark.parametrize("cpu_us, cores", [(100.0, 0.1), (None, None)])
def test_client_cores(cpu_us: float | None, cores: float | None) -> None:
    f = Figures("shared", 4, 1000.0, requests=1, client_cpu_us=cpu_us)
    assert f.client_cores == cores
