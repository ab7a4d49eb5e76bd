"""The held-out protocol's arithmetic on embeddings whose answers are known."""
import pytest
import torch

from dcclip_mobile.heldout import HeldoutSet, fidelity, mean_over_sets, retention, score


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
