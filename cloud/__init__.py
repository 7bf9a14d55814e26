"""A small OpenStack on loopback for deploy tests: the real Keystone and Neutron, and an emulation
of the compute and image calls terraform-provider-openstack makes (compute.py).

`make cloud` (python -m cloud, in the cloud's own virtualenv .tools/cloud) runs it in the
foreground; tests start and stop it with cloud.handle.running_cloud(). Imports nothing from stacks/.
"""
