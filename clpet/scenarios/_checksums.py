"""Recorded checksums of the reference split and index files, and checking a local copy against them.

A published number is only comparable when the train/test split (or the FSCIL shot lists) is the one the paper
used. The split files are therefore hashed and compared with the values recorded here; a mismatch names the file
that differs. Where the real checksum is not known, the entry is ``None`` and the file is reported as
*unverified* (never an invented value).

Where each recorded value comes from (hash of the file bytes in the reference repository, git blob at the commit
given):

- CODA-Prompt ImageNet-R split, ``dataloaders/splits/imagenet-r_{train,test}.yaml`` of GT-RIPL/CODA-Prompt
  at commit 6417d4f68754be68b697c7ca2323ee61e791e1a3 (sha256).
- FSCIL shot lists, ``data/index_list/{cifar100,mini_imagenet,cub200}/session_N.txt`` of icoz69/CEC-CVPR2021 at
  commit 3a5d335f19349aa2e5fa75c88aa2c701b6e5513d (the lists of TOPIC, Tao et al. CVPR 2020, reused by CEC, FACT,
  CPE-CLIP and most FSCIL code; sha256).
- CIFAR-100 python pickles: the md5 values torchvision itself checks (``torchvision.datasets.CIFAR100``).
- Not recorded (``None``, reported as unverified): LAE's ImageNet-R lists ``train_list.txt`` / ``val_list.txt``
  (a GitHub gist of gqk, the L2P split) and ``train_list_coda-p.txt`` / ``val_list_coda-p.txt`` (LAE README
  attachments); their bytes were not available when this table was written.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple


@dataclass(frozen=True)
class ReferenceFiles:
    """A set of reference files: where they come from and the checksum of each (``"sha256:<hex>"`` /
    ``"md5:<hex>"``, or ``None`` when unknown)."""

    source: str
    files: Dict[str, Optional[str]] = field(default_factory=dict)


_CEC = "icoz69/CEC-CVPR2021 data/index_list (the TOPIC/CEC FSCIL session lists)"

RECORDED: Dict[str, ReferenceFiles] = {
    "imagenet-r/l2p": ReferenceFiles(
        "the LAE README (github.com/gqk/LAE: train_list.txt / val_list.txt, the L2P split)",
        {"train_list.txt": None, "val_list.txt": None},
    ),
    "imagenet-r/coda-p": ReferenceFiles(
        "GT-RIPL/CODA-Prompt dataloaders/splits/",
        {
            "imagenet-r_train.yaml": "sha256:6bcaa14ca9359915ac3a44c48ae71388146385686eb15da79a37844421a0b845",
            "imagenet-r_test.yaml": "sha256:57275ac242d68983a4f39ccb81ec34f48b1bd920b9cd79e6e8040d7c042db02a",
        },
    ),
    "imagenet-r/coda-p-lae": ReferenceFiles(
        "the LAE README (github.com/gqk/LAE: train_list_coda-p.txt / val_list_coda-p.txt)",
        {"train_list_coda-p.txt": None, "val_list_coda-p.txt": None},
    ),
    "fscil/cifar100": ReferenceFiles(_CEC, {
        "session_1.txt": "sha256:5f402fb2c5260a05bb02ea000f9b9e32f23e305281969afa6ea47a9a22b69cf7",
        "session_2.txt": "sha256:654db7b72e383a1aac94a4e570ea26c9f3cb8b7bf95a7aff2a9e1626f4e0b330",
        "session_3.txt": "sha256:a466c0f920549096435c9b298e9f52f2b4a676db34f2c54de04f4147759a2eea",
        "session_4.txt": "sha256:c2d0f0a6db516358055d448b1dd8033a778ae7ba30de78adbd8ea2e1b94282b0",
        "session_5.txt": "sha256:2907fe7d341f9f4da0c2cdf59bcf33a50619f41e9ebd3232fe2c6c11bc30bfa4",
        "session_6.txt": "sha256:87f70d04e01acb3ba0bbce24f84bf78ee905721d3609e53c5f11bf92d3237197",
        "session_7.txt": "sha256:70131153942c3a30418843097a482d0e24dedbaa394876b101db205a5099a595",
        "session_8.txt": "sha256:8bcefabac5ff2d3086e3cc097b306713661f07aa670ef3935570226293e1c2f1",
        "session_9.txt": "sha256:242fd41330db6081d11216a8324f92aebd64545b2171bd567a162a7521a62ed7",
    }),
    "fscil/mini_imagenet": ReferenceFiles(_CEC, {
        "session_1.txt": "sha256:af28c169b628923284b9905238a90a97b4a95949f66dd04f2853467a16e090a3",
        "session_2.txt": "sha256:0ca2664ee5be9852f7688e9f691397ba9ac23333b64afcbbb20012a22adee16a",
        "session_3.txt": "sha256:7a2b2d26f529247dc725d406125eab2a698523d8c669cd1e399c26d068e6d6fa",
        "session_4.txt": "sha256:e70403ced5ac32b811962cdb498b0e01bb4444da0d20539f6f183db17fe158c2",
        "session_5.txt": "sha256:4b8aa1d08d1a0aa2a2ed6baefc3aa2e801ea0a6924a8056ca4c4737d60ac0460",
        "session_6.txt": "sha256:c78365d507400f170186bc321bfa233dde1160c6df6405fba242dedda59d3070",
        "session_7.txt": "sha256:ad01e6e88f92b8dbcfa38831051f41a2639b2f455695bd2bb5db5cd1129ef88a",
        "session_8.txt": "sha256:ab39d572974acdd3e542040f3cd18b72a0fc97980f754b9335f99ca3df7f1847",
        "session_9.txt": "sha256:e808c65f6e081f5b0061cc4a8bdec51dff4ae99cb37193d239a319e388ec1226",
        # CEC's copy of the miniImageNet split csvs (the same files go to miniimagenet/split/)
        "train.csv": "sha256:6e1b0901693e2e872d8b72c311dda2afd05da93e6ca2cc16b5f742be4b18c2fc",
        "test.csv": "sha256:02516c97275c6f28a9f088cf1e67bfda0081c9ebbf28d6de5216a09f8f656b0c",
    }),
    "fscil/cub200": ReferenceFiles(_CEC, {
        "session_1.txt": "sha256:51ac011fc2cf87c374350a70ca9fbe210eb10f406b24b6675e2e143586ca24fc",
        "session_2.txt": "sha256:24d1ebea2ff962c13475ad7aa660c1e6cbeb8ecca053d82d22fabc7e7a323400",
        "session_3.txt": "sha256:531b4cdc44b54d18059ed7f2a758fc22a55ea2f3eb0b814b38a508e6ea3fb371",
        "session_4.txt": "sha256:b0415d1fe51d8b9216f0097fdc73817b7813b5b5c8a3e2fbaf43131abff4becf",
        "session_5.txt": "sha256:44e4ae53379abbf93767bc4937c36eb2e72d1741875805128f1bfee1fa6093a8",
        "session_6.txt": "sha256:dd2ac89166e698b316e24b4cbff025c5aaaf517712b94f63930127785010af3c",
        "session_7.txt": "sha256:ee5985b9b76466d368116cf25bce2ba994d9b0d4a79ac4e9055cffaff1771aa3",
        "session_8.txt": "sha256:aebaffe49fa56c8a4e4bdaa1ad2d7bb9f54647369a2985f57779c5ce18b4230d",
        "session_9.txt": "sha256:69e3c194ea2d48cf2a99a7223ca094d14a3d34f308985def22587f324f3b24dc",
        "session_10.txt": "sha256:6f669352b66fecfb9b001263e9c7a47487a65f244ad5676d0790b06b55de6db4",
        "session_11.txt": "sha256:fd3ceecd3e52d9c8f646bab41e3562d0f545c8746618fc5693ff85681a0506c1",
    }),
}


def _cifar100_md5() -> Dict[str, Optional[str]]:
    """The md5 values torchvision checks for ``cifar-100-python/{train,test,meta}``."""
    try:
        from torchvision.datasets import CIFAR100
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return {"train": None, "test": None, "meta": None}
    out: Dict[str, Optional[str]] = {name: f"md5:{md5}" for name, md5 in CIFAR100.train_list + CIFAR100.test_list}
    out[CIFAR100.meta["filename"]] = f"md5:{CIFAR100.meta['md5']}"
    return out


RECORDED["cifar100"] = ReferenceFiles("torchvision.datasets.CIFAR100 (cifar-100-python.tar.gz)", _cifar100_md5())

#: statuses written to ``scenario.info`` per file
VERIFIED, UNVERIFIED, NOT_CHECKED = "verified", "unverified (no recorded checksum)", "not checked (verify_checksums=false)"


def file_digest(path: str, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_files(
    what: str,
    group: str,
    files: Sequence[Tuple[str, str]],
    enabled: bool = True,
    recorded: Optional[Dict[str, ReferenceFiles]] = None,
) -> Dict[str, str]:
    """Check each ``(name, path)`` against ``RECORDED[group].files[name]``; returns ``{path: status}``.

    A file whose checksum differs raises ``ValueError`` with one line naming the file, both checksums, where the
    original comes from, and how to use the file anyway (``scenario.verify_checksums=false``).
    """
    table = (recorded if recorded is not None else RECORDED).get(group, ReferenceFiles("?"))
    status: Dict[str, str] = {}
    for name, path in files:
        if not enabled:
            status[path] = NOT_CHECKED
            continue
        expected = table.files.get(name)
        if expected is None:
            status[path] = UNVERIFIED
            continue
        algorithm, _, want = expected.partition(":")
        got = file_digest(path, algorithm)
        if got != want:
            raise ValueError(
                f"{what}: {path} differs from the recorded reference file ({algorithm} {got[:16]}... expected "
                f"{want[:16]}...); get the original from {table.source}, or pass scenario.verify_checksums=false "
                "to use this file anyway"
            )
        status[path] = VERIFIED
    return status


def missing(paths: Sequence[str]) -> List[str]:
    return [p for p in paths if not os.path.isfile(p)]
