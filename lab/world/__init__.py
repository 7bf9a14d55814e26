"""What the lab builds from the synthesized JSON: the world the scenarios play on.

- synth: the lab's view of cdk.tf.json (nodes, VIP port, rules), the open-files fit to this machine
  (the rendered keepalived.conf and haproxy.cfg are read with `userdata.configs`, where each file
  lives in its container is `userdata.render`'s)
- topology: namespaces, the bridge, gateway and client; neutron: port security and security
  groups as nftables
- engine: each node as a machine (namespaces, disk, cgroup, Docker engine); images: the
  stand-in images; cloudinit: the user_data run by the real cloud-init
- daemons: haproxy and keepalived followed through Docker's events and logs
- apiserver: the stand-in kube-apiserver; client: the open-loop client through the VIP
- sshd: each node's OpenSSH server; admin: the admin network and `python -m ops` from it
- procs: a process with its output stamped on the monotonic clock
- node: one node and its power; steady: the steady state and what keeps the lab from it
- harness: `Lab`, all of it as one context manager
"""
