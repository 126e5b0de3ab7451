"""The command line without a running service: parsing, specs from flags, exit codes, keys, data directory."""

import json

import pytest

from modelpress.cli import build_parser, main
from modelpress.job_commands import UsageError, build_spec


def _submit_args(*argv):
    return build_parser().parse_args(["submit", "m.pt2", "d.npz", *argv])


def test_flags_make_a_spec_with_stage_and_job_fields(tmp_path):
    spec = build_spec(_submit_args("--method", "qat", "--set", "weight_bits=4", "--set", "training.steps=200",
                                   "--set", "evaluation.latency=false", "--set", "seed=7", "--set", "quantizer=lsq"))
    assert spec == {"stages": [{"method": "qat", "weight_bits": 4, "training": {"steps": 200}, "quantizer": "lsq"}],
                    "evaluation": {"latency": False}, "seed": 7}
    file = tmp_path / "spec.json"
    file.write_text(json.dumps({"stages": [{"method": "prune"}, {"method": "ptq"}], "time_limit_s": 600}))
    spec = build_spec(_submit_args("--spec", str(file), "--set", "calibration_samples=64"))
    assert spec["stages"][1] == {"method": "ptq", "calibration_samples": 64} and spec["time_limit_s"] == 600
    for argv, message in ((["--set", "x=1"], "give --method"), (["--method", "ptq", "--set", "novalue"], "key=value"),
                          (["--spec", str(tmp_path / "missing.json")], "missing.json")):
        with pytest.raises(UsageError, match=message):
            build_spec(_submit_args(*argv))


def test_options_work_after_the_command_as_before_it():
    parser = build_parser()
    assert parser.parse_args(["up", "--data-dir", "/d"]).data_dir == "/d"
    assert parser.parse_args(["--data-dir", "/d", "up"]).data_dir == "/d"
    assert parser.parse_args(["keys", "create", "--tenant", "t", "--data-dir", "/d"]).data_dir == "/d"
    assert parser.parse_args(["jobs", "--url", "http://x"]).url == "http://x"


def test_exit_codes(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MODELPRESS_CONFIG", str(tmp_path / "none.toml"))
    closed = "http://127.0.0.1:9"  # nothing listens on the discard port
    assert main(["jobs", "--url", closed]) == 4
    assert "cannot reach the service" in capsys.readouterr().err
    model, data = tmp_path / "m.pt2", tmp_path / "d.npz"
    model.write_bytes(b"never sent")
    data.write_bytes(b"never sent")
    model, data = str(model), str(data)
    assert main(["submit", model, data, "--method", "qat", "--set", "weight_bits=1", "--url", closed]) == 2
    assert "weight_bits" in capsys.readouterr().err  # refused by the spec models before any request
    assert main(["submit", "nothing.pt2", "ds_x", "--method", "ptq", "--url", closed]) == 2
    assert "neither a file nor a model id" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["submit"])
    assert usage.value.code == 2
    (tmp_path / "bad.toml").write_text("colour = 'blue'\n")
    monkeypatch.setenv("MODELPRESS_CONFIG", str(tmp_path / "bad.toml"))
    assert main(["jobs"]) == 2 and "only the strings url and api_key" in capsys.readouterr().err


def test_the_config_file_gives_url_and_key_after_flags_and_environment(tmp_path, monkeypatch):
    from modelpress.connection import resolve
    (tmp_path / "config.toml").write_text('url = "http://from-file:1"\napi_key = "mp_file"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "modelpress").mkdir()
    (tmp_path / "config.toml").rename(tmp_path / "modelpress" / "config.toml")
    monkeypatch.delenv("MODELPRESS_CONFIG", raising=False)
    monkeypatch.delenv("MODELPRESS_URL", raising=False)
    monkeypatch.delenv("MODELPRESS_API_KEY", raising=False)
    assert resolve() == ("http://from-file:1", "mp_file")
    monkeypatch.setenv("MODELPRESS_API_KEY", "mp_env")
    assert resolve() == ("http://from-file:1", "mp_env")
    assert resolve("http://flag:2", "mp_flag") == ("http://flag:2", "mp_flag")


def test_the_data_directory_does_not_depend_on_where_the_command_runs(tmp_path, monkeypatch):
    from core.config import Settings
    monkeypatch.delenv("MODELPRESS_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert Settings(_env_file=None).data_dir == tmp_path / "home" / ".local" / "share" / "modelpress"


def test_keys_create_list_and_revoke(backend, capsys):
    assert main(["keys", "create", "--tenant", "cli-keys"]) == 0
    key = capsys.readouterr().out.strip()
    assert main(["keys", "list", "--tenant", "cli-keys"]) == 0
    [row] = capsys.readouterr().out.splitlines()[1:]
    key_id = row.split()[0]
    assert key[:10] in row and row.split()[1] == "cli-keys"
    assert main(["keys", "revoke", key_id]) == 0
    from app.auth.service import tenant_for_key
    from core.db.session import session_scope
    with session_scope() as session:
        assert tenant_for_key(session, key) is None
    assert main(["keys", "revoke", "key_unknown"]) == 3


def test_the_task_choices_are_the_tasks_the_service_runs():
    """`--task` and the API's `task` parameter offer every task a folder can be read for, and transformers' pipeline
    names for them, and only those (the speech-recognition task was once added to the library alone)."""
    import typing

    from app.resources.schemas import Task
    from compression.archive.hf_architectures import TASK_ALIASES, TASKS

    submit = build_parser()._subparsers._group_actions[0].choices["submit"]
    choices = next(action.choices for action in submit._actions if action.dest == "task")
    literal = next(arg for arg in typing.get_args(typing.get_args(Task)[0]) if arg is not type(None))
    assert sorted(choices) == sorted(TASKS + tuple(TASK_ALIASES)) == sorted(typing.get_args(literal))
    assert set(TASK_ALIASES.values()) <= set(TASKS)
