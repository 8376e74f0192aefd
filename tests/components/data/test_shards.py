"""Shard writing and the rank split: disjoint shards, equal step counts, every key once."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from mmflow.components.data.datasets import Sample
from mmflow.components.data.shards import ShardReader, load_manifest, plan_rank, write_shards
from mmflow.engine import InputDataError


def samples(n: int, classes: int = 3) -> list[Sample]:
    rng = np.random.default_rng(0)
    return [Sample(f"k{i:05d}", {"a": rng.normal(size=4).astype(np.float32), "b": np.full(2, i, np.float32)},
                   i % classes) for i in range(n)]


@pytest.fixture
def shards(tmp_path):
    def make(n: int, per_shard: int):
        out = tmp_path / f"s{n}-{per_shard}"
        write_shards(samples(n), out, per_shard, num_classes=3)
        return out
    return make


def test_manifest_lists_keys_counts_classes_and_digest(shards):
    manifest = load_manifest(shards(10, 4))
    assert [s["count"] for s in manifest["shards"]] == [4, 4, 2]
    assert [k for s in manifest["shards"] for k in s["keys"]] == [f"k{i:05d}" for i in range(10)]
    assert manifest["num_samples"] == 10 and manifest["class_histogram"] == [4, 3, 3]
    assert manifest["modalities"] == {"a": {"shape": [4], "dtype": "float32"}, "b": {"shape": [2], "dtype": "float32"}}
    assert len(manifest["digest"]) == 64


def keys_per_rank(folder, world, epoch=0, uneven="pad"):
    readers = [ShardReader(folder, rank=r, world_size=world, seed=3, uneven=uneven) for r in range(world)]
    return [[s["__key__"] for s in reader.samples(epoch)] for reader in readers]


@pytest.mark.parametrize("world", [1, 2, 4])
@pytest.mark.parametrize("epoch", [0, 1])
def test_even_split_reads_every_key_exactly_once(shards, world, epoch):
    folder = shards(64, 8)  # 8 shards
    per_rank = keys_per_rank(folder, world, epoch)
    every = [k for keys in per_rank for k in keys]
    assert collections.Counter(every) == collections.Counter(k for s in load_manifest(folder)["shards"] for k in s["keys"])
    assert len({len(keys) for keys in per_rank}) == 1
    shard_sets = [set(plan_rank(load_manifest(folder), r, world, epoch=epoch, seed=3).shards) for r in range(world)]
    assert sum(len(s) for s in shard_sets) == len(set().union(*shard_sets))  # disjoint


def test_uneven_split_pads_and_reports(shards):
    folder = shards(50, 8)  # shards of 8,8,8,8,8,8,2 over 2 ranks
    manifest = load_manifest(folder)
    plans = [plan_rank(manifest, r, 2, seed=3, uneven="pad") for r in range(2)]
    assert plans[0].num_samples == plans[1].num_samples
    per_rank = keys_per_rank(folder, 2)
    assert len(per_rank[0]) == len(per_rank[1]) == plans[0].num_samples
    every = collections.Counter(k for keys in per_rank for k in keys)
    assert set(every) == {f"k{i:05d}" for i in range(50)}  # nothing lost
    assert sum(every.values()) - 50 == plans[0].padded > 0  # the repeats are what was reported


def test_uneven_split_drops_and_reports(shards):
    folder = shards(50, 8)
    plans = [plan_rank(load_manifest(folder), r, 2, seed=3, uneven="drop") for r in range(2)]
    per_rank = keys_per_rank(folder, 2, uneven="drop")
    assert len(per_rank[0]) == len(per_rank[1]) == plans[0].num_samples
    every = [k for keys in per_rank for k in keys]
    assert len(set(every)) == len(every) == 50 - plans[0].dropped


def test_fewer_shards_than_workers(shards):
    manifest = load_manifest(shards(8, 8))
    assert plan_rank(manifest, 1, 2, uneven="pad").num_samples == 8
    with pytest.raises(ValueError, match="1 shard\\(s\\) for 2 workers"):
        plan_rank(manifest, 0, 2, uneven="drop")


def test_batches_have_equal_count_and_shapes(shards):
    folder = shards(50, 8)
    for rank in range(2):
        reader = ShardReader(folder, rank=rank, world_size=2)
        batches = list(reader.batches(0, batch_size=7))
        assert len(batches) == reader.steps_per_epoch(7)
        features, labels = batches[0]
        assert features["a"].shape == (7, 4) and features["b"].shape == (7, 2) and not labels.dtype.is_floating_point


def test_shuffle_changes_order_between_epochs_but_not_content(shards):
    folder = shards(64, 8)
    reader = ShardReader(folder, seed=1)
    first, second = [[s["__key__"] for s in reader.samples(e)] for e in (0, 1)]
    assert first != second and sorted(first) == sorted(second)
    fixed = ShardReader(folder, shuffle=False)
    assert [s["__key__"] for s in fixed.samples(0)] == [f"k{i:05d}" for i in range(64)]


@pytest.mark.parametrize("array", [np.arange(6, dtype=np.float32).reshape(2, 3), np.asfortranarray(np.eye(3)),
                                   np.array(7, dtype=np.int64), np.zeros((0, 4), np.uint8),
                                   np.arange(24, dtype=np.float16).reshape(2, 3, 4)])
def test_decode_npy_matches_numpy(array):
    import io

    from mmflow.components.data.shards import decode_npy

    buf = io.BytesIO()
    np.save(buf, array)
    decoded = decode_npy(buf.getvalue())
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)
    with pytest.raises(ValueError, match="not a .npy"):
        decode_npy(b"garbage")


def test_loader_processes_yield_the_same_batches_in_the_same_order(shards, workers=2):
    folder = shards(23, 5)  # 5 shards over 2 ranks: rank 1 is padded
    for rank in range(2):
        single = ShardReader(folder, rank=rank, world_size=2, seed=1)
        parallel = ShardReader(folder, rank=rank, world_size=2, seed=1, workers=workers)
        expected = [(f["b"][:, 0].tolist(), y.tolist()) for f, y in single.batches(1, 4)]
        got = [(f["b"][:, 0].tolist(), y.tolist()) for f, y in parallel.batches(1, 4)]
        assert got == expected and len(expected) == 4  # 13 samples per rank


def test_shards_stream_from_the_url_the_manifest_records(cli, write_workflow, tmp_path):
    import functools
    import http.server
    import threading

    served = tmp_path / "published"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        wf = write_workflow(f"""
            name: stream
            executor: inline
            steps:
              data: {{component: data.synthetic, params: {{train_size: 40, test_size: 10}}}}
              shard:
                component: data.shard
                inputs: {{dataset: "${{steps.data.outputs.dataset}}"}}
                params: {{samples_per_shard: 16, url_template: "http://127.0.0.1:{server.server_port}/{{split}}/{{name}}"}}
            """)
        status, out, err = cli("run", wf, "--run-dir", tmp_path / "run")
        assert status == 0, out + err
        local = tmp_path / "run" / "shard" / "outputs" / "train"
        manifest = load_manifest(local)
        assert manifest["shards"][0]["url"] == f"http://127.0.0.1:{server.server_port}/train/shard-000000.tar"
        import shutil

        shutil.copytree(local, served / "train")
        for tar in local.glob("*.tar"):
            tar.chmod(0o644)
            tar.unlink()  # only the published copy remains
        keys = [s["__key__"] for s in ShardReader(local, shuffle=False).samples(0)]
        assert keys == [k for s in manifest["shards"] for k in s["keys"]]
    finally:
        server.shutdown()


@pytest.mark.parametrize("template, message", [
    ("pipe:aws s3 cp s3://b/{name} -", "pipe: URLs run shell commands"),
    ("https://host/x'; rm -rf ~; '{name}", "without quotes or spaces"),
    ("https://host/data.tar", "must contain {name}"),
])
def test_unsafe_or_unusable_url_templates_are_refused(cli, write_workflow, template, message):
    wf = write_workflow(f"""
        name: stream
        steps:
          data: {{component: data.synthetic}}
          shard:
            component: data.shard
            inputs: {{dataset: "${{steps.data.outputs.dataset}}"}}
            params: {{url_template: "{template}"}}
        """)
    status, _, err = cli("validate", wf)
    assert status == 2 and message in err and "wf.yaml:7: steps.shard.params.url_template" in err


def truncate_at_sample(tar, sample: int, inside: bool, as_written: bool = True) -> None:
    """Cut `tar` where sample number `sample` starts (tarfile then reads silently short), or after
    that sample's first member (an incomplete sample); `as_written`: the manifest records the cut tar's
    SHA-256 (cut while being written), so only reading it shows the damage."""
    import tarfile

    with tarfile.open(tar) as archive:
        members = archive.getmembers()
    keys = list(dict.fromkeys(m.name.split(".")[0] for m in members))
    first = next(i for i, m in enumerate(members) if m.name.split(".")[0] == keys[sample])
    cut = members[first + 1 if inside else first].offset
    tar.chmod(0o644)
    tar.write_bytes(tar.read_bytes()[:cut])
    if as_written:
        record_as_written(tar)


def record_as_written(tar) -> None:
    """Put the tar's SHA-256 as it is now in its manifest: damaged while being written, not after."""
    import hashlib
    import json

    manifest = json.loads((tar.parent / "manifest.json").read_text())
    entry = next(s for s in manifest["shards"] if s["name"] == tar.name)
    entry["sha256"] = hashlib.sha256(tar.read_bytes()).hexdigest()
    (tar.parent / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("inside", [False, True], ids=["clean cut", "incomplete sample"])
def test_a_truncated_shard_fails_naming_it_or_is_skipped_and_counted(shards, inside):
    folder = shards(20, 10)
    tar = folder / "shard-000001.tar"
    truncate_at_sample(tar, 4, inside)
    with pytest.raises(InputDataError, match=f"{tar}: truncated"):
        list(ShardReader(folder, shuffle=False).samples(0))
    with pytest.raises(InputDataError, match=f"^{tar}: truncated"):  # one line, from a loader process too
        list(ShardReader(folder, shuffle=False, workers=2).batches(0, 4))
    reader = ShardReader(folder, shuffle=False, on_error="skip")
    keys = [s["__key__"] for s in reader.samples(0)]
    assert len(keys) == 20 and reader.corrupt_reads == 1  # padded back to the planned count; one tar read short
    assert set(keys) >= {f"k{i:05d}" for i in range(14)} and not set(keys) & {f"k{i:05d}" for i in range(15, 20)}


def test_evaluation_scores_each_readable_sample_once(shards):
    folder = shards(12, 6)
    truncate_at_sample(folder / "shard-000000.tar", 1, inside=True)  # 1 of its 6 samples readable
    reader = ShardReader(folder, shuffle=False, on_error="skip", pad=False)
    keys = [s["__key__"] for s in reader.samples(0)]
    assert keys == [f"k{i:05d}" for i in [0, *range(6, 12)]] and reader.corrupt_reads == 1
    training = ShardReader(folder, shuffle=False, on_error="skip")  # padded: the cut tar is read twice, counted once
    assert [s["__key__"] for s in training.samples(0)] == keys + keys[:5] and training.corrupt_reads == 1


def overwrite_label(tar, key: str, label: int) -> None:
    """Change one sample's class in place: the same size, so only the contents differ."""
    data = bytearray(tar.read_bytes())
    import tarfile

    with tarfile.open(tar) as archive:
        member = archive.getmember(f"{key}.cls")
    data[member.offset_data:member.offset_data + member.size] = str(label).encode().ljust(member.size)[:member.size]
    tar.chmod(0o644)
    tar.write_bytes(bytes(data))


def test_a_shard_changed_in_place_is_refused_or_left_out(shards):
    folder = shards(20, 10)
    tar = folder / "shard-000001.tar"
    size = tar.stat().st_size
    overwrite_label(tar, "k00012", 2)
    assert tar.stat().st_size == size
    with pytest.raises(InputDataError, match=f"^{tar}: the shard changed after it was written"):
        list(ShardReader(folder, shuffle=False).samples(0))
    reader = ShardReader(folder, shuffle=False, on_error="skip", pad=False)
    keys = [s["__key__"] for s in reader.samples(0)]
    assert keys == [f"k{i:05d}" for i in range(10)] and reader.corrupt_reads == 1
    other = shards(10, 5)
    (other / "shard-000000.tar").unlink()  # not read in this process yet: the check finds it missing
    with pytest.raises(InputDataError, match="shard-000000.tar: unreadable shard \\(No such file or directory\\)"):
        list(ShardReader(other, shuffle=False).samples(0))


def test_a_shard_is_hashed_once_per_process_unless_asked_every_epoch(shards):
    folder = shards(20, 10)
    reader, every_epoch = (ShardReader(folder, shuffle=False, verify=v) for v in ("once", "every_epoch"))
    assert len(list(reader.samples(0))) == len(list(every_epoch.samples(0))) == 20
    overwrite_label(folder / "shard-000001.tar", "k00012", 2)  # changed during training
    labels = {s["__key__"]: int(s["cls"]) for s in reader.samples(1)}
    assert labels["k00012"] == 2  # read as it is now: the check was made for the first epoch
    with pytest.raises(InputDataError, match="changed after it was written"):
        list(every_epoch.samples(1))


@pytest.mark.parametrize("name", ["../../outside.tar", "/etc/passwd", "..", 7])
def test_a_manifest_names_only_files_of_its_own_folder(shards, name):
    import json

    folder = shards(4, 2)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["shards"][1]["name"] = name
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputDataError, match=f"manifest.json: shard name {name!r} is not a file name"):
        ShardReader(folder)
    (folder / "manifest.json").write_text('{"shards": [')
    with pytest.raises(InputDataError, match="manifest.json: not a shard manifest"):
        load_manifest(folder)
