"""Teachers: AltCLIP through the same from_pretrained path a hub id takes (a tiny one saved locally),
the offline teacher on real images (needs its registry assets), and the feature cache."""
import pytest
import torch
from PIL import Image

from dcclip_mobile.assets import assets_present
from dcclip_mobile.data.fashion_mnist import fashion_mnist_present
from dcclip_mobile.data.preprocess import preprocess_batch
from dcclip_mobile.teachers import build_teacher
from dcclip_mobile.teachers.cache import CacheMissingError, TeacherCache, cache_image_features


def test_altclip_loads_from_disk_and_returns_protocol_shapes(tiny_altclip_dir):
    t = build_teacher(f"altclip:{tiny_altclip_dir}")
    assert t.preprocess.size == 32 and t.feature_size == 4
    imgs = [Image.new("RGB", (40, 30), (i * 60, 100, 200)) for i in range(3)]
    f = t.encode_image(preprocess_batch(imgs, t.preprocess))
    assert f.feature_map.shape == (3, 32, 4, 4) and f.embedding.shape == (3, 16)
    assert torch.allclose(f.embedding.norm(dim=-1), torch.ones(3), atol=1e-5)
    tf = t.encode_text(["a photo of a bag.", "一张包的照片。"])
    assert tf.pooled.shape == (2, 24) and tf.embedding.shape == (2, 16)
    assert t.teacher_id.startswith("altclip-")


def test_unknown_teacher_names_the_accepted_ones():
    with pytest.raises(ValueError, match=r"unknown teacher 'clip'.*'offline', 'altclip:"):
        build_teacher("clip")


@pytest.mark.offline_assets
@pytest.mark.needs(assets_present(), "offline teacher assets absent: python -m dcclip_mobile.assets fetch")
@pytest.mark.needs(fashion_mnist_present(),
                   "Fashion-MNIST absent: apt-get install dataset-fashion-mnist (setup.sh does)")
def test_offline_teacher_on_real_images():
    from dcclip_mobile.data.fashion_mnist import FashionMNIST

    t = build_teacher("offline")
    assert t.teacher_id == build_teacher("offline").teacher_id and t.preprocess.size == 224
    ds = FashionMNIST("test", limit=4)
    f = t.encode_image(preprocess_batch([ds.image(i) for i in range(4)], t.preprocess))
    assert f.feature_map.shape == (4, t.feature_channels, t.feature_size, t.feature_size) == (4, 1280, 7, 7)
    assert f.embedding.shape == (4, t.embed_dim) == (4, 512)
    assert 0 <= f.feature_map.min() and f.feature_map.max() <= 6  # ReLU6 maps, finite
    assert torch.allclose(f.embedding.norm(dim=-1), torch.ones(4), atol=1e-5)
    tf = t.encode_text(["a photo of a sneaker.", "一张运动鞋的照片。", "a photo of a dress."])
    assert tf.embedding.shape == (3, 512)
    sim = tf.embedding @ tf.embedding.T
    assert sim[0, 1] > sim[0, 2]  # the same thing in two languages is closer than two things in one


