import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from prectr.data.chunks import LogChunks
from prectr.data.schema import SchemaError


def test_chunks_hold_whole_requests_in_time_order_and_never_split_an_instant(tiny_world):
    with LogChunks(tiny_world, chunk_rows=2_000) as log:
        time = log.requests["timestamp"].cast(pa.int64()).to_numpy()
        assert (np.diff(time) >= 0).all() and log.chunks > 10
        cuts = log.bounds[1:-1]
        assert (time[cuts - 1] < time[cuts]).all()
        seen = 0
        for requests, impressions in log:
            assert pc.all(pc.is_in(impressions["request_id"], requests["request_id"])).as_py()
            seen += impressions.num_rows
        total = pq.read_table(tiny_world / "impressions", columns=["request_id"]).num_rows
        assert seen == total
    assert not log.scratch.exists()


def test_only_the_requests_ids_and_times_are_held_and_their_other_columns_read_back(tiny_world):
    """The requests' every column is read back by chunk (a chunk's, or the rows before one),
    as the log holds them in time order; memory holds only their ids and times."""
    whole = pq.read_table(tiny_world / "requests.parquet")
    whole = whole.take(np.argsort(whole["timestamp"].cast(pa.int64()).to_numpy(), kind="stable"))
    with LogChunks(tiny_world, chunk_rows=2_000) as log:
        assert log.requests.column_names == ["request_id", "timestamp"]
        assert pa.concat_tables(log.chunk(k)[0] for k in range(log.chunks)).equals(whole)
        assert log.request_rows().equals(whole)
        stop = int(log.bounds[3]) + 7  # inside the fourth chunk
        assert log.request_rows(stop, ["user_id"]).equals(whole.select(["user_id"]).slice(0, stop))


def test_a_problem_in_a_chunk_names_the_log_file_and_row(tiny_world, tmp_path):
    log = tmp_path / "log"
    (log / "impressions").mkdir(parents=True)
    for name in ("items", "requests"):
        pq.write_table(pq.read_table(tiny_world / f"{name}.parquet"), log / f"{name}.parquet")
    impressions = pq.read_table(tiny_world / "impressions")
    first, second = impressions.slice(0, 70_000), impressions.slice(70_000)
    unexposed = np.flatnonzero(second["position"].is_null().to_numpy(zero_copy_only=False))
    row = int(unexposed[5])
    click = second["click"].to_pylist()
    click[row] = 1
    second = second.set_column(second.column_names.index("click"), "click",
                               pa.array(click, pa.int8()))  # fmt: skip
    pq.write_table(first, log / "impressions" / "a.parquet")
    pq.write_table(second, log / "impressions" / "b.parquet")
    with pytest.raises(SchemaError) as raised:
        LogChunks(log, chunk_rows=5_000)
    text = str(raised.value)
    assert "b.parquet" in text and f"row {row}:" in text
    assert "click on an unexposed candidate" in text


def test_requests_out_of_time_order_are_put_in_it_ties_in_the_logs_order(tiny_world, tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    for name in ("items", "impressions"):
        source = tiny_world / (f"{name}.parquet" if name == "items" else name)
        pq.write_table(pq.read_table(source), log / f"{name}.parquet")
    requests = pq.read_table(tiny_world / "requests.parquet")
    shuffled = requests.take(np.random.default_rng(0).permutation(requests.num_rows))
    pq.write_table(shuffled, log / "requests.parquet")
    with LogChunks(log, chunk_rows=2_000) as chunks, LogChunks(tiny_world, 2_000) as ordered:
        assert chunks.requests["timestamp"].equals(ordered.requests["timestamp"])
        assert np.array_equal(chunks.bounds, ordered.bounds)
        time = shuffled["timestamp"].cast(pa.int64()).to_numpy()
        order = np.argsort(time, kind="stable")
        assert chunks.requests["request_id"].equals(shuffled["request_id"].take(order))
