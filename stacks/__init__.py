"""The cdktf stacks, their construct, and the config and plan they are built from."""
