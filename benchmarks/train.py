"""Benchmark: the head phase on cached frozen features vs the old full forward pass, and the kit's
training defaults vs a linear probe, on a messy generated two-class set.

The dataset (generated, safe): ``sfw/`` holds photo crops from scikit-image's sample images,
``nsfw/`` flat cartoons (the demo's flat shapes and line art, and posterised photo crops with
outlines). It is messy like scraped data: chains of near copies (an image blended step by step
towards another of its class), planted exact and re-encoded copies, a chain across the two
classes, the same image under both classes, and broken files.

Prints, from one run:

1. **leaks**: near pairs (perceptual hashes within ``--near-duplicates`` bits) whose two files
   ended in different splits (must be 0), label conflicts and the largest duplicate group;
2. **head phase, seconds per epoch**: the old path (every step a forward pass of the frozen
   backbone on the epoch's augmented images, called with ``training=True``) vs the new one
   (the backbone's features computed once, inference mode, then head steps on them), over
   ``--epochs`` epochs, same images, batch size and optimizer; the ratio old / new;
3. **accuracy**: ``nsfwkit train`` with its defaults vs a logistic-regression linear probe on
   the same backbone's penultimate features, on the test split, side by side; then the
   evaluation's calibrated ECE (before/after temperature scaling), the threshold's confidence
   bound on val and the test recall with its interval.

Usage: ``python benchmarks/train.py [--per-class 400 --epochs 5 --keep DIR]``.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np

_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
           "retina", "camera", "brick", "grass", "gravel", "moon", "coins", "clock")


def _photo_crop(rng: np.random.Generator, sources: list[np.ndarray], size: int) -> np.ndarray:
    """A random crop (20-60% of the side, flipped, colour-jittered) of a sample photo."""
    from PIL import Image

    src = sources[int(rng.integers(len(sources)))]
    h, w = src.shape[:2]
    side = int(min(h, w) * rng.uniform(0.2, 0.6))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = src[y:y + side, x:x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    img = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((size, size), Image.BILINEAR), np.float64)
    img = img * rng.uniform(0.8, 1.2, 3) + rng.uniform(-20, 20)
    return np.clip(img, 0, 255).astype(np.uint8)


def _cartoonify(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flat colours (a 4-8 colour palette) with dark outlines: a photo crop as a flat cartoon."""
    from PIL import Image, ImageFilter

    pil = Image.fromarray(img).filter(ImageFilter.MedianFilter(5))
    flat = np.asarray(pil.quantize(colors=int(rng.integers(4, 9))).convert("RGB"))
    edges = np.asarray(Image.fromarray(flat).convert("L").filter(ImageFilter.FIND_EDGES)) > 40
    out = flat.copy()
    out[edges] = 20
    return out


def _encode(img: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **kw)
    return buf.getvalue()


