"""meshloop: a telemetry-driven service-mesh control plane.

Subpackages, one room each (see ARCHITECTURE.md): ``store`` (ClickHouse), ``api``
(HTTP surfaces); ``collector``, ``accesslog``, ``mesh``, ``xds``, ``identity`` and
``policy`` arrive with the issues that need them.
"""

__version__ = "0.1.0"
