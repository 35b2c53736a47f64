"""An Elasticsearch index folder never decides where credentials go, nor switches TLS checks off."""
from __future__ import annotations

import json

import pytest

elasticsearch = pytest.importorskip("elasticsearch")

from atlas_kit.cli import main  # noqa: E402
from atlas_kit.index import load_index  # noqa: E402
from atlas_kit.index import elasticsearch_index as esi  # noqa: E402


class Recorder:
    """Stands in for ``elasticsearch.Elasticsearch``: records the connection, answers nothing."""

    calls: list = []

    def __init__(self, **kwargs):
        Recorder.calls.append(kwargs)

    def __getattr__(self, name):
        raise ConnectionError("no server in tests")


@pytest.fixture
def hostile_folder(tmp_path, monkeypatch):
    """A folder someone handed us: points at their host, TLS verification off, their own CA."""
    folder = tmp_path / "es-evil"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({
        "format_version": 1, "kind": "elasticsearch", "url": "https://attacker.example:9200", "index_name": "wiki",
        "mode": "bm25", "auth": "api_key", "verify_certs": False, "ca_certs": str(folder / "evil-ca.pem"),
    }))
    for var in (esi.ES_URL_ENV, esi.ES_CA_CERTS_ENV, esi.ES_VERIFY_CERTS_ENV, esi.ES_USER_ENV, esi.ES_PASSWORD_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(esi.ES_API_KEY_ENV, "secret-from-env")
    monkeypatch.setattr(elasticsearch, "Elasticsearch", Recorder)
    Recorder.calls = []
    return folder


def test_env_credentials_never_go_to_the_folders_host(hostile_folder):
    index = load_index(hostile_folder)
    (kw,) = Recorder.calls
    assert kw["hosts"] == ["https://attacker.example:9200"]
    assert "api_key" not in kw and "basic_auth" not in kw
    assert kw["verify_certs"] is True and "ca_certs" not in kw
    assert index.manifest["verify_certs"] is True


def test_index_info_on_a_hostile_folder_sends_nothing(hostile_folder, capsys):
    assert main(["-q", "index", "info", str(hostile_folder), "--json"]) == 0
    assert all("api_key" not in kw and kw["verify_certs"] is True for kw in Recorder.calls)
    assert "secret-from-env" not in capsys.readouterr().out


def test_credentials_go_to_the_configured_host(hostile_folder, monkeypatch):
    monkeypatch.setenv(esi.ES_URL_ENV, "https://es.mine:9200")
    load_index(hostile_folder)
    (kw,) = Recorder.calls
    assert kw["hosts"] == ["https://es.mine:9200"] and kw["api_key"] == "secret-from-env"
    assert kw["verify_certs"] is True and "ca_certs" not in kw


def test_credentials_in_code_need_a_url(hostile_folder):
    with pytest.raises(ValueError, match="only sent to a host you configure"):
        esi.ElasticsearchIndex.load(hostile_folder, api_key="k")
    esi.ElasticsearchIndex.load(hostile_folder, api_key="k", url="https://es.mine:9200", verify_certs=False)
    assert Recorder.calls[-1]["hosts"] == ["https://es.mine:9200"] and Recorder.calls[-1]["verify_certs"] is False


def test_tls_settings_come_from_the_user(hostile_folder, monkeypatch, tmp_path):
    monkeypatch.setenv(esi.ES_VERIFY_CERTS_ENV, "0")
    monkeypatch.setenv(esi.ES_CA_CERTS_ENV, str(tmp_path / "my-ca.pem"))
    load_index(hostile_folder)
    assert Recorder.calls[-1]["verify_certs"] is False and Recorder.calls[-1]["ca_certs"] == str(tmp_path / "my-ca.pem")
