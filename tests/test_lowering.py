"""Lowering: a tiny student exported to every target and precision, each .pte run with the ExecuTorch
runtime, manifests checked against their files, and the parity gate refusing a perturbed student."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from dcclip_mobile import bundle_manifest as bm
from dcclip_mobile.checkpoint import save_student
from dcclip_mobile.config import load_preset
from dcclip_mobile.models import DCCLIPStudent
from dcclip_mobile.tokenizer import train_tokenizer
from lowering.coreml_backend import coreml_structure
from lowering.executorch_backend import PteRunner
from lowering.export import PRECISIONS, ParityGateError, export_bundles, main
from lowering.inputs import EvalSet, InputsError, default_eval_set, image_inputs, preprocess
from lowering.bundle import tensor_checksum

pytestmark = pytest.mark.slow


def _drawn_images(n: int, seed: int):
    """Shapes drawn with PIL: real images, for machines without Fashion-MNIST."""
    from PIL import Image, ImageDraw

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        r = lambda k: int(torch.randint(0, k, (1,), generator=g))  # noqa: E731
        img = Image.new("RGB", (48, 40), (r(256), r(256), r(256)))
        d = ImageDraw.Draw(img)
        d.ellipse((r(20), r(20), 20 + r(28), 20 + r(20)), fill=(r(256), r(256), r(256)))
        d.rectangle((r(24), r(20), 24 + r(24), 20 + r(20)), outline=(r(256), r(256), r(256)), width=3)
        out.append(img)
    return out


@pytest.fixture(scope="module")
def eval_set() -> EvalSet:
    try:
        return default_eval_set(n_calibration=8, n_parity=24)
    except InputsError:
        pass
    from lowering.inputs import FASHION_LABELS_EN, FASHION_LABELS_ZH, CALIBRATION_TEMPLATES
    from lowering.scoring import fill
    labels = {"en": FASHION_LABELS_EN, "zh": FASHION_LABELS_ZH}
    texts = [(lang, fill(CALIBRATION_TEMPLATES[lang][0], labels[lang][i])) for i in range(4) for lang in ("en", "zh")]
    return EvalSet(_drawn_images(8, 0), _drawn_images(24, 1), labels, texts)


@pytest.fixture(scope="module")
def student(tiny_tokenizer, eval_set) -> DCCLIPStudent:
    torch.manual_seed(0)
    cfg = load_preset("tiny")
    cfg.text.vocab_size = tiny_tokenizer.vocab_size
    model = DCCLIPStudent(cfg)
    # An untrained student's BatchNorm statistics (mean 0, var 1) make the image activations vanish
    # (~1e-7 at the embedding); estimate them on real images as training would, so parity is meaningful.
    model.train()
    with torch.no_grad():
        model.image(torch.cat([a[0] for a in image_inputs(eval_set.calibration_images, cfg)]))
    return model.eval()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, student, tiny_tokenizer, eval_set):
    out = tmp_path_factory.mktemp("bundles")
    ckpt = save_student(student, tiny_tokenizer, out / "checkpoint")
    precisions = {t: list(p) for t, p in PRECISIONS.items()}
    # 8da4w of a random tiny text tower sits below the 0.99 gate; the gate is exercised on its own below
    result = export_bundles(student, tiny_tokenizer, ["android", "ios", "torchscript"], out / "bundles", precisions,
                            eval_set, allow_parity_failure=True, checkpoint=ckpt, measure_latency=False,
                            log=lambda *_: None)
    return result


def test_every_target_and_precision_is_written(bundles):
    android = bundles.manifests["android"]
    recipes = {(a["tower"], a["precision"]) for a in android["artifacts"]}
    for p in PRECISIONS["android"]:
        assert ("text", p) in recipes
    assert ("image", "int8") in recipes and ("image", "fp32") in recipes and ("image", "int8-dynamic") in recipes
    ios = bundles.manifests["ios"]
    assert {(a["tower"], a["precision"], a["format"]) for a in ios["artifacts"]} >= {
        (t, p, "mlpackage") for t in ("image", "text") for p in PRECISIONS["ios"]} | {
        ("image", "fp16", "pte"), ("text", "fp16", "pte")}
    for target, manifest in bundles.manifests.items():
        assert bm.default_artifacts(manifest).keys() == {"image", "text"}
        assert (bundles.bundles[target] / bm.MANIFEST_FILE).is_file()


def test_each_xnnpack_pte_runs_in_the_executorch_runtime_and_matches_golden(bundles, tiny_tokenizer):
    bundle = bundles.bundles["android"]
    manifest = bm.load_manifest(bundle)
    golden = bm.load_golden(bundle)
    from PIL import Image
    cfg = load_preset("tiny")
    for a in manifest["artifacts"]:
        runner = PteRunner(bundle / a["file"])  # quantized kernels are registered by PteRunner
        assert [{"shape": s["shape"], "dtype": s["dtype"]} for s in a["inputs"]] == runner.input_meta
        assert runner.output_meta == [{"shape": a["output"]["shape"], "dtype": "float32"}]
        assert a["delegate_partitions"] >= 1
        if a["tower"] == "text":
            for g in golden["texts"]:
                enc = tiny_tokenizer([g["text"]])
                assert enc["input_ids"][0].tolist() == g["input_ids"]
                got = runner(enc["input_ids"], enc["attention_mask"])[0]
                cos = torch.nn.functional.cosine_similarity(got, torch.tensor(g["embedding"]), dim=0)
                assert cos > (0.9999 if a["precision"] == "fp32" else 0.95), (a["file"], g["text"], float(cos))
        else:
            for g in golden["images"]:
                x = preprocess(Image.open(bundle / g["file"]), cfg)
                assert tensor_checksum(x)["sha256"] == g["preprocessed"]["sha256"]
                got = runner(x)[0]
                cos = torch.nn.functional.cosine_similarity(got, torch.tensor(g["embedding"]), dim=0)
                assert cos > (0.9999 if a["precision"] == "fp32" else 0.99), (a["file"], float(cos))
        assert float(torch.linalg.vector_norm(got)) == pytest.approx(1.0, abs=1e-3)


def test_parity_figures_and_gate_in_the_manifest(bundles):
    android = bundles.manifests["android"]
    by = {(a["tower"], a["precision"]): a for a in android["artifacts"]}
    for tower in ("image", "text"):
        fp32 = by[(tower, "fp32")]["parity"]
        assert fp32["gate"] == "fp32" and fp32["passed"] and fp32["min_cosine"] >= 0.9999
        int8 = by[(tower, "int8")]["parity"]
        assert int8["gate"] == "quantized" and int8["passed"], int8
        assert int8["mean_cosine"] >= 0.99 and int8["top1_agreement"] >= 0.97
        assert by[(tower, "int8")]["size_bytes"] < by[(tower, "fp32")]["size_bytes"]
    # the 4-bit embedding and the int8 one are fused into quantized kernels outside the delegate
    assert "quantized_decomposed.embedding_4bit" in by[("text", "8da4w")]["ops_outside_delegate"]
    assert "quantized_decomposed.embedding_byte" in by[("text", "int8")]["ops_outside_delegate"]
    assert by[("image", "int8")]["ops_outside_delegate"] == {}
    gate = android["parity_gate"]
    assert gate["passed"] == (not gate["failures"]) and gate["overridden"] == bool(gate["failures"])
    assert all(a["parity"]["passed"] for m in (bundles.manifests["torchscript"],) for a in m["artifacts"])


def test_manifest_matches_files_and_detects_corruption(bundles, tmp_path):
    for target, bundle in bundles.bundles.items():
        assert bm.verify_files(bundle) == [], target
    copy = tmp_path / "android"
    shutil.copytree(bundles.bundles["android"], copy)
    pte = next(copy.glob("text_encoder_*int8.pte"))
    data = bytearray(pte.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pte.write_bytes(bytes(data))
    (copy / "stray.bin").write_bytes(b"x")
    problems = bm.verify_files(copy)
    assert any(pte.name in p and "sha256" in p for p in problems)
    assert any("stray.bin" in p for p in problems)


def test_manifest_describes_inputs_preprocessing_and_tokenizer(bundles, tiny_tokenizer, eval_set):
    m = bundles.manifests["android"]
    cfg = load_preset("tiny")
    assert m["image"]["inputs"] == [{"name": "pixel_values", "shape": [1, 3, 64, 64], "dtype": "float32"}]
    assert m["text"]["inputs"][0] == {"name": "input_ids", "shape": [1, 16], "dtype": "int64"}
    assert bundles.manifests["ios"]["text"]["inputs"][0]["dtype"] == "int32"
    assert m["image"]["preprocess"]["mean"] == list(cfg.image.image_mean)
    assert m["text"]["special_ids"] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    assert m["text"]["context_length"] == tiny_tokenizer.context_length
    assert m["embed_dim"] == 64 and m["logit_scale"] == pytest.approx(1 / 0.07, rel=1e-3)
    assert len(m["student"]["checkpoint_sha256"]) == 4
    classes = json.loads((bundles.bundles["android"] / bm.CLASS_EMBEDDINGS_FILE).read_text())
    assert len(classes["embeddings_en"]) == len(classes["labels_en"]) == len(classes["embeddings_zh"])
    # the rule the class embeddings were built with, which the report and the apps score with
    assert m["class_embeddings"]["templates"] == classes["templates"] == {"en": ["a photo of a {c}."],
                                                                          "zh": ["一张{c}的照片。"]}
    assert m["calibration"] == {**eval_set.provenance, "images": len(eval_set.calibration_images),
                                "parity_images": len(eval_set.parity_images), "texts": len(eval_set.calibration_texts)}
    assert (bundles.bundles["android"] / "tokenizer.json").is_file()


def test_coreml_packages_match_the_manifest(bundles):
    bundle = bundles.bundles["ios"]
    m = bm.load_manifest(bundle)
    for a in m["artifacts"]:
        assert a["parity"]["gate"] == "structure" and a["parity"]["passed"], a
        if a["format"] == "mlpackage":
            s = coreml_structure(bundle / a["file"])
            assert s["inputs"] == a["inputs"] and s["outputs"] == [a["output"]]
            if a["precision"] == "int8":
                assert "constexpr_affine_dequantize" in s["ops"] or "constexpr_blockwise_shift_scale" in s["ops"]
            if a["precision"] == "palettize4":
                assert any("lut" in op for op in s["ops"])
        else:
            assert a["delegate_partitions"] == 1 and a["ops_outside_delegate"] == {}


def test_gate_refuses_a_perturbed_student_and_writes_nothing(student, tiny_tokenizer, eval_set, tmp_path):
    import copy
    bad = copy.deepcopy(student)
    with torch.no_grad():
        # one huge activation: per-tensor static int8 then has no resolution left for the others
        bad.text.blocks[0].mlp[0].bias[0] = 1e4
    with pytest.raises(ParityGateError) as e:
        export_bundles(bad, tiny_tokenizer, ["android"], tmp_path / "out", {"android": ["int8"]}, eval_set,
                       measure_latency=False, log=lambda *_: None)
    assert any("text_encoder_xnnpack_int8.pte" in f for f in e.value.failures)
    assert not (tmp_path / "out" / "android").exists()
    assert list((tmp_path / "out").iterdir()) == []  # no temporary directory left behind either


def test_cli_bad_inputs(tmp_path, capsys, student, tiny_tokenizer):
    assert main(["--target", "phone", "--checkpoint", str(tmp_path)]) == 2
    assert "accepted: android, ios, torchscript, all" in capsys.readouterr().err
    assert main(["--target", "android", "--precision", "int3", "--checkpoint", str(tmp_path)]) == 2
    assert "int8" in capsys.readouterr().err
    assert main(["--target", "android", "--checkpoint", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    ckpt = save_student(student, tiny_tokenizer, tmp_path / "ckpt")
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert main(["--target", "torchscript", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    assert "safetensors" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_exports_a_checkpoint(tmp_path, student, tiny_tokenizer):
    ckpt = save_student(student, tiny_tokenizer, tmp_path / "ckpt")
    out = tmp_path / "out"
    assert main(["--target", "torchscript", "--checkpoint", str(ckpt), "--out", str(out), "--no-latency",
                 "--eval-images", "8"]) == 0
    m = bm.load_manifest(out / "torchscript")
    assert m["parity_gate"]["passed"] and bm.verify_files(out / "torchscript") == []
    # without --images: Fashion-MNIST's test split, as always, and the manifest says so
    assert m["calibration"]["source"] == "fashion-mnist (default)" and m["calibration"]["images"] == 4
    assert m["calibration"]["parity_images"] == 8 and m["calibration"]["dataset_id"].startswith("fashion-mnist-test")


def test_verify_coreml_checks_an_ios_bundle_here(bundles, capsys):
    from lowering.verify_coreml import main as verify_main

    assert verify_main([str(bundles.bundles["ios"])]) == 0
    out = capsys.readouterr().out
    assert "structure" in out or "min cosine" in out
    assert verify_main([str(bundles.bundles["ios"] / "nope")]) == 2


def test_static_int8_keeps_the_image_stem_fp32_and_quantizes_the_rest():
    from lowering.encoders import example_inputs, make_encoder
    from lowering.quantize import quantize_encoder

    cfg = load_preset("tiny")
    model = DCCLIPStudent(cfg).eval()
    example = example_inputs(cfg, "image")
    q = quantize_encoder(make_encoder(model, "image"), "image", "int8", example, [example])
    convs = [n for n in q.graph.nodes if n.target == torch.ops.aten.conv2d.default]
    dequantized = ["dequantize" in str(n.args[1].target) for n in convs]  # the weight's producer
    assert dequantized[0] is False, "the stem conv (reads the pixels) must keep fp32 weights"
    assert all(dequantized[1:]) and len(convs) > 3


# --- length buckets: the gate sees the lengths a phone sends ------------------------------------------

def test_the_gate_fails_a_text_artifact_that_drifts_on_one_length_bucket():
    from lowering.parity import QUANTIZED_BUCKET_MIN_COSINE, measure

    torch.manual_seed(0)
    ref = torch.nn.functional.normalize(torch.randn(40, 16), dim=-1)
    buckets = ["en 1-16"] * 20 + ["zh 50-64"] * 10 + ["en 50-64"] * 10
    got = ref.clone()
    got[30:] = torch.nn.functional.normalize(ref[30:] + 0.05 * torch.randn(10, 16), dim=-1)  # long English drifts
    p = measure(ref, got, quantized=True, agreement=(1.0, 40), buckets=buckets)
    assert p.mean_cosine > 0.99  # the mean over all texts alone would pass
    assert list(p.buckets) == ["en 1-16", "en 50-64", "zh 50-64"] and p.buckets["en 50-64"]["n"] == 10
    assert p.worst_bucket == "en 50-64" and p.buckets["en 50-64"]["min_cosine"] < QUANTIZED_BUCKET_MIN_COSINE
    assert not p.passed and any(f.startswith("en 50-64-token inputs: min cosine") for f in p.failures)
    assert "worst bucket en 50-64" in p.summary() and p.bucket_table().count("\n") == 2
    ok = measure(ref, ref.clone(), quantized=True, agreement=(1.0, 40), buckets=buckets)
    assert ok.passed and ok.buckets["zh 50-64"]["min_cosine"] > 0.9999
    fp32 = measure(ref, got, quantized=False, buckets=buckets)
    assert not fp32.passed and fp32.worst_bucket == "en 50-64"


def test_length_texts_fill_every_bucket_in_both_languages(sample_texts):
    from lowering.inputs import BUILTIN_LONG_TEXTS, length_texts, text_bucket

    tok = train_tokenizer(sample_texts * 8, vocab_size=1000, context_length=64)
    chosen = length_texts(tok, BUILTIN_LONG_TEXTS, per_bucket=4)
    counts: dict[str, int] = {}
    for lang, text in chosen:
        n = int(tok([text])["attention_mask"].sum())
        counts[text_bucket(lang, n)] = counts.get(text_bucket(lang, n), 0) + 1
        assert any(text in t or t.startswith(text) for lg, t in BUILTIN_LONG_TEXTS if lg == lang)
    assert counts == {f"{lang} {b}": 4 for lang in ("en", "zh") for b in ("1-16", "17-32", "33-49", "50-64")}
    again = length_texts(tok, BUILTIN_LONG_TEXTS, per_bucket=4, exclude={t for _, t in chosen})
    assert not {t for _, t in again} & {t for _, t in chosen}


def test_calibration_and_parity_cover_long_inputs_in_both_languages(eval_set, sample_texts):
    """A context-64 student: the parity texts and the calibration texts both reach the last bucket."""
    from lowering.export import make_references

    tok = train_tokenizer(sample_texts * 8, vocab_size=1000, context_length=64)
    cfg = load_preset("tiny")
    cfg.text.vocab_size, cfg.text.context_length = tok.vocab_size, 64
    torch.manual_seed(0)
    refs = make_references(DCCLIPStudent(cfg).eval(), tok, eval_set)
    assert {f"{lang} 50-64" for lang in ("en", "zh")} <= set(refs.text_buckets)
    assert sum(b.endswith("50-64") for b in refs.text_buckets) >= 2 * 16
    lengths = [int(mask.sum()) for _, mask in refs.text_calibration]
    assert sum(n >= 50 for n in lengths) >= 2 * 8 and min(lengths) < 16
    assert refs.length_texts["parity"] == len(refs.text_buckets) - len(eval_set.parity_texts())
    parity = {tuple(ids[0].tolist()) for ids, _ in refs.text_inputs}
    assert not parity & {tuple(ids[0].tolist()) for ids, m in refs.text_calibration if int(m.sum()) > 16}


def test_text_artifacts_report_their_length_buckets(bundles):
    android = bundles.manifests["android"]
    assert android["parity_gate"]["length_texts"]["parity"] > 0
    assert android["parity_gate"]["thresholds"]["quantized_bucket_min_cosine"] == 0.99
    for a in android["artifacts"]:
        if a["tower"] == "text":
            assert set(a["parity"]["buckets"]) == {"en 1-16", "zh 1-16"}  # the tiny student's context is 16
            assert a["parity"]["worst_bucket"] in a["parity"]["buckets"]
        else:
            assert a["parity"]["buckets"] == {}


def test_export_times_on_its_threads_and_puts_the_callers_back(student, tiny_tokenizer, eval_set, tmp_path):
    """Export measures latency on LATENCY_THREADS (torch's pool and ExecuTorch's own) and leaves both as the
    caller had them: a library call must not change process-wide state."""
    from executorch.extension.pybindings import portable_lib

    before, et_before = torch.get_num_threads(), portable_lib._threadpool_get_thread_count()
    torch.set_num_threads(1)
    try:
        export_bundles(student, tiny_tokenizer, ["torchscript"], tmp_path / "out", None, eval_set,
                       measure_latency=True, log=lambda *_: None)
        assert torch.get_num_threads() == 1
        assert portable_lib._threadpool_get_thread_count() == et_before
    finally:
        torch.set_num_threads(before)
