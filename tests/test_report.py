"""``clpet report``: one self-contained HTML page of a sweep, loaded in a real headless browser (Debian
``chromium``, installed by ``scripts/setup.sh --dev``), where its tables and images must render."""
import re
import shutil
import subprocess

import pytest

from clpet.cli import main

# appended to a copy of the page: after load, count what the browser actually decoded and laid out
PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const decoded = images.filter(i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0);
  const out = document.createElement("div");
  out.id = "probe";
  out.textContent = `images=${images.length} decoded=${decoded.length} ` +
    `tables=${document.querySelectorAll("table").length} ` +
    `compare_rows=${document.querySelectorAll("table.compare tbody tr").length} ` +
    `provenance=${document.querySelectorAll("details.provenance").length}`;
  document.body.appendChild(out);
});
</script>"""


def browser() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("no chromium here: install it (apt-get install -y chromium; scripts/setup.sh --dev does)")
    return found


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two methods x two seeds on the synthetic stream, as a sweep folder."""
    root = tmp_path_factory.mktemp("report")
    for method in ("simplecil", "finetune"):
        for seed in (0, 1):
            out = root / "sweep" / f"{method}-{seed}"
            assert main(["run", "scenario=synthetic", f"method={method}", f"seed={seed}", f"out_dir={out}",
                         "plots=false", "progress=false", "checkpoint=false"]) == 0
    return root / "sweep"


@pytest.mark.timeout(300)
def test_the_report_renders_its_tables_and_figures_in_headless_chromium(sweep, tmp_path, capsys):
    page = tmp_path / "report.html"
    assert main(["report", str(sweep), "--out", str(page)]) == 0
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained: nothing to fetch
    probed = tmp_path / "probed.html"
    probed.write_text(text.replace("</body>", PROBE + "</body>"))
    dom = subprocess.run(
        [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<div id="probe">([^<]*)</div>', dom)
    assert found, dom[-2000:]
    counts = dict(kv.split("=") for kv in found.group(1).split())
    # per scenario: 3 comparison figures; per run: its heatmap -> 3 + 4 images, all decoded and laid out
    assert counts["images"] == "7" and counts["decoded"] == "7", counts
    assert counts["compare_rows"] == "2" and counts["provenance"] == "4", counts
    assert int(counts["tables"]) == 1 + 4  # the comparison and each run's metrics


def test_report_of_a_folder_without_runs_fails_in_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("clpet: error: no metrics.json in") and "\n" not in err