class CountingTeacher:
    """A real (tiny AltCLIP) teacher that counts its calls."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __getattr__(self, name):  # everything but the counted calls is the real teacher's
        return getattr(self.inner, name)

    def encode_image(self, x):
        self.calls += 1
        return self.inner.encode_image(x)


def test_cache_is_hit_on_second_pass_and_resumes(tiny_altclip_dir, tmp_path):
    t = CountingTeacher(build_teacher(f"altclip:{tiny_altclip_dir}"))
    imgs = [Image.new("RGB", (32, 32), (i * 20, 0, 0)) for i in range(10)]
    first = cache_image_features(t, imgs.__getitem__, 10, "ten", tmp_path, batch_size=2, shard_size=4)
    assert t.calls == 5 and first["feature_map"].shape == (10, 32, 4, 4)
    assert first["feature_map"].dtype == torch.float16
    again = cache_image_features(t, imgs.__getitem__, 10, "ten", tmp_path, batch_size=2, shard_size=4)
    assert t.calls == 5 and torch.equal(first["embedding"], again["embedding"])

    # an interrupted fill: the second shard fails; the rerun computes only what is missing
    t2 = CountingTeacher(t.inner)
    boom = {"n": 0}

    def flaky(i):
        if i == 5 and boom["n"] == 0:
            boom["n"] = 1
            raise KeyboardInterrupt
        return imgs[i]

    with pytest.raises(KeyboardInterrupt):
        cache_image_features(t2, flaky, 10, "ten-b", tmp_path, batch_size=2, shard_size=4)
    cache = TeacherCache(tmp_path, t.teacher_id, "ten-b", t.preprocess.key(), "image", 10, 4)
    assert cache.done() == {0}
    with pytest.raises(CacheMissingError, match="incomplete"):
        cache.load()
    calls_before = t2.calls
    resumed = cache_image_features(t2, flaky, 10, "ten-b", tmp_path, batch_size=2, shard_size=4)
    assert t2.calls - calls_before == 3  # shards 1 and 2 only: 2 + 1 batches
    assert torch.equal(resumed["embedding"], first["embedding"])


class CountingTextTeacher(CountingTeacher):
    def encode_text(self, texts):
        self.calls += 1
        return self.inner.encode_text(texts)


def test_text_cache_is_hit_on_second_pass_and_keyed_by_content(tiny_altclip_dir, tmp_path):
    from dcclip_mobile.teachers.cache import cache_text_features

    t = CountingTextTeacher(build_teacher(f"altclip:{tiny_altclip_dir}"))
    texts = ["a photo of a bag.", "一张包的照片。", "a coat", "外套", "a dress"]
    first = cache_text_features(t, texts, "corpus", tmp_path, batch_size=2, shard_size=4)
    assert t.calls == 3 and first["pooled"].shape == (5, 24) and first["embedding"].shape == (5, 16)
    again = cache_text_features(t, texts, "corpus", tmp_path, batch_size=2, shard_size=4)
    assert t.calls == 3 and torch.equal(first["pooled"], again["pooled"])
    cache_text_features(t, texts[::-1], "corpus", tmp_path, batch_size=2, shard_size=4)
    assert t.calls == 6  # same name, other texts: computed, not served stale


def test_altclip_id_changes_with_its_weights(tiny_altclip_dir, tmp_path):
    import os
    import shutil

    copy = tmp_path / tiny_altclip_dir.name
    shutil.copytree(tiny_altclip_dir, copy)
    a = build_teacher(f"altclip:{copy}").teacher_id
    assert build_teacher(f"altclip:{copy}").teacher_id == a  # stable
    w = copy / "model.safetensors"
    st = w.stat()
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert build_teacher(f"altclip:{copy}").teacher_id != a


def test_lazy_cache_reads_the_same_rows(tiny_altclip_dir, tmp_path):
    import pickle

    t = build_teacher(f"altclip:{tiny_altclip_dir}")
    imgs = [Image.new("RGB", (32, 32), (i * 20, 9, 0)) for i in range(7)]
    eager = cache_image_features(t, imgs.__getitem__, 7, "seven", tmp_path, batch_size=4, shard_size=3)
    lazy = cache_image_features(t, imgs.__getitem__, 7, "seven", tmp_path, batch_size=4, shard_size=3, lazy=True)
    fm = lazy["feature_map"]
    assert len(fm) == 7 and fm.shape == (7, 32, 4, 4) and fm[0].dtype == torch.float16
    assert torch.equal(fm[4], eager["feature_map"][4]) and torch.equal(fm[-1], eager["feature_map"][6])
    assert torch.equal(fm[2:6], eager["feature_map"][2:6]) and torch.equal(fm[[6, 0]], eager["feature_map"][[6, 0]])
    assert torch.equal(pickle.loads(pickle.dumps(lazy["embedding"]))[5], eager["embedding"][5])
    with pytest.raises(IndexError, match="index 7 out of range for 7"):
        fm[7]


def test_altclip_without_preprocessor_config_uses_clip_defaults(tiny_altclip_dir, tmp_path):
    import shutil

    from dcclip_mobile.config import CLIP_MEAN

    copy = tmp_path / "bare"
    shutil.copytree(tiny_altclip_dir, copy)
    (copy / "preprocessor_config.json").unlink()
    t = build_teacher(f"altclip:{copy}")
    assert t.preprocess.size == 32 and t.preprocess.mean == tuple(CLIP_MEAN)


def test_altclip_missing_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="AltCLIP directory '.*nothing' does not exist"):
        build_teacher(f"altclip:{tmp_path / 'nothing'}")
