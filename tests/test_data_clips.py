"""Videos and animations in a dataset: one item each (prepare), duplicates, training opt-in."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from nsfwkit import cli, data, evaluate, samples, train
from nsfwkit.data.manifest import is_prepared_folder
from nsfwkit.frames import load_frames

from data_helpers import tiny_backbone, tiny_dataset, write_image
from frames_helpers import cartoon, photo, require_av


def _clip_frames(seed: int, n: int = 4, size: int = 48) -> list[np.ndarray]:
    """Distinct generated pictures: cartoons and the cat photo shifted, all ``size`` x ``size``."""
    out = [cartoon(size, seed=seed + k) for k in range(n - 1)]
    return out + [np.roll(photo(size), seed * 7, axis=1)]


def _clip_dataset(root):
    """Two classes of stills, plus in ``neutral/``: a GIF, an MP4 and the same MP4 copied."""
    require_av()
    for name, seed in (("neutral", 0), ("porn", 50)):
        for k in range(3):
            write_image(root / name / f"{name}{k}.png", cartoon(48, seed=seed + 10 * k), "PNG")
    samples.write_animation(root / "neutral" / "anim.gif", _clip_frames(1))
    samples.write_video(root / "neutral" / "clip.mp4", _clip_frames(2), fps=4, repeat=4)
    shutil.copyfile(root / "neutral" / "clip.mp4", root / "neutral" / "clip_copy.mp4")
    return root


def test_prepare_counts_a_clip_as_one_item_with_its_frames(tmp_path):
    root = _clip_dataset(tmp_path / "ds")
    prepared = data.prepare(root, progress=False)
    by_name = {r.path.rsplit("/", 1)[-1]: r for r in prepared.records}
    assert all(r.ok for r in by_name.values()), [r.reason for r in by_name.values() if not r.ok]
    assert by_name["anim.gif"].frames == 4 and by_name["anim.gif"].format == "GIF"
    # 4 pictures x 4 repeats at 4 fps: 4 s, one frame per second (0, 1, 2, 3 s) plus the last
    assert by_name["clip.mp4"].frames == 5 and by_name["clip.mp4"].format == "MP4"
    assert (by_name["clip.mp4"].width, by_name["clip.mp4"].height) == (48, 48)
    assert by_name["neutral0.png"].frames == 1
    assert by_name["clip.mp4"].group == by_name["clip_copy.mp4"].group
    assert by_name["clip.mp4"].sha256 == by_name["clip_copy.mp4"].sha256
    assert by_name["clip.mp4"].group != by_name["anim.gif"].group
    out = prepared.write(tmp_path / "prep")
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in data.read_manifest(out["manifest"])}
    assert (rows["clip.mp4"]["frames"], rows["anim.gif"]["frames"], rows["porn1.png"]["frames"]) == ("5", "4", "1")
    dups = (tmp_path / "prep" / "duplicates.csv").read_text()
    assert "exact" in dups and "clip_copy.mp4" in dups


def test_a_manifest_without_the_frames_column_is_still_recognised(tmp_path):
    root = tmp_path / "ds"
    for name in ("a", "b"):
        for k in range(2):
            write_image(root / name / f"{k}.png", cartoon(32, seed=k + 5 * len(name) + ord(name)), "PNG")
    out = data.prepare(root, progress=False).write(tmp_path / "prep")
    lines = out["manifest"].read_text().splitlines()
    out["manifest"].write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    assert is_prepared_folder(tmp_path / "prep")
    assert "frames" not in data.read_manifest(out["manifest"])[0]


def test_a_re_encoded_clip_is_a_near_duplicate(tmp_path):
    require_av()
    frames = _clip_frames(3)
    mp4 = samples.write_video(tmp_path / "a" / "clip.mp4", frames, fps=4, repeat=4)
    webm = samples.write_video(tmp_path / "a" / "clip.webm", frames, fps=4, repeat=4)
    gif = samples.write_animation(tmp_path / "a" / "anim.gif", frames)
    regif = tmp_path / "a" / "anim_repalette.gif"  # the same frames, re-saved with a 16-colour palette
    with Image.open(gif) as im:
        pics = []
        for k in range(im.n_frames):
            im.seek(k)
            pics.append(im.convert("RGB").quantize(16))
    pics[0].save(regif, save_all=True, append_images=pics[1:], duration=200, loop=0)
    recs = data.validate_files([(str(p), "a") for p in (mp4, webm, gif, regif)], progress=False)
    assert all(r.ok for r in recs), [r.reason for r in recs]
    assert recs[1].format == "WEBM" and recs[1].frames == recs[0].frames == 5
    assert len({r.sha256 for r in recs}) == 4
    hashes = [int(r.phash, 16) for r in recs]
    video_bits = bin(hashes[0] ^ hashes[1]).count("1")
    gif_bits = bin(hashes[2] ^ hashes[3]).count("1")
    print(f"pHash bits: MP4 vs WebM {video_bits}, GIF vs 16-colour GIF {gif_bits}")
    assert video_bits <= 5 and gif_bits <= 5, (video_bits, gif_bits)  # prepare's default near distance


def test_a_broken_clip_is_quarantined_with_the_loaders_reason(tmp_path):
    require_av()
    good = samples.write_video(tmp_path / "a" / "clip.mp4", _clip_frames(4), fps=4, repeat=4)
    cut = tmp_path / "a" / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    (rec,) = data.validate_files([(str(cut), "a")], progress=False)
    assert not rec.ok and "MP4" in rec.reason and rec.frames == 1


def _clips_in_train(tmp_path):
    """A prepared dataset (stills of two classes, 8 each) whose two clips (a GIF of 4 frames and an
    MP4 of 5 sampled frames, class ``neutral``) are both in the train split; and a tiny backbone."""
    require_av()
    root = tiny_dataset(tmp_path / "ds", per_class=8, size=32)
    samples.write_animation(root / "neutral" / "anim.gif", _clip_frames(1, size=32))
    samples.write_video(root / "neutral" / "clip.mp4", _clip_frames(2, size=32), fps=4, repeat=4)
    prepared = data.prepare(root, progress=False)
    for r in prepared.records:
        if r.frames > 1:
            r.split = "train"
    manifest = prepared.write(tmp_path / "prep")["manifest"]
    return manifest, tiny_backbone(tmp_path / "backbone", image_size=32)


def test_training_leaves_clips_out_unless_asked_then_adds_their_frames(tmp_path, capsys):
    manifest, backbone = _clips_in_train(tmp_path)
    stills = sum(1 for r in data.read_manifest(manifest, split="train") if r["frames"] == "1")
    cfg = dict(backbone=str(backbone), batch_size=1, epochs_head=1, epochs_finetune=0, patience=0,
               probe_init=False, calibrate=False, augment=False)
    plain = train.train(manifest, tmp_path / "plain", cfg, progress=False)
    assert plain.clips_left_out == 2 and plain.steps == stills
    assert "2 clips left out of training (still images only); opt in with clip_frames" in capsys.readouterr().out
    # opted in through the CLI: each clip adds 2 training examples (one step each at batch size 1)
    assert cli.main(["train", str(manifest), str(tmp_path / "opted"), "--config", json.dumps(cfg),
                     "--clip-frames", "2", "-q"]) == 0
    out = capsys.readouterr().out
    assert f"({stills + 2 * 2} steps)" in out and "clips left out" not in out
    assert json.loads((tmp_path / "opted" / "config.json").read_text())["train_files"] == stills + 2 * 2


def test_a_clip_frame_for_training_is_the_frame_classify_sees(tmp_path):
    require_av()
    path = samples.write_video(tmp_path / "clip.mp4", _clip_frames(5, size=32), fps=4, repeat=4)
    sampled = [f.pixels for f in load_frames(path)]
    pixels, ok = data.decode_for_model(str(path), 4)
    assert ok and len(sampled) == 5
    np.testing.assert_array_equal(pixels, sampled[4])
    assert not data.decode_for_model(str(path), 5)[1]  # past the last sampled frame: dropped, not fatal


def test_evaluation_scores_still_images_and_counts_the_clips_left_out(tmp_path):
    require_av()
    root = tiny_dataset(tmp_path / "ds", per_class=8, size=32)
    samples.write_animation(root / "neutral" / "anim.gif", _clip_frames(1, size=32))
    samples.write_video(root / "porn" / "clip.mp4", _clip_frames(2, size=32), fps=4, repeat=4)
    prepared = data.prepare(root, progress=False)
    clips = [r for r in prepared.records if r.frames > 1]
    clips[0].split, clips[1].split = "val", "test"
    manifest = prepared.write(tmp_path / "prep")["manifest"]
    test_stills = sum(1 for r in data.read_manifest(manifest, split="test") if r["frames"] == "1")
    model_path = tiny_backbone(tmp_path / "mine", image_size=32)
    run = evaluate.evaluate_run(model_path, manifest, tmp_path / "eval", baseline=None, confidence=None,
                                write_card=False)
    assert run.clips_left_out == 2 and run.report["clips_left_out"] == 2
    assert run.report["test"]["n"] == test_stills


def test_a_run_from_before_clip_frames_still_resumes(tmp_path):
    manifest, backbone = _clips_in_train(tmp_path)
    cfg = dict(backbone=str(backbone), batch_size=4, epochs_head=1, epochs_finetune=0, patience=0,
               probe_init=False, calibrate=False, augment=False)
    first = train.train(manifest, tmp_path / "run", cfg, verbose=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    del saved["config"]["clip_frames"]  # what an older kit wrote
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    again = train.train(manifest, tmp_path / "run", cfg, verbose=False)
    assert again.resumed_from == first.steps
    with pytest.raises(ValueError, match="different config"):
        train.train(manifest, tmp_path / "run", {**cfg, "clip_frames": 1}, verbose=False)
