"""Datasets: the XOR-5D generator and image datasets (offline sources, first-n, uint8 in memory)."""
