"""cloud-init userdata for the control-plane nodes: Jinja2 templates and the functions that render them."""
