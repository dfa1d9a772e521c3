"""Vendor contracts: the published API specs orderflow's simulators and adapters are checked against."""
