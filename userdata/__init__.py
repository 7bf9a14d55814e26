"""cloud-init userdata for the control-plane nodes: Jinja2 templates and the functions that render them
(render), and one reader per format they make: the synthesized JSON (stack), the cloud-config text
(cloudconfig), keepalived.conf and haproxy.cfg (configs)."""
