"""The demo ships the smallest Android bundle whose every artifact passes the parity gate."""
from types import SimpleNamespace

import pytest

import lowering.export
import lowering.report
from lowering.export import ParityGateError
from train import demo


@pytest.fixture()
def fake_lowering(monkeypatch, tmp_path):
    """export_bundles that fails the gate for the precision lists in `failing` and records each call's templates,
    and a report that reads nothing."""
    calls, failing, templates = [], [], []

    def export_bundles(model, tokenizer, targets, out, precisions, **kw):
        calls.append(precisions["android"])
        templates.append(None if kw.get("eval_set") is None else kw["eval_set"].templates)
        if precisions["android"] in failing:
            raise ParityGateError([f"android/text_encoder_xnnpack_{precisions['android']}.pte: top-1 0.9 < 0.97"], {})
        return SimpleNamespace(bundles={t: out / t for t in targets})

    monkeypatch.setattr(lowering.export, "export_bundles", export_bundles)
    monkeypatch.setattr(lowering.report, "build_report", lambda *a, **k: {"stub": True})
    monkeypatch.setattr(lowering.report, "plot", lambda *a, **k: None)
    monkeypatch.setattr(lowering.report, "to_markdown", lambda report: "report")
    return calls, failing, templates


def test_the_first_candidate_that_passes_ships(fake_lowering, tmp_path, capsys):
    calls, failing, _ = fake_lowering
    export, _ = demo.export_and_report(None, None, tmp_path / "ckpt", tmp_path, 10)
    assert calls == [demo.ANDROID_CANDIDATES[0]] and export["android_precision"] == ["image:fp32", "text:int8-dynamic"]

    calls.clear()
    failing.append(demo.ANDROID_CANDIDATES[0])  # a student whose int8-dynamic text fails the gate
    export, _ = demo.export_and_report(None, None, tmp_path / "ckpt", tmp_path, 10)
    assert calls == list(demo.ANDROID_CANDIDATES) and export["android_precision"] == ["fp32"]
    assert "failed the parity gate" in capsys.readouterr().out


def test_when_every_candidate_fails_the_gate_error_reaches_the_user(fake_lowering, tmp_path):
    calls, failing, _ = fake_lowering
    failing.extend(demo.ANDROID_CANDIDATES)
    with pytest.raises(ParityGateError, match="top-1 0.9"):
        demo.export_and_report(None, None, tmp_path / "ckpt", tmp_path, 10)
    assert calls == list(demo.ANDROID_CANDIDATES)


def test_the_bundles_class_embeddings_average_the_first_n_clip_templates(fake_lowering, tmp_path):
    from dcclip_mobile.data.labels import templates as clip_templates

    _, _, templates = fake_lowering
    demo.export_and_report(None, None, tmp_path / "ckpt", tmp_path, 10, bundle_templates=8)
    got = templates[-1]
    assert got == {lang: clip_templates(lang)[:8] for lang in ("en", "zh")} and len(got["zh"]) == 8
    demo.export_and_report(None, None, tmp_path / "ckpt", tmp_path, 10, bundle_templates=0)
    assert templates[-1] is None  # the exporter's default: its one hand-written template
