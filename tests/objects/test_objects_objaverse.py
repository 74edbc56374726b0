"""Objaverse ingestion against an offline mirror in the package's cache layout (no network)."""

from __future__ import annotations

import os

import pytest

from dga_engine.objects.ingest import quarantine_records
from dga_engine.objects.objaverse_source import (
    PAPER_CATEGORIES,
    ObjaverseError,
    ingest_objaverse,
    label_for,
    select_objaverse,
)
from dga_engine.objects.store import ObjectStore

from .objects_helpers import write_objaverse_mirror

UNSAFE = "../../escape"


def _ann(name, tags, licence="by"):
    return {"name": name, "tags": [{"name": t, "slug": t} for t in tags], "license": licence, "uri": f"https://example.invalid/{name}"}


ANNOTATIONS = {
    "a1f00000000000000000000000000001": _ann("red mug", ["mug", "red"]),
    "a1f00000000000000000000000000002": _ann("red mug copy", ["mug", "red"]),
    "a1f00000000000000000000000000003": _ann("tea cup", ["tea"], "cc0"),
    "b2e00000000000000000000000000001": _ann("water bottle", ["water", "plastic"], "by-nc"),
    "b2e00000000000000000000000000002": _ann("wine bottle", ["glass"]),
    "b2e00000000000000000000000000003": _ann("bottle three", ["glass", "green"]),
    UNSAFE: _ann("evil", ["x"]),
}
LVIS = {
    "mug": [
        "a1f00000000000000000000000000001",
        "a1f00000000000000000000000000002",
        "a1f00000000000000000000000000003",
        UNSAFE,
    ],
    "bottle": [
        "b2e00000000000000000000000000001",
        "b2e00000000000000000000000000002",
        "b2e00000000000000000000000000003",
    ],
    "cup": ["a1f00000000000000000000000000003"],
}


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """The fake tree, objaverse pointed at it, and urlretrieve replaced by a recorder that refuses."""
    import objaverse

    root = tmp_path / "hf-objaverse-v1"
    write_objaverse_mirror(root, LVIS, ANNOTATIONS)
    monkeypatch.setattr(objaverse, "_VERSIONED_PATH", str(root))
    calls = []

    def no_network(url, *args, **kwargs):
        calls.append(url)
        raise OSError(f"network disabled in tests: {url}")

    monkeypatch.setattr(objaverse.urllib.request, "urlretrieve", no_network)
    return root, calls


def test_preset_has_18_lvis_categories():
    assert len(PAPER_CATEGORIES) == 18 and len(set(PAPER_CATEGORIES)) == 18
    assert label_for("mouse_(computer_equipment)") == "mouse (computer equipment)"


def test_selection_even_per_category_with_tag_coverage(mirror):
    choices, refused, notes = select_objaverse(["mug", "bottle"], 2)
    by_cat = {}
    for c in choices:
        by_cat.setdefault(c.category, []).append(c.uid)
    assert {k: len(v) for k, v in by_cat.items()} == {"mug": 2, "bottle": 2}
    # the two red mugs share their tags: coverage picks one of them plus the tea cup
    assert "a1f00000000000000000000000000003" in by_cat["mug"]
    assert len({"a1f00000000000000000000000000001", "a1f00000000000000000000000000002"} & set(by_cat["mug"])) == 1
    assert refused and refused[0]["path"] == f"objaverse:{UNSAFE}" and "unsafe uid" in refused[0]["reason"]
    assert not notes
    assert choices == select_objaverse(["mug", "bottle"], 2)[0]  # deterministic
    cup = next(c for c in choices if c.uid == "a1f00000000000000000000000000003")
    assert cup.categories == ["cup", "mug"] and cup.licence == "cc0" and cup.tags == ["tea"]


def test_ingest_records_provenance_and_refuses_unsafe_uids(layout, mirror, tmp_path):
    root, calls = mirror
    report = ingest_objaverse(layout, ["mug", "bottle"], per_category=2)
    assert calls == []  # everything came from the mirror
    assert len(report.ingested) == 4 and len(report.quarantined) == 1
    assert report.quarantine[0]["path"] == f"objaverse:{UNSAFE}"
    store = ObjectStore(layout)
    metas = [store.meta(i) for i in report.ingested]
    assert sorted(m.extra["lvis_category"] for m in metas) == ["bottle", "bottle", "mug", "mug"]
    for m in metas:
        assert m.source == "objaverse" and m.source_id in ANNOTATIONS and m.source_id != UNSAFE
        a = ANNOTATIONS[m.source_id]
        assert m.extra["name"] == a["name"] and m.licence == a["license"]
        assert m.tags == [t["name"] for t in a["tags"]] and m.extra["lvis_category"] in m.categories
        assert m.label == m.extra["lvis_category"]
    # nothing escaped the root or the tmp dir
    assert not os.path.exists(tmp_path.parent / "escape") and not os.path.exists(tmp_path / "escape")
    assert [r["source"] for r in quarantine_records(layout)] == ["objaverse"]
    again = ingest_objaverse(layout, ["mug", "bottle"], per_category=2)
    assert again.ingested == [] and sorted(again.skipped) == sorted(report.ingested)


def test_offline_mode_uses_only_mirrored_files(layout, tmp_path, monkeypatch):
    import objaverse

    cache = tmp_path / "mirror"
    have = {"b2e00000000000000000000000000001"}
    write_objaverse_mirror(cache, LVIS, ANNOTATIONS, with_glb=have)
    monkeypatch.setattr(objaverse.urllib.request, "urlretrieve", lambda *a, **k: pytest.fail("network touched"))
    report = ingest_objaverse(layout, ["bottle"], per_category=2, cache_dir=cache, download=False)
    assert len(report.ingested) == 1 and any("only 1 usable" in n for n in report.notes)
    assert objaverse._VERSIONED_PATH != str(cache)  # restored after the call
    with pytest.raises(ObjaverseError, match="unknown LVIS categories.*mug"):
        select_objaverse(["mugg"], 1, cache_dir=cache, download=False)
    with pytest.raises(ObjaverseError, match="downloads are off"):
        select_objaverse(["mug"], 1, cache_dir=tmp_path / "nowhere", download=False)


def test_failed_download_is_quarantined_not_fatal(layout, tmp_path, monkeypatch):
    import objaverse

    cache = tmp_path / "mirror"
    write_objaverse_mirror(
        cache, {"bottle": LVIS["bottle"]}, ANNOTATIONS, with_glb={"b2e00000000000000000000000000001"}
    )
    calls = []
    monkeypatch.setattr(
        objaverse.urllib.request,
        "urlretrieve",
        lambda url, *a, **k: calls.append(url) or (_ for _ in ()).throw(OSError("offline")),
    )
    report = ingest_objaverse(layout, ["bottle"], per_category=3, cache_dir=cache)
    assert calls  # it tried to download the two missing files
    assert len(report.ingested) == 1 and len(report.quarantine) == 2
    assert all("returned no file" in q["reason"] for q in report.quarantine)
