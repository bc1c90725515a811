"""Every run folder records what produced its numbers: code commit, library versions, seed, precision, world size
and global batch, class order, split files with checksums, backbone weights with checksums; a resume adds a
record of its own."""
import hashlib
import json

from clpet.cli import main
from clpet.provenance import weight_files
from tests.paper_fixtures import write_imagenet_r


def test_a_run_folder_holds_its_provenance_and_a_resume_adds_a_record(tmp_path, capsys):
    write_imagenet_r(tmp_path, n_classes=200, per_class=2)
    weights = tmp_path / "w" / "model.safetensors"
    out = tmp_path / "run"
    args = ["run", "scenario=imagenet-r", "method=simplecil", f"data_root={tmp_path}", f"out_dir={out}",
            "backbone.model=vit_tiny_patch16_224", "backbone.pretrained=false", "backbone.image_size=32",
            "scenario.increment=100", "progress=false", "plots=false", "preset=none"]
    assert main(args) == 0
    records = json.loads((out / "provenance.json").read_text())
    assert len(records) == 1
    rec = records[0]
    assert rec["code"]["commit"] and rec["libraries"]["torch"] and rec["libraries"]["timm"]
    assert rec["run"]["seed"] == 0 and rec["run"]["precision"] == "fp32" and rec["run"]["world_size"] == 1
    assert rec["run"]["preset"] == "none"
    assert rec["data"]["class_order"][:3] and len(rec["data"]["class_order"]) == 200
    split_files = rec["data"]["files"]
    assert {p.rsplit("/", 1)[1] for p in split_files} == {"train_list.txt", "val_list.txt"}
    for path, digest in split_files.items():
        assert digest == hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert rec["backbone"]["model"] == "vit_tiny_patch16_224" and rec["backbone"]["weights"] is None
    assert main([*args, "resume=true"]) == 0
    assert len(json.loads((out / "provenance.json").read_text())) == 2
    capsys.readouterr()


def test_a_packaged_backbones_weights_are_hashed(tmp_path):
    from clpet.backbones import build_backbone
    from clpet.provenance import file_checksums

    bb = build_backbone({"name": "minilm"})
    files = weight_files(bb.weight_path)
    assert files and all(f.endswith((".safetensors", ".bin")) for f in files)
    sums = file_checksums(files)
    assert all(len(v) == 64 for v in sums.values())
