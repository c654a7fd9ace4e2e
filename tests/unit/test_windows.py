"""1 s per-edge windows: partials, merging, histogram bounds, quantiles, live finalization."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshloop.accesslog.schema import ACCESS_LOG_SCHEMA, check_frame
from meshloop.accesslog.window_feed import FinalWindows, WindowAggregator
from meshloop.accesslog.windows import (
    BUCKET_COLUMNS,
    HISTOGRAM_BOUNDS_MS,
    HISTOGRAM_BOUNDS_NS,
    KEY_COLUMNS,
    WINDOW_NS,
    WINDOW_SCHEMA,
    OpenWindows,
    merge_partials,
    quantile_from_buckets,
    step_windows,
    window_partials,
)

S = WINDOW_NS
T0 = 1_790_000_000 * S  # a whole second, 2026-09-21
MS = 1_000_000


# --- frames ---------------------------------------------------------------------------
def _default(name: str, dtype: pl.DataType, n: int) -> pl.Series:
    if isinstance(dtype, pl.List):
        return pl.Series(name, [[]] * n, dtype=dtype)
    if dtype == pl.String:
        return pl.Series(name, [""] * n, dtype=dtype)
    value = None if name.startswith("TimeTo") else 0
    return pl.Series(name, [value] * n, dtype=dtype)


def access_logs(columns: Mapping[str, Sequence[Any] | pl.Series], n: int | None = None) -> pl.DataFrame:
    """An ``access_logs`` frame: the given columns, every other column at its default.

    ``Timestamp`` may be given as ints (ns since the epoch); ``AccessLogType`` defaults
    to ``DownstreamEnd``.
    """
    if n is None:
        n = len(next(iter(columns.values())))
    given_ = dict(columns)
    given_.setdefault("AccessLogType", ["DownstreamEnd"] * n)
    out = []
    for name, dtype in ACCESS_LOG_SCHEMA.items():
        if name not in given_:
            out.append(_default(name, dtype, n))
        elif name == "Timestamp":
            out.append(pl.Series(name, given_[name]).cast(pl.Int64).cast(dtype))
        else:
            out.append(pl.Series(name, given_[name]).cast(dtype))
    return check_frame(pl.DataFrame(out))


def random_access_logs(n: int, seed: int = 0, start_ns: int = T0, span_s: int = 5) -> pl.DataFrame:
    """``n`` pseudo-random entries over ``span_s`` seconds (polars hashes, no Python loop):
    a few dozen edges, every response class, flags, HTTP and TCP, periodic entries,
    durations from 0 to ~65 s."""

    def r(k: int) -> pl.Expr:
        return pl.int_range(n, dtype=pl.UInt64).hash(seed * 1000 + k)

    def pick(k: int, values: list[str]) -> pl.Expr:
        return pl.lit(pl.Series(values)).gather(r(k) % len(values))

    codes = ["200"] * 12 + ["201", "204", "302", "404", "403", "429", "500", "503", "504", "0"]
    made = pl.select(
        Timestamp=(r(1) % (span_s * S) + start_ns).cast(pl.Int64),
        AccessLogType=pick(
            2, ["DownstreamEnd"] * 17 + ["DownstreamPeriodic", "TcpConnectionEnd", "TcpPeriodic"]
        ),
        ReporterNamespace=pick(3, ["default", "shop"]),
        ReporterWorkload=pick(4, ["reviews-v1", "reviews-v2", "productpage-v1"]),
        SourceNamespace=pick(5, ["default", "shop"]),
        SourceWorkload=pick(6, ["productpage", "gateway", "ratings"]),
        DestinationService=pick(7, ["reviews.default.svc.cluster.local", "ratings.shop.svc.cluster.local"]),
        DestinationSubset=pick(8, ["", "v1", "v2"]),
        UpstreamCluster=pick(9, ["outbound|9080|v1|reviews.default.svc.cluster.local", "inbound|9080||"]),
        Duration=(r(10) % 1_000_000) * pl.lit(2, pl.UInt64).pow(r(11) % 17),
        ResponseCode=pick(12, codes).cast(pl.UInt16),
        ResponseFlags=pick(13, ["", "", "", "", "UF", "UF,URX", "DC"])
        .str.split(",")
        .list.eval(pl.element().filter(pl.element() != "")),
        RequestHeadersBytes=r(14) % 2000,
        RequestBodyBytes=r(15) % 100_000,
        ResponseHeadersBytes=r(16) % 2000,
        ResponseBodyBytes=r(17) % 1_000_000,
        TcpReceivedBytes=r(18) % 10,
        TcpSentBytes=r(19) % 10,
    )
    return access_logs({name: made.get_column(name) for name in made.columns}, n)


def direct_totals(df: pl.DataFrame) -> dict[str, int]:
    """Totals over the final entries of a frame, straight from the raw columns (oracle)."""
    final = df.filter(pl.col("AccessLogType").is_in(["DownstreamEnd", "TcpConnectionEnd"]))
    code = pl.col("ResponseCode").cast(pl.Int64)
    row = final.select(
        Requests=pl.len(),
        Errors5xx=((code >= 500) & (code < 600)).sum(),
        Errors4xx=((code >= 400) & (code < 500)).sum(),
        BytesIn=(
            pl.col("RequestHeadersBytes") + pl.col("RequestBodyBytes") + pl.col("TcpReceivedBytes")
        ).sum(),
        BytesOut=(
            pl.col("ResponseHeadersBytes") + pl.col("ResponseBodyBytes") + pl.col("TcpSentBytes")
        ).sum(),
        DurationSumNs=pl.col("Duration").sum(),
    ).row(0, named=True)
    return {k: int(v or 0) for k, v in row.items()}


def partial_totals(partials: pl.DataFrame) -> dict[str, int]:
    names = ["Requests", "Errors5xx", "Errors4xx", "BytesIn", "BytesOut", "DurationSumNs"]
    row = partials.select(pl.col(names).sum()).row(0, named=True)
    return {k: int(v or 0) for k, v in row.items()}


# --- bounds and buckets ----------------------------------------------------------------
def test_bounds_are_log_scale_from_half_a_millisecond_to_65_seconds() -> None:
    assert len(HISTOGRAM_BOUNDS_MS) == 69 and len(BUCKET_COLUMNS) == 70
    assert HISTOGRAM_BOUNDS_MS[0] == 0.5 and HISTOGRAM_BOUNDS_MS[4] == 1.0
    assert HISTOGRAM_BOUNDS_MS[-1] == 65536.0
    ratios = [b / a for a, b in zip(HISTOGRAM_BOUNDS_MS, HISTOGRAM_BOUNDS_MS[1:], strict=False)]
    assert all(1.18 < r <= 1.19 for r in ratios)
    assert HISTOGRAM_BOUNDS_NS == tuple(round(b * MS) for b in HISTOGRAM_BOUNDS_MS)
    assert BUCKET_COLUMNS[0] == "B00" and BUCKET_COLUMNS[-1] == "B69"


B = HISTOGRAM_BOUNDS_NS


@pytest.mark.parametrize(
    ("duration_ns", "bucket"),
    [
        (0, 0),
        (1, 0),
        (B[0], 0),
        (B[0] + 1, 1),
        (B[1], 1),
        (B[1] + 1, 2),
        (B[4], 4),
        (1 * MS, 4),
        (B[33] - 1, 33),
        (B[33], 33),
        (B[33] + 1, 34),
        (B[68], 68),
        (B[68] + 1, 69),
        (3600 * S, 69),
    ],
)
def test_bucket_upper_bounds_are_inclusive(duration_ns: int, bucket: int) -> None:
    df = access_logs({"Timestamp": [T0], "Duration": [duration_ns]})
    partials, late = window_partials(df, T0, 10**15)
    counts = partials.select(BUCKET_COLUMNS).row(0)
    assert late == 0
    assert counts == tuple(1 if i == bucket else 0 for i in range(70))


# --- keys, sums, lateness ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "flags", "klass", "has_flags", "e5", "e4"),
    [
        (200, [], 2, False, 0, 0),
        (0, ["UF"], 0, True, 0, 0),  # no response (connection failure, TCP)
        (101, [], 1, False, 0, 0),
        (302, [], 3, False, 0, 0),
        (404, [], 4, False, 0, 1),
        (499, ["DC"], 4, True, 0, 1),
        (500, [], 5, False, 1, 0),
        (503, ["UO", "URX"], 5, True, 1, 0),
        (599, [], 5, False, 1, 0),
        (600, [], 6, False, 0, 0),
        (65535, [], 9, False, 0, 0),
    ],
)
def test_response_class_and_flag_presence(
    code: int, flags: list[str], klass: int, has_flags: bool, e5: int, e4: int
) -> None:
    df = access_logs({"Timestamp": [T0], "ResponseCode": [code], "ResponseFlags": [flags]})
    partials, _ = window_partials(df, T0, S)
    row = partials.row(0, named=True)
    assert (row["ResponseClass"], row["HasResponseFlags"]) == (klass, has_flags)
    assert (row["Requests"], row["Errors5xx"], row["Errors4xx"]) == (1, e5, e4)


def test_one_row_per_window_and_edge_with_sums() -> None:
    df = access_logs(
        {
            "Timestamp": [T0, T0 + 300 * MS, T0 + 900 * MS, T0 + 100 * MS, T0 + 2 * S],
            "Duration": [10 * MS, 20 * MS, 200 * MS, 5 * MS, 1 * MS],
            "DestinationService": ["a", "a", "a", "b", "a"],
            "RequestBodyBytes": [1, 2, 4, 8, 16],
            "RequestHeadersBytes": [100, 100, 100, 100, 100],
            "ResponseBodyBytes": [10, 20, 40, 80, 160],
            "TcpSentBytes": [0, 0, 0, 1000, 0],
        }
    )
    partials, late = window_partials(df, T0 + 3 * S, 10 * S)
    got = partials.select(
        "Window", "DestinationService", "Requests", "BytesIn", "BytesOut", "DurationSumNs"
    ).rows()
    w = [pl.Series([T0 + k * S]).cast(pl.Datetime("ns")).item() for k in range(3)]
    assert late == 0
    assert got == [
        (w[0], "a", 2, 203, 30, 30 * MS),
        (w[0], "b", 1, 108, 1080, 5 * MS),
        (w[1], "a", 1, 104, 40, 200 * MS),  # started in second 0, completed in second 1
        (w[2], "a", 1, 116, 160, 1 * MS),
    ]
    assert partials.schema == WINDOW_SCHEMA


def test_entries_that_do_not_end_a_request_are_skipped() -> None:
    kinds = [
        "DownstreamEnd",
        "DownstreamPeriodic",
        "DownstreamStart",
        "TcpPeriodic",
        "TcpConnectionEnd",
        "UpstreamEnd",
        "NotSet",
    ]
    df = access_logs({"Timestamp": [T0] * len(kinds), "AccessLogType": kinds})
    partials, late = window_partials(df, T0, S)
    assert (partial_totals(partials)["Requests"], late) == (4, 0)


@pytest.mark.parametrize(
    ("arrival", "lateness", "late"),
    [
        (T0 + 2 * S, 0, 1),  # completed at T0 + 1 s
        (T0 + 1 * S, 0, 0),  # arrival == completion
        (T0 + 3 * S, 2 * S, 0),  # exactly the lateness: on time
        (T0 + 3 * S + 1, 2 * S, 1),  # one ns more: late
        (T0, 0, 0),  # arrival before completion (clock skew): on time
    ],
)
def test_late_is_measured_from_completion(arrival: int, lateness: int, late: int) -> None:
    df = access_logs({"Timestamp": [T0], "Duration": [S]})
    partials, got = window_partials(df, arrival, lateness)
    assert (got, partials.height) == (late, 1 - late)


def test_arrival_per_row() -> None:
    df = access_logs(
        {"Timestamp": [T0, T0, T0, T0], "AccessLogType": ["DownstreamEnd", "DownstreamPeriodic"] * 2}
    )
    arrivals = pl.Series([T0 + 5 * S, T0 + 5 * S, T0, T0])
    partials, late = window_partials(df, arrivals, S)
    assert (late, partial_totals(partials)["Requests"]) == (1, 1)
    with pytest.raises(ValueError, match="3 values for 4 rows"):
        window_partials(df, arrivals.head(3), S)
    with pytest.raises(ValueError, match="lateness_ns"):
        window_partials(df, T0, -1)


def test_random_frame_totals_match_direct_aggregation() -> None:
    df = random_access_logs(20_000, seed=3)
    partials, late = window_partials(df, T0 + 100 * S, 1000 * S)
    assert late == 0
    assert partial_totals(partials) == direct_totals(df)
    assert partials.select(pl.sum_horizontal(BUCKET_COLUMNS) == pl.col("Requests")).to_series().all()
    assert partials.select(KEY_COLUMNS).is_unique().all()
    assert partials.equals(partials.sort(KEY_COLUMNS))


# --- properties -------------------------------------------------------------------------
_entry = st.fixed_dictionaries(
    {
        "Timestamp": st.integers(T0, T0 + 4 * S),
        "Duration": st.one_of(
            st.integers(0, 70 * S), st.sampled_from(B), st.sampled_from(B).map(lambda b: b + 1)
        ),
        "ResponseCode": st.sampled_from([0, 200, 204, 404, 429, 500, 503]),
        "ResponseFlags": st.sampled_from([[], ["UF"], ["UO", "URX"]]),
        "SourceWorkload": st.sampled_from(["a", "b"]),
        "DestinationService": st.sampled_from(["x", "y"]),
        "AccessLogType": st.sampled_from(["DownstreamEnd", "DownstreamEnd", "DownstreamPeriodic"]),
        "RequestBodyBytes": st.integers(0, 10**9),
        "ResponseBodyBytes": st.integers(0, 10**9),
        "arrival": st.integers(T0, T0 + 80 * S),
    }
)


def _frame(entries: list[dict[str, Any]]) -> tuple[pl.DataFrame, pl.Series]:
    columns = {k: [e[k] for e in entries] for k in _entry_keys if k != "arrival"}
    return access_logs(columns, len(entries)), pl.Series([e["arrival"] for e in entries], dtype=pl.Int64)


_entry_keys = [
    "Timestamp",
    "Duration",
    "ResponseCode",
    "ResponseFlags",
    "SourceWorkload",
    "DestinationService",
    "AccessLogType",
    "RequestBodyBytes",
    "ResponseBodyBytes",
    "arrival",
]
_lateness = st.sampled_from([0, S // 2, 5 * S, 100 * S])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_entry, min_size=1, max_size=40), _lateness)
def test_requests_are_the_final_entries_not_late(entries: list[dict[str, Any]], lateness: int) -> None:
    df, arrival = _frame(entries)
    partials, late = window_partials(df, arrival, lateness)
    ends = [e["Timestamp"] + e["Duration"] for e in entries]
    final = [e["AccessLogType"] == "DownstreamEnd" for e in entries]
    expect_late = sum(
        f and e["arrival"] - end > lateness for e, end, f in zip(entries, ends, final, strict=True)
    )
    assert late == expect_late
    on_time = pl.Series(
        [f and e["arrival"] - end <= lateness for e, end, f in zip(entries, ends, final, strict=True)]
    )
    assert partial_totals(partials) == direct_totals(df.filter(on_time))
    assert partials.select(pl.sum_horizontal(BUCKET_COLUMNS) == pl.col("Requests")).to_series().all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_entry, min_size=1, max_size=40), _lateness, st.data())
def test_partials_of_any_split_merge_to_the_partials_of_the_whole(
    entries: list[dict[str, Any]], lateness: int, data: st.DataObject
) -> None:
    df, arrival = _frame(entries)
    whole, whole_late = window_partials(df, arrival, lateness)
    order = data.draw(st.permutations(range(len(entries))))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(entries)), max_size=4)))
    bounds = [0, *cuts, len(entries)]
    pieces = []
    late = 0
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        idx = pl.Series(order[lo:hi], dtype=pl.UInt32)
        part, part_late = window_partials(df[idx], arrival.gather(idx), lateness)
        pieces.append(part)
        late += part_late
    grouping = data.draw(st.sampled_from(["flat", "nested"]))
    if grouping == "flat":
        merged = merge_partials(pieces)
    else:  # merge pairwise, in reverse: associativity and commutativity
        merged = merge_partials([])
        for piece in reversed(pieces):
            merged = merge_partials([piece, merged])
    assert late == whole_late
    assert merged.equals(whole)


def test_merge_of_nothing_is_empty_with_the_schema() -> None:
    assert merge_partials([]).schema == WINDOW_SCHEMA
    assert merge_partials([merge_partials([])]).height == 0


# --- quantiles -------------------------------------------------------------------------
def _counts(durations_ns: list[int]) -> list[int]:
    df = access_logs({"Timestamp": [T0] * len(durations_ns), "Duration": durations_ns})
    partials, _ = window_partials(df, T0, 10**15)
    return [int(v) for v in partials.select(pl.col(BUCKET_COLUMNS).sum()).row(0)]


def _bucket_range_ms(value_ms: float) -> tuple[float, float]:
    index = next((i for i, b in enumerate(HISTOGRAM_BOUNDS_MS) if value_ms <= b), 69)
    low = HISTOGRAM_BOUNDS_MS[index - 1] if index else 0.0
    high = HISTOGRAM_BOUNDS_MS[index] if index < 69 else low
    return low, high


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(st.integers(0, 70 * S), st.integers(0, 5 * MS), st.sampled_from(B)), min_size=1, max_size=60
    ),
    st.sampled_from([0.0, 0.01, 0.5, 0.9, 0.99, 0.999, 1.0]),
)
def test_quantile_is_in_the_bucket_of_the_exact_quantile(durations: list[int], q: float) -> None:
    estimate = quantile_from_buckets(_counts(durations), q)
    ordered = sorted(durations)
    exact_ms = ordered[max(math.ceil(q * len(ordered)) - 1, 0)] / MS  # nearest rank
    low, high = _bucket_range_ms(exact_ms)
    assert low <= estimate <= high
    if exact_ms > HISTOGRAM_BOUNDS_MS[0] and exact_ms <= HISTOGRAM_BOUNDS_MS[-1]:
        assert abs(estimate - exact_ms) <= 0.19 * exact_ms


@pytest.mark.parametrize(
    ("counts", "q", "expected"),
    [
        ({}, 0.5, math.nan),
        ({0: 4}, 0.5, 0.25),
        ({0: 4}, 1.0, 0.5),
        ({4: 1, 5: 1}, 0.5, 1.0),  # rank 1 reaches bucket 4 exactly: its upper bound
        ({4: 2}, 0.25, 0.841 + (1.0 - 0.841) * 0.25),
        ({8: 1}, 0.0, 1.682),  # q = 0: lower bound of the first non-empty bucket
        ({69: 3}, 0.99, 65536.0),  # +Inf bucket answers its lower bound
    ],
)
def test_quantile_table(counts: dict[int, int], q: float, expected: float) -> None:
    full = [counts.get(i, 0) for i in range(70)]
    got = quantile_from_buckets(full, q)
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


def test_quantile_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="70 bucket counts"):
        quantile_from_buckets([1, 2], 0.5)
    with pytest.raises(ValueError, match="within"):
        quantile_from_buckets([0] * 70, 1.5)


# --- live finalization -----------------------------------------------------------------
def _partials_at(*entries: tuple[int, str]) -> pl.DataFrame:
    """Partials of one request per (completion second offset, destination)."""
    df = access_logs(
        {"Timestamp": [T0 + k * S for k, _ in entries], "DestinationService": [d for _, d in entries]}
    )
    return window_partials(df, T0, 10**15)[0]


def _seconds(frame: pl.DataFrame) -> list[tuple[int, str, int]]:
    return [
        ((w - T0) // S, d, r)
        for w, d, r in frame.select(pl.col("Window").cast(pl.Int64), "DestinationService", "Requests").rows()
    ]


def test_step_finalizes_after_window_end_plus_lateness() -> None:
    state = OpenWindows()
    step = step_windows(state, _partials_at((0, "a"), (1, "a"), (0, "b")), T0 + 2 * S, 2 * S)
    assert step.final.height == 0 and step.state.final_before_ns == T0
    step = step_windows(step.state, _partials_at((0, "a")), T0 + 3 * S - 1, 2 * S)
    assert step.final.height == 0  # window 0 ends at T0 + 1 s: final at T0 + 3 s
    step = step_windows(step.state, _partials_at(), T0 + 3 * S, 2 * S)
    assert _seconds(step.final) == [(0, "a", 2), (0, "b", 1)]
    step = step_windows(step.state, _partials_at((0, "a"), (1, "b")), T0 + 3 * S, 2 * S)
    assert (step.final.height, step.late_requests) == (0, 1)
    step = step_windows(step.state, _partials_at(), T0 + S, 2 * S)  # clock went back
    assert step.state.final_before_ns == T0 + S and step.final.height == 0
    step = step_windows(step.state, _partials_at(), T0 + 60 * S, 2 * S)
    assert _seconds(step.final) == [(1, "a", 1), (1, "b", 1)]
    assert step.state.frame.height == 0


def test_a_step_merges_only_the_windows_its_batch_touches() -> None:
    # The live feed's cost per batch must follow the batch, not (open seconds × edges):
    # windows the batch does not touch are carried over as they are, not re-merged.
    step = step_windows(OpenWindows(), _partials_at((0, "a"), (1, "a"), (2, "b")), T0, 60 * S)
    before = step.state
    step = step_windows(before, _partials_at((1, "a"), (1, "b")), T0 + S, 60 * S)
    after = step.state.windows
    assert after[T0] is before.windows[T0] and after[T0 + 2 * S] is before.windows[T0 + 2 * S]
    assert _seconds(after[T0 + S]) == [(1, "a", 2), (1, "b", 1)]
    assert _seconds(before.windows[T0 + S]) == [(1, "a", 1)]  # the old state is a value: unchanged
    assert (step.state.rows, _seconds(step.state.frame)[0]) == (4, (0, "a", 1))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 6), st.sampled_from("ab")), max_size=5), min_size=1, max_size=8
    ),
    st.sampled_from([0, S, 3 * S]),
)
def test_every_window_is_final_exactly_once(batches: list[list[tuple[int, str]]], lateness: int) -> None:
    """Batch i is fed at now = T0 + i s; everything is either final once or late."""
    state, finals, late = OpenWindows(), [], 0
    for i, batch in enumerate(batches):
        step = step_windows(state, _partials_at(*batch), T0 + i * S, lateness)
        state, late = step.state, late + step.late_requests
        finals.append(step.final)
    step = step_windows(state, _partials_at(), T0 + 100 * S, lateness)
    finals.append(step.final)
    final = pl.concat(finals)
    assert final.select(KEY_COLUMNS).is_unique().all()
    total = sum(len(b) for b in batches)
    assert int(final.get_column("Requests").sum() or 0) + late == total
    # Before batch i (i >= 1) the watermark is T0 + (i - 1) s - lateness: entries of
    # earlier seconds are late.
    expected_late = sum(1 for i, b in enumerate(batches) if i for k, _ in b if k < i - 1 - lateness // S)
    assert late == expected_late


async def _next(sub: Any) -> FinalWindows:
    return await asyncio.wait_for(anext(sub), 1)


async def test_aggregator_publishes_in_order_and_counts_late() -> None:
    agg = WindowAggregator(lateness_ns=S)
    sub = agg.subscribe(max_queue=8)
    assert agg.feed(_partials_at((0, "a"), (1, "a")), T0 + S, late_entries=2).height == 0
    first = await _next(sub)  # the watermark moved from 0 to T0: a heartbeat
    assert (first.final_before_ns, first.frame.height) == (T0, 0)
    final = agg.feed(_partials_at((1, "b")), T0 + 2 * S)
    assert _seconds(final) == [(0, "a", 1)]
    item = await _next(sub)
    assert (item.final_before_ns, _seconds(item.frame)) == (T0 + S, [(0, "a", 1)])
    agg.feed(_partials_at((0, "a")), T0 + 2 * S)  # window 0 is already final
    assert _seconds(agg.advance(T0 + 3 * S)) == [(1, "a", 1), (1, "b", 1)]
    assert _seconds((await _next(sub)).frame) == [(1, "a", 1), (1, "b", 1)]
    assert agg.advance(T0 + 3 * S).height == 0  # no watermark move: nothing published
    stats = agg.stats
    assert (stats.late_at_arrival, stats.late_after_final, stats.finalized_rows) == (2, 1, 3)
    assert (stats.open_rows, stats.final_before_ns) == (0, T0 + 2 * S)
    sub.close()
    with pytest.raises(StopAsyncIteration):
        await anext(sub)


async def test_slow_subscriber_drops_oldest_and_does_not_block_others() -> None:
    agg = WindowAggregator(lateness_ns=0)
    slow, fast = agg.subscribe(max_queue=2), agg.subscribe(max_queue=100)
    for k in range(1, 6):
        agg.advance(T0 + k * S)
    assert [(await _next(fast)).final_before_ns for _ in range(5)] == [T0 + k * S for k in range(1, 6)]
    assert slow.dropped == 3 and fast.dropped == 0
    assert [(await _next(slow)).final_before_ns for _ in range(2)] == [T0 + 4 * S, T0 + 5 * S]
    assert agg.stats.subscriber_drops == 3
    slow.close()
    assert agg.stats.subscriber_drops == 3  # still counted after unsubscribing


async def test_close_wakes_a_waiting_subscriber() -> None:
    agg = WindowAggregator(lateness_ns=0)
    async with agg.subscribe(max_queue=1) as sub:
        agg.advance(T0)
        waiter = asyncio.create_task(_drain(sub))
        await asyncio.sleep(0)
        agg.close()
        assert await asyncio.wait_for(waiter, 1) == [T0]
    assert sub.closed
    agg.advance(T0 + S)  # no subscribers: nothing to do, no error


async def _drain(sub: Any) -> list[int]:
    return [item.final_before_ns async for item in sub]
