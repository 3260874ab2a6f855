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


# ----- network model values (issue 12, item 6): exit 2 at config load, a key down to the parameter, no run


@pytest.mark.parametrize("value, key, needle", [
    ('{model="bernoulli", p=1.5}', "network.uplink_loss.p", "[0, 1]"),
    ('{model="bernoulli", p=[1]}', "network.uplink_loss.p", "number"),
    ('{model="bernoulli", q=0.1}', "network.uplink_loss.q", "valid: p"),
    ('{model="bernoulli"}', "network.uplink_loss.p", "missing"),
    ('{model="gilbert_elliott", p=0.1, r=2}', "network.uplink_loss.r", "[0, 1]"),
    ('{model="gilbert_elliott", loss=0.1, burst="x"}', "network.uplink_loss.burst", "number"),
    ('{model="trace", path="missing.txt"}', "network.uplink_loss.path", "missing.txt"),
    ('{model="trace", path=3}', "network.uplink_loss.path", "file"),
    ('{model="nope"}', "network.uplink_loss.model", "bernoulli"),
])
def test_bad_loss_model_values_stop_before_a_run_exists(cli, workdir, usage_error, value, key, needle):
    result = cli("run", "quickstart", "--set", f"network.uplink_loss={value}")
    usage_error(result, f"error: {key}: ", needle)
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert not (workdir / "runs").exists(), "no run directory for a run that cannot start"


def test_bad_downlink_loss_in_a_toml_file_names_its_key(cli, workdir, usage_error):
    path = workdir / "lossy.toml"
    path.write_text('[network]\ndownlink_loss = { model = "bernoulli", p = -0.5 }\n')
    usage_error(cli("run", path), "error: network.downlink_loss.p: ", "lossy.toml")
    assert not (workdir / "runs").exists()


@pytest.mark.parametrize("override, key", [
    ("network.latency_s=inf", "network.latency_s"),
    ("network.jitter_s=inf", "network.jitter_s"),
    ("network.rto_s=inf", "network.rto_s"),
    ("selection.dynamics={enabled=true, jitter=inf}", "selection.dynamics.jitter"),
    ("selection.dynamics={enabled=true, period_s=inf}", "selection.dynamics.period_s"),
    ("faults.churn={rate_per_node_per_s=inf, mean_downtime_s=1}", "faults.churn.rate_per_node_per_s"),
    ("faults.churn={rate_per_node_per_s=0.1, mean_downtime_s=inf}", "faults.churn.mean_downtime_s"),
])
def test_infinite_network_and_fault_values_are_config_errors(cli, workdir, usage_error, override, key):
    result = cli("run", "quickstart", "--set", "fl.rounds=1", "--set", override)
    usage_error(result, f"error: {key}: ", "finite")
    assert not (workdir / "runs").exists()


@pytest.mark.parametrize("override, key, needle", [
    ("swim.config={probe_timeout_s=100}", "swim.config.probe_timeout_s", "shorter than probe_interval_s"),
    ("swim.config={bogus=1}", "swim.config.bogus", "valid keys here"),
    ("swim.config={gossip_nodes=-1}", "swim.config.gossip_nodes", "greater than or equal to 0"),
    ('swim.preset="nope"', "swim.preset", "lan, local, wan"),
    ('swim.link.loss={model="bernoulli", p=[1]}', "swim.link.loss.p", "number"),
])
def test_bad_simulated_cluster_settings_stop_before_a_run_exists(cli, workdir, usage_error, override, key, needle):
    result = cli("run", "overlay-swim", "--set", "swim.nodes=10", "--set", override)
    usage_error(result, f"error: {key}: ", needle)
    assert not (workdir / "runs").exists(), "no run directory for a run that cannot start"
