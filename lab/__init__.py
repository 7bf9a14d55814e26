"""HA lab: builds the synthesized stack (cdk.tf.json) out of network namespaces on one machine.

The lab reads only the synthesized JSON, so it tests what Terraform would create, not the Python
objects that produced it: each node's port becomes a namespace on a bridge that enforces
Neutron's port security and security groups, each node's user_data files feed the real haproxy
and keepalived, and a client drives traffic through the VIP while drills inject faults.
"""
