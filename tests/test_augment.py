"""Training augmentation: ink kept in prepared sets, ink- and image-level changes, determinism."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from tiny import tiny_config

from hmer_runtime.inputs.inkml import read_inkml
from hmer_runtime.inputs.render import model_input
from hmer_runtime.text.vocab import Vocab
from hmer_train.augment import augment_image, augment_ink, finish_image, render_augmented
from hmer_train.config import AugmentConfig, Config, ConfigError, image_configs
from hmer_train.data import BatchLoader
from hmer_train.prepared import prepare
from hmer_train.train import load_split

RECIPE = Config().train.augment


@pytest.fixture
def tiny(tmp_path):
    cfg = tiny_config(tmp_path, "comer")
    return cfg, load_split(cfg, "train", progress=False)


def test_prepared_set_keeps_each_samples_strokes(tiny, tmp_path):
    cfg, data = tiny
    source = sorted((tmp_path / "data").glob("*.inkml"))[0]
    ink = read_inkml(source)
    i = [n.split("/")[-1].split(".")[0] for n in data.names].index(source.stem)
    kept = data.ink(i)
    lo = np.concatenate([t[:, :2] for t in ink.traces]).min(axis=0)
    assert len(kept.traces) == len(ink.traces)
    for a, b in zip(kept.traces, ink.traces):
        np.testing.assert_allclose(a, b[:, :2] - lo, atol=1e-3)
    # the strokes render to the prepared image
    np.testing.assert_allclose(model_input(kept, *image_configs(cfg), "x"), data.image(i), atol=1 / 255 + 1e-6)
    sub = data.select([i, 0])
    assert len(sub.ink(0).traces) == len(ink.traces)


def test_image_samples_have_no_strokes(tmp_path):
    from PIL import Image, ImageDraw

    root = tmp_path / "imgs"
    (root / "images").mkdir(parents=True)
    im = Image.new("L", (60, 30), 255)
    ImageDraw.Draw(im).line([(5, 15), (50, 15)], fill=0, width=3)
    im.save(root / "images" / "a.png")
    (root / "labels.txt").write_text("a\t-\n")
    data = prepare(root, cache_root=tmp_path / "cache", progress=False, workers=0)
    assert len(data) == 1 and data.ink(0) is None


def test_missing_keys_are_off_and_unknown_keys_refused():
    def stored(augment: dict) -> AugmentConfig:  # as a checkpoint's config reads back
        return Config.from_dict({"train": {"augment": augment}}).train.augment

    assert not stored({}).active
    assert stored({"scale": [0.7, 1.4]}).scale == (0.7, 1.4)
    assert RECIPE.ink and RECIPE.active
    with pytest.raises(ConfigError, match="unknown config key 'train.augment.elasticity'"):
        stored({"elasticity": 0.1})
    with pytest.raises(ConfigError, match="scale must be"):
        stored({"scale": [0.0, 1.0]})


def test_ink_augmentation_is_seeded_and_changes_the_geometry(tiny):
    _, data = tiny
    ink = data.ink(0)
    a = augment_ink(ink, random.Random("s-1-0"), RECIPE)
    b = augment_ink(ink, random.Random("s-1-0"), RECIPE)
    c = augment_ink(ink, random.Random("s-2-0"), RECIPE)
    assert all(np.array_equal(x, y) for x, y in zip(a.traces, b.traces))
    centred = [t - np.concatenate(ink.traces).mean(axis=0) for t in ink.traces]
    assert not all(np.allclose(x, y) for x, y in zip(a.traces, c.traces))
    assert not all(np.allclose(x, y, atol=1e-3) for x, y in zip(a.traces, centred))
    # with everything off it only centres the ink
    same = augment_ink(ink, random.Random(0), AugmentConfig())
    assert all(np.allclose(x, y) for x, y in zip(same.traces, centred))


def test_augmented_render_goes_through_the_runtime_preprocessing(tiny):
    cfg, data = tiny
    render, pre = image_configs(cfg)
    big = AugmentConfig(ink=True, scale=(1.4, 1.4), pen_width=(1.2, 1.2))
    small = AugmentConfig(ink=True, scale=(0.7, 0.7))
    hi = render_augmented(data.ink(0), random.Random(0), big, render, pre)
    lo = render_augmented(data.ink(0), random.Random(0), small, render, pre)
    assert hi.dtype == np.float32 and 0 <= hi.min() and hi.max() <= 1
    assert hi.shape[0] > lo.shape[0] and hi.shape[1] > lo.shape[1]
    assert (hi[: pre.pad] == 0).all() and (hi[:, -pre.pad:] == 0).all()  # cropped to ink and padded


def test_image_augmentation_keeps_ink_and_size_limits(tiny):
    _, data = tiny
    img = data.image(0)
    cfg = AugmentConfig(scale=(2.0, 2.0), rotate_deg=5.0, shear=0.2, stroke_jitter=1.0, elastic=0.2, blur=1.0)
    out = augment_image(img, random.Random(1), cfg, (img.shape[0] + 4, 10_000))
    assert out.shape[0] <= img.shape[0] + 4 and out.dtype == np.float32
    assert out.max() > 0.5 and out.min() >= 0
    np.testing.assert_array_equal(out, augment_image(img, random.Random(1), cfg, (img.shape[0] + 4, 10_000)))


def test_loader_augments_ink_differently_each_epoch_and_identically_in_workers(tiny):
    cfg, data = tiny
    vocab = Vocab.build(data.tokens)
    loader = BatchLoader(data, vocab, 3, 10**9, 0, RECIPE, False, (256, 1024), images=image_configs(cfg))
    e1 = list(loader.epoch(1))
    again = list(loader.epoch(1, workers=2))
    e2 = {tuple(b.names): b for b in loader.epoch(2)}
    assert [b.names for b in e1] == [b.names for b in again]
    assert all(torch.equal(a.images, b.images) for a, b in zip(e1, again))
    for b in e1:  # the same samples, augmented anew in another epoch
        assert not torch.equal(b.images, e2[tuple(b.names)].images)
    # ink is rendered again, not taken from the prepared pixels
    assert all(not np.array_equal(loader.sample(1, i), data.image(i)) for i in range(len(data)))


def test_render_gets_image_level_changes_fading_and_noise(tiny):
    cfg, data = tiny
    img = data.image(0)
    plain = AugmentConfig()
    faded = AugmentConfig(contrast=1.0)
    noisy = AugmentConfig(noise=1.0)
    warped = AugmentConfig(image=1.0, elastic=0.3, rotate_deg=4.0, stroke_jitter=1.0)
    assert finish_image(img, random.Random(0), plain, (256, 1024)) is img
    out = finish_image(img, random.Random(0), faded, (256, 1024))
    ink = img > 0.9
    assert out.shape == img.shape and out[ink].max() < 1.0 and out[~ink].min() >= 0  # fainter pen, greyer paper
    out = finish_image(img, random.Random(0), noisy, (256, 1024))
    assert ((out > 0) & (img == 0)).any() and 0 <= out.min() and out.max() <= 1
    out = finish_image(img, random.Random(0), warped, (256, 1024))
    assert out.shape == img.shape and not np.array_equal(out, img)  # geometry changed, size kept
    for c in (faded, noisy, warped):
        np.testing.assert_array_equal(finish_image(img, random.Random(5), c, (256, 1024)),
                                      finish_image(img, random.Random(5), c, (256, 1024)))


def test_image_samples_change_aspect(tiny):
    _, data = tiny
    img = data.image(0)
    widths = {augment_image(img, random.Random(s), AugmentConfig(aspect=0.3), (1000, 10_000)).shape[1]
              for s in range(8)}
    assert len(widths) > 3 and {augment_image(img, random.Random(s), AugmentConfig(), (1000, 10_000)).shape[1]
                                for s in range(3)} == {img.shape[1]}


def test_extra_samples_are_drawn_per_epoch_at_the_ratio(tiny):
    cfg, data = tiny
    vocab = Vocab.build(data.tokens)
    both = data.concat(data).concat(data)  # the first len(data) are "real", the rest extra
    real, extra = len(data), 2 * len(data)
    loader = BatchLoader(both, vocab, 2, 10**9, 0, None, False, (256, 1024), real=real, extra_ratio=0.5)
    k = round(0.5 * real)
    seen_extra = []
    for epoch in range(4):
        idx = sorted(i for b in loader.plan(epoch) for i in b)
        assert idx[:real] == list(range(real))  # every real sample, every epoch
        drawn = idx[real:]
        assert len(drawn) == k and len(set(drawn)) == k and all(i >= real for i in drawn)
        seen_extra.append(set(drawn))
        assert sum(len(b.names) for b in loader.epoch(epoch)) == real + k
    assert seen_extra[0] != seen_extra[1]
    assert len(set().union(*seen_extra)) == min(extra, 4 * k)  # drawn in turn, not at random again
    again = BatchLoader(both, vocab, 2, 10**9, 0, None, False, (256, 1024), real=real, extra_ratio=0.5)
    assert again.plan(3) == loader.plan(3)  # a resumed run plans the same epoch
    everything = BatchLoader(both, vocab, 2, 10**9, 0, None, False, (256, 1024), real=real)
    assert sum(len(b) for b in everything.plan(0)) == len(both)
