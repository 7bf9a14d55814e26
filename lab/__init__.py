"""HA lab: builds the synthesized stack (cdk.tf.json) out of network namespaces on one machine.

The lab reads only the synthesized JSON, so it tests what Terraform would create, not the Python
objects that produced it: each node's port becomes a namespace on a bridge that enforces
Neutron's port security and security groups, each node runs its own Docker engine and hands its
user_data to the real cloud-init, whose runcmd starts haproxy and keepalived (stand-in images
tagged as the config's), and a client drives traffic through the VIP while drills inject faults.

The parts:
- `lab.world`: what it builds (topology, Neutron emulation, engines, images, sshd, admin network,
  processes, cloud-init, stand-in apiserver, client, daemon watchers, `Lab`);
- `lab.scenarios`: what it plays there (drills, negative controls, the operator's drills, the
  soak, the seed variant), each listed once in `lab.scenarios.registry`;
- `python -m lab` (`__main__`) and `python -m lab.bench` (`bench`): the command lines;
- `fixtures/`: a small synthesized JSON for the fast tests; `results/`: benchmark outputs.
"""
