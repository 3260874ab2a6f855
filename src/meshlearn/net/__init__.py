"""meshlearn.net: the network model — links, loss models, packetizer, topologies, devices, faults.

Everything here is sans-I/O data and arithmetic on virtual time; randomness comes from the
``numpy.random.Generator`` (or ``SeedSequence``) the caller passes in.
"""

from meshlearn.net.devices import (
    DEVICE_DISTRIBUTIONS,
    DeviceProfile,
    compute_time,
    draw_profiles,
    lognormal_profiles,
    server_profile,
)
from meshlearn.net.faults import (
    ChurnSpec,
    Crash,
    CrashSpec,
    FaultEvent,
    FaultSchedule,
    Heal,
    Partition,
    PartitionSpec,
    Recover,
)
from meshlearn.net.link import MAX_ATTEMPTS, DatagramTransfer, Link, LinkSpec, Transfer
from meshlearn.net.loss import (
    LOSS_MODELS,
    BernoulliLoss,
    GilbertElliott,
    LossModel,
    NoLoss,
    TraceLoss,
    make_loss_model,
)
from meshlearn.net.network import Network, pair_rng
from meshlearn.net.packetizer import (
    DEFAULT_HEADER_BYTES,
    apply_loss_mask,
    packet_count,
    packet_sizes,
    packetize,
    payload_size,
    reassemble,
)
from meshlearn.net.topology import (
    TOPOLOGIES,
    Topology,
    barabasi_albert,
    erdos_renyi,
    fat_tree,
    fat_tree_hosts,
    k_hop_ring,
    make_topology,
    random_geometric,
    ring,
    star,
)

__all__ = [
    # loss models
    "LOSS_MODELS", "LossModel", "NoLoss", "BernoulliLoss", "GilbertElliott", "TraceLoss",
    "make_loss_model",
    # packetizer
    "DEFAULT_HEADER_BYTES", "payload_size", "packet_count", "packet_sizes", "packetize",
    "reassemble", "apply_loss_mask",
    # links
    "LinkSpec", "Link", "Transfer", "DatagramTransfer", "MAX_ATTEMPTS",
    # topologies
    "TOPOLOGIES", "Topology", "make_topology", "star", "ring", "k_hop_ring", "erdos_renyi",
    "barabasi_albert", "random_geometric", "fat_tree", "fat_tree_hosts",
    # devices
    "DEVICE_DISTRIBUTIONS", "DeviceProfile", "draw_profiles", "server_profile", "compute_time",
    "lognormal_profiles",
    # faults
    "Crash", "Recover", "Partition", "Heal", "FaultEvent", "CrashSpec", "ChurnSpec",
    "PartitionSpec", "FaultSchedule",
    # network
    "Network", "pair_rng",
]