def make_messy_dataset(root: Path, *, per_class: int, size: int = 128, seed: int = 0) -> dict[str, int]:
    """Write the two-class set into ``root`` (``sfw/``, ``nsfw/``); returns what was planted."""
    from skimage import color
    from skimage import data as skdata

    from nsfwkit import demo_data

    rng = np.random.default_rng(seed)
    sources = []
    for name in _PHOTOS:
        im = getattr(skdata, name)()
        sources.append(im if im.ndim == 3 else (color.gray2rgb(im)).astype(np.uint8))
    made: dict[str, list[np.ndarray]] = {"sfw": [], "nsfw": []}
    for i in range(per_class):
        made["sfw"].append(_photo_crop(rng, sources, size))
        if i % 2:
            made["nsfw"].append(_cartoonify(_photo_crop(rng, sources, size), rng))
        else:
            kind = "flat_shapes" if i % 4 == 0 else "lineart"
            made["nsfw"].append(demo_data.demo_image(kind, size=(size, size), seed=seed * 100_000 + i))
    planted = {"chains": 0, "chain_images": 0, "exact_copies": 0, "near_copies": 0,
               "cross_class": 0, "broken": 0}
    for cls, imgs in made.items():
        for i, img in enumerate(imgs):
            fmt = "JPEG" if i % 3 else "PNG"
            path = root / cls / f"{cls}_{i:04d}.{fmt.lower().replace('jpeg', 'jpg')}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_encode(img, fmt, **({"quality": 92} if fmt == "JPEG" else {})))
        for k in range(max(2, per_class // 60)):  # chains of near copies within the class
            a, b = imgs[2 * k], imgs[2 * k + 1]
            chain = demo_data.near_copy_chain(a, b, max_bits=4, max_length=7)[1:]
            for j, img in enumerate(chain):
                (root / cls / "chains" / f"chain{k}_{j}.png").parent.mkdir(parents=True, exist_ok=True)
                (root / cls / "chains" / f"chain{k}_{j}.png").write_bytes(_encode(img))
            planted["chains"] += 1
            planted["chain_images"] += len(chain)
        for k in range(max(2, per_class // 40)):  # exact copies and re-encoded near copies
            src = root / cls / f"{cls}_{3 * k + 1:04d}.jpg"
            (root / cls / "copies").mkdir(parents=True, exist_ok=True)
            (root / cls / "copies" / f"copy_{k}.jpg").write_bytes(src.read_bytes())
            small = imgs[3 * k + 2][::2, ::2]
            (root / cls / "copies" / f"resaved_{k}.jpg").write_bytes(_encode(small, "JPEG", quality=75))
            planted["exact_copies"] += 1
            planted["near_copies"] += 1
    for k in range(2):  # the same image under both classes
        (root / "nsfw" / "copies" / f"also_sfw_{k}.png").write_bytes(_encode(made["sfw"][10 + k]))
        planted["cross_class"] += 1
    chain = demo_data.near_copy_chain(made["sfw"][20], made["nsfw"][21], max_bits=4, max_length=6)
    for j, img in enumerate(chain[1:]):
        cls = "sfw" if j < len(chain) // 2 else "nsfw"
        (root / cls / "cross").mkdir(parents=True, exist_ok=True)
        (root / cls / "cross" / f"x{j}.png").write_bytes(_encode(img))
    planted["cross_class"] += 1
    good = (root / "sfw" / "sfw_0001.jpg").read_bytes()
    (root / "sfw" / "broken").mkdir(parents=True, exist_ok=True)
    (root / "sfw" / "broken" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "nsfw" / "broken").mkdir(parents=True, exist_ok=True)
    (root / "nsfw" / "broken" / "empty.jpg").write_bytes(b"")
    planted["broken"] = 2
    return planted


def _leaks(manifest: Path, max_distance: int) -> tuple[int, int]:
    """``(near pairs, pairs straddling two splits)`` among the manifest's split images."""
    from nsfwkit import data
    from nsfwkit.data.duplicates import phash_words
    from nsfwkit.data.nearpairs import near_pairs

    rows = data.read_manifest(manifest)
    pairs = near_pairs(phash_words([r["phash"] for r in rows]), max_distance)
    split = np.array([r["split"] for r in rows])
    straddle = int(np.sum((split[pairs[:, 0]] != split[pairs[:, 1]])
                          & (split[pairs[:, 0]] != "excluded") & (split[pairs[:, 1]] != "excluded")))
    return len(pairs), straddle


def _time_head_paths(manifest: Path, epochs: int, batch_size: int) -> dict[str, float]:
    """Seconds per head-phase epoch: the old full forward pass vs cached features."""
    import keras
    import tensorflow as tf

    from nsfwkit import data, train

    names = data.manifest_class_names(manifest)
    paths, labels, _ = data.manifest_arrays(manifest, "train", class_names=names)
    config = train.TrainConfig()
    model, _, base_layers = train.build_classifier(config, names)
    train.set_trainable(model, base_layers, "head", unfreeze=0)
    features, head = train.classifier_parts(model)
    size = int(model.inputs[0].shape[1])
    loss_fn = keras.losses.CategoricalCrossentropy()
    decoded = data.decode_in_epoch_order(paths, image_size=size, seed=0)
    for _ in decoded.dataset:  # decode once for both paths: time the model, not the JPEG decoder
        pass

    def stepper(forward):
        opt = keras.optimizers.Adam(1e-3)
        opt.build(model.trainable_variables)

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, forward(x))
            opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
            return loss
        return step

    old_step = stepper(lambda x: model(x, training=True))
    t0 = time.perf_counter()
    for epoch in range(epochs):
        for x, y in data.make_dataset(paths, labels, image_size=size, batch_size=batch_size,
                                      num_classes=len(names), training=True, seed=0, epoch=epoch,
                                      decoded=decoded):
            float(old_step(x, y))
    old = (time.perf_counter() - t0) / epochs

    new_step = stepper(lambda f: head(f, training=True))
    extract = tf.function(lambda x: features(x, training=False))
    t0 = time.perf_counter()
    feats = np.zeros((len(paths), int(features.outputs[0].shape[-1])), np.float32)
    for idx, x in decoded.dataset.batch(batch_size):
        feats[idx.numpy()] = extract(x).numpy()
    extract_s = time.perf_counter() - t0
    onehot = np.eye(len(names), dtype=np.float32)[labels]
    for epoch in range(epochs):
        order = data.epoch_order(len(paths), 0, epoch)
        for f, y in tf.data.Dataset.from_tensor_slices((feats[order], onehot[order])).batch(batch_size):
            float(new_step(f, y))
    new = (time.perf_counter() - t0) / epochs
    return {"old_s_per_epoch": old, "new_s_per_epoch": new, "feature_pass_s": extract_s,
            "new_head_steps_s_per_epoch": (new * epochs - extract_s) / epochs, "ratio": old / new,
            "images": len(paths), "epochs": epochs}


def _probe_accuracy(manifest: Path, batch_size: int) -> float:
    from nsfwkit import data, evaluate, train

    names = data.manifest_class_names(manifest)
    extractor, _ = train.feature_extractor(train.TrainConfig())
    size = int(extractor.inputs[0].shape[1])
    split = {s: data.manifest_arrays(manifest, s, class_names=names)[:2] for s in ("train", "test")}
    feats = {s: evaluate.predict(extractor, p, image_size=size, batch_size=batch_size) for s, (p, _) in split.items()}
    (f_tr, ok_tr), (f_te, ok_te) = feats["train"], feats["test"]
    probs, = evaluate.linear_probe(f_tr[ok_tr], split["train"][1][ok_tr], [f_te[ok_te]], num_classes=len(names))
    return float(np.mean(probs.argmax(1) == split["test"][1][ok_te]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=400, help="clean images per class")
    parser.add_argument("--epochs", type=int, default=5, help="head-phase epochs timed per path")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--near-duplicates", type=int, default=5)
    parser.add_argument("--config", default="{}", help="TrainConfig fields (JSON) over the defaults")
    parser.add_argument("--keep", default=None, help="write everything here instead of a temp dir")
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()

    from nsfwkit import data, evaluate, train

    with tempfile.TemporaryDirectory(prefix="nsfwkit-bench-") as tmp:
        base = Path(args.keep or tmp)
        t0 = time.perf_counter()
        planted = make_messy_dataset(base / "ds", per_class=args.per_class)
        print(f"generated in {time.perf_counter() - t0:.0f} s; planted {planted}")
        prepared = data.prepare(base / "ds", fractions=(0.6, 0.2, 0.2), near_duplicates=args.near_duplicates,
                                progress=False)
        files = prepared.write(base / "01_data")
        s = prepared.summary()
        pairs, straddle = _leaks(files["manifest"], args.near_duplicates)
        print(f"prepare: {s['valid']} usable, {s['quarantined']} quarantined, {s['duplicate_groups']} "
              f"duplicate groups (largest {s['largest_duplicate_group']}), {s['label_conflicts']} label "
              f"conflicts, splits {s['splits']}")
        print(f"leaks: {straddle} of {pairs} near pairs straddle two splits")
        for w in prepared.warnings:
            print(f"  warning: {w}")
        if not args.skip_timing:
            timing = _time_head_paths(files["manifest"], args.epochs, args.batch_size)
            print(f"head phase, {timing['images']} images, mean of {timing['epochs']} epochs: old full forward "
                  f"{timing['old_s_per_epoch']:.2f} s/epoch, cached features {timing['new_s_per_epoch']:.2f} "
                  f"s/epoch (one feature pass {timing['feature_pass_s']:.2f} s, then "
                  f"{timing['new_head_steps_s_per_epoch']:.3f} s/epoch); ratio old/new {timing['ratio']:.1f}")
        config = train.TrainConfig(**json.loads(args.config))
        t0 = time.perf_counter()
        result = train.train(files["manifest"], base / "02", config, verbose=False, progress=False)
        train_s = time.perf_counter() - t0
        run = evaluate.evaluate_run(result.model_path, files["manifest"], base / "02" / "eval", baseline="mobilenet_v2")
        rep = run.report
        probe_acc = _probe_accuracy(files["manifest"], args.batch_size)
        acc = rep["test"]["multiclass"]["accuracy"]
        card_probe = (rep.get("linear_probe") or {}).get("multiclass", {}).get("accuracy")
        print(f"test accuracy: defaults {acc:.3f} | linear probe {probe_acc:.3f} (card's probe {card_probe}) "
              f"[train {train_s:.0f} s, {result.steps} steps, {len(result.history)} epochs]")
        cal = rep["calibration"] or {}
        print(f"calibration: T {cal.get('temperature', float('nan')):.3f}, test ECE "
              f"{cal.get('test_ece_before', float('nan')):.3f} -> {cal.get('test_ece_after', float('nan')):.3f}")
        val_op = rep["test"]["binary"]["val_operating_point"]
        op = rep["test"]["binary"]["operating_point"]
        print(f"threshold {op['threshold']:.4f} (target {rep['target']}): val bound {val_op['bound']:.3f} "
              f"(met {val_op['met']}, {val_op['tp']}/{val_op['tp'] + val_op['fn']} caught); test recall "
              f"{op['recall']:.3f} [{op['recall_ci'][0]:.3f}, {op['recall_ci'][1]:.3f}], FPR {op['fpr']:.3f}")
        base_rep = rep.get("baseline") or {}
        print(f"pretrained baseline: NSFW AUC {base_rep.get('binary', {}).get('roc_auc')}")


if __name__ == "__main__":
    main()
