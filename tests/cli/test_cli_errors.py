"""Bad configs and bad calls: exit 2 (1 for store errors), one `error:` message that says how to fix it, no traceback."""

import pytest


def test_unknown_key_suggests_the_close_one(cli_proc, usage_error):
    result = cli_proc("run", "quickstart", "--set", "fl.rund=3")
    usage_error(result, "fl.rund", "did you mean 'rounds'")


def test_bad_choice_lists_the_valid_ones(cli, usage_error):
    usage_error(cli("run", "quickstart", "--set", "fl.algorithm=x"), "fl.algorithm", "fedavg", "fedprox")


def test_bad_type(cli, usage_error):
    usage_error(cli("run", "quickstart", "--set", "fl.rounds=many"), "fl.rounds", "int")


def test_override_without_equals(cli, usage_error):
    usage_error(cli("run", "quickstart", "--set", "fl.rounds"), "fl.rounds", "--set a.b=VALUE")


def test_toml_syntax_error_names_the_line(cli, workdir, usage_error):
    path = workdir / "bad.toml"
    path.write_text('name = "x"\n[fl]\nrounds = = 3\n')
    usage_error(cli("run", path), "bad.toml", "line 3")


def test_missing_config_lists_presets(cli, usage_error):
    usage_error(cli("run", "no-such-config.toml"), "no-such-config.toml", "quickstart")


def test_file_dataset_needs_a_path(cli, usage_error):
    usage_error(cli("run", "quickstart", "--set", "data.dataset=npz"), "data.path")


def test_data_path_that_does_not_exist(cli, workdir, usage_error):
    result = cli("run", "quickstart", "--set", "data.dataset=npz", "--set", "data.path=missing.npz")
    usage_error(result, "data.path", "missing.npz", "--set data.path=")
    assert not (workdir / "runs").exists(), "no run directory for a run that cannot start"


def test_faults_naming_missing_clients_say_how_to_fix(cli, workdir, usage_error):
    # the quickstart crashes client-07; with 5 clients there is none
    result = cli("run", "quickstart", "--set", "data.clients=5")
    usage_error(result, "faults.crashes[0].node", "client-07", "client-00 … client-04", "--set faults.crashes=[]")
    assert not (workdir / "runs").exists(), "no run directory for a run that cannot start"


def test_run_needs_config_or_resume(cli_proc, usage_error):
    usage_error(cli_proc("run"), "CONFIG", "--resume")


def test_run_refuses_config_and_resume_together(cli, usage_error):
    usage_error(cli("run", "quickstart", "--resume", "latest"), "CONFIG", "--resume")


def test_unknown_option_is_a_usage_error(cli):
    result = cli("run", "quickstart", "--rounds", "3")
    assert result.code == 2
    assert "--rounds" in result.err and "Traceback" not in result.err


@pytest.mark.parametrize("argv", [["config", "show", "nope"], ["data", "show", "nope"]])
def test_other_commands_share_config_errors(cli, usage_error, argv):
    usage_error(cli(*argv), "nope", "quickstart")
