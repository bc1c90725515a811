"""Nothing runs that the user did not ask to run: every ``torch.load`` in clpet and its experiments reads with
``weights_only=True``; Hugging Face language models load with ``trust_remote_code=False`` unless a key says so."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def torch_load_calls():
    for path in [*(ROOT / "clpet").rglob("*.py"), *(ROOT / "experiments").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                yield path, node


def test_every_torch_load_is_weights_only():
    calls = list(torch_load_calls())
    assert calls  # the check looks at real calls
    for path, node in calls:
        kw = {k.arg: k.value for k in node.keywords}
        ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
        assert ok, f"{path.relative_to(ROOT)}:{node.lineno}: torch.load without weights_only=True"


def test_language_models_do_not_run_repository_code_by_default():
    from clpet.backbones.lm import HFCausalLM, HFSeq2Seq

    assert HFCausalLM.Config().trust_remote_code is False and HFSeq2Seq.Config().trust_remote_code is False
