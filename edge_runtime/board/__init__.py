"""The board: device configs, memory guard, CPU affinity, benchmarks and deployment."""
