"""The rendered emoji: the catalog with its CLDR names, the held-out split by family, deterministic views, and
the ELEVATER folders written from them."""
import pytest

from dcclip_mobile.data.elevater import ElevaterFolder
from dcclip_mobile.data.emoji import (CLASS_GROUPS, EmojiClasses, EmojiViews, class_emoji, emoji_catalog,
                                      emoji_present, is_unseen_family, training_emoji, write_elevater)

pytestmark = pytest.mark.needs(emoji_present(), "the emoji data: apt-get install fonts-noto-color-emoji "
                                                "unicode-data unicode-cldr-core")


def test_catalog_has_human_names_in_both_languages():
    cat = emoji_catalog()
    assert len(cat) > 3000
    food = class_emoji("Food & Drink")
    assert len(food) > 100
    assert all(e.name["en"] and e.name["zh"] for e in food)
    assert len({e.name["en"] for e in food}) == len(food)  # one class per name
    names = {e.name["en"]: e.name["zh"] for e in food}
    assert names.get("hamburger") == "汉堡"


def test_split_is_by_family_and_no_held_out_picture_reaches_training():
    for g in CLASS_GROUPS:
        seen, unseen = class_emoji(g, "seen"), class_emoji(g, "unseen")
        assert seen and unseen
        assert not {e.family for e in seen} & {e.family for e in unseen}
    held_out = {e.family for g in CLASS_GROUPS for e in class_emoji(g, "unseen")}
    train = training_emoji()
    assert not any(e.family in held_out for e in train if e.group in CLASS_GROUPS)
    # the rule does not depend on catalog order, and another seed is another split
    assert is_unseen_family("\U0001F354", 0) == is_unseen_family("\U0001F354", 0)
    assert [is_unseen_family(e.family, 1) for e in class_emoji("Objects")] != \
        [is_unseen_family(e.family, 0) for e in class_emoji("Objects")]


def test_views_are_deterministic_and_differ_from_each_other():
    views = EmojiViews(views=2, limit=8)
    assert len(views) == 8
    a, b = views.image(3), EmojiViews(views=2, limit=8).image(3)
    assert a.size == (224, 224) and a.tobytes() == b.tobytes()
    assert views.image(3).tobytes() != views.image(4).tobytes()
    with pytest.raises(IndexError):
        views.image(8)


def test_labeled_sets_and_their_elevater_folders(tmp_path):
    ds = EmojiClasses("Activities", "unseen", views=2)
    assert len(ds) == 2 * len(ds.class_list) and all(ds.unseen)
    assert ds.labels[:4] == [0, 0, 1, 1]
    mixed = EmojiClasses("Activities", "all", views=1)
    assert any(mixed.unseen) and not all(mixed.unseen)
    [root] = write_elevater(tmp_path, "Activities", "unseen", views=1)
    folder = ElevaterFolder(root)
    assert folder.classes == ds.classes and len(folder) == len(ds.class_list)


def test_heldout_sets_cover_every_group_and_keep_fashion_mnist_unseen():
    from dcclip_mobile.data.fashion_mnist import fashion_mnist_present
    from train.heldout_eval import heldout_sets

    sets = heldout_sets(views=1, fashion_images=20 if fashion_mnist_present("test") else 0)
    emoji = [s for s in sets if s.name.startswith("emoji-")]
    assert len(emoji) == len(CLASS_GROUPS)
    assert all(any(s.unseen) and not all(s.unseen) for s in emoji)
    for s in sets:
        if s.name == "fashion-mnist":
            assert all(s.unseen) and len(s.source) == 20


def test_data_is_the_pinned_version_and_named_in_every_set_id():
    import warnings
    from dcclip_mobile.data.emoji import data_fingerprint

    data_fingerprint.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # setup.sh installs the versions the figures were measured with
        fp = data_fingerprint()
    assert fp in EmojiViews(views=1, limit=2).dataset_id and fp in EmojiClasses("Activities").dataset_id
