"""HA lab: builds the synthesized stack (cdk.tf.json) out of network namespaces on one machine.

The lab reads only the synthesized JSON, so it tests what Terraform would create, not the Python
objects that produced it: each node's port becomes a namespace on a bridge that enforces
Neutron's port security and security groups, each node runs its own Docker engine and hands its
user_data to the real cloud-init, whose runcmd starts haproxy and keepalived (stand-in images
tagged as the config's), and a client drives traffic through the VIP while drills inject faults.
"""
