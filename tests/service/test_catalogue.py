"""The catalogue (shipped default, parsing errors, MRL_CATALOGUE_FILE), GET /v1/catalogue, the eligibility API
and the ``mrledger eligibility`` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from mrledger.cli.main import app
from mrledger.node.settings import Settings
from mrledger.service.recognition import (
    LOINC,
    MAX_WINDOW_DAYS,
    CatalogueError,
    default_catalogue,
    load_catalogue,
    parse_catalogue,
)
from mrledger.store import Store
from mrledger.store.eligibility import Eligibility
from tests.conftest import TEST_KEY
from tests.harness import Api
from tests.http.test_hospitals import assert_problem

SIX = {"clinical-biochemistry", "clinical-immunology", "clinical-hematology", "radiography", "ct", "mr"}
MINIMAL = '''
format = "mrl-catalogue/1"
[categories.clinical-biochemistry]
name = "Clinical biochemistry"
window_days = 7
[[lab]]
loinc = "2345-7"
name = "Glucose"
category = "clinical-biochemistry"
'''


# -- the shipped default ------------------------------------------------------------------------------------


def test_default_catalogue_has_the_six_categories_and_the_common_tests() -> None:
    cat = default_catalogue()
    assert set(cat.categories) == SIX
    by_code = {i.code: i for i in cat.items}
    expected = {
        "clinical-biochemistry": ["2345-7", "2160-0", "3094-0", "1742-6", "1920-8", "1975-2", "2823-3", "2951-2",
                                  "2093-3", "2571-8", "2085-9", "13457-7", "18262-6", "4548-4", "3084-1", "1751-7"],
        "clinical-immunology": ["5196-1", "16128-1", "7918-6", "1988-5"],
        "clinical-hematology": ["718-7", "6690-2", "777-3", "789-8", "4544-3"],
        "radiography": ["xr-chest"], "ct": ["ct-head", "ct-chest", "ct-abdomen"], "mr": ["mr-head", "mr-spine",
                                                                                         "mr-knee"],
    }
    for category, codes in expected.items():
        for code in codes:
            assert by_code[code].category == category, code
    assert all(1 <= i.window_days <= MAX_WINDOW_DAYS for i in cat.items)
    assert all(i.system == LOINC for i in cat.items if i.category.startswith("clinical-"))
    assert {c: sum(i.category == c for i in cat.items) > 0 for c in SIX} == dict.fromkeys(SIX, True)
    assert set(by_code["xr-chest"].modalities) == {"DX", "CR", "DR"}
    assert load_catalogue(None) is cat


def test_the_default_says_it_is_configuration_not_advice() -> None:
    root = Path(__file__).resolve().parents[2]
    text = (root / "src" / "mrledger" / "service" / "catalogue" / "default.toml").read_text()
    assert "NOT CLINICAL ADVICE" in text and "MRL_CATALOGUE_FILE" in text


# -- parsing errors ----------------------------------------------------------------------------------------

BAD: list[tuple[str, str, str]] = [
    ("not toml", "format = ", "not valid TOML"),
    ("no format", MINIMAL.replace('format = "mrl-catalogue/1"', ""), "format: Field required"),
    ("other format", MINIMAL.replace("mrl-catalogue/1", "mrl-catalogue/2"), "format"),
    ("no categories", 'format = "mrl-catalogue/1"\n[categories]\n', "categories"),
    ("undefined category", MINIMAL.replace('category = "clinical-biochemistry"', 'category = "ct"'),
     "undefined categories: ['ct']"),
    ("duplicate loinc", MINIMAL + MINIMAL[MINIMAL.index("[[lab]]"):], "duplicate lab loinc: ['2345-7']"),
    ("bad loinc", MINIMAL.replace('"2345-7"', '"2345"'), "lab.0.loinc"),
    ("window zero", MINIMAL.replace("window_days = 7", "window_days = 0"), "window_days"),
    ("window too long", MINIMAL.replace("window_days = 7", f"window_days = {MAX_WINDOW_DAYS + 1}"), "window_days"),
    ("window as text", MINIMAL.replace("window_days = 7", 'window_days = "7"'), "window_days"),
    ("unknown key", MINIMAL + 'colour = "red"\n', "colour"),
    ("bad category id", MINIMAL.replace("clinical-biochemistry", "Clinical-Biochemistry"), "categories"),
    ("imaging without modality", MINIMAL + '[[imaging]]\ncode = "ct-x"\nname = "x"\ncategory = '
                                           '"clinical-biochemistry"\nmodalities = []\n', "imaging.0.modalities"),
]


@pytest.mark.parametrize(("text", "message"), [(t, m) for _, t, m in BAD], ids=[d for d, _, _ in BAD])
def test_bad_catalogues_are_refused_with_the_problem(text: str, message: str) -> None:
    with pytest.raises(CatalogueError, match=r"^catalogue x\.toml: ") as info:
        parse_catalogue(text, "x.toml")
    assert message in str(info.value)


def test_minimal_catalogue_and_unreadable_file(tmp_path: Path) -> None:
    cat = parse_catalogue(MINIMAL)
    assert [(i.code, i.window_days) for i in cat.items] == [("2345-7", 7)]
    with pytest.raises(CatalogueError, match="cannot read"):
        load_catalogue(tmp_path / "missing.toml")


def test_a_bad_catalogue_file_stops_the_node_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL.replace("window_days = 7", "window_days = 0"))
    with pytest.raises(ValidationError, match="window_days"):
        Settings(catalogue_file=bad)
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(app, ["serve", "--data-dir", str(tmp_path / "node")],
                             env={"MRL_CATALOGUE_FILE": str(bad)})
    assert out.exit_code == 2 and "catalogue_file" in out.output and "window_days" in out.output
    assert not (tmp_path / "node").exists()  # refused before anything started


# -- GET /v1/catalogue -------------------------------------------------------------------------------------


def test_get_catalogue_is_public(api: Api) -> None:
    got = api.client.get("/v1/catalogue")
    assert got.status_code == 200
    body = got.json()
    assert {c["id"] for c in body["categories"]} == SIX and len(body["items"]) == len(default_catalogue().items)
    glucose = next(i for i in body["items"] if i["code"] == "2345-7")
    assert glucose == {"code": "2345-7", "system": LOINC, "name": "Glucose [Mass/volume] in Serum or Plasma",
                       "category": "clinical-biochemistry", "window_days": 7, "modalities": None, "body_parts": None,
                       "price": 5.0}
    ct = api.client.get("/v1/catalogue?category=ct").json()
    assert [c["id"] for c in ct["categories"]] == ["ct"] and {i["category"] for i in ct["items"]} == {"ct"}
    assert all(i["modalities"] == ["CT"] for i in ct["items"])
    assert_problem(api.client.get("/v1/catalogue?category=pet"), 404, "not-found")


def test_a_configured_catalogue_is_served_and_used(api: Api) -> None:
    api.rebuild(catalogue=parse_catalogue(MINIMAL, "custom.toml"))
    assert [i["code"] for i in api.client.get("/v1/catalogue").json()["items"]] == ["2345-7"]
    assert_problem(api.client.put("/v1/hospitals/gz-001/eligibility/ct", json={"reference": "EQA"},
                                  headers=api.auth("admin")), 422, "unknown-category")


# -- eligibility API ---------------------------------------------------------------------------------------

URL = "/v1/hospitals/{}/eligibility"


def test_grant_list_revoke(api: Api) -> None:
    admin = api.auth("admin")
    put = api.client.put(URL.format("gz-001") + "/ct", json={"reference": "EQA-CT-2024",
                                                             "valid_until": "2099-12-31T23:59:59+08:00"},
                         headers=admin)
    assert put.status_code == 200, put.text
    grant = put.json()
    assert (grant["hospital_id"], grant["category"], grant["reference"], grant["active"]) == \
        ("gz-001", "ct", "EQA-CT-2024", True)
    assert grant["valid_until"].startswith("2099-12-31T15:59:59") and grant["revoked_at"] is None
    listed = api.client.get(URL.format("gz-001"), headers=api.auth("doctor")).json()
    assert listed["eligible"] == ["ct"] and len(listed["grants"]) == 1
    deleted = api.client.delete(URL.format("gz-001") + "/ct", headers=admin)
    assert deleted.status_code == 200 and deleted.json()["revoked_at"] and not deleted.json()["active"]
    assert_problem(api.client.delete(URL.format("gz-001") + "/ct", headers=admin), 404, "not-found")
    after = api.client.get(URL.format("gz-001"), headers=api.auth("auditor")).json()
    assert after == {"hospital_id": "gz-001", "eligible": [], "grants": []}
    history = api.client.get(URL.format("gz-001") + "?history=true", headers=admin).json()
    assert len(history["grants"]) == 1 and history["grants"][0]["revoked_at"]


@pytest.mark.parametrize(("path", "body", "status", "name"), [
    ("/gz-001/eligibility/pet", {"reference": "x"}, 422, "unknown-category"),
    ("/zz-9/eligibility/ct", {"reference": "x"}, 404, "unknown-hospital"),
    ("/gz-001/eligibility/ct", {"reference": ""}, 422, "validation"),
    ("/gz-001/eligibility/ct", {"reference": "x", "extra": 1}, 422, "validation"),
    ("/gz-001/eligibility/CT", {"reference": "x"}, 422, "validation"),
    ("/gz-001/eligibility/ct", {"reference": "x", "valid_until": "2020-01-01T00:00:00Z"}, 422,
     "invalid-submission"),
    ("/gz-001/eligibility/ct", {"reference": "x", "valid_until": "2099-01-01T00:00:00"}, 422, "validation"),
])
def test_grant_refusals(api: Api, path: str, body: dict[str, Any], status: int, name: str) -> None:
    assert_problem(api.client.put("/v1/hospitals" + path, json=body, headers=api.auth("admin")), status, name)


def test_list_of_an_unknown_hospital_is_404(api: Api) -> None:
    assert_problem(api.client.get(URL.format("zz-9"), headers=api.auth("admin")), 404, "unknown-hospital")


# -- CLI ---------------------------------------------------------------------------------------------------


def test_cli_grant_list_revoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("MRL_DATA_DIR", "MRL_DATABASE_URL", "MRL_CATALOGUE_FILE"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    missing = runner.invoke(app, ["eligibility", "list", "gz-001"], env={"MRL_DATA_DIR": str(tmp_path / "none")})
    assert missing.exit_code == 2 and "no mrledger database" in missing.output
    (tmp_path / "node").mkdir()
    store = Store.open(f"sqlite:///{tmp_path / 'node' / 'mrledger.db'}", master_key=TEST_KEY)
    store.register_hospital("gz-001", "Guangzhou First People's Hospital")
    env = {"MRL_DATA_DIR": str(tmp_path / "node")}

    ok = runner.invoke(app, ["eligibility", "grant", "gz-001", "ct", "--reference", "EQA-CT-7",
                             "--valid-until", "2099-12-31"], env=env)
    assert ok.exit_code == 0, ok.output
    assert "gz-001 eligible for ct (EQA-CT-7) until 2099-12-31T23:59:59" in ok.output
    [grant] = Eligibility(store).grants("gz-001")
    assert grant.category == "ct" and grant.valid_until is not None and grant.valid_until.hour == 23
    listed = runner.invoke(app, ["eligibility", "list", "gz-001"], env=env)
    assert listed.exit_code == 0 and "ct  active  EQA-CT-7" in listed.output
    as_json = runner.invoke(app, ["eligibility", "list", "gz-001", "--json"], env=env)
    assert '"active": true' in as_json.output

    for args, code, text in [
        (["grant", "gz-001", "pet", "--reference", "x"], 2, "not a catalogue category"),
        (["grant", "gz-001", "ct", "--reference", "x", "--valid-until", "soon"], 2, "is not a date"),
        (["grant", "gz-001", "ct", "--reference", "x", "--valid-until", "2099-01-01T00:00:00"], 2, "UTC offset"),
        (["grant", "zz-9", "ct", "--reference", "x"], 1, "unknown hospital"),
        (["list", "zz-9"], 1, "unknown hospital"),
    ]:
        out = runner.invoke(app, ["eligibility", *args], env=env)
        assert out.exit_code == code and text in out.output, (args, out.output)

    revoked = runner.invoke(app, ["eligibility", "revoke", "gz-001", "ct"], env=env)
    assert revoked.exit_code == 0 and "no longer eligible" in revoked.output
    again = runner.invoke(app, ["eligibility", "revoke", "gz-001", "ct"], env=env)
    assert again.exit_code == 1 and "holds no eligibility" in again.output
    assert "no eligibility" in runner.invoke(app, ["eligibility", "list", "gz-001"], env=env).output
    assert "inactive" in runner.invoke(app, ["eligibility", "list", "gz-001", "--history"], env=env).output
