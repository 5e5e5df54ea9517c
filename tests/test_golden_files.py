"""The golden vectors are facts made with the original LaMa code: a copy that drifted would test nothing."""

from __future__ import annotations

import hashlib

import pytest

# sha256 of each file as made with the original implementation (tests/golden/README.md describes them).
GOLDEN_SHA256 = {
    "README.md": "cc2029db4234ed1a170bbd9dd0c91fcf50273f96cbb0aa4482aee5098e1e01c9",
    "lama_state_dict_manifest.json": "53bc15eabb61e7c4e2fea74e6eae1f509cfc66b73283900683047a3160f88146",
    "refine/refine_case.pt": "1393826beba4086b23c991fb2eff768649e4a1952401b20d9e8566ec1cff0c5f",
    "tiny/checkpoint.ckpt": "fd14c30b2be0c2490d3e4c60304ecfcfde78e50dec2c1873d6d58fe8d99ac6ad",
    "tiny/ffc_case.pt": "bb71cdb3a33e828dccd5ac12d97dc75f97a226122b5d012a4bd068e33b2046f8",
    "tiny/inpaint_case.pt": "3671e96bd10c582356663928eb603d797e7f97db5dee39d577ff8380c66dae48",
    "tiny/spectral_case.pt": "eb2337efe6cd205a56b26badbed785a50d017d33a6b22c55d0112cbc650eb369",
}


def test_golden_folder_holds_exactly_the_known_files(golden_dir):
    present = sorted(p.relative_to(golden_dir).as_posix() for p in golden_dir.rglob("*") if p.is_file())
    assert present == sorted(GOLDEN_SHA256)


@pytest.mark.parametrize("name", sorted(GOLDEN_SHA256))
def test_golden_file_is_unchanged(golden_dir, name):
    assert hashlib.sha256((golden_dir / name).read_bytes()).hexdigest() == GOLDEN_SHA256[name]
