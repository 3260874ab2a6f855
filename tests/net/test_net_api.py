"""The public API of meshlearn.net is explicit and importable."""

import meshlearn.net as net


def test_all_names_exist_and_are_unique():
    assert len(net.__all__) == len(set(net.__all__))
    for name in net.__all__:
        assert getattr(net, name) is not None, name


def test_core_names_are_public():
    expected = {
        "LossModel", "GilbertElliott", "TraceLoss", "BernoulliLoss", "NoLoss", "make_loss_model",
        "packet_count", "packetize", "reassemble", "LinkSpec", "Link", "Transfer",
        "DatagramTransfer", "Topology", "make_topology", "TOPOLOGIES", "DeviceProfile",
        "DEVICE_DISTRIBUTIONS", "draw_profiles", "server_profile", "compute_time", "Crash",
        "Recover", "Partition", "Heal", "FaultSchedule", "Network", "LOSS_MODELS",
    }
    assert expected <= set(net.__all__)
