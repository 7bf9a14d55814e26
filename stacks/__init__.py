"""The cdktf stacks and their construct, built from the plan alone (`cluster.plan`): no config field is read here."""
