"""Fidelity harness: clpet's TRACE metrics against TRACE's own evaluation code on the same strings.

Runs TRACE's ``evaluations/eval_*.py`` (BeyonderXX/TRACE) and the Hugging Face ``sari`` metric script (from a
checkout of huggingface/evaluate, loaded by local path, so nothing is fetched) next to ``clpet.evaluation
.text_metrics`` on generated test cases -- multi-sentence prose, code with Py150 literal placeholders, answer
letters, empty outputs -- and prints the largest difference per metric. Needs, besides clpet's ``lm`` extra:
``evaluate datasets nltk fuzzywuzzy sacremoses`` (without python-Levenshtein, as TRACE's requirements install it).

    python experiments/fidelity/trace_metrics.py --trace-repo PATH/TRACE --evaluate-repo PATH/evaluate \
        [--reference-site VENV/lib/pythonX.Y/site-packages]

``--reference-site`` appends the site-packages of a separate environment holding those packages, so clpet's own
environment need not carry them (clpet's packages stay first on the path).

TRACE's ``metrics.py`` calls ``datasets.load_metric("sari")``, which recent ``datasets`` releases removed; the
harness provides that name as ``evaluate.load`` of the local script. Results: ``experiments/fidelity/RESULTS.md``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import random
import sys
from typing import Callable, Dict, List, Sequence, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

WORDS = ("the council approved budget of city new plan vote meeting members said park road school water tax "
         "public hearing item motion second favor opposed . , ; ? ! 's n't 95 species are currently accepted").split()
CODE = ["x = <NUM_LIT>", "print(<STR_LIT:hello>)", "return self . <STR_LIT>", "c = '<CHAR_LIT:a>'",
        "for i in range ( <NUM_LIT> ) :", "def f ( a , b ) : return a + b", "import os . path as p"]


def prose(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).replace(" .", ".", rng.random() < 0.5)


def make_cases(seed: int, n: int) -> Dict[str, List[Tuple[str, str, str]]]:
    """(source, prediction, reference) triples per kind of task."""
    rng = random.Random(seed)
    cases: Dict[str, List[Tuple[str, str, str]]] = {"prose": [], "code": [], "choice": []}
    for i in range(n):
        ref = prose(rng, rng.randint(3, 30))
        pred = "" if i % 17 == 0 else (ref if i % 11 == 0 else prose(rng, rng.randint(1, 30)))
        cases["prose"].append((prose(rng, rng.randint(5, 40)) + " " + ref, pred, ref))
        cref = " ".join(rng.sample(CODE, rng.randint(1, 3)))
        cpred = "" if i % 13 == 0 else " ".join(rng.sample(CODE, rng.randint(1, 3)))
        cases["code"].append(("", cpred, cref))
        letter = rng.choice("ABCD")
        cases["choice"].append(("", rng.choice("ABCD") + "\nBecause " + prose(rng, 6), letter + "\nBecause " + prose(rng, 6)))
    return cases


def clpet_mean(metric: Callable[[str, str, str], float], triples: Sequence[Tuple[str, str, str]]) -> float:
    return sum(metric(p, r, s) for s, p, r in triples) / len(triples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trace-repo", required=True)
    ap.add_argument("--evaluate-repo", required=True)
    ap.add_argument("--cases", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference-site", default=None)
    args = ap.parse_args()
    if args.reference_site:
        sys.path.append(args.reference_site)

    import datasets
    import evaluate

    sari_script = os.path.join(args.evaluate_repo, "metrics", "sari", "sari.py")
    datasets.load_metric = lambda name: evaluate.load(sari_script)  # the name TRACE's metrics.py imports
    sys.path.insert(0, args.trace_repo)
    sys.path.insert(0, os.path.join(args.trace_repo, "evaluations"))
    trace = {m: importlib.import_module(m) for m in ("metrics", "eval_CStance", "eval_MeetingBank", "eval_Py150",
                                                     "eval_ScienceQA", "eval_20Minuten")}
    from clpet.evaluation import text_metrics as tm

    cases = make_cases(args.seed, args.cases)
    rows = []

    def compare(name: str, kind: str, theirs: float, ours: float) -> None:
        rows.append((name, kind, theirs, ours, abs(theirs - ours)))

    for kind in ("prose", "code", "choice"):
        src, pred, ref = (list(x) for x in zip(*cases[kind]))
        compare("exact_match_cased (C-STANCE, FOMC, NumGLUE)", kind,
                trace["eval_CStance"].eval(pred, ref)["accuracy"], clpet_mean(tm.exact_match_cased, cases[kind]))
    src, pred, ref = (list(x) for x in zip(*cases["prose"]))
    compare("rouge_l_trace (MeetingBank)", "prose", trace["eval_MeetingBank"].eval(pred, ref)["rouge-L"],
            clpet_mean(tm.rouge_l_trace, cases["prose"]))
    sari_ref = trace["metrics"].caculate_sari(src, pred, ref)[0]["sari"] / 100
    compare("sari (20Minuten)", "prose", sari_ref, clpet_mean(tm.sari, cases["prose"]))
    src, pred, ref = (list(x) for x in zip(*cases["code"]))
    compare("code_similarity (Py150)", "code", trace["eval_Py150"].eval(pred, ref)["similarity"] / 100,
            clpet_mean(tm.code_similarity, cases["code"]))
    src, pred, ref = (list(x) for x in zip(*cases["choice"]))
    compare("choice_accuracy (ScienceQA)", "choice", trace["eval_ScienceQA"].eval(pred, ref)["accuracy"],
            clpet_mean(tm.choice_accuracy, cases["choice"]))

    print(f"# TRACE metrics: clpet vs TRACE's code, {args.cases} cases per kind, seed {args.seed}")
    print(f"# machine: {platform.platform()}, python {platform.python_version()}")
    print("| metric | cases | TRACE | clpet | abs. difference |\n|---|---|---|---|---|")
    for name, kind, theirs, ours, diff in rows:
        print(f"| {name} | {kind} | {theirs:.12f} | {ours:.12f} | {diff:.1e} |")
    worst = max(r[4] for r in rows)
    print(f"\nlargest difference: {worst:.1e}")
    sys.exit(0 if worst < 1e-9 else 1)


if __name__ == "__main__":
    main()
