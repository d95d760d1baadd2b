"""The benchmarks' arithmetic (bench/ is run by `make bench`, never by the suite)."""

import math

from bench.clients import Reply
from bench.stats import Repeated, percentile


def test_percentiles_interpolate_between_closest_ranks():
    values = [5, 1, 4, 2, 3]
    assert percentile(values, 0) == 1
    assert percentile(values, 50) == 3
    assert percentile(values, 100) == 5
    assert percentile(values, 99) == 4.96
    assert math.isnan(percentile([], 50))


def test_model_tokens_of_a_frame_arrive_with_it():
    reply = Reply(sent_at=10.0)
    reply.add("t1 ", at=10.1)
    reply.add("t2 t3 t4 ", at=10.2)
    assert reply.tokens == 4
    assert round(reply.ttft_ms(), 6) == 100
    assert [round(g, 6) for g in reply.token_gaps_ms()] == [100, 0, 0]
    assert [round(g, 6) for g in reply.frame_gaps_ms()] == [100]


def test_repeats_report_their_median_and_range():
    assert Repeated([3, 1, 2]).format(1, " ms") == "2.0 ms (1.0-3.0)"
    assert Repeated([7]).format(0) == "7"


def test_the_benchmark_runner_loads():
    """`make bench` is not run by the suite; its imports (of the test helpers, too) are."""
    import bench.run

    assert callable(bench.run.cli)
