"""The held-out protocol's arithmetic on embeddings whose answers are known."""
import pytest
import torch

from dcclip_mobile.heldout import (HeldoutSet, fidelity, mean_over_sets, retention, retention_interval,
                                   retention_of_means, score, zero_shot_hits)


class Toy:
    """4 classes (0, 1 seen; 2, 3 unseen), 2 images each, class c's image embedding = e_c."""
    classes = {"en": ["a", "b", "c", "d"], "zh": ["甲", "乙", "丙", "丁"]}
    labels = [0, 0, 1, 1, 2, 2, 3, 3]
    dataset_id = "toy"


def test_score_seen_unseen_and_generalized():
    s = HeldoutSet("toy", Toy(), [False, False, True, True])
    img = torch.eye(4)[torch.tensor(Toy.labels)]
    protos = {"en": torch.eye(4), "zh": torch.eye(4)[[0, 1, 3, 2]]}  # Chinese swaps the two unseen classes
    r = score(img, protos, s)
    assert r["en"] == {"zero_shot": 1.0, "seen": 1.0, "generalized": {"seen": 1.0, "unseen": 1.0, "harmonic": 1.0}}
    assert r["zh"]["zero_shot"] == 0.0 and r["zh"]["seen"] == 1.0 and r["zh"]["generalized"]["harmonic"] == 0.0
    assert r["chance"] == {"zero_shot": 0.5, "seen": 0.5}


def test_generalized_counts_an_unseen_image_taken_for_a_seen_class_as_wrong():
    s = HeldoutSet("toy", Toy(), [False, False, True, True])
    img = torch.eye(4)[torch.tensor(Toy.labels)]
    img[4:6] = torch.tensor([0.9, 0.0, 0.5, 0.0])  # class-2 images: nearer class 0 than class 2
    r = score(img, {"en": torch.eye(4)}, s)
    assert r["en"]["zero_shot"] == 1.0  # among unseen candidates only, still right
    assert r["en"]["generalized"]["unseen"] == 0.5 and r["en"]["generalized"]["harmonic"] == pytest.approx(2 / 3)


def test_fidelity_and_retention():
    s = HeldoutSet("toy", Toy(), [True, True, True, True])
    teacher_img = torch.eye(4)[torch.tensor(Toy.labels)]
    student_img = teacher_img.clone()
    student_img[0] = torch.tensor([0.0, 1.0, 0.0, 0.0])  # one image answered otherwise
    protos = {"en": torch.eye(4), "zh": torch.eye(4)}
    t, st = score(teacher_img, protos, s), score(student_img, protos, s)
    f = fidelity(st, t, s, student_img, teacher_img, protos, protos)
    assert f["en"]["agreement"] == 7 / 8 and f["en"]["retention"] == pytest.approx((7 / 8 - 1 / 4) / (1 - 1 / 4))
    assert f["cross_lingual_agreement"] == 1.0 and f["en"]["prototype_cosine"] == pytest.approx(1.0)
    assert retention(0.3, 0.1, 0.1) is None
    m = mean_over_sets({"a": {k: v for k, v in st.items() if k != "_pred"}}, ["en"])
    assert m["en"]["zero_shot"] == 7 / 8 and m["chance"] == 0.25


def test_a_set_without_unseen_classes_is_refused():
    with pytest.raises(ValueError, match="no unseen class"):
        HeldoutSet("toy", Toy(), [False] * 4)
    with pytest.raises(ValueError, match="4 classes"):
        HeldoutSet("toy", Toy(), [True] * 3)


def test_zero_shot_hits_are_the_unseen_images_top1():
    s = HeldoutSet("toy", Toy(), [False, False, True, True])
    img = torch.eye(4)[torch.tensor(Toy.labels)]
    r = score(img, {"en": torch.eye(4), "zh": torch.eye(4)[[0, 1, 3, 2]]}, s)
    hits = zero_shot_hits(r, s)
    assert hits["en"].tolist() == [True] * 4 and hits["zh"].tolist() == [False] * 4


def test_retention_interval_is_paired_and_narrows_with_more_images():
    g = torch.Generator().manual_seed(0)

    def hits(n, p):
        return torch.rand(n, generator=g) < p

    chances = {"a": 0.1, "b": 0.1}
    teacher = {"a": hits(200, 0.5), "b": hits(200, 0.5)}
    # a student that answers exactly as the teacher keeps all of it in every resample
    assert retention_interval(teacher, teacher, chances) == pytest.approx([1.0, 1.0])
    # a student right on half of the teacher's hits: about (0.25 - 0.1) / (0.5 - 0.1) = 0.375
    student = {k: v & (torch.arange(len(v)) % 2 == 0) for k, v in teacher.items()}
    lo, hi = retention_interval(student, teacher, chances)
    point = retention_of_means({"mean": {"en": {"zero_shot": sum(float(v.float().mean()) for v in student.values()) / 2}}},
                               {"mean": {"chance": 0.1, "en": {"zero_shot": sum(float(v.float().mean()) for v in teacher.values()) / 2}}},
                               ["en"])["en"]
    assert lo < point < hi and 0.2 < lo and hi < 0.55
    small_lo, small_hi = retention_interval({k: v[:40] for k, v in student.items()},
                                            {k: v[:40] for k, v in teacher.items()}, chances)
    assert small_hi - small_lo > hi - lo  # fewer images, a wider interval
    # a teacher at chance in every resample: no retention to speak of
    none = {"a": torch.zeros(50, dtype=torch.bool), "b": torch.zeros(50, dtype=torch.bool)}
    assert retention_interval(none, none, chances) is None


def test_the_image_tower_digest_follows_the_image_tower_only(tiny_student):
    """The held-out evaluation reuses a student's image embeddings across checkpoints with the same digest
    (stages that keep the image tower fixed): a text change must keep it, any image weight or BatchNorm
    statistic must change it."""
    from train.heldout_eval import image_tower_digest

    before = image_tower_digest(tiny_student)
    with torch.no_grad():
        tiny_student.text.proj.weight.add_(1.0)
    assert image_tower_digest(tiny_student) == before
    bn = next(m for m in tiny_student.image.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean.add_(0.5)
    after_stats = image_tower_digest(tiny_student)
    assert after_stats != before
    with torch.no_grad():
        next(tiny_student.image.parameters()).mul_(2.0)
    assert image_tower_digest(tiny_student) not in (before, after_stats)
