"""xDS: translate the mesh model into Envoy resources, snapshots, the ADS server, and Envoy bootstraps."""
