"""The manifest's artifact entries are `Artifact` records (dcclip_mobile/bundle_manifest.py): a record round-trips
through to_dict/from_dict, and what export writes is exactly to_dict() of the records it built."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import drawn_images
from dcclip_mobile import bundle_manifest as bm
from dcclip_mobile.config import load_preset
from dcclip_mobile.data.fashion_mnist import CLASSES_EN, CLASSES_ZH
from dcclip_mobile.models import DCCLIPStudent
from lowering.export import export_bundles
from lowering.inputs import CALIBRATION_TEMPLATES, EvalSet, image_inputs
from lowering.scoring import fill


def _record(**changes) -> bm.Artifact:
    fields = dict(tower="text", backend="xnnpack", format="pte", precision="int8", file="text_encoder_xnnpack_int8.pte",
                  size_bytes=1234, inputs=[{"name": "input_ids", "shape": [1, 16], "dtype": "int64"},
                                           {"name": "attention_mask", "shape": [1, 16], "dtype": "int64"}],
                  output={"name": "embedding", "shape": [1, 64], "dtype": "float32"},
                  quantization={"scheme": "pt2e-static"}, delegate_partitions=1,
                  ops_outside_delegate={"quantized_decomposed.embedding_byte": 1}, latency_ms_host=0.5,
                  export_seconds=1.25, parity={"gate": "quantized", "passed": True}, default=True,
                  length_buckets=[{"length": 16, "method": "forward", "delegate_partitions": 1,
                                   "latency_ms_host": 0.5}])
    return bm.Artifact(**{**fields, **changes})


def test_an_artifact_round_trips_through_its_manifest_entry():
    for record in (_record(), _record(length_buckets=None, backend="coreml", format="mlpackage",
                                      delegate_partitions=None, ops_outside_delegate=None, latency_ms_host=None)):
        entry = record.to_dict()
        assert bm.Artifact.from_dict(entry) == record
        assert json.loads(json.dumps(entry)) == entry and bm.Artifact.from_dict(json.loads(json.dumps(entry))) == record
    assert list(_record().to_dict()) == [
        "tower", "backend", "format", "precision", "file", "size_bytes", "inputs", "output", "quantization",
        "delegate_partitions", "ops_outside_delegate", "latency_ms_host", "export_seconds", "parity", "default",
        "length_buckets"]
    assert "length_buckets" not in _record(length_buckets=None).to_dict()


def test_an_entry_with_missing_or_unknown_keys_is_refused():
    entry = _record().to_dict()
    del entry["parity"]
    with pytest.raises(bm.BundleError, match="'text_encoder_xnnpack_int8.pte' lacks parity; re-export"):
        bm.Artifact.from_dict(entry)
    with pytest.raises(bm.BundleError, match="has unknown keys speed"):
        bm.Artifact.from_dict({**_record().to_dict(), "speed": 1})


@pytest.mark.slow
def test_precision_items_for_one_tower_are_parsed_and_refused_clearly():
    from lowering.export import ExportError, resolve_precisions, tower_default, tower_precisions

    items = resolve_precisions(["android", "ios"], "fp32,text:int8-dynamic,image:fp16")
    assert items == {"android": ["fp32", "text:int8-dynamic"], "ios": ["image:fp16"]}  # each target its own
    assert tower_precisions("android", "image", items["android"]) == ["fp32"]
    assert tower_precisions("android", "text", items["android"]) == ["fp32", "int8-dynamic"]
    assert tower_default("android", "text", items["android"]) == "int8-dynamic"
    assert tower_default("android", "image", items["android"]) == "fp32"
    assert tower_precisions("android", "image", ["text:int8"]) == ["int8"]  # a tower asked nothing: the default
    with pytest.raises(ExportError, match="photo:int8.*image:P or text:P"):
        resolve_precisions(["android"], "photo:int8")
    with pytest.raises(ExportError, match="unknown precision text:int3"):
        resolve_precisions(["android"], "text:int3")


def test_exported_manifests_hold_exactly_their_artifact_records(tiny_tokenizer, tmp_path):
    torch.manual_seed(0)
    cfg = load_preset("tiny")
    cfg.text.vocab_size = tiny_tokenizer.vocab_size
    model = DCCLIPStudent(cfg)
    images = drawn_images(12, 3)
    model.train()
    with torch.no_grad():  # real BatchNorm statistics, as training would leave them
        model.image(torch.cat([x for (x,) in image_inputs(images, cfg)]))
    model.eval()
    labels = {"en": list(CLASSES_EN), "zh": list(CLASSES_ZH)}
    texts = [(lang, fill(CALIBRATION_TEMPLATES[lang][0], labels[lang][i])) for i in range(4) for lang in ("en", "zh")]
    result = export_bundles(model, tiny_tokenizer, ["android", "ios", "torchscript"], tmp_path,
                            {"android": ["fp32", "8da4w", "text:int8-dynamic"], "ios": ["fp16"], "torchscript": ["fp32"]},
                            EvalSet(images[:6], images[6:], labels, texts), allow_parity_failure=True,
                            measure_latency=False, log=lambda *_: None)
    for target, records in result.artifacts.items():
        written = bm.load_manifest(result.bundles[target])["artifacts"]
        assert written == result.manifests[target]["artifacts"] == [a.to_dict() for a in records], target
        assert [bm.Artifact.from_dict(entry) for entry in written] == records
        for a in records:
            assert a.file == bm.artifact_file_name(a.tower, a.backend, a.format, a.precision)
            assert (a.length_buckets is not None) == (a.backend == "xnnpack" and a.tower == "text"), a.file
    android = {(a.tower, a.precision): a for a in result.artifacts["android"]}
    # 8da4w's image tower is the int8 recipe; the text .pte's buckets: 12 tokens and "forward" at the 16-token context
    assert sorted(android) == [("image", "fp32"), ("image", "int8"), ("text", "8da4w"), ("text", "fp32"),
                               ("text", "int8-dynamic")]
    assert [b["method"] for b in android["text", "fp32"].length_buckets] == ["forward_12", "forward"]
    # text:int8-dynamic is the text tower's alone and its default; the image tower's is the first asked (fp32)
    assert {t: a["file"] for t, a in bm.default_artifacts(result.manifests["android"]).items()} == {
        "image": "image_encoder_xnnpack_fp32.pte", "text": "text_encoder_xnnpack_int8-dynamic.pte"}
    assert result.manifests["android"]["default_precision"] == "image:fp32,text:int8-dynamic"
    assert result.manifests["ios"]["default_precision"] == "fp16"
    assert {t: a["file"] for t, a in bm.default_artifacts(result.manifests["ios"]).items()} == {
        "image": "image_encoder_coreml_fp16.mlpackage", "text": "text_encoder_coreml_fp16.mlpackage"}
    assert [a.file for a in result.artifacts["ios"]] == [
        "image_encoder_coreml_fp16.mlpackage", "image_encoder_coreml_fp16.pte",
        "text_encoder_coreml_fp16.mlpackage", "text_encoder_coreml_fp16.pte"]


@pytest.mark.slow
def test_a_pte_is_checked_against_the_manifest_by_its_backend_module(tiny_student, tmp_path):
    """executorch_backend's structure checks, on real lowered programs: I/O read from the program's metadata
    (dtypes by the one table of ExecuTorch's scalar types), and whether the graph is one delegate partition."""
    from lowering.encoders import example_inputs, input_specs, make_encoder, output_spec
    from lowering.executorch_backend import check_pte_structure, lower_to_pte

    cfg = tiny_student.cfg
    for tower in ("image", "text"):
        lowered = lower_to_pte(make_encoder(tiny_student, tower), example_inputs(cfg, tower), "xnnpack")
        path = tmp_path / f"{tower}.pte"
        path.write_bytes(lowered.buffer)
        ins, out = [s.to_dict() for s in input_specs(cfg, tower)], [output_spec(cfg).to_dict()]
        assert check_pte_structure(path, ins, out) == []
        if tower == "image":
            assert lowered.whole_graph_problems() == []
            assert check_pte_structure(path, ins, [{**out[0], "shape": [1, 7]}]) == [
                f"image.pte: outputs are [{{'shape': [1, {cfg.embed_dim}], 'dtype': 'float32'}}], "
                "the manifest says [{'shape': [1, 7], 'dtype': 'float32'}]"]
        else:  # the embedding lookup stays outside XNNPACK
            assert lowered.whole_graph_problems() == [
                f"expected the whole graph in one XNNPACK partition, got 1 partition(s) and outside ops "
                f"{lowered.ops_outside}"]
            int32 = [s.to_dict() for s in input_specs(cfg, tower, id_dtype="int32")]
            problems = check_pte_structure(path, int32, out)
            assert len(problems) == 1 and "'dtype': 'int64'" in problems[0] and "'dtype': 'int32'" in problems[0]
